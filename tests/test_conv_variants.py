"""The ``conv_variants`` assignment (1D, dilated, transposed and fast convolutions).

- The reference layers equal PyTorch (conv1d, conv2d with dilation, conv_transpose2d with
  output_padding, and autograd for the backward passes) on many random hard cases, and the
  loop versions that set the time budgets equal them.
- The demo class (tests/classgen/conv_variants.py: every correct style and every classic
  mistake) is graded by the real grader, sandbox included: each student gets exactly the
  expected score in every cell, twice (a regrade reproduces every score), and each mistake's
  feedback names it.
- The release is up to date, release and validate know the assignment, and the released
  notebooks, with the solutions pasted in, pass their own visible tests, which catch the
  mistakes.
"""
import contextlib
import io
import json
import os
import subprocess
import sys

import nbformat
import numpy as np
import pytest

from autograder import assignment
from autograder.assignments import conv_variants as C
from autograder.assignments.conv_variants import reference as R
from autograder.gradcheck import rel_error
from autograder.release import release
from classgen import conv_variants as CV
from conftest import grades_by_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "solutions", CV.ASSIGNMENT)
RELEASE = os.path.join(ROOT, "exercises", CV.ASSIGNMENT)


# --------------------------------------------------------------------------- references against PyTorch

def _torch_case(rng, kind):
    """Random sizes of a hard case: uneven, non-square, stride 1-3, pad 0-2, dilation 1-3, output_padding."""
    N, C, F = (int(v) for v in rng.integers(1, 4, 3))
    s, p = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    if kind == "conv1d":
        K = int(rng.integers(1, 5))
        L = int(max(K - 2 * p, 1) + rng.integers(0, 9))
        return (N, C, L), (F, C, K), dict(stride=s, pad=p)
    HH, WW = (int(v) for v in rng.integers(1, 5, 2))
    if kind == "dilated":
        d = int(rng.integers(1, 4))
        H = int(max(d * (HH - 1) + 1 - 2 * p, 1) + rng.integers(0, 7))
        W = int(max(d * (WW - 1) + 1 - 2 * p, 1) + rng.integers(0, 7))
        return (N, C, H, W), (F, C, HH, WW), dict(stride=s, pad=p, dilation=d)
    op = int(rng.integers(0, s))
    H, W = (int(v) for v in rng.integers(1, 6, 2))
    while (H - 1) * s - 2 * p + HH + op < 1 or (W - 1) * s - 2 * p + WW + op < 1:
        H, W = H + 1, W + 1
    return (N, C, H, W), (C, F, HH, WW), dict(stride=s, pad=p, output_padding=op)


LAYERS = {
    "conv1d": (R.conv1d_forward, R.conv1d_backward, R.conv1d_forward_loops, R.conv1d_backward_loops),
    "dilated": (R.dilated_conv_forward, R.dilated_conv_backward, R.dilated_conv_forward_loops,
                R.dilated_conv_backward_loops),
    "transposed": (R.conv_transpose_forward, R.conv_transpose_backward, R.conv_transpose_forward_loops,
                   R.conv_transpose_backward_loops),
}


def _torch_layer(kind, x, w, b, kw):
    import torch.nn.functional as fn
    if kind == "conv1d":
        return fn.conv1d(x, w, b, stride=kw["stride"], padding=kw["pad"])
    if kind == "dilated":
        return fn.conv2d(x, w, b, stride=kw["stride"], padding=kw["pad"], dilation=kw["dilation"])
    return fn.conv_transpose2d(x, w, b, stride=kw["stride"], padding=kw["pad"], output_padding=kw["output_padding"])


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_references_equal_pytorch_on_random_hard_cases(kind):
    torch = pytest.importorskip("torch")
    forward, backward, forward_loops, backward_loops = LAYERS[kind]
    rng = np.random.default_rng(17)
    seen = set()
    for _ in range(120):
        x_shape, w_shape, kw = _torch_case(rng, kind)
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[1] if kind == "transposed" else w_shape[0])
        out, cache = forward(x, w, b, *kw.values())
        assert cache[:3] == (x, w, b) and cache[3:] == tuple(kw.values())
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        t_out = _torch_layer(kind, tx, tw, tb, kw)
        dout = rng.standard_normal(out.shape)
        t_out.backward(torch.tensor(dout))
        expected = (t_out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())
        got = (out,) + tuple(backward(dout, cache))
        loops = (forward_loops(x, w, b, *kw.values())[0],) + tuple(backward_loops(dout, cache))
        for name, g, lp, e in zip(("out", "dx", "dw", "db"), got, loops, expected):
            assert g.shape == e.shape, (kind, name, x_shape, w_shape, kw)
            assert rel_error(g, e) <= 1e-12, (kind, name, x_shape, w_shape, kw, rel_error(g, e))
            assert rel_error(lp, e) <= 1e-12, (kind, name, "loops", x_shape, w_shape, kw)
        seen |= {f"{k}={v}" for k, v in kw.items()}
        seen.add("non-square" if len(x_shape) == 4 and x_shape[2] != x_shape[3] else "square")
    # the hard cases were all drawn
    want = {f"stride={s}" for s in (1, 2, 3)} | {f"pad={p}" for p in (0, 1, 2)}
    want |= {"dilation=1", "dilation=2", "dilation=3"} if kind == "dilated" else set()
    want |= {"output_padding=1", "output_padding=2", "non-square"} if kind == "transposed" else set()
    assert want <= seen, want - seen


