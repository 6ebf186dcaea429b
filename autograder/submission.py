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
    for grading), duplicated cell ids or grade_ids (every copy is read, in
    notebook order), IPython magics skipped, cells not run, definitions replaced
    by a later one, forbidden imports.
``ungradable``
    function name -> reason, for the graded functions that cannot be graded:
    never defined, or a forbidden import in code the function depends on (the
    reason names the cell by its position and first line).
``reason``
    set when the whole notebook is ungradable (corrupt JSON, not a notebook,
    no cells, past a limit of ``read_notebook``); ``cells`` is then empty.

Reading.  ``read_notebook`` skips outputs, attachments and the text of markdown
cells without decoding them, so a large figure or a notebook of notes costs
neither points nor memory; the limits (file size, cells of any kind, what is
left besides outputs) stop a flood early, with the reason.

What a graded function depends on.  A function needs the cell that defines it
and, transitively, the cells that define the global names it reads (a helper,
a constant, ``zero_pad``), in whatever order the learner ran them.  The cells
run in notebook order, so the graded function is the definition its name
binds in the end: a draft that a later cell replaces is not a dependency,
unless code that runs for grading used it before it was replaced (see
``_closure``).  A redefinition inside an ``if``, a loop or a ``try``, or in a
cell that does not parse, may not happen, so it replaces nothing.  Only
those cells run for grading, so a scratch, plotting or timing cell never costs
a point, whatever it imports.  A name that a cell binds only by an import
statement (``import numpy as np`` next to ``import matplotlib.pyplot as plt``
in a setup cell) brings in that import statement alone, not the rest of the
cell.  The import policy (``autograder.policy``) is applied to exactly what
runs: a forbidden import zeroes the functions that depend on it, and only those.
"""
import ast
import bisect
import errno
import hashlib
import json
import mmap
import os
import re
import symtable
import sys
import warnings
from dataclasses import dataclass, field

import nbformat

from . import checks
from .assignment import load_check_modules
from .policy import ALLOWED_IMPORTS, PARSE_LOCK, parse_source, scan_imports
from .safeio import UnsafeFile, open_regular

#: a notebook file is read up to this size, outputs included; its outputs (figures, printed
#: text) are skipped without being decoded, so a large figure costs neither memory nor points
MAX_FILE_BYTES = 1 << 30
#: what is left once outputs, attachments and (for grading) the text of markdown cells are dropped
MAX_NOTEBOOK_BYTES = 50 << 20
#: cells of any kind (markdown and raw included): a notebook of notes has hundreds, not thousands
MAX_CELLS = 10_000
#: brackets, keys and cells the reader steps through in the whole file (strings and numbers
#: are skipped at once); an honest notebook needs a few thousand
MAX_JSON_STEPS = 2_000_000
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


class NotebookUnreadable(ValueError):
    """The notebook cannot be read; the message says why, and what the learner can do."""


_WS = re.compile(rb"[ \t\r\n]*+")
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
#: a run of anything but brackets (strings, numbers, literals, commas, colons, spaces), in one step
_FLAT = re.compile(rb'(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^"\[\]{}])*+', re.DOTALL)
_SCALAR = re.compile(rb"[-+.0-9eE]++|true|false|null|NaN|-?Infinity")   # what json.loads accepts
#: what a cell keeps besides code: the keys the grader (and formgrader) read
_CELL_KEYS = ("cell_type", "id", "metadata", "level")
_TEXT_CELL_KEYS = _CELL_KEYS + ("source",)
_CLEAR_OUTPUTS = "clear its outputs (Edit > Clear Outputs of All Cells) and hand it in again"


def _invalid():
    return NotebookUnreadable("the file is not valid notebook JSON (ValueError)")


class _Reader:
    """Steps through a notebook's JSON text, keeping what is graded and skipping the rest undecoded.

    Outputs (a figure, printed text), attachments and, unless ``keep_text``, the text of
    markdown and raw cells are skipped: only their brackets are counted, strings are passed
    over by one regular-expression match, so neither their size nor their number builds
    anything in memory.  Cells of any kind are counted, and reading stops at the first cell
    past a limit.  ``pruned`` is the notebook without what was skipped, as JSON text.
    """

    def __init__(self, buf, keep_text):
        self.buf, self.keep_text, self.steps = buf, keep_text, MAX_JSON_STEPS
        self.cells = self.code_cells = self.kept = 0

    def _step(self):
        self.steps -= 1
        if self.steps < 0:
            raise NotebookUnreadable(f"the notebook's JSON holds more than {MAX_JSON_STEPS} lists, objects and "
                                     f"keys; {_CLEAR_OUTPUTS}")

    def _ws(self, i):
        return _WS.match(self.buf, i).end()

    def _char(self, i):
        return self.buf[i:i + 1]

    def _text(self, start, end):
        self.kept += end - start
        if self.kept > MAX_NOTEBOOK_BYTES:
            raise NotebookUnreadable(f"the notebook holds more than {MAX_NOTEBOOK_BYTES} bytes besides its outputs; "
                                     "at most that much is read (load data from a file instead of pasting it "
                                     "into cells)")
        return bytes(self.buf[start:end])

    def value(self, i):
        """(start, end) of the JSON value at i, not decoded."""
        i = self._ws(i)
        c = self._char(i)
        if c == b'"':
            m = _STRING.match(self.buf, i)
            if m is None:
                raise _invalid()
            return i, m.end()
        if c in (b"{", b"["):
            start, depth = i, 0
            while True:
                self._step()
                c = self._char(i)
                if c in (b"{", b"["):
                    depth += 1
                elif c in (b"}", b"]"):
                    depth -= 1
                else:
                    raise _invalid()
                i += 1
                if depth == 0:
                    return start, i
                i = _FLAT.match(self.buf, i).end()
        m = _SCALAR.match(self.buf, i)
        if m is None:
            raise _invalid()
        return i, m.end()

    def members(self, i, read=None):
        """([(key or None when long, value start, value end, text)], end) of the object at i; None if not one.

        ``read``: key -> a function(start) -> (text, end) that reads that key's value (text is
        then its pruned JSON); other values are skipped (text None).
        """
        i = self._ws(i)
        if self._char(i) != b"{":
            return None, self.value(i)[1]
        out, i = [], self._ws(i + 1)
        if self._char(i) == b"}":
            return out, i + 1
        while True:
            self._step()
            m = _STRING.match(self.buf, i)
            if m is None:
                raise _invalid()
            key = json.loads(bytes(self.buf[i:m.end()])) if m.end() - i <= 64 else None
            i = self._ws(m.end())
            if self._char(i) != b":":
                raise _invalid()
            if read and key in read:
                start = self._ws(i + 1)
                text, end = read[key](start)
            else:
                (start, end), text = self.value(i + 1), None
            out.append((key, start, end, text))
            i = self._ws(end)
            if self._char(i) == b"}":
                return out, i + 1
            if self._char(i) != b",":
                raise _invalid()
            i = self._ws(i + 1)

    def array(self, i, each):
        """JSON text of the array at i, each element mapped by each(start) -> (text or None, end)."""
        i = self._ws(i)
        if self._char(i) != b"[":
            start, end = self.value(i)
            return self._text(start, end), end
        parts, i = [], self._ws(i + 1)
        if self._char(i) == b"]":
            return b"[]", i + 1
        while True:
            self._step()
            text, i = each(i)
            if text is not None:
                parts.append(text)
            i = self._ws(i)
            if self._char(i) == b"]":
                return b"[" + b",".join(parts) + b"]", i + 1
            if self._char(i) != b",":
                raise _invalid()
            i += 1

    def cell(self, i):
        members, end = self.members(i)
        self.cells += 1
        if self.cells > MAX_CELLS:
            raise NotebookUnreadable(f"the notebook has more than {MAX_CELLS} cells (markdown and raw cells "
                                     f"included); at most {MAX_CELLS} are read (merge or delete cells)")
        if members is None:
            return None, end
        spans = {key: (start, stop) for key, start, stop, _ in members if key is not None}
        kind = None
        if "cell_type" in spans and spans["cell_type"][1] - spans["cell_type"][0] <= 64:
            kind = json.loads(bytes(self.buf[slice(*spans["cell_type"])]))
        if kind == "code":
            self.code_cells += 1
            if self.code_cells > MAX_CODE_CELLS:
                raise NotebookUnreadable(f"the notebook has more than {MAX_CODE_CELLS} code cells; at most "
                                         f"{MAX_CODE_CELLS} are graded (merge or delete scratch cells)")
            keep = [k for k in spans if k not in ("outputs", "attachments")]
            extra = [b'"outputs":[]']
        else:
            keep = [k for k in spans if k in (_TEXT_CELL_KEYS if self.keep_text else _CELL_KEYS)]
            extra = [] if "source" in keep else [b'"source":""']
        parts = [json.dumps(k).encode() + b":" + self._text(*spans[k]) for k in keep]
        return b"{" + b",".join(parts + extra) + b"}", end

    def _object(self, i, read):
        members, end = self.members(i, read)
        if members is None:
            return None, end
        parts = [json.dumps(key).encode() + b":" + (text if text is not None else self._text(start, stop))
                 for key, start, stop, text in members if key is not None]
        return b"{" + b",".join(parts) + b"}", end

    def worksheet(self, i):   # nbformat 3
        return self._object(i, {"cells": lambda at: self.array(at, self.cell)})

    def pruned(self):
        text, end = self._object(0, {"cells": lambda at: self.array(at, self.cell),
                                     "worksheets": lambda at: self.array(at, self.worksheet)})
        if text is None:
            raise NotebookUnreadable("the file is not a Jupyter notebook")
        if self._ws(end) != len(self.buf):
            raise _invalid()
        return text


def read_notebook(path, keep_text=False):
    """(notebook as a NotebookNode of nbformat 4, its cells as in the file) of a submitted notebook.

    Reads a regular file (never through a link) of at most ``MAX_FILE_BYTES``, without its
    outputs and attachments, nor the text of markdown and raw cells unless ``keep_text``
    (see ``_Reader``): the notebook's memory and time grow with its code, not with its
    figures or notes.  Raises NotebookUnreadable with the reason when the file cannot be
    read, is not a notebook, or is past a limit.
    """
    try:
        fh = open_regular(path, MAX_FILE_BYTES)
    except UnsafeFile as exc:
        raise NotebookUnreadable(f"{exc}; {_CLEAR_OUTPUTS}" if "too large" in str(exc) else str(exc)) from None
    except OSError as exc:
        raise NotebookUnreadable(f"the file could not be read ({exc.strerror})") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise _invalid()
        try:
            buf = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:   # a file system without mmap: read what fits
            if size > MAX_NOTEBOOK_BYTES:
                raise NotebookUnreadable(f"the file could not be read ({exc})") from None
            buf = fh.read(size)
        try:
            text = _Reader(buf, keep_text).pruned()
        except NotebookUnreadable:
            raise
        except (ValueError, RecursionError):   # a key or cell type that is not valid JSON (json.loads)
            raise _invalid() from None
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotebookUnreadable(f"the file is not valid notebook JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookUnreadable("the file is not a Jupyter notebook")
    try:
        with warnings.catch_warnings():  # duplicated ids, missing fields: noted by the caller, not printed
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text.decode("utf-8"), as_version=4)
    except Exception as exc:
        raise NotebookUnreadable(f"the file is not a readable notebook ({type(exc).__name__})") from None
    return nb, [c for c in data.get("cells") or [] if isinstance(c, dict)]


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
    load_check_modules()
    functions = checks.functions_of(notebook)

    try:
        nb, raw_cells = read_notebook(path)
    except NotebookUnreadable as exc:
        return _ungradable_notebook(notebook, str(exc), functions)
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
    for raw_cell in raw_cells:  # nbformat renames duplicated ids on reading
        cid = raw_cell.get("id")
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
    if source.helpers and HELPERS_ID not in seen_tests:
        # the released helper cell runs even when deleted: it may hold given layers (cnn_network)
        learner.insert(0, (0, source.helpers))
        sub.notes.append("the helper cell was deleted; the released one is used")
    dup_ids = sorted(i for i, n in seen_ids.items() if n > 1)
    dup_gids = sorted(i for i, n in seen_gids.items() if n > 1)
    if dup_ids:
        sub.notes.append("duplicated cell ids: " + ", ".join(dup_ids[:10]) + "; every copy is read, in notebook order")
    if dup_gids:
        sub.notes.append("duplicated grade_ids: " + ", ".join(dup_gids[:10])
                         + "; every copy is read, in notebook order")

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
    binds: frozenset     # every global name it may bind
    reads: frozenset     # global names read when it runs
    source: str          # the statement alone (for an import statement taken without its cell)
    is_import: bool
    later: frozenset = frozenset()  # global names read when a function it defines is called
    sure: frozenset = frozenset()   # names it binds whenever it runs (a def, class, import, assignment)


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


_COMPREHENSIONS = frozenset({"listcomp", "setcomp", "dictcomp", "genexpr"})


def _scope_names(src):
    """(names bound, global names read when src runs, global names read when a function of src is called).

    A class body and a comprehension run with the code around them; the body of a function or
    a lambda runs when it is called (a generator expression may run either way: both).
    """
    with PARSE_LOCK:  # symtable runs CPython's parser, which is not thread-safe on 3.11
        top = symtable.symtable(src, "<cell>", "exec")
    binds, now, later = set(), set(), set()
    for sym in top.get_symbols():
        if sym.is_assigned() or sym.is_imported():
            binds.add(sym.get_name())
        if sym.is_referenced():
            now.add(sym.get_name())
    stack = [(table, False) for table in top.get_children()]
    while stack:
        table, deferred = stack.pop()
        if table.get_type() == "function" and table.get_name() not in _COMPREHENSIONS:
            deferred = True
        for sym in table.get_symbols():
            if sym.is_global():
                if sym.is_referenced():
                    (later if deferred else now).add(sym.get_name())
                    if table.get_name() == "genexpr":
                        later.add(sym.get_name())
                if sym.is_declared_global() and sym.is_assigned():
                    binds.add(sym.get_name())
        stack.extend((child, deferred) for child in table.get_children())
    return frozenset(binds), frozenset(now), frozenset(later)


def _target_names(node):
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(e) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return set()


def _sure_binds(node):
    """Names a top-level statement binds whenever it runs to its end (not in an if, a loop, a try)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Import):
        return {a.asname or a.name.partition(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        return {a.asname or a.name for a in node.names if a.name != "*"}
    if isinstance(node, ast.Assign):
        return set().union(*(_target_names(t) for t in node.targets))
    if isinstance(node, ast.AnnAssign) and node.value is not None:
        return _target_names(node.target)
    if isinstance(node, ast.Delete):   # unbinds: what came before is gone as surely
        return set().union(*(_target_names(t) for t in node.targets))
    return set()


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
                binds, reads, later = _scope_names(text) if text is not None else (None, None, None)
            except SyntaxError:
                binds = None
            if binds is None:   # an import (run on its own, so in a normal form), or no clean segment
                text = ast.unparse(node)
                binds, reads, later = _scope_names(text)
            stmts.append(_Stmt(binds, reads, text, is_import, later, frozenset(_sure_binds(node)) & binds))
        cell.stmts = stmts
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        cell.stmts = None
    return cell


#: steps of the search for what a function depends on (see ``_closure``); an honest notebook
#: takes hundreds.  Past it (a tangle of conditional definitions that no learner writes), every
#: definition of a name counts, as if none were superseded: more cells run, never fewer.
MAX_CLOSURE_STEPS = 200_000


class _Tangled(Exception):
    pass


class _Index:
    """The learner's top-level statements in notebook order, and where each name is bound."""

    def __init__(self, cells, functions):
        self.at = []        # position -> (cell index, statement index; None for a cell that does not parse)
        self.binders = {}   # name -> positions of the statements that may bind it, ascending
        self.sure = {}      # name -> for each of those, whether it binds the name whenever it runs
        for k, cell in enumerate(cells):
            if cell.stmts is None:
                # a cell that does not parse runs (and fails, which the feedback reports) only
                # if a graded function is written there; it binds nothing for sure
                for f in functions:
                    if _def_pattern(f).search(cell.source):
                        self._add(f, False)
                self.at.append((k, None))
                continue
            for j, stmt in enumerate(cell.stmts):
                for name in stmt.binds:
                    self._add(name, name in stmt.sure)
                self.at.append((k, j))
        self.end = len(self.at)
        # last_sure[name][m]: the last m' <= m whose statement surely binds name (0 if none)
        self.last_sure = {}
        for name, flags in self.sure.items():
            last, out = 0, []
            for m, flag in enumerate(flags):
                last = m if flag else last
                out.append(last)
            self.last_sure[name] = out

    def _add(self, name, sure):
        self.binders.setdefault(name, []).append(len(self.at))
        self.sure.setdefault(name, []).append(sure)


def _closure(function, cells, index):
    """(whole cells, {cell: import statements}, defined) that function's final definition depends on.

    The learner's cells run in notebook order, so a read of a name sees the statement that
    last bound it before the read, and the conditional bindings (in an if, a loop, a try)
    after that statement.  The graded function is the one its name binds once every cell
    has run; a function body reads the names it uses when it is called, at the end for the
    graded function, or at any time after a statement that runs reads the function, and then
    sees the bindings live from that time on.  So a definition that a later cell replaces
    (a draft above the final version) is not a dependency, unless code that runs used it
    before it was replaced (``TABLE = helper()`` between the draft and the final helper).
    """
    best = {}          # position -> earliest time a function its statement defines may be called
    own_from = {}      # name -> binders from this index on were reached from their own position
    budget = [MAX_CLOSURE_STEPS]
    work = []

    def reach(name, t, later):
        """The bindings of name that a read at time t sees (and, if later, any read after t)."""
        pos = index.binders.get(name)
        if not pos:
            return
        hi = bisect.bisect_left(pos, t)
        lo = index.last_sure[name][hi - 1] if hi else 0
        work.extend((pos[m], t) for m in range(lo, hi))
        spent = hi - lo
        if later and hi < own_from.get(name, len(pos)):
            work.extend((pos[m], pos[m]) for m in range(hi, own_from.get(name, len(pos))))
            spent += own_from.get(name, len(pos)) - hi
            own_from[name] = hi
        budget[0] -= spent + 1
        if budget[0] < 0:
            raise _Tangled

    reach(function, index.end, False)
    while work:
        p, t = work.pop()
        if p in best and best[p] <= t:
            continue
        first = p not in best
        best[p] = t
        k, j = index.at[p]
        if j is None:
            continue
        stmt = cells[k].stmts[j]
        if first:
            for name in stmt.reads:
                reach(name, p, False)
        for name in stmt.later:
            reach(name, t, True)
    whole, imports = set(), {}
    for p in best:
        k, j = index.at[p]
        if j is not None and cells[k].stmts[j].is_import:
            imports.setdefault(k, set()).add(j)
        else:
            whole.add(k)
    return whole, imports, function in index.binders


def _closure_every_binding(function, cells, index):
    """``_closure`` where every binding of a name counts (for a tangle past MAX_CLOSURE_STEPS)."""
    whole, imports = set(), {}
    seen, queue = set(), [function]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        for p in index.binders.get(name, ()):
            k, j = index.at[p]
            if j is None:
                whole.add(k)
                continue
            stmt = cells[k].stmts[j]
            if stmt.is_import:
                imports.setdefault(k, set()).add(j)
            else:
                whole.add(k)
                queue.extend((stmt.reads | stmt.later) - seen)
    return whole, imports, function in index.binders


def _select(sub, cells, functions, allowed):
    """Fill sub.cells, sub.labels and sub.ungradable from the analysed learner cells."""
    needs = {}
    scanned = {}   # code -> its import findings: a cell several functions depend on is read once
    index = _Index(cells, functions)
    for f in functions:
        try:
            whole, imports, defined = _closure(f, cells, index)
        except _Tangled:
            whole, imports, defined = _closure_every_binding(f, cells, index)
        if not defined:
            sub.ungradable[f] = f"function {f} is not defined"
            continue
        run = set(whole) | set(imports)
        drafts = sorted({cells[index.at[p][0]].position for p in index.binders[f]} -
                        {cells[k].position for k in run})
        graded = [cells[index.at[p][0]].position for p in index.binders[f] if index.at[p][0] in run]
        if drafts and graded:
            sub.notes.append(f"{f} is defined again in cell {max(graded)} of the notebook; the earlier "
                             f"definition(s) in cell(s) {', '.join(map(str, drafts[:10]))} are not run for "
                             "grading, since the later one replaces them before anything graded uses them")
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
