"""What every grading run pays whatever the class: the shortcuts must give nbgrader's own answers.

The gradebook's schema revision is read in-process instead of from the ``alembic``
command, the export check runs nbgrader's CSV exporter in-process instead of
``nbgrader export``, and jsonschema is imported without the IRI grammars; each must
give what the slow way gives.
"""
import csv
import os
import subprocess
import sys
import tempfile

import pytest


def test_alembic_head_equals_the_alembic_command():
    from nbgrader.dbutil import _temp_alembic_ini
    from autograder.gradebook import alembic_head
    alembic = os.path.join(os.path.dirname(sys.executable), "alembic")
    with _temp_alembic_ini("sqlite:////nonexistent/gradebook.db") as ini:
        out = subprocess.run([alembic, "-c", ini, "heads"], capture_output=True, text=True, check=True).stdout
    assert alembic_head() == out.split()[0]


def test_in_process_export_equals_nbgrader_export(tmp_path):
    from autograder.gradebook import export_csv, open_gradebook
    db = "sqlite:///" + str(tmp_path / "gradebook.db")
    with open_gradebook(db) as gb:
        gb.add_assignment("cnn_layers")
        gb.add_notebook("convolution", "cnn_layers")
        gb.add_grade_cell("zero_pad", "convolution", "cnn_layers", max_score=1, cell_type="code")
        for sid in ("ann", "Zoë_李", "b" * 200):
            gb.add_student(sid)
            gb.add_submission("cnn_layers", sid)
            grade = gb.find_grade("zero_pad", "convolution", "cnn_layers", sid)
            grade.auto_score = 1.0 if sid == "ann" else 0.0
        gb.db.commit()
    export_csv(db, tmp_path / "inproc.csv")
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--db={db}", f"--to={tmp_path / 'cmd.csv'}",
                        "--course=cnn_backprop"], cwd=cwd, check=True, capture_output=True)

    def rows(name):
        with open(tmp_path / name, newline="", encoding="utf-8") as fh:
            return sorted(csv.DictReader(fh), key=lambda r: r["student_id"])
    assert rows("inproc.csv") == rows("cmd.csv")
    assert len(rows("cmd.csv")) == 3


def test_jsonschema_without_iri_grammars_still_validates_notebooks():
    code = ("import sys; from autograder import cli; cli._import_jsonschema_without_iri_grammars(); "
            "import nbformat; nb = nbformat.read('exercises/cnn_layers/convolution.ipynb', as_version=4); "
            "nbformat.validate(nb); nb.cells[0]['cell_type'] = 'bogus'; "
            "bad = False\n"
            "try:\n    nbformat.validate(nb)\nexcept nbformat.ValidationError:\n    bad = True\n"
            "assert bad, 'an invalid notebook passed'\n"
            "assert 'rfc3987_syntax' not in sys.modules\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
