"""The wire protocol between the grader and a learner process: what travels, and how a reply is read.

A call goes to the child as one JSON line (``encode``: a tree of numbers, strings, tuples,
lists and dicts) whose arrays travel as raw files in the job folder, named with the call's
nonce.  The child answers with one JSON line and ``.npy`` files in its output folder.  The
learner's code can forge both, so ``read_reply`` and ``decode`` check every node before they
use it and ``read_npy`` reads only the header NumPy writes for an array of numbers: whatever
the child wrote, the grader gets a ``CallResult`` (``bad-output`` with the reason, for a value
it cannot judge) and no exception.  ``autograder.sandbox`` runs the processes that speak it.
"""
import errno
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .learnertext import printable
from .safeio import open_regular

log = logging.getLogger("autograder.sandbox")

_MAX_FILES = 100_000          # most .npy files one reply may refer to
_MAX_NODES = 200_000          # most values (nodes of its tree) one reply may hold
_INT_RANGE = 1 << 63          # integers come back as int64 values (the child sends larger ones as floats)


@dataclass(frozen=True)
class Unreadable:
    """Stands in for a returned leaf that cannot travel as numbers."""

    description: str

    def __repr__(self) -> str:
        return f"<unreadable: {self.description}>"


@dataclass
class CallResult:
    """Outcome of one call.  Only ``value`` and ``args_after`` are data;
    ``message`` is for feedback and never trusted for a score."""

    status: str
    value: Any = None
    args_after: tuple | None = None
    message: str = ""
    seconds: float = 0.0
    cpu_seconds: float | None = None


#: the header numpy.lib.format.write_array writes (what the child writes), and nothing else
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=]?[biufc]\d{1,2})', 'fortran_order': (False|True), "
                         r"'shape': \(((?:\d{1,18}, )*(?:\d{1,18},?)?)\), \} *\n")


class _NotNumbers(ValueError):
    """A .npy file whose values are not plain numbers (its dtype says what they are)."""


#: the most dimensions, and the longest dimension, of an array read back (NumPy's own limit is 32)
_MAX_NDIM = 32
_MAX_DIM = 1 << 40
#: the longest header read (NumPy writes a few hundred bytes at most for a numeric array)
_MAX_HEADER = 4096
_DESCR = re.compile(r"\{'descr': '([^'\\]{1,40})'")


def read_npy(fh) -> np.ndarray:
    """A plain numeric array from an open .npy file written by the child, without pickles.

    The header must be exactly what ``numpy.lib.format.write_array`` writes for a plain
    numeric array (checked with a regular expression, never evaluated or parsed by NumPy:
    a forged header costs the grader no more than the match), and the file must hold exactly
    as many bytes of values as the header announces, so that no header can make the grader
    allocate more than the file's size.  Raises ValueError (``_NotNumbers`` for an array whose
    values are not numbers) and nothing else for a file that is not such an array.
    """
    total = os.fstat(fh.fileno()).st_size
    head = fh.read(10)
    if head[:6] != b"\x93NUMPY" or head[6:8] not in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
        raise ValueError("not a .npy file")
    if head[6] == 1:
        size = int.from_bytes(head[8:10], "little")
    else:
        head += fh.read(2)
        size = int.from_bytes(head[8:12], "little")
    if size > _MAX_HEADER:
        raise ValueError(f"a .npy header over {_MAX_HEADER} bytes")
    text = fh.read(size)
    if len(text) != size:
        raise ValueError("a .npy file cut short in its header")
    header = text.decode("latin-1")
    match = _NPY_HEADER.fullmatch(header)
    if match is None:
        descr = _DESCR.match(header)
        if descr is not None and not re.fullmatch(r"[<>|=]?[biufc]\d{1,2}", descr.group(1)):
            raise _NotNumbers(f"an ndarray of dtype {_printable(descr.group(1), 40)}")
        raise ValueError("a .npy header that is not the one NumPy writes for an array of numbers")
    try:
        dtype = np.dtype(match.group(1))
    except TypeError:   # '<f3', '<i7': the pattern allows widths NumPy has not
        raise ValueError(f"an unknown dtype {match.group(1)!r}") from None
    shape = tuple(int(n) for n in match.group(3).replace(",", " ").split())
    if len(shape) > _MAX_NDIM or any(n > _MAX_DIM for n in shape):
        raise ValueError("a .npy header with an impossible shape")
    count = 1
    for n in shape:
        count *= n
    expected = count * dtype.itemsize
    if expected != total - fh.tell():
        raise ValueError(f"the file holds {max(0, total - fh.tell())} bytes of values, "
                         f"the header announces {expected}")
    data = fh.read(expected + 1)
    if len(data) != expected:
        raise ValueError(f"the file holds {len(data)} bytes of values, the header announces {expected}")
    arr = np.frombuffer(data, dtype=dtype).copy()
    if match.group(2) == "True":
        return arr.reshape(shape[::-1]).transpose()
    return arr.reshape(shape)


