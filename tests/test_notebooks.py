"""The exercise notebooks: nbgrader metadata, the release, and the visible tests.

Source notebooks live in solutions/cnn_layers/, the release in exercises/cnn_layers/.
"""
import ast
import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap

import nbformat
import pytest

from autograder.release import release

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSIGNMENT = "cnn_layers"
SOURCE = os.path.join(ROOT, "solutions", ASSIGNMENT)
RELEASE = os.path.join(ROOT, "exercises", ASSIGNMENT)

# The points table of docs/ARCHITECTURE.md (autograder/checks.py will hold the canonical one).
POINTS = {
    "convolution.ipynb": {
        "zero_pad": 1,
        "conv_forward_shapes": 1,
        "conv_forward_basic": 2,
        "conv_forward_padding": 2,
        "conv_forward_stride": 2,
        "conv_forward_uneven": 2,
        "conv_forward_nonsquare": 2,
        "conv_forward_channels": 2,
        "conv_forward_inputs_unchanged": 1,
        "conv_backward_shapes": 1,
        "conv_backward_basic": 2,
        "conv_backward_padding": 2,
        "conv_backward_stride": 2,
        "conv_backward_uneven": 2,
        "conv_backward_nonsquare": 2,
        "conv_backward_channels": 2,
        "conv_backward_inputs_unchanged": 1,
    },
    "pooling.ipynb": {
        "maxpool_forward_shapes": 1,
        "maxpool_forward_basic": 2,
        "maxpool_forward_overlap": 2,
        "maxpool_forward_general": 2,
        "maxpool_forward_inputs_unchanged": 1,
        "maxpool_backward_shapes": 1,
        "maxpool_backward_basic": 2,
        "maxpool_backward_overlap": 2,
        "maxpool_backward_ties": 2,
        "maxpool_backward_general": 2,
        "maxpool_backward_inputs_unchanged": 1,
    },
}
FUNCTIONS = {
    "convolution.ipynb": ["zero_pad", "conv_forward", "conv_backward"],
    "pooling.ipynb": ["maxpool_forward", "maxpool_backward"],
}
NOTEBOOKS = sorted(POINTS)
FORBIDDEN = ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS")


def read(folder, name):
    return nbformat.read(os.path.join(folder, name), as_version=4)


def meta(cell):
    return cell.metadata.get("nbgrader", {})


def graded(nb):
    return [c for c in nb.cells if meta(c).get("grade")]


def solution_cells(nb):
    return [c for c in nb.cells if meta(c).get("solution")]


def gradcheck_code():
    """autograder/gradcheck.py without its module docstring and numpy import."""
    with open(os.path.join(ROOT, "autograder", "gradcheck.py")) as fh:
        text = fh.read()
    tree = ast.parse(text)
    body_start = tree.body[2].lineno - 1  # after the docstring and `import numpy as np`
    assert isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[1], ast.Import)
    lines = text.splitlines()
    while body_start > 0 and lines[body_start - 1].strip() == "":
        body_start -= 1
    return "\n".join(lines[body_start:]).strip("\n")


# ---------------------------------------------------------------------------
# nbgrader's validator, run in a child process as the `nbgrader validate` command
# would, printing the validator's JSON results
# ---------------------------------------------------------------------------
_VALIDATE = textwrap.dedent("""
    import json, sys
    from traitlets.config import Config
    from nbgrader.validator import Validator
    invert = sys.argv[1] == "invert"
    out = {}
    for path in sys.argv[2:]:
        c = Config()
        c.Validator.invert = invert
        c.Execute.timeout = 120
        out[path] = Validator(config=c).validate(path)
    print("@@JSON@@" + json.dumps(out))
""")


