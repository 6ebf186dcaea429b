"""Readers run the book's pages on their own layers (chapter 8 says how). They have the
page, the book's public helpers (book/convbook.py), NumPy, matplotlib and scikit-learn, and
the functions they wrote in the exercises, but not the instructor's package. These tests
hold the pages to that: no page imports the instructor's package, every page that calls a
graded layer gets it from convbook.load_layers, and chapter 8 runs on a learner's layers."""
import ast
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGE = BOOK / "08_small_cnn.md"
SOLUTIONS = ROOT / "solutions" / "cnn_layers"
NETWORK_SOLUTION = ROOT / "solutions" / "cnn_network" / "network.ipynb"
GRADED = ("conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward")
# the layers of the cnn_network exercise that the book's pages call
NETWORK = ("relu_forward", "relu_backward", "affine_forward", "affine_backward", "avgpool_forward",
           "avgpool_backward", "softmax_loss", "cnn_loss")
# What the pages may only get through load_layers: the graded functions (zero_pad too) and
# the loop versions of the convolution, which compute the same answers.
YOURS = GRADED + NETWORK + ("zero_pad", "conv_forward_loops", "conv_backward_loops", "cnn_loss",
                            "sgd_momentum")
PAGES = sorted(BOOK.glob("*.md"))
READER_HAS = {"numpy", "matplotlib", "sklearn", "scipy", "IPython", "time", "convbook",
              "my_layers"}   # scipy comes with scikit-learn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_book_leaks import code_cells  # noqa: E402


def _imports(tree, inside_fallback=False):
    """(module, inside the fallback of a failed ``import my_layers``) for every import."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Try):
            tries_mine = any(isinstance(n, ast.ImportFrom) and n.module == "my_layers"
                             for n in node.body)
            yield from _imports(ast.Module(body=node.body, type_ignores=[]), inside_fallback)
            for handler in node.handlers:
                yield from _imports(handler, inside_fallback or tries_mine)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], inside_fallback
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "").split(".")[0], inside_fallback
        else:
            yield from _imports(node, inside_fallback)


def page_imports(markdown):
    found = []
    for cell in code_cells(markdown):
        found += list(_imports(ast.parse(cell)))
    return found


def loaded_and_used(markdown):
    """(names bound from a load_layers(...) call, names bound otherwise, names read) over
    the code cells of a page."""
    loaded, bound, used = set(), set(), set()
    for cell in code_cells(markdown):
        tree = ast.parse(cell)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                targets = {t.id for tgt in node.targets for t in ast.walk(tgt)
                           if isinstance(t, ast.Name)}
                call = node.value
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                        and call.func.id == "load_layers"):
                    loaded |= targets
                else:
                    bound |= targets
            elif isinstance(node, (ast.FunctionDef, ast.ImportFrom, ast.Import)):
                bound |= ({node.name} if isinstance(node, ast.FunctionDef)
                          else {a.asname or a.name for a in node.names})
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
    return loaded, bound, used


def test_chapter_8_imports_only_what_a_reader_has():
    found = page_imports(PAGE.read_text(encoding="utf-8"))
    outside = {m for m, fallback in found if not fallback} - READER_HAS
    assert not outside, f"chapter 8 needs {sorted(outside)}, which a reader does not have"
    loaded, _, _ = loaded_and_used(PAGE.read_text(encoding="utf-8"))
    needed = set(GRADED) | {"relu_forward", "relu_backward", "affine_forward", "affine_backward", "softmax_loss",
                            "cnn_loss"}
    assert needed <= loaded, f"chapter 8 does not take {sorted(needed - loaded)} from load_layers"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_imports_the_instructors_package(page):
    """Every code cell counts, hidden or not: a reader who downloads the page gets them all.
    The one fallback to the course's layers lives in convbook.load_layers."""
    found = page_imports(page.read_text(encoding="utf-8"))
    assert not [m for m, _ in found if m == "autograder"], \
        f"{page.name} imports from autograder; take the layers with convbook.load_layers"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_take_the_graded_layers_from_load_layers(page):
    loaded, bound, used = loaded_and_used(page.read_text(encoding="utf-8"))
    needed = (used & set(YOURS)) - loaded
    assert not needed, f"{page.name} calls {sorted(needed)} without load_layers"
    assert not (bound & set(YOURS)), \
        f"{page.name} defines or imports {sorted(bound & set(YOURS))} itself"


