"""A demo class for the ``conv_variants`` assignment: correct work in several styles and
every classic mistake, with the score each learner must get.

Each entry of ``CORRECT`` and ``MISTAKES`` is the complete source of one solution cell
(it starts with ``def NAME(`` and uses only ``np``).  ``EXPECTED_FAILS`` says which graded
cells each mistake must lose, worked out from the case lists of the hidden checks
(``autograder/assignments/conv_variants.py``); the reasoning is written next to each entry.

Case facts used below: in every function's cells, only ``padding`` (and some ``shapes``
cases) has pad > 0, only ``stride`` and ``uneven`` have stride > 1 (plus ``shapes``, and for
the transposed convolution ``output_padding``, whose cases have stride 2 and 3 and one with
pad 1), only ``channels`` (and ``shapes``) has C or F > 1, the dilated convolution's cells all
have dilation >= 2 except ``basic`` (dilation 1), ``shapes`` has C != F in most cases, and the
inputs_unchanged case of the transposed convolution has C == F == 2.

    python scripts/make_class.py --assignment conv_variants --out demo/conv_variants/submitted
"""
from __future__ import annotations


from . import build as B

ASSIGNMENT = "conv_variants"
RELEASE_DIR = B.REPO / "exercises" / ASSIGNMENT
NOTEBOOK_OF = {
    "conv1d_forward": "conv1d", "conv1d_backward": "conv1d",
    "dilated_conv_forward": "dilated_transposed", "dilated_conv_backward": "dilated_transposed",
    "conv_transpose_forward": "dilated_transposed", "conv_transpose_backward": "dilated_transposed",
    "conv_forward_fast": "fast_conv", "conv_backward_fast": "fast_conv",
}
FUNCTIONS = tuple(NOTEBOOK_OF)
NOTEBOOKS = ("conv1d", "dilated_transposed", "fast_conv")

# ---------------------------------------------------------------------------- 1D
C1F_LOOPS = '''\
def conv1d_forward(x, w, b, stride=1, pad=0):
    N, C, L = x.shape
    F, _, K = w.shape
    L_out = (L + 2 * pad - K) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    out = np.zeros((N, F, L_out))
    for i in range(L_out):
        window = xp[:, :, i * stride:i * stride + K]          # (N, C, K)
        out[:, :, i] = np.tensordot(window, w, axes=([1, 2], [1, 2])) + b
    return out, (x, w, b, stride, pad)
'''
C1F_SCALAR = '''\
def conv1d_forward(x, w, b, stride=1, pad=0):
    N, C, L = x.shape
    F, _, K = w.shape
    L_out = (L + 2 * pad - K) // stride + 1
    xp = np.zeros((N, C, L + 2 * pad))
    xp[:, :, pad:pad + L] = x
    out = np.zeros((N, F, L_out))
    for n in range(N):
        for f in range(F):
            for i in range(L_out):
                total = b[f]
                for c in range(C):
                    for k in range(K):
                        total += xp[n, c, i * stride + k] * w[f, c, k]
                out[n, f, i] = total
    return out, (x, w, b, stride, pad)
'''
C1F_WINDOWS = '''\
def conv1d_forward(x, w, b, stride=1, pad=0):
    K = w.shape[2]
    L_out = (x.shape[2] + 2 * pad - K) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, K, axis=2)[:, :, ::stride][:, :, :L_out]
    out = np.einsum("nclk,fck->nfl", windows, w) + b[None, :, None]
    return out, (x, w, b, stride, pad)
'''
C1B_LOOPS = '''\
def conv1d_backward(dout, cache):
    x, w, b, stride, pad = cache
    N, C, L = x.shape
    F, _, K = w.shape
    L_out = dout.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    db = dout.sum(axis=(0, 2))
    for i in range(L_out):
        s = i * stride
        dw += np.einsum("nf,nck->fck", dout[:, :, i], xp[:, :, s:s + K])
        dxp[:, :, s:s + K] += np.einsum("nf,fck->nck", dout[:, :, i], w)
    return dxp[:, :, pad:pad + L], dw, db
'''
C1B_SCALAR = '''\
def conv1d_backward(dout, cache):
    x, w, b, stride, pad = cache
    N, C, L = x.shape
    F, _, K = w.shape
    L_out = dout.shape[2]
    xp = np.zeros((N, C, L + 2 * pad))
    xp[:, :, pad:pad + L] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    for n in range(N):
        for f in range(F):
            for i in range(L_out):
                g = dout[n, f, i]
                db[f] += g
                for c in range(C):
                    for k in range(K):
                        dw[f, c, k] += g * xp[n, c, i * stride + k]
                        dxp[n, c, i * stride + k] += g * w[f, c, k]
    return dxp[:, :, pad:pad + L], dw, db
'''
C1B_WINDOWS = '''\
def conv1d_backward(dout, cache):
    x, w, b, stride, pad = cache
    N, C, L = x.shape
    F, _, K = w.shape
    L_out = dout.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, K, axis=2)[:, :, ::stride][:, :, :L_out]
    dw = np.einsum("nclk,nfl->fck", windows, dout)
    # dx: spread each dout back with stride zeros between, then a full convolution with w
    up = np.zeros((N, F, stride * (L_out - 1) + 1))
    up[:, :, ::stride] = dout
    up = np.pad(up, ((0, 0), (0, 0), (K - 1, K - 1)))
    flipped = w[:, :, ::-1]
    full = np.einsum("nflk,fck->ncl", np.lib.stride_tricks.sliding_window_view(up, K, axis=2), flipped)
    dxp = np.zeros(xp.shape)
    dxp[:, :, :full.shape[2]] = full
    return dxp[:, :, pad:pad + L], dw, dout.sum(axis=(0, 2))
'''

