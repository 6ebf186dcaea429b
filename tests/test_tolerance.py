"""The value tolerance sits between honest rounding and finite differences.

``autograder.checks.TOL`` must be loose enough that no honest float64
implementation (loops, scalar loops, einsum, im2col: different summation
orders) ever loses a point to rounding, and tight enough that central
differences with the notebooks' step fail every case of every value cell,
however they are organised.  Both figures are measured here on the checks' own
cases and stated in checks.py and the README.
"""
import numpy as np
import pytest

from autograder import checks, reference as ref
from autograder.assignments import cnn_layers
from autograder.gradcheck import numerical_gradient, rel_error
from classgen import hostile as H
from classgen import variants as V

CONV_CASES = [c for cases in cnn_layers.CONV_CASES.values() for c in cases] + cnn_layers.CONV_SHAPE_CASES
POOL_CASES = [c for cases in cnn_layers.POOL_CASES.values() for c in cases] + cnn_layers.POOL_SHAPE_CASES


def _load(function, source):
    ns = {"np": np}
    exec(V.CORRECT["zero_pad"]["nppad"], ns)
    exec(V.CORRECT["conv_forward"]["einsum"], ns)
    exec(source, ns)
    return ns[function]


def _conv_draw(c, rng):
    x, w, b = c.draw(rng)
    return x, w, b, rng.standard_normal((c.N, c.F) + c.out_hw)


@pytest.mark.parametrize("style", sorted(V.CORRECT["conv_backward"]))
def test_honest_conv_backward_rounds_far_below_the_tolerance(style):
    f = _load("conv_backward", V.CORRECT["conv_backward"][style])
    rng = np.random.default_rng(7)
    worst = 0.0
    cases = CONV_CASES + ([cnn_layers.CONV_PROBE] if style != "scalar" else [])
    for c in cases:
        for _ in range(10 if c is not cnn_layers.CONV_PROBE else 2):
            x, w, b, dout = _conv_draw(c, rng)
            cache = (x, w, b, c.stride, c.pad)
            got, expected = f(dout, cache), ref.conv_backward(dout, cache)
            worst = max(worst, *(rel_error(g, e) for g, e in zip(got, expected)))
    assert worst < checks.TOL / 10, f"{style}: {worst:.1e}"


@pytest.mark.parametrize("function", ["conv_forward", "maxpool_forward", "maxpool_backward", "zero_pad"])
def test_honest_forward_and_pooling_round_far_below_the_tolerance(function):
    rng = np.random.default_rng(8)
    for style, source in V.CORRECT[function].items():
        f = _load(function, source)
        worst = 0.0
        for _ in range(5):
            if function == "conv_forward":
                for c in CONV_CASES:
                    x, w, b = c.draw(rng)
                    worst = max(worst, rel_error(f(x, w, b, c.stride, c.pad)[0],
                                                 ref.conv_forward(x, w, b, c.stride, c.pad)[0]))
            elif function == "zero_pad":
                x = rng.standard_normal((2, 3, 4, 5))
                worst = max(worst, rel_error(f(x, 2), ref.zero_pad(x, 2)))
            else:
                for c in POOL_CASES:
                    x = rng.standard_normal((c.N, c.C, c.H, c.W))
                    if function == "maxpool_forward":
                        got, exp = f(x, c.pool, c.stride)[0], ref.maxpool_forward(x, c.pool, c.stride)[0]
                    else:
                        dout = rng.standard_normal((c.N, c.C) + c.out_hw)
                        got = f(dout, (x, c.pool, c.stride))
                        exp = ref.maxpool_backward(dout, (x, c.pool, c.stride))
                    worst = max(worst, rel_error(got, exp))
        assert worst < checks.TOL / 10, f"{function}/{style}: {worst:.1e}"


def test_central_differences_fail_every_case():
    """With the helper's step h = 1e-5, per element: the best case is still over the tolerance."""
    rng = np.random.default_rng(9)
    best = np.inf
    for c in CONV_CASES:
        x, w, b, dout = _conv_draw(c, rng)
        expected = ref.conv_backward(dout, (x, w, b, c.stride, c.pad))
        errors = []
        for k, arg in enumerate((x, w, b)):
            def f(v, k=k):
                args = [x, w, b]
                args[k] = v
                return ref.conv_forward(*args, c.stride, c.pad)[0]
            errors.append(rel_error(numerical_gradient(f, arg.copy(), dout, h=1e-5), expected[k]))
        best = min(best, max(errors))
    assert best > checks.TOL, f"central differences reached {best:.1e}"


def test_graph_coloured_differences_fail_every_case():
    """Perturbing many well-separated inputs at once is fast, and still over the tolerance."""
    source = H.numerical_colouring("x").sources["conv_backward"]
    ns = {"np": np, "conv_forward": ref.conv_forward}
    exec(source, ns)
    rng = np.random.default_rng(10)
    best = np.inf
    for c in CONV_CASES:
        x, w, b, dout = _conv_draw(c, rng)
        cache = (x, w, b, c.stride, c.pad)
        got = ns["conv_backward"](dout, cache)
        expected = ref.conv_backward(dout, cache)
        best = min(best, max(rel_error(g, e) for g, e in zip(got, expected)))
    assert best > checks.TOL, f"coloured differences reached {best:.1e}"
