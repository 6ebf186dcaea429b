"""Helpers shared by the pages of the book: rotating filters, drawing arrays as tables of
numbers, animations that work offline, the numerical gradient check, the output-size rule,
`load_layers`, which hands a page the graded layers, and `batch_threads`, which runs a
layer on every core.

This module needs only NumPy and matplotlib (and IPython, which every Jupyter kernel has,
for showing an animation; threadpoolctl, where it is installed, for `batch_threads`), so a
reader who downloads a page as a notebook can download this file next to it and run the
page. It holds no layer of the exercises: the graded
functions (zero_pad, conv_forward, conv_backward, maxpool_forward, maxpool_backward of
cnn_layers; relu_forward, relu_backward, affine_forward, affine_backward, avgpool_forward,
avgpool_backward, softmax_loss of cnn_network) are yours to write. Put them in a file
my_layers.py next to the page, and `load_layers` gives
the page your functions.
"""
import importlib
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

__all__ = ["rot180", "dilate", "show_grid", "outline_windows", "animation_html",
           "FONT", "SMALL", "numerical_gradient", "rel_error", "output_size", "load_layers",
           "layers_used", "YOURS", "REFERENCE", "batch_threads"]

# Text sizes for figures drawn at about 8 inches wide and shown in a ~700 px column:
# numbers in cells and titles stay readable at page scale.
FONT = 13
SMALL = 11


def rot180(w):
    """w rotated by 180 degrees in its last two axes (rows and columns reversed).

    Works for a 2D filter (HH, WW) and for a stack of filters (F, C, HH, WW) alike, where
    every filter is rotated on its own and the channel order is kept. Returns a view.
    """
    w = np.asarray(w)
    if w.ndim < 2:
        raise ValueError(f"rot180 needs at least 2 dimensions (rows, columns); got shape {w.shape}")
    return w[..., ::-1, ::-1]


def dilate(a, s):
    """Insert s - 1 zeros between neighbouring entries of the last two axes of a.

    (..., H, W) -> (..., s*(H-1)+1, s*(W-1)+1); s = 1 returns a copy of a.
    """
    a = np.asarray(a)
    if int(s) != s or s < 1:
        raise ValueError(f"dilate: s must be a positive integer, got {s!r}")
    s = int(s)
    H, W = a.shape[-2:]
    out = np.zeros(a.shape[:-2] + (s * (H - 1) + 1, s * (W - 1) + 1), dtype=a.dtype)
    out[..., ::s, ::s] = a
    return out


def show_grid(ax, a, title="", fmt="{:g}", *, box=None, color="tab:orange", shade=None,
              mark=None, mark_color=(1.0, 0.75, 0.45), fontsize=FONT, fade_zeros=False,
              ticks=True):
    """Draw the 2D array a as a table of numbers on the axes ax.

    a       numbers, or strings (drawn as given, e.g. LaTeX labels "$x_{00}$");
            NaN and "" are left blank
    box     (row, col, height, width): frame and tint that window in `color`
    shade   boolean mask of cells drawn in light grey (e.g. padding)
    mark    boolean mask of cells filled with `mark_color` (e.g. the maxima of a pooling)
    fade_zeros  draw exact zeros small and grey, so the non-zero entries stand out
    """
    a = np.asarray(a, dtype=object)
    if a.ndim != 2:
        raise ValueError(f"show_grid draws 2D arrays; got shape {a.shape}")
    H, W = a.shape
    colours = np.ones((H, W, 3))
    if shade is not None:
        colours[np.asarray(shade, dtype=bool)] = 0.85
    if mark is not None:
        colours[np.asarray(mark, dtype=bool)] = mark_color
    ax.imshow(colours)
    for i in range(H):
        for j in range(W):
            v = a[i, j]
            if isinstance(v, str):
                text, faint = v, False
            else:
                v = float(v)
                if np.isnan(v):
                    continue
                text, faint = fmt.format(v), fade_zeros and v == 0
            ax.text(j, i, text, ha="center", va="center",
                    fontsize=fontsize - 2 if faint else fontsize,
                    color="0.65" if faint else "k")
    ax.set_xticks(np.arange(-0.5, W), minor=True)
    ax.set_yticks(np.arange(-0.5, H), minor=True)
    ax.grid(which="minor", color="0.35", lw=0.8)
    if ticks:
        ax.set_xticks(range(W))
        ax.set_yticks(range(H))
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(which="both", length=0, labelsize=SMALL)
    ax.set_title(title, fontsize=fontsize)
    if box is not None:
        r, c, h, w = box
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fc=color, alpha=0.25, ec="none"))
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, ec=color, lw=2.5))


def outline_windows(ax, Ho, Wo, k, s, **kw):
    """Draw the border of every k x k window taken with stride s (Ho x Wo windows)."""
    for i in range(Ho):
        for j in range(Wo):
            ax.add_patch(plt.Rectangle((j * s - 0.5, i * s - 0.5), k, k, fill=False, **kw))


