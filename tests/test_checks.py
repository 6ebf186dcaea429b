"""The hidden checks against the reference layers and against known mistakes.

The learner functions run in this process through a small ``call`` adapter
(the batch runs them in the sandbox instead): the point here is the check
logic.  Each mistake is a thin wrapper around the reference.
"""
import copy
import time
from types import SimpleNamespace

import numpy as np
import pytest

from autograder import checks
from autograder import reference as ref

CONV_FUNCS = {"zero_pad": ref.zero_pad, "conv_forward": ref.conv_forward, "conv_backward": ref.conv_backward}
POOL_FUNCS = {"maxpool_forward": ref.maxpool_forward, "maxpool_backward": ref.maxpool_backward}
HONEST = {**CONV_FUNCS, **POOL_FUNCS}
BUDGETS = checks.Budgets()  # one per test session, as one per grading run


def make_call(funcs, timeout_if=None):
    """A stand-in for LearnerProcess.call that runs funcs in this process."""
    def call(func, args, kwargs, budget_s, **_options):
        if func not in funcs:
            return SimpleNamespace(status="missing", value=None, args_after=None, message="", seconds=0.0)
        args = copy.deepcopy(args)
        if timeout_if is not None and timeout_if(func, args):
            return SimpleNamespace(status="timeout", value=None, args_after=None, message="", seconds=budget_s)
        start = time.perf_counter()
        try:
            value = funcs[func](*args, **kwargs)
        except Exception as exc:
            return SimpleNamespace(status="error", value=None, args_after=args,
                                   message=f"{type(exc).__name__}: {exc}", seconds=0.0)
        return SimpleNamespace(status="ok", value=value, args_after=args, message="",
                               seconds=time.perf_counter() - start)
    return call


def rng():
    return np.random.default_rng(12345)


def verdicts(funcs, notebook):
    return {v.grade_id: v for v in checks.grade_notebook(notebook, make_call(funcs), rng(), BUDGETS)}


def failing(funcs, grade_ids):
    """Run the given cells; return {grade_id: verdict} of those that did not pass."""
    call = make_call({**HONEST, **funcs})
    out = {}
    for gid in grade_ids:
        v = checks.run_check(gid, call, rng(), BUDGETS)
        if v.status != "passed":
            out[gid] = v
    return out


def text(v):
    return " ".join(v.feedback)


# --------------------------------------------------------------------------- the table

def test_table_matches_the_architecture():
    assert len([c for c in checks.GRADED_CELLS.values()
               if c.notebook in checks.notebooks_of("cnn_layers")]) == 28
    assert checks.max_score("convolution") == 29
    assert checks.max_score("pooling") == 18
    for gid, cell in checks.GRADED_CELLS.items():
        assert gid.startswith(cell.function)
        assert gid in checks.CHECKS
    assert checks.functions_of("convolution") == ["zero_pad", "conv_forward", "conv_backward"]


# --------------------------------------------------------------------------- honest code passes

@pytest.mark.parametrize("notebook", ["convolution", "pooling"])
def test_reference_passes_every_cell(notebook):
    vs = verdicts(HONEST, notebook)
    assert set(vs) == set(checks.cells_of(notebook))
    bad = {g: (v.status, v.feedback) for g, v in vs.items() if v.status != "passed"}
    assert not bad
    assert sum(v.score for v in vs.values()) == checks.max_score(notebook)


def test_loop_references_pass_too():
    loops = {"conv_forward": ref.conv_forward_loops, "conv_backward": ref.conv_backward_loops,
             "maxpool_forward": ref.maxpool_forward_loops, "maxpool_backward": ref.maxpool_backward_loops}
    cells = [g for g, c in checks.GRADED_CELLS.items()
             if c.notebook in checks.notebooks_of("cnn_layers") and g not in checks.PROBE_CELL.values()]
    assert failing(loops, cells) == {}


def test_list_containers_and_integer_free_float32_are_accepted():
    def fwd(*a):
        out, cache = ref.conv_forward(*a)
        return [out, list(cache)]

    def bwd(dout, cache):
        return list(ref.conv_backward(dout, cache))
    assert failing({"conv_forward": fwd, "conv_backward": bwd},
                   ["conv_forward_basic", "conv_backward_basic"]) == {}


# --------------------------------------------------------------------------- mistakes are caught

FWD_VALUE = ["conv_forward_basic", "conv_forward_padding", "conv_forward_stride", "conv_forward_uneven",
             "conv_forward_nonsquare", "conv_forward_channels"]
