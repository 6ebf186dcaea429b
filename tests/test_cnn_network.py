"""The cnn_network assignment (chapter 8): references against PyTorch, the hidden checks on
correct code in several styles and on every classic mistake, the training check's margin, and
the notebooks (visible tests, the locked layers of cnn_layers, the helper cell as released).

The mistakes and the cells each must lose are those of the demo class
(tests/classgen/cnn_network.py), which the last test grades through the command line, in the
sandbox, twice.
"""
import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest

from autograder import assignment, checks
from autograder import reference as ref
from autograder.gradcheck import rel_error
from autograder.submission import load_source, read_submission

assignment.load_check_modules()
from autograder.assignments import cnn_network as M  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classgen import build as B  # noqa: E402
from classgen import cnn_network as CN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "solutions" / "cnn_network" / "network.ipynb"
RELEASE = ROOT / "exercises" / "cnn_network" / "network.ipynb"
LAYERS = ("zero_pad", "conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward")

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# --------------------------------------------------------------------------- references = PyTorch

def test_relu_equals_torch_with_zero_slope_at_the_kink():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    x.reshape(-1)[::7] = 0.0
    dout = rng.standard_normal(x.shape)
    xt = t(x, True)
    out = F.relu(xt)
    out.backward(t(dout))
    assert np.array_equal(ref.relu_forward(x)[0], out.detach().numpy())
    assert np.array_equal(ref.relu_backward(dout, x), xt.grad.numpy())   # 0 where x == 0, as PyTorch


def test_affine_equals_torch_linear_on_nd_inputs():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((4, 2, 3, 5)), rng.standard_normal((30, 7)), rng.standard_normal(7)
    dout = rng.standard_normal((4, 7))
    xt, wt, bt = t(x, True), t(w, True), t(b, True)
    out = F.linear(xt.reshape(4, -1), wt.T, bt)
    out.backward(t(dout))
    assert rel_error(ref.affine_forward(x, w, b)[0], out.detach().numpy()) < 1e-14
    for mine, theirs in zip(ref.affine_backward(dout, (x, w, b)), (xt, wt, bt)):
        assert mine.shape == theirs.shape and rel_error(mine, theirs.grad.numpy()) < 1e-14


@pytest.mark.parametrize("shape,pool,stride", [((2, 3, 4, 4), 2, 2), ((2, 2, 7, 7), 3, 2), ((1, 3, 5, 6), 2, 1),
                                               ((2, 2, 8, 8), 2, 3), ((3, 2, 7, 10), 2, 3), ((1, 2, 9, 7), 1, 2)])
def test_avgpool_equals_torch_with_overlaps_and_gaps(shape, pool, stride):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    xt = t(x, True)
    out = F.avg_pool2d(xt, pool, stride)
    dout = rng.standard_normal(tuple(out.shape))
    out.backward(t(dout))
    for forward in (ref.avgpool_forward, ref.avgpool_forward_loops):
        assert rel_error(forward(x, pool, stride)[0], out.detach().numpy()) < 1e-14
    for backward in (ref.avgpool_backward, ref.avgpool_backward_loops):
        assert rel_error(backward(dout, (x, pool, stride)), xt.grad.numpy()) < 1e-14


@pytest.mark.parametrize("kind", ["moderate", "large"])
def test_softmax_loss_equals_torch_cross_entropy(kind):
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores, y = M._softmax_scores(rng, kind)
        st = t(scores, True)
        loss = F.cross_entropy(st, torch.tensor(y))
        loss.backward()
        mine, dscores = ref.softmax_loss(scores, y)
        assert np.isfinite(mine) and np.all(np.isfinite(dscores))
        scale = max(1.0, np.abs(scores).max())
        assert abs(mine - loss.item()) / scale < 1e-15
        assert len(y) * np.abs(dscores - st.grad.numpy()).max() / scale < 1e-15


