"""The hidden checks of the ``cnn_layers`` assignment: convolution and max pooling.

Registers, through ``autograder.checks.register``, one check per graded cell of
``solutions/cnn_layers/convolution.ipynb`` and ``solutions/cnn_layers/pooling.ipynb``
(``CELLS`` below: function, points, what the cell tests), the plain loop references that
set the functions' time budgets, the names of their arguments (for the feedback on inputs
modified in place), and the time-budget probes of the two backward functions.

The shapes of the cases are fixed here (``CONV_CASES``, ``POOL_CASES``, ...), their values
are drawn from the grader's ``rng``; every returned value is compared with the reference
layers of ``autograder.reference`` (``checks.TOL``), and a wrong answer that matches a
known mistake, computed from the reference, is named in the feedback.
"""
import math
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import reference as ref
from .. import checks
from ..checks import (NUMERIC_TOL, CaseFailure, _array, _cell, _compare, _inputs_case,
                      _out_usable, _unpack, numerical_gradient_stacked, register, register_arg_names,
                      register_loop_reference, register_probe, PoolCase)
from ..gradcheck import rel_error

ASSIGNMENT = "cnn_layers"

# notebook -> [(grade_id, function, points, description)], in notebook order
CELLS = {
    "convolution": [
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
    ],
    "pooling": [
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
    ],
}
NOTEBOOKS = tuple(CELLS)


def max_score(notebook=None):
    """Points of the assignment (or of one of its notebooks)."""
    return float(sum(pts for nb, rows in CELLS.items() if notebook in (None, nb) for _g, _f, pts, _d in rows))


# --------------------------------------------------------------------------- loop references (time budgets)

def _zero_pad_loops(x, pad):
    return ref.zero_pad(x, pad)


LOOP_REFERENCES = {
    "zero_pad": _zero_pad_loops,
    "conv_forward": ref.conv_forward_loops,
    "conv_backward": ref.conv_backward_loops,
    "maxpool_forward": ref.maxpool_forward_loops,
    "maxpool_backward": ref.maxpool_backward_loops,
}

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

CHECKS = {
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
assert set(CHECKS) == {gid for rows in CELLS.values() for gid, _f, _p, _d in rows}

# the cell that owns each backward function's time-budget probe
PROBE_CELL = {"conv_backward": "conv_backward_channels", "maxpool_backward": "maxpool_backward_general"}


def _conv_backward_probe(g):
    c = CONV_PROBE
    args = (np.zeros((c.N, c.F) + c.out_hw), (np.zeros((c.N, c.C, c.H, c.W)),
            np.zeros((c.F, c.C, c.HH, c.WW)), np.zeros(c.F), c.stride, c.pad))
    return _conv_backward_case(g, c), f"x {(c.N, c.C, c.H, c.W)}, w {(c.F, c.C, c.HH, c.WW)}", args


def _maxpool_backward_probe(g):
    c = POOL_PROBE
    args = (np.zeros((c.N, c.C) + c.out_hw), (np.zeros((c.N, c.C, c.H, c.W)), c.pool, c.stride))
    return _maxpool_backward_case(g, c), f"x {(c.N, c.C, c.H, c.W)}, pool {c.pool}, stride {c.stride}", args


PROBES = {"conv_backward": _conv_backward_probe, "maxpool_backward": _maxpool_backward_probe}


# --------------------------------------------------------------------------- registration

for _notebook, _rows in CELLS.items():
    for _gid, _function, _points, _description in _rows:
        register(ASSIGNMENT, _notebook, _gid, _function, _points, CHECKS[_gid], _description)
for _function, _loop in LOOP_REFERENCES.items():
    register_loop_reference(_function, _loop)
for _function, _names in _ARG_NAMES.items():
    register_arg_names(_function, _names)
for _function, _probe in PROBES.items():
    register_probe(_function, PROBE_CELL[_function], _probe)

# this assignment's rows of the course's table: grade_id -> checks.GradedCell
GRADED_CELLS = {gid: checks.GRADED_CELLS[gid] for rows in CELLS.values() for gid, _f, _p, _d in rows}
