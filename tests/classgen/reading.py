"""Honest notebooks that the reading of submissions must not punish, and the wrong variants
that must still fail.

Each case builds one ``Student`` (tests/classgen/build.py) with the exact score it must get:

* a first draft of conv_backward that imports matplotlib, left above the final version
  (full marks), and the same cell placed below the final version, where it is what the
  name binds (conv_backward not graded);
* a 57 MB notebook, almost all of it one figure's PNG output (full marks), and a notebook
  whose code cells' metadata alone pass 50 MiB (the notebook is not graded);
* maxpool_forward returning complex128 with imaginary parts exactly zero (full marks), and
  with a nonzero imaginary part (every maxpool_forward cell fails);
* a pooling notebook with 3,000 markdown cells of notes (full marks), and one flooded with
  500,000 markdown cells, 44 MiB (the notebook is not graded, cheaply).
"""
from __future__ import annotations

import json

from . import build as B
from . import honest as H
from . import variants as V

_correct = H._correct   # full marks, styles rotating with k; the wrong cases set their own kind

DRAFT_CONV_BACKWARD = '''\
import matplotlib.pyplot as plt


def conv_backward(dout, cache):
    """First try: only db is right; plots dout to look at it."""
    x, w, b, stride, pad = cache
    plt.imshow(dout[0, 0])
    return np.zeros_like(x), np.zeros_like(w), dout.sum(axis=(0, 2, 3))
'''

MAXPOOL_FORWARD_COMPLEX = V.correct_style("maxpool_forward", "loops").replace(
    "    out = np.zeros((N, C, H_out, W_out))\n", "    out = np.zeros((N, C, H_out, W_out), dtype=np.complex128)\n")
MAXPOOL_FORWARD_COMPLEX_IMAG = MAXPOOL_FORWARD_COMPLEX.replace(
    "    return out, (x, pool, stride)\n", "    return out + 1e-9j, (x, pool, stride)\n")
assert MAXPOOL_FORWARD_COMPLEX != V.correct_style("maxpool_forward", "loops")
assert MAXPOOL_FORWARD_COMPLEX_IMAG != MAXPOOL_FORWARD_COMPLEX

FIGURE_BYTES = 57_000_000
FLOOD_CELLS = 500_000
NOTES_CELLS = 3_000


def draft_importing_matplotlib(sid):
    s = _correct(sid, "a draft of conv_backward importing matplotlib, above the final version", 0)
    s.extra = {"convolution": [("conv_backward_solution", DRAFT_CONV_BACKWARD)]}
    return s


def matplotlib_version_is_final(sid):
    """The same cell below the solution cell: it is the conv_backward that is graded."""
    s = _correct(sid, "the matplotlib version of conv_backward below the solution cell", 1)
    s.kind = "wrong"
    s.extra = {"convolution": [(None, DRAFT_CONV_BACKWARD)]}
    s.zero = {"conv_backward"}
    s.status = {g: "ungradable" for g in B.grade_ids("convolution", "conv_backward")}
    return s


def _figure_cell(nb):
    """A plotting cell with one large PNG output, after conv_backward's solution."""
    cell = B.new_code_cell(H.CONV_PLOT, seed="figure")
    cell["execution_count"] = 7
    cell["outputs"] = [{"output_type": "display_data", "metadata": {},
                        "data": {"image/png": "iVBORw0KGgo" + "A" * FIGURE_BYTES + "\n",
                                 "text/plain": ["<Figure size 640x480 with 2 Axes>"]}}]
    nb["cells"].insert(B.find_cell(nb, "conv_backward_solution") + 1, cell)


def large_figure(sid):
    s = _correct(sid, "a 57 MB notebook: one large figure output", 2)
    s.edits = {"convolution": [_figure_cell]}
    return s


def _metadata_past_limit(nb):
    cell = nb["cells"][B.find_cell(nb, "conv_forward_solution")]
    cell["metadata"]["scratch"] = "x" * (51 << 20)


def large_code_part(sid):
    """Not outputs: 51 MiB in a code cell's metadata, which the grader reads."""
    s = _correct(sid, "51 MiB of cell metadata, besides outputs", 0)
    s.kind = "wrong"
    s.edits = {"convolution": [_metadata_past_limit]}
    s.zero = set(B.grade_ids("convolution"))
    s.status = {g: "ungradable" for g in B.grade_ids("convolution")}
    return s


def complex_zero_imaginary(sid):
    s = _correct(sid, "maxpool_forward returns complex128 whose imaginary parts are exactly zero", 1)
    s.sources = {"maxpool_forward": MAXPOOL_FORWARD_COMPLEX}
    return s


def complex_nonzero_imaginary(sid):
    s = _correct(sid, "maxpool_forward returns complex128 with imaginary parts of 1e-9", 2)
    s.kind = "wrong"
    s.sources = {"maxpool_forward": MAXPOOL_FORWARD_COMPLEX_IMAG}
    s.zero = {"maxpool_forward"}
    s.status = {g: "failed" for g in B.grade_ids("pooling", "maxpool_forward")}
    return s


def _markdown(n, seed):
    return [{"cell_type": "markdown", "id": f"{seed}{k}", "metadata": {}, "source": [f"note {k}\n"]}
            for k in range(n)]


def _with_markdown(n, seed):
    def edit(nb):
        at = B.find_cell(nb, "maxpool_forward_solution")
        nb["cells"][at:at] = _markdown(n, seed)
        return json.dumps(nb) + "\n"   # compact, as large as the reported flood
    return edit


def many_notes(sid):
    s = _correct(sid, f"{NOTES_CELLS} markdown cells of notes in the pooling notebook", 0)
    s.edits = {"pooling": [_with_markdown(NOTES_CELLS, "n")]}
    return s


def markdown_flood(sid):
    s = _correct(sid, f"{FLOOD_CELLS} markdown cells (44 MiB) in the pooling notebook", 1)
    s.kind = "wrong"
    s.edits = {"pooling": [_with_markdown(FLOOD_CELLS, "m")]}
    s.zero = set(B.grade_ids("pooling"))
    s.status = {g: "ungradable" for g in B.grade_ids("pooling")}
    return s


HONEST = {"draft_matplotlib": draft_importing_matplotlib, "large_figure": large_figure,
          "complex_zero_imag": complex_zero_imaginary, "many_notes": many_notes}
WRONG = {"final_matplotlib": matplotlib_version_is_final, "large_code_part": large_code_part,
         "complex_nonzero_imag": complex_nonzero_imaginary, "markdown_flood": markdown_flood}