@pytest.mark.parametrize("case", M.NET_CASES + [M.NET_NUMERIC], ids=lambda c: c.name)
def test_cnn_loss_equals_a_torch_network_with_autograd(case):
    params, x, y = case.draw(np.random.default_rng(4))
    tp = {k: t(v, True) for k, v in params.items()}
    k = params["W1"].shape[2]
    a = F.conv2d(t(x), tp["W1"], tp["b1"], stride=1, padding=(k - 1) // 2)
    m = F.max_pool2d(F.relu(a), 2, 2)
    scores = m.reshape(case.N, -1) @ tp["W2"] + tp["b2"]
    loss = F.cross_entropy(scores, torch.tensor(y))
    loss.backward()
    assert rel_error(ref.cnn_loss(params, x), scores.detach().numpy()) < 1e-13
    mine, grads = ref.cnn_loss(params, x, y)
    assert abs(mine - loss.item()) < 1e-13 * max(1.0, abs(mine))
    assert set(grads) == set(params)
    for key in params:
        assert grads[key].shape == params[key].shape
        assert rel_error(grads[key], tp[key].grad.numpy()) < 1e-12, key
    loops = ref.cnn_loss_loops(params, x, y)
    assert abs(loops[0] - mine) < 1e-12 and all(rel_error(loops[1][k], grads[k]) < 1e-12 for k in params)


def test_sgd_momentum_gives_torch_sgd_weights():
    """PyTorch keeps b = momentum * b + dw and steps w - lr * b; the contract keeps
    v = momentum * v - lr * dw and steps w + v. With a constant learning rate v = -lr * b, so
    the weights agree step by step (the velocities differ by the factor -lr)."""
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    lr, mu = 0.07, 0.8
    wt = t(w0, True)
    opt = torch.optim.SGD([wt], lr=lr, momentum=mu)
    w, config = w0, {"learning_rate": lr, "momentum": mu}
    for g in grads:
        opt.zero_grad()
        wt.grad = t(g)
        opt.step()
        w, config = ref.sgd_momentum(w, g, config)
        assert rel_error(w, wt.detach().numpy()) < 1e-14
        assert rel_error(config["velocity"], -lr * opt.state[wt]["momentum_buffer"].numpy()) < 1e-14
    # the defaults
    nw, cfg = ref.sgd_momentum(w0, grads[0])
    assert np.array_equal(nw, w0 - 1e-2 * grads[0]) and cfg["momentum"] == 0.9 and cfg["learning_rate"] == 1e-2


# --------------------------------------------------------------------------- the checks, in this process

def _release_namespace():
    nb = json.loads(RELEASE.read_text(encoding="utf-8"))
    ns = {}
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") in ("imports", "helpers"):
            exec("".join(cell["source"]), ns)
    return ns


BASE = _release_namespace()


def make_call(funcs):
    """A stand-in for LearnerProcess.call that runs funcs here (arguments and values copied)."""
    def call(func, args, kwargs, budget_s, **_options):
        if func not in funcs:
            return SimpleNamespace(status="missing", value=None, args_after=None, message="", seconds=0.0)
        args = copy.deepcopy(args)
        try:
            with np.errstate(all="ignore"):
                value = funcs[func](*args, **kwargs)
        except Exception as exc:
            return SimpleNamespace(status="error", value=None, args_after=args,
                                   message=f"{type(exc).__name__}: {exc}", seconds=0.0)
        return SimpleNamespace(status="ok", value=copy.deepcopy(value), args_after=args, message="", seconds=0.0)
    return call


# what the learner reads for each mistake: the first line of the cell that names its property
FEEDBACK = {
    "relu_grad_at_zero": ("relu_backward_values", "the gradient passes where x == 0"),
    "relu_grad_where_negative": ("relu_backward_values", "dout passes everywhere"),
    "relu_forward_in_place": ("relu_forward_inputs_unchanged", "modified its input(s) in place: x."),
    "relu_backward_in_place": ("relu_backward_inputs_unchanged", "modified its input(s) in place: dout."),
    "affine_no_reshape": ("affine_forward_nd", "Hint: x has shape (N, d1, ..., dk): flatten it"),
    "affine_dx_not_reshaped": ("affine_backward_nd", "Hint: dx has the shape of x"),
    "affine_db_not_summed": ("affine_backward_db", "db is averaged over the batch"),
    "affine_dw_averaged": ("affine_backward_dw", "dw is averaged over the batch"),
    "avgpool_backward_overwrites": ("avgpool_backward_overlap", "overlapping windows overwrite each other"),
    "avgpool_backward_no_division": ("avgpool_backward_basic", "each element gets dout / pool^2"),
    "avgpool_forward_sum": ("avgpool_forward_basic", "out is the sum of the window"),
    "softmax_no_max_subtraction": ("softmax_loss_large", "subtract each row's maximum"),
    "softmax_loss_summed": ("softmax_loss_loss", "the loss is summed over the batch"),
    "softmax_dscores_not_divided": ("softmax_loss_dscores", "dscores is not divided by N"),
    "softmax_one_hot_columns": ("softmax_loss_dscores", "p[:, y] -= 1"),
    "softmax_scores_in_place": ("softmax_loss_inputs_unchanged", "modified its input(s) in place: scores."),
    "cnn_pad_one": ("cnn_loss_scores", "Hint: follow the shapes along the network"),
    "cnn_no_padding": ("cnn_loss_scores", "pad (k - 1) // 2"),
    "cnn_relu_missing": ("cnn_loss_scores", "the ReLU is missing"),
    "cnn_grads_keys": ("cnn_loss_grads_keys", "grads has no key W1, W2 (it has w1, w2"),
    "cnn_relu_backward_skipped": ("cnn_loss_grads", "the gradient skips the ReLU on the way back"),
    "sgd_velocity_not_stored": ("sgd_momentum_velocity", "config['velocity'] is the old velocity"),
    "sgd_sign_wrong": ("sgd_momentum_values", "the step has the wrong sign"),
    "sgd_w_in_place": ("sgd_momentum_inputs_unchanged", "modified its input(s) in place: w."),
}


def test_every_mistake_has_its_feedback():
    assert set(FEEDBACK) == set(CN.MISTAKES)


@pytest.mark.parametrize("name", sorted(FEEDBACK))
def test_feedback_names_the_mistake(name):
    fn, src = CN.MISTAKES[name]
    sources = {f: CN.CORRECT[f]["plain"] for f in CN.FUNCTIONS}
    sources[fn] = src
    ns = dict(BASE)
    for s in sources.values():
        exec(s, ns)
    gid, words = FEEDBACK[name]
    verdict = checks.run_check(gid, make_call(ns), np.random.default_rng(3), checks.Budgets())
    assert verdict.status != "passed" and words in " ".join(verdict.feedback), verdict.feedback


def test_relu_mask_inverted_loses_the_value_cell():
    """dx = dout where x < 0: the mask the wrong way round."""
    ns = dict(BASE)
    exec(CN.RELU_B["plain"].replace("cache > 0", "cache < 0"), ns)
    v = checks.run_check("relu_backward_values", make_call(ns), np.random.default_rng(0), checks.Budgets())
    assert v.status == "failed" and "the gradient passes where x < 0" in v.feedback[0]


# --------------------------------------------------------------------------- softmax tolerance

def _lse_style(scores, y):
    N = scores.shape[0]
    m = scores.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(scores - m).sum(axis=1, keepdims=True))
    d = np.exp(scores - lse)
    d[np.arange(N), y] -= 1
    return (lse[:, 0] - scores[np.arange(N), y]).sum() / N, d / N


