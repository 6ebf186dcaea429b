"""A hostile class: submissions that attack their classmates and the run itself.

Each attack is graded beside honest classmates with ``--jobs 2``, through the
command line, as an instructor runs it.  The honest classmates must get
exactly the scores they get alone; the attacker gets the statuses and reasons
stated here; the run finishes with run.json, the full gradebook, bounded grader
memory and no notebook holding a worker past its deadline.

* CPU starvation (60 busy processes in sessions of their own), graded three
  times in a row beside honest loop code;
* bad files in a submission: a timestamp that is not a date, a link to a
  secret, a FIFO; a notebook linked to the instructor's solution; a student
  folder that is a link to another's; student ids that a spreadsheet would
  run, or that hold a newline or start with a dot;
* forged replies and setup messages, a 7.7 MB cell, 20,000 cells, cells that
  stall, a cell that fills its job folder, numerical gradients that dodge
  the probe or colour the inputs;
* a grader killed with ``kill -9``: the next run removes what it left behind.
"""
import json
import os
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time

import psutil
import pytest

from autograder.proctree import cgroup_mode
from conftest import grade_command, grades_by_key, read_csv, run_grade
from classgen import build as B
from classgen import hostile as H

pytestmark = pytest.mark.slow

NOTEBOOK_TIMEOUT = 90.0


def _totals(out):
    return {r["student_id"]: float(r["score"]) for r in read_csv(out / "totals.csv")}


def _run_json(out):
    return json.loads((out / "run.json").read_text())


def _gradebook_students(out):
    """Student ids in nbgrader's gradebook, kept in the course folder (the one holding SUBMITTED)."""
    con = sqlite3.connect(out.parent / "gradebook.db")
    try:
        return {r[0] for r in con.execute("SELECT id FROM student")}
    finally:
        con.close()


def _neighbours():
    """Honest classmates: the slowest vector style, vectorised, im2col, and a known mistake."""
    return [B.all_correct("n1_loops", "loops"), B.all_correct("n2_vectorized", "vectorized"),
            B.all_correct("n3_im2col", "im2col"), B.with_mistake("n4_mistake", "pool_ties_to_all")]


def _check_neighbours(out, manifest):
    totals = _totals(out)
    wrong = {sid: (totals.get(sid), m["total"]) for sid, m in manifest.items()
             if m["kind"] != "hostile" and totals.get(sid) != m["total"]}
    assert not wrong, f"honest classmates lost points: {wrong}"


def _check_attackers(out, manifest):
    rows = grades_by_key(out)
    off = []
    for sid, m in manifest.items():
        if m["kind"] != "hostile":
            continue
        for nb in B.NOTEBOOKS:
            for gid in B.POINTS[nb]:
                row = rows[(sid, nb, gid)]
                exp, exp_status = m["expected"][nb][gid], m["expected_status"][nb][gid]
                if isinstance(exp_status, str):
                    exp_status = [exp_status]
                if float(row["score"]) != exp or (exp_status and row["status"] not in exp_status):
                    off.append(f"{sid} {gid}: {row['score']} {row['status']} ({row['reason'][:160]}); "
                               f"expected {exp} {exp_status or ''}")
    assert not off, "\n".join(off)


def _check_complete(out, students, proc, code=0):
    assert proc.returncode == code, proc.stderr[-3000:]
    run = _run_json(out)
    assert run["grader_errors"] == []
    assert run["students"] == len(students)
    assert _gradebook_students(out) == set(students)
    assert {r["student_id"] for r in read_csv(out / "totals.csv")} == {H_csv(s) for s in students}
    return run


def H_csv(student):
    """A student id as grades.csv writes it (formula-like ids get a leading ')."""
    return "'" + student if student.startswith(("=", "+", "-", "@")) else student


