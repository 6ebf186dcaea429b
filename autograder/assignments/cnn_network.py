"""Hidden checks of the ``cnn_network`` assignment (chapter 8 of the book), run in the trusted parent.

One notebook, ``network``: the layers of the book's small network (ReLU, affine, average
pooling, softmax loss), the network itself (``cnn_loss``) and one step of SGD with momentum.
The contracts are those of ``solutions/cnn_network/network.ipynb``.  The convolution and the
max pooling are not graded here: the notebook carries the course's ``cnn_layers`` layers in
its locked helper cell, which the grader runs as released (``autograder.submission``), so a
learner whose convolution lost points in ``cnn_layers`` does not lose them again.

Every check follows ``autograder.checks``: one registered check per graded cell, cases drawn
from the cell's ``rng``, values validated (``_array``) and compared with the reference
(``rel_error <= TOL``) and, for the network's gradients, with central differences; a wrong
answer that matches a known mistake names it.

Two comparisons differ from the other layers':

* ``softmax_loss`` is held to ``|loss - ref| / max(1, max|scores|) <= TOL`` and
  ``N * max|dscores - ref| / max(1, max|scores|) <= TOL``.  A stable implementation written
  as ``m + log sum exp(s - m)`` differs from the reference by about eps * max|scores| (up to
  3.5e-12 at scores of 1e4), and every entry of dscores is at most 1/N in magnitude; measured
  over scores up to 1e4 with spreads from 1e-3 to 1e4, honest styles (that one, the
  probabilities then the log, a one-hot matrix) stay below 2e-15 on both measures.
* ``cnn_loss_training`` trains the learner's ``cnn_loss`` in the parent: the gradients come
  from the learner's process, the update is the reference ``sgd_momentum`` (so a wrong
  ``sgd_momentum``, graded in its own cells, does not sink this one), the initial weights are
  fixed, the split of scikit-learn's digits, the mini-batches and a secret renaming of the
  ten classes are drawn from the cell's ``rng``, and the test accuracy is computed by the
  reference forward pass on the trained weights.  With correct gradients the accuracy after
  ``TRAIN_STEPS`` steps was at least 0.845 on each of 1000 draws (mean 0.924, 1st percentile
  0.870); the cell asks for ``TRAIN_MIN_ACCURACY``.  Training on the digits' true labels
  instead of the ones given reached 0.10 on average (0.30 at most over 20 draws).
"""
import math
from typing import NamedTuple

import numpy as np

from .. import checks
from .. import reference as ref
from ..checks import (CaseFailure, NUMERIC_TOL, TOL, _array, _cell, _compare, _first_hint, _out_usable,
                      PoolCase, _unpack, register)
from ..gradcheck import rel_error

ASSIGNMENT = "cnn_network"
NOTEBOOK = "network"

# the training check: network width, data and optimiser
TRAIN_FILTERS = 4
TRAIN_BATCH = 32
TRAIN_STEPS = 100
TRAIN_TEST = 400               # test images drawn from the 1797 digits; the rest is the training set
TRAIN_LEARNING_RATE = 0.05
TRAIN_MOMENTUM = 0.9
TRAIN_INIT_SEED = 12345        # the initial weights are the same for every learner and every grading
TRAIN_MIN_ACCURACY = 0.75
TRAIN_BUDGET_S = 30.0          # the learner's time for all the steps together


# --------------------------------------------------------------------------- the cells

CELLS = [  # grade_id, function, points, description
    ("relu_forward_values", "relu_forward", 1, "2D and 4D inputs with negative values and exact zeros"),
    ("relu_forward_inputs_unchanged", "relu_forward", 1, "x equal before and after the call"),
    ("relu_backward_values", "relu_backward", 1, "dx = dout where x > 0, 0 elsewhere, with exact zeros in x"),
    ("relu_backward_inputs_unchanged", "relu_backward", 1, "dout and the cache unchanged"),
    ("affine_forward_2d", "affine_forward", 1, "x (N, D)"),
    ("affine_forward_nd", "affine_forward", 2, "x (N, d1, ..., dk), k = 2 and 3"),
    ("affine_forward_inputs_unchanged", "affine_forward", 1, "x, w, b unchanged"),
    ("affine_backward_dx", "affine_backward", 2, "dx for x (N, D)"),
    ("affine_backward_dw", "affine_backward", 2, "dw for x (N, D)"),
    ("affine_backward_db", "affine_backward", 1, "db, a sum over the batch"),
    ("affine_backward_nd", "affine_backward", 1, "dx shaped like x (N, d1, ..., dk), and dw"),
    ("affine_backward_inputs_unchanged", "affine_backward", 1, "dout and the cache unchanged"),
    ("avgpool_forward_shapes", "avgpool_forward", 1, "output shapes: pool, stride, uneven, non-square, gaps"),
    ("avgpool_forward_basic", "avgpool_forward", 2, "pool 2, stride 2, even sizes, N=2, C=3"),
    ("avgpool_forward_overlap", "avgpool_forward", 2, "pool 3 stride 2, pool 2 stride 1"),
    ("avgpool_forward_gaps", "avgpool_forward", 2, "stride > pool, uneven and non-square sizes"),
    ("avgpool_forward_inputs_unchanged", "avgpool_forward", 1, "x unchanged"),
    ("avgpool_backward_shapes", "avgpool_backward", 1, "shape of dx"),
    ("avgpool_backward_basic", "avgpool_backward", 2, "pool 2, stride 2: dout / pool^2 to every element"),
    ("avgpool_backward_overlap", "avgpool_backward", 2, "overlapping windows add up"),
    ("avgpool_backward_gaps", "avgpool_backward", 2, "stride > pool (rows and columns no window covers), uneven"),
    ("avgpool_backward_inputs_unchanged", "avgpool_backward", 1, "dout and the cache unchanged"),
    ("softmax_loss_loss", "softmax_loss", 2, "the mean cross-entropy on moderate scores"),
    ("softmax_loss_dscores", "softmax_loss", 2, "dscores = (softmax - one-hot) / N on moderate scores"),
    ("softmax_loss_large", "softmax_loss", 2, "scores up to 1e4 in magnitude, any spread: finite and right"),
    ("softmax_loss_inputs_unchanged", "softmax_loss", 1, "scores and y unchanged"),
    ("cnn_loss_scores", "cnn_loss", 2, "scores for y = None: k = 3 and 5, C = 1 and 2, non-square"),
    ("cnn_loss_loss", "cnn_loss", 1, "the loss"),
    ("cnn_loss_grads_keys", "cnn_loss", 1, "grads has the keys and shapes of params"),
    ("cnn_loss_grads", "cnn_loss", 3, "every gradient against the reference"),
    ("cnn_loss_numeric", "cnn_loss", 1, "every gradient against central differences of the loss"),
    ("cnn_loss_training", "cnn_loss", 3, "the network trains on the digits"),
    ("sgd_momentum_defaults", "sgd_momentum", 1, "config None and {}: learning rate 1e-2, momentum 0.9, velocity 0"),
    ("sgd_momentum_values", "sgd_momentum", 2, "next_w for a given learning rate, momentum and velocity"),
    ("sgd_momentum_velocity", "sgd_momentum", 2, "config['velocity'] = v, and three chained steps"),
    ("sgd_momentum_inputs_unchanged", "sgd_momentum", 1, "w and dw unchanged"),
]