BWD_VALUE = [g.replace("forward", "backward") for g in FWD_VALUE]


def test_bias_missing():
    def fwd(x, w, b, stride=1, pad=0):
        return ref.conv_forward(x, w, np.zeros_like(b), stride, pad)
    bad = failing({"conv_forward": fwd}, FWD_VALUE)
    assert set(bad) == set(FWD_VALUE)
    assert "bias is missing" in text(bad["conv_forward_basic"])


@pytest.mark.parametrize("kind", ["sum", "width"])
def test_bias_not_per_filter(kind):
    def fwd(x, w, b, stride=1, pad=0):
        out, cache = ref.conv_forward(x, w, np.zeros_like(b), stride, pad)
        return (out + b.sum() if kind == "sum" else out + b), cache
    bad = failing({"conv_forward": fwd}, FWD_VALUE)
    assert "conv_forward_channels" in bad
    if kind == "width":
        assert "width" in text(bad["conv_forward_channels"])


def test_kernel_flipped_in_forward():
    def fwd(x, w, b, stride=1, pad=0):
        out, _ = ref.conv_forward(x, w[:, :, ::-1, ::-1], b, stride, pad)
        return out, (x, w, b, stride, pad)
    bad = failing({"conv_forward": fwd}, FWD_VALUE)
    assert set(bad) == set(FWD_VALUE)
    assert "flipped" in text(bad["conv_forward_basic"])