# ---------------------------------------------------------------------------- dilated
DF_LOOPS = '''\
def dilated_conv_forward(x, w, b, stride=1, pad=0, dilation=1):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - dilation * (HH - 1) - 1) // stride + 1
    W_out = (W + 2 * pad - dilation * (WW - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            r, s = i * stride, j * stride
            window = xp[:, :, r:r + dilation * (HH - 1) + 1:dilation, s:s + dilation * (WW - 1) + 1:dilation]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, stride, pad, dilation)
'''
DF_TAPS = '''\
def dilated_conv_forward(x, w, b, stride=1, pad=0, dilation=1):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - dilation * (HH - 1) - 1) // stride + 1
    W_out = (W + 2 * pad - dilation * (WW - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out)) + b[None, :, None, None]
    for u in range(HH):
        for v in range(WW):
            r, s = u * dilation, v * dilation
            seen = xp[:, :, r:r + stride * (H_out - 1) + 1:stride, s:s + stride * (W_out - 1) + 1:stride]
            out += np.einsum("nchw,fc->nfhw", seen, w[:, :, u, v])
    return out, (x, w, b, stride, pad, dilation)
'''
DF_ZEROS = '''\
def dilated_conv_forward(x, w, b, stride=1, pad=0, dilation=1):
    # insert dilation - 1 zeros between the taps, then an ordinary convolution with im2col
    F, C, HH, WW = w.shape
    wd = np.zeros((F, C, dilation * (HH - 1) + 1, dilation * (WW - 1) + 1))
    wd[:, :, ::dilation, ::dilation] = w
    N, _, H, W = x.shape
    KH, KW = wd.shape[2:]
    H_out = (H + 2 * pad - KH) // stride + 1
    W_out = (W + 2 * pad - KW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (KH, KW), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :H_out, :W_out]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * H_out * W_out, -1)
    out = (cols @ wd.reshape(F, -1).T + b).reshape(N, H_out, W_out, F).transpose(0, 3, 1, 2)
    return out, (x, w, b, stride, pad, dilation)
'''
DB_LOOPS = '''\
def dilated_conv_backward(dout, cache):
    x, w, b, stride, pad, dilation = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + dilation * (HH - 1) + 1, dilation)
            cols = slice(j * stride, j * stride + dilation * (WW - 1) + 1, dilation)
            g = dout[:, :, i, j]                                    # (N, F)
            dw += np.tensordot(g, xp[:, :, rows, cols], axes=([0], [0]))
            dxp[:, :, rows, cols] += np.tensordot(g, w, axes=([1], [0]))
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))
'''
DB_TAPS = '''\
def dilated_conv_backward(dout, cache):
    x, w, b, stride, pad, dilation = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for u in range(HH):
        for v in range(WW):
            r, s = u * dilation, v * dilation
            rows = slice(r, r + stride * (H_out - 1) + 1, stride)
            cols = slice(s, s + stride * (W_out - 1) + 1, stride)
            dw[:, :, u, v] = np.einsum("nchw,nfhw->fc", xp[:, :, rows, cols], dout)
            dxp[:, :, rows, cols] += np.einsum("nfhw,fc->nchw", dout, w[:, :, u, v])
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))
'''

