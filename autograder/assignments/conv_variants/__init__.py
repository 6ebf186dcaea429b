"""Hidden checks of the ``conv_variants`` assignment (chapters 2, 9 and 10 of the book).

Three notebooks, one graded cell per property of each function:

* ``conv1d``: ``conv1d_forward`` / ``conv1d_backward`` (chapter 2);
* ``dilated_transposed``: ``dilated_conv_forward`` / ``dilated_conv_backward`` and
  ``conv_transpose_forward`` / ``conv_transpose_backward`` (chapter 10);
* ``fast_conv``: ``conv_forward_fast`` / ``conv_backward_fast`` (chapter 9), graded on
  their values and, in a cell of each function's own, on their speed.

Values are compared with the references of ``conv_variants.reference`` (the fast pair with
the course's im2col layer, ``autograder.reference``) within ``checks.TOL``; a backward pass
is graded on the cache of the reference forward pass.  Where a wrong answer matches a known
mistake computed from the reference, the feedback names the mistake.

Time budgets: ``max(1 s, 20 x`` the loop reference of the same call), measured only for a
call that runs past the minimum, as for ``cnn_layers``.  The speed cells time the learner's
call on one large case (N=16, C=16, H=W=32, F=32, 3x3, stride 1, pad 1) against the course's
im2col layer measured the same way: in a sandbox of its own (one BLAS thread, CPU time of the
process tree, inputs and results crossing the same boundary), once per grading run, best of
several timings for both (the learner's on fresh inputs each, a time counting only with right
values).  The learner's best must be at most ``SPEED_FACTOR`` times the reference's; the
learner's code never sees the reference.
"""
import math
import re
import threading
import weakref
from typing import NamedTuple

import numpy as np

from ... import checks
from ... import reference as ref
from ...checks import CaseFailure, _array, _compare, _Grader, _inputs_case, _run_cell, _unpack
from . import reference as vref

ASSIGNMENT = "conv_variants"
SPEED_FACTOR = 3.0      # the learner's CPU time may be at most 3 x the course's im2col layer
SPEED_REPEATS = 5       # timings of each side; the best counts
SPEED_HOPELESS = 10.0   # a timing this many times over the limit ends the cell at once
SPEED_POINTS = 3


# --------------------------------------------------------------------------- cases

class Case(NamedTuple):
    """One configuration: sizes (L,) or (H, W), kernel (K,) or (HH, WW); extra is the dilation
    (dilated), the output_padding (transposed) or 0."""
    N: int
    C: int
    F: int
    size: tuple
    kernel: tuple
    stride: int
    pad: int
    extra: int = 0
    name: str = ""


def _c1(name, N, C, F, L, K, s, p):
    return Case(N, C, F, (L,), (K,), s, p, 0, name)


def _c2(name, N, C, F, H, W, HH, WW, s, p, extra=0):
    return Case(N, C, F, (H, W), (HH, WW), s, p, extra, name)


class Layer:
    """What the checks need to know of one pair of functions."""
    forward = backward = ""
    extra_name = ""
    reference_forward = reference_backward = None

    def w_shape(self, c):
        return (c.F, c.C) + c.kernel

    def out_size(self, c):
        return tuple(vref.conv_output_size(n, k, c.stride, c.pad) for n, k in zip(c.size, c.kernel))

    def label(self, c):
        extra = f", {self.extra_name} {c.extra}" if self.extra_name else ""
        return (f"case {c.name}: x {(c.N, c.C) + c.size}, w {self.w_shape(c)}, stride {c.stride}, "
                f"pad {c.pad}{extra}")

    def draw(self, rng, c):
        return (rng.standard_normal((c.N, c.C) + c.size), rng.standard_normal(self.w_shape(c)),
                rng.standard_normal(c.F))

    def args(self, c, x, w, b):
        return (x, w, b, c.stride, c.pad) + ((c.extra,) if self.extra_name else ())

    def forward_ref(self, c, x, w, b, **change):
        return self.reference_forward(*self.args(c._replace(**change), x, w, b))[0]

    def backward_ref(self, c, dout, x, w, b, **change):
        return self.reference_backward(dout, self.args(c._replace(**change), x, w, b))

    def out_shape_hint(self, c):
        return None

    def error_hint(self, c):
        """What to check when the forward pass raises on case c (None: nothing in particular)."""
        return None

    def forward_candidates(self, c, x, w, b):
        zero = np.zeros_like(b)
        nd = len(c.size)
        flip = (slice(None), slice(None)) + (slice(None, None, -1),) * nd
        per_product = b.reshape((1, -1) + (1,) * nd) * (c.C * math.prod(c.kernel))
        return [
            (lambda: self.forward_ref(c, x, w, zero), "the bias is missing"),
            (lambda: self.forward_ref(c, x, w, zero) + per_product,
             "the bias is added to every product of the window (as in np.sum(window * w[f] + b[f])): "
             "add b[f] once per output position, after the sum"),
            (lambda: self.forward_ref(c, x, w[flip], b),
             "the kernel is flipped: the layer computes a cross-correlation, without flipping w"),
            (lambda: self.forward_ref(c, x[:, :1], w[:, :1], b) if c.C > 1 else None,
             "only the first channel is used: the sum runs over all C channels"),
        ]

    def dx_candidates(self, c, dout, x, w, b):
        nd = len(c.size)
        flip = (slice(None), slice(None)) + (slice(None, None, -1),) * nd
        return [
            (lambda: self.backward_ref(c, dout, x, w[flip], b)[0],
             "dx uses the kernel as it is: in dx the kernel appears flipped (rotated by 180 degrees), "
             "since dx is the full convolution of dout with w"),
            (lambda: self.backward_ref(c, dout, x, w, b, stride=1)[0] if c.stride > 1 else None,
             "the stride is ignored in dx: output i came from the window that starts at i*stride"),
        ]

    def dw_candidates(self, c, dout, x, w, b, dw):
        return [
            (lambda: dw / c.N if c.N > 1 else None, "dw is averaged over the batch: it is a sum over n"),
            (lambda: self.backward_ref(c, dout, x, w, b, stride=1)[1] if c.stride > 1 else None,
             "the stride is ignored in dw: output i came from the window that starts at i*stride"),
        ]

    def db_candidates(self, c, dout, db):
        avg = "db is averaged instead of summed: db[f] is the plain sum of dout[:, f] over the batch and every position"
        positions = math.prod(dout.shape[2:])
        return [(lambda: db / c.N if c.N > 1 else None, avg),
                (lambda: db / (c.N * positions) if c.N * positions > 1 else None, avg),
                (lambda: db / positions if positions > 1 else None, avg)]

    def dx_shape_hint(self, c):
        def hint(shape):
            padded = (c.N, c.C) + tuple(n + 2 * c.pad for n in c.size)
            if c.pad > 0 and tuple(shape) == padded:
                return "the padding is not cropped from dx: remove pad entries on each side, dx has the shape of x"
            if c.pad == 0 and 0 in tuple(shape):
                return ("dx is empty when pad = 0: dx[..., pad:-pad] selects nothing for pad = 0; crop with "
                        "dx[..., pad:pad + L] (pad:pad + H, pad:pad + W in 2D)")
            return None
        return hint