def test_output_size_rounded_up():
    def fwd(x, w, b, stride=1, pad=0):
        out, cache = ref.conv_forward(x, w, b, stride, pad)
        H, W = x.shape[2:]
        HH, WW = w.shape[2:]
        Ho = -(-(H + 2 * pad - HH) // stride) + 1
        Wo = -(-(W + 2 * pad - WW) // stride) + 1
        big = np.zeros(out.shape[:2] + (Ho, Wo))
        big[:, :, :out.shape[2], :out.shape[3]] = out
        return big, cache
    bad = failing({"conv_forward": fwd}, ["conv_forward_shapes", "conv_forward_uneven", "conv_forward_basic"])
    assert set(bad) == {"conv_forward_shapes", "conv_forward_uneven"}
    assert "rounded up" in text(bad["conv_forward_uneven"])


def test_h_and_w_mixed_up_in_forward():
    def fwd(x, w, b, stride=1, pad=0):
        # the output size along W is computed from H, the window width from HH
        N, C, H, W = x.shape
        F, _, HH, WW = w.shape
        Ho = (H + 2 * pad - HH) // stride + 1
        Wo = (H + 2 * pad - HH) // stride + 1
        xp = ref.zero_pad(x, pad)
        out = np.zeros((N, F, Ho, Wo))
        for i in range(Ho):
            for j in range(Wo):
                win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                out[:, :, i, j] = np.einsum("nchw,fchw->nf", win, w) + b
        return out, (x, w, b, stride, pad)
    bad = failing({"conv_forward": fwd}, ["conv_forward_nonsquare", "conv_forward_shapes", "conv_forward_basic"])
    assert set(bad) == {"conv_forward_nonsquare", "conv_forward_shapes"}


def test_channel_sum_missing():
    def fwd(x, w, b, stride=1, pad=0):
        out, _ = ref.conv_forward(x[:, :1], w[:, :1], b, stride, pad)
        return out, (x, w, b, stride, pad)
    bad = failing({"conv_forward": fwd}, FWD_VALUE)
    assert set(bad) == {"conv_forward_channels"}
    assert "channel" in text(bad["conv_forward_channels"])


def _bwd(change):
    def bwd(dout, cache):
        return change(dout, cache, *ref.conv_backward(dout, cache))
    return bwd


def test_db_averaged():
    bad = failing({"conv_backward": _bwd(lambda d, c, dx, dw, db: (dx, dw, db / d.shape[0]))}, BWD_VALUE)
    assert set(bad) == set(BWD_VALUE)
    assert "averaged instead of summed" in text(bad["conv_backward_basic"])
    bad = failing({"conv_backward": _bwd(lambda d, c, dx, dw, db: (dx, dw, d.mean(axis=(0, 2, 3))))},
                  ["conv_backward_stride"])
    assert "averaged instead of summed" in text(bad["conv_backward_stride"])


def test_dw_not_summed_over_batch():
    def bwd(dout, cache):
        x, w, b, s, p = cache
        dx, dw, db = ref.conv_backward(dout, cache)
        dw0 = ref.conv_backward(dout[:1], (x[:1], w, b, s, p))[1]
        return dx, dw0, db
    bad = failing({"conv_backward": bwd}, BWD_VALUE)
    assert set(bad) == set(BWD_VALUE)
    assert "first example" in text(bad["conv_backward_basic"])


def test_kernel_not_flipped_in_dx():
    def bwd(dout, cache):
        x, w, b, s, p = cache
        dx, dw, db = ref.conv_backward(dout, cache)
        return ref.conv_transpose(dout, w[:, :, ::-1, ::-1], s, p, x.shape), dw, db
    bad = failing({"conv_backward": bwd}, BWD_VALUE)
    assert set(bad) == set(BWD_VALUE)
    assert "flipped" in text(bad["conv_backward_basic"])


def test_stride_ignored_in_backward():
    def bwd(dout, cache):
        x, w, b, s, p = cache
        dx, dw, db = ref.conv_backward(dout, cache)
        return ref.conv_transpose(dout, w, 1, p, x.shape), dw, db
    bad = failing({"conv_backward": bwd}, BWD_VALUE)
    assert {"conv_backward_stride", "conv_backward_uneven"} <= set(bad)
    assert "conv_backward_basic" not in bad
    assert "stride is ignored" in text(bad["conv_backward_stride"])


def test_padding_not_cropped():
    def bwd(dout, cache):
        x, w, b, s, p = cache
        dx, dw, db = ref.conv_backward(dout, cache)
        return np.pad(dx, ((0, 0), (0, 0), (p, p), (p, p))), dw, db
    bad = failing({"conv_backward": bwd}, ["conv_backward_shapes", "conv_backward_padding"])
    assert set(bad) == {"conv_backward_shapes", "conv_backward_padding"}
    assert "not cropped" in text(bad["conv_backward_padding"])


def test_pad_slice_bug_with_pad_zero():
    def bwd(dout, cache):
        x, w, b, s, p = cache
        dx, dw, db = ref.conv_backward(dout, cache)
        dxp = np.pad(dx, ((0, 0), (0, 0), (p, p), (p, p)))
        return dxp[:, :, p:-p, p:-p], dw, db
    bad = failing({"conv_backward": bwd}, ["conv_backward_shapes", "conv_backward_basic",
                                            "conv_backward_padding"])
    assert set(bad) == {"conv_backward_shapes", "conv_backward_basic"}
    assert "pad = 0" in text(bad["conv_backward_basic"])


def test_h_and_w_mixed_up_in_backward():
    def bwd(dout, cache):
        # conv_backward_loops with the output height and width unpacked the wrong way round
        x, w, b, stride, pad = cache
        F, _, HH, WW = w.shape
        _, _, Wo, Ho = dout.shape
        xp = ref.zero_pad(x, pad)
        dxp, dw = np.zeros_like(xp), np.zeros_like(w)
        for n in range(x.shape[0]):
            for f in range(F):
                for i in range(Ho):
                    for j in range(Wo):
                        rows = slice(i * stride, i * stride + HH)
                        cols = slice(j * stride, j * stride + WW)
                        dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                        dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]
        H, W = x.shape[2:]
        return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))
    bad = failing({"conv_backward": bwd}, ["conv_backward_nonsquare", "conv_backward_basic"])
    assert set(bad) == {"conv_backward_nonsquare"}


def test_filter_sum_missing_in_dx():
    def bwd(dout, cache):
        x, w, b, s, p = cache
        dx, dw, db = ref.conv_backward(dout, cache)
        return ref.conv_transpose(dout[:, -1:], w[-1:], s, p, x.shape), dw, db
    bad = failing({"conv_backward": bwd}, BWD_VALUE)
    assert set(bad) == {"conv_backward_channels"}
    assert "all F filters" in text(bad["conv_backward_channels"])


@pytest.mark.parametrize("func", ["conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward"])
def test_inputs_modified_in_place(func):
    def fwd(x, *rest):
        value = HONEST[func](x, *rest)
        x *= 0.5  # dout for the backward functions
        return value

    def bwd_cache(dout, cache):
        value = HONEST[func](dout, cache)
        cache[0][...] = 0
        return value
    gid = f"{func}_inputs_unchanged"
    bad = failing({func: fwd}, [gid])
    assert set(bad) == {gid} and "in place" in text(bad[gid])
    if "backward" in func:
        bad = failing({func: bwd_cache}, [gid])
        assert "cache x" in text(bad[gid])


