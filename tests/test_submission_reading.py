"""Reading a submitted notebook: what it costs and what it grades.

* Outputs, attachments and markdown text are skipped undecoded: a large figure is graded, a
  flood of markdown cells is refused after the first 10,000 cells, fast and small; the
  limits on the file, on what is left besides outputs, on code cells and on JSON nesting
  each give a reason.
* The graded function is the definition its name binds in the end: a draft replaced before
  anything graded uses it is not run and its imports cost nothing; a draft that graded code
  used before it was replaced, or a redefinition that may not happen, still counts.
* A complex result whose imaginary parts are exactly zero is graded as its real part.
"""
import json
import os
import time
import tracemalloc

import nbformat
import numpy as np
import pytest

from autograder import checks
from autograder.assignments import cnn_layers
from autograder import submission as S
from autograder.submission import Submission, _analyse, _select, read_submission

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = {nb: os.path.join(ROOT, "solutions", "cnn_layers", nb + ".ipynb") for nb in cnn_layers.NOTEBOOKS}


def _release(nb="pooling"):
    return json.loads(open(os.path.join(ROOT, "exercises", "cnn_layers", nb + ".ipynb"), encoding="utf-8").read())


def _write(tmp_path, nb, name="p.ipynb"):
    path = tmp_path / name
    path.write_text(nb if isinstance(nb, str) else json.dumps(nb), encoding="utf-8")
    return str(path)


def _code(source, outputs=()):
    return {"cell_type": "code", "execution_count": 1, "id": f"c{abs(hash(source)) % 10**8}", "metadata": {},
            "outputs": list(outputs), "source": source}


def _figure(nbytes):
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": "iVBOR" + "A" * nbytes + "\n", "text/plain": ["<Figure>"]}}


# --------------------------------------------------------------------------- reading


def test_a_large_figure_is_skipped_and_the_notebook_graded(tmp_path):
    nb = _release()
    nb["cells"].append(_code("import matplotlib.pyplot as plt\nplt.plot([1])", [_figure(60 << 20)]))
    sub = read_submission(_write(tmp_path, nb), SOURCE["pooling"], "pooling")
    assert sub.gradable, sub.reason
    assert sub.ungradable == {}
    assert any("def maxpool_forward(" in c for c in sub.cells)


def test_the_file_itself_is_bounded(tmp_path, monkeypatch):
    nb = _release()
    nb["cells"].append(_code("x = 1", [_figure(1 << 20)]))
    monkeypatch.setattr(S, "MAX_FILE_BYTES", 1 << 20)
    sub = read_submission(_write(tmp_path, nb), SOURCE["pooling"], "pooling")
    assert not sub.gradable and "too large" in sub.reason and "Clear Outputs" in sub.reason, sub.reason


def test_what_is_left_besides_outputs_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "MAX_NOTEBOOK_BYTES", 1 << 20)
    nb = _release()
    nb["cells"][0]["metadata"]["blob"] = "x" * (2 << 20)
    sub = read_submission(_write(tmp_path, nb), SOURCE["pooling"], "pooling")
    assert not sub.gradable and "besides its outputs" in sub.reason, sub.reason


def test_a_markdown_flood_is_refused_fast_and_small(tmp_path):
    nb = _release()
    nb["cells"][2:2] = [{"cell_type": "markdown", "id": f"m{k}", "metadata": {}, "source": [f"note {k}\n"]}
                        for k in range(500_000)]
    path = _write(tmp_path, nb)
    assert os.path.getsize(path) > 40 << 20
    tracemalloc.start()
    start = time.process_time()
    try:
        sub = read_submission(path, SOURCE["pooling"], "pooling")
        cpu = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not sub.gradable and "more than 10000 cells" in sub.reason, sub.reason
    # before: the whole file was parsed and validated by nbformat (21.6 s, 1226 MiB)
    assert cpu < 5, cpu
    assert peak < 32 << 20, peak


def test_a_notebook_of_notes_is_graded(tmp_path):
    nb = _release()
    nb["cells"][2:2] = [{"cell_type": "markdown", "id": f"m{k}", "metadata": {}, "source": ["# notes\n" * 20]}
                        for k in range(3_000)]
    sub = read_submission(_write(tmp_path, nb), SOURCE["pooling"], "pooling")
    assert sub.gradable and sub.ungradable == {}
    solution = next(k for k, c in enumerate(nb["cells"]) if "def maxpool_forward(" in "".join(c["source"]))
    assert f"cell {solution + 1} of the notebook (`def maxpool_forward(" in sub.labels[1]   # notes are counted


def test_code_cells_are_counted_while_reading(tmp_path):
    nb = _release()
    nb["cells"] += [_code(f"v{k} = {k}") for k in range(S.MAX_CODE_CELLS + 1)]
    sub = read_submission(_write(tmp_path, nb), SOURCE["pooling"], "pooling")
    assert not sub.gradable and f"more than {S.MAX_CODE_CELLS} code cells" in sub.reason, sub.reason


def test_deeply_nested_outputs_are_bounded(tmp_path):
    depth = S.MAX_JSON_STEPS
    nb = _release()
    nb["cells"].append(_code("x = 1", [{"output_type": "display_data", "metadata": {},
                                         "data": {"application/json": "NESTED"}}]))
    text = json.dumps(nb).replace('"NESTED"', "[" * depth + "]" * depth)
    sub = read_submission(_write(tmp_path, text), SOURCE["pooling"], "pooling")
    assert not sub.gradable and "lists, objects and keys" in sub.reason, sub.reason


