"""Learner implementations of the graded functions, as the source of a solution cell.

Each entry is the complete source of one solution cell: it starts with
``def NAME(`` and uses only ``np`` (imported by the notebook).  ``CORRECT`` holds
several right styles per function (plain loops, strided windows with einsum or
tensordot, im2col with matrix products); each must pass every graded cell.
``MISTAKES`` holds one small, realistic learner bug per entry, and
``EXPECTED_FAILS`` says which graded cells each bug must fail, worked out from
the check cases of docs/ARCHITECTURE.md (reasoning is written next to each
entry; it is not copied from the grader's output).

Case facts used below (docs/ARCHITECTURE.md; where it leaves a detail open,
the case lists of the hidden checks):
- conv basic / padding / stride / uneven use square inputs and kernels, C = 1,
  F = 1; every value cell has a case with N >= 2; basic and stride use pad 0,
  padding pad 1 and 2; uneven has (H + 2 pad - HH) % stride != 0 with
  stride 2 or 3 and pad 0 or 1;
- nonsquare has H != W and HH != WW: a stride-1 pad-0 case and a stride-2
  pad-1 case whose sizes do not divide; channels has C = 3, F = 4 and 5,
  square 3 x 3 kernels, pad 1, stride 1 on a 5 x 4 input and stride 2 on 9 x 9;
- the shapes cells include pad 0, pad > 0, strides that do not divide evenly
  and non-square inputs and kernels;
- pooling basic is pool 2 stride 2 on even sizes; overlap is pool 3 stride 2
  and pool 2 stride 1; general is pool 2 stride 2 and pool 3 stride 2 on
  non-square sizes; ties draws small integers, with and without overlapping
  windows.
"""

FUNCTIONS = ("zero_pad", "conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward")

NOTEBOOK_OF = {
    "zero_pad": "convolution",
    "conv_forward": "convolution",
    "conv_backward": "convolution",
    "maxpool_forward": "pooling",
    "maxpool_backward": "pooling",
}

# ----------------------------------------------------------------------------
# zero_pad
# ----------------------------------------------------------------------------
ZERO_PAD_LOOPS = '''\
def zero_pad(x, pad):
    """x (N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad), zeros around each image."""
    N, C, H, W = x.shape
    out = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=np.float64)
    for n in range(N):
        for c in range(C):
            out[n, c, pad:pad + H, pad:pad + W] = x[n, c]
    return out
'''

ZERO_PAD_NPPAD = '''\
def zero_pad(x, pad):
    """x (N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad)."""
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
'''

ZERO_PAD_CONCAT = '''\
def zero_pad(x, pad):
    """x (N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad), built by concatenation."""
    N, C, H, W = x.shape
    rows = np.zeros((N, C, pad, W))
    tall = np.concatenate([rows, x, rows], axis=2)
    cols = np.zeros((N, C, H + 2 * pad, pad))
    return np.concatenate([cols, tall, cols], axis=3)
'''

# ----------------------------------------------------------------------------
# conv_forward
# ----------------------------------------------------------------------------
CONV_FORWARD_LOOPS = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    """x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W'), cache."""
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
    cache = (x, w, b, stride, pad)
    return out, cache
'''

CONV_FORWARD_EINSUM = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    """Strided windows and einsum: out (N, F, H', W'), cache (x, w, b, stride, pad)."""
    F, C, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (HH, WW), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]          # (N, C, H', W', HH, WW)
    out = np.einsum("nchwij,fcij->nfhw", windows, w) + b.reshape(1, F, 1, 1)
    return out, (x, w, b, stride, pad)
'''

CONV_FORWARD_TENSORDOT = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    """Strided windows contracted with tensordot over (C, HH, WW)."""
    F, C, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (HH, WW), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]          # (N, C, H', W', HH, WW)
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))   # (N, H', W', F)
    out = out.transpose(0, 3, 1, 2) + b[None, :, None, None]
    return out, (x, w, b, stride, pad)