class Conv1d(Layer):
    forward, backward = "conv1d_forward", "conv1d_backward"
    reference_forward = staticmethod(vref.conv1d_forward)
    reference_backward = staticmethod(vref.conv1d_backward)

    def label(self, c):
        return (f"case {c.name}: x {(c.N, c.C) + c.size}, w {self.w_shape(c)}, stride {c.stride}, pad {c.pad}")

    def out_shape_hint(self, c):
        (L,), (K,) = c.size, c.kernel
        right = self.out_size(c)[0]

        def hint(shape):
            if len(shape) != 3:
                return "out has three axes (N, F, L')"
            if shape[1] == c.C and c.C != c.F:
                return "the second axis of out counts filters F, not channels C"
            got = shape[2]
            if got == math.ceil((L + 2 * c.pad - K) / c.stride) + 1 != right:
                return ("output length rounded up: windows that do not fit are dropped, "
                        "L' = (L + 2 pad - K) // stride + 1")
            if c.stride > 1 and got == L + 2 * c.pad - K + 1:
                return "the stride is ignored"
            if c.pad > 0 and got == (L - K) // c.stride + 1:
                return "the padding is ignored"
            return None
        return hint


class Dilated(Layer):
    forward, backward = "dilated_conv_forward", "dilated_conv_backward"
    extra_name = "dilation"
    reference_forward = staticmethod(vref.dilated_conv_forward)
    reference_backward = staticmethod(vref.dilated_conv_backward)

    def out_size(self, c):
        return tuple(vref.conv_output_size(n, k, c.stride, c.pad, c.extra) for n, k in zip(c.size, c.kernel))

    def out_shape_hint(self, c):
        right = self.out_size(c)
        d, s, p = c.extra, c.stride, c.pad

        def rule(f):
            return tuple(f(n, k) for n, k in zip(c.size, c.kernel))
        ignored = rule(lambda n, k: (n + 2 * p - k) // s + 1)
        times_k = rule(lambda n, k: (n + 2 * p - d * k) // s + 1)
        on_input = rule(lambda n, k: (-(-(n + 2 * p) // d) - k) // s + 1)

        def hint(shape):
            if len(shape) != 4:
                return "out has four axes (N, F, H', W')"
            if shape[1] == c.C and c.C != c.F:
                return "the second axis of out counts filters F, not channels C"
            hw = tuple(shape[2:])
            if d > 1 and hw == ignored != right:
                return ("the output size ignores the dilation: a window spans dilation*(HH - 1) + 1 rows, so "
                        "H' = (H + 2*pad - dilation*(HH - 1) - 1) // stride + 1")
            if d > 1 and hw == times_k != right:
                return ("the window spans dilation*(HH - 1) + 1 rows, not dilation*HH: "
                        "H' = (H + 2*pad - dilation*(HH - 1) - 1) // stride + 1")
            if d > 1 and hw == on_input != right:
                return ("the dilation is applied to the input (every dilation-th pixel) instead of the kernel: "
                        "the filter's taps are dilation apart, the window still moves by stride")
            if hw == right[::-1] != right:
                return "H and W (or HH and WW) are mixed up"
            return None
        return hint

    def error_hint(self, c):
        if c.extra > 1:
            return ("where shapes do not match, check the output size, H' = (H + 2*pad - dilation*(HH - 1) - 1) "
                    "// stride + 1, and that tap (u, v) of output (i, j) reads x_padded[..., i*stride + "
                    "u*dilation, j*stride + v*dilation]: the dilation spaces the filter's taps, not the input")
        return None

    def dx_candidates(self, c, dout, x, w, b):
        return super().dx_candidates(c, dout, x, w, b) + [
            (lambda: self.backward_ref(c, dout, x, w, b, extra=1)[0] if c.extra > 1 else None,
             "the dilation is ignored in dx: tap (u, v) of output (i, j) reads x at "
             "(i*stride + u*dilation, j*stride + v*dilation)"),
        ]

    def dw_candidates(self, c, dout, x, w, b, dw):
        return super().dw_candidates(c, dout, x, w, b, dw) + [
            (lambda: self.backward_ref(c, dout, x, w, b, extra=1)[1] if c.extra > 1 else None,
             "the dilation is ignored in dw: tap (u, v) of output (i, j) reads x at "
             "(i*stride + u*dilation, j*stride + v*dilation)"),
        ]


LAYOUT = ("w is read as (F, C, HH, WW): a transposed convolution's w is (C, F, HH, WW) (PyTorch's "
          "conv_transpose2d layout), w[c, f] links input channel c to output channel f")


def _transpose_full(x, w, c, before=0):
    """The uncropped scatter of conv_transpose (bias-free), with before zero rows and columns first and
    output_padding zero rows and columns last."""
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    s, op = c.stride, c.extra
    full = np.zeros((N, F, before + (H - 1) * s + HH + op, before + (W - 1) * s + WW + op))
    for u in range(HH):
        for v in range(WW):
            full[:, :, before + u:before + u + s * (H - 1) + 1:s, before + v:before + v + s * (W - 1) + 1:s] += \
                np.einsum("nchw,cf->nfhw", x, w[:, :, u, v])
    return full


class Transposed(Layer):
    forward, backward = "conv_transpose_forward", "conv_transpose_backward"
    extra_name = "output_padding"
    reference_forward = staticmethod(vref.conv_transpose_forward)
    reference_backward = staticmethod(vref.conv_transpose_backward)

    def w_shape(self, c):
        return (c.C, c.F) + c.kernel

    def out_size(self, c):
        return tuple(vref.transpose_output_size(n, k, c.stride, c.pad, c.extra) for n, k in zip(c.size, c.kernel))

    def out_shape_hint(self, c):
        right = self.out_size(c)
        s, p, op = c.stride, c.pad, c.extra

        def hint(shape):
            if len(shape) != 4:
                return "out has four axes (N, F, H', W')"
            if shape[1] == c.C and c.C != c.F:
                return ("the second axis of out counts the F = w.shape[1] output channels: " + LAYOUT)
            hw = tuple(shape[2:])
            if op > 0 and hw == tuple(n - op for n in right):
                return ("output_padding is ignored: H' = (H - 1)*stride - 2*pad + HH + output_padding, the extra "
                        "rows and columns go at the bottom and the right")
            if p > 0 and hw == tuple(n + 2 * p for n in right):
                return "the padding is not cropped: remove pad rows and columns on each side of the full output"
            if hw == tuple((n + 2 * p - k) // s + 1 for n, k in zip(c.size, c.kernel)):
                return ("this is the output size of a convolution; a transposed convolution makes "
                        "H' = (H - 1)*stride - 2*pad + HH + output_padding")
            if hw == right[::-1] != right:
                return "H and W (or HH and WW) are mixed up"
            return None
        return hint

    def _crop(self, c, x, w, b, start, before=0):
        Ho, Wo = self.out_size(c)
        full = _transpose_full(x, w, c, before)
        if start + Ho > full.shape[2] or start + Wo > full.shape[3]:
            return None
        return full[:, :, start:start + Ho, start:start + Wo] + b[None, :, None, None]

    def forward_candidates(self, c, x, w, b):
        out = super().forward_candidates(c, x, w, b)
        return out + [
            (lambda: self.forward_ref(c, x, w.transpose(1, 0, 2, 3), b) if c.C == c.F > 1 else None, LAYOUT),
            (lambda: self._crop(c, x, w, b, 0) if c.pad > 0 else None,
             "the output is cropped on one side only: remove pad rows at the top and at the bottom (and pad "
             "columns at the left and at the right) of the full output"),
            (lambda: self._crop(c, x, w, b, 2 * c.pad) if c.pad > 0 else None,
             "the output is cropped on one side only: remove pad rows at the top and at the bottom (and pad "
             "columns at the left and at the right) of the full output"),
            (lambda: self._crop(c, x, w, b, c.pad, before=c.extra) if c.extra > 0 else None,
             "output_padding is added on the wrong side: its rows and columns go at the bottom and the right"),
        ]

    def _backward_at(self, c, dout, x, w, start):
        """dx, dw when dout is put back into the full output at offset start (instead of pad)."""
        N, C, H, W = x.shape
        _, F, HH, WW = w.shape
        Ho, Wo = dout.shape[2:]
        s, op = c.stride, c.extra
        full = np.zeros((N, F, (H - 1) * s + HH + op, (W - 1) * s + WW + op))
        if start + Ho > full.shape[2] or start + Wo > full.shape[3]:
            return None
        full[:, :, start:start + Ho, start:start + Wo] = dout
        dx, dw = np.zeros(x.shape), np.zeros(w.shape)
        for u in range(HH):
            for v in range(WW):
                seen = full[:, :, u:u + s * (H - 1) + 1:s, v:v + s * (W - 1) + 1:s]
                dx += np.einsum("nfhw,cf->nchw", seen, w[:, :, u, v])
                dw[:, :, u, v] = np.einsum("nchw,nfhw->cf", x, seen)
        return dx, dw

    def dx_candidates(self, c, dout, x, w, b):
        flip = (slice(None), slice(None), slice(None, None, -1), slice(None, None, -1))
        crop = ("dout is put back at the wrong place: the forward pass cropped pad rows and columns from "
                "each side of the full output, so dout sits at [pad:pad + H', pad:pad + W'] of it")
        return [
            (lambda: self.backward_ref(c, dout, x, w[flip], b)[0],
             "dx uses the kernel flipped: a transposed convolution's dx is the cross-correlation of dout with w"),
            (lambda: self.backward_ref(c, dout, x, w.transpose(1, 0, 2, 3), b)[0] if c.C == c.F > 1 else None,
             LAYOUT),
            (lambda: (self._backward_at(c, dout, x, w, 0) or (None,))[0] if c.pad > 0 else None, crop),
        ]

    def dw_candidates(self, c, dout, x, w, b, dw):
        return [
            (lambda: dw / c.N if c.N > 1 else None, "dw is averaged over the batch: it is a sum over n"),
            (lambda: dw.transpose(1, 0, 2, 3) if c.C == c.F > 1 else None, LAYOUT),
            (lambda: (self._backward_at(c, dout, x, w, 0) or (None, None))[1] if c.pad > 0 else None,
             "dout is put back at the wrong place: the forward pass cropped pad rows and columns from "
             "each side of the full output, so dout sits at [pad:pad + H', pad:pad + W'] of it"),
        ]

    def dx_shape_hint(self, c):
        return None


class Fast(Layer):
    """The course's convolution, written to be fast (chapter 9)."""
    forward, backward = "conv_forward_fast", "conv_backward_fast"
    reference_forward = staticmethod(ref.conv_forward)
    reference_backward = staticmethod(ref.conv_backward)

    def out_size(self, c):
        return tuple(ref.output_size(n, k, c.stride, c.pad) for n, k in zip(c.size, c.kernel))

    def out_shape_hint(self, c):
        right = self.out_size(c)

        def hint(shape):
            if len(shape) != 4:
                return "out has four axes (N, F, H', W')"
            hw = tuple(shape[2:])
            up = tuple(math.ceil((n + 2 * c.pad - k) / c.stride) + 1 for n, k in zip(c.size, c.kernel))
            if hw == up != right:
                return ("output size rounded up: windows that do not fit are dropped, "
                        "H' = (H + 2 pad - HH) // stride + 1")
            if hw == right[::-1] != right:
                return "H and W (or HH and WW) are mixed up"
            return None
        return hint


CONV1D, DILATED, TRANSPOSED, FAST = Conv1d(), Dilated(), Transposed(), Fast()
LAYERS = (CONV1D, DILATED, TRANSPOSED, FAST)

CASES = {
    CONV1D: {
        "shapes": [_c1("shape 1", 1, 1, 1, 5, 3, 1, 0), _c1("shape 2", 2, 3, 2, 7, 3, 1, 1),
                   _c1("shape 3", 2, 2, 3, 9, 2, 2, 0), _c1("shape 4", 1, 3, 2, 8, 3, 3, 2),
                   _c1("shape 5", 2, 1, 4, 10, 4, 2, 1), _c1("shape 6", 3, 2, 2, 6, 1, 1, 0)],
        "basic": [_c1("basic 1", 2, 1, 1, 7, 3, 1, 0), _c1("basic 2", 2, 1, 1, 6, 2, 1, 0)],
        "padding": [_c1("pad 1", 2, 1, 1, 5, 3, 1, 1), _c1("pad 2", 2, 1, 1, 4, 3, 1, 2)],
        "stride": [_c1("stride 2", 2, 1, 1, 7, 3, 2, 0), _c1("stride 3", 2, 1, 1, 8, 2, 3, 0)],
        "uneven": [_c1("uneven 1", 2, 1, 1, 8, 3, 2, 0), _c1("uneven 2", 1, 1, 1, 10, 2, 3, 0),
                   _c1("uneven 3", 2, 1, 1, 11, 4, 3, 0)],
        # L' == F in the first, so a bias broadcast along the length does not even raise
        "channels": [_c1("channels 1", 3, 3, 4, 6, 3, 1, 0), _c1("channels 2", 2, 4, 5, 9, 2, 1, 0)],
    },
    DILATED: {
        "shapes": [_c2("shape 1", 1, 1, 1, 7, 7, 3, 3, 1, 0, 2), _c2("shape 2", 2, 3, 2, 9, 8, 3, 2, 2, 1, 2),
                   _c2("shape 3", 1, 2, 3, 10, 11, 2, 3, 3, 2, 3), _c2("shape 4", 2, 1, 2, 6, 6, 3, 3, 1, 2, 3),
                   _c2("shape 5", 1, 2, 2, 5, 6, 2, 2, 2, 0, 1), _c2("shape 6", 2, 2, 1, 11, 9, 3, 3, 2, 1, 3)],
        "basic": [_c2("dilation 1 (a)", 2, 1, 1, 5, 5, 3, 3, 1, 0, 1),
                  _c2("dilation 1 (b)", 2, 1, 1, 6, 6, 2, 2, 1, 0, 1)],
        "dilation": [_c2("dilation 2", 2, 1, 1, 7, 7, 3, 3, 1, 0, 2), _c2("dilation 3", 2, 1, 1, 8, 8, 3, 3, 1, 0, 3),
                     _c2("dilation 2, 2 x 2", 2, 1, 1, 6, 6, 2, 2, 1, 0, 2)],
        "padding": [_c2("pad 1", 2, 1, 1, 5, 5, 3, 3, 1, 1, 2), _c2("pad 2", 2, 1, 1, 4, 4, 2, 2, 1, 2, 3)],
        "stride": [_c2("stride 2", 2, 1, 1, 9, 9, 3, 3, 2, 0, 2), _c2("stride 3", 2, 1, 1, 10, 10, 2, 2, 3, 0, 3),
                   _c2("stride 2, uneven", 1, 1, 1, 10, 10, 3, 3, 2, 0, 2)],
        "nonsquare": [_c2("non-square 1", 2, 1, 1, 7, 9, 2, 3, 1, 0, 2),
                      _c2("non-square 2", 2, 1, 1, 8, 6, 3, 2, 1, 0, 3)],
        "channels": [_c2("channels 1", 2, 3, 4, 7, 6, 3, 3, 1, 0, 2), _c2("channels 2", 3, 2, 3, 8, 8, 2, 2, 1, 0, 3)],
    },
    TRANSPOSED: {
        "shapes": [_c2("shape 1", 1, 1, 1, 3, 3, 3, 3, 1, 0, 0), _c2("shape 2", 2, 2, 3, 3, 4, 3, 2, 2, 1, 1),
                   _c2("shape 3", 1, 3, 2, 4, 3, 2, 3, 3, 0, 2), _c2("shape 4", 2, 1, 2, 2, 5, 4, 4, 2, 2, 0),
                   _c2("shape 5", 1, 2, 1, 3, 3, 3, 3, 3, 1, 1)],
        "basic": [_c2("basic 1", 2, 1, 1, 3, 3, 3, 3, 1, 0, 0), _c2("basic 2", 2, 1, 1, 4, 4, 2, 2, 1, 0, 0)],
        "stride": [_c2("stride 2", 2, 1, 1, 3, 3, 3, 3, 2, 0, 0), _c2("stride 3", 2, 1, 1, 3, 3, 2, 2, 3, 0, 0),
                   _c2("stride 2, no overlap", 1, 1, 1, 4, 4, 2, 2, 2, 0, 0)],
        "padding": [_c2("pad 1", 2, 1, 1, 4, 4, 3, 3, 1, 1, 0), _c2("pad 2", 2, 1, 1, 5, 5, 3, 3, 1, 2, 0)],
        "output_padding": [_c2("output_padding 1", 2, 1, 1, 3, 3, 3, 3, 2, 0, 1),
                           _c2("output_padding 2", 2, 1, 1, 3, 3, 2, 2, 3, 0, 2),
                           _c2("output_padding <= pad", 2, 1, 1, 4, 4, 3, 3, 2, 1, 1)],
        "nonsquare": [_c2("non-square 1", 2, 1, 1, 3, 4, 2, 3, 1, 0, 0),
                      _c2("non-square 2", 2, 1, 1, 4, 3, 3, 2, 2, 0, 0)],
        "channels": [_c2("channels 1", 2, 3, 3, 3, 3, 2, 2, 1, 0, 0), _c2("channels 2", 2, 2, 4, 3, 4, 3, 3, 1, 0, 0)],
    },
    FAST: {
        "shapes": [_c2("shape 1", 1, 1, 1, 4, 4, 3, 3, 1, 0), _c2("shape 2", 2, 3, 2, 5, 5, 3, 3, 1, 1),
                   _c2("shape 3", 2, 2, 3, 7, 5, 3, 2, 2, 0), _c2("shape 4", 1, 3, 2, 8, 6, 3, 3, 2, 1),
                   _c2("shape 5", 2, 1, 4, 9, 10, 4, 3, 3, 2), _c2("shape 6", 2, 4, 3, 10, 7, 2, 4, 3, 1)],
        "basic": [_c2("basic 1", 2, 1, 1, 5, 5, 3, 3, 1, 0), _c2("basic 2", 2, 1, 1, 6, 6, 2, 2, 1, 0)],
        "padding": [_c2("pad 1", 2, 1, 1, 5, 5, 3, 3, 1, 1), _c2("pad 2", 2, 1, 1, 4, 4, 3, 3, 1, 2)],
        "stride": [_c2("stride 2", 2, 1, 1, 7, 7, 3, 3, 2, 0), _c2("stride 3", 2, 1, 1, 8, 8, 2, 2, 3, 0),
                   _c2("stride 2, uneven", 1, 1, 1, 8, 8, 3, 3, 2, 0)],
        "nonsquare": [_c2("non-square 1", 2, 1, 1, 5, 7, 2, 3, 1, 0), _c2("non-square 2", 2, 1, 1, 6, 9, 3, 2, 1, 0)],
        "channels": [_c2("channels 1", 3, 3, 4, 5, 4, 3, 3, 1, 0), _c2("channels 2", 4, 3, 5, 9, 9, 3, 3, 1, 0)],
    },
}
INPUTS_CASE = {
    CONV1D: _c1("inputs", 2, 3, 2, 9, 3, 2, 1),
    DILATED: _c2("inputs", 2, 3, 2, 9, 8, 3, 2, 2, 1, 2),
    # C == F: a layout mistake still runs, and is judged by its own cells
    TRANSPOSED: _c2("inputs", 2, 2, 2, 3, 4, 3, 2, 2, 1, 1),
    FAST: _c2("inputs", 2, 3, 2, 6, 5, 2, 3, 2, 1),
}
SPEED_CASE = _c2("speed", 16, 16, 32, 32, 32, 3, 3, 1, 1)

# what each function's value cells are about (graded cell descriptions)
DESCRIPTIONS = {
    "shapes": "output (or gradient) shapes on many configurations",
    "basic": "stride 1, pad 0, C = F = 1",
    "padding": "pad 1 and 2, stride 1",
    "stride": "stride 2 and 3, pad 0",
    "uneven": "stride 2 and 3 where (L + 2 pad - K) % stride != 0",
    "dilation": "dilation 2 and 3, stride 1, pad 0",
    "output_padding": "output_padding 1 and 2 with stride 2 and 3, pad 0 and 1",
    "nonsquare": "H != W and HH != WW",
    "channels": "several examples, channels and filters",
    "inputs_unchanged": "inputs equal before and after the call",
    "speed": f"at most {SPEED_FACTOR:g} x the CPU time of the course's im2col layer on N=16, C=16, H=W=32, F=32",
}


# --------------------------------------------------------------------------- time budgets

LOOP_REFERENCES = {
    "conv1d_forward": vref.conv1d_forward_loops, "conv1d_backward": vref.conv1d_backward_loops,
    "dilated_conv_forward": vref.dilated_conv_forward_loops, "dilated_conv_backward": vref.dilated_conv_backward_loops,
    "conv_transpose_forward": vref.conv_transpose_forward_loops,
    "conv_transpose_backward": vref.conv_transpose_backward_loops,
    "conv_forward_fast": ref.conv_forward_loops, "conv_backward_fast": ref.conv_backward_loops,
}
for _function, _loop in LOOP_REFERENCES.items():
    checks.register_loop_reference(_function, _loop)     # the yardstick of each call's time budget


class Budgets(checks.Budgets):
    """The time budgets of this assignment's calls, with the factor and minimum of the run's budgets
    (``checks.Budgets``: max(minimum, factor x the loop reference), cached per shape), and the
    reference times of the speed cells."""

    def __init__(self, run):
        super().__init__(getattr(run, "factor", checks.BUDGET_FACTOR), getattr(run, "minimum", checks.MIN_BUDGET_S))
        self._speed = {}

    def speed_reference(self, func, args):
        """Best time of the course's im2col layer on args, measured as the learner's calls are: in a
        sandbox of its own (``sandbox.LearnerProcess``: one BLAS thread, CPU time of the process tree
        where the machine accounts it, wall-clock time elsewhere), inputs and results crossing the same
        boundary.  Both passes are timed at the first need, once per run."""
        with self._lock:
            if func not in self._speed:
                self._speed.update(_time_reference(args if func == "conv_forward_fast" else None,
                                                   args if func == "conv_backward_fast" else None))
            return self._speed[func]


def _time_reference(forward_args=None, backward_args=None):
    """{function: best time} of the course's im2col layer on the speed case, in a fresh sandbox."""
    import inspect
    from ... import sandbox
    rng = np.random.default_rng(0)
    c = SPEED_CASE
    x, w, b = FAST.draw(rng, c)
    forward_args = forward_args or (x, w, b, c.stride, c.pad)
    if backward_args is None:
        out, cache = ref.conv_forward(*forward_args)
        backward_args = (rng.standard_normal(out.shape), cache)
    layer = "\n\n".join(inspect.getsource(f) for f in (ref.output_size, ref._im2col, ref.conv_forward,
                                                         ref._col2im, ref.conv_backward))
    times = {}
    with sandbox.LearnerProcess(["import numpy as np", layer]) as proc:
        proc.setup()
        for func, name, args in (("conv_forward_fast", "conv_forward", forward_args),
                                 ("conv_backward_fast", "conv_backward", backward_args)):
            best = math.inf
            for _ in range(SPEED_REPEATS):
                res = proc.call(name, args, {}, 60.0, return_args=False)
                if res.status != "ok":
                    raise RuntimeError(f"the course's {name} could not be timed: {res.status} {res.message}")
                best = min(best, _learner_time(res))
            times[func] = best
    return times


_PER_RUN = weakref.WeakKeyDictionary()
_PER_RUN_LOCK = threading.Lock()


def budgets_of(run):
    """This assignment's Budgets for a grading run's budgets object (one per run, kept with it)."""
    run = run if run is not None else checks.DEFAULT_BUDGETS
    with _PER_RUN_LOCK:
        try:
            return _PER_RUN.setdefault(run, Budgets(run))
        except TypeError:   # an object that cannot be weakly referenced: budgets of its own
            return Budgets(run)


class _Fixed:
    """A fixed budget for every call (the speed cells)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def lazy(self, func, args):
        return self.seconds


# --------------------------------------------------------------------------- the cases

def _out_usable(value):
    return isinstance(value, (tuple, list)) and len(value) == 2


def _forward_case(g, layer, c, shapes_only=False):
    label = layer.label(c)

    def run():
        x, w, b = layer.draw(g.rng, c)
        try:
            res = g.invoke(layer.forward, layer.args(c, x, w, b), label, _out_usable)
        except CaseFailure as exc:
            if exc.status == "error" and layer.error_hint(c):
                exc.lines[-1] += ". Hint: " + layer.error_hint(c)
            raise
        out = _unpack(res.value, 2, layer.forward, "(out, cache)", label)[0]
        expected = layer.forward_ref(c, x, w, b)
        out = _array(out, "out", expected.shape, label, layer.out_shape_hint(c))
        if shapes_only:
            return
        line = _compare("out", out, expected, label, layer.forward_candidates(c, x, w, b))
        if line:
            raise CaseFailure("failed", line)
    return run


def _backward_case(g, layer, c, shapes_only=False):
    label = layer.label(c)

    def run():
        x, w, b = layer.draw(g.rng, c)
        out, cache = layer.reference_forward(*layer.args(c, x, w, b))
        dout = g.rng.standard_normal(out.shape)
        res = g.invoke(layer.backward, (dout, cache), label)
        dx, dw, db = _unpack(res.value, 3, layer.backward, "(dx, dw, db)", label)
        dx = _array(dx, "dx", x.shape, label, layer.dx_shape_hint(c))
        dw = _array(dw, "dw", w.shape, label)
        db = _array(db, "db", b.shape, label)
        if shapes_only:
            return
        edx, edw, edb = layer.reference_backward(dout, cache)
        lines = [_compare("dx", dx, edx, label, layer.dx_candidates(c, dout, x, w, b)),
                 _compare("dw", dw, edw, label, layer.dw_candidates(c, dout, x, w, b, edw)),
                 _compare("db", db, edb, label, layer.db_candidates(c, dout, edb))]
        lines = [ln for ln in lines if ln]
        if lines:
            raise CaseFailure("failed", *lines)
    return run


def _inputs_cases(g, layer, backward):
    c = INPUTS_CASE[layer]
    label = layer.label(c)
    x, w, b = layer.draw(g.rng, c)
    args = layer.args(c, x, w, b)
    if backward:
        out, cache = layer.reference_forward(*args)
        dout = g.rng.standard_normal(out.shape)
        return [_inputs_case(g, layer.backward, (dout, cache), label,
                             lambda v: _unpack(v, 3, layer.backward, "(dx, dw, db)", label))]
    return [_inputs_case(g, layer.forward, args, label,
                         lambda v: _unpack(v, 2, layer.forward, "(out, cache)", label))]


def _learner_time(res):
    return res.cpu_seconds if getattr(res, "cpu_seconds", None) is not None else getattr(res, "seconds", math.inf)


def _speed_case(g, layer, backward):
    func = layer.backward if backward else layer.forward
    c = SPEED_CASE
    label = layer.label(c)
    budgets = budgets_of(g.budgets)

    def draw():
        """Fresh inputs for every timing: an answer remembered from an earlier call is no answer."""
        x, w, b = layer.draw(g.rng, c)
        out, cache = ref.conv_forward(x, w, b, c.stride, c.pad)
        if backward:
            dout = g.rng.standard_normal(out.shape)
            return (dout, cache), ("dx", "dw", "db"), lambda: ref.conv_backward(dout, cache)
        return (x, w, b, c.stride, c.pad), ("out",), lambda: (out,)

    def check_values(res, names, expected):
        if backward:
            got = _unpack(res.value, 3, func, "(dx, dw, db)", label)
        else:
            got = _unpack(res.value, 2, func, "(out, cache)", label)[:1]
        for name, value, exp in zip(names, got, expected()):
            line = _compare(name, _array(value, name, exp.shape, label), exp, label)
            if line:
                raise CaseFailure("failed", line + "; the time of a wrong answer does not count")

    def run():
        args, names, expected = draw()
        limit = SPEED_FACTOR * budgets.speed_reference(func, args)
        timed = _Grader(g.call, g.rng, _Fixed(max(budgets.minimum, SPEED_HOPELESS * limit)))
        best = math.inf
        for attempt in range(SPEED_REPEATS):
            if attempt:
                args, names, expected = draw()
            try:
                res = timed.invoke(func, args, label, None if backward else _out_usable)
            except CaseFailure as exc:
                if exc.status != "timeout":
                    raise
                best = math.inf
                break
            seconds = _learner_time(res)
            if seconds < best:   # a time counts only with the right values
                check_values(res, names, expected)
                best = seconds
            if best <= limit or best > SPEED_HOPELESS * limit:
                break
        if best > limit:
            took = (f"it did not finish within its budget of {timed.budgets.seconds:.1f} s" if best == math.inf
                    else f"its best time was {best * 1000:.0f} ms")
            raise CaseFailure("failed", (
                f"{label}: {func} is too slow: {took}, over {SPEED_FACTOR:g} x the time of the course's im2col "
                f"layer measured the same way ({limit / SPEED_FACTOR * 1000:.0f} ms), that is "
                f"{limit * 1000:.0f} ms. Hint: no Python loop over every output, the batch or the filters; copy "
                "the windows into a matrix (im2col) and do one matrix product, as chapter 9 shows"))
    return run


# --------------------------------------------------------------------------- cells and registration

_ARG_NAMES = {"args[0]": "x", "args[1]": "w", "args[2]": "b", "args[3]": "stride", "args[4]": "pad"}
_BACKWARD_ARG_NAMES = {"args[0]": "dout", "args[1]": "cache"}


def _arg_name(layer, backward, path):
    """The name a learner knows for an argument path of _inputs_case's feedback."""
    extra = layer.extra_name or "?"
    if backward:
        m = re.fullmatch(r"args\[1\]\[(\d)\](.*)", path)
        if m:
            names = ("x", "w", "b", "stride", "pad", extra)
            return f"cache {names[int(m.group(1))] if int(m.group(1)) < len(names) else m.group(1)}{m.group(2)}"
        return _BACKWARD_ARG_NAMES.get(path, path)
    return {**_ARG_NAMES, "args[5]": extra}.get(path, path)


def _named(lines, layer, backward):
    return [re.sub(r"args(\[\d\])+", lambda m: _arg_name(layer, backward, m.group(0)), ln) for ln in lines]


def _cell(grade_id, make_cases, rename=None):
    def check(call, rng, budgets=None, probe=None):
        g = _Grader(call, rng, budgets_of(budgets))
        verdict = _run_cell(grade_id, make_cases(g))
        if rename is not None:
            verdict.feedback = rename(verdict.feedback)
        return verdict
    check.__name__ = f"check_{grade_id}"
    return check


NOTEBOOK_OF = {CONV1D: "conv1d", DILATED: "dilated_transposed", TRANSPOSED: "dilated_transposed",
               FAST: "fast_conv"}
VALUE_POINTS, SHAPE_POINTS, INPUT_POINTS = 2, 1, 1


def _value_cell(layer, backward, prop):
    case = _backward_case if backward else _forward_case
    return lambda g: [case(g, layer, c, prop == "shapes") for c in CASES[layer][prop]]


def _description(layer, prop):
    return {(DILATED, "basic"): "dilation 1 (the ordinary convolution), stride 1, pad 0, C = F = 1",
            (FAST, "stride"): "stride 2 and 3, pad 0, one size that does not divide evenly"}.get(
        (layer, prop), DESCRIPTIONS[prop])


def graded_cells():
    """[(notebook, grade_id, function, points, description, check)] in notebook order."""
    rows = []
    for layer in LAYERS:
        nb = NOTEBOOK_OF[layer]
        for backward in (False, True):
            func = layer.backward if backward else layer.forward
            for prop in CASES[layer]:
                gid = f"{func}_{prop}"
                rows.append((nb, gid, func, SHAPE_POINTS if prop == "shapes" else VALUE_POINTS,
                             _description(layer, prop), _cell(gid, _value_cell(layer, backward, prop))))
            gid = f"{func}_inputs_unchanged"
            rows.append((nb, gid, func, INPUT_POINTS, DESCRIPTIONS["inputs_unchanged"],
                         _cell(gid, lambda g, layer=layer, backward=backward: _inputs_cases(g, layer, backward),
                               lambda lines, layer=layer, backward=backward: _named(lines, layer, backward))))
            if layer is FAST:
                gid = f"{func}_speed"
                rows.append((nb, gid, func, SPEED_POINTS, DESCRIPTIONS["speed"],
                             _cell(gid, lambda g, layer=layer, backward=backward: [_speed_case(g, layer, backward)])))
    return rows


def register():
    for notebook, grade_id, function, points, description, check in graded_cells():
        checks.register(ASSIGNMENT, notebook, grade_id, function, points, check, description)


register()