def run_validator(mode, paths):
    proc = subprocess.run([sys.executable, "-c", _VALIDATE, mode, *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = proc.stdout.rsplit("@@JSON@@", 1)[1]
    return json.loads(payload)


@pytest.fixture(scope="module")
def validated_source():
    return run_validator("normal", [os.path.join(SOURCE, n) for n in NOTEBOOKS])


@pytest.fixture(scope="module")
def validated_release():
    paths = [os.path.join(RELEASE, n) for n in NOTEBOOKS]
    return run_validator("invert", paths), run_validator("normal", paths)


# (a) the source notebooks pass nbgrader validate
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_passes_nbgrader_validate(validated_source, name):
    results = validated_source[os.path.join(SOURCE, name)]
    failed = [f"{c['source'][:80]}...\n{c['raw_error']}" for c in results.get("failed", [])]
    assert not failed, "\n\n".join(failed)
    assert results == {}, results


# (b) in the release every graded cell fails: --invert finds no passing cell, and the plain
# validator reports each graded cell as failed with NotImplementedError
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_every_graded_cell_fails(validated_release, name):
    inverted, plain = (v[os.path.join(RELEASE, name)] for v in validated_release)
    assert "changed" not in inverted and "type_changed" not in inverted, inverted
    passed = {c["source"] for c in inverted.get("passed", [])}
    failed = {c["source"]: c["raw_error"] for c in plain.get("failed", [])}
    for cell in graded(read(RELEASE, name)):
        gid = meta(cell)["grade_id"]
        assert cell.source.strip() not in passed, f"{gid} passes in the release"
        assert cell.source.strip() in failed, f"{gid} does not fail in the release"
        assert "NotImplementedError" in failed[cell.source.strip()], (gid, failed[cell.source.strip()])


# (c) the committed release is what the sources give
def test_release_is_not_stale():
    assert release(ROOT, ASSIGNMENT, check=True) == []


def test_release_is_deterministic():
    from autograder.release import generate
    assert generate(ROOT, ASSIGNMENT) == generate(ROOT, ASSIGNMENT)


def _course_copy(tmp_path):
    import shutil
    shutil.copytree(SOURCE, tmp_path / "solutions" / ASSIGNMENT)
    shutil.copytree(RELEASE, tmp_path / "exercises" / ASSIGNMENT)
    shutil.copy(os.path.join(ROOT, "_config.yml"), tmp_path / "_config.yml")  # the book's address
    return tmp_path


def test_release_rewrites_stale_files_and_leaves_the_gradebook_alone(tmp_path):
    root = _course_copy(tmp_path)
    out = root / "exercises" / ASSIGNMENT
    (out / "pooling.ipynb").write_text("{}")
    (out / "leftover.txt").write_text("from an old release")
    expected = [f"exercises/{ASSIGNMENT}/leftover.txt", f"exercises/{ASSIGNMENT}/pooling.ipynb"]
    assert release(root, ASSIGNMENT, check=True) == expected
    assert (out / "leftover.txt").exists(), "check=True must not write"
    assert release(root, ASSIGNMENT) == expected
    assert not (out / "leftover.txt").exists()
    for name in NOTEBOOKS:
        with open(os.path.join(RELEASE, name), "rb") as fh:
            assert (out / name).read_bytes() == fh.read()
    assert release(root, ASSIGNMENT) == []
    assert not (root / "gradebook.db").exists()


def test_release_can_record_the_assignment_in_the_gradebook(tmp_path):
    from nbgrader.api import Gradebook
    from autograder.nbgrader_config import COURSE_ID, default_db_url
    root = _course_copy(tmp_path)
    assert release(root, ASSIGNMENT, db=True) == []
    with Gradebook(default_db_url(root), COURSE_ID) as gb:
        notebooks = {nb.name: nb for nb in gb.find_assignment(ASSIGNMENT).notebooks}
        assert sorted(notebooks) == [n[: -len(".ipynb")] for n in NOTEBOOKS]
        for name in NOTEBOOKS:
            nb = notebooks[name[: -len(".ipynb")]]
            assert {c.name: c.max_score for c in nb.grade_cells} == POINTS[name]


# (d) nothing of the solutions reaches the learner
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_has_no_solution(name):
    with open(os.path.join(RELEASE, name)) as fh:
        text = fh.read()
    for marker in FORBIDDEN:
        assert marker not in text, marker
    src = read(SOURCE, name)
    rel = read(RELEASE, name)
    # a solution line may appear in the release only where the source also shows it
    # outside a solution cell (e.g. the output-size rule in a test)
    public = {ln.strip() for c in src.cells if not meta(c).get("solution") for ln in c.source.splitlines()}
    release_lines = {ln.strip() for c in rel.cells for ln in c.source.splitlines()}
    for cell in solution_cells(src):
        body = cell.source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
        for line in body.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and line not in public:
                assert line not in release_lines, f"solution line in the release: {line!r}"
    for cell in solution_cells(rel):
        assert "raise NotImplementedError(" in cell.source, meta(cell)["grade_id"]


@pytest.mark.parametrize("folder", [SOURCE, RELEASE])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_outputs_stored(folder, name):
    for cell in read(folder, name).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


# (e) grade_ids and points
@pytest.mark.parametrize("folder", [SOURCE, RELEASE])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_grade_ids_and_points(folder, name):
    nb = read(folder, name)
    got = {meta(c)["grade_id"]: meta(c).get("points") for c in graded(nb)}
    assert got == POINTS[name]
    assert list(got) == list(POINTS[name]), "graded cells are out of the table's order"
    for cell in graded(nb):
        m = meta(cell)
        assert m["locked"] and not m["solution"] and cell.cell_type == "code", m
        assert "BEGIN HIDDEN TESTS" not in cell.source
        assert any(m["grade_id"].startswith(f) for f in FUNCTIONS[name]), m["grade_id"]
    ids = [meta(c)["grade_id"] for c in nb.cells if meta(c)]
    assert len(ids) == len(set(ids)), "duplicate grade_id"
    for cell in nb.cells:
        if meta(cell):
            assert meta(cell)["schema_version"] == 3
    assert sum(got.values()) == sum(POINTS[name].values())


# (f) solution cells and the helper cell
@pytest.mark.parametrize("folder", [SOURCE, RELEASE])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_cells(folder, name):
    nb = read(folder, name)
    sols = {meta(c)["grade_id"]: c for c in solution_cells(nb)}
    assert list(sols) == [f"{f}_solution" for f in FUNCTIONS[name]]
    for func in FUNCTIONS[name]:
        cell = sols[f"{func}_solution"]
        assert cell.cell_type == "code" and not meta(cell)["grade"] and not meta(cell)["locked"]
        assert cell.source.startswith(f"def {func}("), cell.source[:40]
        tree = ast.parse(cell.source)
        assert [type(n) for n in tree.body] == [ast.FunctionDef], f"{func}: one def per cell"
        assert ast.get_docstring(tree.body[0]), f"{func} has no docstring"
    # each graded function appears under exactly one test section: test cells follow its solution
    order = [meta(c)["grade_id"] for c in nb.cells if meta(c).get("grade") or meta(c).get("solution")]
    current = None
    for gid in order:
        if gid.endswith("_solution"):
            current = gid[: -len("_solution")]
        else:
            assert current and gid.startswith(current), f"{gid} is not under {current}"


@pytest.mark.parametrize("folder", [SOURCE, RELEASE])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_helper_cell(folder, name):
    nb = read(folder, name)
    helpers = [c for c in nb.cells if meta(c).get("grade_id") == "helpers"]
    assert len(helpers) == 1
    cell = helpers[0]
    assert meta(cell)["locked"] and not meta(cell)["grade"] and not meta(cell)["solution"]
    code = gradcheck_code()
    assert cell.source.startswith(code + "\n"), "the helper cell is not a copy of autograder/gradcheck.py"
    defined = [n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
    assert defined[:3] == ["numerical_gradient", "rel_error", "check_gradient"], defined
    args = [a.arg for a in next(n for n in ast.parse(cell.source).body
                                if getattr(n, "name", "") == "check_gradient").args.args]
    assert args == ["f", "x", "analytic", "dout", "name"]


@pytest.mark.parametrize("folder", [SOURCE, RELEASE])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_imports_numpy_only(folder, name):
    for cell in read(folder, name).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                assert [a.name for a in node.names] == ["numpy"], cell.source[:60]
            elif isinstance(node, ast.ImportFrom):
                pytest.fail(f"from-import in a notebook: {cell.source[:60]}")


# ---------------------------------------------------------------------------
# (g) the visible tests catch the classic mistakes
# ---------------------------------------------------------------------------
def run_release(name, overrides=None):
    """Run the release notebook in order with the source solutions pasted in, except
    the functions in overrides (name -> source). Returns {grade_id: exception or None}."""
    overrides = overrides or {}
    solutions = {meta(c)["grade_id"]: c.source for c in solution_cells(read(SOURCE, name))}
    ns = {"__name__": "__main__"}
    outcome = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in read(RELEASE, name).cells:
            m = meta(cell)
            if cell.cell_type != "code" or not m:
                continue  # markdown, and the learner's own ungraded check at the end
            src = cell.source
            if m.get("solution"):
                func = m["grade_id"][: -len("_solution")]
                src = textwrap.dedent(overrides.get(func, solutions[m["grade_id"]]))
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


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_visible_tests_pass_with_the_solutions(name):
    outcome = run_release(name)
    assert set(outcome) == set(POINTS[name])
    assert {g: e for g, e in outcome.items() if e is not None} == {}


MUTANTS = {
    "zero_pad_all_axes": ("convolution.ipynb", "zero_pad", "zero_pad", "wrong shape", """
        def zero_pad(x, pad):
            return np.pad(x, pad)
    """),
    "conv_forward_flips_kernel": ("convolution.ipynb", "conv_forward", "conv_forward_basic",
                                  "the kernel is flipped", """
        def conv_forward(x, w, b, stride=1, pad=0):
            N, C, H, W = x.shape
            F, _, HH, WW = w.shape
            Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
            xp = zero_pad(x, pad)
            wf = w[:, :, ::-1, ::-1]
            out = np.zeros((N, F, Ho, Wo))
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[:, :, i, j] = np.tensordot(win, wf, axes=([1, 2, 3], [1, 2, 3])) + b
            return out, (x, w, b, stride, pad)
    """),
    "conv_forward_ignores_stride": ("convolution.ipynb", "conv_forward", "conv_forward_stride",
                                    "starts at row i*stride", """
        def conv_forward(x, w, b, stride=1, pad=0):
            N, C, H, W = x.shape
            F, _, HH, WW = w.shape
            Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
            xp = zero_pad(x, pad)
            out = np.zeros((N, F, Ho, Wo))
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[:, :, i:i + HH, j:j + WW]
                    out[:, :, i, j] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) + b
            return out, (x, w, b, stride, pad)
    """),
    "conv_forward_size_without_pad": ("convolution.ipynb", "conv_forward", "conv_forward_shapes",
                                      "check H' = (H + 2*pad - HH)//stride + 1", """
        def conv_forward(x, w, b, stride=1, pad=0):
            N, C, H, W = x.shape
            F, _, HH, WW = w.shape
            Ho, Wo = (H - HH) // stride + 1, (W - WW) // stride + 1
            xp = zero_pad(x, pad)
            out = np.zeros((N, F, Ho, Wo))
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[:, :, i, j] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) + b
            return out, (x, w, b, stride, pad)
    """),
    "conv_forward_modifies_x": ("convolution.ipynb", "conv_forward",
                                "conv_forward_inputs_unchanged", "your function modified x in place", """
        def conv_forward(x, w, b, stride=1, pad=0):
            N, C, H, W = x.shape
            F, _, HH, WW = w.shape
            Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
            xp = zero_pad(x, pad)
            out = np.zeros((N, F, Ho, Wo))
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[:, :, i, j] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) + b
            x -= x.mean()   # "normalising" the input in place
            return out, (x, w, b, stride, pad)
    """),
}

_BACKWARD = """
    def conv_backward(dout, cache):
        x, w, b, stride, pad = cache
        N, C, H, W = x.shape
        F, _, HH, WW = w.shape
        _, _, Ho, Wo = dout.shape
        xp = zero_pad(x, pad)
        dxp = np.zeros(xp.shape)
        dw = np.zeros(w.shape)
        db = DB
        for i in range(Ho):
            for j in range(Wo):
                r, s = ROWCOL
                g = dout[:, :, i, j]
                dw += np.tensordot(g, xp[:, :, r:r + HH, s:s + WW], axes=([0], [0]))
                dxp[:, :, r:r + HH, s:s + WW] += np.tensordot(g, WX, axes=([1], [0]))
        dx = CROP
        END
        return dx, dw, db
"""


def backward(DB="dout.sum(axis=(0, 2, 3))", ROWCOL="i * stride, j * stride", WX="w",
             CROP="dxp[:, :, pad:pad + H, pad:pad + W]", END="pass"):
    src = _BACKWARD
    for key, value in dict(DB=DB, ROWCOL=ROWCOL, WX=WX, CROP=CROP, END=END).items():
        src = src.replace(key, value)
    return src


MUTANTS.update({
    "conv_backward_dx_not_cropped": ("convolution.ipynb", "conv_backward", "conv_backward_padding",
                                     "dx still contains the padding", backward(CROP="dxp")),
    "conv_backward_crop_pad_minus_pad": ("convolution.ipynb", "conv_backward", "conv_backward_shapes",
                                         "dx is empty", backward(CROP="dxp[:, :, pad:-pad, pad:-pad]")),
    "conv_backward_ignores_stride": ("convolution.ipynb", "conv_backward", "conv_backward_stride",
                                     "your dx ignores the stride", backward(ROWCOL="i, j")),
    "conv_backward_db_averaged": ("convolution.ipynb", "conv_backward", "conv_backward_basic",
                                  "db should be summed over the batch and positions, not averaged",
                                  backward(DB="dout.mean(axis=(0, 2, 3))")),
    "conv_backward_db_batch_mean": ("convolution.ipynb", "conv_backward", "conv_backward_channels",
                                    "not averaged", backward(DB="dout.sum(axis=(2, 3)).mean(axis=0)")),
    "conv_backward_dx_flipped_kernel": ("convolution.ipynb", "conv_backward", "conv_backward_basic",
                                        "dx is wrong", backward(WX="w[:, :, ::-1, ::-1]")),
    "conv_backward_modifies_dout": ("convolution.ipynb", "conv_backward",
                                    "conv_backward_inputs_unchanged", "modified dout in place",
                                    backward(END="dout *= 0")),
})

_POOL_BACK = """
    def maxpool_backward(dout, cache):
        x, pool, stride = cache
        N, C, H, W = x.shape
        _, _, Ho, Wo = dout.shape
        dx = np.zeros(x.shape)
        for n in range(N):
            for c in range(C):
                for i in range(Ho):
                    for j in range(Wo):
                        r, s = i * stride, j * stride
                        win = x[n, c, r:r + pool, s:s + pool]
                        ROUTE
        return dx
"""


def pool_backward(route):
    return _POOL_BACK.replace("ROUTE", route)


MUTANTS.update({
    "maxpool_forward_ignores_stride": ("pooling.ipynb", "maxpool_forward", "maxpool_forward_overlap",
                                       "starts at row i*stride", """
        def maxpool_forward(x, pool=2, stride=2):
            N, C, H, W = x.shape
            Ho, Wo = (H - pool) // stride + 1, (W - pool) // stride + 1
            out = np.zeros((N, C, Ho, Wo))
            for i in range(Ho):
                for j in range(Wo):
                    out[:, :, i, j] = x[:, :, i * pool:i * pool + pool, j * pool:j * pool + pool].max(axis=(2, 3))
            return out, (x, pool, stride)
    """),
    "maxpool_backward_ties_to_all": ("pooling.ipynb", "maxpool_backward", "maxpool_backward_ties",
                                     "not to every maximum",
                                     pool_backward("dx[n, c, r:r + pool, s:s + pool] += "
                                                   "(win == win.max()) * dout[n, c, i, j]")),
    "maxpool_backward_ties_split": ("pooling.ipynb", "maxpool_backward", "maxpool_backward_ties",
                                    "first maximal element in row-major order",
                                    pool_backward("m = win == win.max(); "
                                                  "dx[n, c, r:r + pool, s:s + pool] += m * dout[n, c, i, j] / m.sum()")),
    "maxpool_backward_last_max": ("pooling.ipynb", "maxpool_backward", "maxpool_backward_ties",
                                  "first maximal element in row-major order",
                                  pool_backward("k = win.size - 1 - np.argmax(win.ravel()[::-1]); "
                                                "p, q = divmod(k, pool); dx[n, c, r + p, s + q] += dout[n, c, i, j]")),
    "maxpool_backward_overwrites": ("pooling.ipynb", "maxpool_backward", "maxpool_backward_overlap",
                                    "use +=, not =",
                                    pool_backward("p, q = np.unravel_index(np.argmax(win), win.shape); "
                                                  "dx[n, c, r + p, s + q] = dout[n, c, i, j]")),
    "maxpool_backward_modifies_x": ("pooling.ipynb", "maxpool_backward",
                                    "maxpool_backward_inputs_unchanged", "modified x",
                                    pool_backward("p, q = np.unravel_index(np.argmax(win), win.shape); "
                                                  "dx[n, c, r + p, s + q] += dout[n, c, i, j]; "
                                                  "win[p, q] = -np.inf")),
})


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_visible_tests_catch_mistake(mutant):
    name, func, grade_id, message, source = MUTANTS[mutant]
    outcome = run_release(name, {func: source})
    err = outcome[grade_id]
    assert isinstance(err, AssertionError), f"{grade_id} gave {err!r} for {mutant}"
    assert message in str(err), f"{grade_id}: {err}"
