"""The grading sandbox against hostile learner code.

Each test plays one trick a learner's notebook could play and asserts that the
trusted parent still gets plain data (or a clear status) and is unharmed.
Several tests widen the import allow-list (``WIDE``) on purpose: the run-time
import guard is only the first line, and these tests check the layers under
it (process limits, namespaces, the uid drop, the protocol).
"""
import errno
import os
import socket
import textwrap
import time
import uuid
import warnings

import numpy as np
import pytest


import autograder.sandbox as sandbox
from autograder.policy import ALLOWED_IMPORTS
from autograder.sandbox import CallResult, Limits, LearnerProcess, Unreadable, isolation_mode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDE = ALLOWED_IMPORTS | {"os", "sys", "time", "socket", "signal"}
FAST = Limits(cell_timeout=5.0, setup_timeout=30.0, cpu_seconds=60,
              memory_bytes=1 << 30, max_processes=32)

needs_bwrap = pytest.mark.skipif(isolation_mode() != "bubblewrap",
                                 reason="filesystem isolation needs bubblewrap")


def cells(*sources):
    return [textwrap.dedent(s) for s in sources]


# --------------------------------------------------------------------------
# honest code and values that lie, in one shared process
# --------------------------------------------------------------------------

HONEST = cells(
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    def conv1d(x, w, stride=1):
        win = sliding_window_view(x, w.shape[0])[::stride]
        return np.einsum("ij,j->i", win, w), (x, w, stride)
    """,
    """
    def scalars():
        return 3, 2.5, np.float64(1.5), np.int64(7), True, None

    class Lying(np.ndarray):
        def __eq__(self, other):
            return True
        def __array__(self, *a, **k):
            return np.zeros(1)
        def copy(self, *a, **k):
            return np.zeros(1)

    def subclass():
        return np.arange(4.0).view(Lying)
    """,
    """
    np.allclose = lambda *a, **k: True
    np.testing.assert_allclose = lambda *a, **k: None
    def patched():
        return np.allclose(1.0, 2.0)
    """,
    """
    class Foo:
        def __eq__(self, other):
            return True
    def objects():
        return [Foo(), Foo()]
    def object_array():
        return np.array([1, "a", None], dtype=object)
    def liar():
        return Foo()
    def in_place(x, cache):
        x *= 2
        cache[0][...] = 0
        return x.sum()
    """,
    """
    print("All tests passed")
    print('{"nonce": "0", "status": "ok", "value": {"i": 42}}')
    def wrong():
        print("All tests passed")
        return np.zeros(3)
    def boom():
        raise ValueError("shapes do not match")
    """,
)


@pytest.fixture(scope="module")
def honest():
    with LearnerProcess(HONEST, limits=FAST) as proc:
        report = proc.setup()
        yield proc, report


def test_honest_round_trip(honest):
    proc, report = honest
    assert [c.status for c in report.cells] == ["ok"] * len(HONEST)
    assert {"conv1d", "scalars", "subclass"} <= set(report.functions)
    assert report.cells[0].defined == ("np", "sliding_window_view", "conv1d")
    x, w = np.random.default_rng(0).normal(size=11), np.array([1.0, -2.0, 0.5])
    res = proc.call("conv1d", (x, w), {"stride": 2}, budget_s=5)
    assert isinstance(res, CallResult) and res.status == "ok", res.message
    out, cache = res.value
    expected = np.array([x[i:i + 3] @ w for i in range(0, 9, 2)])
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    assert type(cache) is tuple and cache[2] == 2 and type(cache[2]) is int
    np.testing.assert_array_equal(cache[0], x)
    assert 0 < res.seconds < 5

    res = proc.call("scalars", (), {}, budget_s=5)
    assert res.status == "ok"
    assert res.value[:2] == (3, 2.5) and type(res.value[0]) is int
    assert res.value[2] == 1.5 and isinstance(res.value[2], np.float64)
    assert res.value[3] == 7 and isinstance(res.value[3], np.int64)
    assert res.value[4] is True and res.value[5] is None


def test_ndarray_subclass_comes_back_plain(honest):
    proc, _ = honest
    res = proc.call("subclass", (), {}, budget_s=5)
    assert res.status == "ok"
    assert type(res.value) is np.ndarray
    np.testing.assert_array_equal(res.value, np.arange(4.0))
    assert not np.array_equal(res.value, np.zeros(4))   # its __eq__ no longer lies


def test_monkeypatching_numpy_stays_in_the_child(honest):
    proc, _ = honest
    res = proc.call("patched", (), {}, budget_s=5)
    assert res.status == "ok" and res.value is True      # patched over there ...
    assert not np.allclose(1.0, 2.0)                      # ... not here
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(1.0, 2.0)


def test_objects_that_are_not_numbers_are_bad_output(honest):
    proc, _ = honest
    res = proc.call("objects", (), {}, budget_s=5)
    assert res.status == "bad-output"
    assert "list of Foo objects" in res.message and "ndarray" in res.message
    assert all(isinstance(v, Unreadable) for v in res.value)
    res = proc.call("object_array", (), {}, budget_s=5)
    assert res.status == "bad-output" and "dtype object" in res.message
    res = proc.call("liar", (), {}, budget_s=5)
    assert res.status == "bad-output" and "Foo object" in res.message
    assert isinstance(res.value, Unreadable) and res.value != 0


def test_in_place_modification_shows_in_args_after(honest):
    proc, _ = honest
    x = np.arange(6.0).reshape(2, 3)
    cache = (np.ones(3), 2)
    res = proc.call("in_place", (x, cache), {}, budget_s=5)
    assert res.status == "ok" and res.value == 30.0
    after_x, after_cache = res.args_after
    np.testing.assert_array_equal(after_x, 2 * np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(after_cache[0], np.zeros(3))
    # the parent's own arrays are untouched
    np.testing.assert_array_equal(x, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(cache[0], np.ones(3))


def test_printed_success_changes_nothing(honest):
    proc, report = honest
    assert report.cells[4].status == "ok"
    res = proc.call("wrong", (), {}, budget_s=5)
    assert res.status == "ok"
    np.testing.assert_array_equal(res.value, np.zeros(3))   # what it returned, no more
    res = proc.call("boom", (), {}, budget_s=5)
    assert res.status == "error" and res.value is None
    assert res.message == "ValueError: shapes do not match"
    assert "All tests passed" in proc.learner_output()


def test_missing_function(honest):
    proc, _ = honest
    res = proc.call("conv_backward", (), {}, budget_s=5)
    assert res.status == "missing" and "conv_backward is not defined" in res.message


# --------------------------------------------------------------------------
# cells that misbehave
# --------------------------------------------------------------------------

def test_base_exceptions_in_cells_do_not_stop_later_cells():
    src = cells(
        "raise SystemExit(3)",
        "raise KeyboardInterrupt",
        "class Boom(BaseException):\n    def __str__(self):\n        raise RuntimeError\nraise Boom()",
        "import sys\nsys.exit('bye')",
        "def after():\n    raise SystemExit(0)\ndef fine():\n    return 7",
    )
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        report = proc.setup()
        assert [c.status for c in report.cells] == ["error"] * 4 + ["ok"]
        assert report.cells[0].message == "SystemExit: 3"
        assert report.cells[1].message == "KeyboardInterrupt"
        assert "Boom" in report.cells[2].message
        assert report.cells[3].message == "SystemExit: bye"
        assert report.restarts == 0
        res = proc.call("after", (), {}, budget_s=5)
        assert res.status == "error" and "SystemExit" in res.message
        assert proc.call("fine", (), {}, budget_s=5).value == 7


def test_os_exit_in_a_cell_is_skipped_on_restart():
    src = cells(
        "def before():\n    return 1",
        "import os\nos._exit(0)",
        "def later():\n    return 2",
    )
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        report = proc.setup()
        assert [c.status for c in report.cells] == ["ok", "killed", "ok"]
        assert "exit code 0" in report.cells[1].message
        assert report.restarts == 1
        assert {"before", "later"} <= set(report.functions)
        assert proc.call("later", (), {}, budget_s=5).value == 2
        assert proc.call("before", (), {}, budget_s=5).value == 1


def test_os_exit_reached_without_importing_os():
    # the import guard is easy to get around; the process boundary is what holds
    src = cells("import numpy as np\n"
                "os = np.__loader__.__class__.__init__.__globals__['_os']\n"
                "def quit_now():\n    os._exit(3)\n"
                "def fine():\n    return 5")
    with LearnerProcess(src, limits=FAST) as proc:
        assert proc.setup().cells[0].status == "ok"
        res = proc.call("quit_now", (), {}, budget_s=5)
        assert res.status == "killed" and "exit code 3" in res.message
        assert proc.call("fine", (), {}, budget_s=5).value == 5   # restarted transparently


def test_function_that_kills_its_process():
    src = cells("import os, signal\n"
                "def die():\n    os._exit(0)\n"
                "def segv():\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
                "def fine(x):\n    return x + 1")
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        proc.setup()
        res = proc.call("die", (), {}, budget_s=5)
        assert res.status == "killed" and "exit code 0" in res.message
        res = proc.call("fine", (np.ones(2),), {}, budget_s=5)
        assert res.status == "ok"
        np.testing.assert_array_equal(res.value, [2.0, 2.0])
        res = proc.call("segv", (), {}, budget_s=5)
        assert res.status == "killed" and "SIGSEGV" in res.message
        assert proc.call("fine", (1,), {}, budget_s=5).value == 2


def test_infinite_loop_in_a_function_times_out():
    src = cells("def spin(x):\n    while True:\n        pass\n",
                "def fine():\n    return 1")
    with LearnerProcess(src, limits=FAST) as proc:
        proc.setup()
        start = time.monotonic()
        res = proc.call("spin", (np.ones(3),), {}, budget_s=0.5)
        took = time.monotonic() - start
        assert res.status == "timeout"
        assert "0.50 s" in res.message and "spin" in res.message
        if proc.cpu_accounting:
            # CPU time of the learner's processes, whatever the machine's load
            assert "CPU time" in res.message
            assert 0.5 <= res.cpu_seconds < 0.5 + 0.3
            assert took < sandbox.WALL_MIN_S + 2
        else:
            assert 0.5 <= res.seconds and took < 0.5 + 1.5
        assert proc.call("fine", (), {}, budget_s=5).value == 1


def test_sleeping_function_meets_the_wall_clock_cap():
    src = cells("import time\ndef nap():\n    time.sleep(600)\n")
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        proc.setup()
        start = time.monotonic()
        res = proc.call("nap", (), {}, budget_s=0.5)
        assert res.status == "timeout"
        assert time.monotonic() - start < sandbox.WALL_MIN_S + 3


def test_notebook_deadline_bounds_everything():
    """Cells that wait and calls that end the process cannot hold a worker past the deadline."""
    src = cells("import time\ntime.sleep(3)", "import time\ntime.sleep(3)",
                "import os\ndef die():\n    os._exit(1)\n")
    limits = Limits(cell_timeout=5.0, setup_timeout=30.0, notebook_timeout=8.0)
    start = time.monotonic()
    with LearnerProcess(src, limits=limits, allowed_imports=WIDE) as proc:
        proc.setup()
        results = [proc.call("die", (), {}, budget_s=1) for _ in range(10)]
    assert time.monotonic() - start < 8.0 + 5
    assert results[-1].status == "timeout" and "total time of 8 s" in results[-1].message


def test_infinite_loop_in_a_cell_times_out_alone():
    src = cells("def a():\n    return 'a'",
                "while True:\n    pass",
                "def b():\n    return 'b'")
    limits = Limits(cell_timeout=1.0, setup_timeout=30.0, max_processes=32)
    with LearnerProcess(src, limits=limits) as proc:
        start = time.monotonic()
        report = proc.setup()
        assert time.monotonic() - start < 1.0 + 4.0
        assert [c.status for c in report.cells] == ["ok", "timeout", "ok"]
        assert "1 s" in report.cells[1].message
        assert proc.call("a", (), {}, budget_s=5).value == "a"
        assert proc.call("b", (), {}, budget_s=5).value == "b"


def test_memory_bomb():
    src = cells("import numpy as np\n"
                "def huge():\n    return np.ones((1 << 40,))\n"
                "def grow():\n    keep = []\n    while True:\n        keep.append(np.ones(1 << 20))\n"
                "def fine():\n    return np.ones(2)")
    limits = Limits(cell_timeout=5.0, memory_bytes=512 << 20, max_processes=32)
    with LearnerProcess(src, limits=limits) as proc:
        proc.setup()
        res = proc.call("huge", (), {}, budget_s=5)
        assert res.status == "out-of-memory" and "huge" in res.message
        res = proc.call("grow", (), {}, budget_s=10)
        assert res.status in ("out-of-memory", "killed"), res
        res = proc.call("fine", (), {}, budget_s=5)
        assert res.status == "ok"
    big = np.ones(64 << 20, dtype=np.uint8)     # the parent still allocates freely
    assert big.sum() == 64 << 20


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_fork_loop_is_stopped_and_dies_with_its_cell():
    """A fork loop hits the process limit, and every process it started (in their own
    sessions too) is gone before the next cell runs."""
    marker = f"{300 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"
    src = cells(f"""
        import os, sys
        started, refused = 0, None
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError as exc:
                refused = exc.errno
                break
            if pid == 0:
                os.setsid()
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
            started += 1
        def forks():
            return started, refused
        """, """
        import os, sys
        def alive():
            return sum(1 for p in os.listdir("/proc") if p.isdigit())
        def fork_again():
            if os.fork() == 0:
                os.setsid()
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
            return 1
        """)
    limits = Limits(cell_timeout=10.0, max_processes=16)
    proc = LearnerProcess(src, limits=limits, allowed_imports=WIDE)
    try:
        report = proc.setup()
        assert report.cells[0].status == "ok", report.cells[0].message
        assert _processes_with(marker) == []            # died with the cell
        res = proc.call("forks", (), {}, budget_s=5)
        started, refused = res.value
        assert 0 < started < 20 and refused == errno.EAGAIN
        assert proc.call("fork_again", (), {}, budget_s=5).value == 1
        assert _processes_with(marker) == []            # died with the call
    finally:
        proc.close()
    assert _processes_with(marker) == []


# --------------------------------------------------------------------------
# the filesystem, the network, the protocol, imports
# --------------------------------------------------------------------------

@needs_bwrap
def test_files_outside_the_job_folder_are_out_of_reach(tmp_path):
    secret = tmp_path / "graded" / "scores.csv"
    secret.parent.mkdir()
    secret.write_text("student,score\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret.parent, 0o777)
    os.chmod(secret, 0o666)
    targets = [os.path.join(REPO, "autograder", "reference.py"), str(secret),
               os.path.join(REPO, "autograder", "checks.py"),
               os.path.join(REPO, "autograder", "assignments", "cnn_layers.py")]
    src = cells(f"""
        import os
        def probe():
            out = []
            for path in {targets!r}:
                try:
                    with open(path) as fh:
                        out.append("read " + fh.read(20))
                except OSError as exc:
                    out.append(type(exc).__name__)
            return out
        def write(path):
            try:
                with open(path, "w") as fh:
                    fh.write("hacked")
                return "written"
            except OSError as exc:
                return type(exc).__name__
        """)
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        proc.setup()
        res = proc.call("probe", (), {}, budget_s=5)
        assert res.status == "ok"
        assert all(not r.startswith("read") for r in res.value), res.value
        for path in (str(secret), str(tmp_path / "new.txt"), "/usr/x", "/x",
                     os.path.join(REPO, "autograder", "x.py")):
            res = proc.call("write", (path,), {}, budget_s=5)
            assert res.value != "written", path
        assert proc.call("write", ("/job/mine.txt",), {}, budget_s=5).value == "written"
        assert proc.call("write", ("/tmp/mine.txt",), {}, budget_s=5).value == "written"
    assert secret.read_text() == "student,score\n"
    assert not (tmp_path / "new.txt").exists()
    assert not os.path.exists(os.path.join(REPO, "autograder", "x.py"))


@needs_bwrap
def test_network_is_unreachable():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    src = cells(f"""
        import socket
        def connect(host):
            try:
                socket.create_connection((host, {port}), timeout=1).close()
                return "connected"
            except OSError as exc:
                return type(exc).__name__
        """)
    try:
        with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
            proc.setup()
            for host in ("127.0.0.1", "1.1.1.1"):
                res = proc.call("connect", (host,), {}, budget_s=5)
                assert res.status == "ok" and res.value != "connected", host
    finally:
        server.close()


def test_forged_replies_are_ignored():
    forged = ('{"nonce": "%s", "status": "ok", "value": {"i": 42}, "op": "setup-done"}'
              % ("0" * 32))
    src = cells(f"""
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b'{forged}' + b'\\n' + b'{{"status": "ok", "value"')
            except OSError:
                pass
        def answer():
            raise ValueError("no answer")
        """)
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        report = proc.setup()
        assert report.cells[0].status == "ok"
        res = proc.call("answer", (), {}, budget_s=5)
        assert res.status == "error" and res.value is None
        assert "no answer" in res.message


def test_forbidden_imports_are_refused_at_run_time():
    src = cells(
        "import scipy",
        "from torch import autograd",
        'sp = __import__("sci" + "py")',
        'exec("import scipy.signal")',
        "import numpy as np\nimport math, itertools, functools, collections\n"
        "from numpy.lib.stride_tricks import sliding_window_view\n"
        "def lazy():\n    import scipy\n    return 1\n"
        "def fine():\n    return float(np.fft.fft(np.ones(4)).real[0])",
    )
    with LearnerProcess(src, limits=FAST) as proc:
        report = proc.setup()
        assert [c.status for c in report.cells] == ["error"] * 4 + ["ok"]
        assert "import scipy is not allowed" in report.cells[0].message
        assert "torch is an automatic differentiation library" in report.cells[1].message
        assert "scipy" in report.cells[2].message and "not allowed" in report.cells[2].message
        assert "not allowed" in report.cells[3].message
        res = proc.call("lazy", (), {}, budget_s=5)
        assert res.status == "error" and "not allowed" in res.message
        assert proc.call("fine", (), {}, budget_s=5).value == 4.0


@needs_bwrap
def test_installed_libraries_are_absent_even_past_the_guard():
    src = cells("""
        import importlib, sys
        def get(name):
            try:
                importlib.import_module(name)
                return "imported"
            except ImportError as exc:
                return type(exc).__name__
        """)
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE | {"importlib"}) as proc:
        proc.setup()
        for name in ("scipy", "sympy", "autograder", "pytest"):
            assert proc.call("get", (name,), {}, budget_s=5).value == "ModuleNotFoundError", name
        assert proc.call("get", ("numpy",), {}, budget_s=5).value == "imported"


# --------------------------------------------------------------------------
# isolation modes
# --------------------------------------------------------------------------

def test_fallback_without_bubblewrap_warns_once(monkeypatch):
    monkeypatch.setattr(sandbox, "_mode", None)
    monkeypatch.setattr(sandbox, "_warned", False)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="WITHOUT filesystem isolation"):
        assert sandbox.isolation_mode() == "rlimits-only"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox.isolation_mode() == "rlimits-only"


def test_rlimits_only_mode_still_limits():
    src = cells("import os\nimport numpy as np\ndef quit_now():\n    os._exit(1)\n"
                "def spin():\n    while True:\n        pass\n"
                "def fine(x):\n    return x * 2, os.getuid()\n"
                "def lazy():\n    return float(np.fft.fft(np.ones(4)).real[0])")
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE, isolation="rlimits-only") as proc:
        assert proc.setup().cells[0].status == "ok"
        res = proc.call("fine", (np.arange(3),), {}, budget_s=5)
        assert res.status == "ok"
        np.testing.assert_array_equal(res.value[0], [0, 2, 4])
        if os.getuid() == 0:
            assert res.value[1] == 65534
        assert proc.call("lazy", (), {}, budget_s=5).value == 4.0   # lazily loaded NumPy parts
        assert proc.call("quit_now", (), {}, budget_s=5).status == "killed"
        assert proc.call("spin", (), {}, budget_s=0.3).status == "timeout"
        assert proc.call("fine", (1,), {}, budget_s=5).status == "ok"


@needs_bwrap
def test_the_sandbox_holds_only_python_and_numpy():
    """What learner code reaches through NumPy's own modules (importlib, then ctypes,
    subprocess, socket) is either unimportable or harmless: no libffi for ctypes, no
    shell or other program to run, no other Python installation, no network."""
    src = cells('''
        import numpy as np
        _os = np.lib._datasource.os
        _importlib = _os.sys.modules.get("importlib") or _os.sys.modules["importlib._bootstrap"]

        def reach():
            found = {}
            try:
                _importlib.import_module("ctypes")
                found["ctypes"] = "imported"
            except ImportError as exc:
                found["ctypes"] = "refused: " + str(exc)[:80]
            sub = _importlib.import_module("subprocess")
            for program in ("/bin/sh", "/usr/bin/sh", "/usr/bin/env", "/usr/bin/python3", "/usr/bin/gcc"):
                try:
                    sub.run([program, "-c", "true"], timeout=5)
                    found[program] = "ran"
                except OSError as exc:
                    found[program] = type(exc).__name__
            found["python trees"] = sorted(p for p in ("/usr/lib/python3", "/usr/lib/python3.11",
                                                       "/usr/local/lib", "/usr/bin", "/bin", "/etc")
                                           if _os.path.exists(p))
            sock = _importlib.import_module("socket")
            try:
                s = sock.create_connection(("1.1.1.1", 53), timeout=2)
                found["network"] = "connected"
            except OSError:
                found["network"] = "unreachable"
            return [k + "=" + (v if isinstance(v, str) else ",".join(v)) for k, v in found.items()]
        ''')
    with LearnerProcess(src, limits=FAST) as proc:
        assert proc.setup().cells[0].status == "ok"
        res = proc.call("reach", (), {}, budget_s=20)
        assert res.status == "ok", res.message
        got = dict(item.split("=", 1) for item in res.value)
    assert got["ctypes"].startswith("refused") and "libffi" in got["ctypes"], got
    for program in ("/bin/sh", "/usr/bin/sh", "/usr/bin/env", "/usr/bin/python3", "/usr/bin/gcc"):
        assert got[program] in ("FileNotFoundError", "PermissionError"), got
    assert got["python trees"] == "", got
    assert got["network"] == "unreachable"


def test_without_control_groups_strays_still_die(monkeypatch):
    """Where no cgroup can be made, the learner's processes are found through the
    sandbox's PID namespace (or as descendants) and killed after each call, and the
    budgets are wall-clock times."""
    from autograder import proctree
    monkeypatch.setattr(proctree, "_LAYOUT", (None, None))
    marker = f"{500 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"
    src = cells(f"""
        import os, sys
        def fork_busy(x):
            if os.fork() == 0:
                os.setsid()
                os.execv(sys.executable, [sys.executable, "-c", "while True: pass", "{marker}"])
            return x * 2
        def spin():
            while True:
                pass
        """)
    with LearnerProcess(src, limits=FAST, allowed_imports=WIDE) as proc:
        assert not proc.cpu_accounting
        proc.setup()
        res = proc.call("fork_busy", (np.ones(2),), {}, budget_s=5)
        assert res.status == "ok" and list(res.value) == [2.0, 2.0]
        assert _processes_with(marker) == []
        start = time.monotonic()
        assert proc.call("spin", (), {}, budget_s=1).status == "timeout"
        assert time.monotonic() - start < 1 + 3
        assert proc.call("fork_busy", (np.ones(1),), {}, budget_s=5).status == "ok"
    assert _processes_with(marker) == []


# --------------------------------------------------------------------------
# one learner's notebooks in turn in one sandbox (LearnerProcess.load)
# --------------------------------------------------------------------------

FIRST_NOTEBOOK = cells(
    """
    import os, subprocess, sys
    secret = 41
    def leave_traces():
        with open("/tmp/left-behind.txt", "w") as fh:
            fh.write("from the first notebook")
        # a process that outlives the call, in a session of its own
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        return os.getpid()
    """,
)

SECOND_NOTEBOOK = cells(
    """
    import os
    def what_is_left():
        names = sorted(os.listdir("/tmp"))
        others = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in (os.getpid(), os.getppid(), 1):
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        others.append(fh.read().replace(b"\\0", b" ").decode())
                except OSError:
                    pass
        return len(names), "secret" in globals(), len(others), os.getpid()
    """,
)


@needs_bwrap
def test_the_next_notebook_starts_clean_in_the_same_sandbox():
    """Files, processes and names of the first notebook are gone when the second one's cells run."""
    with LearnerProcess(FIRST_NOTEBOOK, limits=FAST, allowed_imports=WIDE | {"subprocess"}) as proc:
        assert proc.setup().failed == ()
        first = proc.call("leave_traces", budget_s=5)
        assert first.status == "ok", first.message
        proc.load(SECOND_NOTEBOOK)
        assert proc.setup().failed == ()
        res = proc.call("what_is_left", budget_s=5)
        assert res.status == "ok", res.message
        files, has_secret, processes, pid = res.value
        assert (files, has_secret, processes) == (0, False, 0)
        assert pid != first.value          # a fresh learner process
        assert proc.call("leave_traces").status == "missing"


