"""The built book, driven in headless Chromium: every page of the table of contents loads
cleanly (no JavaScript error, no outside request), renders its math (no raw TeX left),
shows its images and numbered figures with real alt texts, and has working links and
downloads. At 1280, 1024 and 390 px every display equation fits the box it gets (MathJax
breaks long ones into lines; a wider one would have a hidden part) and no inline formula
is clipped or scrolled; at 1280 px no code or output block scrolls sideways; at 390 px no
page scrolls sideways, every figure's smallest text renders at 9 px or more (each figure
records its text size when the book is built, see MIN_FIGURE_TEXT_PX) and the animation
controls fit the column. Every check also runs on a planted page that has its defect
(test_reading_checks_catch_planted_defects, test_figure_text_check_catches_planted_defects). Full-page screenshots of each page (as
loaded, and with every dropdown opened at each width) go to ci-artifacts/screenshots/.

What CI needs (all from the project's own files):

* the system's Chromium: ``apt-get install chromium`` (done by scripts/install_system.sh);
  Playwright drives it through ``executable_path``. Never run ``playwright install``:
  it downloads a browser build of its own. Another binary can be given with the
  environment variable ``CHROMIUM``.
* the Python package ``playwright`` (pinned in requirements.txt).
* the built book: ``bash scripts/build_book.sh``. It installs the pinned MathJax 4 and
  its font with ``npm install --no-save --no-package-lock mathjax@4.1.3
  @mathjax/mathjax-newcm-font@4.1.3`` (Debian package ``npm``) into node_modules/, and
  _config.yml serves the files the pages load from the site itself (``_static/mathjax/``),
  so that no page needs the network.
* then: ``python -m pytest -m browser tests/test_browser.py``

Without the built book or without Chromium the tests are skipped, except under CI (the
environment variable ``CI`` set), where either is a failure.
"""
import base64
import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import shutil
import tempfile
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import matplotlib
import nbformat
import PIL.Image
import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "ci-artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
EXERCISES = ("convolution.ipynb", "pooling.ipynb")
LOAD_TIMEOUT_MS = 60_000

# Console messages of the pinned theme stack that say nothing about the book; every other
# console error, page error or failed request fails the test.
KNOWN_UPSTREAM_NOISE = [
    # pydata-sphinx-theme (under sphinx-book-theme 1.3) starts a first-time visitor with
    # an empty colour mode and logs this before falling back to "auto"; sphinx-book-theme
    # offers no option to set a default.
    re.compile(r"^console error: Got invalid theme mode: \. Resetting to auto\."),
]


# Causes we know, added to a failure message to save the reader a search.
HINTS = [
    (re.compile(r"font-awesome/4\.4\.0"),
     "matplotlib's Animation.to_jshtml() links Font Awesome 4 from a CDN; drop that <link> "
     "from its output, e.g. re.sub(r'<link[^>]*font-awesome[^>]*>', '', anim.to_jshtml()): "
     "the theme's own Font Awesome already draws the player's icons"),
]


def real_problems(problems):
    return [p for p in problems if not any(rx.search(p) for rx in KNOWN_UPSTREAM_NOISE)]


def with_hints(problems):
    hints = [h for rx, h in HINTS if any(rx.search(p) for p in problems)]
    return problems + [f"hint: {h}" for h in hints]


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(msg):
    if in_ci():
        pytest.fail(msg + " (CI is set: this is required)")
    pytest.skip(msg)


