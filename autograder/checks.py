"""The grader's check machinery: the registry of graded cells, verdicts, tolerance, time budgets,
time-budget probes and hints.  It knows no assignment: each assignment's checks live in a module
of ``autograder/assignments/`` that registers them (``autograder.assignment.load_check_modules``
imports them all; code that reads the registry loads them first).

``GRADED_CELLS`` is the canonical table of graded cells: grade_id ->
``GradedCell(function, notebook, points, description)``, filled by ``register``.  Every
grade_id has one check, ``CHECKS[grade_id](call, rng, budgets=None, probe=None) -> Verdict``:

* ``call(func, args, kwargs, budget_s, return_args=False) -> CallResult`` runs
  one learner function (the sandbox's ``LearnerProcess.call``; ``budget_s`` is a
  number or a ``LazyBudget``); only its ``status``, ``value``, ``args_after``
  (asked for by the cases that judge the arguments) and ``message`` are read, and ``value`` is
  validated here (``_array``: container, exact shape, real dtype cast to float64 -- a complex
  array whose imaginary parts are all exactly zero is its real part --, finite)
  before it is compared with the reference (``_compare``: ``rel_error <= TOL``, 1e-12).
* ``rng`` is a ``numpy.random.Generator``; the shapes of the cases are fixed by the
  assignment's module, their values are drawn from ``rng``.
* the verdict's ``status`` is one of passed, failed, error, timeout,
  out-of-memory, killed (``ungradable`` is set by the batch, never here);
  ``score`` is all or nothing; ``feedback`` names the failing case and, where a wrong
  answer matches a known mistake (``_compare``'s candidates), names the mistake.  Feedback
  never shows input arrays or expected values.

``grade_notebook(notebook, call, rng)`` grades every cell of a notebook in
table order.  It runs the time-budget probe of a function first, where one is registered
(``register_probe``): when the probe runs out of time, every cell of that function scores
zero with status ``timeout``.

Time budget of a call: ``max(1.0 s, 20 x`` the time of the function's loop reference
(``register_loop_reference``) on the same inputs), measured once per shape and cached in a
``Budgets`` object (one per grading run; ``DEFAULT_BUDGETS`` is shared by the process), and
only for calls that run past the 1 s minimum (``LazyBudget``).
"""
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .gradcheck import rel_error

# Against the reference, for every assignment.  Measured on the cnn_layers checks
# (tests/test_tolerance.py, every case, many draws): honest float64 implementations -- loops,
# scalar loops, einsum, im2col, any
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


GRADED_CELLS = {}     # grade_id -> GradedCell, in registration (notebook) order
CHECKS: "dict[str, Callable]" = {}   # grade_id -> check(call, rng, budgets=None, probe=None)
# assignment -> its notebooks, in order.  Every grade_id in GRADED_CELLS is bound to a check in
# CHECKS; autograder.assignment holds the notebooks to this table (release and validate refuse
# a graded cell without a check, a check without a cell, and points that differ).
ASSIGNMENTS = {}
MODULES = {}          # assignment -> the modules that registered its checks (the Gradescope bundle ships them)


def functions_of(notebook):
    """Graded function names of a notebook, in table order."""
    return list(dict.fromkeys(c.function for c in GRADED_CELLS.values() if c.notebook == notebook))


def cells_of(notebook, function=None):
    """grade_ids of a notebook (optionally of one function), in table order."""
    return [gid for gid, c in GRADED_CELLS.items()
            if c.notebook == notebook and (function is None or c.function == function)]




def max_score(notebook=None, assignment=None):
    """Points of a notebook, of an assignment, or of every registered cell."""
    notebooks = ASSIGNMENTS[assignment] if assignment is not None else None
    return float(sum(c.points for c in GRADED_CELLS.values() if notebook in (None, c.notebook)
                     and (notebooks is None or c.notebook in notebooks)))



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

LOOP_REFERENCES = {}   # function -> its plain loop implementation (the yardstick of its time budget)


def register_loop_reference(function, loop):
    """Time budgets of function's calls are measured on loop(*args) (see ``Budgets``)."""
    LOOP_REFERENCES[function] = loop



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


# --------------------------------------------------------------------------- inputs left alone

ARG_NAMES = {}   # function -> {"args[0]": "x", "args[1][0]": "cache x", ...}: the feedback's names of arguments