# ---------------------------------------------------------------------------- transposed
TF_LOOPS = '''\
def conv_transpose_forward(x, w, b, stride=1, pad=0, output_padding=0):
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    H_out = (H - 1) * stride - 2 * pad + HH + output_padding
    W_out = (W - 1) * stride - 2 * pad + WW + output_padding
    full = np.zeros((N, F, (H - 1) * stride + HH + output_padding, (W - 1) * stride + WW + output_padding))
    for i in range(H):
        for j in range(W):
            r, s = i * stride, j * stride
            full[:, :, r:r + HH, s:s + WW] += np.tensordot(x[:, :, i, j], w, axes=([1], [0]))
    out = full[:, :, pad:pad + H_out, pad:pad + W_out] + b[None, :, None, None]
    return out, (x, w, b, stride, pad, output_padding)
'''
TF_TAPS = '''\
def conv_transpose_forward(x, w, b, stride=1, pad=0, output_padding=0):
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    H_out = (H - 1) * stride - 2 * pad + HH + output_padding
    W_out = (W - 1) * stride - 2 * pad + WW + output_padding
    # every output (row, col) of the full result, padded so that the crop and output_padding fit
    full = np.zeros((N, F, pad + H_out + pad + HH, pad + W_out + pad + WW))
    for u in range(HH):
        for v in range(WW):
            full[:, :, u:u + stride * (H - 1) + 1:stride, v:v + stride * (W - 1) + 1:stride] += \\
                np.einsum("nchw,cf->nfhw", x, w[:, :, u, v])
    out = full[:, :, pad:pad + H_out, pad:pad + W_out] + b.reshape(1, -1, 1, 1)
    return out, (x, w, b, stride, pad, output_padding)
'''
TF_GRADIENT = '''\
def conv_transpose_forward(x, w, b, stride=1, pad=0, output_padding=0):
    # the transposed convolution is the dx of a convolution: spread x with stride - 1 zeros
    # between its pixels, pad with HH - 1 - pad, and correlate with the flipped kernel
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    up = np.zeros((N, C, stride * (H - 1) + 1, stride * (W - 1) + 1))
    up[:, :, ::stride, ::stride] = x
    ph, pw = HH - 1 - pad, WW - 1 - pad
    if ph < 0 or pw < 0:    # more padding than the kernel: crop instead
        up = up[:, :, max(-ph, 0):up.shape[2] - max(-ph, 0), max(-pw, 0):up.shape[3] - max(-pw, 0)]
    up = np.pad(up, ((0, 0), (0, 0), (max(ph, 0), max(ph, 0) + output_padding),
                     (max(pw, 0), max(pw, 0) + output_padding)))
    k = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)                  # (F, C, HH, WW)
    H_out = up.shape[2] - HH + 1
    W_out = up.shape[3] - WW + 1
    win = np.lib.stride_tricks.sliding_window_view(up, (HH, WW), axis=(2, 3))[:, :, :H_out, :W_out]
    out = np.einsum("nchwij,fcij->nfhw", win, k) + b[None, :, None, None]
    return out, (x, w, b, stride, pad, output_padding)
'''
TB_LOOPS = '''\
def conv_transpose_backward(dout, cache):
    x, w, b, stride, pad, output_padding = cache
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    full = np.zeros((N, F, (H - 1) * stride + HH + output_padding, (W - 1) * stride + WW + output_padding))
    full[:, :, pad:pad + H_out, pad:pad + W_out] = dout
    dx = np.zeros(x.shape)
    dw = np.zeros(w.shape)
    for i in range(H):
        for j in range(W):
            r, s = i * stride, j * stride
            window = full[:, :, r:r + HH, s:s + WW]                 # (N, F, HH, WW)
            dx[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
            dw += np.tensordot(x[:, :, i, j], window, axes=([0], [0]))
    return dx, dw, dout.sum(axis=(0, 2, 3))
'''
TB_TAPS = '''\
def conv_transpose_backward(dout, cache):
    x, w, b, stride, pad, output_padding = cache
    N, C, H, W = x.shape
    _, F, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    full = np.zeros((N, F, pad + H_out + pad + HH, pad + W_out + pad + WW))
    full[:, :, pad:pad + H_out, pad:pad + W_out] = dout
    dx = np.zeros(x.shape)
    dw = np.zeros(w.shape)
    for u in range(HH):
        for v in range(WW):
            seen = full[:, :, u:u + stride * (H - 1) + 1:stride, v:v + stride * (W - 1) + 1:stride]
            dx += np.einsum("nfhw,cf->nchw", seen, w[:, :, u, v])
            dw[:, :, u, v] = np.einsum("nchw,nfhw->cf", x, seen)
    return dx, dw, dout.sum(axis=(0, 2, 3))
'''