def test_page_scans_can_fail():
    page = ("```{code-cell} ipython3\nfrom convbook import load_layers\n"
            "conv_forward = load_layers('conv_forward')\n"
            "def zero_pad(x, p):\n    return x\n"
            "out = conv_backward(conv_forward(1, 2, 3), zero_pad(1, 2))\n```\n")
    loaded, bound, used = loaded_and_used(page)
    assert loaded == {"conv_forward"} and "zero_pad" in bound
    assert (used & set(YOURS)) - loaded == {"conv_backward", "zero_pad"}


def test_import_scan_can_fail():
    page = ("```{code-cell} ipython3\nimport numpy as np\n"
            "from autograder.gradcheck import rel_error\n```\n")
    assert ("autograder", False) in page_imports(page)
    page = ("```{code-cell} ipython3\ntry:\n    from my_layers import conv_forward\n"
            "except ModuleNotFoundError:\n    from autograder.reference import conv_forward\n```\n")
    assert set(page_imports(page)) == {("my_layers", False), ("autograder", True)}


def _learner_layers():
    """The graded layers of both exercises and zero_pad, which they use, as a learner writes
    them (the source notebooks' solutions)."""
    parts = ["import numpy as np\n"]
    paths = [SOLUTIONS / f"{name}.ipynb" for name in ("convolution", "pooling")] + [NETWORK_SOLUTION]
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            solution = cell.get("metadata", {}).get("nbgrader", {}).get("solution")
            if (cell["cell_type"] == "code" and solution
                    and re.match(r"def (zero_pad|%s)\(" % "|".join(GRADED + NETWORK), src)):
                parts.append(re.sub(r"^\s*### (BEGIN|END) SOLUTION\s*$", "", src, flags=re.M))
    assert len(parts) == 1 + 5 + len(NETWORK), \
        "the source notebooks no longer define zero_pad and the graded layers"
    return "\n\n".join(parts)


def _run_as_reader(page, folder, layers=None):
    """Run a downloaded page the way a reader does: the page, convbook.py and a my_layers.py
    with the learner's layers (or the source `layers`) in one folder, and no course package
    (a first cell makes any import of it fail). Returns the executed notebook, with a last
    cell that printed where load_layers took the layers from."""
    import jupytext
    from nbclient import NotebookClient

    shutil.copy(page, folder / page.name)
    shutil.copy(BOOK / "convbook.py", folder / "convbook.py")
    (folder / "my_layers.py").write_text(layers or _learner_layers(), encoding="utf-8")
    nb = jupytext.read(folder / page.name)
    cell = lambda source: jupytext.reads(source, fmt="py:percent").cells[0]  # noqa: E731
    nb.cells.insert(0, cell("import sys\nsys.modules['autograder'] = None   # a reader has no course package\n"))
    nb.cells.append(cell("from convbook import layers_used\nprint(layers_used())\n"))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def _said(cell):
    return "".join(o.get("text", "") for o in cell.outputs)


@pytest.mark.slow
def test_chapter_8_runs_on_a_learners_layers(tmp_path):
    """Download the page and convbook.py, add my_layers.py, run: every cell, every assert."""
    nb = _run_as_reader(PAGE, tmp_path)
    first = next(c for c in nb.cells if c.cell_type == "code" and "load_layers(" in c.source)
    assert "yours, from my_layers.py" in _said(first), _said(first)
    assert "yours, from my_layers.py" in _said(nb.cells[-1]), _said(nb.cells[-1])


@pytest.mark.slow
def test_the_notation_checks_run_on_a_learners_layers(tmp_path):
    """Another page the same way: the notation page's checks, zero_pad included."""
    nb = _run_as_reader(BOOK / "notation.md", tmp_path)
    assert "yours, from my_layers.py" in _said(nb.cells[-1]), _said(nb.cells[-1])


