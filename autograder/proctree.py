"""The processes of one learner: counted, timed and killed as one group.

A learner's code may fork, call ``os.setsid()`` and leave busy processes
behind.  Process groups and sessions do not hold such processes; a control
group (cgroup) does, and the kernel accounts the CPU time of every process in
it.  ``LearnerGroup`` gives each learner process tree a cgroup of its own when
the machine lets the grader create one (cgroup v1 ``cpu``/``cpuacct``/``pids``
hierarchies, or a cgroup v2 tree with the ``cpu`` and ``pids`` controllers),
so that:

* concurrent learners share the CPU fairly: the scheduler splits it between
  groups, not between processes, so sixty forked processes weigh what one
  does (``cpu.shares`` / ``cpu.weight`` equal for all learners);
* the CPU time of a call is the group's, measured by the kernel, whatever
  the learner code forks or claims, and whatever classmates do;
* the number of processes is capped per learner (``pids.max``), not per uid;
* the memory of all the learner's processes together is capped, swap included
  (``memory.max`` and ``memory.swap.max``, or cgroup v1's ``memory.limit_in_bytes``
  and ``memory.memsw.limit_in_bytes``), where the memory controller can be used:
  a learner that forks many processes, each under its address-space limit, meets
  the kernel's OOM killer inside their own group, and ``oom_kills`` says so;
* every process of the learner can be found and killed.

Every learner process, with or without a cgroup, starts with an OOM score of
1000 (``/proc/<pid>/oom_score_adj``), set by the launcher before any learner
code runs: when the memory of the grader's own group or of the machine runs out,
the kernel ends learner processes first, never the grader.  Set by a grader
running as root, the learner cannot lower it.

Where no cgroup can be created, ``LearnerGroup.create`` returns a group that
finds the learner's processes by their PID namespace (bubblewrap's
``--unshare-pid``) or as descendants of the learner process, and has no CPU
accounting (``cpu_seconds`` is None): budgets are then wall-clock times.

The grader's groups live under one folder per grading process,
``autograder-<pid>``; ``remove_stale_groups`` removes those of grading
processes that are gone (a grader killed with ``kill -9``), killing what is
left in them first.
"""
from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import time

__all__ = ["LearnerGroup", "remove_stale_groups", "cgroup_mode", "memory_limited", "memory_available",
           "die_with_parent"]

log = logging.getLogger(__name__)

_PREFIX = "autograder-"
#: the OOM score adjustment of every learner process: the kernel's first victims
OOM_SCORE_ADJ = 1000


def _mounts():
    """{fstype: [(mount point, super options)]} of cgroup file systems."""
    found = {"cgroup": [], "cgroup2": []}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, rest = left.split(), right.split()
                if len(fields) >= 5 and rest and rest[0] in found:
                    found[rest[0]].append((fields[4], rest[2] if len(rest) > 2 else ""))
    except OSError:
        pass
    return found


def _own_paths():
    """{controller or '' (v2): path of this process's cgroup}."""
    paths = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            for line in fh:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for ctl in (parts[1].split(",") if parts[1] else [""]):
                        paths[ctl] = parts[2]
    except OSError:
        pass
    return paths


def _writable_dir(path):
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _layout():
    """('v1', {'cpu': dir, 'cpuacct': dir, 'pids': dir[, 'memory': dir]}) or ('v2', dir) or
    (None, None): the folders under which this grader may create its groups (the memory
    hierarchy only where it is mounted and writable)."""
    mounts, own = _mounts(), _own_paths()
    v1 = {}
    for point, opts in mounts["cgroup"]:
        ctls = set(opts.split(","))
        for ctl in ("cpu", "cpuacct", "pids", "memory"):
            if ctl in ctls and ctl not in v1:
                base = os.path.join(point, own.get(ctl, "/").lstrip("/"))
                if _writable_dir(base):
                    v1[ctl] = base
    if {"cpu", "cpuacct", "pids"} <= set(v1):
        return "v1", v1
    for point, _opts in mounts["cgroup2"]:
        base = os.path.join(point, own.get("", "/").lstrip("/"))
        try:
            with open(os.path.join(base, "cgroup.controllers"), encoding="utf-8") as fh:
                available = set(fh.read().split())
        except OSError:
            continue
        if {"cpu", "pids"} <= available and _writable_dir(base):
            return "v2", base
    return None, None