def test_a_stable_lse_softmax_passes_the_large_scores_on_every_draw():
    """m + log sum exp(s - m), then exp(s - lse): about eps * max|s| from the reference, which a
    absolute tolerance of 1e-12 would refuse at scores of 1e4."""
    call = make_call({"softmax_loss": _lse_style})
    worst = 0.0
    for seed in range(40):
        assert checks.run_check("softmax_loss_large", call, np.random.default_rng(seed)).status == "passed"
        scores, y = M._softmax_scores(np.random.default_rng(seed), "large")
        worst = max(worst, abs(_lse_style(scores, y)[0] - ref.softmax_loss(scores, y)[0]))
    assert worst > checks.TOL      # 1.8e-12 measured: the loss's error grows with the scores


# --------------------------------------------------------------------------- the training check

def test_training_check_passes_correct_gradients_with_a_margin():
    accs = [M.train(ref.cnn_loss, np.random.default_rng(seed))[0] for seed in range(30)]
    assert min(accs) >= M.TRAIN_MIN_ACCURACY + 0.08, min(accs)


def test_training_check_is_not_passed_by_the_public_labels():
    """The digits are public: a cnn_loss that ignores the labels it is given and trains on a
    table of the true ones (or pulls toward weights trained on them) would pass without the
    secret relabelling of the classes."""
    X, Y = M._digits()
    table = {X[i].tobytes(): Y[i] for i in range(len(X))}

    def public_labels(params, x, y):
        return ref.cnn_loss(params, x, np.array([table[image.tobytes()] for image in x]))
    for seed in range(5):
        accuracy, _ = M.train(public_labels, np.random.default_rng(seed))
        assert accuracy < M.TRAIN_MIN_ACCURACY, (seed, accuracy)


