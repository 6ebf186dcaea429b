"""Read a submitted notebook into the code the grader runs, without running anything.

``read_submission(path, source_notebook)`` returns a ``Submission``:

``cells``
    the code the grader runs, in notebook order: the cells a graded function
    depends on (below) and nothing else.  Graded test cells never run; the
    read-only ``helpers`` cell runs as released, whatever the learner did to it.
``labels``
    one line per entry of ``cells`` naming where it came from in the learner's
    notebook ("cell 7 (def conv_forward(x, w, b, stride=1, pad=0):)").
``notes``
    what the instructor (and the learner, in the feedback) should know: test
    cells edited or deleted (the originals stand: test cells are never run
    for grading), duplicated cell ids or grade_ids (every copy is kept, in
    order), IPython magics skipped, cells not run, forbidden imports.
``ungradable``
    function name -> reason, for the graded functions that cannot be graded:
    never defined, or a forbidden import in code the function depends on (the
    reason names the cell by its position and first line).
``reason``
    set when the whole notebook is ungradable (corrupt JSON, not a notebook,
    no cells); ``cells`` is then empty.

What a graded function depends on.  A function needs the cell that defines it
and, transitively, the cells that define the global names it reads (a helper,
a constant, ``zero_pad``), in whatever order the learner ran them.  Only
those cells run for grading, so a scratch, plotting or timing cell never costs
a point, whatever it imports.  A name that a cell binds only by an import
statement (``import numpy as np`` next to ``import matplotlib.pyplot as plt``
in a setup cell) brings in that import statement alone, not the rest of the
cell.  The import policy (``autograder.policy``) is applied to exactly what
runs: a forbidden import zeroes the functions that depend on it, and only those.
"""
import ast
import errno
import hashlib
import json
import os
import re
import symtable
import sys
import warnings
from dataclasses import dataclass, field

import nbformat

from . import checks
from .policy import ALLOWED_IMPORTS, PARSE_LOCK, parse_source, scan_imports
from .safeio import UnsafeFile, open_regular, read_regular

MAX_NOTEBOOK_BYTES = 50 << 20
#: what the grader parses: a learner's code cell is at most this long, a notebook has at most this many
MAX_CELL_CHARS = 100_000
MAX_CODE_CHARS = 1_000_000
MAX_CODE_CELLS = 400
HELPERS_ID = "helpers"


@dataclass
class Submission:
    notebook: str
    cells: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    ungradable: dict = field(default_factory=dict)
    reason: str = None
    functions: list = field(default_factory=list)
    labels: list = field(default_factory=list)

    @property
    def gradable(self):
        return self.reason is None


@dataclass
class SourceInfo:
    """What the source notebook says about its protected cells."""

    notebook: str
    tests: dict        # grade_id -> source, graded test cells
    protected_ids: dict  # cell id -> grade_id of a test or helper cell
    protected_sources: dict  # normalised source -> grade_id
    helpers: str = ""


def _norm(src):
    return "\n".join(line.rstrip() for line in str(src).strip().splitlines())


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _grade_id(cell):
    meta = cell.get("metadata") or {}
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    if isinstance(nbg, dict):
        gid = nbg.get("grade_id")
        return gid if isinstance(gid, str) else None
    return None


def content_sha256(path):
    """Hex SHA-256 of the bytes of the file at path (a regular file, never followed through a link).

    The identity of a submission's content: the grader derives the submission's hidden inputs
    from it, so an unchanged notebook gets the same inputs on every regrade.  Raises OSError
    when path is a link, not a regular file, or cannot be read.
    """
    try:
        fh = open_regular(path, sys.maxsize)
    except UnsafeFile as exc:
        raise OSError(errno.EINVAL, str(exc), path) from None
    with fh:
        digest = hashlib.sha256()
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def load_source(path, notebook=None):
    """SourceInfo of a source (or release) notebook."""
    nb = nbformat.read(path, as_version=4)
    notebook = notebook or os.path.splitext(os.path.basename(path))[0]
    tests, ids, sources, helpers = {}, {}, {}, ""
    for cell in nb.cells:
        gid = _grade_id(cell)
        if cell.cell_type != "code" or gid is None:
            continue
        nbg = cell.metadata.nbgrader
        if nbg.get("grade") or gid == HELPERS_ID:
            if gid == HELPERS_ID:
                helpers = _source(cell)
            else:
                tests[gid] = _source(cell)
            if cell.get("id"):
                ids[cell["id"]] = gid
            sources[_norm(_source(cell))] = gid
    return SourceInfo(notebook, tests, ids, sources, helpers)


