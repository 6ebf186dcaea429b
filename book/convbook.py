"""Helpers shared by the pages of the book: rotating filters, drawing arrays as tables of
numbers, animations that work offline.

This module needs only NumPy and matplotlib (and IPython, which every Jupyter kernel has,
for showing an animation), so a reader who downloads a page as a notebook can download
this file next to it and run the page. It holds no layer of the exercises: the graded
functions are yours to write.
"""
import re

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

__all__ = ["rot180", "dilate", "show_grid", "outline_windows", "animation_html",
           "FONT", "SMALL"]

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


def animation_html(anim, **kwargs):
    """A matplotlib animation as self-contained HTML for the page.

    matplotlib's player links Font Awesome from a CDN for its button icons; the book
    is served offline and its theme already draws those icons, so the link is dropped.
    kwargs go to ``anim.to_jshtml`` (e.g. ``default_mode="once"``).
    """
    from IPython.display import HTML

    return HTML(_CDN_LINK.sub("", anim.to_jshtml(**kwargs)))
