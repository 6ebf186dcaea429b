"""Memory per learner: all of a learner's processes share one memory limit, swap included,
and when memory runs out the kernel ends learner processes, never the grader.

A learner who forks many processes, each well under its 2 GiB address-space limit, could
hold far more than 2 GiB in all, and under a grader with a memory limit of its own (a Slurm
job, a container) make the kernel end the grader itself.  Here the grader runs inside a
control group of 1 GiB while such a learner is graded beside honest classmates: the grader
survives, the run completes, the classmates keep their exact scores, and the learner's cell
is ``out-of-memory`` with a message that says why.
"""
import json
import os
import secrets
import signal
import subprocess
import textwrap
import time

import pytest

from autograder.policy import ALLOWED_IMPORTS
from autograder.proctree import memory_limited
from autograder.sandbox import Limits, LearnerProcess
from conftest import grade_command, read_csv
from classgen import build as B
from classgen import hostile as H
from classgen import variants as V

pytestmark = pytest.mark.skipif(not memory_limited(),
                                reason="no cgroup memory controller the grader may use here (README, Limits)")

MIB = 1 << 20
WIDE = ALLOWED_IMPORTS | {"os", "time"}

#: _hog(os, n): forks n children that each fill 56 MiB at once and then wait, then waits 4 s itself
#: (learner code: it takes the os module as an argument, where the learner may not import it)
HOG = '''
def _hog(_os, n):
    _time = _os.sys.modules.get("time")
    r, w = _os.pipe()
    go_r, go_w = _os.pipe()
    forked = 0
    for _ in range(n):
        try:
            pid = _os.fork()
        except OSError:
            break
        if pid == 0:
            _os.read(go_r, 1)
            block = bytearray(56 << 20)
            _os.read(r, 1)
            _os._exit(0)
        forked += 1
    _os.write(go_w, b"x" * forked)
    t0 = _os.times()[4]
    while _os.times()[4] - t0 < 4.0:
        if _time is not None:
            _time.sleep(0.2)
    return 1
'''


def test_a_learners_processes_share_one_memory_limit():
    """Eight processes of 56 MiB under a limit of 256 MiB: the cell and the call that fork them are
    out-of-memory, with the limit in the message; the learner process goes on; its OOM score is
    1000, and it cannot lower it when the grader runs as root."""
    cells = ["import os\n" + HOG + textwrap.dedent('''
        def score():
            with open("/proc/self/oom_score_adj") as fh:
                return int(fh.read())

        def lower():
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("0")
            return score()

        def hog():
            return _hog(os, 8)
        '''), "_hog(os, 8)\n"]
    with LearnerProcess(cells, limits=Limits(learner_memory_bytes=256 * MIB), allowed_imports=WIDE) as proc:
        report = proc.setup()
        assert report.cells[0].status == "ok", report.cells[0]
        cell = report.cells[1]
        assert cell.status == "out-of-memory", cell
        assert "memory limit of 256 MiB (swap included)" in cell.message, cell.message
        res = proc.call("hog", budget_s=20.0)
        assert res.status == "out-of-memory" and res.message.startswith("hog ran out of memory (your code"), res
        assert "memory limit of 256 MiB" in res.message, res
        assert proc.call("score").value == 1000
        lowered = proc.call("lower")
        if os.getuid() == 0:
            assert lowered.status == "error" and "Permission" in lowered.message, lowered
        assert proc.call("score").value == 1000
        # the learner process was started afresh after the call, and still answers
        assert proc.call("score").status == "ok"


# ---------------------------------------------------------------------------- under a memory-limited grader

GRADER_MEMORY = 1 << 30


def _own_memory_cgroup():
    """('v1' or 'v2', the folder of this process's memory cgroup)."""
    with open("/proc/self/cgroup") as fh:
        lines = [line.rstrip("\n").split(":", 2) for line in fh]
    for _id, ctls, path in lines:
        if "memory" in ctls.split(","):
            return "v1", os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
    for _id, ctls, path in lines:
        if ctls == "":
            return "v2", os.path.join("/sys/fs/cgroup", path.lstrip("/"))
    return None, None


