"""What learner code may import, and a static scan of learner cells.

The exercises need NumPy and a few standard-library helpers, nothing else.
Two layers enforce this:

* ``scan_imports`` reads a cell's source with :mod:`ast` (nothing is run) and
  reports what it finds, so that feedback can explain *why* a cell was refused
  ("import torch is not allowed: torch is an automatic differentiation
  library; implement the gradient with NumPy").
* The sandbox (``autograder/sandbox.py``) refuses the same imports at run time
  and, under bubblewrap, only mounts the allowed third-party packages, so a
  library that is installed on the grading machine is still not importable.

Findings come in three kinds:

``'import'`` (hard)
    An ``import`` / ``from ... import`` of a module outside
    :data:`ALLOWED_IMPORTS`, a relative import, or ``__import__`` /
    ``importlib.import_module`` called with a constant module name outside the
    allow-list.  The run-time guard refuses these too, so the cell fails.
``'syntax'`` (hard)
    The source does not parse; the cell cannot run.
``'suspicious'`` (soft)
    Dynamic code and introspection that honest exercise code never needs:
    ``exec``/``eval``/``compile``, ``__import__`` or ``import_module`` with a
    computed name, ``open(...)``, and any use of ``__builtins__``,
    ``__subclasses__``, ``__globals__`` or ``__code__``.  These are reported
    for an instructor to look at; they do not change a score by themselves
    (the sandbox, not this scan, is what keeps such code from doing harm).
"""
from __future__ import annotations

import ast
import functools
import threading
from dataclasses import dataclass

__all__ = [
    "ALLOWED_IMPORTS",
    "FROM_IMPORT_ONLY",
    "FORBIDDEN_HINTS",
    "Violation",
    "scan_imports",
    "import_message",
]

#: Top-level modules that graded code (a graded function and the cells it depends on) may
#: import.  Cells that no graded function depends on (scratch, plotting, timing) are not run
#: for grading at all, so what they import does not matter.  Besides NumPy and the pure
#: helpers of the standard library (math, itertools, functools, operator, collections,
#: typing, numbers, dataclasses, string), these appear in real starter code and in honest
#: learners' notebooks and compute none of the exercise's mathematics:
#:
#: ``builtins``
#:     cs231n's ``layers.py`` starts with ``from builtins import range`` (and ``object``):
#:     a Python 2 compatibility line that names the built-ins every cell already has.  Only
#:     ``from builtins import NAME`` of public names is accepted; ``import builtins`` (the
#:     module object, whose attributes can be replaced) stays refused.
#: ``warnings``
#:     ``warnings.filterwarnings`` / ``catch_warnings`` around a division or a cast.
#: ``time``
#:     timing a loop (``time.perf_counter()``); a slow function only costs its own budget.
#: ``copy``
#:     ``copy.deepcopy(cache)`` by learners careful not to modify their inputs.
#: ``__future__`` (always)
#:     a compiler directive (``from __future__ import annotations``), not a library.
#:
#: What computes the mathematics for the learner stays refused: see ``FORBIDDEN_HINTS``.
ALLOWED_IMPORTS = frozenset({
    "numpy", "math", "itertools", "functools", "operator", "collections",
    "typing", "numbers", "dataclasses", "string",
    "builtins", "warnings", "time", "copy",
})

#: Modules that may be imported only as ``from MODULE import NAME`` of public names.
FROM_IMPORT_ONLY = frozenset({"builtins"})

#: Always allowed: a compiler directive, not a library.
_ALWAYS_ALLOWED = frozenset({"__future__"})

_AUTODIFF = "an automatic differentiation library"

