"""Honest learners as they really work: every one of them must get full marks.

Each case builds one ``Student`` (tests/classgen/build.py) whose graded
functions are right, written the way real learners and real starter code
write them, next to cells that real notebooks have: plots, timings, progress
bars, comparisons with a library, a first draft left above the final version,
cells run out of order.  Together with the correct styles of the standard
class this is the honest-styles class: graded three times with ``--regrade``,
every student keeps full and identical marks.

``float32_student`` is the exception: a float32 intermediate is outside the
float64 contract, and whatever it scores, it must score the same on every
regrade.
"""
from __future__ import annotations

from . import build as B
from . import variants as V


def _correct(sid, note, k=0):
    s = B.all_correct(sid, B._rotating_styles(k), kind="honest", note=note)
    return s


def _src(function, style="vectorized"):
    return V.correct_style(function, style)


def _after_docstring(source, lines):
    """Insert lines (already indented) right after the one-line docstring of source."""
    head, sep, tail = source.partition('"""\n')
    assert sep, "the variant has a one-line docstring"
    return head + sep + lines + tail


CONV_PLOT = '''\
import matplotlib.pyplot as plt

x_demo = np.random.randn(1, 1, 8, 8)
w_demo = np.array([[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]]], dtype=float)
out_demo, _ = conv_forward(x_demo, w_demo, np.zeros(1), stride=1, pad=1)
fig, axes = plt.subplots(1, 2)
axes[0].imshow(x_demo[0, 0])
axes[1].imshow(out_demo[0, 0])
plt.show()
'''

CONV_TIMING = '''\
import time

x_t = np.random.randn(8, 3, 32, 32)
w_t = np.random.randn(6, 3, 3, 3)
t0 = time.perf_counter()
out_t, cache_t = conv_forward(x_t, w_t, np.zeros(6), stride=1, pad=1)
conv_backward(np.ones_like(out_t), cache_t)
print(f"forward + backward: {time.perf_counter() - t0:.3f} s")
'''

POOL_TQDM = '''\
from tqdm import tqdm

x_q = np.random.randn(4, 3, 16, 16)
for _ in tqdm(range(20)):
    out_q, cache_q = maxpool_forward(x_q, 2, 2)
    maxpool_backward(np.ones_like(out_q), cache_q)
'''

SYS_CELL = '''\
import sys
print(sys.version)
print(np.__version__)
'''

TORCH_COMPARE = '''\
import torch
import torch.nn.functional as F_t

x_c = np.random.randn(2, 3, 7, 7)
w_c = np.random.randn(4, 3, 3, 3)
b_c = np.random.randn(4)
ours, _ = conv_forward(x_c, w_c, b_c, stride=2, pad=1)
theirs = F_t.conv2d(torch.tensor(x_c), torch.tensor(w_c), torch.tensor(b_c), stride=2, padding=1).numpy()
print("max difference with PyTorch:", np.abs(ours - theirs).max())
'''

COURSERA_HEADER = '''\
import numpy as np
import h5py
import matplotlib.pyplot as plt

%matplotlib inline
plt.rcParams['figure.figsize'] = (5.0, 4.0)
plt.rcParams['image.interpolation'] = 'nearest'

%load_ext autoreload
%autoreload 2

np.random.seed(1)
'''

CS231N_HEADER = "from builtins import range\nfrom builtins import object\n"

BROKEN_SCRATCH = '''\
# trying things out; this cell raises and I left it
print(undefined_name_from_an_old_session.shape)
'''

CONV_FORWARD_EXTRA_CACHE = _src("conv_forward", "loops").replace(
    "    cache = (x, w, b, stride, pad)\n", "    cache = (x, w, b, stride, pad, {0: 'debug'})\n")
CONV_BACKWARD_SLICED_CACHE = _src("conv_backward", "loops").replace(
    "    x, w, b, stride, pad = cache\n", "    x, w, b, stride, pad = cache[:5]\n")

CONV_BACKWARD_PRINTS = _src("conv_backward", "loops").replace(
    "                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]\n",
    "                    dxp[n, :, rows, cols] += dout[n, f, i, j] * w[f]\n"
    "                    print(dxp[n, :, rows, cols])\n")
MAXPOOL_BACKWARD_PRINTS = _src("maxpool_backward", "loops").replace(
    "                    dx[n, c, i * stride + a, j * stride + k] += dout[n, c, i, j]\n",
    "                    dx[n, c, i * stride + a, j * stride + k] += dout[n, c, i, j]\n"
    "                    print('window', n, c, i, j, window)\n")

CONV_FORWARD_ASTYPE = _after_docstring(_src("conv_forward", "einsum"),
                                       "    x = x.astype(np.float64)\n    w = w.astype(np.float64)\n")

