"""What every grading run pays whatever the class: the shortcuts must give nbgrader's own answers.

The gradebook's schema revision is read in-process instead of from the ``alembic``
command, the export check runs nbgrader's CSV exporter in-process instead of
``nbgrader export``, and jsonschema is imported without the IRI grammars; each must
give what the slow way gives.
"""
import contextlib
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


def _script(folder, name, revision, down, extra=""):
    (folder / f"{name}.py").write_text(f'"""{name}"""\nrevision = {revision!r}\ndown_revision = {down!r}\n'
                                       f"branch_labels = None\ndepends_on = None\n{extra}")


def test_alembic_head_is_read_without_alembic_only_from_a_plain_chain(tmp_path):
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from autograder.gradebook import _linear_head

    def alembic_heads(folder):
        (folder.parent / "script.py.mako").write_text("")
        cfg = Config()
        cfg.set_main_option("script_location", str(folder.parent))
        return ScriptDirectory.from_config(cfg).get_heads()

    chain = tmp_path / "chain" / "versions"
    chain.mkdir(parents=True)
    _script(chain, "a", "aaa", None)
    _script(chain, "b", "bbb", "aaa")
    _script(chain, "c", "ccc", "bbb", "def upgrade():\n    pass\n")
    assert alembic_heads(chain) == ["ccc"] and _linear_head(str(chain)) == "ccc"
    # two heads, a merge, a computed revision: not a plain chain, alembic decides
    _script(chain, "d", "ddd", "bbb")
    assert sorted(alembic_heads(chain)) == ["ccc", "ddd"] and _linear_head(str(chain)) is None
    _script(chain, "e", "eee", ("ccc", "ddd"))
    assert alembic_heads(chain) == ["eee"] and _linear_head(str(chain)) is None
    odd = tmp_path / "odd" / "versions"
    odd.mkdir(parents=True)
    (odd / "a.py").write_text("revision = 'a' + 'b'\ndown_revision = None\n")
    assert _linear_head(str(odd)) is None
    assert _linear_head(str(tmp_path / "missing")) is None


def test_nbgraders_schema_head_is_read_without_importing_alembic():
    code = ("import sys; from autograder.gradebook import alembic_head; print(alembic_head()); "
            "assert 'alembic' not in sys.modules, 'the chain was not read from its text'")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_sandbox_self_test_started_early_gives_the_same_mode(monkeypatch):
    """grade starts the sandbox's self-test in a thread at once; the mode is the one a direct call finds,
    and a self-test that raises leaves the question open for grade_class to ask (and report) again."""
    from autograder import cli, sandbox
    from autograder.sandbox import SandboxError
    ok, _why = sandbox._self_test()
    monkeypatch.setattr(sandbox, "_mode", None)
    cli._start_sandbox_self_test().join(120)
    assert sandbox._mode == ("bubblewrap" if ok else "rlimits-only")

    def broken():
        raise SandboxError("ldd is missing")
    monkeypatch.setattr(sandbox, "_mode", None)
    monkeypatch.setattr(sandbox, "_self_test", broken)
    cli._start_sandbox_self_test().join(120)
    assert sandbox._mode is None
    with pytest.raises(SandboxError):
        sandbox.isolation_mode()


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


def test_gradebook_loads_nbgrader_without_its_server_extensions():
    """The gradebook needs nbgrader's API only; the rest of the package is there when asked for."""
    code = (
        "import sys; import autograder.gradebook\n"
        "loaded = [m for m in ('nbgrader.server_extensions', 'nbgrader.apps', 'nbgrader.exchange', 'nbconvert',"
        " 'jupyter_server', 'nbgrader.preprocessors') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import nbgrader, nbgrader.api\n"
        "from nbgrader._version import __version__\n"
        "assert nbgrader.__version__ == __version__ and nbgrader.api.Gradebook\n"
        "from nbgrader import plugins\n"
        "assert 'nbgrader.server_extensions' not in sys.modules, 'a submodule import ran the __init__'\n"
        "assert nbgrader._jupyter_server_extension_points() == [{'module': 'nbgrader'}]\n"
        "assert 'nbgrader.server_extensions.formgrader' in sys.modules\n"
        "print(sorted(n for n in dir(nbgrader) if not n.startswith('__')))\n")
    full = "import nbgrader; print(sorted(n for n in dir(nbgrader) if not n.startswith('__')))\n"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lazy = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert lazy.returncode == 0, lazy.stderr[-2000:]
    eager = subprocess.run([sys.executable, "-c", full], cwd=root, capture_output=True, text=True, check=True)
    # once completed, the package has every name that a plain `import nbgrader` gives
    assert set(eval(eager.stdout)) <= set(eval(lazy.stdout))