# ---------------------------------------------------------------------------- the fast pair
FF_IM2COL = '''\
def conv_forward_fast(x, w, b, stride=1, pad=0):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - HH) // stride + 1
    W_out = (W + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((C, HH, WW, N, H_out, W_out))
    for u in range(HH):
        for v in range(WW):
            cols[:, u, v] = xp[:, :, u:u + stride * H_out:stride, v:v + stride * W_out:stride].transpose(1, 0, 2, 3)
    out = w.reshape(F, -1) @ cols.reshape(C * HH * WW, -1)
    out = out.reshape(F, N, H_out, W_out).transpose(1, 0, 2, 3) + b[None, :, None, None]
    return out, (x, w, b, stride, pad)
'''
FF_WINDOWS = '''\
def conv_forward_fast(x, w, b, stride=1, pad=0):
    F, C, HH, WW = w.shape
    H_out = (x.shape[2] + 2 * pad - HH) // stride + 1
    W_out = (x.shape[3] + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (HH, WW), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :H_out, :W_out]      # (N, C, H', W', HH, WW)
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))        # (N, H', W', F)
    return out.transpose(0, 3, 1, 2) + b[None, :, None, None], (x, w, b, stride, pad)
'''
FF_LOOPS = '''\
def conv_forward_fast(x, w, b, stride=1, pad=0):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - HH) // stride + 1
    W_out = (W + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, (x, w, b, stride, pad)
'''
FB_IM2COL = '''\
def conv_backward_fast(dout, cache):
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((C, HH, WW, N, H_out, W_out))
    for u in range(HH):
        for v in range(WW):
            cols[:, u, v] = xp[:, :, u:u + stride * H_out:stride, v:v + stride * W_out:stride].transpose(1, 0, 2, 3)
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(F, -1)
    dw = (dout_mat @ cols.reshape(C * HH * WW, -1).T).reshape(w.shape)
    dcols = (w.reshape(F, -1).T @ dout_mat).reshape(C, HH, WW, N, H_out, W_out)
    dxp = np.zeros((C, N) + xp.shape[2:])
    for u in range(HH):
        for v in range(WW):
            dxp[:, :, u:u + stride * H_out:stride, v:v + stride * W_out:stride] += dcols[:, u, v]
    dx = dxp.transpose(1, 0, 2, 3)[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, dout_mat.sum(axis=1)
'''
FB_WINDOWS = '''\
def conv_backward_fast(dout, cache):
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (HH, WW), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :H_out, :W_out]      # (N, C, H', W', HH, WW)
    dw = np.tensordot(dout, win, axes=([0, 2, 3], [0, 2, 3]))      # (F, C, HH, WW)
    dpatch = np.tensordot(dout, w, axes=([1], [0]))                # (N, H', W', C, HH, WW)
    dxp = np.zeros(xp.shape)
    for u in range(HH):
        for v in range(WW):
            dxp[:, :, u:u + stride * H_out:stride, v:v + stride * W_out:stride] += \\
                dpatch[:, :, :, :, u, v].transpose(0, 3, 1, 2)
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))
'''
FB_LOOPS = '''\
def conv_backward_fast(dout, cache):
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    db = np.zeros(F)
    for n in range(N):
        for f in range(F):
            db[f] += dout[n, f].sum()
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db
'''

