"""A submission time out of range is one learner's note, never the end of the class's run.

``9999-12-31 23:59:59 -14:00`` parses as a date, and its UTC time is past year 9999:
nbgrader's ``parse_utc`` (the gradebook, the late penalty) overflowed on it, and the run
ended with no run.json, totals, feedback or LMS files.  Every time is now range-checked in
``autograder.times``; the grader reads such a ``timestamp.txt`` as no timestamp, with a note.
"""
import datetime as _dt
import json
import shutil
from pathlib import Path

from autograder import checks

from conftest import read_csv, run_grade
from test_workflow import _config   # the course's nbgrader_config.py, plus what a test adds

REPO = Path(__file__).resolve().parents[1]
POOLING_MAX = float(checks.max_score("pooling"))
TOTAL_MAX = float(sum(checks.max_score(nb) for nb in checks.notebooks_of("cnn_layers")))


def _course(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    shutil.copytree(REPO / "solutions", course / "solutions")
    _config(course, 'c.CourseGrading.duedates = {"cnn_layers": "2026-03-06 12:00:00 UTC"}\n'
                    'c.LateSubmissionPlugin.penalty_method = "zero"\n')
    pooling = (REPO / "solutions" / "cnn_layers" / "pooling.ipynb").read_bytes()
    # each hands in the right pooling notebook: amy on time, bo 34 hours late, mallory "in year 10000"
    for student, stamp in (("amy", "2026-03-06 11:00:00 UTC"), ("bo", "2026-03-07 22:00:00 UTC"),
                           ("mallory", "9999-12-31 23:59:59 -14:00")):
        folder = course / "submitted" / student / "cnn_layers"
        folder.mkdir(parents=True)
        (folder / "pooling.ipynb").write_bytes(pooling)
        (folder / "timestamp.txt").write_text(stamp + "\n")
    return course


def test_a_timestamp_past_year_9999_is_a_note_and_the_class_completes(tmp_path):
    course = _course(tmp_path)
    out = course / "grading"
    proc = run_grade(course / "submitted", out, jobs=1)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["students"] == 3 and run["export_check"]["ok"]
    totals = {r["student_id"]: r for r in read_csv(out / "totals.csv")}
    got = {s: (float(r["score"]), float(r["raw_score"]), float(r["late_penalty"]), float(r["seconds_late"]))
           for s, r in totals.items()}
    assert got == {"amy": (POOLING_MAX, POOLING_MAX, 0.0, 0.0),
                   "bo": (0.0, POOLING_MAX, POOLING_MAX, 34 * 3600.0),
                   "mallory": (POOLING_MAX, POOLING_MAX, 0.0, 0.0)}
    assert totals["mallory"]["timestamp"] == ""
    result = json.loads((out / "results" / "mallory" / "cnn_layers" / "pooling.json").read_text())
    assert result["timestamp"] is None
    (note,) = [n for n in result["notes"] if "timestamp.txt" in n]
    assert "does not hold a date we can use" in note and "9999-12-31 23:59:59 -14:00" in note
    assert "counts as having no timestamp" in note
    for student in ("amy", "bo", "mallory"):
        assert (out / "feedback" / student / "cnn_layers.html").is_file()
    assert "34.0 hour(s) after the due date" in (out / "feedback" / "bo" / "cnn_layers.html").read_text()
    # nbgrader's gradebook holds all three, with the times that could be used
    from nbgrader.api import Gradebook
    with Gradebook("sqlite:///" + str(course / "gradebook.db"), course_id="cnn_backprop") as gb:
        subs = {s.student.id: s for s in gb.assignment_submissions("cnn_layers")}
        assert {s: sub.timestamp for s, sub in subs.items()} == {
            "amy": _dt.datetime(2026, 3, 6, 11), "bo": _dt.datetime(2026, 3, 7, 22), "mallory": None}
        assert {s: (sub.score, sub.late_submission_penalty) for s, sub in subs.items()} == {
            "amy": (POOLING_MAX, 0.0), "bo": (POOLING_MAX, POOLING_MAX), "mallory": (POOLING_MAX, 0.0)}
