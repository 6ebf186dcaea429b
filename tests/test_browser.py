"""The built book, driven in headless Chromium: every page of the table of contents loads
cleanly, renders its math, shows its images and figures, and has working links and
downloads. A full-page screenshot of each page goes to ci-artifacts/screenshots/.

What CI needs (all from the project's own files):

* the system's Chromium: ``apt-get install chromium`` (done by scripts/install_system.sh);
  Playwright drives it through ``executable_path``. Never run ``playwright install``:
  it downloads a browser build of its own. Another binary can be given with the
  environment variable ``CHROMIUM``.
* the Python package ``playwright`` (pinned in requirements.txt).
* the built book: ``bash scripts/build_book.sh``. It installs the pinned MathJax with
  ``npm install --no-save --no-package-lock mathjax@3.2.2`` (Debian package ``npm``)
  into node_modules/, and _config.yml serves that copy from the site itself
  (``mathjax_path``), so that no page needs the network.
* then: ``python -m pytest -m browser tests/test_browser.py``

Without the built book or without Chromium the tests are skipped, except under CI (the
environment variable ``CI`` set), where either is a failure.
"""
import functools
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

import nbformat
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
    # Sphinx 7.4 emits sphinx-thebe's inline configuration script twice (it is added after
    # the builder starts, then added again from the registry), so the second
    # `const THEBE_JS_URL` throws. Thebe is not used by this book (no launch buttons).
    re.compile(r"^page error: .*Identifier 'THEBE_JS_URL' has already been declared"),
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

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
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


def visit(context, url, base):
    """Load url; return the page facts and every problem seen while loading."""
    problems = []
    page = context.new_page()

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