_CDN_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>", re.IGNORECASE)
_FRAME_IMG = re.compile(r"<img(?=[^>]*\bid=[\"']_anim_img)", re.IGNORECASE)


def animation_html(anim, alt="", **kwargs):
    """A matplotlib animation as self-contained HTML for the page.

    matplotlib's player links Font Awesome from a CDN for its button icons; the book
    is served offline and its theme already draws those icons, so the link is dropped.
    alt describes the animation to a reader who cannot see it: it becomes the alt text
    of the player's frame. kwargs go to ``anim.to_jshtml`` (e.g. ``default_mode="once"``).
    """
    from html import escape

    from IPython.display import HTML

    page = _CDN_LINK.sub("", anim.to_jshtml(**kwargs))
    attributes = f' alt="{escape(alt, quote=True)}"' if alt else ""
    # the size of its smallest text (see FONT_PX_KEY); _fig: the figure it draws on
    attributes += f' data-font-px="{_font_px_text(anim._fig)}"'
    page = _FRAME_IMG.sub("<img" + attributes, page, count=1)
    return HTML(page)


# ----------------------------------------------------------------------------- text size
# How large a figure's text is matters on a phone, where an image is scaled down to the
# column: each figure records the size of its smallest text, in pixels of its own image,
# so that the book's browser test can check what that text becomes on a small screen.
# A figure shown in Jupyter is a PNG; the size goes into the PNG as a text entry under
# FONT_PX_KEY. An animation's frames carry it as the data-font-px attribute of the
# player's image (animation_html). Nothing else changes in what the reader sees.
FONT_PX_KEY = "convbook:smallest-font-px"


def _drawn_texts(artist):
    """The Text artists of `artist` that a drawing shows: visible, non-empty, and not
    under an invisible parent or an axes drawn without its axis."""
    from matplotlib.axes import Axes
    from matplotlib.text import Text

    if not artist.get_visible():
        return
    if isinstance(artist, Text):
        if artist.get_text().strip():
            yield artist
        return
    children = artist.get_children()
    if isinstance(artist, Axes) and not artist.axison:
        hidden = {artist.xaxis, artist.yaxis, *artist.spines.values()}
        children = [c for c in children if c not in hidden]
    for child in children:
        yield from _drawn_texts(child)


def smallest_font_px(fig):
    """The size of the smallest text that fig draws, in pixels of an image saved at the
    figure's dpi (None when it draws no text). The figure is drawn first, so that tick
    labels hold the text they will show; without its draw event, so that an animation
    drawn on it does not start again."""
    with fig.canvas.callbacks.blocked(signal="draw_event"):
        fig.draw_without_rendering()
    sizes = [t.get_fontsize() for t in _drawn_texts(fig)]
    return min(sizes) * fig.dpi / 72 if sizes else None


def _font_px_text(fig):
    """smallest_font_px(fig) as it is recorded: "12.500", or "none" for no text."""
    px = smallest_font_px(fig)
    return "none" if px is None else f"{px:.3f}"


