"""The import allow-list and the static scan of learner cells."""
import textwrap

import pytest

from autograder.policy import ALLOWED_IMPORTS, FORBIDDEN_HINTS, Violation, import_message, scan_imports

HONEST = textwrap.dedent("""
    import numpy as np
    import numpy.lib.stride_tricks
    from numpy.lib.stride_tricks import sliding_window_view
    import math, itertools, functools, operator, collections, typing, numbers, dataclasses, string
    from collections import defaultdict
    from typing import Tuple
    from __future__ import annotations

    def conv_backward(dout, cache):
        x, w, b, stride, pad = cache
        N, C, H, W = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        dxp = np.zeros_like(xp)
        win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
        dw = np.einsum("nchwij,nfhw->fcij", win, dout)
        for i in range(dout.shape[2]):
            for j in range(dout.shape[3]):
                dxp[:, :, i*stride:i*stride + w.shape[2], j*stride:j*stride + w.shape[3]] += \\
                    np.einsum("nf,fcij->ncij", dout[:, :, i, j], w)
        idx = np.arange(3)
        np.add.at(dxp, (0, 0, idx, idx), 0.0)
        return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))
""")


def test_allow_list_is_the_documented_one():
    assert ALLOWED_IMPORTS == frozenset({
        "numpy", "math", "itertools", "functools", "operator", "collections",
        "typing", "numbers", "dataclasses", "string",
        "builtins", "warnings", "time", "copy"})
    assert not ALLOWED_IMPORTS & set(FORBIDDEN_HINTS)
    for name in ("torch", "jax", "jaxlib", "tensorflow", "autograd", "scipy", "sympy",
                 "theano", "mxnet", "paddle", "cupy", "numdifftools", "importlib",
                 "ctypes", "subprocess", "os", "sys", "socket", "pickle"):
        assert FORBIDDEN_HINTS[name], name


@pytest.mark.parametrize("source", [
    "from builtins import range",                      # cs231n's layers.py, first line
    "from builtins import range, object, zip",
    "import warnings\nwarnings.filterwarnings('ignore')",
    "import time\nt0 = time.perf_counter()",
    "import copy\ncache = copy.deepcopy((1, 2))",
    "from __future__ import print_function, division",
    "from typing import Tuple",
])
def test_starter_code_and_honest_helpers_are_allowed(source):
    assert scan_imports(source) == []


@pytest.mark.parametrize("source, says", [
    ("import builtins", "may only take names from it"),
    ("from builtins import __import__", "only public names"),
    ("from builtins import *", "only public names"),
])
def test_builtins_module_itself_stays_refused(source, says):
    (v,) = scan_imports(source)
    assert v.kind == "import" and says in v.message


def test_honest_code_has_no_findings():
    assert scan_imports(HONEST) == []


@pytest.mark.parametrize("source, name", [
    ("import torch", "torch"),
    ("import torch.nn.functional as F", "torch.nn.functional"),
    ("from jax import grad", "jax"),
    ("import jaxlib", "jaxlib"),
    ("import tensorflow as tf", "tensorflow"),
    ("from autograd import grad", "autograd"),
    ("import numdifftools", "numdifftools"),
])
def test_autodiff_libraries_are_hard_violations(source, name):
    (v,) = scan_imports(source)
    assert isinstance(v, Violation) and v.kind == "import" and v.hard
    assert v.module_or_name == name and v.line == 1
    top = name.partition(".")[0]
    assert v.message.startswith(f"import {name} is not allowed: {top} is a")
    assert v.message.endswith("differentiation library; implement the gradient with NumPy")
    if top != "numdifftools":
        assert f"{top} is an automatic differentiation library" in v.message


def test_other_refusals_name_the_library():
    (v,) = scan_imports("x = 1\nfrom scipy.signal import correlate2d")
    assert v.line == 2 and v.hard and "scipy" in v.message and "scientific" in v.message
    (v,) = scan_imports("import os")
    assert v.hard and v.message.startswith("import os is not allowed: os is the operating-system")
    (v,) = scan_imports("import requests_cache")
    assert v.hard and "only builtins, collections, copy, dataclasses" in v.message and "numpy" in v.message
    (v,) = scan_imports("from . import helpers")
    assert v.hard and "relative" in v.message
    assert import_message("pickle").startswith("import pickle is not allowed: pickle is a serializer")