def _limited_cgroup(limit):
    """A new memory cgroup below this process's, limited to limit bytes, swap included."""
    kind, own = _own_memory_cgroup()
    if kind is None:
        pytest.skip("this process has no memory cgroup")
    folder = os.path.join(own, "grader-under-test-" + secrets.token_hex(4))
    try:
        os.mkdir(folder)
        if kind == "v1":
            with open(os.path.join(folder, "memory.limit_in_bytes"), "w") as fh:
                fh.write(str(limit))
            if os.path.exists(os.path.join(folder, "memory.memsw.limit_in_bytes")):
                with open(os.path.join(folder, "memory.memsw.limit_in_bytes"), "w") as fh:
                    fh.write(str(limit))
        else:
            with open(os.path.join(folder, "memory.max"), "w") as fh:
                fh.write(str(limit))
            if os.path.exists(os.path.join(folder, "memory.swap.max")):
                with open(os.path.join(folder, "memory.swap.max"), "w") as fh:
                    fh.write("0")
    except OSError as exc:
        _remove_cgroup(folder)
        pytest.skip(f"cannot make a memory-limited cgroup for the grader here: {exc}")
    return folder


def _remove_cgroup(folder):
    """Kill what is left in folder and below (only the run under test was in it), then remove it."""
    for _ in range(50):
        if not os.path.isdir(folder):
            return
        for base, dirs, _files in os.walk(folder, topdown=False):
            try:
                with open(os.path.join(base, "cgroup.procs")) as fh:
                    for pid in fh.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            except OSError:
                pass
            try:
                os.rmdir(base)
            except OSError:
                pass
        time.sleep(0.1)


def forks_memory(sid):
    """maxpool_forward's cell forks 40 processes of 56 MiB each (2.2 GiB in all, each far under
    its address-space limit); every function is honest: full marks once the cell is over."""
    s = H._honest(sid, note="forks 40 processes of 56 MiB in a pooling cell")
    s.sources = {"maxpool_forward": "\n".join([V.correct_style("maxpool_forward", "vectorized"), H.GRAB_OS, HOG,
                                                "_hog(_grab_os(), 40)\n"])}
    return s


def _grade_in_cgroup(folder, submitted, out, *extra):
    cmd = ["/bin/sh", "-c", f"echo $$ > '{folder}/cgroup.procs' && exec \"$@\"", "sh",
           *grade_command(submitted, out, *extra)]
    return subprocess.run(cmd, cwd=B.REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("learner_memory", [None, 2048], ids=["default-fitted", "grader-runs-short"])
def test_a_memory_hungry_learner_never_ends_a_memory_limited_grader(tmp_path, learner_memory):
    """The grader in a cgroup of 1 GiB (--jobs 2); a learner forks 40 x 56 MiB.  By default the
    learners' limit is lowered to fit the grader's memory (256 MiB each), and the learner's own limit
    stops them; with --learner-memory 2048 (kept, with a note) the grader's group runs short and the
    kernel ends the learner's processes, never the grader (their OOM score).  Either way: exit 0,
    run.json, exact honest scores, and the learner's cell says out-of-memory and why."""
    students = [forks_memory("h_memory"), B.all_correct("n1_loops", "loops"),
                B.with_mistake("n2_mistake", "pool_ties_to_all")]
    manifest = B.write_class(students, tmp_path / "submitted")
    out = tmp_path / "out"
    folder = _limited_cgroup(GRADER_MEMORY)
    try:
        extra = () if learner_memory is None else ("--learner-memory", str(learner_memory))
        proc = _grade_in_cgroup(folder, tmp_path / "submitted", out, *extra)
    finally:
        _remove_cgroup(folder)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    run = json.loads((out / "run.json").read_text())
    assert run["grader_errors"] == [] and run["learner_memory"] == "cgroup"
    assert run["learner_memory_note"] and run["learner_memory_note"] in proc.stderr
    totals = {r["student_id"]: float(r["score"]) for r in read_csv(out / "totals.csv")}
    assert totals == {sid: m["total"] for sid, m in manifest.items()}, totals
    assert totals["n1_loops"] == B.MAX_TOTAL
    pooling = json.loads((out / "results" / "h_memory" / B.ASSIGNMENT / "pooling.json").read_text())
    memory = [s for s in pooling["setup"] if s["status"] == "out-of-memory"]
    assert memory, pooling["setup"]
    if learner_memory is None:
        assert run["limits"]["learner_memory_bytes"] == 256 * MIB
        assert "memory limit is 256 MiB in this run" in run["learner_memory_note"]
        want = "memory limit of 256 MiB"
    else:
        assert run["limits"]["learner_memory_bytes"] == 2048 * MIB
        assert "lower --learner-memory or --jobs" in run["learner_memory_note"]
        want = "the grader ran short of memory"
    assert want in memory[0]["message"], memory[0]["message"]
    print(f"grader in 1 GiB, learner limit {run['limits']['learner_memory_bytes'] // MIB} MiB: exit "
          f"{proc.returncode}, totals {totals}; the hog's cell: {memory[0]['message']}")
