"""``kill -9`` of ``python -m autograder grade``: every process of the run ends with it.

The run's processes are the grading process's fork server, its resource tracker, the
grading workers, their sandboxes (bubblewrap) and the learner processes in them, busy
children in sessions of their own included.  None may go on running learner code once the
process that ran ``grade`` is gone.
"""
import os
import signal
import subprocess
import time

import psutil
import pytest

from autograder.sandbox import isolation_mode, remove_stale_jobs
from conftest import grade_command
from classgen import build as B
from classgen import hostile as H
from classgen import variants as V

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(isolation_mode() != "bubblewrap",
                       reason="without bubblewrap the learner's processes outlive a killed grader "
                              "until the next run (README, Limits)"),
]

#: a cell that never ends, after forking two busy children in sessions of their own
LOOP = H.GRAB_OS + '''

_os = _grab_os()
for _ in range(2):
    if _os.fork() == 0:
        _os.setsid()
        while True:
            pass
while True:
    pass
'''


def looping(sid):
    """zero_pad's and maxpool_forward's cells loop for ever (and fork busy children)."""
    s = B.all_correct(sid, "vectorized", kind="hostile")
    s.sources = {"zero_pad": V.correct_style("zero_pad", "vectorized") + "\n" + LOOP,
                 "maxpool_forward": V.correct_style("maxpool_forward", "vectorized") + "\n" + LOOP}
    return s


def _cmdline(proc):
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _alive(proc):
    """Running, and the same process (not a reused pid); a zombie is dead."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cgroup_members(pids):
    """psutil processes in the learner cgroups of the grading processes pids (any hierarchy)."""
    found = set()
    for hierarchy in ("pids", "cpu", "memory", "unified"):
        top = os.path.join("/sys/fs/cgroup", hierarchy)
        for base, dirs, files in os.walk(top):
            if "cgroup.procs" in files and any(f"/autograder-{pid}/" in base + "/" for pid in pids):
                try:
                    with open(os.path.join(base, "cgroup.procs")) as fh:
                        found |= {int(p) for p in fh.read().split()}
                except OSError:
                    pass
            if base.count("/") > 12:
                dirs[:] = []
    procs = []
    for pid in found:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return procs


@pytest.mark.parametrize("where", ["workers", "one-process", "dask-local"])
def test_kill_9_of_grade_ends_every_process_of_the_run(tmp_path, where):
    """Graded by the run's own workers (a fork server), by the grading process itself (--jobs 1),
    or by a local Dask cluster."""
    students = [looping("h_loop1"), looping("h_loop2"), B.all_correct("n1", "loops")]
    B.write_class(students, tmp_path / "submitted")
    extra = ("--dask", "local") if where == "dask-local" else ()
    command = grade_command(tmp_path / "submitted", tmp_path / "out", *extra, jobs=1 if where == "one-process" else 2)
    victim = subprocess.Popen(command, cwd=B.REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tracked = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                for p in psutil.Process(victim.pid).children(recursive=True):
                    tracked.setdefault(p.pid, p)
            except psutil.Error:
                break
            busy = [p for p in tracked.values() if _alive(p) and "_child.py" in _cmdline(p)]
            if len(busy) >= (4 if where == "one-process" else 8):   # per sandbox: template, learner
                # process and its two busy children
                break
        assert victim.poll() is None, "the run ended before its learners' cells looped"
        for p in _cgroup_members(set(tracked) | {victim.pid}):
            tracked.setdefault(p.pid, p)
        kinds = {"sandbox": "bwrap", "learner process": "_child.py"}
        if where == "workers":
            kinds.update({"fork server": "forkserver", "resource tracker": "resource_tracker"})
        for what, marker in kinds.items():
            assert any(marker in _cmdline(p) for p in tracked.values()), f"no {what} seen: the test is not testing"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 5.0:
            left = [p for p in tracked.values() if _alive(p)]
            if not left:
                break
            time.sleep(0.1)
        left = [(p.pid, _cmdline(p)[:90]) for p in tracked.values() if _alive(p)]
        assert not left, f"{len(left)} process(es) of the run outlived it by 5 s: {left}"
        print(f"{len(tracked)} processes of the run, all ended {time.monotonic() - killed_at:.2f} s "
              "after kill -9 of grade")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        for p in tracked.values():   # what a failing run left: only processes this test saw started
            try:
                if _alive(p):
                    p.kill()
            except psutil.Error:
                pass
        remove_stale_jobs()   # the killed grader's job folders and control groups