LOOP_REFERENCES = {
    "relu_forward": ref.relu_forward,
    "relu_backward": ref.relu_backward,
    "affine_forward": ref.affine_forward,
    "affine_backward": ref.affine_backward,
    "avgpool_forward": ref.avgpool_forward_loops,
    "avgpool_backward": ref.avgpool_backward_loops,
    "softmax_loss": ref.softmax_loss,
    "cnn_loss": ref.cnn_loss_loops,
    "sgd_momentum": ref.sgd_momentum,
}

ARG_NAMES = {
    "relu_forward": ("x",),
    "relu_backward": ("dout", "cache x"),
    "affine_forward": ("x", "w", "b"),
    "affine_backward": ("dout", ("cache x", "cache w", "cache b")),
    "avgpool_forward": ("x", "pool", "stride"),
    "avgpool_backward": ("dout", ("cache x", "cache pool", "cache stride")),
    "softmax_loss": ("scores", "y"),
    "sgd_momentum": ("w", "dw"),
}


# --------------------------------------------------------------------------- shared pieces

def _fail(line):
    raise CaseFailure("failed", line)


def _check(name, got, expected, label, candidates=()):
    line = _compare(name, got, expected, label, candidates)
    if line:
        _fail(line)


def _number(value, name, label):
    """A returned scalar (float, 0-d array, NumPy scalar) as a finite float."""
    arr = np.asarray(value) if isinstance(value, (int, float, np.ndarray, np.generic)) else None
    if arr is None or arr.shape != () or arr.dtype.kind not in "iuf":
        got = type(value).__name__ if arr is None else f"an array of shape {arr.shape}"
        _fail(f"{label}: {name} must be a number (a float), it is {got}")
    number = float(arr)
    if not math.isfinite(number):
        _fail(f"{label}: {name} is {number}")
    return number


def _invoke_hint(g, func, args, label, hint, usable=None, return_args=False):
    """g.invoke, with a hint added to the feedback when the learner's code raised an error."""
    try:
        return g.invoke(func, args, label, usable, return_args)
    except CaseFailure as exc:
        text = " ".join(exc.lines)
        if (exc.status == "error" and hint and "is not defined" not in text
                and (hint is not PAD_HINT or any(w in text for w in SHAPE_WORDS))):
            exc.lines.append(f"Hint: {hint}")
        raise


def _same(before, after):
    if isinstance(before, np.ndarray):
        try:
            a = np.asarray(after)
            return a.shape == before.shape and a.dtype.kind == before.dtype.kind and np.array_equal(a, before)
        except Exception:
            return False
    if isinstance(before, (tuple, list)):
        return (isinstance(after, (tuple, list)) and len(after) == len(before)
                and all(_same(b, a) for b, a in zip(before, after)))
    try:
        return bool(before == after)
    except Exception:
        return False


def _copy(obj):
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_copy(o) for o in obj)
    return obj


def _inputs_case(g, func, args, label, validate, judged=None):
    """The arguments (those in judged: their positions) are equal before and after the call."""
    judged = range(len(args)) if judged is None else judged

    def run():
        originals = _copy(args)
        res = g.invoke(func, args, label, _out_usable if func.endswith("_forward") else None,
                       return_args=True)
        validate(res.value)
        after = getattr(res, "args_after", None)
        if after is None or len(after) != len(args):
            raise CaseFailure("error", f"{label}: the arguments could not be read back after the call")
        changed = []
        for k in judged:
            names = ARG_NAMES[func][k]
            if isinstance(names, tuple) and isinstance(originals[k], tuple):
                if not isinstance(after[k], (tuple, list)) or len(after[k]) != len(originals[k]):
                    changed.append("cache")
                    continue
                changed += [n for n, b, a in zip(names, originals[k], after[k]) if not _same(b, a)]
            elif not _same(originals[k], after[k]):
                changed.append(names if isinstance(names, str) else f"args[{k}]")
        if changed:
            _fail(f"{label}: {func} modified its input(s) in place: {', '.join(changed)}. "
                  "Work on new arrays (np.maximum, np.where, x.copy(), a = a - m instead of a -= m) and "
                  "leave the arguments as they were")
    return run




# --------------------------------------------------------------------------- relu

