"""The published book and the released exercises must not give the solutions away.

Scanned: every text file of the built site ``_build/html`` (the pages, their sources,
the search index and the notebooks offered for download under ``_downloads``) and every
file under ``exercises/``. Forbidden there:

* nbgrader's markers (``BEGIN SOLUTION``, ``END SOLUTION``, ``HIDDEN TESTS``);
* any non-trivial line of a solution region of ``solutions/**/*.ipynb``;
* any distinctive line of the hidden checks (``autograder/checks.py`` and the modules of
  ``autograder/assignments/``) and of the bodies of the reference layers that the exercises
  grade (the book imports and calls these, it never displays them);
* the checks module itself: a published ``checks.py`` or an import of it.

Which released notebook may show which code: an assignment released after another is due
may carry that one's layers in a locked helper cell (``MAY_SHOW``: ``exercises/cnn_network``
holds the ``cnn_layers`` layers, as cs231n's later assignments hold the earlier ones); every
other solution line is a leak everywhere, and no released notebook shows its own
assignment's solutions. The book shows none of them.

Lines are compared with all whitespace removed, so re-indentation, line wrapping inside
a statement or syntax highlighting (one HTML element per token) do not hide a copy.

Comparing lines cannot see a copy whose names were changed (``"abcdef,gbef->agcd"`` for
the einsum of the forward pass). So the scan is also *functional*: every function that the
book's sources define (the code of every page under ``book/`` and the helper module
``book/convbook.py``) is called with the arguments of the exercise contract, on cases with
batches, channels, stride, padding and uneven sizes, and a function that computes a graded
function's answer (``out``, ``dx`` or ``dw`` of the convolution, ``out`` or ``dx`` of the
max pooling) on every case is a leak, whatever it is called. The instructor's package is
not available to that code: a page function that merely calls the imported reference layer
shows nothing and is not counted. This part needs only the sources, not the built site.

Build the site first (``bash scripts/build_book.sh``). Without it the site tests are
skipped, except under CI (``CI`` set), where a missing site is a failure.
"""
import ast
import builtins
import contextlib
import html
import io
import json
import os
import re
import shutil
import signal
import sys
import types
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SITE = ROOT / "_build" / "html"
EXERCISES = ROOT / "exercises"
SOLUTIONS = ROOT / "solutions"
CHECKS = ROOT / "autograder" / "checks.py"
REFERENCE = ROOT / "autograder" / "reference.py"
ASSIGNMENT_CHECKS = ROOT / "autograder" / "assignments"
SECRET_FUNCTIONS = ("conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward",
                    "relu_forward", "relu_backward", "affine_forward", "affine_backward",
                    "avgpool_forward", "avgpool_backward", "softmax_loss", "_cnn", "sgd_momentum")
# assignment -> the assignments whose solutions its released notebooks may show (in a locked
# helper cell: the course's own layers, handed out once those assignments are due)
MAY_SHOW = {"cnn_network": ("cnn_layers",)}
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS")
CHECKS_IMPORTS = ("autograder.checks", "from autograder import checks",
                  "import autograder.checks", "autograder.assignments")

MIN_CHARS = 25  # shorter lines (whitespace collapsed) are too common to mean anything
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".ico", ".webp", ".pdf", ".zip",
                   ".gz", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".inv", ".pickle",
                   ".doctree", ".mp4", ".webm"}

# Lines that are public on purpose and may appear anywhere (whitespace removed). Extend
# only with lines that the exercise contract or the book states anyway.
ALLOWED_LINES = set()

# The public reference functions the book calls; a line that only calls one of them with
# plain arguments (``out, cache = conv_forward(x, w, b, stride=2, pad=1)``) shows
# nothing of an implementation.
PUBLIC_CALLS = ("conv_forward", "conv_backward", "conv_forward_loops", "conv_backward_loops",
                "conv_transpose", "output_size", "zero_pad", "maxpool_forward",
                "maxpool_backward", "avgpool_forward", "avgpool_backward", "relu_forward",
                "relu_backward", "affine_forward", "affine_backward", "softmax_loss",
                "numerical_gradient", "rel_error", "check_gradient")
_PLAIN_CALL = re.compile(
    r"^(return\s+|[\w\s,]+=\s*)?(\w+\.)*(%s)\([^()\[\]]*\)$" % "|".join(PUBLIC_CALLS))
_RANDOM_DRAW = re.compile(r"^[\w\s,]+=\s*(rng|np\.random|random)\.\w+\(.*\)$")


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def squash(text):
    """Remove all whitespace: the form in which lines and pages are compared."""
    return re.sub(r"\s+", "", text)


