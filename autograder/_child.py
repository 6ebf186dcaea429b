"""Bootstrap of the grading sandbox: runs learner cells and answers call requests.

This file is executed as a script by an isolated interpreter
(``python -I -S _child.py IN_DIR OUT_DIR``) inside the sandbox that
``autograder/sandbox.py`` builds.  It is the only file of the course that runs
next to learner code, so it imports nothing but the standard library and
NumPy, and nothing it says is trusted: the parent only takes arrays back from
it, as ``.npy`` files read with ``allow_pickle=False``, and computes every
verdict itself.

Order of events: read ``setup.json`` from the input folder (read-only under
bubblewrap; arrays written back go to the output folder); set resource limits;
read the setup nonce from the request pipe; import NumPy and the allowed
modules; drop root privileges (to uid/gid 65534) so that the process limit
applies; install the import guard.  This process is then the *template*: it
never runs learner code.  For each ``fork`` request (one per notebook, and one
per restart after a cell that ended or hung its process) it empties the
sandbox's ``/tmp`` and ``/job``, forks a *learner process* and waits for it to
end, then says so (``ended``, with the exit code).  The learner process runs
the request's cells one by one in a fresh namespace, reporting each one and
waiting for the parent's ``continue`` (the parent kills what the cell left
running first); then it serves call requests until the pipe closes or the
parent kills it.

Messages are JSON lines on two dedicated pipes (requests in, replies out).  A
reply carries the nonce of the request it answers; the parent ignores any
other line, which is all learner code can forge.
"""
import builtins
import json
import os
import resource
import sys
import traceback


def _set_limits(lim):
    def setl(which, soft, hard=None):
        hard = soft if hard is None else hard
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            # cannot raise above an inherited hard limit: keep the lower one
            cur = resource.getrlimit(which)[1]
            if cur != resource.RLIM_INFINITY:
                resource.setrlimit(which, (min(soft, cur), cur))

    setl(resource.RLIMIT_CORE, 0)
    setl(resource.RLIMIT_AS, lim["memory_bytes"])
    setl(resource.RLIMIT_CPU, lim["cpu_seconds"], lim["cpu_seconds"] + 5)
    setl(resource.RLIMIT_FSIZE, lim["output_bytes"])
    setl(resource.RLIMIT_NOFILE, lim["open_files"])
    setl(resource.RLIMIT_NPROC, lim["max_processes"])


def _drop_privileges(uid):
    if uid is None or os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("could not drop root privileges")


def _one_line(exc):
    """'ValueError: shapes (2,3) and (4,) do not match', never more than 300 chars."""
    try:
        lines = traceback.format_exception_only(type(exc), exc)
        text = lines[-1].strip() if lines else type(exc).__name__
    except BaseException:  # a learner's __str__ may raise anything
        try:
            text = type(exc).__name__
        except BaseException:
            text = "exception"
    text = " ".join(text.split())
    return text[:300]