def _float(value) -> float | None:
    """A JSON number as a float (NaN and infinities included); None for anything else, or an
    integer too large for a float."""
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _printable(text, limit: int) -> str:
    """Untrusted text as printable characters only (others become '?'), at most limit of them."""
    return printable(str(text)[:4 * limit], limit)


def encode(obj, job_dir: str, nonce: str, counter: list, depth: int = 0):
    """The request tree of obj; each array goes to a raw file of its own in job_dir (in-<nonce>-<k>.npy)."""
    if depth > 32:
        raise ValueError("arguments nested too deeply")
    if obj is None:
        return {"n": None}
    if isinstance(obj, (bool, np.bool_)):
        return {"b": bool(obj)}
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.generic):
        return {"i": int(obj)}
    if isinstance(obj, float) and not isinstance(obj, np.generic):
        return {"f": float(obj)}
    if isinstance(obj, complex) and not isinstance(obj, np.generic):
        return {"c": [obj.real, obj.imag]}
    if isinstance(obj, str):
        return {"s": obj}
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.array(obj, copy=True, subok=False)
        k = counter[0]
        counter[0] += 1
        path = os.path.join(job_dir, f"in-{nonce}-{k}.npy")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        with os.fdopen(fd, "wb") as fh:
            # the raw values in C order; their dtype and shape travel in the request
            fh.write(arr.tobytes(order="C"))
        node = {"a": k, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        if isinstance(obj, np.generic):
            node["scalar"] = True
        return node
    if isinstance(obj, tuple):
        return {"t": [encode(v, job_dir, nonce, counter, depth + 1) for v in obj]}
    if isinstance(obj, list):
        return {"l": [encode(v, job_dir, nonce, counter, depth + 1) for v in obj]}
    if isinstance(obj, dict):
        return {"d": [[str(k), encode(v, job_dir, nonce, counter, depth + 1)]
                      for k, v in obj.items()]}
    raise TypeError(f"cannot send a {type(obj).__name__} to the learner process")


def decode(node, out_dir: str, limits, prefix: str, nonce: str, bad: list, path: str, depth: int = 0,
           budget: dict | None = None):
    """Rebuild a value from the child's tree; unreadable leaves become Unreadable.

    Every node is checked before it is used (its type, the range of a number, the
    nesting, the number of nodes): whatever the child wrote, this returns a value
    and raises nothing.  ``budget`` bounds what one reply may make the grader load:
    each file once, at most ``limits.job_bytes`` in all, and ``_MAX_NODES`` nodes.
    """
    if budget is None:
        budget = {"seen": set(), "bytes": 0, "nodes": 0}
    budget["nodes"] = budget.get("nodes", 0) + 1

    def unreadable(desc):
        desc = _printable(desc, 120)
        bad.append((path, desc))
        return Unreadable(desc)

    if budget["nodes"] > _MAX_NODES:
        return unreadable(f"a structure of more than {_MAX_NODES} values")
    if depth > 40 or not isinstance(node, dict) or len(node) not in (1, 2):
        return unreadable("a value the grader could not read")
    kind, val = next(iter(node.items()))
    if kind == "a":
        scalar = node.get("scalar", False)
        if (not isinstance(val, int) or isinstance(val, bool) or not 0 <= val < _MAX_FILES
                or not isinstance(scalar, bool) or len(node) != 1 + ("scalar" in node)):
            return unreadable("a value the grader could not read")
        if (prefix, val) in budget["seen"]:
            return unreadable("an array file named twice in one reply")
        budget["seen"].add((prefix, val))
        try:
            with open_regular(os.path.join(out_dir, f"{prefix}-{nonce}-{val}.npy"),
                              limits.output_bytes + 4096) as fh:
                size = os.fstat(fh.fileno()).st_size
                if budget["bytes"] + size > limits.job_bytes:
                    raise ValueError(f"the reply holds more than {limits.job_bytes >> 20} MiB of arrays")
                budget["bytes"] += size
                arr = read_npy(fh)
        except _NotNumbers as exc:
            return unreadable(str(exc))
        except (OSError, ValueError, EOFError) as exc:
            return unreadable(f"an array the grader could not read ({exc})")
        return arr[()] if scalar else arr
    if len(node) != 1:
        return unreadable("a value the grader could not read")
    if kind == "n" and val is None:
        return None
    if kind == "b" and isinstance(val, bool):
        return val
    if kind == "i" and isinstance(val, int) and not isinstance(val, bool):
        if -_INT_RANGE <= val < _INT_RANGE:
            return val
        return unreadable("an integer too large for 64 bits")
    if kind == "f":
        number = _float(val)
        if number is not None:
            return number
        if isinstance(val, int) and not isinstance(val, bool):
            return unreadable("a number too large for a float")
        return unreadable("a number the grader could not read")
    if kind == "c" and isinstance(val, list) and len(val) == 2:
        real, imag = _float(val[0]), _float(val[1])
        if real is not None and imag is not None:
            return complex(real, imag)
        return unreadable("a complex number the grader could not read")
    if kind == "s" and isinstance(val, str):
        return val[:200]
    if kind == "x":
        return unreadable(val if isinstance(val, str) else "a value the grader could not read")
    if kind in ("t", "l") and isinstance(val, list):
        items = [decode(v, out_dir, limits, prefix, nonce, bad, f"{path}[{i}]", depth + 1, budget)
                 for i, v in enumerate(val[:_MAX_NODES + 1])]
        return tuple(items) if kind == "t" else items
    if kind == "d" and isinstance(val, list):
        out = {}
        for pair in val[:_MAX_NODES + 1]:
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
                key = pair[0][:200]
                out[key] = decode(pair[1], out_dir, limits, prefix, nonce, bad,
                                       f"{path}[{_printable(repr(key), 40)}]", depth + 1, budget)
            else:
                budget["nodes"] += 1
                bad.append((path, "a dict entry the grader could not read"))
        return out
    return unreadable("a value the grader could not read")


def read_reply(func: str, reply: dict, nonce: str, seconds: float, out_dir: str, limits) -> CallResult:
    """The CallResult of the child's reply to a call of func (never raises, whatever the reply holds).

    After an ``out-of-memory`` result the learner process must not be used again.
    """
    status = reply.get("status")
    message = reply.get("message", "")
    message = _printable(message, 300) if isinstance(message, str) else ""
    if status not in ("ok", "error", "missing", "out-of-memory"):
        status, message = "error", f"the inputs could not be read: {message}"
    if status == "missing":
        return CallResult("missing", message=(
            f"{message} (did the cell that defines it run without errors?)"), seconds=seconds)
    budget = {"seen": set(), "bytes": 0, "nodes": 0}   # one reply: its arrays and values together
    args_after = None
    if "args_after" in reply:
        after = decode(reply["args_after"], out_dir, limits, "arg", nonce, [], "args", budget=budget)
        args_after = tuple(after) if isinstance(after, list) else None
    if status == "out-of-memory":
        return CallResult(status, None, args_after,
                          f"{func} ran out of memory ({message})", seconds)
    if status == "error":
        return CallResult(status, None, args_after, message, seconds)
    bad: list = []
    value = decode(reply.get("value"), out_dir, limits, "out", nonce, bad, "", budget=budget)
    if bad:
        where, desc = bad[0]
        where = _printable(where, 120)
        kind = type(value).__name__
        if not where:
            text = f"{func} returned {desc} instead of NumPy arrays of numbers"
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Unreadable) for v in value):
            if re.fullmatch(r"an? [\w.]+ object", desc):   # 'a Foo object': 'a list of Foo objects'
                text = (f"{func} returned a {kind} of {desc.removeprefix('a ').removeprefix('an ')}s"
                        " instead of an ndarray")
            else:
                text = f"{func} returned a {kind} whose items are not NumPy arrays of numbers (the first: {desc})"
        else:
            text = (f"{func} returned a {kind} whose item {where} is {desc}, "
                    "not a NumPy array of numbers")
        return CallResult("bad-output", value, args_after, text, seconds)
    return CallResult("ok", value, args_after, "", seconds)


def remove_call_files(nonce: str, folders) -> None:
    """Remove the files of one call (their names hold its nonce) from the job and output folders."""
    for folder in dict.fromkeys(f for f in folders if f):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if nonce in name:
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        log.debug("could not remove %s: %s", name, exc)
