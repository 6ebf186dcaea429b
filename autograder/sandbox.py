"""Run learner code in a separate, limited process and bring back plain data.

The trusted parent (this module) never executes learner code.  It starts a
child interpreter that runs ``autograder/_child.py``; the child runs the
learner's cells in one namespace and then answers call requests.  Arguments go
in and results come back as ``.npy`` files (``allow_pickle=False``); requests
and replies are JSON lines on two dedicated pipes, each reply carrying the
fresh nonce of its request.  Nothing the child says is used for a score: it
only hands arrays back, and the checks compare them with the reference.  What travels,
and how a forged reply is read without harm, is ``autograder.wire``; this module runs the
processes (template, fork, limits, cgroup, kill, restart) and the learner's session
(``setup``, ``call``, ``load``).

Isolation (see ``isolation_mode``):

``'bubblewrap'``
    The child runs under ``bwrap`` with new network, PID, IPC and UTS
    namespaces and an empty root holding only ``/usr``, the Python runtime
    (read-only, its own ``site-packages`` hidden), the allowed third-party
    packages (NumPy) under ``/opt/learner-site``, fresh ``/proc``, ``/dev``, a
    small private ``/tmp`` and a private job folder at ``/job``.  Nothing of
    the repository, the output folder, the gradebook or other submissions is
    mounted.  Run as root, the child drops to uid/gid 65534 itself; otherwise a
    user namespace is used.
``'rlimits-only'``
    Fallback when ``bwrap`` is missing or fails its self-test: a plain child
    process with the same resource limits and the same uid drop, but **no
    filesystem or network isolation**.  A loud warning is emitted once.

Either way the child gets resource limits (address space, CPU seconds,
processes, file size, open files); the parent adds a wall-clock budget per
call and per cell and kills the whole process group when one runs out.

Typical use::

    with LearnerProcess(cells, limits=Limits(), allowed_imports=ALLOWED_IMPORTS) as proc:
        report = proc.setup()
        res = proc.call("conv_forward", (x, w, b), {"stride": 2, "pad": 1}, budget_s=1.5)
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

from .policy import ALLOWED_IMPORTS, FORBIDDEN_HINTS, import_message
from .proctree import LearnerGroup, _pid_alive, cgroup_mode, memory_limited, remove_stale_groups
from .safeio import open_regular
from .wire import CallResult, Unreadable, _printable, encode, read_reply, remove_call_files

__all__ = [
    "Limits", "LearnerProcess", "CallResult", "CellReport", "SetupReport",
    "Unreadable", "SandboxError", "isolation_mode",
]

log = logging.getLogger(__name__)

#: uid/gid the child runs as when the grader runs as root ("nobody" on Debian).
NOBODY = 65534
#: Where the allowed third-party packages appear inside the sandbox.
SANDBOX_SITE = "/opt/learner-site"
SANDBOX_JOB = "/job"
SANDBOX_IN = "/job-in"
_CHILD_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
_MAX_LINE = 1 << 20           # longest protocol line the parent will parse
#: a call's wall-clock cap, when its budget is CPU time: max(WALL_MIN_S, WALL_FACTOR x budget)
WALL_FACTOR = 10.0
WALL_MIN_S = 10.0
_NUMPY_PRELOAD = ["numpy.fft", "numpy.linalg", "numpy.random", "numpy.polynomial",
                  "numpy.ma", "numpy.testing", "numpy.lib.stride_tricks"]


class SandboxError(RuntimeError):
    """The sandbox itself could not be started (not the learner's fault)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one learner process.

    ``cell_timeout``: wall-clock seconds per cell; ``setup_timeout``: for
    starting the interpreter and running all cells; ``cpu_seconds``: CPU time
    of the whole process (RLIMIT_CPU); ``memory_bytes``: address space of
    each process (RLIMIT_AS); ``learner_memory_bytes``: memory of all the
    learner's processes together, swap and their in-memory ``/tmp`` and
    ``/job`` included (their control group's memory limit, where the machine
    has a cgroup memory controller: ``proctree.memory_limited``);
    ``max_processes``: processes and threads (RLIMIT_NPROC);
    ``output_bytes``: largest file the child may write, printed output
    included (RLIMIT_FSIZE); ``open_files``: RLIMIT_NOFILE; ``tmp_bytes``:
    size of the private ``/tmp`` and ``job_bytes`` of the job folder ``/job``
    (both in memory, bubblewrap only; the most the grader reads back from
    one reply is ``job_bytes`` too); ``notebook_timeout``: wall-clock seconds
    for everything one notebook runs (all starts, cells and calls together).
    """

    cell_timeout: float = 10.0
    setup_timeout: float = 60.0
    cpu_seconds: int = 300
    memory_bytes: int = 2 << 30
    learner_memory_bytes: int = 2 << 30
    max_processes: int = 64
    output_bytes: int = 20 << 20
    open_files: int = 64
    tmp_bytes: int = 64 << 20
    job_bytes: int = 128 << 20
    notebook_timeout: float = 180.0


@dataclass(frozen=True)
class CellReport:
    """Outcome of one learner cell.

    ``status`` is 'ok', 'error', 'timeout', 'killed' or 'out-of-memory';
    ``message`` is one line (the exception's last line, or what happened).
    """

    index: int
    status: str
    message: str = ""
    defined: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class SetupReport:
    """What running the cells gave: one report per cell, in notebook order."""

    cells: tuple[CellReport, ...]
    names: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    restarts: int = 0
    isolation: str = ""

    def cell(self, index: int) -> CellReport:
        return self.cells[index]

    @property
    def failed(self) -> tuple[CellReport, ...]:
        return tuple(c for c in self.cells if c.status != "ok")


# --------------------------------------------------------------------------
# isolation
# --------------------------------------------------------------------------

_mode_lock = threading.Lock()
_mode: str | None = None
_warned = False


def _python_executable() -> str:
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


def _stdlib_dirs() -> set[str]:
    paths = sysconfig.get_paths()
    return {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if k in paths}


def _third_party_dirs(allowed) -> list[str]:
    """Folders (package and its bundled ``.libs``) of allowed non-stdlib modules."""
    stdlib = _stdlib_dirs()
    found: list[str] = []
    for name in sorted(allowed):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            continue
        if spec.submodule_search_locations:
            path = os.path.realpath(list(spec.submodule_search_locations)[0])
        else:
            path = os.path.realpath(spec.origin)
        parent = os.path.dirname(path)
        if any(parent == d or parent.startswith(d + os.sep) and "site-packages" not in parent
               for d in stdlib):
            continue
        found.append(path)
        libs = os.path.join(parent, name + ".libs")
        if os.path.isdir(libs):
            found.append(os.path.realpath(libs))
    return found


def _ancestors(path: str) -> list[str]:
    out = []
    while True:
        path = os.path.dirname(path)
        if path in ("/", ""):
            return out[::-1]
        out.append(path)


#: stdlib extension modules whose libraries are not mounted, so that they cannot be imported
#: in the sandbox: ctypes is a foreign-function interface (it needs libffi), tkinter a GUI
_DENIED_EXTENSIONS = ("_ctypes", "_tkinter")
_runtime_lock = threading.Lock()
_runtime_cache: dict = {}


def _ldd_key(ldd: str, files: list[str]) -> str:
    """What ldd's answer depends on: ldd itself, the loader's cache and search path, and every
    file asked about (path, inode, size, modification time)."""
    parts = [os.environ.get("LD_LIBRARY_PATH", ""), os.environ.get("LD_PRELOAD", "")]
    for path in [ldd, "/etc/ld.so.cache", "/etc/ld.so.preload", *sorted(files)]:
        try:
            st = os.stat(path)
            parts.append(f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}\0-")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


_LDD_CACHE = "runtime-libraries.json"


def _shared_libraries(files: list[str]) -> set[str]:
    """Paths of the shared libraries (and the dynamic loader) that files need, from ldd.

    ldd's answer is kept in the grader's private job folder (``jobs_base``, 0700), keyed by
    everything it depends on (``_ldd_key``), so that a run on an unchanged machine does not
    start ldd again; any change to a file, the loader's cache or its environment asks ldd
    anew.  Only the grader's user can write that folder.
    """
    ldd = shutil.which("ldd")
    if ldd is None or not files:
        raise SandboxError("ldd is missing")
    key = _ldd_key(ldd, files)
    cache = os.path.join(jobs_base(traversable=None), _LDD_CACHE)
    try:
        with open_regular(cache, 1 << 20) as fh:
            stored = json.load(fh)
        if stored.get("key") == key and all(os.path.exists(p) for p in stored["libraries"]):
            return set(stored["libraries"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    found = _ask_ldd(ldd, files)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache), prefix=".ldd-")
        with os.fdopen(fd, "w") as fh:
            json.dump({"key": key, "libraries": sorted(found)}, fh)
        os.replace(tmp, cache)
    except OSError:
        pass
    return found


def _ask_ldd(ldd: str, files: list[str]) -> set[str]:
    found = set()
    for k in range(0, len(files), 200):
        res = subprocess.run([ldd, *files[k:k + 200]], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        for line in res.stdout.splitlines():
            line = line.strip()
            if "=>" in line:
                line = line.split("=>", 1)[1].strip()
            path = line.split(" (", 1)[0].strip()
            if path.startswith("/") and not path.endswith(":") and os.path.exists(path):
                found.add(path)
    return found


def _runtime_binds(site_dirs: tuple[str, ...]) -> list[tuple[str, str]]:
    """(source, destination) of every file and folder the Python runtime and the allowed
    packages need: the standard library, the interpreter, and the shared libraries that
    they load -- nothing else of the machine (no shells, compilers or other Pythons)."""
    with _runtime_lock:
        if site_dirs in _runtime_cache:
            return _runtime_cache[site_dirs]
        exe = _python_executable()
        binds = {os.path.realpath(d): os.path.realpath(d) for d in _stdlib_dirs()}  # dest -> source
        binds[exe] = exe
        objects = [exe]
        stdlib = {os.path.realpath(d) for d in _stdlib_dirs()}
        for folder in sorted(stdlib) + list(site_dirs):
            for parent, dirs, names in os.walk(folder):
                if folder in stdlib:   # installed packages are not the standard library: not walked
                    dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages")]
                for name in names:
                    if ".so" in name and not name.startswith(_DENIED_EXTENSIONS):
                        objects.append(os.path.join(parent, name))
        inside = [os.path.realpath(d) + os.sep for d in list(binds) + list(site_dirs)]
        for lib in sorted(_shared_libraries(objects)):
            real = os.path.realpath(lib)
            if any(real.startswith(d) for d in inside):
                continue
            # the name the loader asks for, in the real folder (/lib/x -> /usr/lib/x)
            binds[os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib))] = real
        result = sorted(((src, dest) for dest, src in binds.items()), key=lambda kv: kv[1])
        _runtime_cache[site_dirs] = result
        return result


def _bwrap_argv(in_dir: str, site_dirs: list[str], tmp_bytes: int, job_bytes: int = 16 << 20) -> list[str]:
    """The bubblewrap command line (without the program to run)."""
    bwrap = shutil.which("bwrap")
    argv = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session"]
    if os.getuid() != 0:
        argv.append("--unshare-user")
    for name in ("lib", "lib32", "lib64", "libx32"):   # the loader's paths, as on the host
        top = "/" + name
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
    made = {"/"}
    for source, dest in _runtime_binds(tuple(site_dirs)):
        for anc in _ancestors(dest):   # readable by the unprivileged user (bwrap would make them 0700)
            if anc not in made:
                argv += ["--perms", "0755", "--dir", anc]
                made.add(anc)
        argv += ["--ro-bind", source, dest]
        made.add(dest)
    # the standard library's own site-packages stays empty
    for stdlib in sorted(_stdlib_dirs()):
        for name in ("site-packages", "dist-packages"):
            if os.path.isdir(os.path.join(stdlib, name)):
                argv += ["--perms", "0755", "--tmpfs", os.path.join(stdlib, name)]
    argv += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", SANDBOX_SITE]
    for path in site_dirs:
        argv += ["--ro-bind", path, f"{SANDBOX_SITE}/{os.path.basename(path)}"]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(int(tmp_bytes)), "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(int(job_bytes)), "--tmpfs", SANDBOX_JOB,
             # the learner's working folder is /tmp: what it writes cannot crowd out the replies in /job
             "--ro-bind", in_dir, SANDBOX_IN, "--chdir", "/tmp", "--clearenv"]
    for key, value in _child_env().items():
        argv += ["--setenv", key, value]
    return argv


def _child_env() -> dict[str, str]:
    return {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp", "LANG": "C.UTF-8",
            "PATH": "/usr/bin:/bin"}


def _self_test() -> tuple[bool, str]:
    if shutil.which("bwrap") is None:
        return False, "bwrap is not installed"
    root = tempfile.mkdtemp(prefix="sandbox-selftest-")
    try:
        job = os.path.join(root, "job")
        os.mkdir(job)
        site = _third_party_dirs(ALLOWED_IMPORTS)
        code = (f"import sys; sys.path[:0] = [{SANDBOX_SITE!r}]; import numpy, socket; "
                "s = socket.socket(); s.settimeout(1)\n"
                "try:\n    s.connect(('1.1.1.1', 53)); print('network')\n"
                "except OSError:\n    print('sealed')")
        argv = _bwrap_argv(job, site, 16 << 20) + [_python_executable(), "-I", "-S", "-c", code]
        try:
            res = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, str(exc)
        if res.returncode != 0 or res.stdout.strip() != b"sealed":
            tail = (res.stderr or res.stdout).decode("utf-8", "replace").strip().splitlines()[-1:]
            return False, f"exit code {res.returncode}: {' '.join(tail)}"
        return True, ""
    finally:
        shutil.rmtree(root, ignore_errors=True)


def isolation_mode() -> str:
    """'bubblewrap' when bwrap works here, else 'rlimits-only' (warns once)."""
    global _mode, _warned
    with _mode_lock:
        if _mode is None:
            ok, why = _self_test()
            _mode = "bubblewrap" if ok else "rlimits-only"
            if not ok and not _warned:
                _warned = True
                text = ("grading WITHOUT filesystem isolation: install bubblewrap "
                        f"(apt-get install bubblewrap); bwrap self-test failed: {why}")
                log.warning(text)
                warnings.warn(text, RuntimeWarning, stacklevel=2)
        return _mode


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _count_tasks(uid: int) -> int:
    """Processes and threads owned by uid (what RLIMIT_NPROC counts)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as fh:
                real_uid = threads = None
                for line in fh:
                    if line.startswith(b"Uid:"):
                        real_uid = int(line.split()[1])
                    elif line.startswith(b"Threads:"):
                        threads = int(line.split()[1])
            if real_uid == uid:
                total += threads or 1
        except (OSError, ValueError, IndexError):
            continue
    return total


def _describe_exit(returncode: int | None, bubblewrap: bool) -> tuple[str, str]:
    """(status, words) for a child that ended on its own."""
    if returncode is None:
        return "killed", "the process stopped answering"
    sig = None
    if returncode < 0:
        sig = -returncode
    elif bubblewrap and 128 < returncode < 128 + 65:
        sig = returncode - 128     # bwrap reports a signal as 128 + its number
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGXCPU:
            return "timeout", f"the process used up its CPU-time limit ({name})"
        if sig == signal.SIGXFSZ:
            return "killed", f"the process wrote a file over the size limit ({name})"
        return "killed", f"the process was killed by {name}"
    return "killed", f"the process ended with exit code {returncode}"


_JOBS_PREFIX = "autograder-jobs-"
_stale_removed = False
_stale_lock = threading.Lock()


def _jobs_parent() -> str:
    chosen = os.environ.get("AUTOGRADER_JOBS_DIR")
    if chosen:
        return chosen
    shm = "/dev/shm"
    if os.path.isdir(shm) and not os.path.islink(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def jobs_base(traversable: bool = False) -> str:
    """The grader's private folder of learner job folders (0700, never a link).

    It lies in ``$AUTOGRADER_JOBS_DIR`` when set, else in ``/dev/shm`` (memory) where
    the machine has it, else in the temporary folder: the grader writes a few input
    files for every call, and creating files in memory is several times cheaper than
    on a journalled disk.  ``traversable`` (0711) lets a child that runs as another
    user without bubblewrap reach its own job folder, whose name it cannot guess;
    None leaves the mode as it is.
    """
    base = os.path.join(_jobs_parent(), f"{_JOBS_PREFIX}{os.getuid()}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise SandboxError(f"{base} is not a folder of this user; remove it and grade again")
    mode = 0o711 if traversable else 0o700
    if traversable is not None and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(base, mode)
    return base


def remove_stale_jobs() -> int:
    """Remove the job folders (and process groups) of graders that no longer run (a ``kill -9``).

    A grader killed together with its parent is a zombie until the machine's init reaps it,
    which in a container may be never: it counts as gone (``proctree._pid_alive``)."""
    base = jobs_base(traversable=None)
    removed = 0
    for name in os.listdir(base):
        owner = name.partition("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not _pid_alive(int(owner)):
            _rmtree(os.path.join(base, name))
            removed += 1
    remove_stale_groups()
    return removed


def _remove_stale_once() -> None:
    global _stale_removed
    with _stale_lock:
        if not _stale_removed:
            _stale_removed = True
            try:
                remove_stale_jobs()
            except OSError as exc:
                log.warning("could not remove old job folders: %s", exc)


def _str_list(value, most: int) -> list[str]:
    """A list of short strings from an untrusted message field ([] for anything else)."""
    if not isinstance(value, list):
        return []
    return [str(v)[:100] for v in value[:most] if isinstance(v, (str, int, float))]


def _rmtree(path: str) -> None:
    def retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=retry)


# --------------------------------------------------------------------------
# the learner process
# --------------------------------------------------------------------------

_CPU_OUT = "the CPU-time budget ran out"
_WALL_OUT = "the time budget ran out"
_NOTEBOOK_OUT = "the notebook's deadline passed"


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """proc.wait(timeout), woken by the kernel when the process ends (a pidfd) instead of polling.

    Popen.wait with a timeout sleeps in growing steps of up to 50 ms; a learner process
    ends within a millisecond of its request pipe closing, and those sleeps were most of
    the time spent closing one.  Raises subprocess.TimeoutExpired as Popen.wait does.
    """
    if proc.returncode is not None or not hasattr(os, "pidfd_open"):
        return proc.wait(timeout=timeout)
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:   # already reaped, or no pidfd on this kernel
        return proc.wait(timeout=timeout)
    try:
        ended = select.select([fd], [], [], timeout)[0]
    finally:
        os.close(fd)
    return proc.wait(timeout=1.0 if ended else 0)


class _Dead(Exception):
    """The child ended or stopped answering."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Sandbox:
    """The process lifecycle of one learner's sandbox: the sandbox and its template interpreter
    (``_spawn``, ``_ensure_template``), the learner process forked from it (``_fork``), its
    limits, cgroup and CPU accounting, the lines it reads and writes on the protocol pipes
    (``_send``, ``_receive``), and ending them (``_end_learner``, ``_kill``, ``_stop``).
    What runs in it, and what a call returns, is the session's (``LearnerProcess``)."""

    def __init__(self, limits: Limits | None = None, allowed_imports=ALLOWED_IMPORTS,
                 isolation: str | None = None):
        _remove_stale_once()
        self.limits = limits or Limits()
        self.allowed_imports = frozenset(allowed_imports)
        if isolation is None:
            isolation = isolation_mode()
        elif isolation == "bubblewrap" and isolation_mode() != "bubblewrap":
            raise SandboxError("bubblewrap was required but does not work on this machine")
        elif isolation not in ("bubblewrap", "rlimits-only"):
            raise ValueError(f"unknown isolation {isolation!r}")
        self.isolation = isolation
        self._proc: subprocess.Popen | None = None
        self._root: str | None = None
        self._job: str | None = None
        self._req_w: int | None = None
        self._rep_r: int | None = None
        self._buf = b""
        self._site = _third_party_dirs(self.allowed_imports)
        self._group: LearnerGroup | None = None
        self._out: str | None = None       # where the parent reads what the child wrote
        self._deadline: float | None = None  # the notebook's total wall-clock deadline (set by the session)
        self._template: set[int] = set()   # the sandbox's own processes (launcher, template interpreter)
        self._learner: str | None = None   # nonce of the live learner process forked from the template
        self._cpu_at_load = 0.0              # the group's CPU time when the cells were loaded
        self._cpu_total = 0.0                # CPU time of sandboxes closed since the cells were loaded
        self._starting: str | None = None    # nonce of a template started by prestart(), not yet ready

    # -- context manager ---------------------------------------------------------

    def __enter__(self) -> "_Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- public API of the sandbox -----------------------------------------------

    def prestart(self) -> None:
        """Start the sandbox and its template now, without waiting for it: the first ``setup()``
        then finds it ready (or waits for the rest).  A grader starts the sandbox of the next
        learner this way while it grades the current one; no cell has run in it before
        ``load`` gives it that learner's cells."""
        if self._proc is None and self._starting is None:
            self._starting = self._spawn()

    def close(self) -> None:
        """End the child (and everything it started) and remove its files."""
        self._stop()

    def learner_output(self, max_bytes: int = 4096) -> str:
        """Tail of what the learner's code printed (untrusted, for feedback only)."""
        if not self._root:
            return ""
        path = os.path.join(self._root, "output.txt")
        try:
            with open(path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def learner_cpu_seconds(self) -> float | None:
        """CPU time of the learner's processes since the cells were loaded (None without cgroups)."""
        if self._group is None:
            return self._cpu_total if cgroup_mode() != "none" else None
        now = self._group.cpu_seconds()
        if now is None:
            return None
        return self._cpu_total + now - self._cpu_at_load

    @property
    def cpu_accounting(self) -> bool:
        """True when call budgets are CPU time of the learner's process tree (a cgroup)."""
        return cgroup_mode() != "none"

    def _oom_kills(self) -> int | None:
        """How many of this sandbox's processes the kernel ended for memory so far (None: unknown)."""
        return self._group.oom_kills() if self._group is not None else None

    def _oom_since(self, before: int | None) -> str:
        """What to tell the learner when the kernel ended one of this sandbox's processes for
        memory since ``before`` (a count from ``_oom_kills``); "" when it did not."""
        now = self._oom_kills()
        if before is None or now is None or now <= before:
            return ""
        limit = self._group.memory_bytes
        if limit and self._group.reached_memory_limit():
            return (f"your code's processes together used more than their memory limit of "
                    f"{limit / (1 << 20):g} MiB (swap included), so the system stopped one of them")
        return ("the grader ran short of memory, and the system stopped one of your code's processes "
                "(they are the first to go)")

    # -- starting and stopping ---------------------------------------------------

    def _spawn(self) -> str:
        """Start a fresh sandbox with its template interpreter; return the setup nonce."""
        self._stop()
        lim = self.limits
        bubblewrap = self.isolation == "bubblewrap"
        as_root = os.getuid() == 0
        # private to the grader: mkdtemp makes it 0700, under a 0700 base that a
        # later run cleans up even after this one was killed
        root = tempfile.mkdtemp(prefix=f"{os.getpid()}-",
                                dir=jobs_base(traversable=not bubblewrap and as_root))
        as_root = os.getuid() == 0
        if bubblewrap:
            # inputs: read-only in the sandbox; outputs go to its own /job, in memory and size-limited
            job = os.path.join(root, "in")
            os.mkdir(job, 0o755)
            os.chmod(job, 0o755)
        else:
            # without bubblewrap the child (uid 65534 when we are root) writes here itself;
            # the sticky bit keeps it from replacing our files
            os.chmod(root, 0o711)
            job = os.path.join(root, "job")
            os.mkdir(job)
            os.chmod(job, 0o1777)
        shutil.copyfile(_CHILD_SOURCE, os.path.join(job, "_child.py"))
        os.chmod(os.path.join(job, "_child.py"), 0o444)
        if bubblewrap:
            sys_path = [SANDBOX_SITE]
            in_child, out_child = SANDBOX_IN, SANDBOX_JOB
        else:
            site = os.path.join(root, "site")
            os.mkdir(site, 0o755)
            for path in self._site:
                os.symlink(path, os.path.join(site, os.path.basename(path)))
            sys_path = [site]
            in_child = out_child = job
        # + launcher, bwrap's init, shell, template
        group = LearnerGroup.create(int(lim.max_processes) + 5, int(lim.learner_memory_bytes))
        nproc_base = _count_tasks(NOBODY if as_root else os.getuid())
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        refusals = {m: import_message(m, self.allowed_imports) for m in FORBIDDEN_HINTS
                    if m not in self.allowed_imports}
        default = import_message("{name}", self.allowed_imports)
        cfg = {
            "allowed": sorted(self.allowed_imports | {"__future__"}),
            "refusals": refusals, "default_refusal": default,
            "sys_path": sys_path, "req_fd": req_r, "rep_fd": rep_w,
            # without bubblewrap the runtime may sit in a folder (a home folder,
            # say) that uid 65534 cannot read: load NumPy's lazy parts first
            "preload": [] if bubblewrap or "numpy" not in self.allowed_imports else _NUMPY_PRELOAD,
            "drop_uid": NOBODY if as_root else None,
            "limits": {"memory_bytes": int(lim.memory_bytes), "cpu_seconds": int(lim.cpu_seconds),
                       "output_bytes": int(lim.output_bytes), "open_files": int(lim.open_files),
                       # RLIMIT_NPROC counts every process of the uid, other learners' too; where the
                       # learner has a control group, its pids.max is the exact limit and this a backstop
                       "max_processes": int(lim.max_processes) + 1 + nproc_base + (1024 if group.kind else 0)},
        }
        with open(os.path.join(job, "setup.json"), "w") as fh:
            json.dump(cfg, fh)
        os.chmod(os.path.join(job, "setup.json"), 0o444)
        python = [_python_executable(), "-I", "-S", "-X", "utf8",
                  f"{in_child}/_child.py", in_child, out_child]
        if bubblewrap:
            argv = _bwrap_argv(job, self._site, lim.tmp_bytes, lim.job_bytes) + python
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            argv = python
            env = _child_env()
        # appended to, so that emptying it for the next notebook starts it afresh
        out = open(os.path.join(root, "output.txt"), "ab")
        try:
            self._proc = subprocess.Popen(
                group.wrap(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                cwd=job if not bubblewrap else None, pass_fds=(req_r, rep_w),
                start_new_session=True, close_fds=True)
        except OSError as exc:
            for fd in (req_r, req_w, rep_r, rep_w):
                os.close(fd)
            group.remove()
            _rmtree(root)
            raise SandboxError(f"could not start the learner process: {exc}") from exc
        finally:
            out.close()
        group.attach(self._proc.pid)
        os.close(req_r)
        os.close(rep_w)
        os.set_blocking(rep_r, False)
        self._root, self._job, self._group = root, job, group
        self._out = job
        self._req_w, self._rep_r, self._buf = req_w, rep_r, b""
        nonce = secrets.token_hex(16)
        self._send({"op": "setup", "nonce": nonce})
        return nonce

    def _on_ready(self) -> None:
        """The template runs our code only (no learner cell ever): note the sandbox's processes and /job."""
        group = self._group
        self._template = set(group.pids())
        if self.isolation != "bubblewrap":
            return
        python = os.path.realpath(_python_executable())
        for pid in sorted(self._template, reverse=True):
            try:
                if os.path.realpath(f"/proc/{pid}/exe") == python:
                    self._out = f"/proc/{pid}/root{SANDBOX_JOB}"
                    break
            except OSError:
                continue
        else:
            raise SandboxError("the learner interpreter was not found among the sandbox's processes")
        try:
            os.listdir(self._out)
        except OSError as exc:
            raise SandboxError(f"the sandbox's job folder cannot be read: {exc}") from exc

    def _ensure_template(self, deadline: float) -> None:
        """A running sandbox whose template is waiting for a fork request (started if need be)."""
        if self._proc is not None and self._proc.poll() is None and self._template:
            return
        nonce, self._starting = self._starting, None
        if nonce is None or self._proc is None:
            nonce = self._spawn()
        try:
            self._receive(nonce, deadline, accept=("ready",))
            self._on_ready()
        except _Dead as dead:
            tail = self.learner_output(800).strip().splitlines()[-3:]
            self._stop()
            if dead.message == _NOTEBOOK_OUT:
                raise
            raise SandboxError(f"the learner process did not start ({dead.message}): "
                               + " | ".join(tail)) from None

    def _fork(self, cells, skip) -> str:
        """Ask the template for a fresh learner process that runs cells (but those numbered in skip);
        return its nonce."""
        nonce = secrets.token_hex(16)
        if self._root is not None:
            try:   # what the previous learner process printed is not this one's
                os.truncate(os.path.join(self._root, "output.txt"), 0)
            except OSError:
                pass
        self._learner = nonce
        # the leading newline ends whatever part of a request the previous learner process left unread
        self._send({"op": "fork", "nonce": nonce, "cells": list(cells), "skip": sorted(skip)},
                   lead=b"\n")
        return nonce

    def _learner_alive(self) -> bool:
        return self._learner is not None and self._proc is not None and self._proc.poll() is None

    def _end_learner(self) -> None:
        """End the learner process and everything it started; the sandbox and its template stay."""
        if self._learner is None:
            return
        self._learner = None
        if self._group is None or self._proc is None or self._proc.poll() is not None:
            self._stop()
            return
        self._group.kill_all_but(self._template)

    def _kill_strays(self) -> None:
        """Kill what the learner's code left running (forks, setsid'ed or not)."""
        if self._group is not None:
            self._group.kill_strays()

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
        except OSError:
            pass
        if self._group is not None:
            self._group.kill_all()
        try:
            _wait(proc, 10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            log.error("learner process %s did not die", proc.pid)

    def _stop(self) -> None:
        self._starting = None
        if self._req_w is not None:
            try:
                os.close(self._req_w)   # the child sees end of input and leaves
            except OSError:
                pass
            self._req_w = None
        if self._proc is not None:
            # no graceful exit to wait for: the child holds nothing the grader still needs
            # (its output file is written as it goes), and tearing down an interpreter with
            # NumPy loaded takes tens of milliseconds per notebook
            self._kill()   # also ends anything the learner's code forked
            self._proc = None
        if self._group is not None:
            used = self._group.cpu_seconds()
            if used is not None:
                self._cpu_total += used - self._cpu_at_load
            self._cpu_at_load = 0.0
            self._group.remove()
            self._group = None
        self._template = set()
        self._learner = None
        if self._rep_r is not None:
            os.close(self._rep_r)
            self._rep_r = None
        if self._root is not None:
            _rmtree(self._root)
            self._root = self._job = self._out = None

    # -- the protocol pipes ------------------------------------------------------

    def _send(self, obj, lead: bytes = b"") -> None:
        data = lead + json.dumps(obj).encode() + b"\n"
        try:
            while data:
                ready = select.select([], [self._req_w], [], 5.0)[1]
                if not ready:
                    raise _Dead("killed", "the process stopped reading requests")
                data = data[os.write(self._req_w, data):]
        except OSError as exc:
            raise _Dead(*_describe_exit(self._proc.poll(), self.isolation == "bubblewrap")) from exc

    def _receive(self, nonce: str, deadline: float, accept, cpu_limit: float | None = None,
                 extend=None) -> dict:
        """Next well-formed line with this nonce (others are ignored).

        Raises _Dead when the process ends, when ``deadline`` (wall clock) or
        the notebook's deadline passes, or when the group's CPU time passes
        ``cpu_limit``.  When a limit is reached, ``extend()`` (if given) may
        return new (deadline, cpu_limit) to go on with instead (a lazy budget
        measured now), or None.
        """
        reason = _WALL_OUT
        if self._deadline is not None and self._deadline < deadline:
            deadline, reason = self._deadline, _NOTEBOOK_OUT

        def extended():
            nonlocal deadline, cpu_limit, reason, extend
            new = extend() if extend is not None else None
            extend = None
            if new is None:
                return False
            deadline, cpu_limit = new
            reason = _WALL_OUT
            if self._deadline is not None and self._deadline < deadline:
                deadline, reason = self._deadline, _NOTEBOOK_OUT
            return True

        while True:
            while b"\n" in self._buf:
                line, _, self._buf = self._buf.partition(b"\n")
                if not line.strip() or len(line) > _MAX_LINE:
                    continue
                try:
                    msg = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("op") == "ended" and self._learner is not None and msg.get("nonce") == self._learner:
                    # the template reaped the learner process
                    code = msg.get("code")
                    code = code if isinstance(code, int) and not isinstance(code, bool) else None
                    raise _Dead(*_describe_exit(code, False))
                if msg.get("nonce") == nonce and (accept is None or msg.get("op") in accept):
                    return msg
            if len(self._buf) > _MAX_LINE:
                self._buf = b""
            now = time.monotonic()
            if now >= deadline:
                if reason == _WALL_OUT and extended():
                    continue
                raise _Dead("timeout", reason)
            if cpu_limit is not None:
                used = self._group.cpu_seconds()
                if used is not None and used > cpu_limit:
                    if extended():
                        continue
                    raise _Dead("timeout", _CPU_OUT)
            readable = select.select([self._rep_r], [], [], min(deadline - now, 0.02))[0]
            if readable:
                try:
                    chunk = os.read(self._rep_r, 1 << 20)
                except BlockingIOError:
                    chunk = None
                if chunk == b"":
                    raise _Dead(*self._exit_status())
                if chunk:
                    self._buf += chunk
            elif self._proc.poll() is not None:
                # drain what it wrote before it ended
                try:
                    chunk = os.read(self._rep_r, 1 << 20)
                except BlockingIOError:
                    chunk = b""
                if chunk:
                    self._buf += chunk
                    continue
                raise _Dead(*self._exit_status())

    def _exit_status(self) -> tuple[str, str]:
        try:
            rc = _wait(self._proc, 1.0)
        except subprocess.TimeoutExpired:
            rc = None
        return _describe_exit(rc, self.isolation == "bubblewrap")


class LearnerProcess(_Sandbox):
    """One learner's code, running in its own limited child process.

    ``cells`` are the learner's code cells in notebook order.  ``setup()`` runs
    them; ``call()`` calls a function they defined.  After a fatal outcome
    (timeout, killed, out of memory) the next ``call`` starts a fresh child,
    re-running the cells except those that ended or hung the process.
    """

    def __init__(self, cells, limits: Limits | None = None,
                 allowed_imports=ALLOWED_IMPORTS, isolation: str | None = None):
        super().__init__(limits, allowed_imports, isolation)
        self.cells = [str(c) for c in cells]
        self.report: SetupReport | None = None
        self._fatal_cells: dict[int, CellReport] = {}
        self._restarts = 0
        self._expired = False
        self._ran = False                    # whether any cells ran in this sandbox yet

    # -- public API --------------------------------------------------------------

    def setup(self) -> SetupReport:
        """Run the cells (restarting past cells that end or hang the process)."""
        self._end_learner()
        self._ran = True
        if self._deadline is None:
            self._deadline = time.monotonic() + self.limits.notebook_timeout
        runs: dict[int, CellReport] = {}
        names, functions = [], []
        for _attempt in range(len(self.cells) + 2):
            if self._expired or time.monotonic() >= self._deadline:
                self._expired = True
                break
            runs, final = self._start_and_run_cells()
            if final is not None:
                names, functions = final
                break
            self._restarts += 1
        else:  # pragma: no cover - every failed attempt adds a skipped cell
            raise SandboxError("the learner process could not be set up")
        not_run = "error", "the cell did not run"
        if self._expired:
            not_run = "timeout", f"the cell did not run: {self._deadline_text()}"
        cells = []
        for i in range(len(self.cells)):
            cells.append(self._fatal_cells.get(i) or runs.get(i) or CellReport(i, *not_run))
        self.report = SetupReport(tuple(cells), tuple(names), tuple(functions),
                                  self._restarts, self.isolation)
        return self.report

    def load(self, cells) -> None:
        """Take another notebook's cells, to run in a fresh learner process of the same sandbox.

        The learner process of the previous cells ends (with everything it started), the
        sandbox's /tmp and job folder are emptied, and the next ``setup()`` forks a new
        learner process from the template: nothing of the previous cells' namespace, files
        or processes reaches the new one.  Meant for the notebooks of one learner; the
        notebooks of different learners get different sandboxes.
        """
        self._end_learner()
        self.cells = [str(c) for c in cells]
        self.report = None
        self._fatal_cells = {}
        self._restarts = 0
        self._deadline = None
        self._expired = False
        self._cpu_total = 0.0
        # the first cells of a sandbox are charged its start, as when they start it themselves
        self._cpu_at_load = ((self._group.cpu_seconds() if self._group is not None and self._ran else None)
                             or 0.0)

    def call(self, func: str, args=(), kwargs=None, budget_s: float = 1.0,
             return_args: bool = True) -> CallResult:
        """Call ``func(*args, **kwargs)`` in the child within a budget of ``budget_s`` seconds.

        The budget is CPU time of the learner's whole process tree where the
        machine accounts it (``cpu_accounting``), with a wall-clock cap of
        ``max(WALL_MIN_S, WALL_FACTOR x budget_s)``; elsewhere it is wall-clock
        time.  ``budget_s`` may be lazy (an object with a ``floor`` in seconds
        that ``float()`` turns into the budget, ``checks.LazyBudget``): the call
        is held to the floor first, and the budget is computed only when the
        call runs past it.  Processes the call leaves behind are killed when
        it returns.  ``return_args``: also bring back the arguments as the call
        left them (``CallResult.args_after``).
        """
        kwargs = dict(kwargs or {})
        if not self._expired and not self._learner_alive():
            self.setup()
        if self._expired or not self._learner_alive():
            self._end_learner()
            return CallResult("timeout", message=f"{func} was not run: {self._deadline_text()}")
        nonce = secrets.token_hex(16)
        try:
            files = [0]
            request = {"op": "call", "nonce": nonce, "func": str(func),
                       "args": encode(tuple(args), self._job, nonce, files),
                       "kwargs": encode(kwargs, self._job, nonce, files),
                       "return_args": bool(return_args)}
        except OSError as exc:
            raise SandboxError(f"could not write the inputs: {exc}") from exc
        group = self._group
        cpu = group is not None and group.accounts_cpu
        start = time.monotonic()
        cpu0 = group.cpu_seconds() if cpu else None
        oom0 = self._oom_kills()
        lazy = hasattr(budget_s, "floor") and not isinstance(budget_s, (int, float))
        budget = [None if lazy else float(budget_s)]

        def limits(b):
            """(wall-clock deadline, CPU-time limit) of a budget of b seconds."""
            if cpu:
                return start + max(WALL_MIN_S, WALL_FACTOR * b), cpu0 + b
            return start + b, None

        def extend():
            """The limits of the measured budget, when the floor was all that was known yet."""
            if budget[0] is not None:
                return None
            budget[0] = float(budget_s)
            return limits(budget[0])

        deadline, cpu_limit = limits(float(budget_s.floor) if lazy else budget[0])
        try:
            self._send(request)
            reply = self._receive(nonce, deadline, accept=None, cpu_limit=cpu_limit, extend=extend)
        except _Dead as dead:
            seconds = time.monotonic() - start
            used = (group.cpu_seconds() - cpu0) if cpu else None
            oomed = self._oom_since(oom0)
            self._end_learner()
            remove_call_files(nonce, (self._job, self._out))
            if dead.status == "timeout" and dead.message in (_CPU_OUT, _WALL_OUT) and budget[0] is None:
                budget[0] = float(budget_s)
            if oomed:   # ended, or stalled, while the kernel ended its processes for memory
                return CallResult("out-of-memory", message=f"{func} ran out of memory ({oomed})", seconds=seconds,
                                  cpu_seconds=used)
            if dead.status == "timeout" and dead.message == _CPU_OUT:
                msg = f"{func} used {used:.2f} s of CPU time, over its budget of {budget[0]:.2f} s"
            elif dead.status == "timeout" and dead.message == _WALL_OUT and cpu:
                wall = max(WALL_MIN_S, WALL_FACTOR * budget[0])
                msg = (f"{func} did not return within {wall:.1f} s (it used {used:.2f} s of CPU time; "
                       "it was waiting or sleeping)")
            elif dead.status == "timeout" and dead.message == _WALL_OUT:
                msg = f"{func} did not finish within its time budget of {budget[0]:.2f} s"
            elif dead.status == "timeout" and dead.message == _NOTEBOOK_OUT:
                self._expired = True
                msg = f"{func} was stopped: {self._deadline_text()}"
            else:
                msg = f"{dead.message} while running {func}"
            return CallResult(dead.status, message=msg, seconds=seconds, cpu_seconds=used)
        seconds = time.monotonic() - start
        used = (group.cpu_seconds() - cpu0) if cpu else None
        self._kill_strays()
        try:
            res = self._result(func, reply, nonce, seconds)
            res.cpu_seconds = used
            oomed = self._oom_since(oom0)
            if oomed:
                # a process of the call was ended for memory: whatever came back is not graded, and
                # the learner process starts afresh
                self._end_learner()
                return CallResult("out-of-memory", None, res.args_after, f"{func} ran out of memory ({oomed})",
                                  seconds, used)
            return res
        finally:
            remove_call_files(nonce, (self._job, self._out))

    def _deadline_text(self) -> str:
        return (f"the notebook used up its total time of {self.limits.notebook_timeout:g} s "
                "(all cells and calls together)")

    # -- setup -------------------------------------------------------------------

    def _start_and_run_cells(self):
        """One start: returns (per-cell reports, (names, functions) or None if it must restart)."""
        lim = self.limits
        runs: dict[int, CellReport] = {}
        start = time.monotonic()
        setup_deadline = start + lim.setup_timeout
        try:
            reused = self._proc is not None and self._proc.poll() is None and bool(self._template)
            self._ensure_template(setup_deadline)
            try:
                nonce = self._fork(self.cells, self._fatal_cells)
                self._receive(nonce, setup_deadline, accept=("ready",))
            except _Dead as dead:
                if not reused or dead.message == _NOTEBOOK_OUT:
                    raise
                # the template of a sandbox used before is gone (the previous cells may have ended
                # it): once more in a fresh sandbox
                self._stop()
                self._ensure_template(setup_deadline)
                nonce = self._fork(self.cells, self._fatal_cells)
                self._receive(nonce, setup_deadline, accept=("ready",))
        except _Dead as dead:
            tail = self.learner_output(800).strip().splitlines()[-3:]
            self._stop()
            if dead.message == _NOTEBOOK_OUT:
                self._expired = True
                return runs, ([], [])
            raise SandboxError(f"the learner process did not start ({dead.message}): "
                               + " | ".join(tail)) from None
        # the template and this learner process, kept when strays are killed; the learner
        # process runs no cell before it is told to go on
        self._group.protect()
        try:
            self._send({"op": "continue", "nonce": nonce})
        except _Dead:
            pass  # noticed by the next receive
        current, cell_start, cell_oom = None, 0.0, None
        last_done, last_start = None, 0.0     # the cell that reported back last, and its start
        while True:
            deadline = setup_deadline if current is None else min(
                setup_deadline, cell_start + lim.cell_timeout)
            try:
                msg = self._receive(nonce, deadline, accept=("cell-start", "cell-done", "setup-done"))
            except _Dead as dead:
                oomed = self._oom_since(cell_oom) if current is not None else ""
                self._end_learner()
                if dead.message == _NOTEBOOK_OUT:
                    self._expired = True
                    if current is not None:
                        runs[current] = CellReport(current, "timeout", f"the cell was stopped: "
                                                   f"{self._deadline_text()}", (), time.monotonic() - cell_start)
                    return runs, ([], [])
                if current is None and last_done is not None and dead.status != "timeout":
                    # what the last cell did (ending the template, say) took effect only after the
                    # cell reported back: that cell ended the process, and is skipped from now on
                    runs.pop(last_done, None)
                    self._fatal_cells[last_done] = CellReport(
                        last_done, dead.status, f"{dead.message}, right after this cell ran (this cell "
                        "was skipped afterwards)", (), time.monotonic() - last_start)
                    return runs, None
                if current is None:
                    if dead.status == "timeout":
                        raise SandboxError("the learner process did not finish its setup")
                    raise SandboxError(f"the learner process ended between cells: {dead.message}")
                seconds = time.monotonic() - cell_start
                if oomed:   # ended, or stalled, while the kernel ended its processes for memory
                    self._fatal_cells[current] = CellReport(
                        current, "out-of-memory", f"{oomed} (this cell was skipped afterwards)", (), seconds)
                elif dead.status == "timeout":
                    if cell_start + lim.cell_timeout <= setup_deadline:
                        text = f"the cell ran longer than its limit of {lim.cell_timeout:g} s"
                    else:
                        text = f"the cells together ran longer than {lim.setup_timeout:g} s"
                    self._fatal_cells[current] = CellReport(current, "timeout", text, (), seconds)
                else:
                    self._fatal_cells[current] = CellReport(
                        current, dead.status, f"{dead.message} (this cell was skipped afterwards)",
                        (), seconds)
                return runs, None
            op = msg.get("op")
            index = msg.get("index")
            if op == "setup-done":
                return runs, (_str_list(msg.get("names"), 1000), _str_list(msg.get("functions"), 1000))
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.cells):
                continue
            if op == "cell-start":
                current, cell_start, cell_oom = index, time.monotonic(), self._oom_kills()
            elif op == "cell-done" and index == current:
                status = msg.get("status")
                if status not in ("ok", "error", "out-of-memory"):
                    status = "error"
                message = msg.get("message")
                message = _printable(message, 300) if isinstance(message, str) else ""
                oomed = self._oom_since(cell_oom)
                if oomed:   # a process the cell started was ended for memory
                    status, message = "out-of-memory", oomed
                defined = tuple(_str_list(msg.get("defined"), 200))
                runs[index] = CellReport(index, status, message, defined, time.monotonic() - cell_start)
                current, last_done, last_start = None, index, cell_start
                # what the cell started dies with it; then the child may run the next cell
                self._kill_strays()
                try:
                    self._send({"op": "continue", "nonce": nonce})
                except _Dead:
                    pass  # noticed by the next receive

    # -- the wire protocol (autograder.wire) -------------------------------------

    def _result(self, func: str, reply: dict, nonce: str, seconds: float) -> CallResult:
        res = read_reply(func, reply, nonce, seconds, self._out, self.limits)
        if res.status == "out-of-memory":
            # the process may hold on to the memory: start afresh next time
            self._end_learner()
        return res