def toc_docnames(toc_path=ROOT / "_toc.yml"):
    """Every document of _toc.yml in reading order, e.g. 'book/intro'."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            for key in ("sections", "chapters", "parts"):
                walk(entry.get(key))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key))
    return [re.sub(r"\.(md|ipynb|rst)$", "", n) for n in names]


DOCNAMES = toc_docnames()


def is_chapter(docname):
    return re.match(r"\d\d_", Path(docname).name) is not None


# --------------------------------------------------------------------------- static checks

class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value)


class _HiddenInputCells(HTMLParser):
    """Code cells whose source is folded away (tag hide-input), and whether each has an output."""

    def __init__(self):
        super().__init__()
        self.stack = []          # for each open div: index into self.cells, or None
        self.cells = []          # [has_output] per hide-input cell

    def handle_starttag(self, tag, attrs):
        if tag != "div":
            return
        classes = (dict(attrs).get("class") or "").split()
        if "cell" in classes and "tag_hide-input" in classes:
            self.cells.append(False)
            self.stack.append(len(self.cells) - 1)
            return
        if "cell_output" in classes:
            for idx in reversed(self.stack):
                if idx is not None:
                    self.cells[idx] = True
                    break
        self.stack.append(None)

    def handle_endtag(self, tag):
        if tag == "div" and self.stack:
            self.stack.pop()


def empty_code_bars(html_text):
    """How many hide-input cells show nothing but a 'Show code cell source' bar."""
    parser = _HiddenInputCells()
    parser.feed(html_text)
    return parser.cells.count(False)


@functools.lru_cache(maxsize=None)
def anchors_of(path):
    parser = _Anchors()
    parser.feed(Path(path).read_text(encoding="utf-8"))
    return frozenset(parser.ids)


def local_file(url, base):
    """The file under SITE that a URL of the local server points to."""
    path = unquote(urlsplit(url).path)
    base_path = urlsplit(base).path
    rel = path[len(base_path):] if path.startswith(base_path) else path.lstrip("/")
    target = SITE / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    return target


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        skip_or_fail(f"the book is not built ({SITE} has no index.html): "
                     "run bash scripts/build_book.sh")
    return SITE


@pytest.fixture(scope="module")
def server(site):
    """Serve the site on 127.0.0.1 at a free port; yields the base URL."""
    with serve(site) as base:
        yield base


@contextlib.contextmanager
def serve(folder):
    """Serve folder on 127.0.0.1 at a free port; yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser_context():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -r requirements.txt)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    profile = tempfile.mkdtemp(prefix="book-browser-profile-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, service_workers="block")
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots():
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


# --------------------------------------------------------------------------- one page

WAIT_FOR_MATHJAX = """
async () => {
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.promise) return false;
  await mj.startup.promise;
  if (mj.typesetPromise) await mj.typesetPromise();
  return true;
}
"""

WAIT_FOR_IMAGES = """
async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) img.loading = 'eager';
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done);
                            img.addEventListener('error', done); })));
  return imgs.map(img => ({src: img.src.slice(0, 120), ok: img.complete && img.naturalWidth > 0}));
}
"""

TEX_ERRORS = """
() => {
  const bad = [];
  const doc = window.MathJax && MathJax.startup && MathJax.startup.document;
  if (!doc || !doc.math) return bad;
  for (const item of doc.math) {
    let message = null;
    if (item.root && item.root.walkTree) {
      item.root.walkTree(node => {
        if (message === null && node.isKind && node.isKind('merror')) {
          message = node.attributes.get('data-mjx-error') || 'error';
        }
      });
    }
    if (message !== null) bad.push(`${message}: ${String(item.math).slice(0, 160)}`);
  }
  return bad;
}
"""

PAGE_FACTS = """
() => {
  const main = document.querySelector('main') || document.body;
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    math: math.length,
    math_unrendered: math.filter(m => !m.querySelector('mjx-container')).length,
    mjx: document.querySelectorAll('mjx-container').length,
    mjx_errors: document.querySelectorAll('[data-mml-node="merror"], mjx-merror').length,
    figures: main.querySelectorAll('img').length,
    animations: main.querySelectorAll('.animation, [id^="_anim_img"]').length,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    downloads: Array.from(main.querySelectorAll('a[href*="_downloads/"]')).map(a => a.href),
  };
}
"""


def visit(context, url, base, width=1280):
    """Load url in a window `width` px wide; return the page facts and every problem seen
    while loading."""
    problems = []
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})

    def on_request(route):
        if route.request.url.startswith(base) or not route.request.url.startswith("http"):
            route.continue_()
        else:  # the book must work offline: an outside request is an error
            problems.append(f"outside request: {route.request.url}")
            route.abort()

    page.route("**/*", on_request)
    page.on("console", lambda m: m.type == "error" and problems.append(
        f"console error: {m.text} ({m.location.get('url', '')})"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: r.url.startswith(base) and problems.append(
        f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.url.startswith(base) and r.status >= 400 and problems.append(
        f"HTTP {r.status}: {r.url}"))
    page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)
    has_mathjax = page.evaluate(WAIT_FOR_MATHJAX)
    images = page.evaluate(WAIT_FOR_IMAGES)
    facts = page.evaluate(PAGE_FACTS)
    facts["has_mathjax"] = has_mathjax
    facts["tex_errors"] = page.evaluate(TEX_ERRORS) if has_mathjax else []
    facts["images"] = images
    facts["raw_tex"] = page.evaluate(RAW_TEX)
    facts["figures_alt"] = page.evaluate(FIGURES)
    return page, facts, problems


@pytest.mark.parametrize("docname", DOCNAMES)
def test_page(docname, site, server, browser_context, shots):
    html_file = site / f"{docname}.html"
    assert html_file.is_file(), f"{docname} is in _toc.yml but {html_file} was not built"
    url = server + f"{docname}.html"
    page, facts, problems = visit(browser_context, url, server)
    try:
        page.screenshot(path=str(shots / f"{Path(docname).name}.png"), full_page=True)
    finally:
        page.close()

    failures = with_hints(real_problems(problems))

    if facts["math"]:
        if not facts["has_mathjax"]:
            failures.append("the page has math but MathJax did not start")
        elif facts["mjx"] == 0:
            failures.append("no mjx-container: the math is not rendered")
        if facts["math_unrendered"]:
            failures.append(f"{facts['math_unrendered']} of {facts['math']} formulas not rendered")
        if facts["mjx_errors"] or facts["tex_errors"]:
            failures.append(f"{facts['mjx_errors']} TeX error(s):")
            failures += [f"  {e}" for e in facts["tex_errors"]]

    failures += [f"image did not load: {i['src']}" for i in facts["images"] if not i["ok"]]
    failures += [f"raw TeX (not typeset) {t}" for t in facts["raw_tex"]]
    figures = figure_problems(facts["figures_alt"])
    if docname in FIGURES_PENDING:
        if not figures:
            failures.append(f"{docname}'s figures are numbered and described now: remove it "
                            "from FIGURES_PENDING")
    else:
        failures += figures

    for href in facts["links"]:
        if not href.startswith(server):
            continue
        target_url, anchor = urldefrag(href)
        target = local_file(target_url, server)
        if not target.is_file():
            failures.append(f"broken link: {href} (no file {target.relative_to(site)})")
        elif anchor and target.suffix == ".html" and unquote(anchor) not in anchors_of(target):
            failures.append(f"broken link: {href} (no #{anchor} in {target.relative_to(site)})")

    notebooks = sorted({urldefrag(h)[0] for h in facts["downloads"] if h.endswith(".ipynb")})
    for nb_url in notebooks:
        response = browser_context.request.get(nb_url)
        if response.status != 200:
            failures.append(f"download {nb_url}: HTTP {response.status}")
            continue
        try:
            nbformat.validate(nbformat.reads(response.text(), as_version=4))
        except Exception as exc:  # invalid JSON or not a notebook
            failures.append(f"download {nb_url} is not a valid notebook: {exc}")

    if is_chapter(docname) or docname == DOCNAMES[0]:
        names = {Path(urlsplit(u).path).name for u in notebooks}
        if not names & set(EXERCISES):
            failures.append(f"no exercise download link ({' or '.join(EXERCISES)})")
    if is_chapter(docname) and facts["figures"] + facts["animations"] == 0:
        failures.append("a chapter needs at least one figure or animation")

    assert not failures, f"{docname}:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- reading checks
# Each check below is a function of a loaded page that returns what is wrong on it; the
# same function runs on the book's pages and on a planted page that has the defect
# (test_reading_checks_catch_planted_defects), so each can be seen to fail.

# Inline formulas (not display equations) of the text column that do not show whole: a
# part lies outside a box that hides or scrolls what does not fit (the theme's span.math
# once had overflow: hidden), or outside the column.
INLINE_CLIPPED = r"""
() => {
  const bad = [];
  const main = document.querySelector('main') || document.body;
  const column = main.querySelector('article') || main;
  const cr = column.getBoundingClientRect();
  const where = e => {
    const section = e.closest('section[id]');
    return section ? '#' + section.id : '';
  };
  for (const mjx of column.querySelectorAll('mjx-container:not([display="true"])')) {
    const rects = Array.from(mjx.querySelectorAll('svg'))
      .filter(svg => !svg.parentElement.closest('svg'))
      .map(svg => svg.getBoundingClientRect())
      .filter(r => r.width > 0 && r.height > 0);
    if (!rects.length) continue;                       // not laid out (a closed dropdown)
    const left = Math.min(...rects.map(r => r.left));
    const right = Math.max(...rects.map(r => r.right));
    let why = null;
    for (let a = mjx.parentElement; a && a !== column.parentElement && !why; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === 'visible') continue;
      const ar = a.getBoundingClientRect();
      const boxLeft = ar.left + a.clientLeft, boxRight = boxLeft + a.clientWidth;
      if (right > boxRight + 1 || left < boxLeft - 1) {
        why = `${ox === 'hidden' || ox === 'clip' ? 'clipped' : 'scrolls'} in `
            + `${a.tagName.toLowerCase()}.${String(a.className).split(' ')[0]}`
            + ` (formula ${Math.round(left)}..${Math.round(right)} px,`
            + ` box ${Math.round(boxLeft)}..${Math.round(boxRight)} px)`;
      }
    }
    if (!why && (right > cr.right + 1 || left < cr.left - 1)) {
      why = `outside the column (formula ${Math.round(left)}..${Math.round(right)} px,`
          + ` column ${Math.round(cr.left)}..${Math.round(cr.right)} px)`;
    }
    if (why) {
      const tex = (mjx.closest('.math') || mjx).getAttribute('data-tex')
        || (mjx.getAttribute('aria-label') || '');
      bad.push(`${where(mjx)} ${why}: ${tex.slice(0, 80)}`);
    }
  }
  return bad;
}
"""

# TeX that MathJax did not typeset: dollar-delimited text, \( \) or \[ \], or a TeX
# command, in the text a reader sees (code, MathJax's own output and scripts excepted).
RAW_TEX = r"""
() => {
  const bad = [];
  const root = document.querySelector('main') || document.body;
  const skip = 'pre, code, kbd, samp, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement && n.parentElement.closest(skip)
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const rx = new RegExp(String.raw`\$[^$\s][^$]*\$|\\[()\[\]]|\\(frac|sum|begin|end|left|right|`
                        + String.raw`math[a-z]+|partial|cdot|times|star|ast|alpha|sigma|text)\b`);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.textContent.match(rx);
    if (m) {
      const section = n.parentElement.closest('section[id]');
      const at = Math.max(0, m.index - 30);
      bad.push(`${section ? '#' + section.id : ''}: ...${n.textContent.slice(at, m.index + 50)
                                                        .replace(/\s+/g, ' ')}...`);
    }
  }
  return bad;
}
"""

# Display equations that MathJax broke into lines for a column narrower than theirs. To
# find the width it may fill, MathJax puts a test box of width 100% into the equation's
# parent; when that parent is a row of flex items (the theme's, with the equation number
# and the TeX source still unrendered), the box is squeezed, and at 1024 and 1280 px the
# book's equations were broken for a column of 180-350 px instead of 630.
NARROW_LINEBREAKS = r"""
() => Array.from(MathJax.startup.document.math).filter(m => m.display && m.typesetRoot
    && m.metrics).map(m => {
  const box = m.typesetRoot.closest('div.math') || m.typesetRoot.parentElement;
  const eqno = box.querySelector('span.eqno');
  return {id: box.id || '', label: eqno ? eqno.textContent.replace('#', '').trim() : '',
          measured: Math.round(m.metrics.containerWidth), column: box.clientWidth,
          source: m.math.trim().replace(/\s+/g, ' ').slice(0, 60)};
}).filter(r => r.column > 0 && r.measured < 0.8 * r.column)
"""

# Code and output blocks wider than the column: they scroll sideways, so a reader sees
# the start of their long lines only.
WIDE_CODE = r"""
() => {
  const main = document.querySelector('main') || document.body;
  return Array.from(main.querySelectorAll('pre')).filter(p => p.getClientRects().length
      && p.scrollWidth > p.clientWidth + 1).map(p => {
    const section = p.closest('section[id]');
    const lines = p.textContent.split('\n');
    const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
    return `${section ? '#' + section.id : ''} ${p.scrollWidth} px > ${p.clientWidth} px, `
         + `${longest.length} characters: ${longest.trim().slice(0, 70)}`;
  });
}
"""


# Every image of the text: its alt text, and whether a figure drawn by a cell is a numbered
# figure (numfig). An animation's frame needs an alt text, not a number.
FIGURES = r"""
() => Array.from((document.querySelector('main') || document.body).querySelectorAll('img'))
  .map(img => {
    const figure = img.closest('figure');
    return {src: (img.getAttribute('src') || '').slice(-60), alt: img.getAttribute('alt') || '',
            numbered: !!(figure && figure.querySelector('figcaption .caption-number')),
            drawn: !!img.closest('.cell_output') && !/^_anim_img/.test(img.id || '')};
  })
"""
PATH_LIKE = re.compile(r"(^|/)[^ ]*\.(png|jpe?g|gif|svg|webp)$", re.I)


# Pages whose figures are allowed to lack a number or an alt text for a while; their other
# checks hold, and this one fails once it is no longer needed. None today.
FIGURES_PENDING = set()


def figure_problems(images):
    """Images whose alt text is missing or a file path, and figures drawn by a cell that
    have no number."""
    bad = [f"image without a real alt text (alt={i['alt']!r}): {i['src']}" for i in images
           if not i["alt"].strip() or PATH_LIKE.search(i["alt"].strip())]
    bad += [f"figure without a number (give its cell mystnb.figure caption and name): "
            f"{i['src']}" for i in images if i["drawn"] and not i["numbered"]]
    return bad


# --------------------------------------------------------------------------- widths

# Window widths at which every display equation must fit its column whole, and the phone
# width at which the page itself must not scroll sideways (a wide equation may scroll inside
# its own box there, never the page).
DESKTOP_WIDTHS = (1024, 1280)
PHONE_WIDTH = 390
SLACK_PX = 1.0          # sub-pixel rounding of layout boxes

# Open every dropdown (practice answers) and every hidden input, so that what a reader can
# open is measured too.
OPEN_EVERYTHING = """
() => {
  for (const d of document.querySelectorAll('details')) d.open = true;
  for (const e of document.querySelectorAll('.toggle-hidden')) e.classList.remove('toggle-hidden');
  for (const b of document.querySelectorAll('button.toggle-button')) {
    const target = b.closest('.admonition, .cell, .tag_hide-input, .tag_hide-output');
    if (target) target.classList.remove('toggle-hidden');
  }
}
"""

# Every display equation: the width of the rendered formula against the width its own box
# gets on the page. The theme lays out an equation and its number side by side (a flex row)
# and lets the equation's box scroll, so a formula wider than that box has a hidden part.
MEASURE_EQUATIONS = """
() => {
  const rows = [];
  const containers = document.querySelectorAll('mjx-container[display="true"]');
  for (const mjx of containers) {
    const math = mjx.closest('div.math') || mjx.parentElement;
    const formula = mjx.querySelector('svg') || mjx;
    const fr = formula.getBoundingClientRect();
    if (fr.width === 0 && fr.height === 0) continue;          // not laid out (display: none)
    const st = getComputedStyle(mjx);
    const available = mjx.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
    const eqno = math.querySelector('.eqno');
    const label = eqno ? eqno.textContent.replace(/[^0-9.()]/g, '') : '';
    const source = (mjx.getAttribute('aria-label') || math.getAttribute('id') || '')
      || (math.textContent || '').trim();
    rows.push({label, id: math.id || '', width: Math.round(fr.width),
               available: Math.round(available), left: fr.left,
               right: fr.right, box_right: math.getBoundingClientRect().right,
               source: source.slice(0, 90)});
  }
  return rows;
}
"""

PAGE_WIDTH = """
() => ({inner: window.innerWidth,
        doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        wide: Array.from(document.querySelectorAll('main *')).filter(e => {
                const r = e.getBoundingClientRect();
                if (r.width === 0 || r.right <= window.innerWidth + 1) return false;
                // an element inside a box that scrolls sideways does not widen the page
                for (let a = e.parentElement; a; a = a.parentElement) {
                  const ox = getComputedStyle(a).overflowX;
                  if ((ox === 'auto' || ox === 'scroll' || ox === 'hidden') &&
                      a.getBoundingClientRect().right <= window.innerWidth + 1) return false;
                }
                return true;
              }).slice(0, 5).map(e => `${e.tagName.toLowerCase()}.${String(e.className).slice(0, 40)}`
                                       + ` right=${Math.round(e.getBoundingClientRect().right)}`)})
"""


def too_wide(rows):
    return [r for r in rows if r["width"] > r["available"] + SLACK_PX]


def settle(page):
    """Let the layout settle (two animation frames)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def width_failures(page, width):
    """What does not read at this window width: display equations wider than their box
    or broken into lines for a narrower column than theirs (every width), inline formulas
    clipped or scrolled (every width), code and output
    blocks wider than the column (1280 px), and at the phone width a page that scrolls
    sideways."""
    failures = []
    bad = too_wide(page.evaluate(MEASURE_EQUATIONS))
    if bad:
        failures.append(
            f"at {width} px, {len(bad)} display equations are wider than their box (break "
            "them into aligned lines, shorten names, or move conditions into the text):")
        failures += [f"  {r['label'] or r['id'] or '(unnumbered)'}: {r['width']} px"
                     f" > {r['available']} px  {r['source']}" for r in bad]
    narrow = page.evaluate(NARROW_LINEBREAKS)
    if narrow:
        failures.append(
            f"at {width} px, {len(narrow)} display equations were broken into lines for a "
            "column narrower than theirs (MathJax measured its test box in a squeezed "
            "flex row; see book.css):")
        failures += [f"  {r['label'] or r['id'] or '(unnumbered)'}: {r['measured']} px"
                     f" of {r['column']} px  {r['source']}" for r in narrow]
    clipped = page.evaluate(INLINE_CLIPPED)
    if clipped:
        failures.append(f"at {width} px, {len(clipped)} inline formulas do not show whole:")
        failures += [f"  {c}" for c in clipped]
    if width == max(DESKTOP_WIDTHS):
        wide = page.evaluate(WIDE_CODE)
        if wide:
            failures.append(f"at {width} px, {len(wide)} code or output blocks are wider than "
                            "the column (wrap the long lines):")
            failures += [f"  {w}" for w in wide]
    if width == PHONE_WIDTH:
        widths = page.evaluate(PAGE_WIDTH)
        scroll = max(widths["doc"], widths["body"])
        if scroll > widths["inner"] + SLACK_PX:
            failures.append(f"at {width} px the page is {scroll} px wide and scrolls "
                            f"sideways; widest elements: {widths['wide']}")
    return failures


@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_reads_at_every_width(docname, site, server, browser_context, shots):
    """At 1280, 1024 and 390 px no display equation is wider than the box it gets (MathJax
    breaks long ones into lines) and every inline formula shows whole; at 1280 px no code
    or output block scrolls sideways; at 390 px the page itself does not scroll sideways,
    every figure's text is at least MIN_FIGURE_TEXT_PX and the animation controls fit.
    One load and one full-page screenshot per width, with every dropdown and folded cell
    opened so that they are measured too."""
    failures = []
    for width in DESKTOP_WIDTHS + (PHONE_WIDTH,):
        # loaded at each width, as a reader's browser would: MathJax breaks lines to fit
        # the column it finds when it typesets
        page, facts, problems = visit(browser_context, server + f"{docname}.html", server,
                                      width=width)
        try:
            page.evaluate(OPEN_EVERYTHING)
            settle(page)
            failures += width_failures(page, width)
            if width == PHONE_WIDTH:
                failures += figure_text_failures(page, browser_context, width)
            page.screenshot(path=str(shots / f"{Path(docname).name}-{width}.png"),
                            full_page=True)
        finally:
            page.close()
    assert not failures, f"{docname}:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- figure text
# On a phone a figure is scaled down to the column, and its text with it. Every figure of
# the book records the size of its smallest text in pixels of its own image (convbook's
# FONT_PX_KEY: a text entry of the PNG, or the data-font-px attribute of an animation's
# frame), so that what a reader sees is that size times the image's shown width over its
# natural width. At 390 px it must be at least MIN_FIGURE_TEXT_PX CSS pixels: 9 px is
# the smallest size at which a figure's digits and labels stay legible without zooming on
# a phone (27 device pixels at the usual 3x density; a face's digits are about 6 CSS px
# tall there). It is below the text of the page (16 px), as a figure's labels are in
# print, and above the 5 to 8 px that the book's figures had shrunk to.
MIN_FIGURE_TEXT_PX = 9.0


def load_convbook():
    """The book's helper module (book/convbook.py), which records the text sizes."""
    matplotlib.use("Agg")
    spec = importlib.util.spec_from_file_location("convbook", ROOT / "book" / "convbook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONVBOOK = load_convbook()
FONT_PX_KEY = CONVBOOK.FONT_PX_KEY

FIGURE_IMAGES = r"""
() => Array.from((document.querySelector('main') || document.body).querySelectorAll('img'))
  .map(img => {
    const r = img.getBoundingClientRect();
    const section = img.closest('section[id]');
    return {src: img.currentSrc || img.src, shown: r.width, natural: img.naturalWidth,
            font_px: img.getAttribute('data-font-px'),
            where: (section ? '#' + section.id + ' ' : '')
                   + (img.getAttribute('src') || '').slice(0, 60).replace(/^data:.*/, '(frame)')};
  }).filter(i => i.shown > 0 && i.natural > 0)
"""

# The player's buttons and slider of every animation: each lies inside the text column.
ANIMATION_CONTROLS = r"""
() => {
  const bad = [];
  const main = document.querySelector('main') || document.body;
  const column = main.querySelector('article') || main;
  const cr = column.getBoundingClientRect();
  for (const c of main.querySelectorAll('.animation button, .animation input')) {
    const r = c.getBoundingClientRect();
    if (r.width === 0) continue;
    if (r.right > cr.right + 1 || r.left < cr.left - 1) {
      const section = c.closest('section[id]');
      bad.push(`${section ? '#' + section.id + ' ' : ''}${c.tagName.toLowerCase()}`
               + `.${String(c.className).split(' ')[0]} at ${Math.round(r.left)}..`
               + `${Math.round(r.right)} px, column ${Math.round(cr.left)}..`
               + `${Math.round(cr.right)} px`);
    }
  }
  return bad;
}
"""


def recorded_font_px(context, image):
    """The smallest text size recorded for an image, in pixels of the image; None for an
    image that records none, 0.0 for one that draws no text."""
    value = image["font_px"]
    if value is None:
        src = image["src"]
        if src.startswith("data:"):
            data = base64.b64decode(src.split(",", 1)[1])
        else:
            response = context.request.get(src)
            if response.status != 200:
                return None
            data = response.body()
        try:
            with PIL.Image.open(io.BytesIO(data)) as img:
                value = getattr(img, "text", {}).get(FONT_PX_KEY)
        except PIL.UnidentifiedImageError:
            return None
    if value is None:
        return None
    return 0.0 if value == "none" else float(value)


def figure_text_sizes(page, context):
    """[(where, rendered size in CSS px or None when unknown)] of every image shown."""
    rows = []
    for image in page.evaluate(FIGURE_IMAGES):
        px = recorded_font_px(context, image)
        shown = None if px is None else px * image["shown"] / image["natural"]
        rows.append((image["where"], shown))
    return rows


def figure_text_failures(page, context, width):
    failures = []
    sizes = figure_text_sizes(page, context)
    unknown = [w for w, px in sizes if px is None]
    if unknown:
        failures.append(f"at {width} px, {len(unknown)} images record no text size "
                        f"({FONT_PX_KEY}; draw them in a page that imports convbook):")
        failures += [f"  {w}" for w in unknown]
    small = [(w, px) for w, px in sizes if px is not None and 0 < px < MIN_FIGURE_TEXT_PX]
    if small:
        failures.append(f"at {width} px, the text of {len(small)} figures is smaller than "
                        f"{MIN_FIGURE_TEXT_PX:g} px (fewer panels per row, or larger type):")
        failures += [f"  {w}: {px:.1f} px" for w, px in small]
    controls = page.evaluate(ANIMATION_CONTROLS)
    if controls:
        failures.append(f"at {width} px, {len(controls)} animation controls lie outside "
                        "the column:")
        failures += [f"  {c}" for c in controls]
    return failures


# --------------------------------------------------------------------------- planted pages
# Small pages with one known defect each, served like the book (same MathJax, same
# configuration, same server code), on which the checks above must report the defect.

def site_mathjax(site):
    """The MathJax configuration script and loader of the built book, for a planted page
    served next to the site's _static/."""
    chapter = next(d for d in DOCNAMES if is_chapter(d))
    head = (site / f"{chapter}.html").read_text(encoding="utf-8")
    config = re.search(r"<script>window\.MathJax = .*?</script>", head, flags=re.S)
    loader = re.search(r'<script[^>]*src="(?:\.\./)*(_static/mathjax/[^"]+)"[^>]*></script>',
                       head)
    assert config and loader, f"{chapter}.html has no MathJax configuration or loader"
    return config.group(0) + f'<script src="{loader.group(1)}"></script>'


PLANTED_PAGE = """<!doctype html><html><head><meta charset="utf-8">{head}</head>
<body><main><article style="width: {column}px; padding: 0">{body}</article></main></body></html>"""
# An equation that no line break can narrow (a 1 x 30 matrix, or inline one long
# subscript), a long sum MathJax does break, and a short one.
WIDE_MATRIX = r"\begin{pmatrix}" + " & ".join(str(10 * i) for i in range(30)) + r"\end{pmatrix}"
LONG_SUM = " + ".join(f"x_{{{i}}} w_{{{i}}}" for i in range(40))
UNBREAKABLE = "x_{" + "0123456789" * 8 + "}"    # one subscript: no place to break
PLANTED = {
    "equations": (358, f"""
<div class="math" id="equation-wide">\\[ {WIDE_MATRIX} \\]</div>
<div class="math" id="equation-long">\\[ {LONG_SUM} \\]</div>
<div class="math" id="equation-narrow">\\[ x \\star w \\]</div>
<section id="clipped"><p>A formula no line break can narrow, in a box that hides what
does not fit (the theme's old span.math): <span class="math"
style="display: inline-flex; overflow: hidden; max-width: 100%">\\({UNBREAKABLE}\\)</span>
</p></section>
<section id="fits"><p>A formula that wraps with the text: <span class="math">\\({LONG_SUM}\\)</span>
and a short one, <span class="math">\\(dx_{{11}} = 5\\)</span>.</p></section>"""),
    "raw-tex": (684, """<section id="table"><p>The header $(N, C, H, W, F, k)$ and
<span class="math">\\(k \\times k\\)</span>.</p></section>"""),
    # the defect of sphinx-thebe under Sphinx 7.4: one inline script declared twice
    "js-error": (684, """<script>const THEBE_JS_URL = "thebe.js";</script>
<script>const THEBE_JS_URL = "thebe.js";</script><p>text</p>"""),
    # what the book's figures were: no number, the file path as alt text
    "figure": (684, """<div class="cell_output"><img src="_static/plot.png"
alt="../_images/093292b0c6ab32a6cc4e38bc32079ba0e44d647030bcca40a6f085ebebf9d9fd.png"></div>
<figure><img src="_static/plot.png" alt="Three tables of numbers: the input, the filter and
the output."><figcaption><p><span class="caption-number">Fig. 1.1 </span>A window.</p>
</figcaption></figure>"""),
    # the theme's layout of a display equation: a flex row with its number, in which
    # MathJax's test box is squeezed, beside the book's block layout
    "squeezed": (684, f"""
<div class="math" id="equation-squeezed" style="display: flex; flex-direction: row-reverse;
gap: 0.5em"><span class="eqno">(1.1)</span>\\[ {LONG_SUM} \\]</div>
<div class="math" id="equation-block" style="display: block; position: relative;
padding-right: 3.5em"><span class="eqno" style="position: absolute; right: 0">(1.2)</span>
\\[ {LONG_SUM} \\]</div>"""),
    "wide-code": (684, '<section id="cell"><div class="cell_input"><pre>'
                  + "x = " + " + ".join(f"a{i}" for i in range(45)) + "</pre></div></section>"),
}


def planted_figure_text(folder):
    """Figures drawn like the book's (their PNG records their smallest text through
    convbook) for a 358 px column at 390 px: an 8-inch figure with 8-point text (about
    5 px there), a 3.4-inch one with 12-point text (about 17 px), an image that records
    nothing, and an animation player wider than the column, as the book's once was."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    def figure(width_in, fontsize):
        fig, ax = plt.subplots(figsize=(width_in, 2))
        ax.plot([0, 1], [0, 1])
        ax.set_title("a title", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize)
        return fig

    for name, width_in, fontsize in (("small", 8, 8), ("large", 3.4, 12)):
        fig = figure(width_in, fontsize)
        (folder / f"{name}.png").write_bytes(CONVBOOK._png_with_font_size(fig))
        plt.close(fig)
    fig = figure(8, 8)
    fig.savefig(folder / "plain.png")
    fig, ax = plt.subplots(figsize=(3.4, 2))
    ax.set_title("frame", fontsize=14)
    anim = FuncAnimation(fig, lambda k: ax.set_xlabel(f"step {k}", fontsize=14), frames=2)
    player = CONVBOOK.animation_html(anim, alt="Animation: two frames").data
    plt.close("all")
    return f"""<style>img {{ max-width: 100%; height: auto }}</style>
<section id="small"><img src="small.png" alt="a figure"></section>
<section id="large"><img src="large.png" alt="a figure"></section>
<section id="unrecorded"><img src="plain.png" alt="a figure"></section>
<section id="player"><div style="width: 600px">{player}</div></section>"""


@pytest.fixture(scope="module")
def planted(site):
    """Serve the planted pages (and the site's _static/) at a free port; yields the base URL."""
    folder = Path(tempfile.mkdtemp(prefix="book-planted-"))
    (folder / "_static").symlink_to(site / "_static", target_is_directory=True)
    head = site_mathjax(site)
    for name, (column, body) in PLANTED.items():
        (folder / f"{name}.html").write_text(
            PLANTED_PAGE.format(head=head, column=column, body=body), encoding="utf-8")
    (folder / "figure-text.html").write_text(
        PLANTED_PAGE.format(head=head, column=358, body=planted_figure_text(folder)),
        encoding="utf-8")
    try:
        with serve(folder) as base:
            yield base
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def desktop_check(browser_context, planted, name, check):
    """What one check finds on a planted page at the widest desktop width, and every failure
    width_failures reports there."""
    page, _, _ = visit(browser_context, planted + name, planted, width=max(DESKTOP_WIDTHS))
    try:
        return page.evaluate(check), width_failures(page, max(DESKTOP_WIDTHS))
    finally:
        page.close()


def test_reading_checks_catch_planted_defects(planted, browser_context):
    """Each check of the book's pages reports its defect on a planted page, and passes
    what is fine on the same page: a display equation too wide for a phone, an inline
    formula clipped by its box, raw TeX, a JavaScript error, a display equation broken
    for a column narrower than its own, a code block wider than the column at 1280 px,
    and a figure without a number whose alt text is its file path."""
    page, facts, problems = visit(browser_context, planted + "equations.html", planted,
                                  width=PHONE_WIDTH)
    try:
        assert facts["has_mathjax"] and not real_problems(problems), problems
        rows = {r["id"]: r for r in page.evaluate(MEASURE_EQUATIONS)}
        clipped = page.evaluate(INLINE_CLIPPED)
        failures = width_failures(page, PHONE_WIDTH)
    finally:
        page.close()
    assert set(rows) == {"equation-wide", "equation-long", "equation-narrow"}, rows
    assert [r["id"] for r in too_wide(rows.values())] == ["equation-wide"], rows
    # the long sum is broken into lines that fit, as the book's equations are
    assert rows["equation-long"]["width"] <= rows["equation-long"]["available"], rows
    assert len(clipped) == 1 and clipped[0].startswith("#clipped clipped in span.math"), clipped
    assert any("display equations are wider" in f for f in failures), failures
    assert any("inline formulas do not show whole" in f for f in failures), failures

    page, facts, problems = visit(browser_context, planted + "raw-tex.html", planted)
    page.close()
    assert len(facts["raw_tex"]) == 1 and "$(N, C, H, W, F, k)$" in facts["raw_tex"][0], facts
    assert facts["raw_tex"][0].startswith("#table"), facts["raw_tex"]

    page, facts, problems = visit(browser_context, planted + "js-error.html", planted)
    page.close()
    assert [p for p in real_problems(problems)
            if "Identifier 'THEBE_JS_URL' has already been declared" in p], problems

    wide, failures = desktop_check(browser_context, planted, "wide-code.html", WIDE_CODE)
    assert len(wide) == 1 and wide[0].startswith("#cell"), wide
    assert any("code or output blocks are wider" in f for f in failures), failures

    narrow, failures = desktop_check(browser_context, planted, "squeezed.html", NARROW_LINEBREAKS)
    assert [r["id"] for r in narrow] == ["equation-squeezed"], narrow
    assert any("broken into lines for a column narrower" in f for f in failures), failures

    page, facts, problems = visit(browser_context, planted + "figure.html", planted)
    page.close()
    bad = figure_problems(facts["figures_alt"])
    assert len(bad) == 2, bad
    assert bad[0].startswith("image without a real alt text (alt='../_images/"), bad
    assert bad[1].startswith("figure without a number"), bad


def test_figure_text_check_catches_planted_defects(planted, browser_context):
    """At 390 px the figure-text check reports a figure whose text is too small, an image
    that records no text size and animation controls outside the column, and passes a
    figure and an animation frame whose text is large enough."""
    page, facts, problems = visit(browser_context, planted + "figure-text.html", planted,
                                  width=PHONE_WIDTH)
    try:
        assert not real_problems(problems), problems
        sizes = dict(figure_text_sizes(page, browser_context))
        failures = figure_text_failures(page, browser_context, PHONE_WIDTH)
    finally:
        page.close()
    assert sizes["#small small.png"] < 6, sizes
    assert sizes["#large large.png"] > 15, sizes
    assert sizes["#unrecorded plain.png"] is None, sizes
    assert sizes["#player (frame)"] >= MIN_FIGURE_TEXT_PX, sizes
    assert len(sizes) == 4, sizes
    text = "\n".join(failures)
    assert "1 images record no text size" in text and "#unrecorded plain.png" in text, text
    assert "the text of 1 figures is smaller than 9 px" in text, text
    assert "#small small.png:" in text and "#large" not in text, text
    assert "animation controls lie outside the column" in text, text


def test_phone_page_width_check_catches_a_wide_block(planted, browser_context):
    """At 390 px a block wider than the screen makes the page scroll sideways, and the
    check reports it."""
    page = browser_context.new_page()
    try:
        page.set_viewport_size({"width": PHONE_WIDTH, "height": 600})
        page.goto(planted + "raw-tex.html", wait_until="load", timeout=LOAD_TIMEOUT_MS)
        widths = page.evaluate(PAGE_WIDTH)
    finally:
        page.close()
    assert max(widths["doc"], widths["body"]) > widths["inner"], widths


def test_no_empty_code_bars(site):
    """A cell that only checks (asserts, prints nothing) is tagged remove-cell: tagged
    hide-input, it leaves a 'Show code cell source' bar with nothing under it."""
    bad = {}
    for docname in DOCNAMES:
        page = site / f"{docname}.html"
        if page.is_file():
            count = empty_code_bars(page.read_text(encoding="utf-8"))
            if count:
                bad[docname] = count
    assert not bad, (f"hide-input cells without output (use remove-cell for checks): {bad}")


def test_empty_code_bar_detection_can_fail():
    cell = ('<div class="cell tag_hide-input docutils container">'
            '<details class="hide above-input"><summary>Show code cell source</summary>'
            '<div class="cell_input docutils container"><pre>assert 1</pre></div></details>%s</div>')
    output = '<div class="cell_output docutils container"><div class="output">1</div></div>'
    assert empty_code_bars(cell % "") == 1
    assert empty_code_bars(cell % output) == 0
    assert empty_code_bars('<div class="cell docutils container"></div>') == 0


def test_toc_pages_are_all_built(site):
    missing = [d for d in DOCNAMES if not (site / f"{d}.html").is_file()]
    assert not missing, f"pages of _toc.yml missing from the site: {missing}"
    chapters = [d for d in DOCNAMES if is_chapter(d)]
    assert len(chapters) == 10, chapters


def test_mathjax_is_served_locally(site):
    pages = [site / f"{d}.html" for d in DOCNAMES]
    sources = set()
    for page in pages:
        if page.is_file():
            sources |= set(re.findall(r'<script[^>]+src="([^"]*(?:mathjax|tex-[a-z-]+)\.js)[^"]*"',
                                      page.read_text(encoding="utf-8"), flags=re.I))
    assert sources, "no page loads MathJax"
    remote = [s for s in sources if re.match(r"^(https?:)?//", s)]
    assert not remote, f"MathJax is loaded from outside the site: {remote}"