def strip_comment(line):
    """Drop a trailing ``# comment`` when the ``#`` is outside string literals."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote and line[k - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:k]
    return line


def is_trivial(line):
    """True for lines that carry no solution: short, punctuation, bookkeeping."""
    code = " ".join(strip_comment(line).split())
    if len(code) < MIN_CHARS or code in ("pass", "else:", "try:", "finally:"):
        return True
    if not re.search(r"[A-Za-z0-9]", code):
        return True
    if re.match(r"^(import|from)\s", code):
        return True
    # arithmetic and tuples of names without calls or indexing: output-size formulas,
    # cache (un)packing, index arithmetic; the exercise contract states these
    if not re.search(r"\w\s*\(|\[", code):
        return True
    if _PLAIN_CALL.match(code) or _RANDOM_DRAW.match(code):
        return True
    if re.match(r"^[\w\s,]+=\s*\w+\.shape$", code):
        return True
    return squash(code) in ALLOWED_LINES


def distinctive(lines):
    """The squashed form of every non-trivial line, mapped to the line as written."""
    found = {}
    for line in lines:
        if not is_trivial(line):
            found.setdefault(squash(strip_comment(line)), line.strip())
    return found


# --------------------------------------------------------------------------- secrets

def notebook_cells(path):
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        yield cell, ("".join(src) if isinstance(src, list) else src)


def solution_regions(source):
    """Lines between BEGIN and END markers (SOLUTION or HIDDEN TESTS) of one cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if re.search(r"BEGIN (SOLUTION|HIDDEN TESTS)", line):
            inside = True
        elif re.search(r"END (SOLUTION|HIDDEN TESTS)", line):
            inside = False
        elif inside:
            lines.append(line)
    return lines


