"""A grading run killed with SIGKILL midway, then started again.

Nothing may be lost or counted twice: after the second run, grades.csv and
the gradebook hold exactly one row per student and graded cell, and every
score equals the clean full run of the same submissions (the shared
``graded_class`` run) and the expected table.  A third run with --regrade
recomputes everything and reproduces the same scores.
"""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import REPO, grade_command, grades_by_key, read_csv, run_grade
from classgen import build as B

pytestmark = pytest.mark.slow

N_STUDENTS = 18
CELLS = sum(len(p) for p in B.POINTS.values())


def _pick(manifest):
    """Students that grade quickly (no endless loops), of every kind."""
    slow = ("infinite", "memory", "numerical", "fork", "exits", "os_exit")
    chosen = [s for s, m in manifest.items() if not any(w in s for w in slow)]
    kinds = {}
    for s in chosen:
        kinds.setdefault(manifest[s]["kind"], []).append(s)
    picked = []
    while len(picked) < N_STUDENTS and any(kinds.values()):
        for k in sorted(kinds):
            if kinds[k] and len(picked) < N_STUDENTS:
                picked.append(kinds[k].pop(0))
    return sorted(picked)


def _results(out):
    return sorted((out / "results").glob(f"*/{B.ASSIGNMENT}/*.json"))


def _kill_tree(proc):
    """SIGKILL the grading process and, after it, every process it started."""
    import psutil
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    for kid in kids:  # orphaned learner processes of this run only
        try:
            kid.kill()
        except psutil.NoSuchProcess:
            pass


def _gradebook_counts(out):
    con = sqlite3.connect(out.parent / "gradebook.db")  # the course folder: next to submitted/
    try:
        grades = con.execute("SELECT COUNT(*) FROM grade").fetchone()[0]
        subs = con.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone()[0]
        nbs = con.execute("SELECT COUNT(*) FROM submitted_notebook").fetchone()[0]
    finally:
        con.close()
    return grades, subs, nbs


def _scores(out):
    return {k: float(r["score"]) for k, r in grades_by_key(out).items()}


def test_kill_and_resume(graded_class, tmp_path):
    assert graded_class.proc.returncode == 0
    students = _pick(graded_class.manifest)
    assert len(students) == N_STUDENTS
    submitted = tmp_path / "submitted"
    for s in students:
        shutil.copytree(graded_class.submitted / s, submitted / s)
    out = tmp_path / "out"

    # 1. start, wait for a few stored results, kill -9
    proc = subprocess.Popen(grade_command(submitted, out), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while len(_results(out)) < 4:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no result stored within 10 minutes"
            time.sleep(0.2)
    finally:
        _kill_tree(proc)
    partial = {p: p.read_bytes() for p in _results(out)}
    assert 4 <= len(partial) < 2 * N_STUDENTS, "kill came too late to test a resume"
    for data in partial.values():           # stored results are whole, never half written
        json.loads(data)

    # 2. run again to the end: the stored results are reused, the rest graded
    second = run_grade(submitted, out)
    assert second.returncode == 0, second.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    kept = {p: d for p, d in partial.items() if json.loads(d)["status"] != "error"}
    assert run["reused"] == len(kept)
    assert run["graded_this_run"] == 2 * N_STUDENTS - len(kept)
    for p, data in kept.items():            # reused, not recomputed
        assert p.read_bytes() == data, p

    scores = _scores(out)
    assert len(scores) == N_STUDENTS * CELLS
    clean = {k: v for k, v in _scores(graded_class.out).items() if k[0] in students}
    assert scores == clean
    for (s, nb, gid), v in scores.items():
        assert v == graded_class.expected(s, nb, gid), (s, gid)
    assert _gradebook_counts(out) == (N_STUDENTS * CELLS, N_STUDENTS, N_STUDENTS * len(B.NOTEBOOKS))

    # 3. a full regrade reproduces every score, still without duplicates
    third = run_grade(submitted, out, "--regrade")
    assert third.returncode == 0, third.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["graded_this_run"] == 2 * N_STUDENTS and run["reused"] == 0
    assert _scores(out) == clean
    assert _gradebook_counts(out) == (N_STUDENTS * CELLS, N_STUDENTS, N_STUDENTS * len(B.NOTEBOOKS))
    totals = {r["student_id"]: float(r["score"]) for r in read_csv(out / "totals.csv")}
    assert totals == {s: graded_class.manifest[s]["total"] for s in students}