_LAYOUT = None


_MEMORY = None   # whether learner groups get a memory limit (found with the layout)


def cgroup_mode():
    """'cgroup-v1', 'cgroup-v2' or 'none' (what LearnerGroup.create will use)."""
    global _LAYOUT, _MEMORY
    if _LAYOUT is None:
        kind, where = _layout()
        memory = False
        if kind is not None:
            memory = _probe(kind, where, memory=True)
            if not memory:
                if kind == "v1":
                    where = {ctl: d for ctl, d in where.items() if ctl != "memory"}
                if not _probe(kind, where, memory=False):
                    kind, where = None, None
        _LAYOUT, _MEMORY = (kind, where), memory
    return {"v1": "cgroup-v1", "v2": "cgroup-v2"}.get(_LAYOUT[0], "none")


def memory_available():
    """The memory this process and its children may use, in bytes: the machine's, or less where
    its own memory cgroup (or one above it) has a limit, swap not counted."""
    best = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    best = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    mounts, own = _mounts(), _own_paths()
    limits = []
    for point, opts in mounts["cgroup"]:
        if "memory" in opts.split(",") and "memory" in own:
            try:
                stat = os.path.join(point, own["memory"].lstrip("/"), "memory.stat")
                limits.append(_counter(stat, "hierarchical_memory_limit"))
            except (OSError, ValueError):
                pass
    for point, _opts in mounts["cgroup2"]:
        if "" not in own:
            continue
        folder = os.path.join(point, own[""].lstrip("/"))
        while folder.startswith(point.rstrip("/") + "/") or folder == point:
            try:
                text = _read(os.path.join(folder, "memory.max")).strip()
                if text.isdigit():
                    limits.append(int(text))
            except OSError:
                pass
            if folder.rstrip("/") == point.rstrip("/"):
                break
            folder = os.path.dirname(folder.rstrip("/"))
    for limit in limits:
        if limit is not None and (best is None or limit < best):
            best = limit
    return best


def memory_limited():
    """Whether each learner's processes get a memory limit together (a cgroup memory controller)."""
    cgroup_mode()
    return bool(_MEMORY)


def _write(path, text):
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def _read(path):
    with open(path, encoding="ascii") as fh:
        return fh.read()