# ----------------------------------------------------------------------------- chapter 9
# Chapter 9 times the reader's layers. It needs PyTorch and threadpoolctl besides what
# chapter 8 needs, and says so; it runs on a my_layers.py with loop layers only, and on one
# with vectorised layers and the loop versions beside them.
CH9 = BOOK / "09_fast.md"
CH9_NEEDS = {"torch", "threadpoolctl", "tracemalloc", "re", "inspect"}


def _conv_layers(style, loops_too=False):
    """A my_layers.py with conv_forward and conv_backward in one of the class generator's
    styles ("loops", "im2col", ...), and optionally the loop versions under the names
    conv_forward_loops and conv_backward_loops."""
    from classgen import variants as V
    parts = ["import numpy as np\n", V.correct_style("conv_forward", style),
             V.correct_style("conv_backward", style)]
    if loops_too:
        parts += [V.correct_style(name, "loops").replace(f"def {name}(", f"def {name}_loops(")
                  for name in ("conv_forward", "conv_backward")]
    return "\n\n".join(parts)


def test_chapter_9_states_what_it_needs():
    text = CH9.read_text(encoding="utf-8")
    outside = {m for m, fallback in page_imports(text) if not fallback} - READER_HAS
    assert outside <= CH9_NEEDS, f"chapter 9 imports {sorted(outside - CH9_NEEDS)}"
    intro = text[:text.index("```{code-cell}")]
    for needed in ("PyTorch", "threadpoolctl", "pip install torch", "conv_forward_loops"):
        assert needed in intro, f"chapter 9 does not say before its first cell: {needed}"


def _said_markdown(cell):
    return "".join(o.get("data", {}).get("text/markdown", "") + o.get("text", "")
                   for o in cell.outputs)


@pytest.mark.slow
def test_chapter_9_runs_on_a_learners_loop_layers(tmp_path):
    """A reader who has only loop layers, named conv_forward and conv_backward (the
    exercises' names), and no conv_forward_loops: every cell runs, and the page says that
    it timed one layer and used one image per shape against PyTorch."""
    import time
    t0 = time.perf_counter()
    nb = _run_as_reader(CH9, tmp_path, _conv_layers("loops"))
    seconds = time.perf_counter() - t0
    said = "\n".join(_said_markdown(c) for c in nb.cells if c.cell_type == "code")
    assert "yours, from my_layers.py" in _said(nb.cells[-1]), _said(nb.cells[-1])
    assert "loop versions: none" in said
    assert "no loop versions, so there is no speed-up to show" in said
    assert "so each shape uses one image and one run of each layer" in said
    assert "there is one share only" in said        # nothing to split on one image
    assert "The forward pass of your layer allocated" in said
    assert seconds < 600, f"chapter 9 took {seconds:.0f} s on loop layers"


@pytest.mark.slow
def test_chapter_9_runs_on_a_learners_vectorised_layers(tmp_path):
    """A reader with vectorised layers and the loop versions beside them: every cell runs,
    the page times the one against the other and the layer against PyTorch on whole
    batches."""
    nb = _run_as_reader(CH9, tmp_path, _conv_layers("im2col", loops_too=True))
    said = "\n".join(_said_markdown(c) for c in nb.cells if c.cell_type == "code")
    assert "yours, from my_layers.py" in _said(nb.cells[-1]), _said(nb.cells[-1])
    assert "loop versions: conv_forward_loops, conv_backward_loops" in said
    assert "On this build the forward speed-up was" in said
    assert "times PyTorch's time in float64" in said
    assert "so each shape uses one image" not in said
    assert "the time of the layer as it is, and it took between" in said
    assert "times PyTorch's time" in said


# ----------------------------------------------------------------------------- downloads
# Every page written as a notebook downloads as an .ipynb that Jupyter opens as it is.

