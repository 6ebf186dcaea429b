"""The gradebook on a real PostgreSQL server (``--db postgresql://...``).

A server from the system's packages is started for the module
(tests/pgserver.py).  A class is graded into it; nbgrader's own ``export``
of that gradebook must equal totals.csv, student ids of 250 characters and
non-ASCII ids must be stored unchanged, LMS names longer than nbgrader's
128-character columns (with commas, quotes and markup) must be stored cut and
inert with the class graded whole, and two grading runs writing to the same
gradebook at the same time must both succeed with every student's total right.
"""
import csv
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO, grade_command, read_csv, run_grade
from classgen import build as B
from pgserver import PostgresServer

pytestmark = pytest.mark.slow

LONG_ID = "s" + "0123456789abcdefghijklmnopqrstuvwxyz" * 6 + "_long_id_end"   # 229 chars
LONG_ID = LONG_ID + "x" * (250 - len(LONG_ID))
UNICODE_ID = "Zoë-Çelik_李小龍_Ñúñez"


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def _class(prefix, ids=None):
    """Three students, one notebook each (the other missing: an ungradable row, no grading time)."""
    ids = ids or (f"{prefix}1_correct", f"{prefix}2_correct")
    students = [B.all_correct(ids[0], "vectorized"), B.all_correct(ids[1], "im2col"),
                B.with_mistake(f"{prefix}3_mistake", "bias_missing")]
    for s, missing in zip(students, ("pooling", "convolution", "pooling")):
        s.notebooks = {missing: B.MISSING}
    return students


def _export(db_url, dest):
    """nbgrader's own export command, from a folder without any nbgrader_config.py."""
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--db={db_url}", f"--to={dest}",
                               "--course=cnn_backprop"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(dest, newline="", encoding="utf-8") as fh:
        return {r["student_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["assignment"] == "cnn_layers"}


def _totals(out):
    return {r["student_id"]: float(r["score"]) for r in read_csv(os.path.join(out, "totals.csv"))}


def test_grade_into_postgresql_and_export(pg, tmp_path):
    assert len(LONG_ID) == 250
    url = pg.create_database("course_one")
    students = _class("a", ids=(LONG_ID, UNICODE_ID))
    manifest = B.write_class(students, tmp_path / "submitted")
    proc = run_grade(tmp_path / "submitted", tmp_path / "out", "--db", url)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"gradebook {url}" in proc.stdout          # named in the summary (it has no password to hide)

    totals = _totals(tmp_path / "out")
    assert totals == {s: m["total"] for s, m in manifest.items()}
    assert _export(url, tmp_path / "export.csv") == totals

    ids = {row[0] for row in pg.query("course_one", "SELECT id FROM student")}
    assert ids == set(manifest)                       # the 250-character and unicode ids, byte for byte
    assert LONG_ID in ids and UNICODE_ID in ids

    # a second run reuses every stored verdict and leaves the gradebook as it was
    rows_before = pg.query("course_one", "SELECT count(*) FROM grade")[0][0]
    proc = run_grade(tmp_path / "submitted", tmp_path / "out", "--db", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pg.query("course_one", "SELECT count(*) FROM grade")[0][0] == rows_before
    assert _export(url, tmp_path / "export2.csv") == totals


def test_two_runs_write_the_same_gradebook_at_once(pg, tmp_path):
    url = pg.create_database("course_two")
    expected = {}
    procs = []
    for prefix in ("p", "q"):
        manifest = B.write_class(_class(prefix), tmp_path / prefix / "submitted")
        expected.update({s: m["total"] for s, m in manifest.items()})
        cmd = grade_command(tmp_path / prefix / "submitted", tmp_path / prefix / "out", "--db", url, jobs=1)
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, out[-2000:] + err[-3000:]

    both = {**_totals(tmp_path / "p" / "out"), **_totals(tmp_path / "q" / "out")}
    assert both == expected
    assert _export(url, tmp_path / "export.csv") == expected
    # one row per student, per notebook and per graded cell: nothing written twice
    per_cell = pg.query("course_two", "SELECT count(*), count(DISTINCT (notebook_id, cell_id)) FROM grade")[0]
    assert per_cell[0] == per_cell[1] == len(expected) * sum(len(p) for p in B.POINTS.values())
    assert pg.query("course_two", "SELECT count(*) FROM assignment")[0][0] == 1


def test_long_and_hostile_lms_names_fit_nbgraders_columns(pg, tmp_path):
    """LMS names longer than nbgrader's 128-character columns, with commas, quotes and markup: the
    class is graded whole into PostgreSQL, every name is stored cut to its column and inert, and
    nbgrader's export (which does not quote its fields) still agrees with totals.csv."""
    import json
    url = pg.create_database("course_names")
    students = _class("n")
    records = {students[0].student_id: {"first_name": "Amy" * 60, "last_name": "Ng, Jr." + "x" * 200,
                                        "email": "a" * 200 + "@example.org", "lms_user_id": "9" * 200},
               students[1].student_id: {"first_name": 'Mallory "Evil', "last_name": "<svg onload=alert(1)>"},
               students[2].student_id: {"first_name": "Bo\x00", "last_name": "Lee"}}   # PostgreSQL refuses NUL
    manifest = B.write_class(students, tmp_path / "submitted")
    for sid, record in records.items():
        folder = tmp_path / "submitted" / sid / "cnn_layers"
        (folder / "collect.json").write_text(json.dumps(dict(record, lms="moodle")), encoding="utf-8")
    proc = run_grade(tmp_path / "submitted", tmp_path / "out", "--db", url)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    totals = _totals(tmp_path / "out")
    assert totals == {s: m["total"] for s, m in manifest.items()}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["export_check"] == {"ok": True, "students": 3, "mismatched": []}
    rows = {r[0]: r[1:] for r in pg.query("course_names", "SELECT id, first_name, last_name, email, lms_user_id "
                                                          "FROM student")}
    first = students[0].student_id
    assert rows[first] == (("Amy" * 60)[:128], ("Ng, Jr." + "x" * 200)[:128], "a" * 128, "9" * 128)
    assert rows[students[1].student_id] == ("Mallory ＂Evil", "＜svg onload=alert(1)＞", None, None)
    assert rows[students[2].student_id] == ("Bo?", "Lee", None, None)