CORRECT = {
    "conv1d_forward": {"loops": C1F_LOOPS, "scalar": C1F_SCALAR, "windows": C1F_WINDOWS},
    "conv1d_backward": {"loops": C1B_LOOPS, "scalar": C1B_SCALAR, "windows": C1B_WINDOWS},
    "dilated_conv_forward": {"loops": DF_LOOPS, "taps": DF_TAPS, "zeros": DF_ZEROS},
    "dilated_conv_backward": {"loops": DB_LOOPS, "taps": DB_TAPS, "zeros": DB_TAPS},
    "conv_transpose_forward": {"loops": TF_LOOPS, "taps": TF_TAPS, "zeros": TF_GRADIENT},
    "conv_transpose_backward": {"loops": TB_LOOPS, "taps": TB_TAPS, "zeros": TB_TAPS},
    "conv_forward_fast": {"loops": FF_IM2COL, "taps": FF_WINDOWS, "zeros": FF_IM2COL, "im2col": FF_IM2COL},
    "conv_backward_fast": {"loops": FB_IM2COL, "taps": FB_WINDOWS, "zeros": FB_IM2COL, "im2col": FB_IM2COL},
}
for _fn in ("conv1d_forward", "conv1d_backward"):
    CORRECT[_fn].update(taps=CORRECT[_fn]["windows"], zeros=CORRECT[_fn]["scalar"])
# three learners, each in one style per function: "loops" loops over the output positions (the
# transposed convolution: over the input pixels; the fast pair: im2col), "taps" over the filter taps
# or strided windows with einsum / tensordot, "zeros" inserts zeros (a dilated kernel, a spread-out
# input) before an ordinary convolution, or sums scalar by scalar (1D), or im2col (the fast pair)
STYLES = ("loops", "taps", "zeros")


def _mutate(source, old, new, count=1):
    assert source.count(old) >= 1, (old, source)
    return source.replace(old, new, count)