def _def_pattern(name):
    return re.compile(r"^[ \t]*def[ \t]+" + re.escape(name) + r"[ \t]*\(", re.MULTILINE)


_MAGIC = re.compile(r"^([ \t]*)([%!].*)$", re.MULTILINE)


def _parses(src):
    try:
        parse_source(src)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def _drop_magics(src):
    """Comment out IPython magics and shell lines, only when they keep the cell from parsing."""
    if _parses(src) or not _MAGIC.search(src):
        return src, False
    fixed = _MAGIC.sub(lambda m: m.group(1) + "pass  # " + m.group(2), src)
    return (fixed, True) if _parses(fixed) else (src, False)


def _ungradable_notebook(notebook, reason, functions):
    return Submission(notebook, [], [], {f: reason for f in functions}, reason, functions)


def read_submission(path, source, notebook=None, allowed=ALLOWED_IMPORTS):
    """Submission of the notebook at path, checked against source (a path or SourceInfo)."""
    if not isinstance(source, SourceInfo):
        source = load_source(source, notebook)
    notebook = notebook or source.notebook
    functions = checks.functions_of(notebook)

    try:
        raw = read_regular(path, MAX_NOTEBOOK_BYTES)
        data = json.loads(raw.decode("utf-8"))
    except UnsafeFile as exc:
        return _ungradable_notebook(notebook, str(exc), functions)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return _ungradable_notebook(notebook, f"the file is not valid notebook JSON ({type(exc).__name__})",
                                    functions)
    except OSError as exc:
        return _ungradable_notebook(notebook, f"the file could not be read ({exc.strerror})", functions)
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        return _ungradable_notebook(notebook, "the file is not a Jupyter notebook", functions)
    try:
        with warnings.catch_warnings():  # duplicated ids, missing fields: noted below, not printed
            warnings.simplefilter("ignore")
            nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:
        return _ungradable_notebook(notebook, f"the file is not a readable notebook ({type(exc).__name__})",
                                    functions)
    cells = [c for c in nb.get("cells", []) if isinstance(c, dict)]
    if not cells:
        return _ungradable_notebook(notebook, "the notebook has no cells", functions)
    # bounds on what the grader parses (memory and time of ast.parse grow with the text)
    code = [_source(c) for c in cells if c.get("cell_type") == "code"]
    if len(code) > MAX_CODE_CELLS:
        return _ungradable_notebook(notebook, f"the notebook has {len(code)} code cells; at most {MAX_CODE_CELLS} "
                                    "are graded (merge or delete scratch cells)", functions)
    longest = max((len(src) for src in code), default=0)
    if longest > MAX_CELL_CHARS:
        return _ungradable_notebook(notebook, f"a code cell holds {longest} characters; at most {MAX_CELL_CHARS} "
                                    "are graded (load data from a file instead of pasting it into code)", functions)
    total = sum(len(src) for src in code)
    if total > MAX_CODE_CHARS:
        return _ungradable_notebook(notebook, f"the code cells hold {total} characters; at most {MAX_CODE_CHARS} "
                                    "are graded", functions)

    sub = Submission(notebook, functions=functions)
    seen_ids, seen_gids, seen_tests = {}, {}, set()
    learner = []  # (position in the notebook, 1-based; source)
    for raw_cell in data.get("cells") or []:  # nbformat renames duplicated ids on reading
        cid = raw_cell.get("id") if isinstance(raw_cell, dict) else None
        if isinstance(cid, str):
            seen_ids[cid] = seen_ids.get(cid, 0) + 1
    for position, cell in enumerate(cells, 1):
        cid, gid = cell.get("id"), _grade_id(cell)
        if gid:
            seen_gids[gid] = seen_gids.get(gid, 0) + 1
        if cell.get("cell_type") != "code":
            continue
        src = _source(cell)
        protected = None
        if gid in source.tests or gid == HELPERS_ID:
            protected = gid
        elif isinstance(cid, str) and cid in source.protected_ids:
            protected = source.protected_ids[cid]
        elif _norm(src) in source.protected_sources:
            protected = source.protected_sources[_norm(src)]
        if protected is not None:
            original = source.helpers if protected == HELPERS_ID else source.tests.get(protected, "")
            if _norm(src) != _norm(original) and protected not in seen_tests:
                what = "the helper cell" if protected == HELPERS_ID else f"test cell {protected}"
                sub.notes.append(f"{what} was edited; the original is used (test cells are not run "
                                 "for grading, the hidden checks are)")
            seen_tests.add(protected)
            if protected == HELPERS_ID:
                learner.append((position, source.helpers))  # learner code may call the helpers
            continue
        learner.append((position, src))

    for gid in source.tests:
        if gid not in seen_tests:
            sub.notes.append(f"test cell {gid} was deleted; it is restored (test cells are not run for grading)")
    dup_ids = sorted(i for i, n in seen_ids.items() if n > 1)
    dup_gids = sorted(i for i, n in seen_gids.items() if n > 1)
    if dup_ids:
        sub.notes.append("duplicated cell ids: " + ", ".join(dup_ids[:10]) + "; every copy is kept, in order")
    if dup_gids:
        sub.notes.append("duplicated grade_ids: " + ", ".join(dup_gids[:10]) + "; every copy is kept, in order")

    magic_cells = 0
    analysed = []
    for position, src in learner:
        fixed, changed = _drop_magics(src)
        magic_cells += changed
        analysed.append(_analyse(position, fixed))
    if magic_cells:
        sub.notes.append(f"IPython magics or shell lines (% or !) were skipped in {magic_cells} cell(s)")
    _select(sub, analysed, functions, allowed)
    return sub