def test_cpu_starvation_never_changes_a_classmates_score(tmp_path):
    """60 busy processes in sessions of their own, in a convolution and a pooling
    cell, beside honest classmates; three runs, the same scores every time."""
    if cgroup_mode() == "none":
        pytest.skip("the grader cannot create control groups here: CPU fairness is not provided "
                    "(README, Limits), so this attack can cost classmates points")
    students = [H.cpu_starvation("h_starve")] + _neighbours()
    manifest = B.write_class(students, tmp_path / "submitted")
    seen = []
    for run in range(3):
        out = tmp_path / f"out{run}"
        proc = run_grade(tmp_path / "submitted", out)
        _check_complete(out, manifest, proc)
        _check_neighbours(out, manifest)
        _check_attackers(out, manifest)
        seen.append(_totals(out))
    assert all(t == seen[0] for t in seen), seen
    print("honest-neighbour totals over 3 runs:", seen)


def test_bad_files_and_odd_ids_are_notes_not_crashes(tmp_path):
    """Timestamps that are not dates, links or FIFOs; linked notebooks and folders;
    formula-like and unusable student ids."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$TOPSECRETHASH:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    students = _neighbours()
    manifest = B.write_class(students, tmp_path / "submitted")
    attacks = H.make_filesystem_attacks(tmp_path / "submitted", "n2_vectorized", secret=str(secret))
    out = tmp_path / "out"
    proc = subprocess.run(grade_command(tmp_path / "submitted", out), cwd=B.REPO, capture_output=True,
                          text=True, timeout=1800)
    graded = list(manifest) + list(attacks)
    run = _check_complete(out, graded, proc, code=1)   # 1: two folders were refused
    # the refused folders are named, the others graded
    assert len(run["refused_students"]) == 2
    assert any("control characters" in r and "U+000A" in r for r in run["refused_students"])
    assert any("'.hidden'" in r for r in run["refused_students"])
    assert "not graded" in proc.stderr
    _check_neighbours(out, manifest)
    totals = _totals(out)
    for sid, want in attacks.items():
        assert totals[H_csv(sid)] == want["total"], (sid, totals[H_csv(sid)])
        for nb in want["ungradable"]:
            r = json.loads((out / "results" / sid / B.ASSIGNMENT / f"{nb}.json").read_text())
            assert r["status"] == "ungradable" and "symbolic link" in r["reason"], r["reason"]
    # timestamps: no timestamp, a note, the secret nowhere
    for sid, why in (("m_badstamp", "does not hold a date"), ("m_linkstamp", "symbolic link"),
                     ("m_fifostamp", "FIFO")):
        r = json.loads((out / "results" / sid / B.ASSIGNMENT / "convolution.json").read_text())
        assert r["timestamp"] is None
        assert any("timestamp.txt" in n and why in n for n in r["notes"]), r["notes"]
    for path in out.rglob("*"):
        if path.is_file():
            assert b"TOPSECRET" not in path.read_bytes(), path
    assert "TOPSECRET" not in proc.stdout + proc.stderr
    # formula-like ids: neutralised in the CSV files, exact in the gradebook
    grades_ids = {r["student_id"] for r in read_csv(out / "grades.csv")}
    for sid in H.FORMULA_IDS:
        assert "'" + sid in grades_ids and sid not in grades_ids
    assert set(H.FORMULA_IDS) <= _gradebook_students(out)
    # a second run reuses everything and ends the same way (nothing was a transient crash)
    again = run_grade(tmp_path / "submitted", out)
    assert again.returncode == 1 and _totals(out) == totals


def test_attacks_on_the_run_are_bounded(tmp_path):
    """Forged replies, a forged setup, a huge cell, 20,000 cells, stalls, a full job
    folder and numerical gradients, graded beside honest classmates."""
    students = [make(f"h_{name}") for name, make in H.RUN_CASES.items()] + _neighbours()
    manifest = B.write_class(students, tmp_path / "submitted")
    out = tmp_path / "out"
    start = time.monotonic()
    proc = run_grade(tmp_path / "submitted", out, "--notebook-timeout", str(NOTEBOOK_TIMEOUT))
    wall = time.monotonic() - start
    run = _check_complete(out, manifest, proc)
    _check_neighbours(out, manifest)
    _check_attackers(out, manifest)
    # the grader's own memory: the 16 MiB array named 60 times is read at most once
    assert run["grader_peak_rss_mib"] < 700, run["grader_peak_rss_mib"]
    # no notebook holds a worker much past its deadline (the stalls would take 636 s)
    longest, who, nb = run["longest_notebook_s"]
    assert longest <= NOTEBOOK_TIMEOUT + 20, (longest, who, nb)
    stalled = json.loads((out / "results" / "h_stalls" / B.ASSIGNMENT / "convolution.json").read_text())
    assert any("total time" in c["reason"] for c in stalled["cells"]), [c["reason"] for c in stalled["cells"]]
    # the working folder is in memory and size-limited: the writes failed there
    filled = json.loads((out / "results" / "h_fills_disk" / B.ASSIGNMENT / "convolution.json").read_text())
    assert any("No space left" in s["message"] for s in filled["setup"]), filled["setup"]
    # the huge cell and the many cells were refused before parsing, with the reason
    huge = json.loads((out / "results" / "h_huge_literal" / B.ASSIGNMENT / "convolution.json").read_text())
    assert "characters" in huge["reason"]
    many = json.loads((out / "results" / "h_many_cells" / B.ASSIGNMENT / "pooling.json").read_text())
    assert "code cells" in many["reason"]
    # numerical gradients: the value cells fail on the tolerance, not on time
    rows = grades_by_key(out)
    for sid in ("h_numerical_dodges_probe", "h_numerical_colouring"):
        reason = rows[(sid, "convolution", "conv_backward_basic")]["reason"]
        assert "relative error" in reason and "limit 1e-12" in reason, reason
    print(f"grader peak memory {run['grader_peak_rss_mib']} MiB; longest notebook {longest} s "
          f"({who}/{nb}); whole run {wall:.0f} s")


def _jobs_base():
    from autograder.sandbox import jobs_base
    return jobs_base(traversable=None)


def test_kill_9_leaves_nothing_behind(tmp_path):
    """A grader killed with kill -9 mid-run: the next run removes its job folders
    (private, 0700) and its process groups, and finishes the class."""
    students = [H.cpu_starvation("h_starve"), B.all_correct("n1", "loops")]
    manifest = B.write_class(students, tmp_path / "submitted")
    out = tmp_path / "out"
    cmd = grade_command(tmp_path / "submitted", out)
    victim = subprocess.Popen(cmd, cwd=B.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = _jobs_base()
    graders, mine = set(), []   # the grading process and its worker processes, which own the folders

    def owned(name):
        return any(name.startswith(f"{pid}-") for pid in graders)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not mine:
        time.sleep(0.2)
        try:
            graders = {victim.pid} | {p.pid for p in psutil.Process(victim.pid).children(recursive=True)}
        except psutil.Error:
            break
        if os.path.isdir(base):
            mine = [n for n in os.listdir(base) if owned(n)]
    assert mine, "the grader never made a job folder"
    st = os.stat(base)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    for name in mine:
        assert stat.S_IMODE(os.stat(os.path.join(base, name)).st_mode) == 0o700
    # kill -9 the grader and its worker processes at once (a worker that outlives the grader
    # by a moment would end on its own and tidy up, which is not what this test is about)
    try:
        graders |= {p.pid for p in psutil.Process(victim.pid).children(recursive=True)
                    if "_child.py" not in " ".join(p.cmdline())}
    except psutil.Error:
        pass
    for pid in sorted(graders, reverse=True):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    victim.wait()
    assert any(owned(n) for n in os.listdir(base))   # left behind by the kill
    proc = run_grade(tmp_path / "submitted", out)
    _check_complete(out, manifest, proc)
    assert not any(owned(n) for n in os.listdir(base))
    for hierarchy in ("cpu", "cpuacct", "pids", "unified"):
        folder = os.path.join("/sys/fs/cgroup", hierarchy)
        if os.path.isdir(folder):
            assert not any(f"autograder-{pid}" in os.listdir(folder) for pid in graders)
