"""Chapter 8 invites readers to run the page on their own layers. They have the page, the
book's public helpers (book/convbook.py), NumPy, matplotlib and scikit-learn, and the four
functions they wrote in the exercises, but not the instructor's package. These tests hold
the page to that: its imports, and a run of the page on a learner's layers."""
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
GRADED = ("conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward")
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


def test_chapter_8_imports_only_what_a_reader_has():
    found = page_imports(PAGE.read_text(encoding="utf-8"))
    outside = {m for m, fallback in found if not fallback} - READER_HAS
    assert not outside, f"chapter 8 needs {sorted(outside)}, which a reader does not have"
    assert ("my_layers", False) in found, "chapter 8 does not take the reader's layers"


def test_import_scan_can_fail():
    page = ("```{code-cell} ipython3\nimport numpy as np\n"
            "from autograder.gradcheck import rel_error\n```\n")
    assert ("autograder", False) in page_imports(page)
    page = ("```{code-cell} ipython3\ntry:\n    from my_layers import conv_forward\n"
            "except ModuleNotFoundError:\n    from autograder.reference import conv_forward\n```\n")
    assert set(page_imports(page)) == {("my_layers", False), ("autograder", True)}


def _learner_layers():
    """The four graded functions and zero_pad, which they use, as a learner writes them (the
    source notebooks' solutions)."""
    parts = ["import numpy as np\n"]
    for name in ("convolution", "pooling"):
        nb = json.loads((SOLUTIONS / f"{name}.ipynb").read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if cell["cell_type"] == "code" and re.match(r"def (zero_pad|%s)\(" % "|".join(GRADED), src):
                parts.append(re.sub(r"^\s*### (BEGIN|END) SOLUTION\s*$", "", src, flags=re.M))
    assert len(parts) == 6, "the source notebooks no longer define zero_pad and the four graded functions"
    return "\n\n".join(parts)


@pytest.mark.slow
def test_chapter_8_runs_on_a_learners_layers(tmp_path):
    """Download the page and convbook.py, add my_layers.py, run: every cell, every assert."""
    import jupytext
    from nbclient import NotebookClient

    shutil.copy(PAGE, tmp_path / PAGE.name)
    shutil.copy(BOOK / "convbook.py", tmp_path / "convbook.py")
    (tmp_path / "my_layers.py").write_text(_learner_layers(), encoding="utf-8")
    nb = jupytext.read(tmp_path / PAGE.name)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    first = next(c for c in nb.cells if c.cell_type == "code" and "my_layers" in c.source)
    said = "".join(o.get("text", "") for o in first.outputs)
    assert "yours, from my_layers.py" in said, said