#: Module -> why it is refused (a noun phrase: "torch is <reason>").
FORBIDDEN_HINTS = {
    "torch": _AUTODIFF,
    "jax": _AUTODIFF,
    "jaxlib": _AUTODIFF,
    "tensorflow": _AUTODIFF,
    "keras": _AUTODIFF,
    "autograd": _AUTODIFF,
    "theano": _AUTODIFF,
    "mxnet": _AUTODIFF,
    "paddle": _AUTODIFF,
    "chainer": _AUTODIFF,
    "cupy": "a GPU array library with its own gradient tools",
    "numdifftools": "a numerical differentiation library",
    "scipy": "a library of ready-made scientific routines (convolutions included)",
    "sympy": "a symbolic mathematics library that differentiates for you",
    "numba": "a compiler for Python code",
    "importlib": "the machinery for importing modules by name",
    "ctypes": "access to raw memory and C libraries",
    "cffi": "access to raw memory and C libraries",
    "subprocess": "a way to start other programs",
    "multiprocessing": "a way to start other processes",
    "threading": "a way to start threads",
    "os": "the operating-system interface (files, processes)",
    "posix": "the operating-system interface (files, processes)",
    "sys": "the interpreter's internals",
    "shutil": "a file-system library",
    "pathlib": "a file-system library",
    "io": "a file library",
    "glob": "a file-system library",
    "signal": "the operating-system signal interface",
    "resource": "the operating-system resource limits",
    "socket": "network access",
    "urllib": "network access",
    "http": "network access",
    "requests": "network access",
    "pickle": "a serializer that can run arbitrary code when loading",
    "marshal": "a serializer of code objects",
    "inspect": "introspection of the interpreter's frames",
    "gc": "introspection of the interpreter's objects",
    "code": "a way to run source code given as text",
    "codeop": "a way to compile source code given as text",
    "runpy": "a way to run other modules",
}

_AUTODIFF_ADVICE = "implement the gradient with NumPy"
#: Libraries that would do the exercise's mathematics for the learner.
_MATH_LIBS = frozenset({
    "torch", "jax", "jaxlib", "tensorflow", "keras", "autograd", "theano", "mxnet",
    "paddle", "chainer", "cupy", "numdifftools", "scipy", "sympy", "numba",
})


def import_message(name: str, allowed=ALLOWED_IMPORTS) -> str:
    """The sentence a learner sees when ``import name`` is refused."""
    top = name.partition(".")[0]
    reason = FORBIDDEN_HINTS.get(top)
    if reason is None:
        return (f"import {name} is not allowed: only "
                f"{', '.join(sorted(allowed))} may be imported in graded code")
    advice = _AUTODIFF_ADVICE if top in _MATH_LIBS else "the exercises need only NumPy"
    return f"import {name} is not allowed: {top} is {reason}; {advice}"


@dataclass(frozen=True)
class Violation:
    """One finding of :func:`scan_imports`.

    ``kind`` is ``'import'`` or ``'syntax'`` (hard: the cell will not run as
    written) or ``'suspicious'`` (soft: worth a look, no effect on a score).
    """

    module_or_name: str
    line: int
    message: str
    kind: str = "import"

    @property
    def hard(self) -> bool:
        return self.kind in ("import", "syntax")


_DYNAMIC_CODE = {"exec", "eval", "compile"}
_DUNDER_ATTRS = {"__builtins__", "__subclasses__", "__globals__", "__code__"}