# --------------------------------------------------------------------------- what a function depends on

#: Run before the learner's code: the release imports numpy in a locked cell, and a
#: learner who deleted that cell is not punished for it.
PRELUDE = "import numpy as np"
PRELUDE_NAMES = frozenset({"np"})


@dataclass
class _Stmt:
    binds: frozenset
    reads: frozenset
    source: str          # the statement alone (for an import statement taken without its cell)
    is_import: bool


@dataclass
class _Cell:
    position: int        # in the learner's notebook, 1-based, markdown cells included
    source: str
    stmts: list          # None when the cell does not parse
    first_line: str

    def label(self):
        return f"cell {self.position} of the notebook ({self.first_line})"


def _first_line(src):
    for line in src.splitlines():
        if line.strip():
            text = line.strip()
            return "`" + (text if len(text) <= 60 else text[:57] + "...") + "`"
    return "empty"


def _scope_names(src):
    """(names bound, global names read) by the module-level code src, functions included."""
    with PARSE_LOCK:  # symtable runs CPython's parser, which is not thread-safe on 3.11
        top = symtable.symtable(src, "<cell>", "exec")
    binds, reads = set(), set()
    for sym in top.get_symbols():
        if sym.is_assigned() or sym.is_imported():
            binds.add(sym.get_name())
        if sym.is_referenced():
            reads.add(sym.get_name())
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        for sym in table.get_symbols():
            if sym.is_global():
                if sym.is_referenced():
                    reads.add(sym.get_name())
                if sym.is_declared_global() and sym.is_assigned():
                    binds.add(sym.get_name())
        stack.extend(table.get_children())
    return frozenset(binds), frozenset(reads)


def _source_lines(src):
    """The lines of src as UTF-8 bytes, split where the parser splits them (the AST's offsets count bytes)."""
    lines, start = [], 0
    data = src.encode("utf-8")
    for k, byte in enumerate(data):
        if byte == 10 or (byte == 13 and data[k + 1:k + 2] != b"\n"):
            lines.append(data[start:k + 1])
            start = k + 1
    lines.append(data[start:])
    return lines


def _segment(lines, node):
    """The source text of node, from the cell's lines (as ast.get_source_segment, split once per cell)."""
    try:
        first, last = node.lineno - 1, node.end_lineno - 1
        if last >= len(lines) or first < 0 or node.end_col_offset is None:
            return None
        if first == last:
            return lines[first][node.col_offset:node.end_col_offset].decode("utf-8")
        parts = [lines[first][node.col_offset:]] + lines[first + 1:last] + [lines[last][:node.end_col_offset]]
        return b"".join(parts).decode("utf-8")
    except (AttributeError, TypeError, UnicodeDecodeError):
        return None


