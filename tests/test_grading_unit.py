"""Submission parsing, the results store, resume, reports, gradebook and export on a tiny class."""
import csv
import json
import os
import zipfile

import nbformat
import pytest

from autograder import checks, collect, feedback, grading
from autograder.assignments import cnn_layers
from autograder.cli import main as cli_main
from autograder.submission import load_source, read_submission

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = {nb: os.path.join(ROOT, "solutions", "cnn_layers", nb + ".ipynb") for nb in cnn_layers.NOTEBOOKS}
RELEASE = {nb: os.path.join(ROOT, "exercises", "cnn_layers", nb + ".ipynb") for nb in cnn_layers.NOTEBOOKS}
needs_notebooks = pytest.mark.skipif(not all(map(os.path.exists, list(SOURCE.values()) + list(RELEASE.values()))),
                                     reason="the source and release notebooks are not there yet")


def _nb(which="convolution", kind="solution"):
    return nbformat.read(SOURCE[which] if kind == "solution" else RELEASE[which], as_version=4)


def _write(nb, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nbformat.write(nb, path)
    return path


def _gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


# --------------------------------------------------------------------------- submissions

def test_corrupt_and_empty_notebooks_are_ungradable(tmp_path):
    src = SOURCE["convolution"]
    if not os.path.exists(src):
        pytest.skip("source notebook not there yet")
    bad = tmp_path / "a.ipynb"
    bad.write_text('{"cells": [ {"cell_type": "code", "sour')
    sub = read_submission(str(bad), src, "convolution")
    assert not sub.gradable and "not valid notebook JSON" in sub.reason
    assert set(sub.ungradable) == {"zero_pad", "conv_forward", "conv_backward"}
    bad.write_text("[1, 2, 3]")
    assert "not a Jupyter notebook" in read_submission(str(bad), src, "convolution").reason
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert not read_submission(str(bad), src, "convolution").gradable
    _write(nbformat.v4.new_notebook(), str(bad))
    assert read_submission(str(bad), src, "convolution").reason == "the notebook has no cells"


@needs_notebooks
def test_release_notebook_gives_learner_cells_without_tests():
    src = load_source(SOURCE["pooling"], "pooling")
    sub = read_submission(RELEASE["pooling"], src, "pooling")
    assert sub.gradable and sub.ungradable == {}
    # the release's own "check your gradients" scratch cell is not run, and the feedback says so
    (note,) = sub.notes
    assert note.startswith("not run for grading, since no graded function uses what they define")
    joined = "\n".join(sub.cells)
    assert "def maxpool_forward(" in joined and "def maxpool_backward(" in joined
    assert "default_rng()" not in joined and "def numerical_gradient(" not in joined
    assert sub.cells[0] == "import numpy as np"  # numpy is there even if the import cell is deleted
    assert len(sub.labels) == len(sub.cells) and sub.labels[-1].startswith("cell ")
    for test in src.tests.values():
        assert test.strip() not in joined


@needs_notebooks
def test_helper_cell_runs_as_released_when_a_function_uses_it(tmp_path):
    nb = _nb("pooling", "release")
    nb.cells[next(i for i, c in enumerate(nb.cells) if _gid(c) == "helpers")].source = "rel_error = None"
    sol = next(c for c in nb.cells if _gid(c) == "maxpool_backward_solution")
    sol.source = sol.source.replace('    """\n', '    """\n    assert rel_error(1.0, 1.0) == 0.0\n', 1)
    sub = read_submission(_write(nb, str(tmp_path / "p.ipynb")), SOURCE["pooling"], "pooling")
    src = load_source(SOURCE["pooling"], "pooling")
    assert src.helpers in sub.cells and "rel_error = None" not in "\n".join(sub.cells)
    assert any("the helper cell was edited" in n for n in sub.notes)


@needs_notebooks
def test_edited_deleted_and_duplicated_cells(tmp_path):
    nb = _nb("pooling")
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    tests[0].source = "assert True  # edited"
    nb.cells.remove(tests[1])
    sol = next(c for c in nb.cells if _gid(c) == "maxpool_forward_solution")
    copy = nbformat.from_dict(json.loads(json.dumps(sol)))
    nb.cells.append(copy)  # same id and grade_id, as a learner who copied the cell
    path = tmp_path / "p.ipynb"
    path.write_text(json.dumps(nb))  # nbformat.write would renumber the duplicated id
    sub = read_submission(str(path), SOURCE["pooling"], "pooling")
    notes = " ".join(sub.notes)
    assert f"test cell {_gid(tests[0])} was edited" in notes
    assert f"test cell {_gid(tests[1])} was deleted" in notes
    assert "duplicated cell ids" in notes and "duplicated grade_ids" in notes
    # the copy below is the definition the name binds in the end: the one above is not run
    assert sum("def maxpool_forward(" in c for c in sub.cells) == 1
    assert "maxpool_forward is defined again" in notes
    assert sub.ungradable == {}
    assert "assert True  # edited" not in "\n".join(sub.cells)


@needs_notebooks
def test_test_cell_without_metadata_is_recognised_by_content(tmp_path):
    nb = _nb("pooling")
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.metadata = {}
            c.id = "x" + c.id
    sub = read_submission(_write(nb, str(tmp_path / "p.ipynb")), SOURCE["pooling"], "pooling")
    assert not any("test cell" in n for n in sub.notes)
    assert len(sub.cells) == len(read_submission(SOURCE["pooling"], SOURCE["pooling"], "pooling").cells)


@needs_notebooks
def test_missing_function_and_forbidden_imports(tmp_path):
    nb = _nb("convolution")
    sol = next(c for c in nb.cells if _gid(c) == "conv_backward_solution")
    sol.source = "# I did not finish\n"
    sub = read_submission(_write(nb, str(tmp_path / "c.ipynb")), SOURCE["convolution"], "convolution")
    assert sub.ungradable == {"conv_backward": "function conv_backward is not defined"}

    nb = _nb("convolution")
    sol = next(c for c in nb.cells if _gid(c) == "conv_forward_solution")
    sol.source = "import scipy.signal\n" + sol.source
    sub = read_submission(_write(nb, str(tmp_path / "c.ipynb")), SOURCE["convolution"], "convolution")
    assert set(sub.ungradable) == {"conv_forward"} and "scipy" in sub.ungradable["conv_forward"]
    assert not any("def conv_forward(" in c for c in sub.cells)

    # a scratch cell importing anything is not run and costs nothing
    nb = _nb("convolution")
    nb.cells.append(nbformat.v4.new_code_cell("import torch\nimport matplotlib.pyplot as plt\nplt.plot([1])"))
    sub = read_submission(_write(nb, str(tmp_path / "c.ipynb")), SOURCE["convolution"], "convolution")
    assert sub.ungradable == {} and "import torch" not in "\n".join(sub.cells)
    assert any(n.startswith("not run for grading") and f"{len(nb.cells)} of the notebook" in n
               for n in sub.notes)

    # ... unless a graded function uses what it defines: then that function only is refused,
    # and the reason names the cell by its position and first line
    nb = _nb("convolution")
    nb.cells.append(nbformat.v4.new_code_cell("# my tools\nfrom scipy.signal import correlate\nk = 3"))
    sol = next(c for c in nb.cells if _gid(c) == "conv_backward_solution")
    sol.source = sol.source.replace('    """\n', '    """\n    _unused = (correlate, k)\n', 1)
    sub = read_submission(_write(nb, str(tmp_path / "c.ipynb")), SOURCE["convolution"], "convolution")
    assert set(sub.ungradable) == {"conv_backward"}
    reason = sub.ungradable["conv_backward"]
    assert "scipy" in reason and f"cell {len(nb.cells)} of the notebook (`# my tools`)" in reason
    assert "correlate" not in "\n".join(sub.cells)


@needs_notebooks
def test_magics_are_skipped_not_fatal(tmp_path):
    nb = _nb("pooling")
    sol = next(c for c in nb.cells if _gid(c) == "maxpool_forward_solution")
    sol.source = "%matplotlib inline\n" + sol.source
    sub = read_submission(_write(nb, str(tmp_path / "p.ipynb")), SOURCE["pooling"], "pooling")
    assert any("magics" in n for n in sub.notes)
    assert any("# %matplotlib inline" in c and "def maxpool_forward(" in c for c in sub.cells)


# --------------------------------------------------------------------------- store and reports

def test_atomic_store_round_trip_and_stale_temp_files(tmp_path):
    out = str(tmp_path)
    r = grading._finish(grading._base("s1", "pooling", "cnn_layers"),
                        grading._all("pooling", "ungradable", "ungradable: notebook missing"))
    path = grading.store_result(out, r)
    assert grading.load_result(out, "s1", "pooling") == json.loads(open(path).read())
    assert os.listdir(os.path.dirname(path)) == ["pooling.json"]
    stale = os.path.join(os.path.dirname(path), ".convolution.json.abc.tmp")
    open(stale, "w").write('{"format": 1, "cel')  # what a kill -9 during a write leaves
    assert grading.load_result(out, "s1", "convolution") is None
    grading._remove_stale_temp_files(out)
    assert not os.path.exists(stale)
    with open(path, "w") as fh:
        fh.write("{not json")
    assert grading.load_result(out, "s1", "pooling") is None


def test_feedback_escapes_learner_text():
    from autograder.assignment import load
    from autograder.gradebook import StudentGrades
    spec = load(ROOT, "cnn_layers")
    results = {}
    for nb in spec.notebooks:
        r = grading._finish(grading._base("<b>s</b>", nb, "cnn_layers"),
                            grading._all(nb, "error", "raised: <script>alert(1)</script>"))
        r["notes"] = ["<img src=x onerror=alert(1)>"]
        results[nb] = r
    grades = StudentGrades("<b>s</b>", comments={"pooling": {"maxpool_forward": "<i>see me</i>"}})
    page = feedback.render_student(spec, "<b>s</b>", results, grades, {"name": "<u>Amy</u>"})
    assert "<script>" not in page and "<img" not in page and "<b>s</b>" not in page and "<u>" not in page
    assert "<i>see me</i>" not in page and "&lt;i&gt;see me&lt;/i&gt;" in page
    assert "&lt;script&gt;" in page and "Total: <strong>0 / 47</strong>" in page


def test_discovery_errors_say_how_to_fix(tmp_path):
    with pytest.raises(grading.GradingError, match="no such folder"):
        grading.discover(str(tmp_path / "nope"))
    (tmp_path / "alice_x_convolution.ipynb").write_text("{}")
    with pytest.raises(grading.GradingError, match="collect"):
        grading.discover(str(tmp_path))
    assert cli_main(["grade", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["--assignment", "hw9", "grade", str(tmp_path), "--out", str(tmp_path / "o")]) == 2


# --------------------------------------------------------------------------- collect

@needs_notebooks
def test_collect_from_a_flat_zip_with_a_pattern_and_a_folder(tmp_path):
    data = open(RELEASE["pooling"], "rb").read()
    z = tmp_path / "lms.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("sub/alice_123_late_pooling.ipynb", data)
        zf.writestr("bob_456_convolution-1.ipynb", data)
        zf.writestr("carol_789_homework.ipynb", data)
        zf.writestr("readme.txt", "hi")
    dest = tmp_path / "submitted"
    pattern = r"(?:^|/)(?P<student_id>[a-z]+)_\d+_(?:late_)?(?P<notebook>[a-z]+)(?:-\d+)?\.ipynb$"
    rep = collect.collect(str(z), str(dest), "cnn_layers", pattern=pattern)
    assert sorted(os.path.relpath(p, dest) for p in rep.copied) == [
        os.path.join("alice", "cnn_layers", "pooling.ipynb"), os.path.join("bob", "cnn_layers", "convolution.ipynb")]
    assert any("carol_789_homework" in u and "is not a notebook of" in u for u in rep.unplaced)
    rep2 = collect.collect(str(z), str(dest), "cnn_layers", pattern=pattern)
    assert rep2.copied == [] and len(rep2.unchanged) == 2
    # a resubmission replaces the collected file
    target = dest / "alice" / "cnn_layers" / "pooling.ipynb"
    target.write_bytes(data + b"\n")
    assert str(target) in collect.collect(str(z), str(dest), "cnn_layers", pattern=pattern).copied
    # an nbgrader-layout folder is copied as it is (z itself stays)
    again = collect.collect(str(dest), str(tmp_path / "copy"), "cnn_layers")
    assert again.lms == "nbgrader" and len(again.copied) == 2 and z.exists()
    with pytest.raises(collect.CollectError, match="unknown assignment"):
        collect.collect(str(z), str(dest), "hw9")


# --------------------------------------------------------------------------- a tiny class

@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    if not all(map(os.path.exists, list(SOURCE.values()) + list(RELEASE.values()))):
        pytest.skip("the source and release notebooks are not there yet")
    pytest.importorskip("autograder.sandbox")
    base = tmp_path_factory.mktemp("class")
    sub, out = base / "submitted", base / "out"
    for nb in cnn_layers.NOTEBOOKS:  # alice: the solutions; bob: the stubs, pooling missing
        _write(_nb(nb), str(sub / "alice" / "cnn_layers" / f"{nb}.ipynb"))
    _write(_nb("convolution", "release"), str(sub / "bob" / "cnn_layers" / "convolution.ipynb"))
    (sub / "carol" / "cnn_layers").mkdir(parents=True)  # carol: corrupt conv, forbidden import in pooling
    (sub / "carol" / "cnn_layers" / "convolution.ipynb").write_text("{oops")
    pool = _nb("pooling")
    pool.cells.insert(0, nbformat.v4.new_code_cell("import torch"))
    for c in pool.cells:  # both functions use it
        if _gid(c) in ("maxpool_forward_solution", "maxpool_backward_solution"):
            c.source = c.source.replace('    """\n', '    """\n    torch.set_grad_enabled(False)\n', 1)
    _write(pool, str(sub / "carol" / "cnn_layers" / "pooling.ipynb"))
    summary = grading.grade_class(str(sub), str(out), ROOT, jobs=2, seed=1, progress=False)
    return sub, out, summary


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_class_scores_statuses_and_files(graded_class):
    sub, out, summary = graded_class
    totals = {r["student_id"]: float(r["score"]) for r in _csv(out / "totals.csv")}
    full = cnn_layers.max_score()
    assert totals == {"alice": full, "bob": 0.0, "carol": 0.0}
    rows = _csv(out / "grades.csv")
    assert len(rows) == 3 * len(cnn_layers.GRADED_CELLS)
    assert rows == sorted(rows, key=lambda r: (r["student_id"], r["assignment"], r["notebook"], r["grade_id"]))
    by = {(r["student_id"], r["grade_id"]): r for r in rows}
    assert by[("bob", "maxpool_backward_ties")]["status"] == "ungradable"
    assert "notebook missing" in by[("bob", "maxpool_backward_ties")]["reason"]
    assert by[("bob", "conv_forward_basic")]["status"] == "error"
    assert by[("carol", "zero_pad")]["status"] == "ungradable"
    assert "torch" in by[("carol", "maxpool_forward_basic")]["reason"]
    for student in ("alice", "bob", "carol"):
        assert (out / "feedback" / student / "cnn_layers.html").exists()
        for nb in cnn_layers.NOTEBOOKS:
            assert (sub.parent / "autograded" / student / "cnn_layers" / f"{nb}.ipynb").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["export_check"]["ok"] and run["students"] == 3
    assert "seed" not in json.dumps(run).lower()
    stored = json.loads((out / "results" / "alice" / "cnn_layers" / "pooling.json").read_text())
    assert stored["score"] == cnn_layers.max_score("pooling") and "seed" not in json.dumps(stored).lower()


def test_gradebook_and_nbgrader_export_agree_with_totals(graded_class, tmp_path):
    sub, out, summary = graded_class
    from autograder.gradebook import gradebook_totals
    totals = {r["student_id"]: float(r["score"]) for r in _csv(out / "totals.csv")}
    from autograder.nbgrader_config import default_db_url
    db = default_db_url(str(sub.parent))  # the course folder: the one that holds submitted/
    assert gradebook_totals(db, "cnn_layers") == totals
    dest = tmp_path / "export.csv"
    assert cli_main(["export", "--course", str(sub.parent), "--to", str(dest)]) == 0
    keys, unclear = grading._export_keys(db)
    assert unclear == [] and grading.read_export(str(dest), keys) == (totals, [])


def test_resume_recomputes_only_what_is_missing_and_is_idempotent(graded_class):
    sub, out, summary = graded_class
    import sqlite3
    keep = out / "results" / "alice" / "cnn_layers" / "pooling.json"
    gone = out / "results" / "bob" / "cnn_layers" / "convolution.json"
    before = keep.stat().st_mtime_ns
    old = json.loads(gone.read_text())
    gone.unlink()
    (gone.parent / ".convolution.json.x.tmp").write_text("{")  # a write cut short
    again = grading.grade_class(str(sub), str(out), ROOT, jobs=1, seed=2, progress=False, check_export=False)
    assert again["graded_this_run"] == 1 and again["reused"] == 5
    assert keep.stat().st_mtime_ns == before
    assert json.loads(gone.read_text())["score"] == old["score"]
    assert not (gone.parent / ".convolution.json.x.tmp").exists()
    con = sqlite3.connect(str(sub.parent / "gradebook.db"))
    assert con.execute("select count(*) from grade").fetchone()[0] == 3 * len(cnn_layers.GRADED_CELLS)
    assert con.execute("select count(*) from submitted_assignment").fetchone()[0] == 3
    assert len(_csv(out / "grades.csv")) == 3 * len(cnn_layers.GRADED_CELLS)


def test_the_gradebook_written_beside_the_grading_is_the_one_sync_writes(graded_class, tmp_path):
    """Each student goes to the gradebook, in a thread beside the grading, as soon as their
    notebooks are graded; the gradebook is the one a single sync of the stored results writes."""
    sub, out, _ = graded_class
    from autograder import gradebook
    from autograder.assignment import load
    from autograder.nbgrader_config import default_db_url
    from test_fixed_cost import _canonical_rows
    spec = load(ROOT, "cnn_layers")
    found = ["alice", "bob", "carol"]
    other = "sqlite:///" + str(tmp_path / "sync.db")
    gradebook.sync(other, spec, grading._results_for(str(out), found, spec.notebooks, "cnn_layers"),
                   grading._learners(str(sub), found, "cnn_layers"))
    assert _canonical_rows(default_db_url(str(sub.parent))) == _canonical_rows(other)


def test_a_gradebook_that_cannot_be_opened_stops_the_run_before_any_grading(graded_class, tmp_path):
    sub, _, _ = graded_class
    out = tmp_path / "out"
    with pytest.raises(grading.GradingError, match="cannot open the gradebook"):
        grading.grade_class(str(sub), str(out), ROOT, db_url="postgresql://nobody@127.0.0.1:1/none", jobs=2,
                            seed=4, progress=False)
    assert not list(out.glob("results/*/*/*.json"))


def test_a_gradebook_failure_mid_run_is_raised_and_loses_no_result(graded_class, tmp_path, monkeypatch):
    """The gradebook's thread fails on the second student: the run raises that failure at its
    end, every notebook's result is stored, and the next run writes the gradebook from them."""
    import shutil
    from autograder import gradebook
    from autograder.nbgrader_config import default_db_url
    sub, _, _ = graded_class
    course = tmp_path / "course"
    shutil.copytree(sub, course / "submitted")
    out = course / "out"
    real = gradebook.writer
    written = []

    def failing(*args, **kwargs):
        cm = real(*args, **kwargs)

        class Writer:
            def __enter__(self):
                write = cm.__enter__()

                def once(student, *a, **k):
                    if written:
                        raise RuntimeError("the gradebook's disk is full")
                    written.append(student)
                    return write(student, *a, **k)
                return once

            def __exit__(self, *exc):
                return cm.__exit__(*exc)
        return Writer()

    monkeypatch.setattr(gradebook, "writer", failing)
    with pytest.raises(RuntimeError, match="disk is full"):
        grading.grade_class(str(course / "submitted"), str(out), ROOT, jobs=2, seed=5, progress=False)
    assert len(list(out.glob("results/*/cnn_layers/*.json"))) == 6 and len(written) == 1
    monkeypatch.setattr(gradebook, "writer", real)
    again = grading.grade_class(str(course / "submitted"), str(out), ROOT, jobs=2, seed=5, progress=False)
    assert again["graded_this_run"] == 0 and again["export_check"]["ok"]
    totals = {r["student_id"]: float(r["score"]) for r in _csv(out / "totals.csv")}
    assert gradebook.gradebook_totals(default_db_url(str(course)), "cnn_layers") == totals
    assert totals == {"alice": cnn_layers.max_score(), "bob": 0.0, "carol": 0.0}


def test_a_transient_grader_failure_is_retried_in_the_same_run(graded_class, monkeypatch, tmp_path):
    """The grader itself failing once (e.g. CPython 3.11's parser race between threads)
    costs no grade: the notebook is graded again at the end of the run."""
    sub, _, _ = graded_class
    out = tmp_path / "out"
    real = checks.grade_notebook
    calls = {"n": 0}

    def flaky(notebook, *args, **kwargs):
        calls["n"] += 1
        if notebook == "pooling" and calls["n"] <= 2:
            raise SystemError("AST constructor recursion depth mismatch (before=36, after=62)")
        return real(notebook, *args, **kwargs)

    monkeypatch.setattr(checks, "grade_notebook", flaky)
    only_alice = tmp_path / "submitted"
    (only_alice / "alice").mkdir(parents=True)
    import shutil
    shutil.copytree(sub / "alice" / "cnn_layers", only_alice / "alice" / "cnn_layers")
    summary = grading.grade_class(str(only_alice), str(out), ROOT, jobs=1, seed=3, progress=False,
                                  check_export=False)
    assert summary["grader_errors"] == []
    stored = json.loads((out / "results" / "alice" / "cnn_layers" / "pooling.json").read_text())
    assert stored["status"] == "graded" and stored["score"] == cnn_layers.max_score("pooling")
    assert "grader_traceback" not in stored


def test_the_next_learners_sandbox_starts_ahead_only_behind_bubblewrap():
    """Without bubblewrap a learner's processes could reach a sandbox started ahead for the
    next learner (the same user), so none is started then."""
    from autograder import sandbox
    assert grading._prestarted(sandbox, sandbox.Limits(), "rlimits-only") is None
    if sandbox.isolation_mode() == "bubblewrap":
        spare = grading._prestarted(sandbox, sandbox.Limits(), None)
        try:
            assert spare is not None and spare.cells == [] and spare._starting is not None
        finally:
            spare.close()


def test_the_graders_peak_memory_is_its_own():
    """run.json's grader_peak_rss_mib is the grading process's own peak: getrusage's maxrss
    carries over exec what the starting process held (a test runner with PyTorch loaded made a
    148 MiB run read 704 MiB)."""
    import subprocess
    import sys
    import numpy as np
    held = np.ones(300 << 17)      # 300 MiB in this process when it starts the next one
    held[::512] = 2.0               # touched, so resident
    code = ("import resource, autograder.grading as g; "
            "print(g._peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    own, inherited = float(out[0]), float(out[1])
    assert inherited > 300, "this kernel does not carry maxrss over exec: the test shows nothing here"
    assert own < 250, own
    del held