def test_the_fast_pair_is_graded_against_the_course_layer():
    from autograder import reference as ref
    assert C.FAST.reference_forward is ref.conv_forward and C.FAST.reference_backward is ref.conv_backward


# --------------------------------------------------------------------------- the demo class, real grader

@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv_variants")
    submitted, out = root / "submitted", root / "out"
    manifest = CV.write_class(submitted)
    key = root / "keys" / "course.key"
    runs = []
    for k in range(2):
        proc = run_grade(submitted, out, "--regrade", "--course-key", str(key))
        assert proc.returncode == 0, f"run {k + 1}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        results = {}
        for path in sorted((out / "results").rglob("*.json")):
            r = json.loads(path.read_text())
            results[(r["student_id"], r["notebook"])] = r
        runs.append((grades_by_key(out), results))
    return manifest, runs


def run_grade(submitted, out, *extra):
    """``python -m autograder --assignment conv_variants grade SUBMITTED --out OUT ...``."""
    cmd = [sys.executable, "-m", "autograder", "--assignment", CV.ASSIGNMENT, "grade", str(submitted),
           "--out", str(out), "--no-progress", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_every_style_and_mistake_gets_exactly_its_score_in_every_run(graded_class):
    manifest, runs = graded_class
    assert {m["kind"] for m in manifest.values()} == {"correct", "mistake"}
    for k, (rows, _) in enumerate(runs, 1):
        wrong = []
        for student, m in sorted(manifest.items()):
            for nb, cells in m["expected"].items():
                for gid, exp in cells.items():
                    row = rows.get((student, nb, gid))
                    if row is None or float(row["score"]) != exp:
                        wrong.append(f"run {k}: {student} {gid}: expected {exp}, got "
                                     + ("nothing" if row is None else f"{row['score']} ({row['status']}: "
                                                                      f"{row['reason'][:200]})"))
        assert not wrong, "\n".join(wrong)
    # the same scores and statuses, and the same feedback but for the speed cells' measured times

    def same(rows):
        return {key: (r["score"], r["status"], "" if key[2].endswith("_speed") else r["reason"])
                for key, r in rows.items()}
    assert same(runs[1][0]) == same(runs[0][0])


@pytest.mark.slow
def test_each_mistake_is_named_in_its_feedback(graded_class):
    manifest, runs = graded_class
    _, results = runs[0]
    for name, phrase in CV.FEEDBACK.items():
        student = f"mistake_{name}"
        fn = CV.MISTAKES[name][0]
        failing = [c for r in results.values() if r["student_id"] == student for c in r["cells"]
                   if c["grade_id"] in CV.EXPECTED_FAILS[name] and not c["grade_id"].endswith("_inputs_unchanged")]
        assert failing, name
        for cell in failing:
            text = " ".join(cell["feedback"])
            assert phrase in text, (name, cell["grade_id"], text[:600])
            assert fn in text or "case" in text, (name, text[:300])


# --------------------------------------------------------------------------- release, validate, visible tests

def test_release_and_validate_know_the_assignment():
    assert release(ROOT, CV.ASSIGNMENT, check=True) == []
    assert assignment.problems(ROOT, CV.ASSIGNMENT) == []
    assert assignment.release_problems(ROOT, CV.ASSIGNMENT) == []
    spec = assignment.load(ROOT, CV.ASSIGNMENT)
    assert spec.notebooks == CV.NOTEBOOKS
    assert {nb: {c.grade_id: c.points for c in spec.cells_of(nb)} for nb in CV.NOTEBOOKS} == CV.points()
    proc = subprocess.run([sys.executable, "-m", "autograder", "--assignment", CV.ASSIGNMENT, "release", "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_gradescope_bundle_holds_the_checks_and_their_references():
    from autograder.gradescope import _package_files
    files = _package_files(ROOT, CV.ASSIGNMENT)
    assert {"autograder/assignments/conv_variants/__init__.py",
            "autograder/assignments/conv_variants/reference.py"} <= set(files)


def test_collect_knows_the_assignment(tmp_path):
    manifest = CV.write_class(tmp_path / "download")
    proc = subprocess.run([sys.executable, "-m", "autograder", "--assignment", CV.ASSIGNMENT, "collect",
                           str(tmp_path / "download"), "--lms", "nbgrader", "--to", str(tmp_path / "submitted")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    placed = sorted(p.relative_to(tmp_path / "submitted").as_posix()
                    for p in (tmp_path / "submitted").rglob("*.ipynb"))
    assert placed == sorted(f"{s}/{CV.ASSIGNMENT}/{nb}.ipynb" for s in manifest for nb in CV.NOTEBOOKS)


def test_every_graded_cell_has_a_property_and_its_function_in_its_name():
    for nb, cells in CV.points().items():
        for gid in cells:
            fn = max((f for f in CV.FUNCTIONS if gid.startswith(f + "_")), key=len)
            assert CV.NOTEBOOK_OF[fn] == nb, gid
    speed = [gid for cells in CV.points().values() for gid in cells if gid.endswith("_speed")]
    assert speed == ["conv_forward_fast_speed", "conv_backward_fast_speed"]


def _meta(cell):
    return cell.metadata.get("nbgrader", {})


def run_release(name, overrides=None):
    """Run the released notebook in order with the source's solutions pasted in (or overrides:
    function -> source); returns {grade_id: exception or None} of its graded cells."""
    overrides = overrides or {}
    source = nbformat.read(os.path.join(SOURCE, name + ".ipynb"), as_version=4)
    solutions = {_meta(c)["grade_id"]: c.source for c in source.cells if _meta(c).get("solution")}
    ns = {"__name__": "__main__"}
    outcome = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nbformat.read(os.path.join(RELEASE, name + ".ipynb"), as_version=4).cells:
            m = _meta(cell)
            if cell.cell_type != "code" or not m:
                continue
            src = cell.source
            if m.get("solution"):
                src = overrides.get(m["grade_id"][:-len("_solution")], solutions[m["grade_id"]])
            code = compile(src, m["grade_id"], "exec")
            if m.get("grade"):
                try:
                    exec(code, ns)
                    outcome[m["grade_id"]] = None
                except Exception as err:  # noqa: BLE001 - recorded per cell
                    outcome[m["grade_id"]] = err
            else:
                exec(code, ns)
    return outcome


@pytest.mark.parametrize("name", CV.NOTEBOOKS)
def test_visible_tests_pass_with_the_solutions(name):
    outcome = run_release(name)
    assert set(outcome) == set(CV.points()[name])
    assert {g: repr(e)[:300] for g, e in outcome.items() if e is not None} == {}


@pytest.mark.parametrize("mistake", [m for m in CV.MISTAKES if not m.startswith("fast_")])
def test_visible_tests_catch_the_mistake(mistake):
    fn, src = CV.MISTAKES[mistake]
    outcome = run_release(CV.NOTEBOOK_OF[fn], {fn: src})
    failed = {g for g, e in outcome.items() if e is not None}
    assert failed and failed <= {g for g in outcome if g.startswith(fn + "_")}, failed


# --------------------------------------------------------------------------- the speed cells, hostile

MEMO_LAYER = '''_MEMO = {}
def conv_forward_fast(x, w, b, stride=1, pad=0):
    key = (x.shape, w.shape)
    if key not in _MEMO:                 # slow once, then the remembered answer at once
        for _ in range(30):
            _MEMO[key] = _layer(x, w, b, stride, pad)
    return _MEMO[key]
'''


def test_a_remembered_answer_does_not_buy_the_speed_points():
    """Every timing gets fresh inputs, and a time counts only with the right values."""
    from autograder import checks
    from autograder.sandbox import LearnerProcess, Limits
    layer = CV.FF_IM2COL.replace("def conv_forward_fast(", "def _layer(", 1)
    with LearnerProcess(["import numpy as np", layer, MEMO_LAYER], limits=Limits()) as proc:
        proc.setup()
        verdict = checks.run_check("conv_forward_fast_speed", proc.call, np.random.default_rng(0))
    assert verdict.status == "failed" and verdict.score == 0, verdict
    assert "the time of a wrong answer does not count" in " ".join(verdict.feedback)
