"""Hidden checks of the ``cnn_layers`` assignment, run in the trusted parent.

``GRADED_CELLS`` is the canonical table of graded cells: grade_id ->
``GradedCell(function, notebook, points, description)``.  Every grade_id has
one check, ``CHECKS[grade_id](call, rng, budgets=None) -> Verdict``:

* ``call(func, args, kwargs, budget_s, return_args=False) -> CallResult`` runs
  one learner function (the sandbox's ``LearnerProcess.call``; ``budget_s`` is a
  number or a ``LazyBudget``); only its ``status``, ``value``, ``args_after``
  (asked for by the cases that judge the arguments) and ``message`` are read, and ``value`` is
  validated here (container, exact shape, real dtype cast to float64 -- a complex array
  whose imaginary parts are all exactly zero is its real part --, finite)
  before it is compared with the reference (``rel_error <= TOL``, 1e-12).
* ``rng`` is a ``numpy.random.Generator``; the shapes of the cases are fixed,
  their values are drawn from ``rng``.
* the verdict's ``status`` is one of passed, failed, error, timeout,
  out-of-memory, killed (``ungradable`` is set by the batch, never here);
  ``score`` is all or nothing; ``feedback`` names the failing case (shapes,
  stride, pad, which gradient, how far off) and, where a wrong answer matches
  a known mistake computed from the reference, names the mistake.  Feedback
  never shows input arrays or expected values.

``grade_notebook(notebook, call, rng)`` grades every cell of a notebook in
table order.  It runs the time-budget probe of each backward function first:
when the probe runs out of time, every cell of that function scores zero with
status ``timeout``.

Time budget of a call: ``max(1.0 s, 20 x`` the time of the loop reference on
the same inputs), measured once per shape and cached in a ``Budgets`` object
(one per grading run; ``DEFAULT_BUDGETS`` is shared by the process), and only
for calls that run past the 1 s minimum (``LazyBudget``).
"""
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import reference as ref
from .gradcheck import rel_error

ASSIGNMENT = "cnn_layers"
# Against the reference.  Measured (tests/test_tolerance.py, every case of the checks, many
# draws): honest float64 implementations -- loops, scalar loops, einsum, im2col, any
# summation order -- agree with the reference to 4e-14 at worst (scalar loops with +=;
# vectorised code 1e-15).  Central differences with the step of the notebooks' helper
# (h = 1e-5) are off by 8e-12 at best, on every case.  1e-12 lies between the two.  The
# convolution is linear, so a difference with a large step (h >= 1e-3) is exact up to
# rounding and no tolerance can tell it from an analytic gradient: only its cost can.
TOL = 1e-12
NUMERIC_TOL = 1e-6    # against central differences (rounding of h = 1e-5)
HINT_TOL = 1e-6       # how close a wrong answer must be to a known mistake
MIN_BUDGET_S = 1.0
BUDGET_FACTOR = 20.0
MESSAGE_CHARS = 300   # learner error messages are cut to this length

STATUSES = ("passed", "failed", "error", "timeout", "out-of-memory", "killed", "ungradable")
FATAL = ("timeout", "out-of-memory", "killed")


class GradedCell(NamedTuple):
    function: str
    notebook: str
    points: float
    description: str


def _cells(notebook, rows):
    return {gid: GradedCell(gid_fn, notebook, float(pts), desc) for gid, gid_fn, pts, desc in rows}


GRADED_CELLS = {
    **_cells("convolution", [
        ("zero_pad", "zero_pad", 1, "pad 0, 1, 2 on non-square inputs with N, C > 1"),
        ("conv_forward_shapes", "conv_forward", 1,
         "output shape on many configurations (stride, pad, uneven, non-square)"),
        ("conv_forward_basic", "conv_forward", 2, "stride 1, pad 0, N=2, C=1, F=1, square"),
        ("conv_forward_padding", "conv_forward", 2, "stride 1, pad 1 and 2, C=1, F=1, square"),
        ("conv_forward_stride", "conv_forward", 2, "stride 2 and 3, pad 0, sizes that divide evenly"),
        ("conv_forward_uneven", "conv_forward", 2, "(H + 2 pad - HH) mod stride != 0"),
        ("conv_forward_nonsquare", "conv_forward", 2, "H != W and HH != WW, stride 1 and stride 2 with pad 1"),
        ("conv_forward_channels", "conv_forward", 2, "N=3, C=3, F=4 stride 1 pad 1; N=4, C=3, F=5 stride 2"),
        ("conv_forward_inputs_unchanged", "conv_forward", 1, "x, w, b equal before and after the call"),
        ("conv_backward_shapes", "conv_backward", 1, "shapes of dx, dw, db, including pad 0"),
        ("conv_backward_basic", "conv_backward", 2, "as forward basic"),
        ("conv_backward_padding", "conv_backward", 2, "as forward padding"),
        ("conv_backward_stride", "conv_backward", 2, "as forward stride"),
        ("conv_backward_uneven", "conv_backward", 2, "as forward uneven"),
        ("conv_backward_nonsquare", "conv_backward", 2, "as forward nonsquare"),
        ("conv_backward_channels", "conv_backward", 2, "as forward channels, plus the time-budget probe"),
        ("conv_backward_inputs_unchanged", "conv_backward", 1, "dout and every cache entry unchanged"),
    ]),
    **_cells("pooling", [
        ("maxpool_forward_shapes", "maxpool_forward", 1, "output shapes (pool, stride, uneven, non-square)"),
        ("maxpool_forward_basic", "maxpool_forward", 2, "pool 2, stride 2, even sizes, N=2, C=1"),
        ("maxpool_forward_overlap", "maxpool_forward", 2, "pool 3 stride 2, pool 2 stride 1"),
        ("maxpool_forward_general", "maxpool_forward", 2, "uneven sizes, non-square, N=3, C=4"),
        ("maxpool_forward_inputs_unchanged", "maxpool_forward", 1, "x equal before and after the call"),
        ("maxpool_backward_shapes", "maxpool_backward", 1, "shape of dx"),
        ("maxpool_backward_basic", "maxpool_backward", 2, "pool 2, stride 2, no ties"),
        ("maxpool_backward_overlap", "maxpool_backward", 2, "overlapping windows, no ties"),
        ("maxpool_backward_ties", "maxpool_backward", 2, "windows with repeated maxima"),
        ("maxpool_backward_general", "maxpool_backward", 2,
         "uneven, non-square, batch and channels, plus the time-budget probe"),
        ("maxpool_backward_inputs_unchanged", "maxpool_backward", 1, "dout and every cache entry unchanged"),
    ]),
}

NOTEBOOKS = tuple(dict.fromkeys(c.notebook for c in GRADED_CELLS.values()))


