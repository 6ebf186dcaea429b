"""The reference layers against independent references: scipy.signal for the forward
passes, central differences for the backward passes, the loop versions for the fast ones."""
import itertools

import numpy as np
import pytest
from scipy import signal

from autograder import reference as R
from autograder.gradcheck import numerical_gradient, rel_error

TOL = 1e-7

# N, C, H, W, F, HH, WW, stride, pad: square and not, every stride/pad mix, uneven sizes
CONV_CASES = [
    (1, 1, 3, 3, 1, 2, 2, 1, 0),
    (2, 1, 5, 5, 1, 3, 3, 1, 0),
    (2, 3, 5, 4, 4, 3, 2, 1, 1),
    (1, 2, 7, 7, 3, 3, 3, 2, 0),
    (2, 2, 8, 6, 2, 2, 3, 2, 1),
    (1, 1, 7, 9, 2, 3, 3, 3, 1),
    (3, 2, 6, 5, 2, 1, 1, 2, 0),
    (1, 1, 4, 4, 1, 4, 4, 1, 2),
    (2, 1, 10, 7, 1, 3, 2, 3, 0),  # (H - HH) % s != 0 and (W - WW) % s != 0
]


def _case(N, C, H, W, F, HH, WW, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, HH, WW)),
            rng.standard_normal(F))


