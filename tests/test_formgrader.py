"""nbgrader's formgrader on the autograder's grades, driven in headless Chromium.

The test grades a small class with ``python -m autograder grade``, starts formgrader as a
real Jupyter server in the course folder, and with Playwright (the system's Chromium, as in
tests/test_browser.py):

* opens the submission list: every submission is autograded and shows its score;
* opens a manual-grading page (no server error), sets a manual score and a comment;
* runs ``grade`` again: the manual score is kept in the gradebook and counts in totals.csv,
  nbgrader's export and the learner's feedback page.

Without Chromium the test is skipped, except under CI (``CI`` set), where that is a failure.
"""
import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autograder.cli import main as cli_main

import lms_downloads as L
from test_browser import CHROMIUM, CHROMIUM_ARGS, skip_or_fail

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
TOKEN = "formgrader-test-token"
POOLING_MAX = 18.0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _totals(course):
    with open(course / "grading" / "totals.csv", newline="", encoding="utf-8") as fh:
        return {r["student_id"]: r for r in csv.DictReader(fh)}


def _grade(course):
    cmd = [sys.executable, "-m", "autograder", "grade", str(course / "submitted"), "--out", str(course / "grading"),
           "--jobs", "2", "--no-progress"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def new_course(tmp_path_factory, name):
    """(download folder, course folder) for a course with the source notebooks and the course's
    nbgrader_config.py; skipped (failed under CI) without Chromium."""
    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    base = tmp_path_factory.mktemp(name)
    course = base / "course"
    course.mkdir()
    shutil.copytree(REPO / "solutions", course / "solutions")
    (course / "nbgrader_config.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from autograder.nbgrader_config import make_config\n"
        "c = get_config()\n"
        "c.merge(make_config(os.path.dirname(os.path.abspath(__file__))))\n")
    return base, course


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    base, course = new_course(tmp_path_factory, "formgrader")
    solution = (REPO / "solutions" / "cnn_layers" / "pooling.ipynb").read_bytes()
    stub = (REPO / "exercises" / "cnn_layers" / "pooling.ipynb").read_bytes()
    z = L.moodle(base / "moodle.zip", [("Amy Ng", "5001", "pooling.ipynb", solution),
                                       ("Bo Lee", "5002", "pooling.ipynb", stub)])
    assert cli_main(["collect", str(z), "--to", str(course / "submitted")]) == 0
    proc = _grade(course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return course


@pytest.fixture(scope="module")
def formgrader(course, tmp_path_factory):
    """A Jupyter server with nbgrader's formgrader, run from the course folder."""
    home = tmp_path_factory.mktemp("home")
    port = _free_port()
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    log = open(home / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}",
                               "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={TOKEN}",
                               f"--ServerApp.root_dir={course}"]
                              + (["--allow-root"] if os.geteuid() == 0 else []),
                              cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/formgrader/api/status?token={TOKEN}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("formgrader did not start:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()


def test_formgrader_shows_scores_and_keeps_a_manual_grade(course, formgrader):
    from playwright.sync_api import expect, sync_playwright
    from nbgrader.api import Gradebook

    url = "sqlite:///" + str(course / "gradebook.db")
    with Gradebook(url, course_id="cnn_backprop") as gb:
        notebook_id = gb.find_submission_notebook("pooling", "cnn_layers", "amy-ng").id
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # the token goes with every request, the page's own API calls included
            page = browser.new_context(extra_http_headers={"Authorization": f"token {TOKEN}"}).new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # the submission list: both learners autograded, with their scores
            page.goto(f"{formgrader}/formgrader/manage_submissions/cnn_layers")
            page.wait_for_selector("td.score:has-text('/')", timeout=60_000)
            rows = {page.locator("td.student-id").nth(i).inner_text().strip():
                    (page.locator("td.score").nth(i).inner_text().strip(),
                     page.locator("td.status").nth(i).inner_text().strip(),
                     page.locator("td.student-name").nth(i).inner_text().strip())
                    for i in range(page.locator("td.student-id").count())}
            assert rows == {"amy-ng": ("18 / 47", "graded", "Ng, Amy"),
                            "bo-lee": ("0 / 47", "graded", "Lee, Bo")}, rows
            assert "needs autograding" not in page.content()
            # the manual-grading page of Amy's pooling notebook
            response = page.goto(f"{formgrader}/formgrader/submissions/{notebook_id}")
            assert response.status == 200
            score = page.locator("input.score#maxpool_forward_basic")
            score.wait_for(timeout=60_000)
            expect(score).to_have_attribute("placeholder", "2", timeout=30_000)  # the automatic score
            assert "Hidden checks: passed" in page.content()
            score.fill("0.5")
            score.press("Tab")
            comment = page.locator("textarea#maxpool_forward_solution-comment")
            comment.fill("Explain why the stride matters here.")
            comment.press("Tab")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with Gradebook(url, course_id="cnn_backprop") as gb:
                    grade = gb.find_grade("maxpool_forward_basic", "pooling", "cnn_layers", "amy-ng")
                    note = gb.find_comment("maxpool_forward_solution", "pooling", "cnn_layers", "amy-ng")
                    if grade.manual_score == 0.5 and note.manual_comment:
                        break
                time.sleep(0.5)
            else:
                pytest.fail("formgrader did not save the manual score and comment")
        finally:
            browser.close()
    # formgrader's page asks for MathJax from a CDN (jupyter_server serves none and this machine has no
    # network); the notebook has no math, so that one error says nothing about the grades
    assert [e for e in errors if "MathJax is not defined" not in e] == []
    # the next grade run keeps the manual score; totals, export and feedback count it
    proc = _grade(course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 manual score(s)" in proc.stdout
    assert float(_totals(course)["amy-ng"]["score"]) == POOLING_MAX - 1.5
    page = (course / "grading" / "feedback" / "amy-ng" / "cnn_layers.html").read_text()
    assert "Score set by your instructor: 0.5" in page and "Explain why the stride matters" in page
    rows = list(csv.reader(open(course / "grading" / "moodle_grades.csv", encoding="utf-8")))
    assert ["Participant 5001", "Amy Ng", "16.5", "47"] == rows[1][:4]
