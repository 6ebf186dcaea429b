"""Reference layers of the course: NumPy, NCHW, float64.

Every layer follows one interface: ``forward(...) -> (out, cache)`` and
``backward(dout, cache) -> gradients``.  The contract (shapes, caches, the
output-size rule, the tie rule) is the one the exercises state:

    conv_forward(x, w, b, stride=1, pad=0) -> (out, cache)
        x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W')
        H' = (H + 2*pad - HH) // stride + 1, W' likewise
        cache = (x, w, b, stride, pad)
    conv_backward(dout, cache) -> (dx, dw, db)
    maxpool_forward(x, pool=2, stride=2) -> (out, cache)
        H' = (H - pool) // stride + 1, cache = (x, pool, stride)
    maxpool_backward(dout, cache) -> dx
        overlapping windows add up; a tie sends the gradient to the first
        maximal element of the window in row-major order.

Two implementations of the convolution are kept: ``*_loops`` follow the
definitions term by term (slow, easy to read, used to set time budgets), and
the default ones copy the windows into a matrix (im2col) and do one matrix
product per pass (fast; chapter 9 of the book derives them piece by piece and
times them against PyTorch).  Tests hold them equal.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size, k, stride=1, pad=0):
    """Number of windows of width k that fit in size + 2*pad with the given stride."""
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    if size + 2 * pad < k:
        raise ValueError(f"a window of {k} does not fit in {size} + 2*{pad}")
    return (size + 2 * pad - k) // stride + 1


def zero_pad(x, pad):
    """Pad the last two axes of x (N, C, H, W) with pad zeros on every side."""
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _windows(xp, HH, WW, stride):
    """View of xp (N, C, Hp, Wp) as (N, C, H', W', HH, WW) windows, no copy."""
    v = sliding_window_view(xp, (HH, WW), axis=(2, 3))
    return v[:, :, ::stride, ::stride]


def _im2col(x, HH, WW, stride, pad, Ho, Wo):
    """The windows of x (N, C, H, W), zero-padded, as the columns of a matrix.

    Returns cols (C*HH*WW, N*Ho*Wo): row (c, u, v) is filter entry (c, u, v), column
    (n, i, j) is the window of output (n, i, j). Built with HH*WW strided copies of whole
    arrays, channels first, so that the rows come out in the order of w.reshape(F, -1).
    """
    N, C, H, W = x.shape
    xp = np.zeros((C, N, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x.transpose(1, 0, 2, 3)
    cols = np.empty((C, HH, WW, N, Ho, Wo))
    for u in range(HH):
        for v in range(WW):
            cols[:, u, v] = xp[:, :, u:u + stride * Ho:stride, v:v + stride * Wo:stride]
    return cols.reshape(C * HH * WW, N * Ho * Wo)


def conv_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation layer; see the module docstring for shapes and cache.

    im2col, then one matrix product: out_mat (F, N*H'*W') = w_mat (F, C*HH*WW) @ cols.
    """
    N, C, H, W = x.shape
    F, C2, HH, WW = w.shape
    if C != C2:
        raise ValueError(f"x has {C} channels but w expects {C2}")
    Ho, Wo = output_size(H, HH, stride, pad), output_size(W, WW, stride, pad)
    out_mat = w.reshape(F, -1) @ _im2col(x, HH, WW, stride, pad, Ho, Wo)
    out = np.empty((N, F, Ho, Wo))          # the bias and the (N, F, ...) layout in one pass
    np.add(out_mat.reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3), b[:, None, None], out=out)
    return out, (x, w, b, stride, pad)


def _col2im(dcols, x_shape, HH, WW, stride, pad, Ho, Wo):
    """Adjoint of _im2col: the gradient dx (x_shape) from the gradient of every window.

    dcols (C*HH*WW, N*Ho*Wo) is laid out as cols. Each window's gradient is added back where
    the window was read from (HH*WW strided additions: a pixel in several windows collects
    them all), and the padding is cropped at the end. The sums are written through a
    (C, N, ...) view of an (N, C, ...) array, so dx needs no transposing copy.
    """
    N, C, H, W = x_shape
    dcols = dcols.reshape(C, HH, WW, N, Ho, Wo)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    dxp_cn = dxp.transpose(1, 0, 2, 3)
    for u in range(HH):
        for v in range(WW):
            dxp_cn[:, :, u:u + stride * Ho:stride, v:v + stride * Wo:stride] += dcols[:, u, v]
    return dxp[:, :, pad:pad + H, pad:pad + W].copy() if pad else dxp


def conv_transpose(dout, w, stride, pad, x_shape):
    """Adjoint of the x -> conv_forward(x, w, 0) map: the gradient dx (x_shape).

    One matrix product gives the gradient of every window, dcols = w_mat.T @ dout_mat;
    col2im adds them back where the windows were read from.
    """
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(F, -1)
    return _col2im(w.reshape(F, -1).T @ dout_mat, x_shape, HH, WW, stride, pad, Ho, Wo)