CONV_BACKWARD_DEEPCOPY = _after_docstring(_src("conv_backward", "loops"),
                                          "    cache = copy.deepcopy(cache)\n")

MAXPOOL_BACKWARD_WARNINGS = _after_docstring(_src("maxpool_backward", "loops"), '''\
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dout = np.asarray(dout, dtype=np.float64)
''')

CONV_FORWARD_TYPED = '''\
from __future__ import annotations


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1,
                 pad: int = 0) -> Tuple[np.ndarray, tuple]:
    """Typed, with a timer the learner kept."""
    start = time.perf_counter()
    out, cache = _conv_forward_impl(x, w, b, stride, pad)
    elapsed = time.perf_counter() - start
    return out, cache
'''
CONV_FORWARD_IMPL = _src("conv_forward", "tensordot").replace("def conv_forward(", "def _conv_forward_impl(", 1)

CS231N_MAXPOOL_BACKWARD = CS231N_HEADER + "\n\n" + _src("maxpool_backward", "loops")

POOL_DRAFT = '''\
def maxpool_forward(x, pool=2, stride=2):
    """My first try, wrong: kept above the version that works."""
    return x[:, :, ::stride, ::stride], (x, pool, stride)
'''

POOL_CONSTANT_LATER = '''\
EPSILON = 0.0
'''
MAXPOOL_BACKWARD_USES_CONSTANT = _after_docstring(_src("maxpool_backward", "windows"),
                                                  "    assert EPSILON == 0.0\n")


def plot_cell(sid):
    s = _correct(sid, "a plotting cell (matplotlib) after conv_forward", 0)
    s.extra = {"convolution": [("conv_backward_solution", CONV_PLOT)]}
    return s


def timing_cell(sid):
    s = _correct(sid, "a timing cell (import time) after conv_backward", 1)
    s.extra = {"convolution": [(None, CONV_TIMING)]}
    return s


def tqdm_cell(sid):
    s = _correct(sid, "from tqdm import tqdm in a benchmark cell of the pooling notebook", 2)
    s.extra = {"pooling": [(None, POOL_TQDM)]}
    return s


def sys_cell(sid):
    s = _correct(sid, "import sys in a cell that prints versions", 0)
    s.extra = {"convolution": [("zero_pad_solution", SYS_CELL)], "pooling": [(None, SYS_CELL)]}
    return s


def copy_in_function(sid):
    s = _correct(sid, "import copy in a cell of its own; conv_backward deep-copies its cache", 1)
    s.sources = {"conv_backward": CONV_BACKWARD_DEEPCOPY}
    s.extra = {"convolution": [("zero_pad_solution", "import copy\n")]}
    return s


def warnings_in_function(sid):
    s = _correct(sid, "import warnings; maxpool_backward silences warnings", 2)
    s.sources = {"maxpool_backward": MAXPOOL_BACKWARD_WARNINGS}
    s.extra = {"pooling": [("maxpool_forward_solution", "import warnings\n")]}
    return s


def cs231n_header(sid):
    s = _correct(sid, "cs231n's 'from builtins import range' header, in a cell and atop a solution", 0)
    s.sources = {"maxpool_backward": CS231N_MAXPOOL_BACKWARD}
    s.extra = {"convolution": [("zero_pad_solution", CS231N_HEADER)]}
    return s


def coursera_header(sid):
    s = _correct(sid, "Coursera's setup cell (numpy, h5py, matplotlib, magics)", 1)
    s.extra = {"convolution": [("zero_pad_solution", COURSERA_HEADER)],
               "pooling": [("maxpool_forward_solution", COURSERA_HEADER)]}
    return s


def extra_cache_entry(sid):
    s = _correct(sid, "conv_forward's cache has an extra entry ({0: 'debug'})", 2)
    s.sources = {"conv_forward": CONV_FORWARD_EXTRA_CACHE, "conv_backward": CONV_BACKWARD_SLICED_CACHE}
    return s


def print_in_loop(sid):
    s = _correct(sid, "prints an array in the innermost loop of loop backward passes", 0)
    s.sources = {"conv_backward": CONV_BACKWARD_PRINTS, "maxpool_backward": MAXPOOL_BACKWARD_PRINTS}
    return s


def astype_copy(sid):
    s = _correct(sid, "x = x.astype(np.float64) at the top of conv_forward", 1)
    s.sources = {"conv_forward": CONV_FORWARD_ASTYPE}
    return s


def helpers_below(sid):
    """Helpers defined in cells below the functions that use them (run out of order)."""
    s = B.with_helper_cells(sid, 2)
    s.kind, s.note = "honest", "helper cells below the functions that use them"
    s.extra = {"convolution": [(None, B.HELPER_CELL)], "pooling": [(None, B.POOL_HELPER_CELL)]}
    return s