def _counter(path, key):
    """The number after key in a cgroup file of 'key value' lines (None when it has no such line)."""
    for line in _read(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


_made_runs = set()


def _remove_own_runs():
    for d in _made_runs:
        try:
            os.rmdir(d)
        except OSError:
            pass


def _run_dirs(kind, where):
    """This grading process's folders (created on first use, removed at exit when empty)."""
    name = f"{_PREFIX}{os.getpid()}"
    if not _made_runs:
        atexit.register(_remove_own_runs)
    if kind == "v1":
        dirs = {ctl: os.path.join(base, name) for ctl, base in where.items()}
        for d in dict.fromkeys(dirs.values()):
            os.makedirs(d, exist_ok=True)
            _made_runs.add(d)
        return dirs
    d = os.path.join(where, name)
    os.makedirs(d, exist_ok=True)
    _made_runs.add(d)
    for controllers in ("+cpu +pids +memory", "+cpu +pids"):
        try:
            _write(os.path.join(d, "cgroup.subtree_control"), controllers)
            break
        except OSError:
            continue
    return {"": d}


#: the memory limit the probe sets (any value the kernel takes will do)
_PROBE_MEMORY = 64 << 20


def _probe(kind, where, memory):
    """Can a group be made (with a memory limit when ``memory``), joined by nothing, and removed here?"""
    try:
        group = _make_group(kind, where, 8, _PROBE_MEMORY if memory else None)
    except OSError as exc:
        log.info("no cgroup%s for learner processes: %s", " memory limit" if memory else "", exc)
        return False
    group.remove()
    return True


def _set_memory(kind, dirs, memory_bytes):
    """Cap the group's memory at memory_bytes, swap included (OSError where the kernel refuses)."""
    limit = str(int(memory_bytes))
    if kind == "v1":
        folder = dirs.get("memory")
        if folder is None:
            raise OSError("the cgroup v1 memory hierarchy is not available")
        _write(os.path.join(folder, "memory.limit_in_bytes"), limit)
        memsw = os.path.join(folder, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):   # absent where the kernel does not account swap: no swap to count
            _write(memsw, limit)
        return
    folder = dirs[""]
    if not os.path.exists(os.path.join(folder, "memory.max")):
        raise OSError("the cgroup v2 memory controller is not enabled for the grader's groups")
    _write(os.path.join(folder, "memory.max"), limit)
    swap = os.path.join(folder, "memory.swap.max")
    if os.path.exists(swap):
        _write(swap, "0")


def _make_group(kind, where, max_processes, memory_bytes=None):
    run = _run_dirs(kind, where)
    leaf = "learner-" + secrets.token_hex(6)
    dirs = {ctl: os.path.join(d, leaf) for ctl, d in run.items()}
    made = []
    try:
        for d in dict.fromkeys(dirs.values()):  # cpu and cpuacct may share one hierarchy
            os.mkdir(d, 0o755)
            made.append(d)
        if kind == "v1":
            _write(os.path.join(dirs["pids"], "pids.max"), str(int(max_processes)))
            _write(os.path.join(dirs["cpu"], "cpu.shares"), "1024")
        else:
            _write(os.path.join(dirs[""], "pids.max"), str(int(max_processes)))
            _write(os.path.join(dirs[""], "cpu.weight"), "100")
        if memory_bytes is not None:
            _set_memory(kind, dirs, memory_bytes)
    except OSError:
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
        raise
    return LearnerGroup(kind, dirs)


def _pid_alive(pid):
    """True while pid runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state not in ([b"Z"], [b"X"])


def _children(pid):
    """Direct children of pid (from every thread's children list)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                out.extend(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return out


def _ns_of(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


class LearnerGroup:
    """The processes of one learner process tree (see the module docstring).

    ``wrap(argv)`` returns a command line that joins the group before it
    runs argv; ``attach(pid)`` records the process started that way;
    ``protect()`` marks the processes present now as the ones that
    ``kill_strays`` keeps (the sandbox launcher and the learner's interpreter);
    ``kill_all`` ends every process; ``remove`` deletes the group.
    """

    def __init__(self, kind, dirs):
        self.kind = kind            # 'v1', 'v2' or None (no cgroup)
        self.dirs = dirs
        self.root_pid = None
        self._protected = set()
        self._ns = None
        self._usage_fd = None   # the CPU-time file, kept open: it is read many times a second
        self._oom_fd = None     # the file that counts OOM kills, kept open: read twice per call
        self.memory_bytes = None    # the memory limit of the group's processes together, if any
        self._limit_hits = 0        # cgroup v2: times the limit was reached, when last asked

    # -- making ------------------------------------------------------------

    @classmethod
    def create(cls, max_processes, memory_bytes=None):
        """A group in a new cgroup when the machine allows it, else a process-tree group.

        ``memory_bytes`` caps the memory of all the group's processes together, swap
        included, where the machine has a cgroup memory controller (``memory_limited``);
        ``memory_bytes`` of the group is then that limit, else None.
        """
        cgroup_mode()
        kind, where = _LAYOUT
        if kind is not None:
            memory = int(memory_bytes) if memory_bytes is not None and _MEMORY else None
            try:
                group = _make_group(kind, where, max_processes, memory)
                group.memory_bytes = memory
                return group
            except OSError as exc:
                log.warning("could not create a cgroup for a learner process: %s", exc)
        return cls(None, {})

    @property
    def accounts_cpu(self):
        return self.kind is not None

    def _procs_files(self):
        return [os.path.join(d, "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    def wrap(self, argv):
        """argv, started by a shell that first makes itself the kernel's first choice when memory
        runs out (an OOM score of 1000, inherited by everything it starts) and moves itself into
        the group, then execs argv."""
        # (a kernel that has no OOM score to set does not stop the learner from starting)
        first = f"{{ echo {OOM_SCORE_ADJ} > /proc/self/oom_score_adj; }} 2>/dev/null; "
        joins = "".join(f"echo $$ > '{p}' && " for p in self._procs_files())
        return ["/bin/sh", "-c", first + joins + 'exec "$@"', "sh", *argv]

    def attach(self, pid):
        self.root_pid = pid

    def protect(self):
        """Keep the processes present now (launcher, learner interpreter) when killing strays."""
        self._protected = set(self.pids())
        if self.kind is None and self.root_pid is not None:
            members = [p for p in self._protected if p != self.root_pid]
            self._ns = _ns_of(members[-1]) if members else None

    # -- reading -----------------------------------------------------------

    def pids(self):
        """Every live process of the group (the launcher included).

        With cgroups, one hierarchy's list is read, the pids controller's when there is one:
        every process of the group joined each hierarchy, and a learner's process cannot
        leave one (the cgroup file systems are not in its sandbox, and it runs without
        privileges), so each lists the same processes.  Reading one file instead of each
        matters: this runs after every call of learner code.  (The file is opened anew each
        time: an open cgroup v1 list is a snapshot that a re-read may reuse for a second.)
        """
        if self.kind is not None:
            files = self._procs_files()
            pids_dir = self.dirs.get("pids")
            if pids_dir is not None:
                first = os.path.join(pids_dir, "cgroup.procs")
                files = [first] + [f for f in files if f != first]
            for path in files:
                try:
                    return sorted({int(p) for p in _read(path).split()})
                except (OSError, ValueError):
                    continue
            return []
        if self.root_pid is None:
            return []
        found, todo = set(), [self.root_pid]
        while todo:
            pid = todo.pop()
            if pid in found or not _pid_alive(pid):
                continue
            found.add(pid)
            todo.extend(_children(pid))
        if self._ns is not None:  # orphans re-parented inside the PID namespace stay in it
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) not in found and _ns_of(int(entry)) == self._ns \
                        and _pid_alive(int(entry)):
                    found.add(int(entry))
        return sorted(found)

    def _usage(self, path):
        if self._usage_fd is None:
            self._usage_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(self._usage_fd, 4096, 0).decode("ascii")

    def cpu_seconds(self):
        """CPU time used so far by every process that was ever in the group (None without cgroups)."""
        try:
            if self.kind == "v1":
                return int(self._usage(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"))) / 1e9
            if self.kind == "v2":
                for line in self._usage(os.path.join(self.dirs[""], "cpu.stat")).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
        except (OSError, ValueError):
            return None
        return None

    def oom_kills(self):
        """How many of the group's processes the kernel's OOM killer ended so far; None when
        unknown (no memory controller, or a kernel that does not count them)."""
        if self.kind == "v1" and "memory" in self.dirs:
            path = os.path.join(self.dirs["memory"], "memory.oom_control")
        elif self.kind == "v2":
            path = os.path.join(self.dirs[""], "memory.events")
        else:
            return None
        try:
            if self._oom_fd is None:
                self._oom_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            for line in os.pread(self._oom_fd, 4096, 0).decode("ascii").splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return None
        return None

    def reached_memory_limit(self):
        """Whether the group's memory reached its own limit since this was last asked (else an
        OOM kill came from memory running out above the group: the grader's group, the machine)."""
        try:
            if self.kind == "v1" and "memory" in self.dirs:
                reached = False
                for prefix in ("memory.", "memory.memsw."):
                    path = os.path.join(self.dirs["memory"], prefix)
                    if not os.path.exists(path + "failcnt"):
                        continue
                    # some kernels do not count failures: a peak at the limit is one too
                    reached |= (int(_read(path + "failcnt")) > 0
                                or int(_read(path + "max_usage_in_bytes")) >= int(_read(path + "limit_in_bytes")))
                    _write(path + "failcnt", "0")
                    _write(path + "max_usage_in_bytes", "0")   # the peak starts again from the usage now
                return reached
            if self.kind == "v2":
                hits = _counter(os.path.join(self.dirs[""], "memory.events"), "max") or 0
                reached, self._limit_hits = hits > self._limit_hits, hits
                return reached
        except (OSError, ValueError):
            pass
        return False

    # -- killing -----------------------------------------------------------

    def kill_strays(self):
        """Kill every process of the group but the protected ones; the number killed."""
        return self._kill(keep=self._protected)

    def kill_all(self):
        return self._kill(keep=set())

    def kill_all_but(self, keep):
        """Kill every process of the group but those in keep; the number killed."""
        return self._kill(keep=set(keep))

    def _kill(self, keep):
        if self.kind == "v2" and not keep:
            try:
                _write(os.path.join(self.dirs[""], "cgroup.kill"), "1")
            except OSError:
                pass
        killed = 0
        deadline = time.monotonic() + 5.0
        while True:
            targets = [p for p in self.pids() if p not in keep]
            if not targets:
                return killed
            for pid in targets:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() > deadline:
                log.error("learner processes %s did not die", targets[:10])
                return killed
            time.sleep(0.005)

    def remove(self):
        """Kill what is left and delete the group's folders."""
        for fd in (self._usage_fd, self._oom_fd):
            if fd is not None:
                os.close(fd)
        self._usage_fd = self._oom_fd = None
        if self.kind is None:
            if self.root_pid is not None:
                self.kill_all()
            return
        self.kill_all()
        for d in dict.fromkeys(self.dirs.values()):
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still exiting
                    time.sleep(0.01)


_PR_SET_PDEATHSIG = 1
#: the environment variable that tells the grading workers' fork server whose child it is
FORK_SERVER_PARENT = "AUTOGRADER_FORK_SERVER_PARENT"


def die_with_parent(parent_pid):
    """End this process (SIGKILL) when the thread that started it ends, as the kernel's
    parent-death signal does (Linux); end it now if its parent, parent_pid, is gone already.

    The signal is tied to the thread that forked this process, is not inherited by this
    process's own children, and is cleared when a process changes its user: each process of
    a run sets it for itself (the grading workers and their fork server), and the learner's
    processes die with their sandbox instead (bubblewrap's ``--die-with-parent``, its PID
    namespace).  Returns whether the signal could be set.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)   # the parent ended before the signal was set: it would never come
    return armed


def remove_stale_groups():
    """Kill and remove the groups of grading processes that no longer run."""
    cgroup_mode()
    kind, where = _LAYOUT
    if kind is None:
        return 0
    bases = list(where.values()) if kind == "v1" else [where]
    removed = 0
    for base in bases:
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            if not name.startswith(_PREFIX) or not name[len(_PREFIX):].isdigit():
                continue
            if int(name[len(_PREFIX):]) == os.getpid() or _pid_alive(int(name[len(_PREFIX):])):
                continue
            run = os.path.join(base, name)
            for leaf in os.listdir(run) if os.path.isdir(run) else []:
                path = os.path.join(run, leaf)
                if os.path.isdir(path):
                    group = LearnerGroup(kind, {"" if kind == "v2" else "any": path})
                    group.kill_all()
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
            try:
                os.rmdir(run)
                removed += 1
            except OSError:
                pass
    return removed