def _statement_text(src, node, lines=None):
    """The source of one top-level statement as written, decorators included (None if unknown).

    Reading the names a statement binds and reads needs its text; cutting it from the cell
    is much cheaper than rebuilding it with ast.unparse.  ``lines``: the cell's
    ``_source_lines``, when the caller cuts several statements from it.
    """
    if lines is None:
        lines = _source_lines(src)
    parts = []
    for deco in getattr(node, "decorator_list", ()):
        seg = _segment(lines, deco)
        if seg is None:
            return None
        parts.append("@" + seg)
    seg = _segment(lines, node)
    if seg is None:
        return None
    parts.append(seg)
    return "\n".join(parts)


def _analyse(position, src):
    """Split a cell into its top-level statements, with the names each binds and reads."""
    cell = _Cell(position, src, None, _first_line(src))
    try:
        tree = parse_source(src)
        stmts = []
        lines = _source_lines(src)
        for node in tree.body:
            is_import = isinstance(node, (ast.Import, ast.ImportFrom))
            text = None if is_import else _statement_text(src, node, lines)
            try:
                binds, reads = _scope_names(text) if text is not None else (None, None)
            except SyntaxError:
                binds = None
            if binds is None:   # an import (run on its own, so in a normal form), or no clean segment
                text = ast.unparse(node)
                binds, reads = _scope_names(text)
            stmts.append(_Stmt(binds, reads, text, is_import))
        cell.stmts = stmts
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        cell.stmts = None
    return cell


def _closure(function, cells):
    """(whole cells, {cell: import statements}) that function's definition reaches."""
    binders = {}
    for k, cell in enumerate(cells):
        if cell.stmts is None:
            # a cell that does not parse: it runs (and fails, which the feedback reports) only
            # if it is where the function is written
            if _def_pattern(function).search(cell.source):
                binders.setdefault(function, []).append((k, None))
            continue
        for j, stmt in enumerate(cell.stmts):
            for name in stmt.binds:
                binders.setdefault(name, []).append((k, j))
    whole, imports = set(), {}
    seen, queue = set(), [function]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        for k, j in binders.get(name, ()):
            if j is None:
                whole.add(k)
                continue
            stmt = cells[k].stmts[j]
            if stmt.is_import:
                imports.setdefault(k, set()).add(j)
            else:
                whole.add(k)
                queue.extend(stmt.reads - seen)
    return whole, imports, function in binders


def _select(sub, cells, functions, allowed):
    """Fill sub.cells, sub.labels and sub.ungradable from the analysed learner cells."""
    needs = {}
    scanned = {}   # code -> its import findings: a cell several functions depend on is read once
    for f in functions:
        whole, imports, defined = _closure(f, cells)
        if not defined:
            sub.ungradable[f] = f"function {f} is not defined"
            continue
        refusal = None
        for k in sorted(set(whole) | set(imports)):
            code = cells[k].source if k in whole else "\n".join(cells[k].stmts[j].source
                                                                 for j in sorted(imports[k]))
            if code not in scanned:
                scanned[code] = [v for v in scan_imports(code, allowed) if v.kind == "import"]
            found = scanned[code]
            if found:
                refusal = (f"{found[0].message} (in {cells[k].label()}, which {f} depends on)")
                break
        if refusal:
            sub.ungradable[f] = refusal
            sub.notes.append(f"{f} is not graded: {refusal}")
            continue
        needs[f] = (whole, imports)

    sub.cells, sub.labels = [PRELUDE], ["the grader's own 'import numpy as np'"]
    not_run = []
    for k, cell in enumerate(cells):
        if any(k in whole for whole, _ in needs.values()):
            sub.cells.append(cell.source)
            sub.labels.append(cell.label())
            continue
        wanted = sorted(set().union(*[imports.get(k, set()) for _, imports in needs.values()]))
        if wanted:
            sub.cells.append("\n".join(cell.stmts[j].source for j in wanted))
            sub.labels.append(f"the import statements of {cell.label()}")
        elif cell.source.strip():
            not_run.append(cell.position)
    if not_run:
        listed = ", ".join(map(str, not_run[:20])) + (", ..." if len(not_run) > 20 else "")
        sub.notes.append(f"not run for grading, since no graded function uses what they define (scratch, "
                         f"plotting or timing cells; they cannot cost points): cell(s) {listed} of the notebook")
