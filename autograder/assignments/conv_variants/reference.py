"""Reference layers of the ``conv_variants`` assignment: NumPy, float64, NCL / NCHW.

The contracts (those the notebooks state):

    conv1d_forward(x, w, b, stride=1, pad=0) -> (out, cache)
        x (N, C, L), w (F, C, K), b (F,) -> out (N, F, L'), L' = (L + 2*pad - K) // stride + 1
        cache = (x, w, b, stride, pad)          (cross-correlation)
    conv1d_backward(dout, cache) -> (dx, dw, db)
    dilated_conv_forward(x, w, b, stride=1, pad=0, dilation=1) -> (out, cache)
        x (N, C, H, W), w (F, C, HH, WW), taps dilation apart,
        H' = (H + 2*pad - dilation*(HH - 1) - 1) // stride + 1, W' likewise
        cache = (x, w, b, stride, pad, dilation)
    dilated_conv_backward(dout, cache) -> (dx, dw, db)
    conv_transpose_forward(x, w, b, stride=1, pad=0, output_padding=0) -> (out, cache)
        x (N, C, H, W), w (C, F, HH, WW), b (F,),
        H' = (H - 1)*stride - 2*pad + HH + output_padding, W' likewise (PyTorch's conv_transpose2d)
        cache = (x, w, b, stride, pad, output_padding)
    conv_transpose_backward(dout, cache) -> (dx, dw, db)

The default implementations loop over the filter taps only (HH*WW strided slices of whole
arrays, one matrix product each); the ``*_loops`` ones follow the definitions one output at
a time (slow, easy to read) and set the time budgets of the checks.  The tests hold both
equal to PyTorch.
"""
import numpy as np


def conv_output_size(size, k, stride=1, pad=0, dilation=1):
    """Number of windows of k taps, dilation apart, that fit in size + 2*pad (PyTorch's rule)."""
    span = dilation * (k - 1) + 1
    if stride < 1 or dilation < 1:
        raise ValueError(f"stride and dilation must be positive integers, got {stride} and {dilation}")
    if size + 2 * pad < span:
        raise ValueError(f"a window spanning {span} does not fit in {size} + 2*{pad}")
    return (size + 2 * pad - span) // stride + 1


def transpose_output_size(size, k, stride=1, pad=0, output_padding=0):
    """Output size of a transposed convolution (PyTorch's conv_transpose2d)."""
    if not 0 <= output_padding < stride:
        raise ValueError(f"output_padding must satisfy 0 <= output_padding < stride, got {output_padding}")
    return (size - 1) * stride - 2 * pad + k + output_padding


# --------------------------------------------------------------------------- 2D with dilation

def _tap(xp, u, v, stride, dilation, Ho, Wo):
    """The inputs that tap (u, v) meets at every output position: (N, C, Ho, Wo), a view."""
    r, c = u * dilation, v * dilation
    return xp[:, :, r:r + stride * (Ho - 1) + 1:stride, c:c + stride * (Wo - 1) + 1:stride]


def dilated_conv_forward(x, w, b, stride=1, pad=0, dilation=1):
    """Cross-correlation with taps dilation apart; see the module docstring."""
    N, C, H, W = x.shape
    F, C2, HH, WW = w.shape
    if C != C2:
        raise ValueError(f"x has {C} channels but w expects {C2}")
    Ho = conv_output_size(H, HH, stride, pad, dilation)
    Wo = conv_output_size(W, WW, stride, pad, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, Ho, Wo))
    for u in range(HH):
        for v in range(WW):
            out += np.einsum("nchw,fc->nfhw", _tap(xp, u, v, stride, dilation, Ho, Wo), w[:, :, u, v])
    out += b[None, :, None, None]
    return out, (x, w, b, stride, pad, dilation)


def dilated_conv_backward(dout, cache):
    """Gradients (dx, dw, db) of dilated_conv_forward, shaped like (x, w, b)."""
    x, w, b, stride, pad, dilation = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for u in range(HH):
        for v in range(WW):
            dw[:, :, u, v] = np.einsum("nchw,nfhw->fc", _tap(xp, u, v, stride, dilation, Ho, Wo), dout)
            _tap(dxp, u, v, stride, dilation, Ho, Wo)[...] += np.einsum("nfhw,fc->nchw", dout, w[:, :, u, v])
    db = dout.sum(axis=(0, 2, 3))
    return dxp[:, :, pad:pad + H, pad:pad + W].copy(), dw, db


