"""Hostile and broken submissions, graded in the same run as the honest class.

Each case of tests/classgen/hostile.py attacks the grader from learner code:
monkeypatching NumPy and the notebook's helpers, lying return values, reading
the reference/checks/solutions, writing the outputs, exits and
BaseExceptions, endless loops, memory bombs, forks, printed success, edited
and deleted test cells, forbidden imports, a numerical backward pass, corrupt
notebooks and duplicated cell ids.  Each must score 0 on the functions it
attacks with and full marks on the ones it leaves honest, while the ~50
honest students of the same run keep their exact scores and the outputs stay
intact.
"""
import json
import sqlite3

import pytest

from conftest import REPO, grades_by_key, read_csv, tampered_files, tree_digest
from classgen import build as B
from classgen import hostile as H

pytestmark = pytest.mark.slow

STATUSES = {"passed", "failed", "error", "timeout", "out-of-memory", "killed", "ungradable"}


@pytest.fixture(scope="module")
def graded(graded_class):
    gc = graded_class
    assert gc.proc.returncode == 0, f"grading failed:\n{gc.proc.stdout[-3000:]}\n{gc.proc.stderr[-3000:]}"
    return gc


def _hostile(graded):
    return {sid: m for sid, m in graded.manifest.items() if m["kind"] == "hostile"}


def test_the_mix(graded):
    hostile = _hostile(graded)
    honest = [s for s in graded.manifest if s not in hostile]
    assert len(hostile) >= 20 and len(honest) >= 40
    assert {sid.split("_", 1)[1] for sid in hostile} == set(H.CASES)


@pytest.mark.parametrize("case", list(H.CASES))
def test_hostile_case(graded, case):
    """Zero on every cell of each attacked function, full marks elsewhere."""
    rows = grades_by_key(graded.out)
    [sid] = [s for s in graded.manifest if s.split("_", 1)[1] == case and s.startswith("h")]
    m = graded.manifest[sid]
    off = []
    for nb in B.NOTEBOOKS:
        for gid, pts in B.POINTS[nb].items():
            row = rows[(sid, nb, gid)]
            exp = m["expected"][nb][gid]
            exp_status = m["expected_status"][nb][gid]
            if isinstance(exp_status, str):
                exp_status = [exp_status]
            if float(row["score"]) != exp or (exp_status and row["status"] not in exp_status):
                off.append(f"{gid}: {row['score']} {row['status']} ({row['reason'][:200]}); "
                           f"expected {exp}" + (f" {list(exp_status)}" if exp_status else ""))
    assert not off, f"{sid} ({m['note']}):\n" + "\n".join(off)


def test_honest_students_unaffected(graded):
    rows = grades_by_key(graded.out)
    hostile = _hostile(graded)
    for sid, m in graded.manifest.items():
        if sid in hostile:
            continue
        got = sum(float(r["score"]) for (s, _, _), r in rows.items() if s == sid)
        assert got == m["total"], sid


def test_every_submission_has_a_status_and_reason(graded):
    rows = grades_by_key(graded.out)
    n = sum(len(p) for p in B.POINTS.values())
    for sid in graded.manifest:
        mine = [r for (s, _, _), r in rows.items() if s == sid]
        assert len(mine) == n, sid
        for r in mine:
            assert r["status"] in STATUSES, r
            assert r["status"] == "passed" or r["reason"].strip(), r


def test_outputs_intact(graded):
    out = graded.out
    assert tampered_files(out) == []
    # grades.csv: one row per cell, no stranger, nothing else appended
    rows = read_csv(out / "grades.csv")
    assert {r["student_id"] for r in rows} == set(graded.manifest)
    assert len(rows) == len(graded.manifest) * sum(len(p) for p in B.POINTS.values())
    totals = read_csv(out / "totals.csv")
    assert sorted(r["student_id"] for r in totals) == sorted(graded.manifest)
    # every stored result is the grader's (format, cells) and matches the CSV
    for sid in graded.manifest:
        for nb in B.NOTEBOOKS:
            r = json.loads((out / "results" / sid / B.ASSIGNMENT / f"{nb}.json").read_text())
            assert r["format"] == 1 and r["student_id"] == sid and len(r["cells"]) == len(B.POINTS[nb])
    # the gradebook is a sound database holding exactly the class
    con = sqlite3.connect(graded.submitted.parent / "gradebook.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        students = {r[0] for r in con.execute("SELECT id FROM student")}
    finally:
        con.close()
    assert students == set(graded.manifest)
    run = json.loads((out / "run.json").read_text())
    assert run["students"] == len(graded.manifest)
    assert run["grader_errors"] == []
    assert run["export_check"] is None or run["export_check"]["ok"]


def test_submissions_and_course_files_untouched(graded):
    assert tree_digest(graded.submitted) == graded.submitted_before
    assert tampered_files(graded.root, REPO) == []


def test_sandbox_is_bubblewrap(graded):
    """The reading/writing cases prove isolation only under bubblewrap."""
    run = json.loads((graded.out / "run.json").read_text())
    if run["isolation"] != "bubblewrap":
        pytest.skip(f"isolation is {run['isolation']}: file-system cases prove less")