def test_training_check_fails_a_broken_gradient():
    def halved_head(params, x, y):
        loss, grads = ref.cnn_loss(params, x, y)
        return loss, {**grads, "W2": grads["W2"] / len(y)}
    for seed in range(5):
        accuracy, _ = M.train(halved_head, np.random.default_rng(seed))
        assert accuracy < M.TRAIN_MIN_ACCURACY
    ns = dict(BASE)
    for f in CN.FUNCTIONS:
        exec(CN.CORRECT[f]["plain"], ns)
    exec(CN.MISTAKES["softmax_dscores_not_divided"][1], ns)
    v = checks.run_check("cnn_loss_training", make_call(ns), np.random.default_rng(0))
    assert v.status == "failed" and "the test accuracy after training on your gradients is" in v.feedback[0]


# --------------------------------------------------------------------------- notebooks

def _cells(path):
    return nbformat.read(path, as_version=4).cells


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def test_helper_cell_holds_the_cnn_layers_layers_as_their_solutions_write_them():
    """One source for the given layers: the solution regions of cnn_layers, markers removed."""
    solutions = {}
    for nb in ("convolution", "pooling"):
        for cell in _cells(ROOT / "solutions" / "cnn_layers" / f"{nb}.ipynb"):
            gid = _meta(cell).get("grade_id", "")
            if gid.endswith("_solution"):
                solutions[gid[:-len("_solution")]] = "\n".join(
                    ln for ln in cell.source.splitlines() if "### BEGIN SOLUTION" not in ln
                    and "### END SOLUTION" not in ln)
    pooling_helpers = next(c.source for c in _cells(ROOT / "solutions" / "cnn_layers" / "pooling.ipynb")
                           if _meta(c).get("grade_id") == "helpers")
    for path in (SOURCE, RELEASE):
        helper = next(c for c in _cells(path) if _meta(c).get("grade_id") == "helpers")
        assert _meta(helper)["locked"] and not _meta(helper)["solution"] and not _meta(helper)["grade"]
        assert helper.source.startswith(pooling_helpers.rstrip("\n"))
        for name in LAYERS:
            assert solutions[name] in helper.source, name
        assert "im2col" not in helper.source and "SOLUTION" not in helper.source