'''

CONV_FORWARD_IM2COL = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    """im2col: every window becomes a column, the layer one matrix product."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - HH) // stride + 1
    W_out = (W + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((N, C, HH, WW, H_out, W_out))
    for i in range(HH):
        for j in range(WW):
            cols[:, :, i, j] = xp[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride]
    cols = cols.reshape(N, C * HH * WW, H_out * W_out)
    out = w.reshape(F, -1) @ cols + b[:, None]           # (N, F, H' W')
    return out.reshape(N, F, H_out, W_out), (x, w, b, stride, pad)
'''

# ----------------------------------------------------------------------------
# conv_backward
# ----------------------------------------------------------------------------
CONV_BACKWARD_LOOPS = '''\
def conv_backward(dout, cache):
    """Loop over outputs; each scatters its gradient into dx and dw."""
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    for n in range(N):
        for f in range(F):
            db[f] += np.sum(dout[n, f])
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, db
'''

CONV_BACKWARD_EINSUM = '''\
def conv_backward(dout, cache):
    """dw by einsum over strided windows; dx as a full correlation of the
    stride-dilated dout with the flipped kernel (a transposed convolution)."""
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    swv = np.lib.stride_tricks.sliding_window_view
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = swv(xp, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :H_out, :W_out]
    dw = np.einsum("nchwij,nfhw->fcij", windows, dout)
    db = dout.sum(axis=(0, 2, 3))
    Hd, Wd = (H_out - 1) * stride + 1, (W_out - 1) * stride + 1
    dilated = np.zeros((N, F, Hd, Wd))
    dilated[:, :, ::stride, ::stride] = dout
    full = np.pad(dilated, ((0, 0), (0, 0), (HH - 1, HH - 1), (WW - 1, WW - 1)))
    w_flipped = w[:, :, ::-1, ::-1]
    dpart = np.einsum("nfhwij,fcij->nchw", swv(full, (HH, WW), axis=(2, 3)), w_flipped)
    dxp = np.zeros_like(xp)
    dxp[:, :, :dpart.shape[2], :dpart.shape[3]] = dpart   # rows no window reached stay 0
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, db
'''

CONV_BACKWARD_IM2COL = '''\
def conv_backward(dout, cache):
    """im2col: dw and the column gradients are matrix products; col2im adds
    the columns back onto the padded input."""
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((N, C, HH, WW, H_out, W_out))
    for i in range(HH):
        for j in range(WW):
            cols[:, :, i, j] = xp[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride]
    cols = cols.reshape(N, C * HH * WW, H_out * W_out)
    dout_mat = dout.reshape(N, F, H_out * W_out)
    dw = np.tensordot(dout_mat, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
    db = dout_mat.sum(axis=(0, 2))
    dcols = (w.reshape(F, -1).T @ dout_mat).reshape(N, C, HH, WW, H_out, W_out)
    dxp = np.zeros_like(xp)
    for i in range(HH):
        for j in range(WW):
            dxp[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride] += dcols[:, :, i, j]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db
'''

# ----------------------------------------------------------------------------
# maxpool_forward
# ----------------------------------------------------------------------------
MAXPOOL_FORWARD_LOOPS = '''\
def maxpool_forward(x, pool=2, stride=2):
    """Max over pool x pool windows: x (N, C, H, W) -> out (N, C, H', W'), cache."""
    N, C, H, W = x.shape
    H_out = (H - pool) // stride + 1
    W_out = (W - pool) // stride + 1
    out = np.zeros((N, C, H_out, W_out))
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, c, i, j] = np.max(x[n, c, i * stride:i * stride + pool,
                                               j * stride:j * stride + pool])
    return out, (x, pool, stride)
'''

MAXPOOL_FORWARD_WINDOWS = '''\
def maxpool_forward(x, pool=2, stride=2):
    """Strided windows, max over the last two axes."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (pool, pool), axis=(2, 3))
    out = windows[:, :, ::stride, ::stride].max(axis=(4, 5))
    return out, (x, pool, stride)
'''

