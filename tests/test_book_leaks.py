"""The published book and the released exercises must not give the solutions away.

Scanned: every text file of the built site ``_build/html`` (the pages, their sources,
the search index and the notebooks offered for download under ``_downloads``) and every
file under ``exercises/``. Forbidden there:

* nbgrader's markers (``BEGIN SOLUTION``, ``END SOLUTION``, ``HIDDEN TESTS``);
* any non-trivial line of a solution region of ``solutions/**/*.ipynb``;
* any distinctive line of the hidden checks (``autograder/checks.py``) and of the
  bodies of the reference ``conv_forward``, ``conv_backward``, ``maxpool_forward`` and
  ``maxpool_backward`` (the book imports and calls these, it never displays them);
* the checks module itself: a published ``checks.py`` or an import of it.

Lines are compared with all whitespace removed, so re-indentation, line wrapping inside
a statement or syntax highlighting (one HTML element per token) do not hide a copy.

Build the site first (``bash scripts/build_book.sh``). Without it the site tests are
skipped, except under CI (``CI`` set), where a missing site is a failure.
"""
import ast
import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
EXERCISES = ROOT / "exercises"
SOLUTIONS = ROOT / "solutions"
CHECKS = ROOT / "autograder" / "checks.py"
REFERENCE = ROOT / "autograder" / "reference.py"
SECRET_FUNCTIONS = ("conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward")
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS")
CHECKS_IMPORTS = ("autograder.checks", "from autograder import checks",
                  "import autograder.checks")

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


def checks_lines(path=CHECKS):
    """Distinctive code lines of the hidden checks (docstrings and comments left out)."""
    source = Path(path).read_text(encoding="utf-8")
    skip = _docstring_lines(ast.parse(source))
    lines = [ln for k, ln in enumerate(source.splitlines(), 1)
             if k not in skip and not ln.lstrip().startswith("#")]
    return distinctive(lines)


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


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def secrets():
    missing = [p for p in (CHECKS, REFERENCE) if not p.is_file()]
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
    findings = scan(EXERCISES, secrets)
    assert not findings, report(findings, "exercises/")


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