def typed_and_timed(sid):
    """Annotations from typing, __future__, a timer inside, the work in a helper above."""
    s = _correct(sid, "typing, __future__ and time inside conv_forward; the work in a helper", 0)
    s.sources = {"conv_forward": CONV_FORWARD_TYPED}
    s.extra = {"convolution": [("zero_pad_solution", "import time\nfrom typing import Tuple\n"),
                               ("conv_forward_solution", CONV_FORWARD_IMPL)]}
    return s


def torch_comparison(sid):
    s = _correct(sid, "a cell that compares conv_forward with PyTorch (not graded code)", 1)
    s.extra = {"convolution": [(None, TORCH_COMPARE)]}
    return s


def broken_scratch(sid):
    s = _correct(sid, "a scratch cell that raises, and a %timeit line", 2)
    s.extra = {"convolution": [("conv_backward_solution", BROKEN_SCRATCH)],
               "pooling": [(None, "%timeit maxpool_forward(np.random.randn(2, 3, 8, 8))\n")]}
    return s


def draft_above(sid):
    s = _correct(sid, "a wrong first draft of maxpool_forward left above the final one", 0)
    s.extra = {"pooling": [("maxpool_forward_solution", POOL_DRAFT)]}
    return s


def constant_below(sid):
    s = _correct(sid, "maxpool_backward reads a constant defined in a later cell", 1)
    s.sources = {"maxpool_backward": MAXPOOL_BACKWARD_USES_CONSTANT}
    s.extra = {"pooling": [(None, POOL_CONSTANT_LATER)]}
    return s


def everything_at_once(sid):
    """Every habit above in one pair of notebooks."""
    s = _correct(sid, "plots, timing, tqdm, sys, torch comparison, headers, prints, extra cache entry", 2)
    s.sources = {"conv_forward": CONV_FORWARD_EXTRA_CACHE, "conv_backward": CONV_BACKWARD_PRINTS,
                 "maxpool_backward": CS231N_MAXPOOL_BACKWARD}
    s.extra = {"convolution": [("zero_pad_solution", COURSERA_HEADER), ("conv_backward_solution", CONV_PLOT),
                               (None, CONV_TIMING), (None, TORCH_COMPARE), (None, SYS_CELL)],
               "pooling": [("maxpool_forward_solution", CS231N_HEADER), (None, POOL_TQDM)]}
    # the printing loop conv_backward unpacks the cache it is given (the reference's)
    return s


CASES = {
    "plot_cell": plot_cell,
    "timing_cell": timing_cell,
    "tqdm_cell": tqdm_cell,
    "sys_cell": sys_cell,
    "copy_in_function": copy_in_function,
    "warnings_in_function": warnings_in_function,
    "cs231n_header": cs231n_header,
    "coursera_header": coursera_header,
    "extra_cache_entry": extra_cache_entry,
    "print_in_loop": print_in_loop,
    "astype_copy": astype_copy,
    "helpers_below": helpers_below,
    "typed_and_timed": typed_and_timed,
    "torch_comparison": torch_comparison,
    "broken_scratch": broken_scratch,
    "draft_above": draft_above,
    "constant_below": constant_below,
    "everything_at_once": everything_at_once,
}


def honest_class(prefix: str = "h") -> list:
    """Every honest case above, every correct style of every function, and helper cells."""
    students = [make(f"{prefix}{k:02d}_{name}") for k, (name, make) in enumerate(CASES.items(), 1)]
    k = len(students)
    for style in ("loops", "vectorized", "im2col"):
        k += 1
        students.append(B.all_correct(f"{prefix}{k:02d}_all_{style}", style, kind="honest"))
    for f, styles in V.CORRECT.items():
        for name in styles:
            if name in ("loops", "im2col"):
                continue
            k += 1
            variants = {g: "vectorized" for g in V.FUNCTIONS}
            variants[f] = name
            students.append(B.all_correct(f"{prefix}{k:02d}_{f}_{name}", variants, kind="honest"))
    k += 1
    students.append(B.with_helper_cells(f"{prefix}{k:02d}_helpers_above", 0))
    return students



def float32_student(sid="f32_intermediate"):
    """conv_backward computes dw with a float32 intermediate (outside the float64 contract)."""
    src = _src("conv_backward", "loops").replace(
        "                    dw[f] += dout[n, f, i, j] * xp[n, :, rows, cols]\n",
        "                    dw[f] += np.float32(dout[n, f, i, j]) * xp[n, :, rows, cols].astype(np.float32)\n")
    assert src != _src("conv_backward", "loops")
    s = B.all_correct(sid, "vectorized", kind="float32", note="float32 intermediate in dw")
    s.sources = {"conv_backward": src}
    return s