MAXPOOL_FORWARD_IM2COL = '''\
def maxpool_forward(x, pool=2, stride=2):
    """Stack the pool*pool strided slices (one per window offset), take the max."""
    N, C, H, W = x.shape
    H_out = (H - pool) // stride + 1
    W_out = (W - pool) // stride + 1
    cols = np.stack([x[:, :, a:a + stride * H_out:stride, c:c + stride * W_out:stride]
                     for a in range(pool) for c in range(pool)])
    return cols.max(axis=0), (x, pool, stride)
'''

# ----------------------------------------------------------------------------
# maxpool_backward
# ----------------------------------------------------------------------------
MAXPOOL_BACKWARD_LOOPS = '''\
def maxpool_backward(dout, cache):
    """Each dout entry goes to the first maximum of its window; overlaps add."""
    x, pool, stride = cache
    N, C, H, W = x.shape
    _, _, H_out, W_out = dout.shape
    dx = np.zeros_like(x, dtype=np.float64)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    window = x[n, c, i * stride:i * stride + pool, j * stride:j * stride + pool]
                    a, k = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, i * stride + a, j * stride + k] += dout[n, c, i, j]
    return dx
'''

MAXPOOL_BACKWARD_WINDOWS = '''\
def maxpool_backward(dout, cache):
    """argmax over strided windows, then np.add.at so that overlaps add up."""
    x, pool, stride = cache
    N, C, H, W = x.shape
    _, _, H_out, W_out = dout.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (pool, pool), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :H_out, :W_out]
    first = windows.reshape(N, C, H_out, W_out, pool * pool).argmax(axis=-1)
    da, dc = np.divmod(first, pool)
    n, c, i, j = np.indices((N, C, H_out, W_out))
    dx = np.zeros(x.shape)
    np.add.at(dx, (n, c, i * stride + da, j * stride + dc), dout)
    return dx
'''

MAXPOOL_BACKWARD_IM2COL = '''\
def maxpool_backward(dout, cache):
    """One strided slice per window offset: the argmax picks an offset, and
    each offset's slice receives dout where it won (slices never repeat a cell)."""
    x, pool, stride = cache
    _, _, H_out, W_out = dout.shape
    offsets = [(a, c) for a in range(pool) for c in range(pool)]
    cols = np.stack([x[:, :, a:a + stride * H_out:stride, c:c + stride * W_out:stride]
                     for a, c in offsets])
    winner = cols.argmax(axis=0)                 # first maximum in row-major order
    dx = np.zeros(x.shape)
    for k, (a, c) in enumerate(offsets):
        dx[:, :, a:a + stride * H_out:stride, c:c + stride * W_out:stride] += dout * (winner == k)
    return dx
'''

# The most naive honest style: seven nested loops, one multiply-add at a time.  It must
# stay inside the time budget (20 x the reference loops, which vectorise each window).
CONV_FORWARD_SCALAR = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    """Seven nested loops, one product at a time."""
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
                    total = b[f]
                    for c in range(C):
                        for p in range(HH):
                            for q in range(WW):
                                total += xp[n, c, i * stride + p, j * stride + q] * w[f, c, p, q]
                    out[n, f, i, j] = total
    return out, (x, w, b, stride, pad)
'''

CONV_BACKWARD_SCALAR = '''\
def conv_backward(dout, cache):
    """Seven nested loops: each output scatters into dx and dw, one entry at a time."""
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    g = dout[n, f, i, j]
                    db[f] += g
                    for c in range(C):
                        for p in range(HH):
                            for q in range(WW):
                                dw[f, c, p, q] += g * xp[n, c, i * stride + p, j * stride + q]
                                dxp[n, c, i * stride + p, j * stride + q] += g * w[f, c, p, q]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db
