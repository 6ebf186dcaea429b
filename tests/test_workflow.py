"""A term's workflow end to end: LMS downloads collected, resubmissions regraded, one student
regraded, late work penalised under nbgrader's policies, manual scores kept, nbgrader's own
commands (``nbgrader db``, ``generate_feedback``, ``export``) on the course's gradebook, grade
files for the LMS, and the notebooks as the single truth of what is graded.

The LMS zips are built by tests/lms_downloads.py from each LMS's documented layout.  Grading
runs the real sandbox and real nbgrader; the class is small (learners who hand in only the
pooling notebook) so that the whole module takes a few minutes.
"""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import checks, collect, lms
from autograder.assignments import cnn_layers
from autograder.cli import main as cli_main

import lms_downloads as L

REPO = Path(__file__).resolve().parents[1]
SOLUTION = {nb: (REPO / "solutions" / "cnn_layers" / f"{nb}.ipynb").read_bytes() for nb in cnn_layers.NOTEBOOKS}
RELEASE = {nb: (REPO / "exercises" / "cnn_layers" / f"{nb}.ipynb").read_bytes() for nb in cnn_layers.NOTEBOOKS}
POOLING_MAX = 18.0
TOTAL_MAX = 47.0


def _csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _placed(report, dest):
    return sorted(os.path.relpath(p, dest) for p in report.copied)


# --------------------------------------------------------------------------- collect: each LMS

def test_canvas_download_with_late_marker_and_renamed_files(tmp_path):
    z = L.canvas(tmp_path / "submissions.zip", [
        ("ngamy", "1001", "9001", "Convolution.ipynb", SOLUTION["convolution"], False),
        ("ngamy", "1001", "9002", "pooling (1).ipynb", SOLUTION["pooling"], False),
        ("leebo", "1002", "9003", "convolution-1.ipynb", RELEASE["convolution"], True),
        ("leebo", "1002", "9004", "notes.txt", b"hi", True),
    ])
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")
    assert rep.lms == "canvas" and rep.unplaced == []
    assert _placed(rep, dest) == ["leebo/cnn_layers/convolution.ipynb", "ngamy/cnn_layers/convolution.ipynb",
                                  "ngamy/cnn_layers/pooling.ipynb"]
    assert (dest / "ngamy" / "cnn_layers" / "pooling.ipynb").read_bytes() == SOLUTION["pooling"]
    bo = collect.read_manifest(dest / "leebo" / "cnn_layers")
    assert bo["lms"] == "canvas" and bo["lms_user_id"] == "1002" and bo["late"] is True
    assert bo["files"] == {"convolution": "leebo_LATE_1002_9003_convolution-1.ipynb"}
    assert collect.read_manifest(dest / "ngamy" / "cnn_layers")["late"] is False


def test_moodle_download_in_folders_and_flat(tmp_path):
    rows = [("Amy Ng", "5001", "convolution.ipynb", SOLUTION["convolution"]),
            ("Amy Ng", "5001", "pooling.ipynb", SOLUTION["pooling"]),
            ("José María Pérez", "5002", "Pooling.ipynb", RELEASE["pooling"])]
    for folders in (True, False):
        dest = tmp_path / f"submitted-{folders}"
        z = L.moodle(tmp_path / f"moodle-{folders}.zip", rows, folders=folders)
        rep = collect.collect(str(z), str(dest), "cnn_layers")  # detected, no --pattern
        assert rep.lms == "moodle" and rep.unplaced == [], rep.unplaced
        assert _placed(rep, dest) == ["amy-ng/cnn_layers/convolution.ipynb", "amy-ng/cnn_layers/pooling.ipynb",
                                      "jose-maria-perez/cnn_layers/pooling.ipynb"]
        who = collect.read_manifest(dest / "jose-maria-perez" / "cnn_layers")
        assert who["name"] == "José María Pérez" and who["lms_user_id"] == "5002"
        assert who["first_name"] == "José" and who["last_name"] == "María Pérez"
    # keyed by the participant id instead of the name
    rep = collect.collect(str(tmp_path / "moodle-True.zip"), str(tmp_path / "by-id"), "cnn_layers",
                          lms_name="moodle", ids="lms")
    assert _placed(rep, tmp_path / "by-id")[0].startswith("5001/")