def test_dynamic_imports():
    (v,) = scan_imports('m = __import__("torch")')
    assert v.hard and v.module_or_name == "torch"
    (v,) = scan_imports('import importlib\nimportlib.import_module("scipy")')[1:]
    assert v.hard and v.module_or_name == "scipy" and v.line == 2
    (v,) = scan_imports('m = __import__("sci" + "py")')
    assert v.kind == "suspicious" and not v.hard and "computed name" in v.message
    (v,) = scan_imports('np = __import__("numpy")')
    assert v.kind == "suspicious"


@pytest.mark.parametrize("source, name", [
    ('exec("x = 1")', "exec"),
    ('y = eval("1 + 1")', "eval"),
    ('c = compile("1", "f", "eval")', "compile"),
    ('open("/etc/passwd").read()', "open"),
    ("b = __builtins__", "__builtins__"),
    ("s = ().__class__.__base__.__subclasses__()", "__subclasses__"),
    ("g = f.__globals__", "__globals__"),
    ("f.__code__ = g.__code__", "__code__"),
    ('g = getattr(f, "__globals__")', "__globals__"),
])
def test_suspicious_code_is_reported_but_soft(source, name):
    found = scan_imports(source)
    assert found and all(v.kind == "suspicious" and not v.hard for v in found)
    assert found[0].module_or_name == name and found[0].message


def test_syntax_error_is_reported():
    (v,) = scan_imports("def conv_forward(x, w, b:\n    pass")
    assert v.kind == "syntax" and v.hard and v.line == 1
    assert v.message.startswith("SyntaxError at line 1")


def test_findings_in_line_order():
    found = scan_imports("import numpy\nimport torch\nexec('1')\nimport os")
    assert [(v.line, v.module_or_name) for v in found] == [(2, "torch"), (3, "exec"), (4, "os")]


def test_custom_allow_list():
    assert scan_imports("import os", allowed=ALLOWED_IMPORTS | {"os"}) == []
    (v,) = scan_imports("import numpy", allowed={"math"})
    assert v.hard and "only math may be imported" in v.message


def _code_cells():
    """Every code cell of the course's solution notebooks and of the generated classes' notebooks."""
    import glob
    import json
    from classgen import build as B, honest, hostile  # noqa: F401
    cells = []
    for path in sorted(glob.glob("solutions/**/*.ipynb", recursive=True)):
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
        cells += ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    for module in (honest, hostile):
        for value in vars(module).values():
            if isinstance(value, str) and "\n" in value:
                cells.append(value)
    cells.append(textwrap.dedent('''\
        import numpy as np
        @staticmethod
        @functools.lru_cache(maxsize=None)
        def f(x, y=np.pi):
            """doc"""
            return g(x) + k

        x = [1,
          2]; y = x
        class A(B):
            z = w
        for i in range(3): q = i
        '''))
    cells.append("s = 'héllo wörld'; t = s\r\nu = [t,\r\n  s]\r\ndef f(ß=t):\r\n    return ß + v\r\n")
    return cells


def test_statement_text_gives_the_names_unparse_gives():
    """Names read and bound by each top-level statement are found from its text as written
    (decorators included) exactly as from ast.unparse, on real notebooks' cells."""
    import ast
    from autograder.submission import _scope_names, _statement_text
    checked = 0
    for src in _code_cells():
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            text = _statement_text(src, node)
            assert text is not None
            assert _scope_names(text) == _scope_names(ast.unparse(node)), text
            checked += 1
    assert checked > 100


def test_small_cells_are_parsed_once_and_large_ones_are_not_kept():
    """The passes over a cell share its tree; a large cell's tree is not kept (a class of huge
    cells cannot make the grader hold many large trees)."""
    from autograder.policy import _REMEMBER_BELOW, parse_source
    small = "def f(x):\n    return x + 1\n"
    assert parse_source(small) is parse_source(small)
    large = "a = 1\n" * (_REMEMBER_BELOW // 6 + 1)
    assert parse_source(large) is not parse_source(large)