def _canonical_rows(db_url):
    """Every row of every table of the gradebook, with each generated id replaced by what it identifies
    (its table and its other columns, foreign keys resolved the same way): equal for equal gradebooks."""
    from sqlalchemy import MetaData, create_engine, select
    engine = create_engine(db_url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        rows = {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in meta.sorted_tables}
    engine.dispose()
    fks = {t.name: {fk.parent.name: fk.column.table.name for fk in t.foreign_keys} for t in meta.sorted_tables}
    by_id = {(t, r["id"]): r for t in rows for r in rows[t] if "id" in r}

    def canon(table, row):
        return (table,) + tuple(sorted(
            (k, canon(fks[table][k], by_id[(fks[table][k], v)]) if k in fks[table] and v is not None else repr(v))
            for k, v in row.items() if k != "id"))
    return {t: sorted(repr(canon(t, r)) for r in rows[t]) for t in rows}


def _results(spec, scores):
    """Stored-result dicts for students {id: fraction of cells passed}."""
    out = {}
    for student, fraction in scores.items():
        per = {}
        for nb in spec.notebooks:
            cells = []
            for k, cell in enumerate(spec.cells_of(nb)):
                ok = k < fraction * len(spec.cells_of(nb))
                cells.append({"grade_id": cell.grade_id, "function": cell.function,
                              "status": "passed" if ok else "failed", "score": cell.points if ok else 0.0,
                              "max_score": cell.points, "reason": "" if ok else f"{cell.grade_id} is wrong"})
            per[nb] = {"notebook": nb, "cells": cells}
        out[student] = per
    return out


def test_sync_in_one_transaction_writes_the_rows_of_per_row_commits(tmp_path, monkeypatch):
    """sync commits once per phase instead of after every row; the gradebook it leaves is the same."""
    from traitlets.config import Config
    from autograder import gradebook
    from autograder.assignment import load
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = load(root, "cnn_layers")
    config = Config()
    config.LateSubmissionPlugin.penalty_method = "zero"
    learners = {"ann": {"first_name": "Ann", "timestamp": "2026-03-06 11:00:00 UTC"},
                "bo": {"lms_user_id": "77", "timestamp": "2026-03-07 13:00:00 UTC"},
                "Zoë_李": {}}

    def run(db_url):
        first = gradebook.sync(db_url, spec, _results(spec, {"ann": 1.0, "bo": 0.5, "Zoë_李": 0.0}), learners,
                               duedate="2026-03-06 12:00:00 UTC", late=gradebook.late_plugin(config))
        with gradebook.open_gradebook(db_url) as gb:   # an instructor's manual score in formgrader
            grade = gb.find_grade("conv_forward_basic", "convolution", "cnn_layers", "Zoë_李")
            grade.manual_score = 1.5
            gb.db.commit()
        again = gradebook.sync(db_url, spec, _results(spec, {"ann": 0.5, "bo": 1.0, "Zoë_李": 0.25, "cy": 1.0}),
                               learners, duedate="2026-03-06 12:00:00 UTC", late=gradebook.late_plugin(config))
        return first, again, _canonical_rows(db_url)

    fast = run("sqlite:///" + str(tmp_path / "one_transaction.db"))
    monkeypatch.setattr(gradebook, "_one_transaction", lambda gb: contextlib.nullcontext())
    slow = run("sqlite:///" + str(tmp_path / "per_row.db"))
    assert fast == slow
    first, again, rows = fast
    assert again["bo"].penalty == again["bo"].raw_score > 0 and again["ann"].penalty == 0
    assert again["Zoë_李"].cells["convolution"]["conv_forward_basic"].score == 1.5
    assert len(rows["grade"]) == 4 * sum(len(spec.grade_ids(nb)) for nb in spec.notebooks)


def test_one_transaction_rolls_back_on_an_error(tmp_path):
    from autograder import gradebook
    db_url = "sqlite:///" + str(tmp_path / "gradebook.db")
    with gradebook.open_gradebook(db_url) as gb:
        with pytest.raises(RuntimeError):
            with gradebook._one_transaction(gb):
                gb.add_student("ann")
                gb.update_or_create_assignment("cnn_layers")
                raise RuntimeError("stop")
        assert gb.students == [] and gb.assignments == []
        assert "commit" not in vars(gb.db)   # nbgrader commits for real again


def test_late_policy_reads_every_section_nbgrader_reads():
    """The late-penalty preprocessor is built lazily only when the configuration sets none of the
    sections its classes (and their plugin's) read; LATE_SECTIONS must name them all."""
    from traitlets.config import Configurable
    from nbgrader.plugins import LateSubmissionPlugin
    from nbgrader.preprocessors import AssignLatePenalties
    from autograder.gradebook import LATE_SECTIONS
    read = {c.__name__ for cls in (AssignLatePenalties, LateSubmissionPlugin) for c in cls.mro()
            if isinstance(c, type) and issubclass(c, Configurable)}
    assert read <= LATE_SECTIONS


def test_late_policy_is_nbgraders_and_a_bad_one_is_reported_at_once(tmp_path):
    from traitlets import TraitError
    from traitlets.config import Config
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties
    from autograder import gradebook
    db_url = "sqlite:///" + str(tmp_path / "gradebook.db")
    with gradebook.open_gradebook(db_url) as gb:
        gb.add_assignment("a", duedate="2026-03-06 12:00:00 UTC")
        gb.add_notebook("n", "a")
        gb.add_grade_cell("c", "n", "a", max_score=4, cell_type="code")
        gb.add_student("s")
        gb.add_submission("a", "s", timestamp="2026-03-06 14:00:00 UTC")
        grade = gb.find_grade("c", "n", "a", "s")
        grade.auto_score = 3.0
        gb.db.commit()
        snb = gb.find_submission_notebook("n", "a", "s")
        for method in ("none", "zero"):
            config = Config()
            config.LateSubmissionPlugin.penalty_method = method
            pre = AssignLatePenalties(config=config)
            pre.init_plugin()
            expected = pre.plugin_inst.late_submission_penalty("s", snb.score, 7200.0)
            expected = None if expected is None else pre._check_late_penalty(snb, expected)
            policy = gradebook.late_plugin(config)
            assert policy.built                      # configured: built at once
            assert policy.penalty("s", snb, 7200.0) == expected
        lazy = gradebook.late_plugin(Config())
        assert not lazy.built                         # nbgrader's default policy: built only when needed
        assert lazy.penalty("s", snb, 7200.0) is None and lazy.built
    bad = Config()
    bad.AssignLatePenalties.plugin_class = "no_such_module.Policy"
    with pytest.raises((TraitError, ImportError)):
        gradebook.late_plugin(bad)
    assert Gradebook   # nbgrader's own class, as the gradebook module uses it


def test_the_command_ends_without_module_teardown_but_with_everything_shutdown_does(tmp_path):
    """``python -m autograder`` skips the interpreter's teardown of its modules; it still waits for
    running threads, runs the atexit handlers, delivers all of its output and keeps main's exit code."""
    marker = str(tmp_path / "m")
    code = ("import atexit, sys, threading, time\n"
            "marker = sys.argv[1]\n"
            "atexit.register(lambda: open(marker + '.atexit', 'w').write(str(thread_done)))\n"
            "thread_done = False\n"
            "def late():\n"
            "    global thread_done\n"
            "    time.sleep(3); thread_done = True\n"
            "threading.Thread(target=late).start()\n"
            "sys.stdout.write('x' * 100000 + '\\n')\n"
            "from autograder.cli import run\n"
            "run(['grade', marker + '-missing'])\n"
            "raise SystemExit('not reached')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, marker], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "x" * 100000 + "\n"
    assert "does not exist" in proc.stderr and "not reached" not in proc.stderr
    with open(marker + ".atexit") as fh:
        assert fh.read() == "True"       # the thread ended before the atexit handlers ran


def test_registration_skips_only_cells_the_gradebook_already_holds(tmp_path, monkeypatch):
    """register_assignment adds missing cells itself and calls nbgrader's update_or_create_* only for
    cells that differ from the gradebook; the rows it leaves (first run, unchanged run, a gradebook
    edited by hand) are the rows that calling nbgrader's update_or_create_* for every cell leaves."""
    from autograder import gradebook
    from autograder.assignment import load
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = load(root, "cnn_layers")

    def run(db_url):
        with gradebook.open_gradebook(db_url) as gb:
            gradebook.register_assignment(gb, spec, "2026-03-06 12:00:00 UTC")
            gb.db.commit()
            first = _canonical_rows(db_url)
            gradebook.register_assignment(gb, spec, "2026-03-06 12:00:00 UTC")
            gb.db.commit()
            assert _canonical_rows(db_url) == first
            gb.find_grade_cell("conv_forward_basic", "convolution", "cnn_layers").max_score = 99
            helper = gb.find_source_cell("helpers", "convolution", "cnn_layers")
            helper.source, helper.locked = "tampered", not helper.locked
            gb.db.delete(gb.find_source_cell("maxpool_forward_solution", "pooling", "cnn_layers"))
            gb.db.commit()
            assert _canonical_rows(db_url) != first
            gradebook.register_assignment(gb, spec, "2026-03-06 12:00:00 UTC")
            gb.db.commit()
        return first, _canonical_rows(db_url)

    fast = run("sqlite:///" + str(tmp_path / "skip.db"))
    assert fast[1] == fast[0]              # the edits were put back
    # every cell through nbgrader's update_or_create_* (which adds what is missing with its add_*)
    monkeypatch.setattr(gradebook, "_registered", lambda gb, assignment: _HeldWithOtherValues())
    assert run("sqlite:///" + str(tmp_path / "every_cell.db")) == fast


class _HeldWithOtherValues(dict):
    """What the gradebook holds, as register_assignment reads it, when every cell seems to differ."""

    def get(self, key, default=None):
        return {"values": "that match no cell"}


def test_a_sqlite_gradebook_is_checked_without_sqlalchemy_and_refused_with_the_reason(tmp_path):
    """A plain SQLite URL is checked with the standard library (no SQLAlchemy to load before
    grading); a folder that cannot be made and a file that is not a database are refused."""
    code = ("import sys; from autograder.dburl import check_url; "
            f"check_url('sqlite:///{tmp_path}/new/gradebook.db'); print('sqlalchemy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False" and (tmp_path / "new" / "gradebook.db").is_file()
    from autograder.dburl import GradebookUnavailable, check_url
    (tmp_path / "blocker").write_text("a file where the course folder should be")
    with pytest.raises(GradebookUnavailable, match="cannot create .*blocker"):
        check_url(f"sqlite:///{tmp_path}/blocker/gradebook.db")
    (tmp_path / "notes.db").write_text("these are my notes, not a database " * 100)
    with pytest.raises(GradebookUnavailable, match="cannot open the gradebook .*not a database"):
        check_url(f"sqlite:///{tmp_path}/notes.db")
    for url in (f"sqlite:///{tmp_path}/with%20space.db", "sqlite://", "sqlite:///:memory:"):
        check_url(url)                       # through SQLAlchemy, as before
    assert (tmp_path / "with space.db").is_file()


def test_a_submissions_grades_and_comments_read_in_one_query_are_nbgraders(tmp_path):
    """The writer looks a student's grade and comment rows up in one query each; every row is the
    one nbgrader's find_grade and find_comment return."""
    from autograder import gradebook
    from autograder.assignment import load
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = load(root, "cnn_layers")
    db_url = "sqlite:///" + str(tmp_path / "gradebook.db")
    gradebook.sync(db_url, spec, _results(spec, {"ann": 1.0, "bo": 0.5}))
    with gradebook.open_gradebook(db_url) as gb:
        for student in ("ann", "bo"):
            sub = gb.find_submission("cnn_layers", student)
            grades, comments = gradebook._grades_of(gb, sub), gradebook._comments_of(gb, sub)
            expected = {(nb, gid): gb.find_grade(gid, nb, "cnn_layers", student).id
                        for nb in spec.notebooks for gid in spec.grade_ids(nb)}
            assert {k: g.id for k, g in grades.items()} == expected
            functions = {(nb, f"{c.function}_solution") for nb in spec.notebooks for c in spec.cells_of(nb)}
            assert {k: c.id for k, c in comments.items() if k in functions} == \
                {(nb, name): gb.find_comment(name, nb, "cnn_layers", student).id for nb, name in functions}
            assert len(comments) >= len(functions) > 0