def conv_backward(dout, cache):
    """Gradients (dx, dw, db) of the cross-correlation layer, shaped like (x, w, b).

    With dout_mat (F, N*H'*W') the upstream gradient laid out as the forward product:
    dw_mat = dout_mat @ cols.T (a sum over every window of the batch), db sums dout_mat's
    rows, dcols = w_mat.T @ dout_mat (one product) and col2im give dx. cols is dropped
    before dcols is made, so the two large matrices are never held at once.

    The sum of dw_mat is one product when windows have many entries; when each image has
    many more windows than a window has entries (few channels, large images: at least four
    times as many), it is one product per image, (F, H'*W') @ (H'*W', C*HH*WW), summed over
    the batch: a single product with an inner dimension of N*H'*W' and a tiny
    (F, C*HH*WW) result runs far below the matrix product's speed (and on one thread
    only), while the per-image products, read straight from dout's own (N, F, H'*W')
    layout and a per-image view of cols, do not.
    """
    x, w, b, stride, pad = cache
    N = x.shape[0]
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    cols = _im2col(x, HH, WW, stride, pad, Ho, Wo)
    K, P = cols.shape[0], Ho * Wo
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(F, -1)
    if P >= 4 * K:
        per_image = cols.reshape(K, N, P).transpose(1, 2, 0)              # (N, P, K), a view
        dw = np.matmul(dout.reshape(N, F, P), per_image).sum(axis=0)
    else:
        dw = dout_mat @ cols.T
    dw = dw.reshape(w.shape)
    del cols
    db = dout_mat.sum(axis=1)
    dx = _col2im(w.reshape(F, -1).T @ dout_mat, x.shape, HH, WW, stride, pad, Ho, Wo)
    return dx, dw, db


def conv_forward_loops(x, w, b, stride=1, pad=0):
    """conv_forward written as the sum in its definition, one output at a time."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = output_size(H, HH, stride, pad), output_size(W, WW, stride, pad)
    xp = zero_pad(x, pad)
    out = np.zeros((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, (x, w, b, stride, pad)


def conv_backward_loops(dout, cache):
    """conv_backward as a loop over outputs: each one scatters into dx and dw."""
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    xp = zero_pad(x, pad)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    for n in range(N):
        for f in range(F):
            db[f] += dout[n, f].sum()
            for i in range(Ho):
                for j in range(Wo):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db


def maxpool_forward(x, pool=2, stride=2):
    """Max over pool x pool windows: x (N, C, H, W) -> out (N, C, H', W')."""
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, pool, stride), output_size(W, pool, stride)
    win = _windows(x, pool, pool, stride)[:, :, :Ho, :Wo]
    return win.max(axis=(4, 5)), (x, pool, stride)


def maxpool_backward(dout, cache):
    """Route each dout entry to the first maximal element of its window: dx like x."""
    x, pool, stride = cache
    N, C, H, W = x.shape
    _, _, Ho, Wo = dout.shape
    win = _windows(x, pool, pool, stride)[:, :, :Ho, :Wo]
    first = win.reshape(N, C, Ho, Wo, pool * pool).argmax(axis=4)  # row-major first max
    di, dj = np.divmod(first, pool)
    n, c, i, j = np.indices((N, C, Ho, Wo))
    dx = np.zeros_like(x, dtype=np.float64)
    np.add.at(dx, (n, c, i * stride + di, j * stride + dj), dout)  # overlaps add up
    return dx


def maxpool_forward_loops(x, pool=2, stride=2):
    """maxpool_forward as a loop over windows (sets time budgets)."""
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, pool, stride), output_size(W, pool, stride)
    out = np.zeros((N, C, Ho, Wo))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, c, i, j] = x[n, c, i * stride:i * stride + pool, j * stride:j * stride + pool].max()
    return out, (x, pool, stride)


def maxpool_backward_loops(dout, cache):
    """maxpool_backward as a loop over windows: each dout entry goes to its window's np.argmax."""
    x, pool, stride = cache
    N, C, H, W = x.shape
    _, _, Ho, Wo = dout.shape
    dx = np.zeros_like(x, dtype=np.float64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, c, i * stride:i * stride + pool, j * stride:j * stride + pool]
                    a, d = divmod(int(np.argmax(window)), pool)
                    dx[n, c, i * stride + a, j * stride + d] += dout[n, c, i, j]
    return dx


def avgpool_forward(x, pool=2, stride=2):
    """Mean over pool x pool windows: x (N, C, H, W) -> out (N, C, H', W')."""
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, pool, stride), output_size(W, pool, stride)
    win = _windows(x, pool, pool, stride)[:, :, :Ho, :Wo]
    return win.mean(axis=(4, 5)), (x, pool, stride)