def _png_with_font_size(fig):
    """The PNG of fig that Jupyter shows (IPython's own, tight bounding box), with the
    size of its smallest text recorded under FONT_PX_KEY."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight",
                        metadata={FONT_PX_KEY: _font_px_text(fig)})


def _record_font_sizes():
    """In a Jupyter kernel, show figures as PNGs that record their smallest text size."""
    import matplotlib
    from matplotlib.figure import Figure

    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    # Jupyter's inline backend registers its own PNG formatter when it is loaded, which
    # is at the first figure: load it now, so that this formatter comes after it.
    backend = matplotlib.get_backend()
    if "inline" in backend:
        plt.switch_backend(backend)
    shell.display_formatter.formatters["image/png"].for_type(Figure, _png_with_font_size)


_record_font_sizes()


# ----------------------------------------------------------------------------- checking
# The gradient check of the course, the same code as the helper cell of the exercise
# notebooks (and as the course's own package): a reader checks a layer with it.


def numerical_gradient(f, x, dout=None, h=1e-5):
    """Central-difference gradient of sum(f(x) * dout) with respect to x.

    f maps the array x (any shape) to an array or a scalar; dout has the shape
    of f(x) (ones when omitted).  x is perturbed in place and restored, so pass
    an array you own.  Returns an array shaped like x.
    """
    x = np.asarray(x)
    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = np.asarray(f(x), dtype=np.float64)
        x[i] = old - h
        fm = np.asarray(f(x), dtype=np.float64)
        x[i] = old
        weight = 1.0 if dout is None else dout
        grad[i] = np.sum((fp - fm) * weight) / (2 * h)
    return grad


def rel_error(a, b):
    """max |a - b| scaled by the larger of max|a|, max|b| (0 when both are zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


# The output-size rule of the exercise contract, the same code as the course's package
# (tests hold the two equal): a reader needs it without that package.
def output_size(size, k, stride=1, pad=0):
    """Number of windows of width k that fit in size + 2*pad with the given stride."""
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    if size + 2 * pad < k:
        raise ValueError(f"a window of {k} does not fit in {size} + 2*{pad}")
    return (size + 2 * pad - k) // stride + 1


# ----------------------------------------------------------------------------- your layers
# The pages call the graded layers through load_layers: yours, from my_layers.py next to
# the page, when you run a page; the course's reference layers when the book is built.

YOURS = "yours, from my_layers.py"
REFERENCE = "the course's reference layers"
_used = None


def load_layers(*names, missing_ok=False):
    """The functions `names` (e.g. "conv_forward", "conv_backward") for a page to call.

    Taken from my_layers.py next to the page (the folder the notebook runs in) when there
    is one; else from the course's reference layers, which only the book's build has.
    my_layers.py is read again at every call, so a page picks up your edits when you run
    its cells again, without restarting the kernel.
    All come from the same place: a my_layers.py that lacks one of them is an error, not
    a silent mix, unless missing_ok=True, which gives None for each function it lacks.
    Returns the function for one name, a tuple in the order asked for more.
    `layers_used()` says afterwards which place they came from.
    """
    global _used
    if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise TypeError(f"load_layers takes function names as strings, e.g. "
                        f"load_layers('conv_forward', 'conv_backward'); got {names!r}")
    wanted = ", ".join(names)
    # forget the copy imported before: the file may have been edited, added or removed
    sys.modules.pop("my_layers", None)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module("my_layers")
        used = YOURS
    except ModuleNotFoundError as missing:
        if missing.name != "my_layers":
            raise                   # my_layers.py exists but imports something missing
        try:
            module = importlib.import_module("autograder.reference")
            used = REFERENCE
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                f"this page runs on your own {wanted} from the exercises: save them in a "
                f"file my_layers.py next to this notebook (with the imports they need, such "
                f"as 'import numpy as np') and run the page again; chapter 8, 'Try it with "
                f"your own layers', shows how", name="my_layers") from None
    lacking = [n for n in names if not callable(getattr(module, n, None))]
    if lacking and not missing_ok:
        raise ImportError(
            f"{module.__file__} defines no function {', '.join(lacking)}; this page needs "
            f"{wanted} from it: add {'it' if len(lacking) == 1 else 'them'} and run the page "
            f"again", name=module.__name__)
    _used = used
    functions = tuple(getattr(module, n) if n not in lacking else None for n in names)
    return functions[0] if len(functions) == 1 else functions


def layers_used():
    """Where the last `load_layers` call took the layers from: "yours, from my_layers.py"
    or "the course's reference layers" (None before any call)."""
    return _used


# ---------------------------------------------------------------------- on every core

def batch_threads(forward, backward, workers=None):
    """The layer (forward, backward) on every core, the batch in shares.

    Image n of a batch meets no other image: out[n] and dx[n] come from
    image n alone, and dw and db are sums over the images, so the shares'
    dw and db add up to the batch's. Each share runs in a thread of its
    own, `workers` of them (default: one per core this process may use).
    NumPy lets go of Python's lock inside its copies and matrix products,
    so the threads run at the same time; a layer of Python loops holds the
    lock and gains nothing. While the shares run, NumPy's BLAS gets one
    thread: the shares are the parallelism. (threadpoolctl sets that
    limit; without threadpoolctl, BLAS is left as it is.)

    Returns (forward, backward) with the signatures of the layer it wraps;
    the cache holds x's shape, the shares and the wrapped layer's caches.
    Both functions carry the number of threads as `.workers`.
    """
    try:
        from threadpoolctl import ThreadpoolController
        blas = ThreadpoolController().select(user_api="blas")
    except ImportError:
        blas = None
    if workers is None and hasattr(os, "sched_getaffinity"):
        workers = len(os.sched_getaffinity(0))   # the cores it may use
    workers = workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)

    def on_threads(job, shares):
        with blas.limit(limits=1) if blas else nullcontext():
            return list(pool.map(job, shares))

    def threaded_forward(x, w, b, stride=1, pad=0):
        N, _, H, W = x.shape
        F, _, HH, WW = w.shape
        out = np.empty((N, F, output_size(H, HH, stride, pad),
                        output_size(W, WW, stride, pad)))
        cuts = np.linspace(0, N, min(workers, N) + 1).round().astype(int)

        def share(n):                      # n: a slice of the batch
            out[n], cache = forward(x[n], w, b, stride=stride, pad=pad)
            return n, cache
        shares = on_threads(share, map(slice, cuts[:-1], cuts[1:]))
        return out, (x.shape, shares)

    def threaded_backward(dout, cache):
        x_shape, shares = cache
        dx = np.empty(x_shape)

        def share(n_cache):
            n, cache = n_cache
            dx[n], dw, db = backward(dout[n], cache)
            return dw, db
        grads = on_threads(share, shares)
        return dx, sum(g[0] for g in grads), sum(g[1] for g in grads)
    threaded_forward.workers = threaded_backward.workers = workers
    return threaded_forward, threaded_backward