@needs_bwrap
def test_a_notebook_that_kills_its_template_does_not_stop_the_next_one():
    killer = cells(
        """
        import os, signal
        os.kill(os.getppid(), signal.SIGKILL)   # the template that forked this process
        def f(x):
            return x + 1
        """,
    )
    with LearnerProcess(killer, limits=FAST, allowed_imports=WIDE) as proc:
        proc.setup()
        proc.load(HONEST)
        report = proc.setup()
        assert report.failed == ()
        x, w = np.arange(7.0), np.array([1.0, -1.0, 2.0])
        res = proc.call("conv1d", (x, w), {"stride": 2}, budget_s=5)
        assert res.status == "ok", res.message
        assert np.array_equal(res.value[0], np.convolve(x, w[::-1], "valid")[::2])


@needs_bwrap
def test_a_cell_that_ends_the_template_after_it_reported_back_is_skipped():
    """The template's death reaches the learner process a moment after the signal, so a cell
    that ends it may report back first, and its process then dies between cells.  That cell is
    the one that ended it: it is skipped, and the rest of the notebook is graded.  Here a profile
    hook the cell leaves behind ends the template and the process once the cell's report is
    written, before the parent's go-ahead comes (before: SandboxError "the learner process ended
    between cells", also seen about once in ten runs of the test above)."""
    killer = cells(
        """
        import os, signal, sys
        def f(x):
            return x + 1
        """,
        """
        template = os.getppid()

        def end_it(frame, event, arg):
            # called on every call and return from here on: once this cell's report has been
            # written to the parent, end the template and this process
            if (event == "c_return" and arg is os.write and frame.f_code.co_name == "send"
                    and frame.f_locals.get("obj", {}).get("op") == "cell-done"):
                os.kill(template, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)

        sys.setprofile(end_it)
        """,
    )
    with LearnerProcess(killer, limits=FAST, allowed_imports=WIDE) as proc:
        report = proc.setup()
        assert report.cells[0].status == "ok", report.cells[0]
        assert report.cells[1].status == "killed", report.cells[1]
        assert "right after this cell ran" in report.cells[1].message, report.cells[1].message
        res = proc.call("f", (41,), {}, budget_s=5)
        assert res.status == "ok" and res.value == 42, res.message