def avgpool_backward(dout, cache):
    """Spread each dout entry evenly over its window: dx like x."""
    x, pool, stride = cache
    _, _, Ho, Wo = dout.shape
    dx = np.zeros_like(x, dtype=np.float64)
    share = dout / (pool * pool)
    for a in range(pool):
        for c in range(pool):
            dx[:, :, a:a + stride * Ho:stride, c:c + stride * Wo:stride] += share
    return dx


# ----------------------------------------------------------------------------- cnn_network
# The layers of chapter 8's network, graded in the assignment cnn_network:
#
#     relu_forward(x) -> (out, cache)             out = max(x, 0); cache = x
#     relu_backward(dout, cache) -> dx            dout where x > 0, else 0 (0 at x == 0)
#     affine_forward(x, w, b) -> (out, cache)     x (N, d1, ..., dk) flattened to (N, D)
#     affine_backward(dout, cache) -> (dx, dw, db)
#     avgpool_forward / avgpool_backward          (above)
#     softmax_loss(scores, y) -> (loss, dscores)  mean cross-entropy, stable up to |s| ~ 1e4
#     cnn_loss(params, x, y=None)                 conv -> relu -> max pool 2/2 -> affine -> softmax
#     sgd_momentum(w, dw, config=None) -> (next_w, config)

def relu_forward(x):
    """max(x, 0) elementwise; cache is x."""
    return np.maximum(x, 0.0), x


def relu_backward(dout, cache):
    """dout where the input was positive, 0 elsewhere (also where it was exactly 0)."""
    return np.where(cache > 0, dout, 0.0)


def affine_forward(x, w, b):
    """x (N, d1, ..., dk) flattened to (N, D), times w (D, M), plus b (M,) -> out (N, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """(dx, dw, db) of the affine layer, shaped like (x, w, b)."""
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    return dx, dw, dout.sum(axis=0)


def avgpool_forward_loops(x, pool=2, stride=2):
    """avgpool_forward window by window (sets time budgets)."""
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, pool, stride), output_size(W, pool, stride)
    out = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + pool, j * stride:j * stride + pool].mean(axis=(2, 3))
    return out, (x, pool, stride)


def avgpool_backward_loops(dout, cache):
    """avgpool_backward window by window (sets time budgets)."""
    x, pool, stride = cache
    dx = np.zeros(x.shape)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            dx[:, :, i * stride:i * stride + pool, j * stride:j * stride + pool] += \
                dout[:, :, i, j][:, :, None, None] / (pool * pool)
    return dx


def softmax_loss(scores, y):
    """Mean cross-entropy of softmax(scores (N, K)) for integer labels y (N,): (loss, dscores)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    N = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(N), y].mean()
    dscores = np.exp(logp)
    dscores[np.arange(N), y] -= 1.0
    return float(loss), dscores / N


def _cnn(params, x, y, conv_f, conv_b, pool_f, pool_b):
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    a, conv_cache = conv_f(x, W1, b1, 1, (W1.shape[2] - 1) // 2)
    h, relu_cache = relu_forward(a)
    m, pool_cache = pool_f(h, 2, 2)
    scores, affine_cache = affine_forward(m, W2, b2)
    if y is None:
        return scores
    loss, dscores = softmax_loss(scores, y)
    dm, dW2, db2 = affine_backward(dscores, affine_cache)
    dh = pool_b(dm, pool_cache)
    da = relu_backward(dh, relu_cache)
    _, dW1, db1 = conv_b(da, conv_cache)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def cnn_loss(params, x, y=None):
    """The network of chapter 8: conv (stride 1, pad (k - 1) // 2) -> relu -> max pool 2/2 -> affine
    -> softmax_loss.  Scores (N, K) when y is None, else (loss, grads), grads keyed as params."""
    return _cnn(params, x, y, conv_forward, conv_backward, maxpool_forward, maxpool_backward)


def cnn_loss_loops(params, x, y=None):
    """cnn_loss on the loop layers (sets time budgets)."""
    return _cnn(params, x, y, conv_forward_loops, conv_backward_loops, maxpool_forward_loops,
                maxpool_backward_loops)


def sgd_momentum(w, dw, config=None):
    """One step of SGD with momentum: v = momentum * v - learning_rate * dw; next_w = w + v.

    Returns (next_w, config) with config["velocity"] = v; w, dw and the config passed in are
    left unchanged (a fresh config is returned).
    """
    config = dict(config or {})
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    v = config.get("velocity")
    v = np.zeros_like(w, dtype=np.float64) if v is None else v
    v = config["momentum"] * v - config["learning_rate"] * dw
    config["velocity"] = v
    return w + v, config