def test_broken_json_in_outputs_is_still_broken(tmp_path):
    text = json.dumps(_release())
    cut = text[:text.rindex('"source"')] + '"outputs": [{"data": "unterminated'
    sub = read_submission(_write(tmp_path, cut), SOURCE["pooling"], "pooling")
    assert not sub.gradable and "not valid notebook JSON" in sub.reason, sub.reason


@pytest.mark.parametrize("bad", [rb'"cell_type": "co\xde"', rb'"\x": 1', b'"cell_type": "\xff"'])
def test_a_key_or_cell_type_that_is_not_json_is_broken_json(tmp_path, bad):
    """An invalid escape or byte where the reader decodes (a key, a cell type): not a crash."""
    text = json.dumps(_release()).encode().replace(b'"cell_type": "code"', bad, 1)
    path = tmp_path / "p.ipynb"
    path.write_bytes(text)
    sub = read_submission(str(path), SOURCE["pooling"], "pooling")
    assert not sub.gradable and "not valid notebook JSON" in sub.reason, sub.reason


def test_markdown_text_is_kept_only_when_asked():
    path = os.path.join(ROOT, "exercises", "cnn_layers", "pooling.ipynb")
    full = nbformat.read(path, as_version=4)
    graded, raw = S.read_notebook(path)
    shown, _ = S.read_notebook(path, keep_text=True)
    assert len(graded.cells) == len(shown.cells) == len(full.cells) == len(raw)
    for a, b, c in zip(graded.cells, shown.cells, full.cells):
        assert b.source == c.source and b.cell_type == c.cell_type and b.metadata == c.metadata
        assert a.source == (c.source if c.cell_type == "code" else "")
        if c.cell_type == "code":
            assert a.outputs == b.outputs == []


# --------------------------------------------------------------------------- what is graded

def _select_cells(*cells, functions=("f",)):
    analysed = [_analyse(k + 1, c) for k, c in enumerate(cells)]
    sub = Submission("x", functions=list(functions))
    _select(sub, analysed, list(functions), frozenset({"numpy"}))
    return sub


DRAFT = "import matplotlib.pyplot as plt\n\ndef f(x):\n    plt.plot(x)\n    return 0\n"
FINAL = "def f(x):\n    return x\n"


def test_a_draft_replaced_before_any_use_is_not_run():
    sub = _select_cells(DRAFT, "y = f(3)\nplt.plot(y)\n", FINAL)
    assert sub.ungradable == {}
    assert sub.cells[1:] == [FINAL]
    assert any(n.startswith("f is defined again in cell 3") for n in sub.notes), sub.notes


def test_the_final_version_decides_even_when_it_is_the_bad_one():
    sub = _select_cells(FINAL, DRAFT)
    assert "import matplotlib.pyplot is not allowed" in sub.ungradable["f"]
    assert "cell 2 of the notebook" in sub.ungradable["f"]


def test_a_helper_replaced_before_the_graded_call_is_not_run():
    sub = _select_cells("import matplotlib\n\ndef h(x):\n    return 1\n", "def f(x):\n    return h(x)\n",
                        "def h(x):\n    return 2\n")
    assert sub.ungradable == {} and len(sub.cells) == 3


@pytest.mark.parametrize("cells", [
    # a constant computed by the draft before it was replaced
    ("import matplotlib\n\ndef h():\n    return 1\n", "T = h()\n", "def h():\n    return 2\n",
     "def f(x):\n    return T + h()\n"),
    # a function called between the draft and its replacement reads the draft
    ("def make():\n    return h()\n", "import matplotlib\n\ndef h():\n    return 1\n", "T = make()\n",
     "def h():\n    return 2\n", "def f(x):\n    return T\n"),
    # an alias taken while the draft was the definition
    ("import matplotlib\n\ndef g(x):\n    return 1\n", "f = g\n", "def g(x):\n    return 2\n"),
    # a redefinition that may not happen (if, try) or that does not parse replaces nothing
    (DRAFT, "if RUN:\n    def f(x):\n        return x\n"),
    (DRAFT, "try:\n    def f(x):\n        return x\nexcept Exception:\n    pass\n"),
    (DRAFT, "def f(x:\n    return x\n"),
])
def test_a_draft_that_is_used_or_not_surely_replaced_still_counts(cells):
    sub = _select_cells(*cells)
    assert "import matplotlib" in sub.ungradable.get("f", ""), (sub.ungradable, sub.cells)


def test_a_tangle_past_the_step_limit_counts_every_definition(monkeypatch):
    monkeypatch.setattr(S, "MAX_CLOSURE_STEPS", 1)
    sub = _select_cells(DRAFT, FINAL)
    assert "import matplotlib" in sub.ungradable["f"]


def test_many_conditional_definitions_take_bounded_time():
    cells = ["def f(x):\n    return x\n"] + ["if x:\n    f = f\n"] * 350
    start = time.process_time()
    sub = _select_cells(*cells)
    assert time.process_time() - start < 10
    assert sub.ungradable == {}


# --------------------------------------------------------------------------- complex results

def test_a_complex_result_with_zero_imaginary_parts_is_its_real_part():
    value = np.arange(6.0).reshape(2, 3)
    got = checks._array(value.astype(np.complex128), "out", (2, 3), "case 1")
    assert got.dtype == np.float64 and np.array_equal(got, value)


@pytest.mark.parametrize("imag", [1e-300, 1.0, np.nan])
def test_a_nonzero_imaginary_part_fails_with_a_hint(imag):
    value = np.zeros((2, 3), dtype=np.complex128)
    value[1, 2] += 1j * imag
    with pytest.raises(checks.CaseFailure) as exc:
        checks._array(value, "out", (2, 3), "case 1")
    assert "nonzero imaginary part" in str(exc.value.lines), exc.value.lines
