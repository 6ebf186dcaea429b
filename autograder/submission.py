"""Read a submitted notebook into the learner's code cells, without running anything.

``read_submission(path, source_notebook)`` returns a ``Submission``:

``cells``
    the learner's code cells in notebook order: every code cell except the
    graded test cells and the read-only ``helpers`` cell, recognised by the
    SOURCE notebook's grade_ids, cell ids and contents.
``notes``
    what the instructor (and the learner, in the feedback) should know: test
    cells edited or deleted (the originals stand: test cells are never run
    for grading), duplicated cell ids or grade_ids (every copy is kept, in
    order), IPython magics skipped, forbidden imports.
``ungradable``
    function name -> reason, for the graded functions whose cells will not be
    run: no ``def NAME(`` anywhere ("function NAME is not defined"), or a
    forbidden import (in the cell that defines it, or in any other cell,
    which zeroes every function of the notebook).
``reason``
    set when the whole notebook is ungradable (corrupt JSON, not a notebook,
    no cells); ``cells`` is then empty.
"""
import errno
import hashlib
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

import nbformat

from . import checks
from .policy import ALLOWED_IMPORTS, parse_source, scan_imports
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
    learner = []  # (index in notebook, source)
    for raw_cell in data.get("cells") or []:  # nbformat renames duplicated ids on reading
        cid = raw_cell.get("id") if isinstance(raw_cell, dict) else None
        if isinstance(cid, str):
            seen_ids[cid] = seen_ids.get(cid, 0) + 1
    for cell in cells:
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
                learner.append(source.helpers)  # learner code may call the helpers; run the original
            continue
        learner.append(src)

    for gid in source.tests:
        if gid not in seen_tests:
            sub.notes.append(f"test cell {gid} was deleted; it is restored (test cells are not run for grading)")
    dup_ids = sorted(i for i, n in seen_ids.items() if n > 1)
    dup_gids = sorted(i for i, n in seen_gids.items() if n > 1)
    if dup_ids:
        sub.notes.append("duplicated cell ids: " + ", ".join(dup_ids[:10]) + "; every copy is kept, in order")
    if dup_gids:
        sub.notes.append("duplicated grade_ids: " + ", ".join(dup_gids[:10]) + "; every copy is kept, in order")

    # the release imports numpy in a locked cell; a learner who deleted it is not punished
    learner.insert(0, "import numpy as np")
    magic_cells = 0
    for src in learner:
        fixed, changed = _drop_magics(src)
        magic_cells += changed
        sub.cells.append(fixed)
    if magic_cells:
        sub.notes.append(f"IPython magics or shell lines (% or !) were skipped in {magic_cells} cell(s)")

    # graded functions that are never defined
    for f in functions:
        if not any(_def_pattern(f).search(src) for src in sub.cells):
            sub.ungradable[f] = f"function {f} is not defined"

    # forbidden imports: zero the functions of the cell, or of the notebook
    kept = []
    for k, src in enumerate(sub.cells):
        found = [v for v in scan_imports(src, allowed) if getattr(v, "kind", "import") == "import"]
        if not found:
            kept.append(src)
            continue
        defines = [f for f in functions if _def_pattern(f).search(src)]
        message = found[0].message
        targets = defines or functions
        where = (f"the cell defining {', '.join(defines)}" if defines else "a code cell")
        sub.notes.append(f"forbidden import in {where}: {message}")
        for f in targets:
            sub.ungradable.setdefault(f, f"{message} (in {where})")
        if defines:
            continue  # the cell is not run; the other functions still are
        kept.append(src)
    sub.cells = kept
    return sub