def _call_name(func: ast.expr) -> str | None:
    """'exec' for exec(...), 'importlib.import_module' for importlib.import_module(...)."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        inner = _call_name(func.value)
        return f"{inner}.{func.attr}" if inner else func.attr
    return None


def _const_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


PARSE_LOCK = threading.Lock()


#: cells up to this size keep their tree for the next passes that read them; the last 32 are
#: kept (a notebook's passes come one after the other), so that a class of huge cells cannot
#: make the grader hold many large trees
_REMEMBER_BELOW = 16 << 10


@functools.lru_cache(maxsize=32)
def _parse_remembered(source: str) -> ast.Module:
    return ast.parse(source)


def parse_source(source: str) -> ast.Module:
    """ast.parse, one thread at a time; the tree of a cell of usual size is remembered.

    CPython 3.11's parser is not safe to run in several threads at once (it can fail
    with "SystemError: AST constructor recursion depth mismatch"), and the grader
    reads submissions in parallel threads.  Each cell is read by several passes (magics,
    statements, imports), so the last trees are kept; a caller must not change a tree.
    """
    with PARSE_LOCK:
        if len(source) < _REMEMBER_BELOW:
            return _parse_remembered(source)
        return ast.parse(source)


def scan_imports(source: str, allowed=ALLOWED_IMPORTS) -> list[Violation]:
    """Static findings for one cell's source, in line order (nothing is executed)."""
    allowed = frozenset(allowed) | _ALWAYS_ALLOWED
    try:
        tree = parse_source(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if exc.lineno else "the cell"
        return [Violation("<syntax>", exc.lineno or 0,
                          f"SyntaxError at {where}: {exc.msg}", kind="syntax")]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [Violation("<syntax>", 0, f"the cell cannot be parsed: {exc}",
                          kind="syntax")]

    found: list[Violation] = []

    def refuse_module(name: str, line: int) -> None:
        if name.partition(".")[0] not in allowed:
            found.append(Violation(name, line, import_message(name, allowed - _ALWAYS_ALLOWED)))

    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] in FROM_IMPORT_ONLY:
                    found.append(Violation(alias.name, line, (
                        f"import {alias.name} is not allowed: graded code may only take names from it, "
                        f"as in 'from {alias.name} import range'")))
                else:
                    refuse_module(alias.name, line)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(Violation("." * node.level + (node.module or ""), line,
                                       "relative imports are not allowed in graded code"))
            elif (node.module or "") in FROM_IMPORT_ONLY and node.module in allowed:
                private = [a.name for a in node.names if a.name == "*" or a.name.startswith("_")]
                if private:
                    found.append(Violation(node.module, line, (
                        f"from {node.module} import {private[0]} is not allowed: only public names "
                        f"may be taken from {node.module}, as in 'from {node.module} import range'")))
            else:
                refuse_module(node.module or "", line)
        elif isinstance(node, ast.Call):
            name = _call_name(node.func)
            last = name.rpartition(".")[2] if name else None
            if last in ("__import__", "import_module"):
                target = _const_str(node.args[0]) if node.args else None
                if target is not None and target.partition(".")[0] not in allowed:
                    refuse_module(target, line)
                elif target is not None:
                    found.append(Violation(name, line, (
                        f"{name}({target!r}) is an unusual way to import; "
                        "use a plain import statement"), kind="suspicious"))
                else:
                    found.append(Violation(name, line, (
                        f"{name}(...) imports a module by a computed name; "
                        "use a plain import statement"), kind="suspicious"))
            elif name in _DYNAMIC_CODE:
                found.append(Violation(name, line, (
                    f"{name}(...) runs code given as text; graded code does not need it"),
                    kind="suspicious"))
            elif name == "open":
                found.append(Violation("open", line, (
                    "open(...) reads or writes files; graded code works on its "
                    "arguments only"), kind="suspicious"))
            elif name == "getattr" and len(node.args) >= 2:
                attr = _const_str(node.args[1])
                if attr in _DUNDER_ATTRS:
                    found.append(Violation(attr, line, (
                        f"access to {attr} reaches into the interpreter's internals"),
                        kind="suspicious"))
        elif isinstance(node, ast.Attribute) and node.attr in _DUNDER_ATTRS:
            found.append(Violation(node.attr, line, (
                f"access to {node.attr} reaches into the interpreter's internals"),
                kind="suspicious"))
        elif isinstance(node, ast.Name) and node.id in _DUNDER_ATTRS:
            found.append(Violation(node.id, line, (
                f"access to {node.id} reaches into the interpreter's internals"),
                kind="suspicious"))
    found.sort(key=lambda v: (v.line, v.module_or_name))
    return found