MISTAKES = {
    # --- conv1d
    "conv1d_kernel_flipped": ("conv1d_forward", _mutate(C1F_LOOPS, "w, axes=", "w[:, :, ::-1], axes=")),
    "conv1d_dx_not_flipped": ("conv1d_backward", _mutate(C1B_WINDOWS, "flipped = w[:, :, ::-1]", "flipped = w")),
    "conv1d_stride_ignored_backward": ("conv1d_backward", _mutate(C1B_LOOPS, "s = i * stride", "s = i")),
    "conv1d_padding_not_cropped": ("conv1d_backward", _mutate(C1B_LOOPS, "dxp[:, :, pad:pad + L]", "dxp")),
    "conv1d_pad_slice": ("conv1d_backward", _mutate(C1B_LOOPS, "dxp[:, :, pad:pad + L]", "dxp[:, :, pad:-pad]")),
    "conv1d_db_averaged": ("conv1d_backward", _mutate(C1B_LOOPS, "dout.sum(axis=(0, 2))", "dout.mean(axis=(0, 2))")),
    # --- dilated
    "dilation_on_input": ("dilated_conv_forward", _mutate(_mutate(
        DF_TAPS, "r, s = u * dilation, v * dilation", "r, s = u, v"),
        "xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))",
        "xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))[:, :, ::dilation, ::dilation]")),
    "dilation_size_rule": ("dilated_conv_forward", _mutate(_mutate(
        DF_TAPS, "dilation * (HH - 1) - 1", "HH"), "dilation * (WW - 1) - 1", "WW")),
    "dilation_ignored_backward": ("dilated_conv_backward", _mutate(
        DB_TAPS, "r, s = u * dilation, v * dilation", "r, s = u, v")),
    "dilated_stride_ignored_backward": ("dilated_conv_backward", _mutate(_mutate(
        DB_LOOPS, "slice(i * stride, i * stride + ", "slice(i, i + "),
        "slice(j * stride, j * stride + ", "slice(j, j + ")),
    # --- transposed
    "transpose_w_as_fc": ("conv_transpose_forward", _mutate(_mutate(
        TF_TAPS, "_, F, HH, WW = w.shape", "F, _, HH, WW = w.shape"), "w[:, :, u, v])", "w[:, :, u, v].T)")),
    "transpose_output_padding_ignored": ("conv_transpose_forward", _mutate(_mutate(
        TF_LOOPS, "H_out = (H - 1) * stride - 2 * pad + HH + output_padding",
        "H_out = (H - 1) * stride - 2 * pad + HH"),
        "W_out = (W - 1) * stride - 2 * pad + WW + output_padding", "W_out = (W - 1) * stride - 2 * pad + WW")),
    "transpose_cropped_one_side": ("conv_transpose_forward", _mutate(
        TF_LOOPS, "full[:, :, pad:pad + H_out, pad:pad + W_out]", "full[:, :, :H_out, :W_out]")),
    "transpose_backward_dout_misplaced": ("conv_transpose_backward", _mutate(
        TB_LOOPS, "full[:, :, pad:pad + H_out, pad:pad + W_out] = dout", "full[:, :, :H_out, :W_out] = dout")),
    "transpose_db_averaged": ("conv_transpose_backward", _mutate(
        TB_TAPS, "dout.sum(axis=(0, 2, 3))", "dout.mean(axis=(0, 2, 3))")),
    # --- the fast pair, correct but written as loops: the values pass, the speed does not
    "fast_forward_loops": ("conv_forward_fast", FF_LOOPS),
    "fast_backward_loops": ("conv_backward_fast", FB_LOOPS),
}


def _cells(fn, *props):
    return {f"{fn}_{p}" for p in props}