def test_maxpool_overlap_overwrites():
    def bwd(dout, cache):
        x, pool, stride = cache
        return checks._pool_overwrite(x, dout, checks.PoolCase(*x.shape, pool, stride), False)
    bad = failing({"maxpool_backward": bwd}, ["maxpool_backward_basic", "maxpool_backward_overlap"])
    assert set(bad) == {"maxpool_backward_overlap"}
    assert "overwrite" in text(bad["maxpool_backward_overlap"])


@pytest.mark.parametrize("which", ["all", "last"])
def test_maxpool_ties(which):
    def bwd(dout, cache):
        x, pool, stride = cache
        c = checks.PoolCase(*x.shape, pool, stride)
        return checks._pool_to_all_maxima(x, dout, c) if which == "all" else checks._pool_to_last_max(x, dout, c)
    bad = failing({"maxpool_backward": bwd}, ["maxpool_backward_basic", "maxpool_backward_ties",
                                              "maxpool_backward_overlap"])
    assert set(bad) == {"maxpool_backward_ties"}
    assert "tie" in text(bad["maxpool_backward_ties"])


def test_maxpool_forward_rounded_up():
    def fwd(x, pool=2, stride=2):
        H, W = x.shape[2:]
        Ho, Wo = -(-(H - pool) // stride) + 1, -(-(W - pool) // stride) + 1
        xp = np.pad(x, ((0, 0), (0, 0), (0, pool), (0, pool)), constant_values=-np.inf)
        out = ref.maxpool_forward(xp, pool, stride)[0][:, :, :Ho, :Wo]
        return out, (x, pool, stride)
    bad = failing({"maxpool_forward": fwd}, ["maxpool_forward_shapes", "maxpool_forward_basic",
                                             "maxpool_forward_general"])
    assert set(bad) == {"maxpool_forward_shapes", "maxpool_forward_general"}
    assert "rounded up" in text(bad["maxpool_forward_shapes"])


# --------------------------------------------------------------------------- statuses and budgets

def test_slow_probe_zeroes_the_function_and_says_only_too_slow():
    def slow(func, args):
        return func == "conv_backward" and args[0].shape[0] == 8
    vs = checks.grade_notebook("convolution", make_call(HONEST, timeout_if=slow), rng(), BUDGETS)
    back = [v for v in vs if v.grade_id.startswith("conv_backward")]
    assert back and all(v.status == "timeout" and v.score == 0 for v in back)
    message = text(back[0])
    assert "conv_backward is too slow" in message and "budget" in message
    assert "numerical" not in message      # the probe measures time, not how the gradient was computed
    assert all(v.status == "passed" for v in vs if not v.grade_id.startswith("conv_backward"))


def test_statuses_from_the_sandbox_are_kept():
    def boom(*a):
        raise ValueError("nope")
    vs = verdicts({"zero_pad": ref.zero_pad, "conv_forward": boom}, "convolution")
    assert vs["conv_forward_basic"].status == "error" and "nope" in text(vs["conv_forward_basic"])
    assert vs["conv_backward_basic"].status == "error"
    assert "not defined" in text(vs["conv_backward_basic"])
    assert vs["zero_pad"].status == "passed"


def test_bad_values_fail_cleanly():
    for value in [np.full((2, 1, 3, 3), np.nan), np.zeros((2, 1, 3, 3), dtype=complex), "text", None]:
        bad = failing({"conv_forward": lambda *a, v=value: (v, None)}, ["conv_forward_basic"])
        assert bad["conv_forward_basic"].status == "failed"
    bad = failing({"conv_forward": lambda *a: ref.conv_forward(*a)[0]}, ["conv_forward_basic"])
    assert "(out, cache)" in text(bad["conv_forward_basic"])


def test_feedback_does_not_show_arrays():
    bad = failing({"conv_backward": _bwd(lambda d, c, dx, dw, db: (dx * 1.5, dw, db))}, BWD_VALUE)
    for v in bad.values():
        for line in v.feedback:
            assert "[" not in line and "array(" not in line
            assert len(line) < 400


def test_budget_is_at_least_one_second_and_cached():
    b = checks.Budgets()
    x = np.zeros((1, 1, 4, 4))
    w = np.zeros((1, 1, 3, 3))
    assert b("conv_forward", (x, w, np.zeros(1), 1, 0)) == 1.0
    assert len(b._cache) == 1
    b("conv_forward", (x + 1, w, np.zeros(1), 1, 0))
    assert len(b._cache) == 1