'''


CORRECT = {
    "zero_pad": {"loops": ZERO_PAD_LOOPS, "nppad": ZERO_PAD_NPPAD, "concat": ZERO_PAD_CONCAT},
    "conv_forward": {"loops": CONV_FORWARD_LOOPS, "einsum": CONV_FORWARD_EINSUM,
                     "tensordot": CONV_FORWARD_TENSORDOT, "im2col": CONV_FORWARD_IM2COL,
                     "scalar": CONV_FORWARD_SCALAR},
    "conv_backward": {"loops": CONV_BACKWARD_LOOPS, "einsum": CONV_BACKWARD_EINSUM,
                      "im2col": CONV_BACKWARD_IM2COL, "scalar": CONV_BACKWARD_SCALAR},
    "maxpool_forward": {"loops": MAXPOOL_FORWARD_LOOPS, "windows": MAXPOOL_FORWARD_WINDOWS,
                        "im2col": MAXPOOL_FORWARD_IM2COL},
    "maxpool_backward": {"loops": MAXPOOL_BACKWARD_LOOPS, "windows": MAXPOOL_BACKWARD_WINDOWS,
                         "im2col": MAXPOOL_BACKWARD_IM2COL},
}

STYLES = ("loops", "vectorized", "im2col")


def correct_style(function, style):
    """The source of a correct ``function`` in one of STYLES (or a named style)."""
    styles = CORRECT[function]
    if style in styles:
        return styles[style]
    if style == "vectorized":
        return styles.get("einsum") or styles.get("windows") or styles["nppad"]
    if style == "im2col":
        return styles.get("im2col") or styles["concat"]
    raise KeyError(f"{function} has no style {style!r}")


# ----------------------------------------------------------------------------
# Mistakes: (function, source); one realistic bug each, everything else right.
# ----------------------------------------------------------------------------
M = {}

M["bias_missing"] = ("conv_forward", CONV_FORWARD_LOOPS.replace(
    "out[n, f, i, j] = np.sum(window * w[f]) + b[f]",
    "out[n, f, i, j] = np.sum(window * w[f])"))

# The bias is added after the filter loop with the loop variable left over from
# it, so every filter gets the last filter's bias (right only when F = 1).
M["bias_not_per_filter"] = ("conv_forward", '''\
def conv_forward(x, w, b, stride=1, pad=0):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - HH) // stride + 1
    W_out = (W + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out))
    for f in range(F):
        for i in range(H_out):
            for j in range(W_out):
                window = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                out[:, f, i, j] = np.sum(window * w[f], axis=(1, 2, 3))
    out += b[f]
    return out, (x, w, b, stride, pad)
''')

# The bias goes inside the window sum: added C*HH*WW times instead of once.
M["bias_per_element"] = ("conv_forward", CONV_FORWARD_LOOPS.replace(
    "out[n, f, i, j] = np.sum(window * w[f]) + b[f]",
    "out[n, f, i, j] = np.sum(window * w[f] + b[f])"))

M["kernel_flipped_forward"] = ("conv_forward", CONV_FORWARD_EINSUM.replace(
    'windows, w) + b', 'windows, w[:, :, ::-1, ::-1]) + b'))

M["hw_swapped"] = ("conv_forward", CONV_FORWARD_LOOPS.replace(
    "N, C, H, W = x.shape", "N, C, W, H = x.shape"))

M["hhww_swapped"] = ("conv_forward", CONV_FORWARD_LOOPS.replace(
    "F, _, HH, WW = w.shape", "F, _, WW, HH = w.shape"))

M["ceil_output_size"] = ("conv_forward", CONV_FORWARD_LOOPS.replace(
    "H_out = (H + 2 * pad - HH) // stride + 1\n    W_out = (W + 2 * pad - WW) // stride + 1",
    "H_out = int(np.ceil((H + 2 * pad - HH) / stride)) + 1\n"
    "    W_out = int(np.ceil((W + 2 * pad - WW) / stride)) + 1"))

# One loop over channels that assigns instead of accumulating: only the last
# channel survives (right only when C = 1).
M["channels_not_summed"] = ("conv_forward", '''\
def conv_forward(x, w, b, stride=1, pad=0):
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
                    for c in range(C):
                        window = xp[n, c, i * stride:i * stride + HH, j * stride:j * stride + WW]
                        out[n, f, i, j] = np.sum(window * w[f, c]) + b[f]
    return out, (x, w, b, stride, pad)