def functions_of(notebook):
    """Graded function names of a notebook, in table order."""
    return list(dict.fromkeys(c.function for c in GRADED_CELLS.values() if c.notebook == notebook))


def cells_of(notebook, function=None):
    """grade_ids of a notebook (optionally of one function), in table order."""
    return [gid for gid, c in GRADED_CELLS.items()
            if c.notebook == notebook and (function is None or c.function == function)]


def max_score(notebook=None):
    return float(sum(c.points for c in GRADED_CELLS.values() if notebook in (None, c.notebook)))


# --------------------------------------------------------------------------- verdicts

@dataclass
class Verdict:
    grade_id: str
    status: str
    score: float
    max_score: float
    feedback: list = field(default_factory=list)

    def to_dict(self):
        return {"grade_id": self.grade_id, "function": GRADED_CELLS[self.grade_id].function,
                "status": self.status, "score": self.score, "max_score": self.max_score,
                "feedback": list(self.feedback)}


def make_verdict(grade_id, status, feedback):
    points = GRADED_CELLS[grade_id].points
    return Verdict(grade_id, status, points if status == "passed" else 0.0, points, list(feedback))


class CaseFailure(Exception):
    """One case did not pass: a verdict status and feedback lines."""

    def __init__(self, status, *lines):
        super().__init__(status)
        self.status = status
        self.lines = [ln for ln in lines if ln]


# --------------------------------------------------------------------------- time budgets

def _zero_pad_loops(x, pad):
    return ref.zero_pad(x, pad)


LOOP_REFERENCES = {
    "zero_pad": _zero_pad_loops,
    "conv_forward": ref.conv_forward_loops,
    "conv_backward": ref.conv_backward_loops,
    "maxpool_forward": ref.maxpool_forward_loops,
    "maxpool_backward": ref.maxpool_backward_loops,
}


def _signature(obj):
    if isinstance(obj, np.ndarray):
        return ("a",) + obj.shape
    if isinstance(obj, (tuple, list)):
        return tuple(_signature(o) for o in obj)
    return obj


class LazyBudget:
    """A call's time budget, measured only when the call needs more than the minimum.

    Every budget is at least ``floor`` (``MIN_BUDGET_S``), so a call that finishes within
    the floor is within its budget whatever the loop reference would take, and most calls
    do: the loop reference is timed (``float(budget)``) only for a call that runs past the
    floor, by the sandbox while the call goes on (``LearnerProcess.call``), or when a
    message quotes the budget.
    """

    def __init__(self, budgets, func, args):
        self.floor = budgets.minimum
        self._budgets, self._func, self._args = budgets, func, args

    def __float__(self):
        return float(self._budgets(self._func, self._args))

    def __format__(self, spec):
        return format(float(self), spec)

    def __repr__(self):
        return f"LazyBudget({self._func})"


class Budgets:
    """Per-call time budgets: max(1 s, 20 x the loop reference), cached per shape.

    The reference's time is the CPU time of the measuring thread
    (``time.thread_time``), so a budget does not depend on how busy the machine
    is; the sandbox holds a call to it in CPU time of the learner's whole
    process tree (see ``autograder.sandbox.LearnerProcess.call``).  ``lazy``
    gives a budget that is measured only when a call runs past the minimum.
    """

    def lazy(self, func, args):
        return LazyBudget(self, func, args)

    def __init__(self, factor=BUDGET_FACTOR, minimum=MIN_BUDGET_S):
        self.factor, self.minimum = factor, minimum
        self._cache = {}
        self._lock = threading.Lock()

    def __call__(self, func, args):
        key = (func, _signature(args))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        start = time.thread_time()
        LOOP_REFERENCES[func](*args)
        budget = max(self.minimum, self.factor * (time.thread_time() - start))
        with self._lock:
            return self._cache.setdefault(key, budget)


DEFAULT_BUDGETS = Budgets()


# --------------------------------------------------------------------------- calling and validating