_C1B_VALUES = ("basic", "padding", "stride", "uneven", "channels")
EXPECTED_FAILS = {
    # every value cell has a case with a kernel of 2 or 3 random taps: flipped differs everywhere;
    # no value cell passes, so inputs_unchanged is withheld too
    "conv1d_kernel_flipped": _cells("conv1d_forward", *_C1B_VALUES, "inputs_unchanged"),
    "conv1d_dx_not_flipped": _cells("conv1d_backward", *_C1B_VALUES, "inputs_unchanged"),
    # only stride and uneven (and some shapes cases, whose shapes stay right) have stride > 1
    "conv1d_stride_ignored_backward": _cells("conv1d_backward", "stride", "uneven"),
    # pad > 0 in padding, in shapes 2, 4, 5, and in the inputs case (whose dx is not judged)
    "conv1d_padding_not_cropped": _cells("conv1d_backward", "shapes", "padding"),
    # pad = 0 in every cell but padding (and the inputs case, pad 1): dx is empty there
    "conv1d_pad_slice": _cells("conv1d_backward", "shapes", "basic", "stride", "uneven", "channels"),
    # db is judged in every value case, N * L' > 1 everywhere
    "conv1d_db_averaged": _cells("conv1d_backward", *_C1B_VALUES, "inputs_unchanged"),
    # dilation >= 2 everywhere but basic (dilation 1): the output has the wrong size (or the sum
    # raises), so shapes and every dilated cell fail, the inputs case (dilation 2) too
    "dilation_on_input": _cells("dilated_conv_forward", "shapes", "dilation", "padding", "stride",
                                "nonsquare", "channels", "inputs_unchanged"),
    # the window of the last outputs runs past the input: an error wherever dilation >= 2
    "dilation_size_rule": _cells("dilated_conv_forward", "shapes", "dilation", "padding", "stride",
                                 "nonsquare", "channels", "inputs_unchanged"),
    "dilation_ignored_backward": _cells("dilated_conv_backward", "dilation", "padding", "stride",
                                        "nonsquare", "channels"),
    # stride > 1 in the stride cell only (and shapes, whose shapes stay right)
    "dilated_stride_ignored_backward": _cells("dilated_conv_backward", "stride"),
    # C != F in shapes 2, 3, 4, 5 and channels 2 (an error), C == F == 3 in channels 1 (wrong values)
    "transpose_w_as_fc": _cells("conv_transpose_forward", "shapes", "channels"),
    # output_padding > 0 in shapes 2, 3, 5 and in the output_padding cell; the inputs case has it too,
    # but the function still returns an (out, cache) and leaves its inputs alone
    "transpose_output_padding_ignored": _cells("conv_transpose_forward", "shapes", "output_padding"),
    # pad > 0 in padding and in the output_padding case "output_padding <= pad"
    "transpose_cropped_one_side": _cells("conv_transpose_forward", "padding", "output_padding"),
    "transpose_backward_dout_misplaced": _cells("conv_transpose_backward", "padding", "output_padding"),
    "transpose_db_averaged": _cells("conv_transpose_backward", "basic", "stride", "padding", "output_padding",
                                    "nonsquare", "channels", "inputs_unchanged"),
    "fast_forward_loops": {"conv_forward_fast_speed"},
    "fast_backward_loops": {"conv_backward_fast_speed"},
}
# what the feedback of each mistake's failing value cells says (the dilated forward mistakes make
# the sums raise: the learner reads the error, the case that raised it and the rule to check)
FEEDBACK = {
    "conv1d_kernel_flipped": "the kernel is flipped",
    "conv1d_dx_not_flipped": "dx uses the kernel as it is",
    "conv1d_stride_ignored_backward": "the stride is ignored in dx",
    "conv1d_padding_not_cropped": "the padding is not cropped from dx",
    "conv1d_pad_slice": "dx is empty when pad = 0",
    "conv1d_db_averaged": "db is averaged instead of summed",
    "dilation_on_input": "the dilation spaces the filter's taps, not the input",
    "dilation_size_rule": "check the output size, H' = (H + 2*pad - dilation*(HH - 1) - 1)",
    "dilation_ignored_backward": "the dilation is ignored in dx",
    "dilated_stride_ignored_backward": "the stride is ignored in dx",
    "transpose_w_as_fc": "",
    "transpose_output_padding_ignored": "output_padding is ignored",
    "transpose_cropped_one_side": "cropped on one side only",
    "transpose_backward_dout_misplaced": "dout is put back at the wrong place",
    "transpose_db_averaged": "db is averaged instead of summed",
    "fast_forward_loops": "is too slow",
    "fast_backward_loops": "is too slow",
}
assert set(EXPECTED_FAILS) == set(MISTAKES) == set(FEEDBACK), set(EXPECTED_FAILS) ^ set(MISTAKES)
for _name, (_fn, _src) in MISTAKES.items():
    assert _src.startswith(f"def {_fn}("), _name
    assert all(g.startswith(_fn + "_") for g in EXPECTED_FAILS[_name]), _name


# ---------------------------------------------------------------------------- the class

CLASS = B.AssignmentClass(ASSIGNMENT, NOTEBOOKS, NOTEBOOK_OF, CORRECT, MISTAKES, EXPECTED_FAILS, STYLES, "loops")
points, notebooks, students, write_class = CLASS.points, CLASS.notebooks, CLASS.students, CLASS.write_class