# MyST that Jupyter, which reads markdown cells as plain Markdown, would show as literal
# text: directives, roles, labels, comments, labelled display math, directive options.
# Fenced code is left out (it shows as code). Each kind has a planted case below.
MYST_SYNTAX = {
    "directive": re.compile(r"^[ >]*(`{3,}|:{3,})\s*\{[\w:.-]+\}", re.M),
    "role": re.compile(r"\{[\w:.-]+\}`"),
    "label": re.compile(r"^[ >]*\([\w:./-]+\)=[ \t]*$", re.M),
    "comment": re.compile(r"^[ >]*%", re.M),
    "equation label": re.compile(r"\$\$[ \t]*\([\w:./-]+\)[ \t]*$", re.M),
    "directive option": re.compile(r"^[ >]*:(class|name|label|alt|width|align|figwidth|"
                                   r"dropdown|open|tags):", re.M),
}
_CODE_FENCE = re.compile(r"^[ >]*(`{3,})(?![ \t]*\{)[^\n]*\n.*?^[ >]*\1`*[ \t]*$", re.M | re.S)


def myst_leftovers(markdown):
    """[(kind, excerpt)] of the MyST syntax left in a markdown cell."""
    text = _CODE_FENCE.sub("", markdown)
    return [(kind, text[max(0, m.start() - 20):m.end() + 30].replace("\n", " "))
            for kind, rx in MYST_SYNTAX.items() for m in rx.finditer(text)]


PLANTED_MYST = """(sec-label)=
# A page
% a comment the page does not show
See {doc}`08_small_cnn`, {ref}`Try it <try-it-with-your-own-layers>` and {eq}`ch2-db`.

```{admonition} Answer
:class: dropdown
It is $x$.

$$
a = b
$$ (ch2-inner)
```

```text
a code block keeps {doc}`this` and % that
```
"""


def test_myst_check_finds_planted_syntax_and_conversion_removes_it():
    """The check of the downloads finds each kind of MyST syntax in a planted cell (and
    in the pages as written), and the download's conversion leaves none of it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from ipynb_download import plain_markdown

    found = {kind for kind, _ in myst_leftovers(PLANTED_MYST)}
    assert found == set(MYST_SYNTAX), found
    # the code block is left out: its role is not counted
    assert len([k for k, _ in myst_leftovers(PLANTED_MYST) if k == "role"]) == 3
    converted = plain_markdown(PLANTED_MYST)
    assert myst_leftovers(converted) == [], converted
    assert "> **Answer**" in converted and "a code block keeps {doc}`this`" in converted
    assert "$$\na = b\n$$" in converted.replace("> ", "").replace(">\n", "\n"), converted
    page = (BOOK / "02_backprop_1d.md").read_text(encoding="utf-8")
    assert {"directive", "role", "equation label"} <= {k for k, _ in myst_leftovers(page)}


def test_every_notebook_page_downloads_as_an_ipynb():
    import jupytext
    import nbformat
    from test_browser import SITE, skip_or_fail, toc_docnames
    sys.path.insert(0, str(ROOT / "scripts"))
    from ipynb_download import notebook_source

    if not (SITE / "index.html").is_file():
        skip_or_fail(f"the book is not built ({SITE} has no index.html): run make book")
    pages = [d for d in toc_docnames() if notebook_source(ROOT / f"{d}.md")]
    assert "book/09_fast" in pages and "book/08_small_cnn" in pages, pages
    for doc in pages:
        notebook = SITE / "_sources" / f"{doc}.ipynb"
        assert notebook.is_file(), f"{doc} has no {notebook.relative_to(SITE)} in the site"
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        page = jupytext.read(ROOT / f"{doc}.md")
        assert [c.source for c in nb.cells if c.cell_type == "code"] == \
            [c.source for c in page.cells if c.cell_type == "code"], f"{doc}: cells differ"
        leftovers = [(i, kind, excerpt) for i, cell in enumerate(nb.cells)
                     if cell.cell_type == "markdown"
                     for kind, excerpt in myst_leftovers(cell.source)]
        assert not leftovers, f"{doc}.ipynb shows MyST as text: {leftovers[:5]}"
        html = (SITE / f"{doc}.html").read_text(encoding="utf-8")
        assert f"_sources/{doc}.ipynb" in html, \
            f"{doc}.html does not offer the notebook in its download menu"


def test_notebook_pages_are_recognised():
    sys.path.insert(0, str(ROOT / "scripts"))
    from ipynb_download import notebook_source
    assert notebook_source(BOOK / "09_fast.md")
    assert not notebook_source(ROOT / "README.md")