class _Channel:
    """JSON lines over the two protocol pipes."""

    def __init__(self, req_fd, rep_fd):
        self.req = os.fdopen(req_fd, "rb", buffering=0)
        self.rep_fd = rep_fd
        self.buf = b""
        self._write = os.write
        self._dumps = json.dumps

    def send(self, obj):
        # the leading newline ends any half line learner code may have written
        data = b"\n" + self._dumps(obj).encode("utf-8") + b"\n"
        while data:
            try:
                n = self._write(self.rep_fd, data)
            except BrokenPipeError:
                os._exit(0)
            data = data[n:]

    def receive(self):
        while b"\n" not in self.buf:
            chunk = self.req.read(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def receive_fork(self):
        """The next fork request, skipping what an ended learner process left unread (None at the end)."""
        while True:
            try:
                msg = self.receive()
            except ValueError:     # a part of a request line
                continue
            if msg is None or (isinstance(msg, dict) and msg.get("op") == "fork"):
                return msg


def _install_import_guard(allowed, refusals, default_refusal):
    """Refuse imports written in learner code (code compiled from text, e.g.
    '<cell 3>' or '<string>'); imports made by NumPy or the standard library
    (code read from real files) are untouched."""
    original = builtins.__import__
    getframe = sys._getframe

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        filename = getframe(1).f_code.co_filename
        if filename.startswith("<") and not filename.startswith("<frozen"):
            if level:
                raise ImportError("relative imports are not allowed in graded code")
            top = str(name).partition(".")[0]
            if top not in allowed:
                msg = refusals.get(top) or default_refusal.replace("{name}", str(name))
                raise ImportError(msg, name=str(name))
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import


def _reaper():
    """Collect the exit status of children the parent killed (zombies count as processes)."""
    waitpid, nohang = os.waitpid, os.WNOHANG

    def reap():
        while True:
            try:
                pid, _status = waitpid(-1, nohang)
            except BaseException:
                return
            if pid == 0:
                return
    return reap


def _empty(folder):
    """Remove everything in folder (what a learner process left in /tmp or /job)."""
    for top, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            path = os.path.join(top, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                os.rmdir(path)


def _make_writable(folder):
    """Give the owner back the right to enter and empty every folder below folder."""
    for top, dirs, _files in os.walk(folder, onerror=None):
        for name in dirs:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)


def main():
    job_in = sys.argv[1]
    job = sys.argv[2] if len(sys.argv) > 2 else job_in
    with open(os.path.join(job_in, "setup.json"), "rb") as fh:
        cfg = json.loads(fh.read())
    _set_limits(cfg["limits"])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    sys.path[:0] = cfg["sys_path"]
    sys.dont_write_bytecode = True

    chan = _Channel(cfg["req_fd"], cfg["rep_fd"])
    first = chan.receive()
    if not first or first.get("op") != "setup":
        return
    nonce = first["nonce"]

    # import what learners may use while the runtime is still readable (without
    # bubblewrap it may live in a folder that uid 65534 cannot enter), then drop
    import numpy as np
    from numpy.lib import format as npy_format
    for name in list(cfg["allowed"]) + list(cfg.get("preload", [])):
        try:
            __import__(name)
        except ImportError:
            pass
    _drop_privileges(cfg["drop_uid"])

    asarray, ndarray, generic = np.asarray, np.ndarray, np.generic
    nd_view, nd_copy = np.ndarray.view, np.ndarray.copy
    write_array = npy_format.write_array
    numeric_kinds = frozenset("biufc")

    def npy_path(prefix, req_nonce, k):
        return os.path.join(job_in if prefix == "in" else job, f"{prefix}-{req_nonce}-{k}.npy")

    def load(node, req_nonce):
        """Rebuild the parent's arguments from the request tree and .npy files."""
        kind, val = next(iter(node.items()))
        if kind == "a":
            # raw values in C order, their dtype and shape in the request (written by the grader)
            dtype, shape = np.dtype(node["dtype"]), tuple(node["shape"])
            count = 1
            for n in shape:
                count *= n
            with open(npy_path("in", req_nonce, val), "rb") as fh:
                arr = np.fromfile(fh, dtype=dtype, count=count).reshape(shape)
            return arr[()] if node.get("scalar") else arr
        if kind in ("i", "f", "b", "s"):
            return val
        if kind == "c":
            return complex(val[0], val[1])
        if kind == "n":
            return None
        if kind == "t":
            return tuple(load(v, req_nonce) for v in val)
        if kind == "l":
            return [load(v, req_nonce) for v in val]
        if kind == "d":
            return {k: load(v, req_nonce) for k, v in val}
        raise ValueError(f"unknown node {kind!r}")

    class Dumper:
        """Write the leaves of a value as .npy files; describe the rest by type."""

        def __init__(self, prefix, req_nonce):
            self.prefix, self.req_nonce, self.count, self.nodes = prefix, req_nonce, 0, 0

        def array(self, arr, scalar=False):
            k = self.count
            self.count += 1
            path = npy_path(self.prefix, self.req_nonce, k)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "wb") as fh:
                write_array(fh, arr, allow_pickle=False)
            return {"a": k, "scalar": True} if scalar else {"a": k}

        def __call__(self, obj, depth=0):
            self.nodes += 1
            if depth > 32 or self.nodes > 100000:
                return {"x": "a structure nested too deeply or too large"}
            t = type(obj)
            if obj is None:
                return {"n": None}
            if t is bool:
                return {"b": obj}
            if t is int:
                return {"i": obj} if abs(obj) < 2 ** 63 else {"f": float(obj)}
            if t is float:
                return {"f": obj}
            if t is complex:
                return {"c": [obj.real, obj.imag]}
            if t is str:
                return {"s": obj[:200]}
            if issubclass(t, ndarray):
                # a plain copy: subclasses and their overridden methods stay behind
                plain = nd_copy(nd_view(obj, ndarray))
                if plain.dtype.kind not in numeric_kinds or plain.dtype.fields is not None:
                    return {"x": f"an ndarray of dtype {plain.dtype}"}
                return self.array(plain)
            if issubclass(t, generic):
                plain = asarray(nd_view(asarray(obj), ndarray))
                if plain.dtype.kind not in numeric_kinds:
                    return {"x": f"a NumPy scalar of dtype {plain.dtype}"}
                return self.array(nd_copy(plain), scalar=True)
            if t is tuple:
                return {"t": [self(v, depth + 1) for v in obj]}
            if t is list:
                return {"l": [self(v, depth + 1) for v in obj]}
            if t is dict:
                if all(type(k) is str for k in obj):
                    return {"d": [[k, self(v, depth + 1)] for k, v in obj.items()]}
                return {"x": "a dict with keys that are not strings"}
            name = getattr(t, "__name__", "object")
            return {"x": f"a {str(name)[:60]} object"}

    reap = _reaper()
    _install_import_guard(frozenset(cfg["allowed"]), cfg["refusals"], cfg["default_refusal"])

    def quiet_print(*args, **kwargs):
        return None

    def told_to_go_on():
        """Whether the parent's next message is its 'continue'."""
        try:
            msg = chan.receive()
        except BaseException:
            return False
        return bool(msg) and msg.get("op") == "continue"

    def learner(req):
        """The learner process: run the request's cells in a fresh namespace, then answer calls."""
        nonce = req["nonce"]
        ns = {"__name__": "__main__", "__builtins__": builtins}
        skip = set(req.get("skip") or ())
        chan.send({"nonce": nonce, "op": "ready"})
        # no learner code before the parent has noted this process (it keeps it when it kills
        # what a cell left running)
        if not told_to_go_on():
            return
        for index, source in enumerate(req.get("cells") or ()):
            if index in skip:
                continue
            chan.send({"nonce": nonce, "op": "cell-start", "index": index})
            before = {k: id(v) for k, v in ns.items()}
            status, message = "ok", ""
            try:
                code = compile(source, f"<cell {index}>", "exec", dont_inherit=True)
                exec(code, ns)
            except MemoryError as exc:
                status, message = "out-of-memory", _one_line(exc)
            except BaseException as exc:  # SystemExit, KeyboardInterrupt and the like too
                status, message = "error", _one_line(exc)
            try:
                defined = [k for k, v in list(ns.items())
                           if type(k) is str and not k.startswith("__") and before.get(k) != id(v)]
            except BaseException:
                defined = []
            chan.send({"nonce": nonce, "op": "cell-done", "index": index,
                       "status": status, "message": message, "defined": defined[:200]})
            if not told_to_go_on():
                return
            reap()
        try:
            names = sorted(k for k in ns if type(k) is str and not k.startswith("__"))[:1000]
            functions = [k for k in names if callable(ns[k])]
        except BaseException:
            names, functions = [], []
        chan.send({"nonce": nonce, "op": "setup-done", "names": names, "functions": functions})

        while True:
            try:
                req = chan.receive()
            except BaseException:
                return
            if req is None or req.get("op") != "call":
                return
            reap()  # what the previous call started was killed after its reply
            rn = req["nonce"]
            reply = {"nonce": rn, "status": "ok", "message": ""}
            try:
                args = load(req["args"], rn)
                kwargs = load(req["kwargs"], rn)
            except BaseException as exc:
                reply.update(status="bad-input", message=_one_line(exc))
                chan.send(reply)
                continue
            func = ns.get(req["func"])
            if func is None or not callable(func):
                what = "is not defined" if func is None else f"is a {type(func).__name__}, not a function"
                reply.update(status="missing", message=f"{req['func']} {what}")
                chan.send(reply)
                continue
            # printed output never counts: while a graded call runs, print does nothing, so
            # that a print left in an inner loop costs no time (formatting arrays is slow)
            saved_print = builtins.print
            builtins.print = quiet_print
            try:
                result = func(*args, **kwargs)
            except MemoryError as exc:
                reply.update(status="out-of-memory", message=_one_line(exc))
                result = None
            except BaseException as exc:
                reply.update(status="error", message=_one_line(exc))
                result = None
            finally:
                builtins.print = saved_print
            returned = [("value", "out", result)]
            if req.get("return_args", True):
                returned.append(("args_after", "arg", list(args)))
            for key, prefix, obj in returned:
                try:
                    reply[key] = Dumper(prefix, rn)(obj)
                except MemoryError as exc:
                    reply.update(status="out-of-memory", message=_one_line(exc))
                    reply[key] = {"x": "a value that could not be written (out of memory)"}
                except BaseException as exc:
                    reply[key] = {"x": f"a value that could not be written ({_one_line(exc)})"}
            chan.send(reply)

    chan.send({"nonce": nonce, "op": "ready"})
    private = job != job_in   # under bubblewrap /tmp and /job are the sandbox's own, in memory
    while True:
        req = chan.receive_fork()
        if req is None:
            return
        if private:
            try:
                for folder in ("/tmp", job):
                    _make_writable(folder)
                    _empty(folder)
            except OSError as exc:   # cannot start clean: end, and the grader starts a new sandbox
                sys.stderr.write(f"the sandbox could not be emptied: {exc}\n")
                return
        try:
            pid = os.fork()
        except OSError as exc:
            chan.send({"nonce": req.get("nonce"), "op": "ended", "code": 1, "message": str(exc)[:200]})
            continue
        if pid == 0:
            code = 0
            try:
                learner(req)
            except BaseException:
                code = 1
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except BaseException:
                        pass
                os._exit(code)
        while True:
            try:
                _pid, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = 0
                break
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        chan.buf = b""
        reap()
        chan.send({"nonce": req.get("nonce"), "op": "ended", "code": code})


if __name__ == "__main__":
    main()
