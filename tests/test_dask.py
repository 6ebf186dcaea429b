"""Grading on a real Dask cluster (``--dask ADDRESS``, ``--dask local``).

The test starts ``dask scheduler`` and two ``dask worker`` processes, grades a
class through the scheduler, and kills one worker (SIGKILL, with the sandbox
it was running) while it is grading a notebook: the scheduler reruns that
task on the other worker, the run finishes, and every score equals the one
of a local run of the same class and the expected table, with one row per
student and graded cell.
"""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, grade_command, grades_by_key, run_grade
from classgen import build as B
from pgserver import free_port

pytestmark = pytest.mark.slow

def _class(tmp_path):
    students = [B.all_correct("c1_loops", "loops"), B.all_correct("c2_vectorized", "vectorized"),
                B.all_correct("c3_im2col", "im2col"), B.with_mistake("c4_bias", "bias_missing"),
                B.Student("c5_empty", kind="empty")]
    manifest = B.write_class(students, tmp_path / "submitted")
    return manifest


def _start(argv, log):
    return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _listening(port):
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _grading_now(worker):
    """True while the worker runs a learner process (a sandboxed child) for a task."""
    try:
        kids = psutil.Process(worker.pid).children(recursive=True)
    except psutil.Error:
        return False
    for kid in kids:
        try:
            if any("_child.py" in part for part in kid.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


def _scores(out):
    return {k: (r["score"], r["status"]) for k, r in grades_by_key(out).items()}


@pytest.fixture
def scheduler(tmp_path):
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []
    log = open(logs / "scheduler.log", "w")
    procs.append(_start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                         "--port", str(port), "--no-dashboard"], log))
    address = f"tcp://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _listening(port), 120, "the scheduler to listen")
        yield address, logs, procs
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()


def _worker(address, logs, name):
    log = open(logs / f"{name}.log", "w")
    # no nanny: the worker process itself is the one killed, as when its machine goes away
    return _start([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                   "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name], log)


def test_dask_run_survives_a_killed_worker_and_equals_a_local_run(tmp_path, scheduler):
    address, logs, procs = scheduler
    manifest = _class(tmp_path)
    n_notebooks = len(manifest) * len(B.NOTEBOOKS)
    workers = [_worker(address, logs, "w1"), _worker(address, logs, "w2")]
    procs.extend(workers)

    out = tmp_path / "dask-out"
    cmd = grade_command(tmp_path / "submitted", out, "--dask", address, "--course", tmp_path / "dask-course")
    grader = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # kill the first worker while it runs a learner's code
        _wait_for(lambda: _grading_now(workers[0]) or grader.poll() is not None, 600, "w1 to start grading")
        assert grader.poll() is None, "the run ended before the worker could be killed: " + grader.stderr.read()
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        stdout, stderr = grader.communicate(timeout=900)
    finally:
        if grader.poll() is None:
            grader.kill()
    assert grader.returncode == 0, stdout[-2000:] + stderr[-3000:]

    run = json.loads((out / "run.json").read_text())
    assert run["dask"] == address
    assert run["graded_this_run"] == n_notebooks and not run["grader_errors"]
    stored = [json.loads(p.read_text()) for p in (out / "results").rglob("*.json")]
    assert len(stored) == n_notebooks
    # graded on the workers; whatever w1 had not finished when it died, w2 graded
    assert {r.get("worker") for r in stored} <= {"w1", "w2"} and "w2" in {r.get("worker") for r in stored}

    local = tmp_path / "local-out"
    proc = run_grade(tmp_path / "submitted", local, "--course", tmp_path / "local-course", jobs=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dask_scores = _scores(out)           # grades_by_key fails on a row written twice
    assert dask_scores == _scores(local)
    for (student, nb, gid), (score, _status) in dask_scores.items():
        assert float(score) == manifest[student]["expected"][nb][gid], (student, gid)

    # the same command again reuses every stored verdict: nothing is graded or counted twice
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["graded_this_run"] == 0
    assert _scores(out) == dask_scores


def test_dask_local_cluster(tmp_path):
    student = B.all_correct("solo", "vectorized")
    student.notebooks = {"pooling": B.MISSING}
    manifest = B.write_class([student], tmp_path / "submitted")
    proc = run_grade(tmp_path / "submitted", tmp_path / "out", "--dask", "local", jobs=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = _scores(tmp_path / "out")
    for (s, nb, gid), (score, _status) in scores.items():
        assert float(score) == manifest[s]["expected"][nb][gid]


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    """A port where nothing listens is reported at once (not after the client's 30 s of retries),
    and so is a host that does not resolve; nothing is graded."""
    B.write_class([B.Student("x", kind="empty")], tmp_path / "submitted")
    for address in (f"tcp://127.0.0.1:{free_port()}", "tcp://no-such-host.invalid:8786", "tcp://127.0.0.1"):
        started = time.monotonic()
        proc = run_grade(tmp_path / "submitted", tmp_path / "out", "--dask", address)
        assert proc.returncode == 2, address
        assert f"cannot reach the Dask scheduler at {address}" in proc.stderr
        assert time.monotonic() - started < 25, f"{address}: the error took the client's whole timeout"
        assert not (tmp_path / "out" / "results").exists()