def test_gradescope_export_with_metadata(tmp_path):
    z = L.gradescope(tmp_path / "submissions.zip", [
        ("111", "Amy Ng", "s1001", "amy@example.edu", "2026-03-07 10:00:00.000000000 -08:00", "convolution.ipynb",
         SOLUTION["convolution"]),
        ("111", "Amy Ng", "s1001", "amy@example.edu", "2026-03-07 10:00:00.000000000 -08:00", "pooling.ipynb",
         SOLUTION["pooling"]),
        ("112", "Bo Lee", "s1002", "bo@example.edu", "2026-03-05 09:30:00.000000000 +00:00", "pooling.ipynb",
         RELEASE["pooling"]),
    ])
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")
    assert rep.lms == "gradescope" and rep.unplaced == []
    assert _placed(rep, dest) == ["s1001/cnn_layers/convolution.ipynb", "s1001/cnn_layers/pooling.ipynb",
                                  "s1002/cnn_layers/pooling.ipynb"]
    amy = collect.read_manifest(dest / "s1001" / "cnn_layers")
    assert amy["name"] == "Amy Ng" and amy["email"] == "amy@example.edu"
    # 10:00 at UTC-8 is 18:00 UTC; nbgrader's timestamp.txt says so
    assert (dest / "s1001" / "cnn_layers" / "timestamp.txt").read_text().strip() == "2026-03-07 18:00:00 UTC"


def test_blackboard_download_with_attempt_times(tmp_path):
    z = L.blackboard(tmp_path / "gradebook_CNN101_Homework3.zip", [
        ("amyng", "Amy Ng", "2026-03-07-10-00-00", "convolution.ipynb", SOLUTION["convolution"]),
        ("boolee", "Bo Lee", "2026-03-05-09-30-00", "pooling.ipynb", RELEASE["pooling"]),
    ])
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")
    assert rep.lms == "blackboard" and rep.unplaced == []
    assert _placed(rep, dest) == ["amyng/cnn_layers/convolution.ipynb", "boolee/cnn_layers/pooling.ipynb"]
    assert collect.read_manifest(dest / "amyng" / "cnn_layers")["name"] == "Amy Ng"
    assert (dest / "boolee" / "cnn_layers" / "timestamp.txt").read_text().strip() == "2026-03-05 09:30:00 UTC"
    assert len(rep.ignored) == 2  # the receipts


# --------------------------------------------------------------------------- collect: nothing guessed