def register_arg_names(function, names):
    """How the feedback names the arguments of function that a call modified in place."""
    ARG_NAMES[function] = dict(names)


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
            names = ", ".join(ARG_NAMES.get(func, {}).get(p, p) for p in changed)
            raise CaseFailure("failed", f"{label}: {func} modified its input(s) in place: {names}. "
                              "Work on copies (np.pad, .copy()) and leave the arguments as they were")
    return run




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



# --------------------------------------------------------------------------- the checks

def _cell(grade_id, make_cases):
    """The check of grade_id: the cases make_cases(grader) gives (plus the function's probe, if any)."""
    def check(call, rng, budgets=None, probe=None):
        g = _Grader(call, rng, budgets)
        cases = make_cases(g)
        if probe is not None:
            cases = cases + [probe]
        return _run_cell(grade_id, cases)
    check.__name__ = f"check_{grade_id}"
    check.__qualname__ = check.__name__
    cell = GRADED_CELLS.get(grade_id)
    check.__doc__ = cell.description if cell is not None else None
    return check


# --------------------------------------------------------------------------- time-budget probes

PROBE_CELL = {}   # function -> the cell that owns its time-budget probe
PROBES = {}       # function -> probe(grader) -> (run, case description, args of the budget)

TIMEOUT_MESSAGE = (
    "{func} is too slow: on the larger case {case} {detail}. The budget is {factor:g} times the time of a "
    "plain loop implementation of the same layer (at least {minimum:g} s); every cell of {func} scores 0.")


def register_probe(function, cell, probe):
    """Run probe before the cells of function are graded: a larger case that only a fast enough
    implementation finishes within its budget.

    ``probe(grader)`` returns ``(run, case, args)``: ``run()`` is the case (raises ``CaseFailure``),
    ``case`` describes its size for the feedback, ``args`` are arguments of the size of the case
    (their values do not matter) that measure its budget.  When the probe runs out of time, every
    cell of function scores 0 (status ``timeout``); otherwise its outcome counts as one more case
    of ``cell``.
    """
    PROBE_CELL[function] = cell
    PROBES[function] = probe


def _probe(func, call, rng, budgets):
    """Run the probe of func: (CaseFailure or None, runner for the probe's cell)."""
    g = _Grader(call, rng, budgets)
    run, case, args = PROBES[func](g)
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

def register(assignment, notebook, grade_id, function, points, check, description=""):
    """Bind grade_id (a graded cell of assignment/notebook) to check(call, rng, budgets=None, probe=None).

    A course adds an assignment without editing the grader: a module of ``autograder/assignments/``
    that calls ``register`` once per graded cell (see ``autograder.assignment.load_check_modules``).
    The check returns a ``Verdict`` (``make_verdict``).  grade_ids are unique across the course.
    """
    if grade_id in GRADED_CELLS and GRADED_CELLS[grade_id].notebook != notebook:
        raise ValueError(f"grade_id '{grade_id}' is already registered for notebook "
                         f"'{GRADED_CELLS[grade_id].notebook}'")
    if any(notebook in nbs for a, nbs in ASSIGNMENTS.items() if a != assignment):
        raise ValueError(f"notebook '{notebook}' already belongs to another assignment")
    GRADED_CELLS[grade_id] = GradedCell(function, notebook, float(points), description)
    CHECKS[grade_id] = check
    if description and not getattr(check, "__doc__", None):
        try:
            check.__doc__ = description
        except (AttributeError, TypeError):   # a check whose doc cannot be set keeps none
            pass
    if notebook not in ASSIGNMENTS.get(assignment, ()):
        ASSIGNMENTS[assignment] = tuple(ASSIGNMENTS.get(assignment, ())) + (notebook,)
    caller = sys._getframe(1).f_globals.get("__name__", "")
    MODULES.setdefault(assignment, set()).add(caller)


def notebooks_of(assignment):
    """The notebooks of a registered assignment (KeyError when it is not registered)."""
    return ASSIGNMENTS[assignment]


class PoolCase(NamedTuple):
    """A pooling case of the hidden checks: x (N, C, H, W), a pool x pool window, the stride;
    shared by the assignments that grade a pooling layer."""
    N: int
    C: int
    H: int
    W: int
    pool: int
    stride: int
    name: str = ""

    @property
    def out_hw(self):
        return ((self.H - self.pool) // self.stride + 1, (self.W - self.pool) // self.stride + 1)

    def label(self):
        return f"case {self.name}: x ({self.N}, {self.C}, {self.H}, {self.W}), pool {self.pool}, stride {self.stride}"
