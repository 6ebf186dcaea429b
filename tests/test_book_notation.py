"""One notation for the book and the exercises, and no internal label on show.

The Notation page promises that one notation runs through the book, the exercises and the
grader: the padded input is $\\tilde x$, $p$ is the padding, $s$ the stride, $(i, j)$ an
output position and $(u, v)$ a position inside a filter or a pooling window.  The exercise
notebooks must write their formulas that way and link the Notation page and chapter 8's
"Try it with your own layers".

Equation labels such as ``ch5-dw`` are for the book's sources: MyST turns ``{eq}`ch5-dw```
into the equation's number, but the same label written in a code comment, a printed string
or a generated table reaches the reader as raw text.  Only the sources are read; no build
is needed.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = ["convolution.ipynb", "pooling.ipynb"]
FOLDERS = {"source": ROOT / "solutions" / "cnn_layers", "release": ROOT / "exercises" / "cnn_layers"}

LABEL = re.compile(r"\((?:ch\d+|notation)-[A-Za-z0-9-]+\)")
# the places where a label belongs: an equation's label line, a target, and the roles
LABEL_USES = re.compile(r"^\$\$ \([^)]*\)\s*$|^\([^)]*\)=\s*$|\{(?:eq|ref|numref)\}`[^`]*`", re.M)


def _markdown(path):
    nb = nbformat.read(str(path), as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("where", sorted(FOLDERS))
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_exercises_write_the_books_notation(name, where):
    text = _markdown(FOLDERS[where] / name)
    for old in ("x_p", "dx_p", "p^*", "q^*", "i\\,s + p", "j\\,s + q", "\\sum_{p=0}", "0 \\le p, q"):
        assert old not in text, f"{where} {name} still writes {old!r}; the book writes " \
                                "\\tilde x, s\\,i + u, s\\,j + v"
    assert "s\\,i + u, s\\,j + v" in text, f"{where} {name}: no window written as s i + u, s j + v"
    if name == "convolution.ipynb":
        assert "\\tilde x[n, c, s\\,i + u, s\\,j + v]" in text
    notation = "book:notation" if where == "source" else "book/notation.html"
    try_it = ("book:08_small_cnn#try-it-with-your-own-layers" if where == "source"
              else "book/08_small_cnn.html#try-it-with-your-own-layers")
    assert f"]({notation})" in text or f"{notation})" in text, f"{where} {name} does not link the Notation page"
    assert try_it in text, f"{where} {name} does not link 'Try it with your own layers'"


def test_the_notation_page_writes_the_same_window():
    text = (BOOK / "notation.md").read_text(encoding="utf-8")
    assert "\\tilde x[n, c,\\ s\\,i + u,\\ s\\,j + v]" in text
    assert "| $u, v$ | `u, v` |" in text and "| $p$ | `pad` |" in text


def shown_labels(text):
    """The equation labels of a page's source that are not inside a role, target or label line."""
    return LABEL.findall(LABEL_USES.sub("", text))


def test_no_internal_label_reaches_the_reader():
    found = {}
    for page in sorted(BOOK.glob("*.md")):
        labels = shown_labels(page.read_text(encoding="utf-8"))
        if labels:
            found[page.name] = labels
    assert not found, f"labels written where the reader sees them as raw text: {found}"


def test_the_label_scan_can_fail():
    planted = ('$$ (ch5-dw)\n(ch4-bias)=\nsee {eq}`ch5-dw` and {ref}`x <ch4-bias>`\n'
               'print("(ch5-dw) checked")\ndw = 1   # (ch9-dw-mat)\n')
    assert shown_labels(planted) == ["(ch5-dw)", "(ch9-dw-mat)"]


def test_the_intro_covers_every_chapter_and_names_the_pages_that_import_pytorch():
    intro = (BOOK / "intro.md").read_text(encoding="utf-8")
    covers = intro.split("## What the book covers", 1)[1].split("\n## ", 1)[0]
    chapters = sorted(p.stem for p in BOOK.glob("[0-9][0-9]_*.md"))
    missing = [c for c in chapters if f"{{doc}}`{c}`" not in covers]
    assert not missing, f"'What the book covers' does not list {missing}"
    torch_pages = sorted(int(p.name[:2]) for p in BOOK.glob("[0-9][0-9]_*.md")
                         if re.search(r"^\s*(import torch|from torch)", p.read_text(encoding="utf-8"), re.M))
    assert torch_pages == [9, 10], torch_pages
    assert "Only chapters 9 and 10 import PyTorch" in intro