def dilated_conv_forward_loops(x, w, b, stride=1, pad=0, dilation=1):
    """dilated_conv_forward as the sum in its definition, one output at a time."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = conv_output_size(H, HH, stride, pad, dilation)
    Wo = conv_output_size(W, WW, stride, pad, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    span_h, span_w = dilation * (HH - 1) + 1, dilation * (WW - 1) + 1
    out = np.zeros((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * stride:i * stride + span_h:dilation,
                                j * stride:j * stride + span_w:dilation]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, (x, w, b, stride, pad, dilation)


def dilated_conv_backward_loops(dout, cache):
    """dilated_conv_backward as a loop over outputs: each one scatters into dx and dw."""
    x, w, b, stride, pad, dilation = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    span_h, span_w = dilation * (HH - 1) + 1, dilation * (WW - 1) + 1
    dxp, dw, db = np.zeros(xp.shape), np.zeros(w.shape), np.zeros(b.shape)
    for n in range(N):
        for f in range(F):
            db[f] += dout[n, f].sum()
            for i in range(Ho):
                for j in range(Wo):
                    rows = slice(i * stride, i * stride + span_h, dilation)
                    cols = slice(j * stride, j * stride + span_w, dilation)
                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db


# --------------------------------------------------------------------------- 1D

def conv1d_forward(x, w, b, stride=1, pad=0):
    """1D cross-correlation; see the module docstring."""
    N, C, L = x.shape
    F, C2, K = w.shape
    if C != C2:
        raise ValueError(f"x has {C} channels but w expects {C2}")
    Lo = conv_output_size(L, K, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    out = np.zeros((N, F, Lo))
    for k in range(K):
        out += np.einsum("ncl,fc->nfl", xp[:, :, k:k + stride * (Lo - 1) + 1:stride], w[:, :, k])
    out += b[None, :, None]
    return out, (x, w, b, stride, pad)


def conv1d_backward(dout, cache):
    """Gradients (dx, dw, db) of conv1d_forward, shaped like (x, w, b)."""
    x, w, b, stride, pad = cache
    N, C, L = x.shape
    F, _, K = w.shape
    Lo = dout.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for k in range(K):
        seen = xp[:, :, k:k + stride * (Lo - 1) + 1:stride]
        dw[:, :, k] = np.einsum("ncl,nfl->fc", seen, dout)
        dxp[:, :, k:k + stride * (Lo - 1) + 1:stride] += np.einsum("nfl,fc->ncl", dout, w[:, :, k])
    return dxp[:, :, pad:pad + L].copy(), dw, dout.sum(axis=(0, 2))


def conv1d_forward_loops(x, w, b, stride=1, pad=0):
    """conv1d_forward one output at a time."""
    N, C, L = x.shape
    F, _, K = w.shape
    Lo = conv_output_size(L, K, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    out = np.zeros((N, F, Lo))
    for n in range(N):
        for f in range(F):
            for i in range(Lo):
                out[n, f, i] = np.sum(xp[n, :, i * stride:i * stride + K] * w[f]) + b[f]
    return out, (x, w, b, stride, pad)


def conv1d_backward_loops(dout, cache):
    """conv1d_backward as a loop over outputs."""
    x, w, b, stride, pad = cache
    N, C, L = x.shape
    F, _, K = w.shape
    Lo = dout.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    dxp, dw, db = np.zeros(xp.shape), np.zeros(w.shape), np.zeros(b.shape)
    for n in range(N):
        for f in range(F):
            db[f] += dout[n, f].sum()
            for i in range(Lo):
                window = slice(i * stride, i * stride + K)
                dw[f] += dout[n, f, i] * xp[n, :, window]
                dxp[n, :, window] += dout[n, f, i] * w[f]
    return dxp[:, :, pad:pad + L], dw, db


# --------------------------------------------------------------------------- transposed

def conv_transpose_forward(x, w, b, stride=1, pad=0, output_padding=0):
    """PyTorch's conv_transpose2d: every input scatters w[c] * x, stride apart, then the
    full result is cropped by pad on every side; output_padding adds rows and columns at
    the bottom and the right."""
    N, C, H, W = x.shape
    C2, F, HH, WW = w.shape
    if C != C2:
        raise ValueError(f"x has {C} channels but w (C, F, HH, WW) expects {C2}")
    Ho = transpose_output_size(H, HH, stride, pad, output_padding)
    Wo = transpose_output_size(W, WW, stride, pad, output_padding)
    # the full scatter, with room for output_padding past its end (zeros there when it exceeds pad)
    full = np.zeros((N, F, (H - 1) * stride + HH + output_padding, (W - 1) * stride + WW + output_padding))
    for u in range(HH):
        for v in range(WW):
            full[:, :, u:u + stride * (H - 1) + 1:stride, v:v + stride * (W - 1) + 1:stride] += \
                np.einsum("nchw,cf->nfhw", x, w[:, :, u, v])
    out = full[:, :, pad:pad + Ho, pad:pad + Wo] + b[None, :, None, None]
    return out, (x, w, b, stride, pad, output_padding)


def conv_transpose_backward(dout, cache):
    """Gradients (dx, dw, db) of conv_transpose_forward, shaped like (x, w, b)."""
    x, w, b, stride, pad, output_padding = cache
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    full = np.zeros((N, F, (H - 1) * stride + HH + output_padding, (W - 1) * stride + WW + output_padding))
    full[:, :, pad:pad + Ho, pad:pad + Wo] = dout
    dx = np.zeros(x.shape)
    dw = np.zeros(w.shape)
    for u in range(HH):
        for v in range(WW):
            seen = full[:, :, u:u + stride * (H - 1) + 1:stride, v:v + stride * (W - 1) + 1:stride]
            dx += np.einsum("nfhw,cf->nchw", seen, w[:, :, u, v])
            dw[:, :, u, v] = np.einsum("nchw,nfhw->cf", x, seen)
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv_transpose_forward_loops(x, w, b, stride=1, pad=0, output_padding=0):
    """conv_transpose_forward one input pixel at a time."""
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    Ho = transpose_output_size(H, HH, stride, pad, output_padding)
    Wo = transpose_output_size(W, WW, stride, pad, output_padding)
    full = np.zeros((N, F, (H - 1) * stride + HH + output_padding, (W - 1) * stride + WW + output_padding))
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    full[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW] += x[n, c, i, j] * w[c]
    return full[:, :, pad:pad + Ho, pad:pad + Wo] + b[None, :, None, None], (x, w, b, stride, pad, output_padding)


def conv_transpose_backward_loops(dout, cache):
    """conv_transpose_backward one input pixel at a time."""
    x, w, b, stride, pad, output_padding = cache
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    full = np.zeros((N, F, (H - 1) * stride + HH + output_padding, (W - 1) * stride + WW + output_padding))
    full[:, :, pad:pad + Ho, pad:pad + Wo] = dout
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    window = full[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    dx[n, c, i, j] = np.sum(window * w[c])
                    dw[c] += x[n, c, i, j] * window
    return dx, dw, dout.sum(axis=(0, 2, 3))