@needs_bwrap
def test_a_learner_process_that_dies_is_reported_and_the_template_stays():
    dies = cells(
        """
        import os
        def f():
            os._exit(3)
        def g():
            return 5
        """,
    )
    with LearnerProcess(dies, limits=FAST, allowed_imports=WIDE) as proc:
        assert proc.setup().failed == ()
        template = set(proc._template)
        res = proc.call("f", budget_s=5)
        assert res.status == "killed" and "exit code 3" in res.message
        assert proc.call("g", budget_s=5).value == 5      # a fresh learner process
        assert set(proc._template) == template           # forked from the same template


def test_a_prestarted_sandbox_runs_its_first_cells_as_a_fresh_one_and_charges_them_its_start():
    """A sandbox started ahead (for the learner graded next) has run no cell when it gets its
    learner's cells; they run as in a sandbox they started, and are charged its start-up CPU."""
    spare = LearnerProcess([], limits=FAST)
    try:
        spare.prestart()
        spare.load(HONEST)
        report = spare.setup()
        assert report.failed == () and {"conv1d", "scalars"} <= set(report.functions)
        x, w = np.arange(7.0), np.array([1.0, -1.0, 2.0])
        res = spare.call("conv1d", (x, w), {"stride": 2}, budget_s=5)
        assert res.status == "ok" and np.array_equal(res.value[0], np.convolve(x, w[::-1], "valid")[::2])
        if spare.learner_cpu_seconds() is not None:   # with cgroups: the interpreter's start is in it
            with LearnerProcess(HONEST, limits=FAST) as fresh:
                fresh.setup()
                started = fresh.learner_cpu_seconds()
            assert spare.learner_cpu_seconds() > 0.5 * started > 0
        spare.load(HONEST)                 # the next notebook is charged only its own work
        spare.setup()
        assert spare.learner_cpu_seconds() is None or spare.learner_cpu_seconds() < started
    finally:
        spare.close()
    unused = LearnerProcess([], limits=FAST)
    unused.prestart()
    pid = unused._proc.pid
    unused.close()                          # a sandbox never used ends with everything it started
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_ldd_answer_is_reused_only_while_nothing_it_depends_on_changed(tmp_path, monkeypatch):
    """The runtime's libraries are asked of ldd once per machine state, never from a stale answer."""
    import shutil as _shutil
    monkeypatch.setenv("AUTOGRADER_JOBS_DIR", str(tmp_path / "jobs"))
    (tmp_path / "jobs").mkdir()
    lib = tmp_path / "_example.so"
    _shutil.copyfile(__import__("numpy._core._multiarray_umath", fromlist=["_"]).__file__, lib)
    asked = []
    real = sandbox._ask_ldd

    def counting(ldd, files):
        asked.append(list(files))
        return real(ldd, files)
    monkeypatch.setattr(sandbox, "_ask_ldd", counting)
    first = sandbox._shared_libraries([str(lib)])
    assert first and len(asked) == 1
    assert sandbox._shared_libraries([str(lib)]) == first and len(asked) == 1      # reused
    os.utime(lib, ns=(1, 1))                                                          # the file changed
    assert sandbox._shared_libraries([str(lib)]) == first and len(asked) == 2
    cache = os.path.join(sandbox.jobs_base(traversable=None), sandbox._LDD_CACHE)
    with open(cache, "w") as fh:                                                      # a damaged answer
        fh.write('{"key": "x", "libraries": ["/etc/shadow"]}')
    assert sandbox._shared_libraries([str(lib)]) == first and len(asked) == 3
    assert stat_mode(cache) == 0o600 and stat_mode(os.path.dirname(cache)) == 0o700


def stat_mode(path):
    import stat
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_job_folder_whose_grader_is_a_zombie_is_stale(tmp_path, monkeypatch):
    """A grader killed together with its parent stays a zombie until init reaps it (in a
    container, maybe never): its job folder is removed like a dead grader's, a live one's kept."""
    from autograder.sandbox import jobs_base, remove_stale_jobs
    monkeypatch.setenv("AUTOGRADER_JOBS_DIR", str(tmp_path / "jobs"))
    (tmp_path / "jobs").mkdir()
    base = jobs_base(traversable=None)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:    # until it is a zombie (exited, not reaped)
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rpartition(b")")[2].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        os.makedirs(os.path.join(base, f"{pid}-zombie"))
        os.makedirs(os.path.join(base, f"{os.getppid()}-alive"))
        remove_stale_jobs()
        assert sorted(os.listdir(base)) == [f"{os.getppid()}-alive"]
    finally:
        os.waitpid(pid, 0)