''')

# Written as a true convolution over a kernel flipped in place: the output is
# right, but the caller's w comes back flipped.
M["forward_modifies_w"] = ("conv_forward", '''\
def conv_forward(x, w, b, stride=1, pad=0):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - HH) // stride + 1
    W_out = (W + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    w[...] = w[:, :, ::-1, ::-1].copy()        # convolution flips the kernel ...
    out = np.zeros((N, F, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            window = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            # ... and flips it back while sliding
            out[:, :, i, j] = np.einsum("ncij,fcij->nf", window, w[:, :, ::-1, ::-1])
    return out + b[None, :, None, None], (x, w, b, stride, pad)
''')

# Centres the input in place after using it: the output is right, the
# caller's x is not.
M["forward_modifies_x"] = ("conv_forward", '''\
def conv_forward(x, w, b, stride=1, pad=0):
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
    x -= x.mean()                 # "centre the input for next time"
    return out, (x, w, b, stride, pad)
''')

M["db_averaged"] = ("conv_backward", CONV_BACKWARD_EINSUM.replace(
    "db = dout.sum(axis=(0, 2, 3))", "db = dout.mean(axis=(0, 2, 3))"))

# One example at a time, dw assigned rather than accumulated: the last example wins.
M["dw_last_example"] = ("conv_backward", '''\
def conv_backward(dout, cache):
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        dw = np.zeros_like(w)
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db
''')

M["dx_kernel_not_flipped"] = ("conv_backward", CONV_BACKWARD_EINSUM.replace(
    "w_flipped = w[:, :, ::-1, ::-1]", "w_flipped = w"))

M["stride_ignored_backward"] = ("conv_backward", CONV_BACKWARD_LOOPS.replace(
    "rows = slice(i * stride, i * stride + HH)\n                    cols = slice(j * stride, j * stride + WW)",
    "rows = slice(i, i + HH)\n                    cols = slice(j, j + WW)"))

M["pad_not_cropped"] = ("conv_backward", CONV_BACKWARD_LOOPS.replace(
    "dx = dxp[:, :, pad:pad + H, pad:pad + W]", "dx = dxp"))

M["crop_minus_pad"] = ("conv_backward", CONV_BACKWARD_LOOPS.replace(
    "dx = dxp[:, :, pad:pad + H, pad:pad + W]", "dx = dxp[:, :, pad:-pad, pad:-pad]"))

# dx is built filter by filter, and each filter's part replaces the previous
# one instead of adding to it (right only when F = 1).
M["filters_not_summed_dx"] = ("conv_backward", '''\
def conv_backward(dout, cache):
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (HH, WW), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :H_out, :W_out]
    dw = np.einsum("nchwij,nfhw->fcij", windows, dout)
    db = dout.sum(axis=(0, 2, 3))
    for f in range(F):
        dxp = np.zeros_like(xp)
        for i in range(H_out):
            for j in range(W_out):
                dxp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW] += (
                    dout[:, f, i, j][:, None, None, None] * w[f][None])
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db
''')

# dx by correlating with a kernel the learner flips in place (in the cache).
M["backward_modifies_cache"] = ("conv_backward", CONV_BACKWARD_EINSUM.replace(
    "w_flipped = w[:, :, ::-1, ::-1]",
    "w[...] = w[:, :, ::-1, ::-1].copy()\n    w_flipped = w"))

# Differentiates numerically around the learner's own forward pass: right on
# small inputs, far over the time budget on the probe.
M["numerical_backward"] = ("conv_backward", '''\
def conv_backward(dout, cache):
    x, w, b, stride, pad = cache
    x, w, b = x.copy(), w.copy(), b.copy()
    h = 1e-5

    def loss():
        return np.sum(conv_forward(x, w, b, stride, pad)[0] * dout)

    grads = []
    for p in (x, w, b):
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = loss()
            p[idx] = old - h
            down = loss()
            p[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return tuple(grads)
''')

# The reshape trick: only right when stride == pool and the sizes divide.
M["pool_reshape_trick"] = ("maxpool_forward", '''\
def maxpool_forward(x, pool=2, stride=2):
    N, C, H, W = x.shape
    out = x.reshape(N, C, H // pool, pool, W // pool, pool).max(axis=(3, 5))
    return out, (x, pool, stride)
''')

# Fancy-index += with repeated indices: numpy buffers, so a cell that is the
# maximum of two overlapping windows receives only one of the two gradients.
M["pool_overlap_overwrites"] = ("maxpool_backward", MAXPOOL_BACKWARD_WINDOWS.replace(
    "np.add.at(dx, (n, c, i * stride + da, j * stride + dc), dout)",
    "dx[n, c, i * stride + da, j * stride + dc] += dout"))

M["pool_ties_to_all"] = ("maxpool_backward", '''\
def maxpool_backward(dout, cache):
    x, pool, stride = cache
    N, C, H, W = x.shape
    _, _, H_out, W_out = dout.shape
    dx = np.zeros(x.shape)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride, i * stride + pool)
                    cols = slice(j * stride, j * stride + pool)
                    window = x[n, c, rows, cols]
                    dx[n, c, rows, cols] += (window == window.max()) * dout[n, c, i, j]
    return dx
''')

# Marks each routed dout entry as done by zeroing it: dx right, dout wiped.
M["pool_modifies_dout"] = ("maxpool_backward", MAXPOOL_BACKWARD_LOOPS.replace(
    "dx[n, c, i * stride + a, j * stride + k] += dout[n, c, i, j]",
    "dx[n, c, i * stride + a, j * stride + k] += dout[n, c, i, j]\n"
    "                    dout[n, c, i, j] = 0.0"))

MISTAKES = M
del M

_CF = "conv_forward_"
_CB = "conv_backward_"
CONV_FORWARD_VALUES = {_CF + s for s in ("basic", "padding", "stride", "uneven", "nonsquare", "channels")}
CONV_BACKWARD_VALUES = {_CB + s for s in ("basic", "padding", "stride", "uneven", "nonsquare", "channels")}
CONV_BACKWARD_ALL = CONV_BACKWARD_VALUES | {_CB + "shapes", _CB + "inputs_unchanged"}

# Which graded cells each mistake must fail, and why.  The inputs_unchanged
# cells pass a function that returns the right kind of tuple without raising
# and leaves its arguments alone; their case is x (2, 3, 6, 5), w (2, 3, 3, 2),
# stride 2, pad 1 (H' and W' uneven), and for pooling x (2, 3, 7, 6), pool 3,
# stride 2.  The backward probes (conv: x (8, 4, 32, 32), w (6, 4, 3, 3),
# stride 1, pad 1; pooling: pool 2, stride 2) count towards conv_backward_channels
# and maxpool_backward_general.
EXPECTED_FAILS = {
    # b is random and nonzero in every value case.  Every value cell fails, so
    # inputs_unchanged is withheld too (it counts only beside a passing value cell).
    "bias_missing": CONV_FORWARD_VALUES | {_CF + "inputs_unchanged"},
    # Right whenever F = 1 (basic ... nonsquare); channels has F = 4 and 5.
    "bias_not_per_filter": {_CF + "channels"},
    "bias_per_element": CONV_FORWARD_VALUES | {_CF + "inputs_unchanged"},
    # Random kernels are not symmetric, so every value case differs.
    "kernel_flipped_forward": CONV_FORWARD_VALUES | {_CF + "inputs_unchanged"},
    # Square inputs are unaffected.  shapes and nonsquare have H != W, and so
    # does "channels 1" (5 x 4).  The inputs case (6 x 5) runs without an
    # error (a truncated last window still broadcasts against w), so it passes.
    "hw_swapped": {_CF + "shapes", _CF + "nonsquare", _CF + "channels"},
    # Square kernels are unaffected (channels uses 3 x 3).  shapes, nonsquare
    # and the inputs case (w 3 x 2) have HH != WW: windows of the wrong shape
    # do not broadcast against w, so the inputs case raises and fails too.
    "hhww_swapped": {_CF + "shapes", _CF + "nonsquare", _CF + "inputs_unchanged"},
    # Differs only when (H + 2 pad - HH) % stride != 0: every uneven case, some
    # shapes, "non-square 2" (5 % 2 and 9 % 2) and the inputs case (the extra
    # window is cut short and raises); channels divides evenly and passes.
    "ceil_output_size": {_CF + "shapes", _CF + "uneven", _CF + "nonsquare", _CF + "inputs_unchanged"},
    # Right whenever C = 1; channels has C = 3.
    "channels_not_summed": {_CF + "channels"},
    "forward_modifies_w": {_CF + "inputs_unchanged"},
    "forward_modifies_x": {_CF + "inputs_unchanged"},
    # N H' W' > 1 in every value case; with every value cell failed, the
    # inputs_unchanged point is withheld as well.
    "db_averaged": CONV_BACKWARD_VALUES | {_CB + "inputs_unchanged"},
    # Every value cell has a case with N >= 2.
    "dw_last_example": CONV_BACKWARD_VALUES | {_CB + "inputs_unchanged"},
    "dx_kernel_not_flipped": CONV_BACKWARD_VALUES | {_CB + "inputs_unchanged"},
    # Right at stride 1 (basic, padding, the probe); stride, uneven, nonsquare
    # ("non-square 2") and channels ("channels 2") have stride > 1.
    "stride_ignored_backward": {_CB + s for s in ("stride", "uneven", "nonsquare", "channels")},
    # Right at pad 0 (basic, stride); wrong shape wherever pad > 0: shapes,
    # padding, "uneven 2", "non-square 2", both channels cases.
    "pad_not_cropped": {_CB + s for s in ("shapes", "padding", "uneven", "nonsquare", "channels")},
    # Empty dx at pad 0: shapes, basic, stride, "uneven 1", "non-square 1".
    # Right whenever pad > 0: padding, channels (pad 1 in both cases and the
    # probe) and the inputs case pass.
    "crop_minus_pad": {_CB + s for s in ("shapes", "basic", "stride", "uneven", "nonsquare")},
    # Right whenever F = 1; channels has F = 4 and 5.
    "filters_not_summed_dx": {_CB + "channels"},
    "backward_modifies_cache": {_CB + "inputs_unchanged"},
    # The probe runs far past its budget: every cell of the function scores 0.
    "numerical_backward": CONV_BACKWARD_ALL,
    # Raises (reshape) whenever the windows do not tile the input: shapes,
    # overlap, general and the inputs case (7 x 6, pool 3); basic is pool 2
    # stride 2 on 4 x 4 and 6 x 6 and passes.
    "pool_reshape_trick": {"maxpool_forward_shapes", "maxpool_forward_overlap",
                           "maxpool_forward_general", "maxpool_forward_inputs_unchanged"},
    # Loses gradient where one cell is the first maximum of two windows:
    # overlap (drawn so that this mistake differs), "general 2" (pool 3
    # stride 2 over 12 channels, a shared maximum is all but certain) and the
    # ties cases with overlapping windows (small integers: shared maxima
    # everywhere).  basic does not overlap; the inputs case only compares
    # the arguments.
    "pool_overlap_overwrites": {"maxpool_backward_overlap", "maxpool_backward_general",
                                "maxpool_backward_ties"},
    # Random floats have no ties; only the ties cell has repeated maxima.
    "pool_ties_to_all": {"maxpool_backward_ties"},
    "pool_modifies_dout": {"maxpool_backward_inputs_unchanged"},
}

# Status the grader must give the cells a mistake fails, where it is fixed.
EXPECTED_STATUS = {
    "numerical_backward": "timeout",
}

assert set(EXPECTED_FAILS) == set(MISTAKES), set(EXPECTED_FAILS) ^ set(MISTAKES)
for _name, (_fn, _src) in MISTAKES.items():
    assert _src.startswith(f"def {_fn}("), _name
    assert all(g.startswith(_fn) for g in EXPECTED_FAILS[_name]), _name
for _fn, _styles in CORRECT.items():
    for _style, _src in _styles.items():
        assert _src.startswith(f"def {_fn}("), (_fn, _style)