def solution_lines(root=SOLUTIONS):
    """Distinctive lines of every solution region of the source notebooks."""
    lines = []
    for path in sorted(Path(root).rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        for cell, source in notebook_cells(path):
            if cell.get("cell_type") != "code":
                continue
            region = solution_regions(source)
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if not region and meta.get("solution") and "BEGIN SOLUTION" not in source:
                region = source.splitlines()  # a solution cell without markers: all of it
            lines += region
    return distinctive(lines)


def _docstring_lines(tree):
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    return skip


def checks_lines(paths=None):
    """Distinctive code lines of the hidden checks (docstrings and comments left out)."""
    if paths is None:
        paths = [CHECKS] + sorted(p for p in ASSIGNMENT_CHECKS.rglob("*.py")
                                  if p != ASSIGNMENT_CHECKS / "__init__.py")
    lines = []
    for path in ([paths] if isinstance(paths, (str, Path)) else paths):
        source = Path(path).read_text(encoding="utf-8")
        tree = ast.parse(source)
        skip = _docstring_lines(tree) | _signature_lines(tree)
        lines += [ln for k, ln in enumerate(source.splitlines(), 1)
                  if k not in skip and not ln.lstrip().startswith("#")]
    return distinctive(lines)


def _signature_lines(tree):
    """The ``def`` lines of the functions: a reference layer's signature is its public
    contract, which every notebook states."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip.update(range(node.lineno, node.body[0].lineno))
    return skip


def assignments():
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir())


def shown_by(assignment):
    """The solution lines the release of assignment may show: those of the assignments in
    MAY_SHOW, which its helper cell holds."""
    shown = set()
    for other in MAY_SHOW.get(assignment, ()):
        shown |= set(solution_lines(SOLUTIONS / other))
    return shown


def solution_secrets_for(assignment):
    """The solution lines the release of assignment must not show: every assignment's, less
    those it may show (``shown_by``)."""
    shown = shown_by(assignment)
    return {k: v for k, v in solution_lines().items() if k not in shown}


def secrets_for(assignment, secrets):
    """Every kind of secret the release of assignment must not show.  A line it may show (a
    line of a solution its helper cell holds) is public there, whichever other secret also
    holds it: a hidden check that computes a bias gradient the same way, for instance."""
    shown = shown_by(assignment)
    own = {kind: {k: v for k, v in lines.items() if k not in shown} for kind, lines in secrets.items()}
    own["solution"] = solution_secrets_for(assignment)
    return own


def reference_body_lines(path=REFERENCE, names=SECRET_FUNCTIONS):
    """Distinctive lines of the bodies of the graded reference functions."""
    source = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    skip = _docstring_lines(tree)
    all_lines = source.splitlines()
    lines = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            first = node.body[0].lineno
            lines += [all_lines[k - 1] for k in range(first, node.end_lineno + 1)
                      if k not in skip and not all_lines[k - 1].lstrip().startswith("#")]
    return distinctive(lines)


# --------------------------------------------------------------------------- documents

class _TextOf(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def html_text(raw):
    parser = _TextOf()
    parser.feed(raw)
    parser.close()
    return "".join(parser.parts)


def notebook_text(raw):
    """Sources and text outputs of a notebook; the raw text if it is not JSON."""
    try:
        nb = json.loads(raw)
    except ValueError:
        return raw
    parts = []
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        src = cell.get("source", "")
        parts.append("".join(src) if isinstance(src, list) else str(src))
        for out in cell.get("outputs", []):
            for key in ("text",):
                val = out.get(key)
                if val:
                    parts.append("".join(val) if isinstance(val, list) else str(val))
            for mime, val in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    parts.append("".join(val) if isinstance(val, list) else str(val))
    return "\n".join(parts)


def documents(root):
    """(path, readable text, squashed text) of every text file under root."""
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or path.suffix.lower() in BINARY_SUFFIXES:
            continue
        try:
            raw = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if path.suffix.lower() in (".html", ".htm"):
            text = html.unescape(html_text(raw))
        elif path.suffix.lower() == ".ipynb":
            text = notebook_text(raw) + "\n" + raw
        else:
            text = raw
        yield path, text, squash(text)


def scan(root, secrets):
    """Findings ``(file, kind, line)`` for every secret line or marker found under root.

    secrets maps a kind (e.g. "solution") to {squashed line: line as written}.
    """
    findings = []
    for path, text, squashed in documents(root):
        rel = path.relative_to(root).as_posix()
        for marker in MARKERS:
            if marker in text:
                findings.append((rel, "nbgrader marker", marker))
        for kind, lines in secrets.items():
            for key, line in lines.items():
                if key in squashed:
                    findings.append((rel, kind, line))
    return findings


def report(findings, where):
    rows = "\n".join(f"  {f}: {kind}: {line}" for f, kind, line in findings[:40])
    more = f"\n  ... and {len(findings) - 40} more" if len(findings) > 40 else ""
    return (f"{len(findings)} leak(s) in {where}:\n{rows}{more}\n"
            "Show the derivation or call the imported reference layer instead; if a line "
            "is public on purpose, add it to ALLOWED_LINES with a reason.")


# --------------------------------------------------------------------------- functional scan

_CODE_BLOCK = re.compile(r"^(`{3,})(\{code-cell\}|python|py|ipython3?)[^\n]*\n(.*?)^\1[ \t]*$",
                         re.S | re.M)
STATEMENT_SECONDS = 3    # a page statement that runs longer (training, timing) is cut short
CALL_SECONDS = 5         # one call of a page function on one contract case


def page_sources():
    """(name, code cells) of every page and of the helper module under book/."""
    sources = []
    for path in sorted(BOOK.glob("*.md")):
        sources.append((path.name, code_cells(path.read_text(encoding="utf-8"))))
    for path in sorted(BOOK.glob("*.py")):
        sources.append((path.name, [path.read_text(encoding="utf-8")]))
    return sources


def code_cells(markdown):
    """Python source of every executable cell and python code block of a MyST page.

    Cell options (``:tags: [...]`` lines or a ``---`` YAML block) are removed; IPython's
    ``%magic`` and ``!shell`` lines become comments, so that the rest still parses.
    """
    cells = []
    for match in _CODE_BLOCK.finditer(markdown):
        lines = match.group(3).splitlines()
        if lines and lines[0].strip() == "---":
            end = next((k for k in range(1, len(lines)) if lines[k].strip() == "---"), 0)
            lines = lines[end + 1:]
        while lines and re.match(r"^:\w[\w-]*:", lines[0]):
            lines = lines[1:]
        cells.append("\n".join("# " + ln if ln.lstrip().startswith(("%", "!")) else ln
                               for ln in lines))
    return cells


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that page code catching Exception stops."""


@contextlib.contextmanager
def _time_limit(seconds):
    def expire(signum, frame):
        raise _Timeout()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _InstructorOnly(types.ModuleType):
    """Stands for the instructor's package: every name in it refuses to run."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def refused(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is the instructor's, not the page's")
        refused.__name__ = name
        return refused


def _import_without_instructor(name, globals=None, locals=None, fromlist=(), level=0):
    if name == "autograder" or name.startswith("autograder."):
        module = _InstructorOnly(name)
        if not fromlist:
            return _InstructorOnly(name.split(".")[0])
        return module
    return builtins.__import__(name, globals, locals, fromlist, level)


def run_page(name, cells):
    """Execute a page's cells statement by statement; return the functions it defined.

    Each top-level statement runs with a time limit, and one that fails is skipped (the
    instructor's package is replaced by refusing stand-ins, so much of a page fails on
    purpose), so that every ``def`` runs with whatever globals the page sets up before it.
    Returns {qualified name: function} for the functions (and lambdas bound to names) whose
    code comes from the page, and the list of cells that did not parse.
    """
    filename = f"<book page {name}>"
    page_builtins = dict(vars(builtins), __import__=_import_without_instructor)
    namespace = {"__name__": "__book_page__", "__builtins__": page_builtins}
    unparsed = []
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    saved_path = list(sys.path)
    sys.path.insert(0, str(BOOK))
    # Pages take the graded layers through convbook.load_layers, which imports the
    # instructor's package itself: the same refusing stand-ins answer it there.
    instructor = ("autograder", "autograder.reference", "my_layers")
    saved_modules = {m: sys.modules.pop(m) for m in instructor if m in sys.modules}
    sys.modules.update({m: _InstructorOnly(m) for m in instructor[:2]})
    try:
        for k, cell in enumerate(cells):
            try:
                tree = ast.parse(cell, filename=filename)
            except SyntaxError as exc:
                unparsed.append(f"{name}, code cell {k + 1}: {exc.msg} (line {exc.lineno})")
                continue
            for stmt in tree.body:
                code = compile(ast.Module(body=[stmt], type_ignores=[]), filename, "exec")
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        with _time_limit(STATEMENT_SECONDS):
                            exec(code, namespace)
                    except (_Timeout, Exception, SystemExit):
                        pass
            plt.close("all")
    finally:
        sys.path[:] = saved_path
        for m in instructor:
            sys.modules.pop(m, None)
        sys.modules.update(saved_modules)
    functions = {}
    for key, value in list(namespace.items()):
        if isinstance(value, types.FunctionType) and value.__code__.co_filename == filename:
            functions[key] = value
    return functions, unparsed


def _contract_cases():
    """{graded function: [(args, {target: expected array})]} from the reference layers."""
    from autograder import reference as R
    rng = np.random.default_rng(20260)
    conv = []
    for N, C, H, W, F, HH, WW, s, p in [(2, 3, 7, 6, 4, 3, 2, 2, 1), (3, 2, 5, 5, 2, 3, 3, 1, 0),
                                        (2, 2, 8, 7, 3, 2, 3, 3, 2), (1, 1, 4, 6, 2, 2, 2, 1, 1)]:
        x, w, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(F, C, HH, WW)), rng.normal(size=F)
        out, cache = R.conv_forward(x, w, b, s, p)
        dout = rng.normal(size=out.shape)
        dx, dw, _ = R.conv_backward(dout, cache)
        conv.append(((x, w, b, s, p), out, (dout, cache), {"dx": dx, "dw": dw}))
    pool = []
    for N, C, H, W, k, s in [(2, 3, 6, 7, 2, 2), (2, 2, 7, 5, 3, 2), (1, 3, 5, 6, 2, 1)]:
        x = rng.normal(size=(N, C, H, W))
        out, cache = R.maxpool_forward(x, k, s)
        dout = rng.normal(size=out.shape)
        pool.append(((x, k, s), out, (dout, cache), {"dx": R.maxpool_backward(dout, cache)}))
    avg = []
    for N, C, H, W, k, s in [(2, 3, 6, 7, 2, 2), (2, 2, 7, 5, 3, 2), (1, 3, 8, 8, 2, 3)]:
        x = rng.normal(size=(N, C, H, W))
        out, cache = R.avgpool_forward(x, k, s)
        dout = rng.normal(size=out.shape)
        avg.append(((x, k, s), out, (dout, cache), {"dx": R.avgpool_backward(dout, cache)}))
    relu, affine, softmax = [], [], []
    for shape in [(3, 4, 5), (2, 6)]:
        x = rng.normal(size=shape)
        x.reshape(-1)[::5] = 0.0
        dout = rng.normal(size=shape)
        relu.append(((x,), R.relu_forward(x)[0], (dout, x), {"dx": R.relu_backward(dout, x)}))
    for x_shape, M in [((3, 2, 4, 5), 7), ((4, 6), 3)]:
        x = rng.normal(size=x_shape)
        w, b = rng.normal(size=(int(np.prod(x_shape[1:])), M)), rng.normal(size=M)
        dout = rng.normal(size=(x_shape[0], M))
        dx, dw, _ = R.affine_backward(dout, (x, w, b))
        affine.append(((x, w, b), R.affine_forward(x, w, b)[0], (dout, (x, w, b)), {"dx": dx, "dw": dw}))
    for N, K in [(5, 4), (3, 10)]:
        scores, y = rng.normal(size=(N, K)) * 3, rng.integers(0, K, size=N)
        softmax.append(((scores, y), {"dscores": R.softmax_loss(scores, y)[1]}))
    from autograder.assignments.conv_variants import reference as V
    conv1d = []
    for N, C, L, F, K, s, p in [(2, 3, 9, 4, 3, 2, 1), (3, 2, 7, 2, 2, 1, 0), (1, 2, 11, 3, 4, 3, 2)]:
        x, w, b = rng.normal(size=(N, C, L)), rng.normal(size=(F, C, K)), rng.normal(size=F)
        out, cache = V.conv1d_forward(x, w, b, s, p)
        dout = rng.normal(size=out.shape)
        dx, dw, _ = V.conv1d_backward(dout, cache)
        conv1d.append(((x, w, b, s, p), out, (dout, cache), {"dx": dx, "dw": dw}))
    dilated = []
    for N, C, H, W, F, HH, WW, s, p, d in [(2, 2, 9, 8, 3, 3, 2, 1, 1, 2), (1, 3, 11, 10, 2, 2, 3, 2, 2, 3)]:
        x, w, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(F, C, HH, WW)), rng.normal(size=F)
        out, cache = V.dilated_conv_forward(x, w, b, s, p, d)
        dout = rng.normal(size=out.shape)
        dx, dw, _ = V.dilated_conv_backward(dout, cache)
        dilated.append(((x, w, b, s, p, d), out, (dout, cache), {"dx": dx, "dw": dw}))
    transposed = []
    for N, C, H, W, F, HH, WW, s, p, op in [(2, 3, 4, 5, 2, 3, 3, 2, 1, 1), (1, 2, 3, 4, 3, 2, 3, 3, 0, 2)]:
        x, w, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(C, F, HH, WW)), rng.normal(size=F)
        out, cache = V.conv_transpose_forward(x, w, b, s, p, op)
        dout = rng.normal(size=out.shape)
        dx, dw, _ = V.conv_transpose_backward(dout, cache)
        transposed.append(((x, w, b, s, p, op), out, (dout, cache), {"dx": dx, "dw": dw}))
    network = []
    for F, k, H, W, N in [(3, 3, 8, 8, 4), (2, 5, 6, 4, 3)]:
        params = {"W1": rng.normal(size=(F, 1, k, k)), "b1": rng.normal(size=F),
                  "W2": rng.normal(size=(F * (H // 2) * (W // 2), 10)), "b2": rng.normal(size=10)}
        x = rng.normal(size=(N, 1, H, W))
        network.append(((params, x), {"scores": R.cnn_loss(params, x)}))
    sgd = []
    for shape in [(3, 4), (2, 3, 2, 2)]:
        w, dw, v = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
        config = {"learning_rate": 0.03, "momentum": 0.8, "velocity": v}
        sgd.append(((w, dw, config), {"next_w": R.sgd_momentum(w, dw, dict(config))[0]}))
    return {
        "conv1d_forward": [(fwd, {"out": out}) for fwd, out, _, _ in conv1d],
        "conv1d_backward": [(bwd, grads) for _, _, bwd, grads in conv1d],
        "dilated_conv_forward": [(fwd, {"out": out}) for fwd, out, _, _ in dilated],
        "dilated_conv_backward": [(bwd, grads) for _, _, bwd, grads in dilated],
        "conv_transpose_forward": [(fwd, {"out": out}) for fwd, out, _, _ in transposed],
        "conv_transpose_backward": [(bwd, grads) for _, _, bwd, grads in transposed],
        "cnn_loss": network,
        "sgd_momentum": sgd,
        "conv_forward": [(fwd, {"out": out}) for fwd, out, _, _ in conv],
        "conv_backward": [(bwd, grads) for _, _, bwd, grads in conv],
        "maxpool_forward": [(fwd, {"out": out}) for fwd, out, _, _ in pool],
        "maxpool_backward": [(bwd, grads) for _, _, bwd, grads in pool],
        "avgpool_forward": [(fwd, {"out": out}) for fwd, out, _, _ in avg],
        "avgpool_backward": [(bwd, grads) for _, _, bwd, grads in avg],
        "relu_forward": [(fwd, {"out": out}) for fwd, out, _, _ in relu],
        "relu_backward": [(bwd, grads) for _, _, bwd, grads in relu],
        "affine_forward": [(fwd, {"out": out}) for fwd, out, _, _ in affine],
        "affine_backward": [(bwd, grads) for _, _, bwd, grads in affine],
        "softmax_loss": softmax,
    }


def _copy_args(args):
    """Fresh copies of the arrays (also inside a cache tuple or a dict of parameters), so no
    call sees another's edits."""
    def fresh(a):
        if isinstance(a, tuple):
            return _copy_args(a)
        if isinstance(a, dict):
            return {k: fresh(v) for k, v in a.items()}
        return a.copy() if isinstance(a, np.ndarray) else a
    return tuple(fresh(a) for a in args)


def _arrays_in(result, depth=0):
    if isinstance(result, np.ndarray):
        yield result
    elif isinstance(result, (tuple, list)) and depth < 2:
        for item in result:
            yield from _arrays_in(item, depth + 1)


def _computes(result, expected):
    return any(a.shape == expected.shape and np.issubdtype(a.dtype, np.number)
               and np.allclose(a, expected, rtol=1e-6, atol=1e-9)
               for a in _arrays_in(result))


def reproduced(function, cases):
    """Targets ('out', 'dx', 'dw') that function computes on every one of the cases."""
    matched = None
    for args, targets in cases:
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with _time_limit(CALL_SECONDS):
                    result = function(*_copy_args(args))
        except (_Timeout, Exception, SystemExit):
            return set()
        hits = {t for t, expected in targets.items() if _computes(result, expected)}
        matched = hits if matched is None else matched & hits
        if not matched:
            return set()
    return matched or set()


def scan_page(name, cells, cases):
    """Findings ``(page, function, graded function, targets)`` and unparsed cells of one page."""
    functions, unparsed = run_page(name, cells)
    findings = []
    for fname, function in functions.items():
        for graded, graded_cases in cases.items():
            hits = reproduced(function, graded_cases)
            if hits:
                findings.append((name, fname, graded, sorted(hits)))
    return findings, unparsed


def _scan_page_process():
    """Entry point of the child process: page on stdin (JSON), result on stdout (JSON)."""
    page = json.loads(sys.stdin.read())
    findings, unparsed = scan_page(page["name"], page["cells"], _contract_cases())
    sys.stdout.write("\n" + json.dumps({"findings": findings, "unparsed": unparsed}))


def functional_leaks(sources, cases=None):
    """Findings ``(page, function, graded function, targets)`` and the unparsed cells.

    Each page runs in a process of its own, so that whatever its code does to the
    interpreter (plots, threads, signals) stays there; a page whose scan dies is reported
    as unscanned, never as clean. (cases is accepted for symmetry; the child computes the
    same cases from the reference layers.)
    """
    import subprocess
    findings, unparsed = [], []
    for name, cells in sources:
        command = [sys.executable, "-c",
                   "import sys; sys.path.insert(0, %r); import test_book_leaks as t; "
                   "t._scan_page_process()" % str(Path(__file__).resolve().parent)]
        env = dict(os.environ, MPLBACKEND="Agg")
        for attempt in range(2):
            proc = subprocess.run(command, input=json.dumps({"name": name, "cells": cells}),
                                  capture_output=True, text=True, cwd=str(ROOT), env=env,
                                  timeout=900)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            unparsed.append(f"{name}: the scan of this page died (exit {proc.returncode}): {tail}")
            continue
        result = json.loads(proc.stdout.rstrip().splitlines()[-1])
        findings += [tuple(f) for f in result["findings"]]
        unparsed += result["unparsed"]
    return findings, unparsed


def functional_report(findings):
    rows = "\n".join(f"  {page}: {fn}() computes {graded}'s {', '.join(t)} for the contract"
                     for page, fn, graded, t in findings)
    return (f"{len(findings)} page function(s) reproduce a graded function:\n{rows}\n"
            "Teach the idea on one image or one channel, or show the pieces without the "
            "batched, padded, strided assembly; the assembled layer is the exercise's answer.")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def secrets():
    missing = [p for p in (CHECKS, REFERENCE) if not p.is_file()]
    assert any(ASSIGNMENT_CHECKS.rglob("*.py")), "no modules of checks in autograder/assignments/"
    assert not missing, f"missing sources of the secrets: {missing}"
    found = {
        "solution": solution_lines(),
        "hidden check": checks_lines(),
        "reference body": reference_body_lines(),
    }
    return found


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        msg = f"the book is not built ({SITE.relative_to(ROOT)} has no index.html); " \
              "run: bash scripts/build_book.sh"
        if in_ci():
            pytest.fail(msg + " (CI is set: the built book is required)")
        pytest.skip(msg)
    return SITE


# --------------------------------------------------------------------------- tests

def test_secrets_are_found(secrets):
    """The scan compares against something: a broken extractor must not pass vacuously."""
    assert list(SOLUTIONS.rglob("*.ipynb")), "no solution notebooks under solutions/"
    assert len(secrets["solution"]) >= 10, secrets["solution"]
    assert len(secrets["hidden check"]) >= 20
    assert len(secrets["reference body"]) >= 5, secrets["reference body"]


def test_site_has_no_leaks(site, secrets):
    findings = scan(site, secrets)
    assert not findings, report(findings, "the built book (_build/html)")


def test_site_downloads_are_scanned(site):
    """The exercise notebooks offered for download are part of the scan."""
    names = {p.name for p in (site / "_downloads").rglob("*.ipynb")}
    assert {"convolution.ipynb", "pooling.ipynb"} <= names, names


def test_site_does_not_publish_the_checks(site):
    published = [p for p in site.rglob("checks.py")]
    assert not published, f"the hidden checks are published: {published}"
    hits = []
    for path, text, _ in documents(site):
        if path.suffix == ".js" and "_static" in path.parts:
            continue
        for needle in CHECKS_IMPORTS:
            if needle in text:
                hits.append((path.relative_to(site).as_posix(), needle))
    assert not hits, f"the book imports or names the checks module: {hits}"


def test_exercises_have_no_leaks(secrets):
    assert EXERCISES.is_dir() and list(EXERCISES.rglob("*.ipynb")), "no released exercises"
    released = sorted(p.name for p in EXERCISES.iterdir() if p.is_dir())
    assert set(released) <= set(assignments()), released
    for name in released:
        findings = scan(EXERCISES / name, secrets_for(name, secrets))
        assert not findings, report(findings, f"exercises/{name}/")


def test_may_show_is_needed_and_narrow(secrets):
    """exercises/cnn_network does hold the cnn_layers layers (so the exception is real), and
    an exception never covers an assignment's own solutions."""
    held = scan(EXERCISES / "cnn_network", {"solution": solution_lines(SOLUTIONS / "cnn_layers")})
    assert held, "exercises/cnn_network shows no cnn_layers layer: MAY_SHOW is not needed"
    for name, shown in MAY_SHOW.items():
        assert name not in shown
        shown_lines = set().union(*(solution_lines(SOLUTIONS / o) for o in shown))
        own = set(solution_lines(SOLUTIONS / name)) - shown_lines
        assert own and own <= set(solution_secrets_for(name))
    # the book may show no solution at all: the site scan uses every assignment's lines
    assert set(solution_lines(SOLUTIONS / "cnn_layers")) <= set(secrets["solution"])


# --------------------------------------------------------------------------- self-tests

def _planted_page(tmp_path, body):
    """A copy of a real built page (or a minimal one) with body added to its article."""
    site = tmp_path / "site"
    site.mkdir(parents=True)
    real = SITE / "book" / "notation.html"
    page = real.read_text(encoding="utf-8") if real.is_file() else \
        "<html><body><main></main></body></html>"
    planted = page.replace("</main>", body + "</main>", 1)
    if planted == page:
        planted = page + body
    (site / "page.html").write_text(planted, encoding="utf-8")
    return site


def _highlighted(line):
    """line as Pygments would render it: one span per token, HTML-escaped."""
    tokens = re.findall(r"\w+|\s+|[^\w\s]", line)
    spans = "".join(t if t.isspace() else f'<span class="n">{html.escape(t)}</span>'
                    for t in tokens)
    return f'<div class="highlight"><pre>{spans}</pre></div>'


def test_scanner_finds_planted_leaks(tmp_path, secrets):
    clean = _planted_page(tmp_path / "clean", "<p>Nothing to see.</p>")
    assert scan(clean, secrets) == []

    for kind in ("solution", "hidden check", "reference body"):
        written = next(iter(secrets[kind].values()))
        # re-indented and highlighted, as in a rendered code cell
        site = _planted_page(tmp_path / kind.replace(" ", "_"), _highlighted("    " + written))
        found = scan(site, secrets)
        assert any(k == kind for _, k, _ in found), (kind, written, found)

    # a solution line inside a downloadable notebook
    written = next(iter(secrets["solution"].values()))
    site = _planted_page(tmp_path / "download", "<p>ok</p>")
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["def f(x):\n", f"    {written}\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    target = site / "_downloads" / "0123abcd" / "convolution.ipynb"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    found = scan(site, secrets)
    assert ("_downloads/0123abcd/convolution.ipynb", "solution", written) in found, found

    # a marker left by an unfinished release
    site = _planted_page(tmp_path / "marker", "<pre>### BEGIN SOLUTION</pre>")
    assert any(k == "nbgrader marker" for _, k, _ in scan(site, secrets))


def test_scanner_finds_a_leak_in_a_copied_exercise(tmp_path, secrets):
    """Plant a solution line into a temporary copy of the released exercises."""
    assert EXERCISES.is_dir(), "no released exercises"
    copy = tmp_path / "exercises"
    shutil.copytree(EXERCISES, copy)
    path = sorted(copy.rglob("*.ipynb"))[0]
    nb = json.loads(path.read_text(encoding="utf-8"))
    written = next(iter(secrets["solution"].values()))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"][0]
    src = code["source"]
    code["source"] = ("".join(src) if isinstance(src, list) else src) + "\n    " + written
    path.write_text(json.dumps(nb), encoding="utf-8")
    found = scan(copy, secrets)
    assert any(k == "solution" and ln == written for _, k, ln in found), found


def test_trivial_lines_are_ignored():
    assert is_trivial("    return out")
    assert is_trivial("pass")
    assert is_trivial("    H_out = (H + 2 * pad - HH) // stride + 1")
    assert is_trivial("    x, w, b, stride, pad = cache")
    assert is_trivial("    out, cache = conv_forward(x, w, b, stride=stride, pad=pad)")
    assert is_trivial("    _, _, H_out, W_out = dout.shape")
    assert not is_trivial("    dx = dxp[:, :, pad:pad + H, pad:pad + W]")
    assert not is_trivial("    db = dout.sum(axis=(0, 2, 3))")
    assert squash(strip_comment("a = f(x)  # the '#' in a comment")) == "a=f(x)"
    assert squash(strip_comment("s = '#not a comment'")) == "s='#notacomment'"


# --------------------------------------------------------------------------- functional

@pytest.fixture(scope="module")
def contract_cases():
    return _contract_cases()


def test_no_page_function_reproduces_a_graded_function(contract_cases):
    sources = page_sources()
    assert len(sources) >= 10 and sum(len(c) for _, c in sources) >= 100, \
        "the book's sources were not found"
    findings, unparsed = functional_leaks(sources, contract_cases)
    assert not unparsed, "code the scan could not see into:\n  " + "\n  ".join(unparsed)
    assert not findings, functional_report(findings)


# Planted functional leaks: correct layers with every name changed, which no verbatim line
# comparison can find. Each must be caught, under the graded function it reproduces.
PLANTED_FUNCTIONAL = {
    "conv_forward": '''
```{code-cell} ipython3
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view as swv
AXES = (2, 3)
```

The forward pass, for every image at once:

```{code-cell} ipython3
:tags: [hide-input]

def layer(a, k, c, s=1, q=0):
    t = np.pad(a, ((0, 0), (0, 0), (q, q), (q, q)))
    P = (t.shape[2] - k.shape[2]) // s + 1
    Q = (t.shape[3] - k.shape[3]) // s + 1
    v = swv(t, k.shape[2:], axis=AXES)[:, :, ::s, ::s][:, :, :P, :Q]
    return np.einsum("abcdef,gbef->agcd", v, k) + c[None, :, None, None], (a, k, c, s, q)
```
''',
    "conv_backward": '''
```{code-cell} ipython3
import numpy as np

def grads(g, memo):
    a, k, c, s, q = memo
    t = np.pad(a, ((0, 0), (0, 0), (q, q), (q, q)))
    dt, dk = np.zeros_like(t), np.zeros_like(k)
    for r in range(g.shape[2]):
        for z in range(g.shape[3]):
            patch = t[:, :, r*s:r*s + k.shape[2], z*s:z*s + k.shape[3]]
            dk += np.tensordot(g[:, :, r, z], patch, axes=(0, 0))
            dt[:, :, r*s:r*s + k.shape[2], z*s:z*s + k.shape[3]] += np.tensordot(g[:, :, r, z], k, axes=(1, 0))
    return dt[:, :, q:q + a.shape[2], q:q + a.shape[3]], dk, g.sum(axis=(0, 2, 3))
```
''',
    "maxpool_forward": '''
```python
import numpy as np
def squeeze(img, k=2, s=2):
    R, S = (img.shape[2] - k) // s + 1, (img.shape[3] - k) // s + 1
    res = np.empty(img.shape[:2] + (R, S))
    for r in range(R):
        for z in range(S):
            res[:, :, r, z] = img[:, :, r*s:r*s + k, z*s:z*s + k].max(axis=(2, 3))
    return res, (img, k, s)
```
''',
    "maxpool_backward": '''
```{code-cell} ipython3
import numpy as np
route = lambda g, memo: _route(g, *memo)

def _route(g, img, k, s):
    back = np.zeros_like(img)
    for r in range(g.shape[2]):
        for z in range(g.shape[3]):
            blk = img[:, :, r*s:r*s + k, z*s:z*s + k].reshape(img.shape[0], img.shape[1], -1)
            at = blk.argmax(axis=2)
            for n in range(img.shape[0]):
                for ch in range(img.shape[1]):
                    back[n, ch, r*s + at[n, ch] // k, z*s + at[n, ch] % k] += g[n, ch, r, z]
    return back
```
''',
}

PLANTED_FUNCTIONAL["softmax_loss"] = '''
```{code-cell} ipython3
import numpy as np

def xent(z, t):
    z = z - z.max(axis=1, keepdims=True)
    q = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    g = q.copy()
    g[np.arange(len(t)), t] -= 1
    return -np.log(q[np.arange(len(t)), t]).mean(), g / len(t)
```
'''
PLANTED_FUNCTIONAL["avgpool_backward"] = '''
```python
import numpy as np
def spread(g, memo):
    img, k, s = memo
    back = np.zeros(img.shape)
    for r in range(g.shape[2]):
        for z in range(g.shape[3]):
            back[:, :, r*s:r*s + k, z*s:z*s + k] += g[:, :, r:r + 1, z:z + 1] / k ** 2
    return back
```
'''

# What the pages may keep: the same ideas narrowed to one image and one channel, a layer
# that calls the instructor's reference (imported, or handed over by convbook.load_layers),
# and pieces without the padded, batched assembly.
PLANTED_NARROW = '''
```{code-cell} ipython3
import numpy as np
from scipy.signal import correlate2d
from autograder.reference import conv_forward

def one_image(x2d, w2d, b0, stride=1):
    return correlate2d(x2d, w2d, mode="valid")[::stride, ::stride] + b0

def calls_the_reference(x, w, b, stride, pad):
    return conv_forward(x, w, b, stride, pad)
```

```{code-cell} ipython3
from convbook import load_layers
conv_backward = load_layers("conv_backward")

def dx_through_load_layers(dout, cache):
    return conv_backward(dout, cache)[0]
```

```{code-cell} ipython3

def im2col(xp, HH, WW, stride):
    C, Hp, Wp = xp.shape
    Ho, Wo = (Hp - HH) // stride + 1, (Wp - WW) // stride + 1
    cols = np.empty((C, HH, WW, Ho, Wo))
    for u in range(HH):
        for v in range(WW):
            cols[:, u, v] = xp[:, u:u + stride * Ho:stride, v:v + stride * Wo:stride]
    return cols.reshape(C * HH * WW, Ho * Wo)
```
'''


PLANTED_FUNCTIONAL["conv1d_forward"] = '''
```{code-cell} ipython3
import numpy as np

def along(a, k, c, s=1, q=0):
    t = np.pad(a, ((0, 0), (0, 0), (q, q)))
    n = (t.shape[2] - k.shape[2]) // s + 1
    taps = np.stack([t[:, :, i * s:i * s + k.shape[2]] for i in range(n)], axis=2)
    return np.einsum("bcnk,fck->bfn", taps, k) + c[None, :, None], None
```
'''

PLANTED_FUNCTIONAL["cnn_loss"] = '''
```{code-cell} ipython3
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view as swv

def whole(theta, batch):
    k = theta["W1"].shape[2]
    q = (k - 1) // 2
    t = np.pad(batch, ((0, 0), (0, 0), (q, q), (q, q)))
    h = np.einsum("bchwuv,fcuv->bfhw", swv(t, (k, k), axis=(2, 3)), theta["W1"])
    h = np.maximum(h + theta["b1"][None, :, None, None], 0)
    B, F, H, W = h.shape
    m = h[:, :, :H // 2 * 2, :W // 2 * 2].reshape(B, F, H // 2, 2, W // 2, 2).max(axis=(3, 5))
    return m.reshape(B, -1) @ theta["W2"] + theta["b2"]
```
'''


@pytest.mark.parametrize("graded", sorted(PLANTED_FUNCTIONAL))
def test_planted_functional_leak_is_caught(graded, contract_cases):
    page = PLANTED_FUNCTIONAL[graded]
    findings, unparsed = functional_leaks([("planted.md", code_cells(page))], contract_cases)
    assert not unparsed, unparsed
    assert any(g == graded for _, _, g, _ in findings), findings
    # and under that graded function only
    assert all(g == graded for _, _, g, _ in findings), findings


def test_narrow_code_is_not_a_functional_leak(contract_cases):
    cells = code_cells(PLANTED_NARROW)
    functions, unparsed = run_page("narrow.md", cells)
    assert not unparsed and set(functions) >= {"one_image", "calls_the_reference", "im2col",
                                               "dx_through_load_layers"}
    findings, _ = functional_leaks([("narrow.md", cells)], contract_cases)
    assert findings == [], findings


def test_code_cells_are_extracted_with_options_and_magics():
    page = ("text\n```{code-cell} ipython3\n---\nmystnb:\n  markdown_format: gfm\n---\n"
            "a = 1\n```\n\n```{code-cell} ipython3\n:tags: [hide-input]\n\n%matplotlib inline\n"
            "b = 2\n```\n\n````{admonition} x\n```python\nc = 3\n```\n````\n"
            "```text\nnot code\n```\n")
    cells = code_cells(page)
    assert [c.strip() for c in cells] == ["a = 1", "# %matplotlib inline\nb = 2", "c = 3"]