def test_solution_cells_define_one_function_each():
    cells = [c for c in _cells(SOURCE) if _meta(c).get("solution")]
    assert [_meta(c)["grade_id"] for c in cells] == [f"{fn}_solution" for fn in CN.FUNCTIONS]
    for cell, fn in zip(cells, CN.FUNCTIONS):
        assert cell.source.startswith(f"def {fn}(")


def test_release_with_the_solutions_pasted_passes_its_visible_tests():
    solutions = {_meta(c)["grade_id"]: c.source for c in _cells(SOURCE) if _meta(c).get("solution")}
    ns = {"__name__": "__main__"}
    failed = {}
    graded = 0
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in _cells(RELEASE):
            m = _meta(cell)
            if cell.cell_type != "code" or not m:
                continue
            src = solutions[m["grade_id"]] if m.get("solution") else cell.source
            try:
                exec(compile(src, m["grade_id"], "exec"), ns)
            except Exception as exc:  # noqa: BLE001 - recorded per cell
                failed[m["grade_id"]] = exc
            graded += bool(m.get("grade"))
    assert failed == {} and graded == len(CN.points()["network"])


def test_the_grader_runs_the_helper_cell_as_released(tmp_path):
    """A learner who 'fixes' the given convolution in the locked cell changes nothing."""
    nb = nbformat.read(RELEASE, as_version=4)
    for fn in CN.FUNCTIONS:
        cell = next(c for c in nb.cells if _meta(c).get("grade_id") == f"{fn}_solution")
        cell.source = CN.CORRECT[fn]["plain"]
    helper = next(c for c in nb.cells if _meta(c).get("grade_id") == "helpers")
    helper.source += "\n\ndef conv_forward(x, w, b, stride=1, pad=0):\n    return x * 0, None\n"
    path = tmp_path / "network.ipynb"
    nbformat.write(nb, path)
    sub = read_submission(str(path), load_source(str(SOURCE), "network"), "network")
    assert any("the helper cell was edited; the original is used" in n for n in sub.notes)
    assert not any("return x * 0, None" in c for c in sub.cells)
    assert any("def conv_forward(x, w, b, stride=1, pad=0):" in c and "tensordot" in c for c in sub.cells)


def _visible_failures(sources, skip=("cnn_loss_training",)):
    """{grade_id: error} of the release's visible tests with the given solution cells pasted in."""
    import contextlib
    import io
    ns = {"__name__": "__main__"}
    failed = {}
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        for cell in _cells(RELEASE):
            m = _meta(cell)
            if cell.cell_type != "code" or not m or m.get("grade_id") in skip:
                continue
            src = sources[m["grade_id"][:-len("_solution")]] if m.get("solution") else cell.source
            try:
                exec(compile(src, m["grade_id"], "exec"), ns)
            except Exception as exc:  # noqa: BLE001 - recorded per cell
                failed[m["grade_id"]] = exc
    return failed


@pytest.mark.parametrize("style", CN.STYLES)
def test_visible_tests_pass_every_correct_style(style):
    assert _visible_failures({fn: CN.CORRECT[fn][style] for fn in CN.FUNCTIONS}) == {}


@pytest.mark.parametrize("name", sorted(CN.MISTAKES))
def test_a_visible_test_of_the_function_catches_each_mistake(name):
    """Before handing in, a learner sees every classic mistake fail a visible test of the
    function that has it (not only the hidden checks)."""
    fn, src = CN.MISTAKES[name]
    failed = _visible_failures({**{f: CN.CORRECT[f]["plain"] for f in CN.FUNCTIONS}, fn: src})
    assert any(g.startswith(fn + "_") for g in failed), (name, sorted(failed))


