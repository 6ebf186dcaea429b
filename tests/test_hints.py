"""Hints that name the mistake actually made, in the visible tests and in the hidden feedback.

Every row of the table of learner mistakes below is a real learner bug
(tests/classgen/variants.py) in the cell where it used to get a hint about a
different mistake.  Each must get the hint that names it, both in the visible
test's output (the release notebook run with nbclient, as a learner runs it)
and in the hidden checks' feedback; the hint it used to get must not appear.
A correct answer that copies its inputs (``astype``) or carries an extra cache
entry passes every visible test, and a gradient-check helper misuse gets a
sentence, not a NumPy traceback.
"""
import copy
import time
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from autograder import checks
from autograder.assignment import load_check_modules
from autograder.grading import notebook_rng
from classgen import build as B
from classgen import honest as H
from classgen import variants as V

load_check_modules()

# mistake, the cell it is made in, the hint that names it (visible, hidden), a hint that must not appear
TABLE = {
    "crop_minus_pad": ("conv_backward_stride", "[pad:-pad] selects nothing when pad = 0",
                       "dx[pad:-pad] selects nothing for pad = 0", "ignores the stride"),
    "pool_overlap_overwrites": ("maxpool_backward_ties", "use +=, not =",
                                "overlapping windows overwrite each other", "every maximum"),
    "bias_per_element": ("conv_forward_padding", "the bias is added 9 times per output instead of once",
                         "the bias is added to every product of the window", "pad x with zeros"),
    "bias_per_element ": ("conv_forward_basic", "the bias is added 4 times per output instead of once",
                          "the bias is added to every product of the window", "flip"),
    "stride_ignored_backward": ("conv_backward_nonsquare", "your dx ignores the stride",
                                "the stride is ignored in dx", "apart"),
}


def _execute(nb):
    """Run a notebook as a learner would (every cell, errors kept); {grade_id: error text}."""
    nb = nbformat.reads(B.dump_notebook(nb), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True).execute()
    errors = {}
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors[gid] = f"{out['ename']}: {out['evalue']}"
    return errors


@pytest.fixture(scope="module")
def visible():
    """The visible test output of every mistake in the table, and of honest variations."""
    runs = {}
    for mistake in {m.strip() for m in TABLE}:
        student = B.with_mistake(f"v_{mistake}", mistake)
        nb_name = V.NOTEBOOK_OF[V.MISTAKES[mistake][0]]
        runs[mistake] = _execute(student.notebook_json(nb_name))
    for case in ("astype_copy", "extra_cache_entry"):
        student = H.CASES[case](f"v_{case}")
        runs[case] = _execute(student.notebook_json("convolution"))
    return runs


@pytest.mark.parametrize("row", sorted(TABLE))
def test_visible_test_names_the_mistake(visible, row):
    grade_id, hint, _, wrong = TABLE[row]
    errors = visible[row.strip()]
    assert grade_id in errors, f"the visible test {grade_id} passed: {sorted(errors)}"
    assert errors[grade_id].startswith("AssertionError"), errors[grade_id]
    assert hint in errors[grade_id], errors[grade_id]
    assert wrong not in errors[grade_id].split("\nexpected")[0], errors[grade_id]


@pytest.mark.parametrize("case", ["astype_copy", "extra_cache_entry"])
def test_no_visible_test_fails_a_correct_answer(visible, case):
    assert visible[case] == {}


def _call(funcs):
    """LearnerProcess.call's contract, in this process (the check logic is under test here)."""
    def call(func, args, kwargs, budget_s, **_options):
        args = copy.deepcopy(args)
        start = time.perf_counter()
        try:
            value = funcs[func](*args, **kwargs)
        except Exception as exc:
            return SimpleNamespace(status="error", value=None, args_after=args, message=str(exc), seconds=0.0)
        return SimpleNamespace(status="ok", value=value, args_after=args, message="",
                               seconds=time.perf_counter() - start)
    return call


def _learner(mistake):
    """The reference functions with one replaced by the learner's mistake."""
    from autograder import reference as ref
    fn, src = V.MISTAKES[mistake]
    ns = {"np": np}
    exec(src, ns)
    funcs = {"zero_pad": ref.zero_pad, "conv_forward": ref.conv_forward, "conv_backward": ref.conv_backward,
             "maxpool_forward": ref.maxpool_forward, "maxpool_backward": ref.maxpool_backward}
    funcs[fn] = ns[fn]
    return funcs


@pytest.mark.parametrize("row", sorted(TABLE))
def test_hidden_feedback_names_the_mistake(row):
    grade_id, _, hint, wrong = TABLE[row]
    mistake = row.strip()
    rng = notebook_rng(b"k" * 32, checks.GRADED_CELLS[grade_id].notebook, "a-submission")
    verdict = checks.run_check(grade_id, _call(_learner(mistake)), rng)
    text = " ".join(verdict.feedback)
    assert verdict.status == "failed" and verdict.score == 0, text
    assert hint in text, text
    assert wrong not in text, text


def test_gradient_check_misuse_gets_a_sentence():
    """check_gradient with a lambda that forgets [0]: a TypeError that says what to write."""
    nb = B.release_notebook("convolution")
    helpers = "".join(nb["cells"][B.find_cell(nb, "helpers")]["source"])
    ns = {"np": np}
    exec(helpers, ns)
    from autograder import reference as ref
    x, w, b = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), np.zeros(1)
    out, cache = ref.conv_forward(x, w, b)
    dx = ref.conv_backward(np.ones_like(out), cache)[0]
    with pytest.raises(TypeError, match=r"returned a tuple of 2 items, not an array.*\[0\]"):
        ns["check_gradient"](lambda v: ref.conv_forward(v, w, b), x, dx, np.ones_like(out))
    with pytest.raises(ValueError, match="dout must be shaped like the output of f"):
        ns["check_gradient"](lambda v: ref.conv_forward(v, w, b)[0], x, dx, np.ones((2, 2)))