def _short(message):
    text = " ".join(str(message or "").split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


class _Grader:
    """State shared by the cases of one cell."""

    def __init__(self, call, rng, budgets):
        self.call, self.rng = call, rng
        self.budgets = budgets or DEFAULT_BUDGETS

    def invoke(self, func, args, label, usable=None, return_args=False):
        """Call the learner's func on args; return the CallResult when it ran.

        usable(value) says whether a value that could not be read back whole
        (status ``bad-output``) still holds everything the case judges: a forward
        pass is judged on ``out``, so a cache with an extra entry the grader cannot
        read (a dict, a string) does not matter to it.
        """
        lazy = getattr(self.budgets, "lazy", None)
        budget = lazy(func, args) if lazy is not None else self.budgets(func, args)
        # the arguments come back (for the grader to compare) only where a case judges them
        res = self.call(func, args, {}, budget, return_args=return_args)
        status = getattr(res, "status", "error")
        if status == "ok":
            return res
        if status == "bad-output" and usable is not None and usable(getattr(res, "value", None)):
            return res
        where = f"{label}: {func}"
        msg = _short(getattr(res, "message", ""))
        if status == "error":
            raise CaseFailure("error", f"{where} raised an error: {msg}" if msg else f"{where} raised an error")
        if status == "missing":
            raise CaseFailure("error", f"function {func} is not defined (or the cell defining it failed to run)")
        if status == "timeout":
            failure = CaseFailure("timeout", f"{where}: {msg}" if msg else
                                  f"{where} ran past its time budget of {budget:.1f} s")
            failure.detail = msg
            raise failure
        if status == "out-of-memory":
            raise CaseFailure("out-of-memory", f"{where}: {msg}" if msg else f"{where} ran out of memory")
        if status == "killed":
            raise CaseFailure("killed", f"{where}: the process running your code was stopped"
                              + (f" ({msg})" if msg else ""))
        if status == "bad-output":
            raise CaseFailure("failed", f"{where} returned something that is not arrays and numbers"
                              + (f" ({msg})" if msg else ""))
        raise CaseFailure("error", f"{where}: {status} {msg}".strip())


def _plain(value, depth=0):
    """True when value is made of numbers and arrays only (what a case can judge)."""
    if isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        return True
    if isinstance(value, (tuple, list)) and depth < 8:
        return all(_plain(v, depth + 1) for v in value)
    return False


def _out_usable(value):
    """A forward pass's (out, cache) whose out is readable, whatever the cache holds."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and _plain(value[0])


def _unpack(value, n, func, form, label):
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = type(value).__name__ if not isinstance(value, (tuple, list)) else f"a {len(value)}-tuple"
        raise CaseFailure("failed", f"{label}: {func} must return {form}, it returned {got}")
    return list(value)


def _array(value, name, shape, label, shape_hint=None):
    """Validate one returned array: numeric real dtype (or complex with zero imaginary parts), exact shape,
    finite -> float64."""
    try:
        arr = np.asarray(value)
    except Exception:
        raise CaseFailure("failed", f"{label}: {name} is not an array")
    if arr.dtype.kind == "c":
        # a complex result whose imaginary parts are all exactly zero is its real part
        # (np.complex128 arithmetic on real data); any other imaginary part is a wrong answer
        if not np.all(arr.imag == 0):
            raise CaseFailure("failed", f"{label}: {name} has complex values with a nonzero imaginary part "
                                        f"(dtype {arr.dtype}); expected real numbers (float64). Hint: a complex "
                                        "result is graded as its real part only when every imaginary part is "
                                        "exactly zero")
        arr = arr.real
    if arr.dtype.kind not in "iuf":
        raise CaseFailure("failed", f"{label}: {name} has dtype {arr.dtype}, expected real numbers (float64)")
    if arr.shape != tuple(shape):
        hint = shape_hint(arr.shape) if shape_hint else None
        raise CaseFailure("failed", f"{label}: {name} has shape {arr.shape}, expected {tuple(shape)}"
                          + (f". Hint: {hint}" if hint else ""))
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise CaseFailure("failed", f"{label}: {name} contains NaN or infinite values")
    return arr


def _close(a, b, tol=HINT_TOL):
    return a.shape == b.shape and rel_error(a, b) <= tol


def _first_hint(got, candidates):
    for cand, hint in candidates:
        try:
            c = cand()
        except Exception:
            continue
        if c is not None and _close(got, np.asarray(c, dtype=np.float64)):
            return hint
    return None


def _compare(name, got, expected, label, candidates=()):
    """A feedback line when got is off, else None."""
    err = rel_error(got, expected)
    if err <= TOL:
        return None
    hint = _first_hint(got, candidates)
    return (f"{label}: {name} is off (relative error {err:.1e}, limit {TOL:.0e})"
            + (f". Hint: {hint}" if hint else ""))


def _unchanged(before, after):
    """Names of the entries of args that the call changed (recursively)."""
    changed = []

    def walk(b, a, path):
        if isinstance(b, np.ndarray):
            try:
                aa = np.asarray(a)
                same = aa.shape == b.shape and aa.dtype.kind == b.dtype.kind and np.array_equal(aa, b)
            except Exception:
                same = False
            if not same:
                changed.append(path)
        elif isinstance(b, (tuple, list)):
            if not isinstance(a, (tuple, list)) or len(a) != len(b):
                changed.append(path)
                return
            for k, (bb, ab) in enumerate(zip(b, a)):
                walk(bb, ab, f"{path}[{k}]")
        else:
            try:
                same = a == b
                same = bool(same)
            except Exception:
                same = False
            if not same:
                changed.append(path)

    walk(tuple(before), tuple(after) if isinstance(after, (tuple, list)) else after, "args")
    return changed


def _copy(obj):
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, tuple):
        return tuple(_copy(o) for o in obj)
    if isinstance(obj, list):
        return [_copy(o) for o in obj]
    return obj


def _run_cell(grade_id, cases):
    """Run every case; the first failing status is the cell's; stop after a fatal one."""
    status, lines = "passed", []
    for case in cases:
        try:
            case()
        except CaseFailure as exc:
            if status == "passed":
                status = exc.status
            lines.extend(exc.lines)
            if exc.status in FATAL:
                lines.append("the remaining cases of this cell were not run")
                break
        except Exception as exc:  # a value the checks could not handle: never stop the batch
            if status == "passed":
                status = "error"
            lines.append(f"the grader could not check the returned value ({type(exc).__name__})")
    if status == "passed":
        lines = [f"all {len(cases)} case(s) passed"]
    return make_verdict(grade_id, status, lines)


# --------------------------------------------------------------------------- convolution

class ConvCase(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    F: int
    HH: int
    WW: int
    stride: int
    pad: int
    name: str = ""

    @property
    def out_hw(self):
        return (ref.output_size(self.H, self.HH, self.stride, self.pad),
                ref.output_size(self.W, self.WW, self.stride, self.pad))

    def label(self):
        return (f"case {self.name!s}: x ({self.N}, {self.C}, {self.H}, {self.W}), "
                f"w ({self.F}, {self.C}, {self.HH}, {self.WW}), stride {self.stride}, pad {self.pad}")

    def draw(self, rng):
        x = rng.standard_normal((self.N, self.C, self.H, self.W))
        w = rng.standard_normal((self.F, self.C, self.HH, self.WW))
        b = rng.standard_normal(self.F)
        return x, w, b


CONV_CASES = {
    "basic": [ConvCase(2, 1, 5, 5, 1, 3, 3, 1, 0, "basic 1"), ConvCase(2, 1, 6, 6, 1, 2, 2, 1, 0, "basic 2")],
    "padding": [ConvCase(2, 1, 5, 5, 1, 3, 3, 1, 1, "pad 1"), ConvCase(2, 1, 4, 4, 1, 3, 3, 1, 2, "pad 2")],
    "stride": [ConvCase(2, 1, 7, 7, 1, 3, 3, 2, 0, "stride 2"), ConvCase(2, 1, 8, 8, 1, 2, 2, 3, 0, "stride 3")],
    "uneven": [ConvCase(2, 1, 8, 8, 1, 3, 3, 2, 0, "uneven 1"), ConvCase(2, 1, 6, 6, 1, 3, 3, 2, 1, "uneven 2"),
               ConvCase(1, 1, 9, 9, 1, 2, 2, 3, 0, "uneven 3")],
    "nonsquare": [ConvCase(2, 1, 5, 7, 1, 2, 3, 1, 0, "non-square 1"),
                  ConvCase(2, 1, 6, 9, 1, 3, 2, 2, 1, "non-square 2")],
    # W' == F in both, so a bias broadcast along the width does not even raise
    "channels": [ConvCase(3, 3, 5, 4, 4, 3, 3, 1, 1, "channels 1"),
                 ConvCase(4, 3, 9, 9, 5, 3, 3, 2, 1, "channels 2")],
}
CONV_SHAPE_CASES = [
    ConvCase(1, 1, 4, 4, 1, 3, 3, 1, 0, "shape 1"), ConvCase(2, 3, 5, 5, 2, 3, 3, 1, 1, "shape 2"),
    ConvCase(2, 2, 7, 5, 3, 3, 2, 2, 0, "shape 3"), ConvCase(1, 3, 8, 6, 2, 3, 3, 2, 1, "shape 4"),
    ConvCase(2, 1, 9, 10, 4, 4, 3, 3, 2, "shape 5"), ConvCase(3, 2, 6, 11, 2, 1, 5, 2, 0, "shape 6"),
    ConvCase(1, 1, 5, 5, 1, 5, 5, 1, 0, "shape 7"), ConvCase(2, 4, 10, 7, 3, 2, 4, 3, 1, "shape 8"),
]
CONV_PROBE = ConvCase(8, 4, 32, 32, 6, 3, 3, 1, 1, "time probe")


def _flip(w):
    return w[:, :, ::-1, ::-1]


def _conv_out_shape_hint(c):
    Ho, Wo = c.out_hw
    up = (math.ceil((c.H + 2 * c.pad - c.HH) / c.stride) + 1, math.ceil((c.W + 2 * c.pad - c.WW) / c.stride) + 1)

    def hint(shape):
        if len(shape) != 4:
            return "out has four axes (N, F, H', W')"
        hw = tuple(shape[2:])
        if shape[1] == c.C and c.C != c.F:
            return "the second axis of out counts filters F, not channels C"
        if hw == (Wo, Ho) and Ho != Wo:
            return "H and W (or HH and WW) are mixed up"
        if hw == up and up != (Ho, Wo):
            return "output size rounded up: windows that do not fit are dropped, H' = (H + 2 pad - HH) // stride + 1"
        if c.stride > 1 and hw == (c.H + 2 * c.pad - c.HH + 1, c.W + 2 * c.pad - c.WW + 1):
            return "the stride is ignored"
        if c.pad > 0 and hw == ((c.H - c.HH) // c.stride + 1, (c.W - c.WW) // c.stride + 1):
            return "the padding is ignored"
        return None
    return hint


def _forward_candidates(c, x, w, b):
    s, p = c.stride, c.pad
    zero = np.zeros_like(b)

    def wrong_axis():
        base = ref.conv_forward(x, w, zero, s, p)[0]
        return base + b if base.shape[-1] == b.shape[0] else None

    def one_number():
        return ref.conv_forward(x, w, zero, s, p)[0] + b.sum() if c.F > 1 else None

    def per_product():
        # np.sum(window * w[f] + b[f]): b[f] added to each of the C*HH*WW products
        return ref.conv_forward(x, w, zero, s, p)[0] + b[None, :, None, None] * (c.C * c.HH * c.WW)

    return [
        (lambda: ref.conv_forward(x, w, zero, s, p)[0], "the bias is missing"),
        (per_product, "the bias is added to every product of the window (C*HH*WW times, as in "
                      "np.sum(window * w[f] + b[f])): add b[f] once per output position, after the sum"),
        (lambda: ref.conv_forward(x, _flip(w), b, s, p)[0],
         "the kernel is flipped: the layer computes a cross-correlation, without flipping w"),
        (wrong_axis, "the bias is added along the width axis: b[f] belongs to every output of filter f"),
        (one_number, "the bias is added as one number: b[f] belongs to the outputs of filter f only"),
        (lambda: ref.conv_forward(x[:, :1], w[:, :1], b, s, p)[0] if c.C > 1 else None,
         "only the first channel is used: the sum runs over all C channels"),
    ]


def _conv_forward_case(g, c):
    label = c.label()

    def run():
        x, w, b = c.draw(g.rng)
        res = g.invoke("conv_forward", (x, w, b, c.stride, c.pad), label, _out_usable)
        out = _unpack(res.value, 2, "conv_forward", "(out, cache)", label)[0]
        expected = ref.conv_forward(x, w, b, c.stride, c.pad)[0]
        out = _array(out, "out", expected.shape, label, _conv_out_shape_hint(c))
        line = _compare("out", out, expected, label, _forward_candidates(c, x, w, b))
        if line:
            raise CaseFailure("failed", line)
    return run


def _conv_forward_shape_case(g, c):
    label = c.label()

    def run():
        x, w, b = c.draw(g.rng)
        res = g.invoke("conv_forward", (x, w, b, c.stride, c.pad), label, _out_usable)
        out = _unpack(res.value, 2, "conv_forward", "(out, cache)", label)[0]
        _array(out, "out", (c.N, c.F) + c.out_hw, label, _conv_out_shape_hint(c))
    return run


def _inputs_case(g, func, args, label, validate):
    def run():
        originals = _copy(args)
        res = g.invoke(func, args, label, _out_usable if func.endswith("_forward") else None, return_args=True)
        validate(res.value)
        after = getattr(res, "args_after", None)
        if after is None:
            raise CaseFailure("error", f"{label}: the arguments could not be read back after the call")
        changed = _unchanged(originals, after)
        if changed:
            names = ", ".join(_ARG_NAMES.get(func, {}).get(p, p) for p in changed)
            raise CaseFailure("failed", f"{label}: {func} modified its input(s) in place: {names}. "
                              "Work on copies (np.pad, .copy()) and leave the arguments as they were")
    return run


_ARG_NAMES = {
    "conv_forward": {"args[0]": "x", "args[1]": "w", "args[2]": "b", "args[3]": "stride", "args[4]": "pad"},
    "conv_backward": {"args[0]": "dout", "args[1]": "cache", "args[1][0]": "cache x", "args[1][1]": "cache w",
                      "args[1][2]": "cache b", "args[1][3]": "cache stride", "args[1][4]": "cache pad"},
    "maxpool_forward": {"args[0]": "x", "args[1]": "pool", "args[2]": "stride"},
    "maxpool_backward": {"args[0]": "dout", "args[1]": "cache", "args[1][0]": "cache x",
                         "args[1][1]": "cache pool", "args[1][2]": "cache stride"},
}


def _windows(xp, HH, WW, stride, Ho, Wo):
    return sliding_window_view(xp, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :Ho, :Wo]


def _dx_overwrite(dout, w, stride, pad, x_shape):
    """dx when overlapping windows overwrite each other (loop order n, f, i, j)."""
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    if N * F * Ho * Wo > 5000:
        return None
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    dxp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW] = dout[n, f, i, j] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W]


def _backward_candidates(c, x, w, dout, dw_ref, db_ref):
    """(dx, dw, db) candidates: known mistakes, each computed only when a hint is looked for."""
    s, p = c.stride, c.pad
    N = c.N
    Ho, Wo = c.out_hw
    xp = ref.zero_pad(x, p)
    dx_c = [
        (lambda: ref.conv_transpose(dout, _flip(w), s, p, x.shape),
         "dx uses the kernel as it is: in dx the kernel appears flipped (rotated by 180 degrees)"),
        (lambda: ref.conv_transpose(dout, w, 1, p, x.shape) if s > 1 else None,
         "the stride is ignored in dx: output (i, j) came from the window starting at (i*stride, j*stride)"),
        (lambda: ref.conv_transpose(dout[:, :1], w[:1], s, p, x.shape) if c.F > 1 else None,
         "dx keeps only the first filter: it must add the contributions of all F filters"),
        (lambda: ref.conv_transpose(dout[:, -1:], w[-1:], s, p, x.shape) if c.F > 1 else None,
         "dx keeps only the last filter: it must add the contributions of all F filters"),
        (lambda: _dx_overwrite(dout, w, s, p, x.shape),
         "overlapping windows overwrite each other in dx: contributions must be added (+=)"),
    ]

    def dw_stride1():
        if s == 1:
            return None
        return np.einsum("nchwij,nfhw->fcij", _windows(xp, c.HH, c.WW, 1, Ho, Wo), dout)

    def dw_sample(k):
        if N == 1:
            return None
        return np.einsum("chwij,fhw->fcij", _windows(xp, c.HH, c.WW, s, Ho, Wo)[k], dout[k])

    dw_c = [
        (lambda: dw_ref / N if N > 1 else None, "dw is averaged over the batch: it is a sum over n"),
        (lambda: dw_sample(0), "dw keeps only the first example: it is a sum over the whole batch"),
        (lambda: dw_sample(-1), "dw keeps only the last example: it is a sum over the whole batch"),
        (dw_stride1, "the stride is ignored in dw: output (i, j) came from the window starting at "
                     "(i*stride, j*stride)"),
        (lambda: np.einsum("nchwij,nfhw->fcij", _windows(xp, c.HH, c.WW, s, Ho, Wo)[..., ::-1, ::-1], dout),
         "dw comes out flipped: the layer is a cross-correlation, dw[f, c, i, j] pairs with x at offset (i, j)"),
    ]
    avg = "db is averaged instead of summed: db[f] is the sum of dout[:, f] over n, i and j"
    db_c = [
        (lambda: db_ref / N if N > 1 else None, avg),
        (lambda: db_ref / (N * Ho * Wo) if N * Ho * Wo > 1 else None, avg),
        (lambda: db_ref / (Ho * Wo) if Ho * Wo > 1 else None, avg),
        (lambda: dout[0].sum(axis=(1, 2)) if N > 1 else None,
         "db keeps only the first example: it is a sum over the whole batch"),
        (lambda: db_ref * (c.C * c.HH * c.WW),
         "db is multiplied by the size of the window: the bias is added once per output position, "
         "so db[f] is the plain sum of dout[:, f] over n, i and j"),
    ]
    return dx_c, dw_c, db_c


def _dx_shape_hint(c):
    def hint(shape):
        full = (c.N, c.C, c.H + 2 * c.pad, c.W + 2 * c.pad)
        if tuple(shape) == full and c.pad > 0:
            return "the padding is not cropped from dx: remove pad rows and columns on each side"
        if 0 in shape and c.pad == 0:
            return ("dx is empty when pad = 0: dx[pad:-pad] selects nothing for pad = 0; "
                    "crop with dx[:, :, pad:pad + H, pad:pad + W]")
        if tuple(shape) == (c.N, c.C, c.W, c.H) and c.H != c.W:
            return "H and W are mixed up"
        return None
    return hint


def _dw_shape_hint(c):
    def hint(shape):
        if tuple(shape) == (c.F, c.C, c.WW, c.HH) and c.HH != c.WW:
            return "HH and WW are mixed up"
        return None
    return hint


def numerical_gradient_stacked(f, x, dout=None, h=1e-5):
    """gradcheck.numerical_gradient with every perturbation evaluated in one call of f.

    f maps a stack X of K inputs, shape (K, *x.shape), to the stack of their outputs,
    shape (K, *f(x).shape): for a layer, the perturbed inputs travel as one larger batch.
    The perturbed values are the same as numerical_gradient's (x[i] + h, x[i] - h), so
    the result differs from it only by rounding.  Returns an array shaped like x.
    """
    x = np.asarray(x, dtype=np.float64)
    size = x.size
    step = (np.eye(size) * h).reshape((size,) + x.shape)
    out = np.asarray(f(np.concatenate([x + step, x - step])), dtype=np.float64)
    weight = 1.0 if dout is None else np.asarray(dout, dtype=np.float64)
    diff = (out[:size] - out[size:]) * weight
    return (diff.reshape(size, -1).sum(axis=1) / (2 * h)).reshape(x.shape)


def _conv_backward_case(g, c, numeric=False, shapes_only=False):
    label = c.label()

    def run():
        x, w, b = c.draw(g.rng)
        dout = g.rng.standard_normal((c.N, c.F) + c.out_hw)
        cache = (x, w, b, c.stride, c.pad)
        res = g.invoke("conv_backward", (dout, cache), label)
        dx, dw, db = _unpack(res.value, 3, "conv_backward", "(dx, dw, db)", label)
        dx = _array(dx, "dx", x.shape, label, _dx_shape_hint(c))
        dw = _array(dw, "dw", w.shape, label, _dw_shape_hint(c))
        db = _array(db, "db", b.shape, label)
        if shapes_only:
            return
        edx, edw, edb = ref.conv_backward(dout, cache)
        dx_c, dw_c, db_c = _backward_candidates(c, x, w, dout, edw, edb)
        lines = [_compare("dx", dx, edx, label, dx_c), _compare("dw", dw, edw, label, dw_c),
                 _compare("db", db, edb, label, db_c)]
        lines = [ln for ln in lines if ln]
        if lines:
            raise CaseFailure("failed", *lines)
        if numeric:  # the reference itself is held to central differences here
            N, F, (Ho, Wo) = c.N, c.F, c.out_hw

            def fx(xs):   # K perturbed inputs as one batch of K*N examples
                return ref.conv_forward(xs.reshape((-1,) + x.shape[1:]), w, b, c.stride, c.pad)[0] \
                    .reshape(len(xs), N, F, Ho, Wo)

            def fw(ws):   # K perturbed kernels as one layer of K*F filters
                out = ref.conv_forward(x, ws.reshape((-1,) + w.shape[1:]), np.tile(b, len(ws)), c.stride, c.pad)[0]
                return out.reshape(N, len(ws), F, Ho, Wo).transpose(1, 0, 2, 3, 4)

            def fb(bs):   # K perturbed biases as one layer of K*F filters
                out = ref.conv_forward(x, np.tile(w, (len(bs), 1, 1, 1)), bs.reshape(-1), c.stride, c.pad)[0]
                return out.reshape(N, len(bs), F, Ho, Wo).transpose(1, 0, 2, 3, 4)
            for name, got, f, arg in (("dx", dx, fx, x), ("dw", dw, fw, w), ("db", db, fb, b)):
                num = numerical_gradient_stacked(f, arg, dout)
                err = rel_error(got, num)
                if err > NUMERIC_TOL:
                    lines.append(f"{label}: {name} disagrees with central differences "
                                 f"(relative error {err:.1e}, limit {NUMERIC_TOL:.0e})")
        z = g.rng.standard_normal(x.shape)
        lhs = float(np.sum(ref.conv_forward(z, w, np.zeros_like(b), c.stride, c.pad)[0] * dout))
        rhs = float(np.sum(z * dx))
        scale = float(np.sum(np.abs(z))) * max(float(np.max(np.abs(dx), initial=0.0)), 1e-300)
        if abs(lhs - rhs) > NUMERIC_TOL * scale:
            lines.append(f"{label}: dx fails the adjoint identity <conv(z, w), dout> = <z, dx>")
        if lines:
            raise CaseFailure("failed", *lines)
    return run


# --------------------------------------------------------------------------- pooling

class PoolCase(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    pool: int
    stride: int
    name: str = ""

    @property
    def out_hw(self):
        return ref.output_size(self.H, self.pool, self.stride), ref.output_size(self.W, self.pool, self.stride)

    def label(self):
        return f"case {self.name}: x ({self.N}, {self.C}, {self.H}, {self.W}), pool {self.pool}, stride {self.stride}"


POOL_CASES = {
    "basic": [PoolCase(2, 1, 4, 4, 2, 2, "basic 1"), PoolCase(2, 1, 6, 6, 2, 2, "basic 2")],
    "overlap": [PoolCase(2, 1, 7, 7, 3, 2, "pool 3 stride 2"), PoolCase(2, 1, 5, 5, 2, 1, "pool 2 stride 1")],
    "general": [PoolCase(3, 4, 7, 9, 2, 2, "general 1"), PoolCase(3, 4, 8, 6, 3, 2, "general 2")],
    "ties": [PoolCase(2, 2, 4, 4, 2, 2, "ties 1"), PoolCase(2, 2, 7, 7, 3, 2, "ties 2"),
             PoolCase(1, 2, 5, 6, 2, 1, "ties 3")],
}
POOL_SHAPE_CASES = [
    PoolCase(1, 1, 4, 4, 2, 2, "shape 1"), PoolCase(2, 3, 7, 7, 3, 2, "shape 2"),
    PoolCase(2, 1, 5, 6, 2, 1, "shape 3"), PoolCase(1, 2, 10, 8, 3, 3, "shape 4"),
    PoolCase(3, 2, 5, 7, 2, 2, "shape 5"), PoolCase(1, 1, 9, 4, 4, 1, "shape 6"),
]
POOL_PROBE = PoolCase(8, 4, 32, 32, 2, 2, "time probe")


def _pool_shape_hint(c):
    Ho, Wo = c.out_hw
    up = (math.ceil((c.H - c.pool) / c.stride) + 1, math.ceil((c.W - c.pool) / c.stride) + 1)

    def hint(shape):
        if len(shape) == 4 and tuple(shape[2:]) == up and up != (Ho, Wo):
            return "output size rounded up: windows that do not fit are dropped, H' = (H - pool) // stride + 1"
        if len(shape) == 4 and tuple(shape[2:]) == (Wo, Ho) and Ho != Wo:
            return "H and W are mixed up"
        return None
    return hint


def _pool_windows(x, c):
    Ho, Wo = c.out_hw
    return sliding_window_view(x, (c.pool, c.pool), axis=(2, 3))[:, :, ::c.stride, ::c.stride][:, :, :Ho, :Wo]


def _pool_to_all_maxima(x, dout, c):
    win = _pool_windows(x, c)
    mask = win == win.max(axis=(4, 5), keepdims=True)
    dx = np.zeros_like(x, dtype=np.float64)
    for a in range(c.pool):
        for d in range(c.pool):
            dx[:, :, a:a + c.stride * c.out_hw[0]:c.stride, d:d + c.stride * c.out_hw[1]:c.stride] += \
                mask[..., a, d] * dout
    return dx


def _pool_to_last_max(x, dout, c):
    # the last maximum of a window is the first one of the window read backwards
    N, C, Ho, Wo = dout.shape
    win = _pool_windows(x, c).reshape(N, C, Ho, Wo, c.pool * c.pool)
    last = c.pool * c.pool - 1 - win[..., ::-1].argmax(axis=4)
    di, dj = np.divmod(last, c.pool)
    n, ch, i, j = np.indices((N, C, Ho, Wo))
    dx = np.zeros_like(x, dtype=np.float64)
    np.add.at(dx, (n, ch, i * c.stride + di, j * c.stride + dj), dout)
    return dx


def _pool_overwrite(x, dout, c, whole_window):
    N, C, Ho, Wo = dout.shape
    if N * C * Ho * Wo > 5000:
        return None
    p, s = c.pool, c.stride
    dx = np.zeros_like(x, dtype=np.float64)
    for n in range(N):
        for ch in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, ch, i * s:i * s + p, j * s:j * s + p]
                    a, d = divmod(int(np.argmax(window)), p)
                    if whole_window:
                        block = np.zeros((p, p))
                        block[a, d] = dout[n, ch, i, j]
                        dx[n, ch, i * s:i * s + p, j * s:j * s + p] = block
                    else:
                        dx[n, ch, i * s + a, j * s + d] = dout[n, ch, i, j]
    return dx


def _pool_backward_candidates(x, dout, c):
    overwrite = "overlapping windows overwrite each other in dx: contributions must be added (+=)"
    return [
        (lambda: _pool_to_all_maxima(x, dout, c),
         "on a tie the gradient goes to every maximal element; it must go only to the first maximal "
         "element of the window in row-major order (the one np.argmax picks)"),
        (lambda: _pool_to_last_max(x, dout, c),
         "on a tie the gradient goes to the last maximal element; it must go to the first one "
         "in row-major order (the one np.argmax picks)"),
        (lambda: _pool_overwrite(x, dout, c, False), overwrite),
        (lambda: _pool_overwrite(x, dout, c, True), overwrite),
        (lambda: ref.avgpool_backward(dout, (x, c.pool, c.stride)),
         "the gradient is spread over the window as in average pooling; max pooling routes it to the maximum"),
    ]


def _draw_pool_x(g, c, ties=False, discriminate=()):
    """x for a case; with ties, small integers; redrawn until the known mistakes differ."""
    shape = (c.N, c.C, c.H, c.W)
    for _ in range(50):
        if ties:
            x = g.rng.integers(0, 3, size=shape).astype(np.float64)
        else:
            x = g.rng.standard_normal(shape)
        dout = g.rng.standard_normal((c.N, c.C) + c.out_hw)
        if not discriminate:
            return x, dout
        good = ref.maxpool_backward(dout, (x, c.pool, c.stride))
        if all(rel_error(good, m(x, dout)) > 1e-3 for m in discriminate):
            return x, dout
    return x, dout


def _maxpool_forward_case(g, c, shapes_only=False):
    label = c.label()

    def run():
        x, _ = _draw_pool_x(g, c)
        res = g.invoke("maxpool_forward", (x, c.pool, c.stride), label, _out_usable)
        out = _unpack(res.value, 2, "maxpool_forward", "(out, cache)", label)[0]
        expected = ref.maxpool_forward(x, c.pool, c.stride)[0]
        out = _array(out, "out", expected.shape, label, _pool_shape_hint(c))
        if shapes_only:
            return
        line = _compare("out", out, expected, label, [
            (lambda: ref.avgpool_forward(x, c.pool, c.stride)[0], "this is average pooling, not max pooling")])
        if line:
            raise CaseFailure("failed", line)
    return run


def _maxpool_backward_case(g, c, ties=False, overlap=False, shapes_only=False):
    label = c.label() + (" (with ties)" if ties else "")
    discriminate = []
    if ties:
        discriminate = [lambda x, d: _pool_to_all_maxima(x, d, c), lambda x, d: _pool_to_last_max(x, d, c)]
    elif overlap:
        discriminate = [lambda x, d: _pool_overwrite(x, d, c, False), lambda x, d: _pool_overwrite(x, d, c, True)]

    def run():
        x, dout = _draw_pool_x(g, c, ties=ties, discriminate=discriminate)
        cache = (x, c.pool, c.stride)
        res = g.invoke("maxpool_backward", (dout, cache), label)
        dx = _array(res.value, "dx", x.shape, label)
        if shapes_only:
            return
        line = _compare("dx", dx, ref.maxpool_backward(dout, cache), label,
                        _pool_backward_candidates(x, dout, c))
        if line:
            raise CaseFailure("failed", line)
    return run


# --------------------------------------------------------------------------- the checks

def _cell(grade_id, make_cases):
    def check(call, rng, budgets=None, probe=None):
        g = _Grader(call, rng, budgets)
        cases = make_cases(g)
        if probe is not None:
            cases = cases + [probe]
        return _run_cell(grade_id, cases)
    check.__name__ = f"check_{grade_id}"
    check.__doc__ = GRADED_CELLS[grade_id].description
    return check


def _zero_pad_cases(g):
    def case(pad):
        label = f"case pad {pad}: x (2, 3, 4, 5)"

        def run():
            x = g.rng.standard_normal((2, 3, 4, 5))
            res = g.invoke("zero_pad", (x, pad), label)
            expected = ref.zero_pad(x, pad)

            def hint(shape):
                if tuple(shape) == (2 + 2 * pad, 3 + 2 * pad, 4 + 2 * pad, 5 + 2 * pad):
                    return "only the last two axes (H, W) are padded"
                if tuple(shape) == (2, 3, 4 + pad, 5 + pad):
                    return "pad zeros on both sides, not only one"
                return None
            got = _array(res.value, "padded x", expected.shape, label, hint)
            line = _compare("padded x", got, expected, label)
            if line:
                raise CaseFailure("failed", line)
        return run
    return [case(p) for p in (0, 1, 2)]


def _conv_inputs_cases(g):
    c = ConvCase(2, 3, 6, 5, 2, 3, 2, 2, 1, "inputs")
    x, w, b = c.draw(g.rng)
    return [_inputs_case(g, "conv_forward", (x, w, b, c.stride, c.pad), c.label(),
                         lambda v: _unpack(v, 2, "conv_forward", "(out, cache)", c.label()))]


def _conv_backward_inputs_cases(g):
    c = ConvCase(2, 3, 6, 5, 2, 3, 2, 2, 1, "inputs")
    x, w, b = c.draw(g.rng)
    dout = g.rng.standard_normal((c.N, c.F) + c.out_hw)
    return [_inputs_case(g, "conv_backward", (dout, (x, w, b, c.stride, c.pad)), c.label(),
                         lambda v: _unpack(v, 3, "conv_backward", "(dx, dw, db)", c.label()))]


def _maxpool_inputs_cases(g, backward):
    c = PoolCase(2, 3, 7, 6, 3, 2, "inputs")
    x, dout = _draw_pool_x(g, c)
    if backward:
        return [_inputs_case(g, "maxpool_backward", (dout, (x, c.pool, c.stride)), c.label(),
                             lambda v: _array(v, "dx", x.shape, c.label()))]
    return [_inputs_case(g, "maxpool_forward", (x, c.pool, c.stride), c.label(),
                         lambda v: _unpack(v, 2, "maxpool_forward", "(out, cache)", c.label()))]


_NUMERIC = {"basic", "padding", "stride", "uneven", "nonsquare"}

CHECKS: "dict[str, Callable]" = {
    "zero_pad": _cell("zero_pad", _zero_pad_cases),
    "conv_forward_shapes": _cell("conv_forward_shapes",
                                 lambda g: [_conv_forward_shape_case(g, c) for c in CONV_SHAPE_CASES]),
    **{f"conv_forward_{k}": _cell(f"conv_forward_{k}",
                                  (lambda k: lambda g: [_conv_forward_case(g, c) for c in CONV_CASES[k]])(k))
       for k in CONV_CASES},
    "conv_forward_inputs_unchanged": _cell("conv_forward_inputs_unchanged", _conv_inputs_cases),
    "conv_backward_shapes": _cell("conv_backward_shapes",
                                  lambda g: [_conv_backward_case(g, c, shapes_only=True) for c in CONV_SHAPE_CASES]),
    **{f"conv_backward_{k}": _cell(f"conv_backward_{k}", (lambda k: lambda g: [
        _conv_backward_case(g, c, numeric=k in _NUMERIC) for c in CONV_CASES[k]])(k)) for k in CONV_CASES},
    "conv_backward_inputs_unchanged": _cell("conv_backward_inputs_unchanged", _conv_backward_inputs_cases),
    "maxpool_forward_shapes": _cell("maxpool_forward_shapes",
                                    lambda g: [_maxpool_forward_case(g, c, True) for c in POOL_SHAPE_CASES]),
    **{f"maxpool_forward_{k}": _cell(f"maxpool_forward_{k}",
                                     (lambda k: lambda g: [_maxpool_forward_case(g, c) for c in POOL_CASES[k]])(k))
       for k in ("basic", "overlap", "general")},
    "maxpool_forward_inputs_unchanged": _cell("maxpool_forward_inputs_unchanged",
                                              lambda g: _maxpool_inputs_cases(g, False)),
    "maxpool_backward_shapes": _cell("maxpool_backward_shapes", lambda g: [
        _maxpool_backward_case(g, c, shapes_only=True) for c in POOL_SHAPE_CASES]),
    "maxpool_backward_basic": _cell("maxpool_backward_basic",
                                    lambda g: [_maxpool_backward_case(g, c) for c in POOL_CASES["basic"]]),
    "maxpool_backward_overlap": _cell("maxpool_backward_overlap", lambda g: [
        _maxpool_backward_case(g, c, overlap=True) for c in POOL_CASES["overlap"]]),
    "maxpool_backward_ties": _cell("maxpool_backward_ties", lambda g: [
        _maxpool_backward_case(g, c, ties=True) for c in POOL_CASES["ties"]]),
    "maxpool_backward_general": _cell("maxpool_backward_general",
                                      lambda g: [_maxpool_backward_case(g, c) for c in POOL_CASES["general"]]),
    "maxpool_backward_inputs_unchanged": _cell("maxpool_backward_inputs_unchanged",
                                               lambda g: _maxpool_inputs_cases(g, True)),
}
assert set(CHECKS) == set(GRADED_CELLS), set(CHECKS) ^ set(GRADED_CELLS)

# the cell that owns each backward function's time-budget probe
PROBE_CELL = {"conv_backward": "conv_backward_channels", "maxpool_backward": "maxpool_backward_general"}

TIMEOUT_MESSAGE = (
    "{func} is too slow: on the larger case {case} {detail}. The budget is {factor:g} times the time of a "
    "plain loop implementation of the same layer (at least {minimum:g} s); every cell of {func} scores 0.")


def _probe(func, call, rng, budgets):
    """Run the larger probe case of a backward function: (CaseFailure or None, runner for the cell)."""
    g = _Grader(call, rng, budgets)
    if func == "conv_backward":
        run = _conv_backward_case(g, CONV_PROBE)
        c = CONV_PROBE
        case = f"x {(c.N, c.C, c.H, c.W)}, w {(c.F, c.C, c.HH, c.WW)}"
        args = (np.zeros((c.N, c.F) + c.out_hw), (np.zeros((c.N, c.C, c.H, c.W)),
                np.zeros((c.F, c.C, c.HH, c.WW)), np.zeros(c.F), c.stride, c.pad))
    else:
        run = _maxpool_backward_case(g, POOL_PROBE)
        c = POOL_PROBE
        case = f"x {(c.N, c.C, c.H, c.W)}, pool {c.pool}, stride {c.stride}"
        args = (np.zeros((c.N, c.C) + c.out_hw), (np.zeros((c.N, c.C, c.H, c.W)), c.pool, c.stride))
    try:
        run()
        failure = None
    except CaseFailure as exc:
        failure = exc
        if exc.status == "timeout":
            budget = g.budgets(func, args)
            detail = getattr(exc, "detail", "") or ""
            if detail.startswith(func + " "):   # "conv_backward used 9.1 s of CPU time, over ..."
                detail = "it" + detail[len(func):]
            else:
                detail = f"it ran past its budget of {budget:.2f} s"
            exc.lines = [TIMEOUT_MESSAGE.format(func=func, case=case, detail=detail.rstrip("."),
                                                factor=BUDGET_FACTOR, minimum=MIN_BUDGET_S)]

    def replay():
        if failure is not None:
            raise failure
    return failure, replay


def run_check(grade_id, call, rng, budgets=None):
    """Run one cell's check (its probe included, for the probe cells)."""
    func = GRADED_CELLS[grade_id].function
    if PROBE_CELL.get(func) != grade_id:
        return CHECKS[grade_id](call, rng, budgets)
    failure, replay = _probe(func, call, rng, budgets)
    if failure is not None and failure.status == "timeout":
        return make_verdict(grade_id, "timeout", failure.lines)
    return CHECKS[grade_id](call, rng, budgets, replay)


def grade_notebook(notebook, call, rng, budgets=None, ungradable=None):
    """Verdicts for every graded cell of notebook, in table order.

    ungradable maps a function name to the reason its cells are not run
    (status ``ungradable``, score 0).
    """
    ungradable = ungradable or {}
    verdicts = []
    for func in functions_of(notebook):
        ids = cells_of(notebook, func)
        if func in ungradable:
            verdicts += [make_verdict(gid, "ungradable", [ungradable[func]]) for gid in ids]
            continue
        probe_cell, replay = None, None
        if func in PROBE_CELL:
            failure, replay = _probe(func, call, rng, budgets)
            probe_cell = PROBE_CELL[func]
            if failure is not None and failure.status == "timeout":
                verdicts += [make_verdict(gid, "timeout", failure.lines) for gid in ids]
                continue
        own = [CHECKS[gid](call, rng, budgets, replay if gid == probe_cell else None) for gid in ids]
        verdicts += _gate_inputs_unchanged(func, own)
    return verdicts


def _gate_inputs_unchanged(func, verdicts):
    """Leaving the inputs alone earns its point only for a function that computes something.

    Without this rule a stub such as ``return np.zeros(...), None`` would score the
    inputs_unchanged cell: it passes only if at least one value cell of func passed too.
    """
    inputs_id = f"{func}_inputs_unchanged"
    value_ids = [v.grade_id for v in verdicts if v.grade_id not in (inputs_id, f"{func}_shapes")]
    if not value_ids or not any(v.grade_id == inputs_id and v.status == "passed" for v in verdicts):
        return verdicts
    if any(v.status == "passed" for v in verdicts if v.grade_id in value_ids):
        return verdicts
    reason = (f"{func} left its inputs unchanged, but this point is given only together with at least one "
              f"passing value test of {func} ({', '.join(value_ids)})")
    return [make_verdict(v.grade_id, "failed", [reason]) if v.grade_id == inputs_id else v for v in verdicts]


# --------------------------------------------------------------------------- the registry

# assignment -> its notebooks, in order.  Every grade_id in GRADED_CELLS is bound to a check in
# CHECKS; autograder.assignment holds the notebooks to this table (release and validate refuse
# a graded cell without a check, a check without a cell, and points that differ).
ASSIGNMENTS = {ASSIGNMENT: NOTEBOOKS}


def register(assignment, notebook, grade_id, function, points, check, description=""):
    """Bind grade_id (a graded cell of assignment/notebook) to check(call, rng, budgets=None, probe=None).

    A course adds an assignment without editing the grader: a module that calls
    ``register`` once per graded cell (see ``autograder.assignment.load_check_modules``).
    The check returns a ``Verdict`` (``make_verdict``).  grade_ids are unique across the course.
    """
    if grade_id in GRADED_CELLS and GRADED_CELLS[grade_id].notebook != notebook:
        raise ValueError(f"grade_id '{grade_id}' is already registered for notebook "
                         f"'{GRADED_CELLS[grade_id].notebook}'")
    if any(notebook in nbs for a, nbs in ASSIGNMENTS.items() if a != assignment):
        raise ValueError(f"notebook '{notebook}' already belongs to another assignment")
    GRADED_CELLS[grade_id] = GradedCell(function, notebook, float(points), description)
    CHECKS[grade_id] = check
    if notebook not in ASSIGNMENTS.get(assignment, ()):
        ASSIGNMENTS[assignment] = tuple(ASSIGNMENTS.get(assignment, ())) + (notebook,)


def notebooks_of(assignment):
    """The notebooks of a registered assignment (KeyError when it is not registered)."""
    return ASSIGNMENTS[assignment]