@pytest.mark.slow
def test_the_demo_class_grades_as_its_manifest_and_a_regrade_reproduces_it(tmp_path):
    """What `make grade-demo` does for this assignment: every style full marks, every mistake
    exactly the cells it must lose, twice with one course key (the second run regrades all)."""
    import subprocess
    from conftest import grades_by_key
    submitted, out, key = tmp_path / "submitted", tmp_path / "grading", tmp_path / "keys" / "course.key"
    manifest = CN.write_class(submitted)
    runs = []
    for extra in ((), ("--regrade",)):
        cmd = [sys.executable, "-m", "autograder", "--assignment", "cnn_network", "grade", str(submitted),
               "--out", str(out), "--jobs", "2", "--no-progress", "--course-key", str(key), *extra]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        runs.append({k: (row["score"], row["status"]) for k, row in grades_by_key(out).items()})
    assert runs[0] == runs[1]
    for student, m in manifest.items():
        for nb, cells in m["expected"].items():
            for gid in cells:
                assert float(runs[0][(student, nb, gid)][0]) in B.allowed_scores(m, nb, gid), \
                    (student, gid, runs[0][(student, nb, gid)])


def test_a_deleted_helper_cell_still_runs_as_released(tmp_path):
    """Without its locked cell the network would have no convolution: the grader runs it anyway."""
    nb = nbformat.read(RELEASE, as_version=4)
    for fn in CN.FUNCTIONS:
        cell = next(c for c in nb.cells if _meta(c).get("grade_id") == f"{fn}_solution")
        cell.source = CN.CORRECT[fn]["plain"]
    nb.cells = [c for c in nb.cells if _meta(c).get("grade_id") != "helpers"]
    path = tmp_path / "network.ipynb"
    nbformat.write(nb, path)
    sub = read_submission(str(path), load_source(str(SOURCE), "network"), "network")
    assert any("the helper cell was deleted; the released one is used" in n for n in sub.notes)
    ns = {}
    for src in sub.cells:
        exec(src, ns)
    verdicts = checks.grade_notebook("network", make_call(ns), np.random.default_rng(2), checks.Budgets())
    assert all(v.status == "passed" for v in verdicts)


def test_a_draw_dependent_cell_accepts_either_outcome_and_no_other_cell_does(tmp_path):
    """The training verdict of a network without ReLU depends on the course's draw: the demo's
    check (`make grade-demo`, scripts/make_class.py --check) accepts 0 or 3 there, and still
    reports any other cell that differs from the manifest."""
    import csv
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_class", ROOT / "scripts" / "make_class.py")
    make_class = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_class)
    manifest = CN.write_class(tmp_path / "submitted")
    relu_missing, plain = manifest["mistake_cnn_relu_missing"], manifest["correct_plain"]
    assert B.allowed_scores(relu_missing, "network", "cnn_loss_training") == {0.0, 3.0}
    assert B.allowed_scores(relu_missing, "network", "cnn_loss_grads") == {0.0}
    assert B.allowed_scores(plain, "network", "cnn_loss_training") == {3.0}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    def check(changed):
        grading = tmp_path / "grading"
        grading.mkdir(exist_ok=True)
        with open(grading / "grades.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, ["student_id", "notebook", "grade_id", "score", "status", "reason"])
            w.writeheader()
            for student, m in manifest.items():
                for nb, cells in m["expected"].items():
                    for gid, score in cells.items():
                        score = changed.get((student, gid), score)
                        w.writerow({"student_id": student, "notebook": nb, "grade_id": gid,
                                    "score": score, "status": "", "reason": ""})
        return make_class.check(tmp_path / "manifest.json", grading)

    assert check({}) == 0
    assert check({("mistake_cnn_relu_missing", "cnn_loss_training"): 0.0}) == 0
    assert check({("mistake_cnn_relu_missing", "cnn_loss_training"): 1.0}) == 1
    assert check({("mistake_cnn_relu_missing", "cnn_loss_scores"): 2.0}) == 1
    assert check({("correct_plain", "cnn_loss_training"): 0.0}) == 1