def _relu_x(rng, shape):
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(2, flat.size // 6), replace=False)] = 0.0   # exact zeros: the kink
    return x


RELU_SHAPES = [(4, 7), (2, 3, 4, 5)]


def _relu_forward_cases(g):
    def case(shape):
        label = f"case x {shape} (with exact zeros)"

        def run():
            x = _relu_x(g.rng, shape)
            res = g.invoke("relu_forward", (x,), label, _out_usable)
            out = _unpack(res.value, 2, "relu_forward", "(out, cache)", label)[0]
            out = _array(out, "out", x.shape, label)
            _check("out", out, np.maximum(x, 0), label, [
                (lambda: np.abs(x), "negative values are made positive (abs): ReLU sets them to 0"),
                (lambda: x, "negative values pass through: out = max(x, 0)"),
                (lambda: np.minimum(x, 0), "this is min(x, 0); ReLU is max(x, 0)"),
                (lambda: (x > 0).astype(float), "out is the mask x > 0; it is max(x, 0), the values themselves")])
        return run
    return [case(s) for s in RELU_SHAPES]


def _relu_backward_cases(g):
    def case(shape):
        label = f"case x {shape} (with exact zeros)"

        def run():
            x = _relu_x(g.rng, shape)
            dout = g.rng.standard_normal(shape)
            res = g.invoke("relu_backward", (dout, x), label)
            dx = _array(res.value, "dx", x.shape, label)
            _check("dx", dx, ref.relu_backward(dout, x), label, [
                (lambda: np.where(x >= 0, dout, 0.0),
                 "the gradient passes where x == 0; the contract sets dx to 0 where x == 0 (pass it where x > 0 only)"),
                (lambda: np.where(x < 0, dout, 0.0), "the gradient passes where x < 0; it passes where x > 0"),
                (lambda: np.where(x <= 0, dout, 0.0), "the gradient passes where x <= 0; it passes where x > 0"),
                (lambda: (x > 0).astype(float), "dx is the mask x > 0 alone; multiply it by dout"),
                (lambda: dout, "dout passes everywhere; it passes only where x > 0"),
                (lambda: np.maximum(dout, 0), "this is max(dout, 0): the mask comes from x (the cache), not dout")])
        return run
    return [case(s) for s in RELU_SHAPES]


def _relu_inputs_cases(g, backward):
    label = "case x (3, 2, 4, 5)"
    x = _relu_x(g.rng, (3, 2, 4, 5))
    if backward:
        dout = g.rng.standard_normal(x.shape)
        return [_inputs_case(g, "relu_backward", (dout, x), label,
                             lambda v: _array(v, "dx", x.shape, label))]
    return [_inputs_case(g, "relu_forward", (x,), label,
                         lambda v: _unpack(v, 2, "relu_forward", "(out, cache)", label))]


# --------------------------------------------------------------------------- affine

AFFINE_2D = [(4, 6, 3), (1, 5, 2), (7, 3, 4)]            # N, D, M
AFFINE_ND = [((3, 2, 4, 5), 7), ((4, 6, 2), 3)]          # x shape, M
RESHAPE_HINT = "x has shape (N, d1, ..., dk): flatten it to (N, D) first, x.reshape(N, -1)"


def _affine_draw(rng, x_shape, M):
    D = int(np.prod(x_shape[1:]))
    return rng.standard_normal(x_shape), rng.standard_normal((D, M)), rng.standard_normal(M)


def _affine_forward_case(g, x_shape, M):
    label = f"case x {x_shape}, w ({int(np.prod(x_shape[1:]))}, {M})"

    def run():
        x, w, b = _affine_draw(g.rng, x_shape, M)
        res = _invoke_hint(g, "affine_forward", (x, w, b), label, RESHAPE_HINT if len(x_shape) > 2 else None,
                           _out_usable)
        out = _unpack(res.value, 2, "affine_forward", "(out, cache)", label)[0]
        expected = ref.affine_forward(x, w, b)[0]
        out = _array(out, "out", expected.shape, label,
                     lambda s: RESHAPE_HINT if len(s) != 2 else None)
        xf = x.reshape(x.shape[0], -1)
        _check("out", out, expected, label, [
            (lambda: xf @ w, "the bias b is missing"),
            (lambda: xf @ w + b.sum(), "b is added as one number; b[m] belongs to output column m")])
    return run


def _affine_backward_case(g, x_shape, M, judge):
    label = f"case x {x_shape}, w ({int(np.prod(x_shape[1:]))}, {M})"

    def run():
        x, w, b = _affine_draw(g.rng, x_shape, M)
        N = x.shape[0]
        dout = g.rng.standard_normal((N, M))
        res = _invoke_hint(g, "affine_backward", (dout, (x, w, b)), label,
                           RESHAPE_HINT if len(x_shape) > 2 else None)
        dx, dw, db = _unpack(res.value, 3, "affine_backward", "(dx, dw, db)", label)
        rdx, rdw, rdb = ref.affine_backward(dout, (x, w, b))
        xf = x.reshape(N, -1)
        if "dx" in judge:
            dx = _array(dx, "dx", x.shape, label, lambda s: (
                "dx has the shape of x: reshape dout @ w.T back to x.shape" if tuple(s) == xf.shape else None))
            _check("dx", dx, rdx, label, [
                (lambda: (dout @ w.T / N).reshape(x.shape), "dx is divided by N; the 1/N lives in the loss"),
                (lambda: -rdx, "dx has the wrong sign")])
        if "dw" in judge:
            dw = _array(dw, "dw", w.shape, label, lambda s: (
                "dw has the shape of w (D, M): x.reshape(N, -1).T @ dout" if tuple(s) == (M, xf.shape[1]) else None))
            _check("dw", dw, rdw, label, [
                (lambda: rdw / N if N > 1 else None, "dw is averaged over the batch: it is a sum over n"),
                (lambda: np.outer(xf[0], dout[0]) if N > 1 else None, "dw keeps only the first example")])
        if "db" in judge:
            db = _array(db, "db", b.shape, label, lambda s: (
                "db has the shape of b (M,): sum dout over the batch axis" if tuple(s) == dout.shape else None))
            _check("db", db, rdb, label, [
                (lambda: dout.mean(axis=0) if N > 1 else None, "db is averaged over the batch: it is a sum over n"),
                (lambda: dout[0] if N > 1 else None, "db keeps only the first example: sum dout over n"),
                (lambda: np.full(M, dout.sum()), "db sums over both axes: sum over the batch axis only")])
    return run


def _affine_inputs_cases(g, backward):
    x_shape, M = (3, 2, 4, 5), 6
    label = f"case x {x_shape}, w (40, {M})"
    x, w, b = _affine_draw(g.rng, x_shape, M)
    if backward:
        dout = g.rng.standard_normal((3, M))
        return [_inputs_case(g, "affine_backward", (dout, (x, w, b)), label,
                             lambda v: _unpack(v, 3, "affine_backward", "(dx, dw, db)", label))]
    return [_inputs_case(g, "affine_forward", (x, w, b), label,
                         lambda v: _unpack(v, 2, "affine_forward", "(out, cache)", label))]


# --------------------------------------------------------------------------- average pooling

POOL_CASES = {
    "basic": [PoolCase(2, 3, 4, 4, 2, 2, "basic 1"), PoolCase(2, 3, 6, 8, 2, 2, "basic 2")],
    "overlap": [PoolCase(2, 2, 7, 7, 3, 2, "overlap 1"), PoolCase(1, 3, 5, 6, 2, 1, "overlap 2"),
                PoolCase(2, 1, 6, 5, 3, 1, "overlap 3")],
    "gaps": [PoolCase(2, 2, 8, 8, 2, 3, "gaps 1"), PoolCase(1, 2, 9, 7, 1, 2, "gaps 2"),
             PoolCase(3, 2, 7, 10, 2, 3, "gaps 3"), PoolCase(2, 3, 5, 9, 2, 2, "uneven")],
}
POOL_SHAPE_CASES = [PoolCase(1, 1, 4, 4, 2, 2, "shape 1"), PoolCase(2, 3, 6, 6, 3, 3, "shape 2"),
                    PoolCase(1, 1, 5, 5, 3, 2, "shape 3"), PoolCase(1, 1, 4, 4, 2, 1, "shape 4"),
                    PoolCase(1, 1, 5, 7, 2, 2, "shape 5"), PoolCase(3, 4, 7, 6, 2, 3, "shape 6"),
                    PoolCase(2, 1, 9, 8, 1, 3, "shape 7")]


def _pool_shape_hint(c):
    Ho, Wo = c.out_hw
    up = (math.ceil((c.H - c.pool) / c.stride) + 1, math.ceil((c.W - c.pool) / c.stride) + 1)

    def hint(shape):
        if len(shape) != 4:
            return "out has four axes (N, C, H', W')"
        hw = tuple(shape[2:])
        if hw == up and up != (Ho, Wo):
            return "output size rounded up: windows that do not fit are dropped, H' = (H - pool) // stride + 1"
        if hw == (c.H // c.pool, c.W // c.pool) and c.stride != c.pool:
            return "the stride is ignored: H' = (H - pool) // stride + 1"
        if hw == (c.H - c.pool + 1, c.W - c.pool + 1) and c.stride > 1:
            return "the stride is ignored: window (i, j) starts at row i*stride, column j*stride"
        return None
    return hint


def _avg_overwrite(dout, c, x_shape):
    dx = np.zeros(x_shape)
    share = dout / (c.pool * c.pool)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            r, s = i * c.stride, j * c.stride
            dx[:, :, r:r + c.pool, s:s + c.pool] = share[:, :, i, j][:, :, None, None]
    return dx


def _avg_forward_case(g, c, shapes_only=False):
    label = c.label()

    def run():
        x = g.rng.standard_normal((c.N, c.C, c.H, c.W))
        res = g.invoke("avgpool_forward", (x, c.pool, c.stride), label, _out_usable)
        out = _unpack(res.value, 2, "avgpool_forward", "(out, cache)", label)[0]
        expected = ref.avgpool_forward(x, c.pool, c.stride)[0]
        out = _array(out, "out", expected.shape, label, _pool_shape_hint(c))
        if shapes_only:
            return
        _check("out", out, expected, label, [
            (lambda: expected * c.pool * c.pool, "out is the sum of the window; average pooling divides it by pool^2"),
            (lambda: expected * c.pool, "out is divided by pool; the window holds pool^2 elements"),
            (lambda: ref.maxpool_forward(x, c.pool, c.stride)[0], "this is max pooling, not average pooling")])
    return run


def _avg_backward_case(g, c, shapes_only=False):
    label = c.label()

    def run():
        x = g.rng.standard_normal((c.N, c.C, c.H, c.W))
        dout = g.rng.standard_normal((c.N, c.C) + c.out_hw)
        cache = (x, c.pool, c.stride)
        res = g.invoke("avgpool_backward", (dout, cache), label)
        dx = _array(res.value, "dx", x.shape, label)
        if shapes_only:
            return
        expected = ref.avgpool_backward(dout, cache)
        _check("dx", dx, expected, label, [
            (lambda: expected * c.pool * c.pool if c.pool > 1 else None,
             "dout is copied to every element of its window: each element gets dout / pool^2"),
            (lambda: expected * c.pool if c.pool > 1 else None,
             "dout is divided by pool; each element of the window gets dout / pool^2"),
            (lambda: _avg_overwrite(dout, c, x.shape) if c.stride < c.pool else None,
             "overlapping windows overwrite each other in dx: contributions must be added (+=)"),
            (lambda: ref.maxpool_backward(dout, cache), "the gradient goes to the maximum, as in max pooling")])
    return run


def _avg_inputs_cases(g, backward):
    c = PoolCase(2, 3, 7, 6, 3, 2, "inputs")
    x = g.rng.standard_normal((c.N, c.C, c.H, c.W))
    if backward:
        dout = g.rng.standard_normal((c.N, c.C) + c.out_hw)
        return [_inputs_case(g, "avgpool_backward", (dout, (x, c.pool, c.stride)), c.label(),
                             lambda v: _array(v, "dx", x.shape, c.label()))]
    return [_inputs_case(g, "avgpool_forward", (x, c.pool, c.stride), c.label(),
                         lambda v: _unpack(v, 2, "avgpool_forward", "(out, cache)", c.label()))]


# --------------------------------------------------------------------------- softmax loss

OVERFLOW_HINT = ("np.exp overflows past about 709: subtract each row's maximum from the scores before "
                 "the exponential (it changes no probability), or compute log-probabilities as "
                 "s - m - log(sum(exp(s - m)))")


def _labels(rng, N, K):
    """N labels in [0, K), not all equal: a mistake in indexing the labels shows."""
    y = rng.integers(0, K, N)
    if N > 1 and np.all(y == y[0]):
        y[1] = (y[0] + 1 + rng.integers(0, K - 1)) % K
    return y


def _softmax_scores(rng, kind):
    """(scores, y) for a case: moderate, or large scores (up to 1e4) with every kind of spread."""
    if kind == "moderate":
        N, K = int(rng.integers(4, 9)), int(rng.integers(3, 11))
        return rng.normal(0.0, 2.0, (N, K)), _labels(rng, N, K)
    if kind == "large":
        K = 6
        rows = [
            rng.uniform(-1, 1, K) * 10.0 ** 4,                          # spread 1e4
            1e4 - rng.uniform(0, 1e-2, K),                              # all near 1e4, tiny spread
            -1e4 + rng.uniform(0, 30, K),                               # all near -1e4
            np.array([1e4, -1e4, 0.0, 5e3, -5e3, 1e4 - 1]),             # one class dominates
            rng.normal(0.0, 1.0, K) + 800.0,                            # past exp's overflow, spread 1
            rng.normal(0.0, 50.0, K),
        ]
        scores = np.array(rows)
        perm = rng.permutation(len(rows))
        scores = scores[perm]
        y = _labels(rng, len(rows), K)
        y[perm.tolist().index(3)] = 1                                   # the -1e4 class of that row
        return scores, y
    raise ValueError(kind)


def _softmax_error(got, expected, scale, N=1):
    return float(N * np.max(np.abs(np.asarray(got) - expected), initial=0.0) / max(1.0, scale))


def _softmax_candidates(scores, y, loss_or_d):
    N, K = scores.shape
    loss, d = ref.softmax_loss(scores, y)
    p = d * N
    p[np.arange(N), y] += 1.0
    onehot = np.eye(K)[y]
    if loss_or_d == "loss":
        return [
            (lambda: loss * N if N > 1 else None, "the loss is summed over the batch; it is the mean over the N examples"),
            (lambda: -loss, "the loss has the wrong sign: it is -log of the probability of the label"),
            (lambda: -np.mean(np.log(p).sum(axis=1)),
             "the log-probabilities of all classes are added; the loss takes only the label's, p[n, y[n]]"),
            (lambda: -np.mean(np.log(p[:, 0])) if np.any(y != 0) else None,
             "the loss uses class 0 for every example; index with the labels: p[np.arange(N), y]")]

    def columns():
        c = p.copy()
        c[:, y] -= 1.0
        return c / N

    return [
        (lambda: d * N if N > 1 else None, "dscores is not divided by N: the loss is a mean, so dscores = (p - Y) / N"),
        (lambda: -d, "dscores has the wrong sign: it is (softmax - one-hot) / N"),
        (lambda: p / N, "the one-hot label is not subtracted: dscores = (p - Y) / N"),
        (columns, "the label is subtracted with p[:, y] -= 1, which hits every row in the labels' columns; "
                  "subtract 1 at p[np.arange(N), y] only"),
        (lambda: (p - onehot.T[:N, :K]) / N if K >= N else None,
         "the one-hot matrix is transposed: Y[n, y[n]] = 1"),
    ]


def _softmax_case(g, kind, judge):
    def run():
        scores, y = _softmax_scores(g.rng, kind)
        N, K = scores.shape
        label = f"case scores ({N}, {K})" + (", magnitudes up to 1e4" if kind == "large" else "")
        res = g.invoke("softmax_loss", (scores, y), label)
        value = _unpack(res.value, 2, "softmax_loss", "(loss, dscores)", label)
        loss_ref, d_ref = ref.softmax_loss(scores, y)
        scale = float(np.max(np.abs(scores)))
        if "loss" in judge:
            loss = np.asarray(value[0]) if isinstance(value[0], (np.ndarray, np.generic, float, int)) else None
            if kind == "large" and loss is not None and loss.shape == () and not np.isfinite(loss.astype(float)):
                _fail(f"{label}: loss is {float(loss)}. Hint: {OVERFLOW_HINT}")
            loss = _number(value[0], "loss", label)
            err = _softmax_error(loss, loss_ref, scale)
            if err > TOL:
                hint = _first_hint(np.array(loss), _softmax_candidates(scores, y, "loss"))
                _fail(f"{label}: loss is off (error {err:.1e} in units of max(1, max|scores|), limit {TOL:.0e})"
                      + (f". Hint: {hint}" if hint else ""))
        if "dscores" in judge:
            d = value[1]
            arr = np.asarray(d) if isinstance(d, (np.ndarray, np.generic)) else None
            if (kind == "large" and arr is not None and arr.dtype.kind == "f" and arr.shape == scores.shape
                    and not np.all(np.isfinite(arr))):
                _fail(f"{label}: dscores contains NaN or infinite values. Hint: {OVERFLOW_HINT}")
            d = _array(d, "dscores", scores.shape, label)
            err = _softmax_error(d, d_ref, scale, N)
            if err > TOL:
                hint = _first_hint(d, _softmax_candidates(scores, y, "d"))
                _fail(f"{label}: dscores is off (error {err:.1e} in units of max(1, max|scores|) / N, "
                      f"limit {TOL:.0e})" + (f". Hint: {hint}" if hint else ""))
    return run


def _softmax_inputs_cases(g):
    scores, y = _softmax_scores(g.rng, "moderate")
    scores = scores + 3.0       # a row maximum far from 0: subtracting it in place shows
    label = f"case scores {scores.shape}"
    return [_inputs_case(g, "softmax_loss", (scores, y), label,
                         lambda v: _unpack(v, 2, "softmax_loss", "(loss, dscores)", label))]


# --------------------------------------------------------------------------- the network

class NetCase(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    F: int
    k: int
    K: int
    name: str = ""

    def label(self):
        D = self.F * (self.H // 2) * (self.W // 2)
        return (f"case {self.name}: x ({self.N}, {self.C}, {self.H}, {self.W}), W1 ({self.F}, {self.C}, "
                f"{self.k}, {self.k}), W2 ({D}, {self.K})")

    def draw(self, rng):
        D = self.F * (self.H // 2) * (self.W // 2)
        params = {"W1": rng.normal(0.0, 0.5, (self.F, self.C, self.k, self.k)),
                  # away from 0, so that no pre-activation sits on the ReLU's kink
                  "b1": rng.choice([-1.0, 1.0], self.F) * rng.uniform(0.05, 0.3, self.F),
                  "W2": rng.normal(0.0, 0.3, (D, self.K)), "b2": rng.normal(0.0, 0.1, self.K)}
        x = rng.standard_normal((self.N, self.C, self.H, self.W))
        return params, x, _labels(rng, self.N, self.K)


NET_CASES = [NetCase(4, 1, 8, 8, 3, 3, 10, "digits-like"), NetCase(3, 2, 6, 10, 2, 5, 4, "k = 5, non-square"),
             NetCase(2, 3, 7, 5, 4, 1, 3, "k = 1, odd sizes")]
NET_NUMERIC = NetCase(2, 1, 4, 6, 2, 3, 3, "tiny")
PAD_HINT = ("follow the shapes along the network: with stride 1 and pad (k - 1) // 2 a k x k filter (k odd) "
            "keeps H and W, the pooling halves them, affine_forward flattens (N, F, H // 2, W // 2) to (N, D), "
            "W2 has D = F * (H // 2) * (W // 2) rows, and each backward pass returns a gradient shaped like its "
            "layer's input")
SHAPE_WORDS = ("shape", "mismatch", "broadcast", "unpack", "dimension", "size")


def _net_variant(params, x, y=None, pad=None, relu=True, relu_back=True, pool="max"):
    """The network with one known mistake (for hints); None where the mistake does not apply."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    if pad == (W1.shape[2] - 1) // 2:
        return None                       # the right padding: no mistake here
    p = (W1.shape[2] - 1) // 2 if pad is None else pad
    a, cc = ref.conv_forward(x, W1, b1, 1, p)
    h = np.maximum(a, 0) if relu else a
    if pool == "max":
        m, pc = ref.maxpool_forward(h, 2, 2)
    else:
        m, pc = ref.avgpool_forward(h, 2, 2)
    if m.reshape(m.shape[0], -1).shape[1] != W2.shape[0]:
        return None
    scores, ac = ref.affine_forward(m, W2, b2)
    if y is None:
        return scores
    loss, ds = ref.softmax_loss(scores, y)
    dm, dW2, db2 = ref.affine_backward(ds, ac)
    dh = ref.maxpool_backward(dm, pc) if pool == "max" else ref.avgpool_backward(dm, pc)
    da = np.where(a > 0, dh, 0.0) if (relu and relu_back) else dh
    _, dW1, db1 = ref.conv_backward(da, cc)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


NET_MISTAKES = [
    (dict(relu=False), "the ReLU is missing between the convolution and the pooling"),
    (dict(pool="avg"), "the pooling averages; the network's pooling is max pooling (pool 2, stride 2)"),
    (dict(pad=0), "the convolution has no padding: " + PAD_HINT),
    (dict(relu_back=False), "the gradient skips the ReLU on the way back: call relu_backward between "
                            "maxpool_backward and conv_backward"),
]


def _draw_net(g, c):
    """(params, x, y) for a case, redrawn until every known mistake of NET_MISTAKES changes the
    scores and the gradients (a ReLU matters only where the winner of a pooling window is negative)."""
    for _ in range(50):
        params, x, y = c.draw(g.rng)
        scores = ref.cnn_loss(params, x)
        _, grads = ref.cnn_loss(params, x, y)
        distinct = True
        for kw, _hint in NET_MISTAKES:
            wrong_scores = _net_variant(params, x, **kw)
            wrong = _net_variant(params, x, y, **kw)
            if wrong is None:
                continue
            if kw.get("relu_back", True) and rel_error(wrong_scores, scores) < 1e-3:
                distinct = False
            if max(rel_error(wrong[1][k], grads[k]) for k in grads) < 1e-3:
                distinct = False
        if distinct:
            return params, x, y
    return params, x, y


def _grads_dict(value, params, label):
    """The learner's grads: a dict with the keys and shapes of params, as float64 arrays."""
    if not isinstance(value, dict):
        _fail(f"{label}: grads must be a dict with the keys of params (W1, b1, W2, b2), it is a "
              f"{type(value).__name__}")
    missing = [k for k in params if k not in value]
    if missing:
        extra = sorted(set(value) - set(params))
        _fail(f"{label}: grads has no key {', '.join(missing)}"
              + (f" (it has {', '.join(map(str, extra))}: the keys are those of params, W1, b1, W2, b2)"
                 if extra else ""))
    return {k: _array(value[k], f"grads['{k}']", params[k].shape, label) for k in params}


def _net_call(g, c, params, x, y, label):
    args = (params, x) if y is None else (params, x, y)
    res = _invoke_hint(g, "cnn_loss", args, label, PAD_HINT)
    if y is None:
        return res.value
    return _unpack(res.value, 2, "cnn_loss", "(loss, grads) when y is given", label)


def _net_scores_case(g, c):
    label = c.label() + ", y None"

    def run():
        params, x, _ = _draw_net(g, c)
        expected = ref.cnn_loss(params, x)
        scores = _array(_net_call(g, c, params, x, None, label), "scores", expected.shape, label,
                        lambda s: "with y = None, cnn_loss returns the scores (N, K) alone" if len(s) == 0 else None)
        _check("scores", scores, expected, label,
               [((lambda kw=kw: _net_variant(params, x, **kw)), h) for kw, h in NET_MISTAKES])
    return run


def _net_loss_case(g, c):
    label = c.label()

    def run():
        params, x, y = _draw_net(g, c)
        loss, _ = _net_call(g, c, params, x, y, label)
        loss = _number(loss, "loss", label)
        expected, _ = ref.cnn_loss(params, x, y)
        err = abs(loss - expected) / max(1.0, abs(expected))
        if err > TOL:
            hint = None
            for kw, h in NET_MISTAKES:
                v = _net_variant(params, x, y, **kw)
                if v is not None and abs(v[0] - loss) <= 1e-6 * max(1.0, abs(v[0])):
                    hint = h
                    break
            if hint is None and abs(loss - expected * c.N) <= 1e-6 * abs(expected * c.N):
                hint = "the loss is summed over the batch; it is the mean"
            _fail(f"{label}: loss is off (relative error {err:.1e}, limit {TOL:.0e})"
                  + (f". Hint: {hint}" if hint else ""))
    return run


def _net_keys_case(g, c):
    label = c.label()

    def run():
        params, x, y = c.draw(g.rng)
        _, grads = _net_call(g, c, params, x, y, label)
        _grads_dict(grads, params, label)
    return run


def _net_grads_case(g, c):
    label = c.label()

    def run():
        params, x, y = _draw_net(g, c)
        _, grads = _net_call(g, c, params, x, y, label)
        grads = _grads_dict(grads, params, label)
        _, expected = ref.cnn_loss(params, x, y)
        variants = [(_net_variant(params, x, y, **kw), h) for kw, h in NET_MISTAKES]
        for key in ("W2", "b2", "W1", "b1"):
            _check(f"grads['{key}']", grads[key], expected[key], label,
                   [((lambda v=v, key=key: None if v is None else v[1][key]), h) for v, h in variants]
                   + [((lambda key=key: expected[key] / c.N), f"grads['{key}'] is divided by N once more: "
                                                              "the 1/N is already in dscores")])
    return run


def _numeric_grads(params, x, y, h=1e-5):
    num = {}
    for key, value in params.items():
        grad = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            plus = {**params, key: value.copy()}
            plus[key][i] = old + h
            minus = {**params, key: value.copy()}
            minus[key][i] = old - h
            grad[i] = (ref.cnn_loss(plus, x, y)[0] - ref.cnn_loss(minus, x, y)[0]) / (2 * h)
        num[key] = grad
    return num


def _net_numeric_case(g, c):
    label = c.label() + ", against central differences"

    def run():
        params, x, y = _draw_net(g, c)
        _, grads = _net_call(g, c, params, x, y, label)
        grads = _grads_dict(grads, params, label)
        num = _numeric_grads(params, x, y)
        for key in ("W2", "b2", "W1", "b1"):
            err = rel_error(grads[key], num[key])
            if err > NUMERIC_TOL:
                _fail(f"{label}: grads['{key}'] disagrees with central differences of the loss (relative error "
                      f"{err:.1e}, limit {NUMERIC_TOL:.0e}): it is not the gradient of the loss cnn_loss returns")
    return run


# the training check

def _digits():
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) in [0, 1], and their labels (loaded once)."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits
        d = load_digits()
        _DIGITS = (d.images[:, None, :, :] / 16.0, d.target.astype(np.int64))
    return _DIGITS


_DIGITS = None


def initial_params():
    """The training check's initial weights: the same for every learner."""
    r = np.random.default_rng(TRAIN_INIT_SEED)
    F = TRAIN_FILTERS
    return {"W1": r.normal(0.0, np.sqrt(2 / 9), (F, 1, 3, 3)), "b1": np.full(F, 0.1),
            "W2": r.normal(0.0, np.sqrt(1 / (F * 16)), (F * 16, 10)), "b2": np.zeros(10)}


def train(loss_and_grads, rng):
    """Train the network from initial_params with gradients from loss_and_grads(params, x, y).

    The split, the batches and a relabelling of the ten classes are drawn from rng; the update
    is the reference sgd_momentum.  Returns (test accuracy by the reference forward pass, losses).

    The relabelling keeps a learner honest: the digits are public, so a cnn_loss could carry a
    table of their true labels (or weights trained on them) and ignore the labels it is given.
    Under a secret renaming of the classes only gradients of the labels given train the network;
    for correct gradients the renaming changes nothing but the names.
    """
    X, Y = _digits()
    Y = rng.permutation(10)[Y]
    perm = rng.permutation(len(X))
    test, training = perm[:TRAIN_TEST], perm[TRAIN_TEST:]
    params = initial_params()
    configs = {k: {"learning_rate": TRAIN_LEARNING_RATE, "momentum": TRAIN_MOMENTUM} for k in params}
    losses = []
    for _ in range(TRAIN_STEPS):
        batch = rng.choice(training, TRAIN_BATCH, replace=False)
        loss, grads = loss_and_grads(params, X[batch], Y[batch])
        losses.append(loss)
        for k in params:
            params[k], configs[k] = ref.sgd_momentum(params[k], grads[k], configs[k])
    scores = ref.cnn_loss(params, X[test])
    return float(np.mean(scores.argmax(axis=1) == Y[test])), losses


def _training_case(g):
    label = (f"training: {TRAIN_STEPS} steps of SGD with momentum (learning rate {TRAIN_LEARNING_RATE:g}, "
             f"momentum {TRAIN_MOMENTUM:g}), batches of {TRAIN_BATCH} digits, W1 ({TRAIN_FILTERS}, 1, 3, 3)")

    def run():
        spent = [0.0]

        def step(params, x, y):
            if spent[0] > TRAIN_BUDGET_S:
                raise CaseFailure("timeout", f"{label}: the steps together took more than {TRAIN_BUDGET_S:g} s "
                                             "of your cnn_loss' time")
            res = _invoke_hint(g, "cnn_loss", (params, x, y), label, PAD_HINT)
            spent[0] += float(getattr(res, "cpu_seconds", None) or getattr(res, "seconds", 0.0) or 0.0)
            loss, grads = _unpack(res.value, 2, "cnn_loss", "(loss, grads) when y is given", label)
            grads = _grads_dict(grads, params, label)
            return _number(loss, "loss", label), grads

        accuracy, losses = train(step, g.rng)
        if accuracy < TRAIN_MIN_ACCURACY:
            _fail(f"{label}: the test accuracy after training on your gradients is {accuracy:.3f}, below "
                  f"{TRAIN_MIN_ACCURACY:g} (correct gradients reach 0.84 or more on every draw); the loss went "
                  f"from {losses[0]:.3f} to {losses[-1]:.3f}")
    return run


# --------------------------------------------------------------------------- sgd with momentum

SGD_SHAPES = [(3, 4), (2, 3, 2, 2)]


def _sgd_step_ref(w, dw, lr, mu, v):
    v = mu * v - lr * dw
    return w + v, v


def _sgd_candidates(w, dw, lr, mu, v):
    return [
        (lambda: w + mu * v + lr * dw, "the step has the wrong sign: v = momentum * v - learning_rate * dw, "
                                       "then next_w = w + v"),
        (lambda: w - (mu * v - lr * dw), "next_w = w - v; the velocity already points downhill: next_w = w + v"),
        (lambda: w - lr * dw, "the velocity is ignored: v = momentum * v - learning_rate * dw, next_w = w + v"),
        (lambda: w + mu * v - dw, "the learning rate is missing: v = momentum * v - learning_rate * dw"),
        (lambda: w + v - lr * dw, "the momentum factor is missing: v = momentum * v - learning_rate * dw"),
    ]


def _sgd_config(value, label):
    if not isinstance(value, dict):
        _fail(f"{label}: sgd_momentum must return (next_w, config) with config a dict, it returned a "
              f"{type(value).__name__} as config")
    return value


def _sgd_defaults_case(g, config):
    label = f"case config {config!r}, w (3, 4)"

    def run():
        w, dw = g.rng.standard_normal((3, 4)), g.rng.standard_normal((3, 4))
        args = (w, dw) if config is None else (w, dw, dict(config))
        res = g.invoke("sgd_momentum", args, label)
        next_w = _unpack(res.value, 2, "sgd_momentum", "(next_w, config)", label)[0]
        next_w = _array(next_w, "next_w", w.shape, label)
        _check("next_w", next_w, w - 1e-2 * dw, label, [
            (lambda: w + 1e-2 * dw, "the step has the wrong sign: next_w = w + v with v = -learning_rate * dw"),
            (lambda: w - dw, "the default learning rate 1e-2 is not used"),
            (lambda: w - 1e-3 * dw, "the default learning rate is 1e-2")])
    return run


def _sgd_values_case(g, shape):
    label = f"case w {shape}, given learning_rate, momentum and velocity"

    def run():
        w, dw, v = (g.rng.standard_normal(shape) for _ in range(3))
        lr, mu = float(g.rng.uniform(0.01, 0.5)), float(g.rng.uniform(0.5, 0.95))
        config = {"learning_rate": lr, "momentum": mu, "velocity": v}
        res = g.invoke("sgd_momentum", (w, dw, config), label)
        next_w = _array(_unpack(res.value, 2, "sgd_momentum", "(next_w, config)", label)[0], "next_w", shape, label)
        _check("next_w", next_w, _sgd_step_ref(w, dw, lr, mu, v)[0], label, _sgd_candidates(w, dw, lr, mu, v))
    return run


def _sgd_velocity_case(g, chained):
    shape = (2, 5)
    label = (f"case w {shape}, three steps, each given the config the previous one returned" if chained
             else f"case w {shape}, config['velocity'] after one step")

    def run():
        w, v = g.rng.standard_normal(shape), g.rng.standard_normal(shape)
        lr, mu = float(g.rng.uniform(0.05, 0.3)), float(g.rng.uniform(0.5, 0.95))
        config = {"learning_rate": lr, "momentum": mu} if chained else {"learning_rate": lr, "momentum": mu,
                                                                        "velocity": v}
        ref_w, ref_v = w, np.zeros(shape) if chained else v
        for step in range(3 if chained else 1):
            dw = g.rng.standard_normal(shape)
            old_v = ref_v
            res = g.invoke("sgd_momentum", (w, dw, config), label)
            next_w, config = _unpack(res.value, 2, "sgd_momentum", "(next_w, config)", label)
            config = _sgd_config(config, label)
            ref_w, ref_v = _sgd_step_ref(ref_w, dw, lr, mu, ref_v)
            if "velocity" not in config:
                _fail(f"{label}: the returned config has no 'velocity'; store v there: config['velocity'] = v")
            got_v = _array(config["velocity"], "config['velocity']", shape, label)
            _check(f"config['velocity'] after step {step + 1}", got_v, ref_v, label, [
                (lambda: -ref_v, "the velocity has the wrong sign: v = momentum * v - learning_rate * dw"),
                (lambda old=old_v: old, "config['velocity'] is the old velocity: store the new v, "
                                        "config['velocity'] = v")])
            w = _array(next_w, "next_w", shape, label)
            _check(f"next_w after step {step + 1}", w, ref_w, label)
            config = dict(config)
    return run


def _sgd_inputs_cases(g):
    shape = (3, 4)
    label = f"case w {shape}, config with a velocity"
    w, dw, v = (g.rng.standard_normal(shape) for _ in range(3))
    config = {"learning_rate": 0.1, "momentum": 0.9, "velocity": v}
    return [_inputs_case(g, "sgd_momentum", (w, dw, config), label,
                         lambda val: _unpack(val, 2, "sgd_momentum", "(next_w, config)", label), judged=(0, 1))]


# --------------------------------------------------------------------------- the registry

CASES = {
    "relu_forward_values": _relu_forward_cases,
    "relu_forward_inputs_unchanged": lambda g: _relu_inputs_cases(g, False),
    "relu_backward_values": _relu_backward_cases,
    "relu_backward_inputs_unchanged": lambda g: _relu_inputs_cases(g, True),
    "affine_forward_2d": lambda g: [_affine_forward_case(g, (N, D), M) for N, D, M in AFFINE_2D],
    "affine_forward_nd": lambda g: [_affine_forward_case(g, s, M) for s, M in AFFINE_ND],
    "affine_forward_inputs_unchanged": lambda g: _affine_inputs_cases(g, False),
    "affine_backward_dx": lambda g: [_affine_backward_case(g, (N, D), M, ("dx",)) for N, D, M in AFFINE_2D],
    "affine_backward_dw": lambda g: [_affine_backward_case(g, (N, D), M, ("dw",)) for N, D, M in AFFINE_2D],
    "affine_backward_db": lambda g: [_affine_backward_case(g, (N, D), M, ("db",)) for N, D, M in AFFINE_2D],
    "affine_backward_nd": lambda g: [_affine_backward_case(g, s, M, ("dx", "dw")) for s, M in AFFINE_ND],
    "affine_backward_inputs_unchanged": lambda g: _affine_inputs_cases(g, True),
    "avgpool_forward_shapes": lambda g: [_avg_forward_case(g, c, True) for c in POOL_SHAPE_CASES],
    **{f"avgpool_forward_{k}": (lambda k: lambda g: [_avg_forward_case(g, c) for c in POOL_CASES[k]])(k)
       for k in POOL_CASES},
    "avgpool_forward_inputs_unchanged": lambda g: _avg_inputs_cases(g, False),
    "avgpool_backward_shapes": lambda g: [_avg_backward_case(g, c, True) for c in POOL_SHAPE_CASES],
    **{f"avgpool_backward_{k}": (lambda k: lambda g: [_avg_backward_case(g, c) for c in POOL_CASES[k]])(k)
       for k in POOL_CASES},
    "avgpool_backward_inputs_unchanged": lambda g: _avg_inputs_cases(g, True),
    "softmax_loss_loss": lambda g: [_softmax_case(g, "moderate", ("loss",)) for _ in range(3)],
    "softmax_loss_dscores": lambda g: [_softmax_case(g, "moderate", ("dscores",)) for _ in range(3)],
    "softmax_loss_large": lambda g: [_softmax_case(g, "large", ("loss", "dscores")) for _ in range(2)],
    "softmax_loss_inputs_unchanged": _softmax_inputs_cases,
    "cnn_loss_scores": lambda g: [_net_scores_case(g, c) for c in NET_CASES],
    "cnn_loss_loss": lambda g: [_net_loss_case(g, c) for c in NET_CASES[:2]],
    "cnn_loss_grads_keys": lambda g: [_net_keys_case(g, NET_CASES[0])],
    "cnn_loss_grads": lambda g: [_net_grads_case(g, c) for c in NET_CASES],
    "cnn_loss_numeric": lambda g: [_net_numeric_case(g, NET_NUMERIC)],
    "cnn_loss_training": lambda g: [_training_case(g)],
    "sgd_momentum_defaults": lambda g: [_sgd_defaults_case(g, None), _sgd_defaults_case(g, {})],
    "sgd_momentum_values": lambda g: [_sgd_values_case(g, s) for s in SGD_SHAPES],
    "sgd_momentum_velocity": lambda g: [_sgd_velocity_case(g, False), _sgd_velocity_case(g, True)],
    "sgd_momentum_inputs_unchanged": _sgd_inputs_cases,
}
assert [gid for gid, *_ in CELLS] == list(dict.fromkeys(gid for gid, *_ in CELLS))
assert set(CASES) == {gid for gid, *_ in CELLS}, set(CASES) ^ {gid for gid, *_ in CELLS}

CHECKS = {gid: _cell(gid, CASES[gid]) for gid, *_ in CELLS}

for _function, _loop in LOOP_REFERENCES.items():
    checks.register_loop_reference(_function, _loop)     # the yardstick of each call's time budget
for _gid, _function, _points, _description in CELLS:
    register(ASSIGNMENT, NOTEBOOK, _gid, _function, _points, CHECKS[_gid], _description)