def test_two_learners_never_merge_and_two_files_never_overwrite(tmp_path, capsys):
    z = tmp_path / "canvas.zip"
    L.canvas(z, [("amy", "1", "10", "convolution.ipynb", SOLUTION["convolution"], False),
                 ("amy", "2", "11", "convolution.ipynb", RELEASE["convolution"], False),
                 ("bo", "3", "12", "pooling.ipynb", SOLUTION["pooling"], False),
                 ("bo", "3", "13", "Pooling (1).ipynb", RELEASE["pooling"], False)])
    dest = tmp_path / "submitted"
    assert cli_main(["collect", str(z), "--to", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "would all become student 'amy'" in out and "--ids lms" in out
    assert "2 files would become bo/pooling.ipynb" in out
    assert not dest.exists() or not any(dest.rglob("*.ipynb"))
    # keyed by the LMS id, the two Amys are two students
    assert collect.collect(str(z), str(tmp_path / "ids"), "cnn_layers", ids="lms").copied


def test_folders_without_the_assignment_links_and_fifos_are_not_placed(tmp_path, capsys):
    src = tmp_path / "download"
    (src / "amy" / "hw3").mkdir(parents=True)
    (src / "amy" / "hw3" / "convolution.ipynb").write_bytes(SOLUTION["convolution"])
    (src / "bo" / "cnn-layers").mkdir(parents=True)
    (src / "bo" / "cnn-layers" / "pooling.ipynb").write_bytes(SOLUTION["pooling"])
    (src / "cy" / "cnn_layers").mkdir(parents=True)
    (src / "cy" / "cnn_layers" / "pooling.ipynb").write_bytes(SOLUTION["pooling"])
    os.symlink(REPO / "solutions" / "cnn_layers" / "convolution.ipynb", src / "cy" / "cnn_layers" / "convolution.ipynb")
    (src / "dee" / "cnn_layers").mkdir(parents=True)
    os.mkfifo(src / "dee" / "cnn_layers" / "pooling.ipynb")
    dest = tmp_path / "submitted"
    assert cli_main(["collect", str(src), "--to", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "amy/hw3/convolution.ipynb: the folder 'hw3' is not the assignment 'cnn_layers'" in out
    assert "bo/cnn-layers/pooling.ipynb: the folder 'cnn-layers'" in out
    assert "cy/cnn_layers/convolution.ipynb: a symbolic link" in out
    assert "dee/cnn_layers/pooling.ipynb: a FIFO" in out
    assert "copied     " + str(dest / "cy" / "cnn_layers" / "pooling.ipynb") in out
    assert not (dest / "cy" / "cnn_layers" / "convolution.ipynb").exists()


def test_messages_name_the_fix(tmp_path, capsys):
    assert cli_main(["collect", str(tmp_path / "nope.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
    z = tmp_path / "odd.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("week3 - amy - conv.ipynb", SOLUTION["convolution"])
    assert cli_main(["collect", str(z), "--to", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "'week3 - amy - conv.ipynb'" in err and "--lms NAME" in err and "--pattern" in err
    assert "--lms canvas:" in err and "--lms moodle:" in err
    assert cli_main(["collect", str(z), "--to", str(tmp_path / "s"), "--lms", "canvas"]) == 1
    out = capsys.readouterr().out
    assert "does not match the canvas layout" in out and "<user id>" in out
    assert cli_main(["grade", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a Python without the course's packages is told to use the virtual environment
    proc = subprocess.run([sys.executable, "-S", "-m", "autograder", "grade", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "make setup" in proc.stderr and ".venv/bin/activate" in proc.stderr


# --------------------------------------------------------------------------- the notebooks are the truth

def _course_copy(tmp_path):
    root = tmp_path / "course"
    shutil.copytree(REPO / "solutions", root / "solutions")
    shutil.copytree(REPO / "exercises", root / "exercises")
    return root


def test_release_and_validate_refuse_notebooks_that_disagree_with_the_checks(tmp_path, capsys):
    root = _course_copy(tmp_path)
    path = root / "solutions" / "cnn_layers" / "convolution.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "conv_forward_basic")
    cell.metadata.nbgrader["points"] = 5
    extra = nbformat.v4.new_code_cell("assert True")
    extra.metadata["nbgrader"] = {"grade": True, "grade_id": "conv_forward_extra", "locked": True, "points": 3,
                                  "schema_version": 3, "solution": False, "task": False}
    nb.cells.append(extra)
    gone = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "zero_pad")
    nb.cells.remove(gone)
    nbformat.write(nb, path)
    before = (root / "exercises" / "cnn_layers" / "convolution.ipynb").read_bytes()
    assert cli_main(["--root", str(root), "release"]) == 1
    err = capsys.readouterr().err
    assert "graded cell 'conv_forward_basic' gives 5 point(s), but its check is registered for 2" in err
    assert "graded cell 'conv_forward_extra' has no registered check" in err
    assert "the check 'zero_pad' is registered, but the notebook has no graded cell" in err
    assert "solutions/cnn_layers/convolution.ipynb, cell" in err
    assert (root / "exercises" / "cnn_layers" / "convolution.ipynb").read_bytes() == before
    assert cli_main(["--root", str(root), "validate"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL ") == 3 and "conv_forward_extra" in out
    sub = tmp_path / "submitted" / "amy" / "cnn_layers"
    sub.mkdir(parents=True)
    assert cli_main(["--root", str(root), "grade", str(tmp_path / "submitted"), "--out", str(tmp_path / "o")]) == 2
    assert "conv_forward_basic" in capsys.readouterr().err


@pytest.mark.slow
def test_an_assignment_is_graded_when_its_checks_are_registered(tmp_path):
    """A course adds an assignment without editing the grader: notebooks plus registered checks."""
    import numpy as np
    from autograder import grading
    root = tmp_path / "course"
    src = nbformat.v4.new_notebook()
    sol = nbformat.v4.new_code_cell("def relu(x):\n    ### BEGIN SOLUTION\n    return np.maximum(x, 0)\n"
                                    "    ### END SOLUTION\n")
    sol.metadata["nbgrader"] = {"grade": False, "grade_id": "relu_solution", "locked": False,
                                "schema_version": 3, "solution": True, "task": False}
    test = nbformat.v4.new_code_cell("assert relu(np.array([-1.0]))[0] == 0")
    test.metadata["nbgrader"] = {"grade": True, "grade_id": "relu_values", "locked": True, "points": 3,
                                 "schema_version": 3, "solution": False, "task": False}
    src.cells = [nbformat.v4.new_code_cell("import numpy as np"), sol, test]
    (root / "solutions" / "warmup").mkdir(parents=True)
    nbformat.write(src, root / "solutions" / "warmup" / "relu.ipynb")

    def check(call, rng, budgets=None, probe=None):
        x = rng.standard_normal((3, 4))
        res = call("relu", (x,), {}, 5.0)
        ok = res.status == "ok" and np.allclose(np.asarray(res.value, dtype=float), np.maximum(x, 0))
        return checks.make_verdict("relu_values", "passed" if ok else "failed",
                                   [] if ok else ["relu(x) differs from max(x, 0)"])

    checks.register("warmup", "relu", "relu_values", "relu", 3, check, "relu on a random matrix")
    try:
        sub = tmp_path / "submitted"
        (sub / "amy" / "warmup").mkdir(parents=True)
        nbformat.write(src, sub / "amy" / "warmup" / "relu.ipynb")
        wrong = nbformat.from_dict(json.loads(json.dumps(src)))
        wrong.cells[1].source = "def relu(x):\n    return x\n"
        (sub / "bo" / "warmup").mkdir(parents=True)
        nbformat.write(wrong, sub / "bo" / "warmup" / "relu.ipynb")
        summary = grading.grade_class(str(sub), str(tmp_path / "grading"), str(root), jobs=1, seed=5,
                                      progress=False, assignment="warmup")
        assert summary["export_check"]["ok"] and summary["grader_errors"] == []
        totals = {r["student_id"]: (float(r["score"]), float(r["max_score"]))
                  for r in _csv(tmp_path / "grading" / "totals.csv")}
        assert totals == {"amy": (3.0, 3.0), "bo": (0.0, 3.0)}
    finally:
        for table in (checks.GRADED_CELLS, checks.CHECKS):
            table.pop("relu_values", None)
        checks.ASSIGNMENTS.pop("warmup", None)
        checks.MODULES.pop("warmup", None)


# --------------------------------------------------------------------------- one small class, a whole term

def _grade(course, *extra):
    cmd = [sys.executable, "-m", "autograder", "grade", str(course / "submitted"), "--out",
           str(course / "grading"), "--jobs", "2", "--no-progress", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def _nbgrader(course, *args):
    """A plain nbgrader command run from the course folder, as an instructor would."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          timeout=600, env=env)


def _config(course, extra=""):
    """The course's nbgrader_config.py: the course's settings, plus what a test adds."""
    (course / "nbgrader_config.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
        "from autograder.nbgrader_config import make_config\n"
        "c = get_config()\n"
        "c.merge(make_config(os.path.dirname(os.path.abspath(__file__))))\n" + extra)


def _totals(course):
    return {r["student_id"]: r for r in _csv(course / "grading" / "totals.csv")}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Two learners from a Canvas download; each hands in only pooling.ipynb (amy: right, bo: the stubs)."""
    course = tmp_path_factory.mktemp("term") / "course"
    course.mkdir()
    shutil.copytree(REPO / "solutions", course / "solutions")   # formgrader and generate_feedback read the source
    _config(course)
    z = L.canvas(course / "canvas.zip", [("ngamy", "1001", "9001", "pooling.ipynb", SOLUTION["pooling"], False),
                                         ("leebo", "1002", "9002", "pooling.ipynb", RELEASE["pooling"], True)])
    assert cli_main(["collect", str(z), "--to", str(course / "submitted")]) == 0
    proc = _grade(course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graded 4 notebook(s) (4 new)" in proc.stdout
    return course


@pytest.mark.slow
def test_first_run_writes_nbgraders_files_in_the_course_folder(course):
    totals = _totals(course)
    assert float(totals["ngamy"]["score"]) == POOLING_MAX and float(totals["leebo"]["score"]) == 0.0
    assert totals["leebo"]["lms_user_id"] == "1002" and totals["leebo"]["lms_late"] == "yes"
    for student in ("ngamy", "leebo"):
        for nb in cnn_layers.NOTEBOOKS:
            assert (course / "autograded" / student / "cnn_layers" / f"{nb}.ipynb").is_file()
    auto = nbformat.read(course / "autograded" / "ngamy" / "cnn_layers" / "pooling.ipynb", as_version=4)
    tests = [c for c in auto.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(tests) == 11 and all("Hidden checks: passed" in c.outputs[0]["text"] for c in tests)
    # plain nbgrader, run from the course folder, sees the same gradebook
    assert not (course / "grading" / "gradebook.db").exists()
    proc = _nbgrader(course, "db", "student", "list")
    assert proc.returncode == 0 and "ngamy" in proc.stdout + proc.stderr and "leebo" in proc.stdout + proc.stderr
    # the grades file Canvas imports, keyed by the Canvas user id
    rows = list(csv.reader(open(course / "grading" / "canvas_grades.csv", encoding="utf-8")))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "cnn_layers"]
    assert rows[1][0] == "Points Possible" and float(rows[1][5]) == TOTAL_MAX
    assert sorted((r[1], float(r[5])) for r in rows[2:]) == [("1001", POOLING_MAX), ("1002", 0.0)]
    page = (course / "grading" / "feedback" / "leebo" / "cnn_layers.html").read_text()
    assert "pooling.ipynb" in page and "convolution.ipynb" in page and "Total: <strong>0 / 47</strong>" in page
    assert "marked late" in page


@pytest.mark.slow
def test_a_resubmission_is_regraded_and_the_others_are_reused(course):
    keep = course / "grading" / "results" / "ngamy" / "cnn_layers" / "pooling.json"
    before = keep.stat().st_mtime_ns
    z = L.canvas(course / "canvas2.zip", [("leebo", "1002", "9010", "pooling-1.ipynb", SOLUTION["pooling"], True)])
    assert cli_main(["collect", str(z), "--to", str(course / "submitted")]) == 0
    proc = _grade(course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graded 1 notebook(s) (1 changed)" in proc.stdout and "reused 3 stored" in proc.stdout
    assert float(_totals(course)["leebo"]["score"]) == POOLING_MAX
    assert keep.stat().st_mtime_ns == before
    stored = json.loads((course / "grading" / "results" / "leebo" / "cnn_layers" / "pooling.json").read_text())
    import hashlib
    assert stored["submission_sha256"] == hashlib.sha256(SOLUTION["pooling"]).hexdigest()


@pytest.mark.slow
def test_one_student_is_regraded_on_request(course):
    proc = _grade(course, "--student", "ngamy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graded 2 notebook(s) (2 requested)" in proc.stdout and "reused 2 stored" in proc.stdout
    proc = _grade(course, "--student", "nobody")
    assert proc.returncode == 2 and "--student nobody" in proc.stderr and "ngamy" in proc.stderr


@pytest.mark.slow
def test_a_manual_score_survives_regrades_and_counts_everywhere(course):
    from nbgrader.api import Gradebook
    url = "sqlite:///" + str(course / "gradebook.db")
    with Gradebook(url, course_id="cnn_backprop") as gb:
        grade = gb.find_grade("maxpool_forward_basic", "pooling", "cnn_layers", "ngamy")
        grade.manual_score = 0.5
        comment = gb.find_comment("maxpool_forward_solution", "pooling", "cnn_layers", "ngamy")
        comment.manual_comment = "Nice vectorisation, but explain the stride."
        gb.db.commit()
    proc = _grade(course, "--regrade")
    assert proc.returncode == 0, proc.stderr[-3000:]  # the export check counts the manual score
    assert "1 manual score(s)" in proc.stdout
    assert float(_totals(course)["ngamy"]["score"]) == POOLING_MAX - 1.5
    rows = {(r["student_id"], r["grade_id"]): r for r in _csv(course / "grading" / "grades.csv")}
    row = rows[("ngamy", "maxpool_forward_basic")]
    assert float(row["score"]) == 0.5 and float(row["auto_score"]) == 2.0 and float(row["manual_score"]) == 0.5
    page = (course / "grading" / "feedback" / "ngamy" / "cnn_layers.html").read_text()
    assert "Score set by your instructor: 0.5" in page and "explain the stride" in page
    with Gradebook(url, course_id="cnn_backprop") as gb:
        assert gb.find_grade("maxpool_forward_basic", "pooling", "cnn_layers", "ngamy").manual_score == 0.5
    dest = course / "export.csv"
    assert cli_main(["export", "--course", str(course), "--to", str(dest)]) == 0
    exported = {r["student_id"]: float(r["score"]) for r in _csv(dest)}
    assert exported["ngamy"] == POOLING_MAX - 1.5


@pytest.mark.slow
def test_nbgrader_generate_feedback_works_on_the_autograded_notebooks(course):
    proc = _nbgrader(course, "generate_feedback", "cnn_layers", "--force")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    page = course / "feedback" / "ngamy" / "cnn_layers" / "pooling.html"
    assert page.is_file()
    text = page.read_text()
    assert "explain the stride" in text and "Hidden checks: passed" in text
    # the learner's notebook with our verdicts; never the hidden checks themselves
    assert "_maxpool_backward_case" not in text and "POOL_CASES" not in text


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [
    ("none", 'c.LateSubmissionPlugin.penalty_method = "none"\n'),
    ("zero", 'c.LateSubmissionPlugin.penalty_method = "zero"\n'),
    ("per-hour", 'c.AssignLatePenalties.plugin_class = "latepolicy.PerHour"\n'),
])
def test_late_work_under_each_penalty_method(course, method, extra):
    (course / "latepolicy.py").write_text(
        "from nbgrader.plugins import LateSubmissionPlugin\n\n\n"
        "class PerHour(LateSubmissionPlugin):\n"
        "    \"\"\"A quarter point per started hour late.\"\"\"\n\n"
        "    def late_submission_penalty(self, student_id, score, total_seconds_late):\n"
        "        import math\n"
        "        return 0.25 * math.ceil(total_seconds_late / 3600)\n")
    _config(course, 'c.CourseGrading.duedates = {"cnn_layers": "2026-03-06 12:00:00 UTC"}\n' + extra)
    # ngamy handed in 34 hours late, leebo on time
    (course / "submitted" / "ngamy" / "cnn_layers" / "timestamp.txt").write_text("2026-03-07 22:00:00 UTC\n")
    (course / "submitted" / "leebo" / "cnn_layers" / "timestamp.txt").write_text("2026-03-06 11:00:00 UTC\n")
    proc = _grade(course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graded 0 notebook(s)" in proc.stdout and "late: ngamy" in proc.stdout
    totals = _totals(course)
    raw = float(totals["ngamy"]["raw_score"])
    assert raw >= POOLING_MAX - 1.5
    penalty = {"none": 0.0, "zero": raw, "per-hour": 0.25 * 34}[method]
    assert float(totals["ngamy"]["seconds_late"]) == 34 * 3600
    assert float(totals["ngamy"]["late_penalty"]) == penalty
    assert float(totals["ngamy"]["score"]) == raw - penalty
    assert float(totals["leebo"]["late_penalty"]) == 0.0 and float(totals["leebo"]["seconds_late"]) == 0.0
    page = (course / "grading" / "feedback" / "ngamy" / "cnn_layers.html").read_text()
    assert "34.0 hour(s) after the due date" in page
    assert (f"Late penalty: {penalty:g}" in page) == bool(penalty)
    exported = _nbgrader(course, "export", "--to", str(course / f"export-{method}.csv"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    row = {r["student_id"]: r for r in _csv(course / f"export-{method}.csv")}["ngamy"]
    assert float(row["late_submission_penalty"]) == penalty and float(row["score"]) == raw - penalty


@pytest.mark.slow
def test_nbgrader_autograde_is_refused_and_our_scores_stay(course):
    """The course's own nbgrader_config.py stops nbgrader autograde before it stores a score."""
    from nbgrader.api import Gradebook
    shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    url = "sqlite:///" + str(course / "gradebook.db")

    def auto_scores():
        with Gradebook(url, course_id="cnn_backprop") as gb:
            return {(s.student.id, g.name): g.auto_score for s in gb.assignment_submissions("cnn_layers")
                    for nb in s.notebooks for g in nb.grades}
    before = auto_scores()
    proc = _nbgrader(course, "autograde", "cnn_layers", "--force")
    assert proc.returncode != 0
    assert "python -m autograder grade" in proc.stdout + proc.stderr
    assert auto_scores() == before
    # grade puts back the autograded/ notebooks nbgrader removed
    proc = _grade(course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graded 0 notebook(s)" in proc.stdout
    assert (course / "autograded" / "ngamy" / "cnn_layers" / "pooling.ipynb").is_file()
    assert auto_scores() == before


def test_moodle_grade_file_is_keyed_by_participant():
    from autograder.assignment import load
    from autograder.gradebook import CellGrade, StudentGrades
    spec = load(str(REPO), "cnn_layers")
    g = StudentGrades("amy-ng", cells={"pooling": {"maxpool_forward_basic": CellGrade("maxpool_forward_basic", 2, None,
                                                                                      2.0, 2.0)}},
                      penalties={"pooling": 0.5})
    rows = lms.moodle_rows(spec, {"amy-ng": g}, {"amy-ng": {"lms": "moodle", "lms_user_id": "5001",
                                                           "name": "Amy Ng"}})
    assert rows[0] == ["Identifier", "Full name", "Grade", "Maximum grade", "Feedback comments"]
    assert rows[1][:4] == ["Participant 5001", "Amy Ng", "1.5", "47"] and "late penalty of 0.5" in rows[1][4]