def _scipy_conv_forward(x, w, b, stride, pad):
    """Independent forward pass: scipy.signal.correlate per (n, f, c), then subsample."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, F = x.shape[0], w.shape[0]
    maps = np.array([[sum(signal.correlate(xp[n, c], w[f, c], mode="valid")
                          for c in range(x.shape[1])) + b[f]
                      for f in range(F)] for n in range(N)])
    return maps[:, :, ::stride, ::stride]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x{}x{}x{}x{}-w{}x{}x{}-s{}p{}".format(*c[:5], *c[5:]))
def test_conv_forward_matches_scipy_and_loops(case):
    N, C, H, W, F, HH, WW, stride, pad = case
    x, w, b = _case(N, C, H, W, F, HH, WW, seed=sum(case))
    out, cache = R.conv_forward(x, w, b, stride, pad)
    assert out.shape == (N, F, (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1)
    assert rel_error(out, _scipy_conv_forward(x, w, b, stride, pad)) < TOL
    assert rel_error(out, R.conv_forward_loops(x, w, b, stride, pad)[0]) < TOL
    assert cache[0] is x and cache[1] is w and cache[2] is b and cache[3:] == (stride, pad)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x{}x{}x{}x{}-w{}x{}x{}-s{}p{}".format(*c[:5], *c[5:]))
def test_conv_backward_matches_central_differences(case):
    N, C, H, W, F, HH, WW, stride, pad = case
    x, w, b = _case(N, C, H, W, F, HH, WW, seed=sum(case) + 1)
    out, cache = R.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(len(case)).standard_normal(out.shape)
    dx, dw, db = R.conv_backward(dout, cache)
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)
    assert rel_error(dx, numerical_gradient(lambda v: R.conv_forward(v, w, b, stride, pad)[0], x.copy(), dout)) < TOL
    assert rel_error(dw, numerical_gradient(lambda v: R.conv_forward(x, v, b, stride, pad)[0], w.copy(), dout)) < TOL
    assert rel_error(db, numerical_gradient(lambda v: R.conv_forward(x, w, v, stride, pad)[0], b.copy(), dout)) < TOL
    for fast, slow in zip((dx, dw, db), R.conv_backward_loops(dout, cache)):
        assert rel_error(fast, slow) < TOL


def test_conv_transpose_is_the_adjoint():
    """<conv(z, w, 0), y> = <z, conv_transpose(y)> for random z and y."""
    rng = np.random.default_rng(7)
    for (N, C, H, W, F, HH, WW, stride, pad) in CONV_CASES:
        z, w, _ = _case(N, C, H, W, F, HH, WW, seed=H * W)
        out, _ = R.conv_forward(z, w, np.zeros(F), stride, pad)
        y = rng.standard_normal(out.shape)
        lhs = np.sum(out * y)
        rhs = np.sum(z * R.conv_transpose(y, w, stride, pad, z.shape))
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_rows_outside_every_window_get_zero_gradient():
    x, w, b = _case(1, 1, 6, 6, 1, 3, 3, seed=3)  # stride 2: rows/cols 5 are never read
    out, cache = R.conv_forward(x, w, b, stride=2, pad=0)
    dx, _, _ = R.conv_backward(np.ones_like(out), cache)
    assert np.all(dx[0, 0, 5, :] == 0) and np.all(dx[0, 0, :, 5] == 0)
    assert np.all(dx[0, 0, :5, :5] != 0)


@pytest.mark.parametrize("N,C,H,W,pool,stride", [
    (2, 1, 4, 4, 2, 2), (1, 3, 7, 6, 3, 2), (2, 2, 5, 5, 2, 1), (1, 1, 9, 4, 3, 3), (3, 2, 6, 7, 2, 3),
])
def test_pooling_matches_definitions_and_central_differences(N, C, H, W, pool, stride):
    x = np.random.default_rng(H * W + pool).standard_normal((N, C, H, W))  # no ties
    out, cache = R.maxpool_forward(x, pool, stride)
    Ho, Wo = (H - pool) // stride + 1, (W - pool) // stride + 1
    expected = np.array([[[[x[n, c, i * stride:i * stride + pool, j * stride:j * stride + pool].max()
                            for j in range(Wo)] for i in range(Ho)] for c in range(C)] for n in range(N)])
    assert out.shape == (N, C, Ho, Wo) and np.array_equal(out, expected)
    assert np.array_equal(out, R.maxpool_forward_loops(x, pool, stride)[0])
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx = R.maxpool_backward(dout, cache)
    assert rel_error(dx, numerical_gradient(lambda v: R.maxpool_forward(v, pool, stride)[0], x.copy(), dout)) < TOL
    assert rel_error(dx, R.maxpool_backward_loops(dout, cache)) < TOL
    aout, acache = R.avgpool_forward(x, pool, stride)
    box = np.full((pool, pool), 1 / pool ** 2)
    means = np.array([[signal.correlate(x[n, c], box, "valid")[::stride, ::stride] for c in range(C)]
                      for n in range(N)])
    assert aout.shape == (N, C, Ho, Wo) and rel_error(aout, means) < TOL
    assert rel_error(R.avgpool_backward(dout, acache),
                     numerical_gradient(lambda v: R.avgpool_forward(v, pool, stride)[0], x.copy(), dout)) < TOL


def test_maxpool_ties_go_to_the_first_maximum_and_overlaps_add():
    x = np.array([[[[1., 3., 3.],
                    [3., 0., 3.],
                    [2., 3., 1.]]]])
    out, cache = R.maxpool_forward(x, pool=2, stride=1)  # four overlapping windows, all max 3
    dx = R.maxpool_backward(np.ones_like(out), cache)
    # each window sends its gradient to its first maximum in row-major order
    firsts = [np.unravel_index(np.argmax(x[0, 0, i:i + 2, j:j + 2]), (2, 2)) for i, j in
              itertools.product(range(2), range(2))]
    expected = np.zeros_like(x)
    for (i, j), (a, c) in zip(itertools.product(range(2), range(2)), firsts):
        expected[0, 0, i + a, j + c] += 1
    assert np.array_equal(dx, expected)
    assert dx.sum() == out.size and dx.max() == 2  # (0,1) is the first max of two windows


def test_output_size_rejects_bad_arguments():
    assert R.output_size(7, 3, 2, 1) == 4
    with pytest.raises(ValueError, match="stride"):
        R.output_size(5, 3, 0)
    with pytest.raises(ValueError, match="does not fit"):
        R.output_size(2, 3)
    x = np.ones((1, 2, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        R.conv_forward(x, np.ones((1, 3, 2, 2)), np.zeros(1))



@pytest.mark.parametrize("N, C, H, W, F, k, stride, pad", [(2, 1, 5, 7, 1, 3, 1, 0), (2, 3, 6, 6, 2, 3, 2, 1)])
def test_stacked_central_differences_equal_one_at_a_time(N, C, H, W, F, k, stride, pad):
    """The hidden checks' batched central differences give numerical_gradient's numbers."""
    from autograder.checks import numerical_gradient_stacked
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, k, k)), rng.standard_normal(F)
    out = R.conv_forward(x, w, b, stride, pad)[0]
    dout = rng.standard_normal(out.shape)
    one = numerical_gradient(lambda v: R.conv_forward(v, w, b, stride, pad)[0], x.copy(), dout)
    stacked = numerical_gradient_stacked(
        lambda xs: R.conv_forward(xs.reshape((-1, C, H, W)), w, b, stride, pad)[0].reshape((len(xs),) + out.shape),
        x, dout)
    assert stacked.shape == x.shape
    assert rel_error(stacked, one) < 1e-9
    assert rel_error(stacked, R.conv_backward(dout, (x, w, b, stride, pad))[0]) < 1e-7
    # a wrong f is seen: the differences of a layer without its bias still match dx, but not of a scaled one
    scaled = numerical_gradient_stacked(
        lambda xs: 2 * R.conv_forward(xs.reshape((-1, C, H, W)), w, b, stride, pad)[0].reshape((len(xs),) + out.shape),
        x, dout)
    assert rel_error(scaled, one) > 0.4
