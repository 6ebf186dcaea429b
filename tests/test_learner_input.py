"""Learner input that reaches the instructor's files and tools: it is bounded, made inert, and
never stops the class.

One class is graded through the command line (``--jobs 2``) beside honest classmates:

* a learner whose cells carry nbgrader ``grade_id``s that are not usable strings (a list, a
  dict, a number, null, 100,000 characters, control characters);
* a learner whose cells hold lone surrogates (JSON can say "\\udfff", UTF-8 cannot);
* a learner whose exception message carries terminal escape sequences (clear screen, window
  title, colours), and another whose duplicated grade_id holds them (a note quotes it);
* LMS names (collect's record) with a comma (``Amy Ng, Jr.``), a double quote, markup, escape
  sequences, and more characters than nbgrader's 128-character name columns.

The run must exit 0 with run.json, totals.csv, feedback and the whole gradebook; every
student's exact score is asserted; nbgrader's export agrees with totals.csv; no file an
instructor reads holds a control character; the gradebook's names are inert and bounded.

The faster tests below check the pieces on their own: the inert text helpers, the export
reader on an export that nbgrader cannot write unambiguously, the student ids that are refused,
and the autograded notebook as formgrader's own template renders it.
"""
import base64
import html
import html.parser
import json
import re
import sqlite3

import nbformat
import pytest

from autograder import grading
from autograder.learnertext import inert_name, printable
from conftest import REPO, read_csv, run_grade
from classgen import build as B

ESCAPES = "\x1b[2J\x1b[H\x1b]0;owned\x07\x1b[31mred\x1b[0m\r\x08\x9b"
BAD_GRADE_IDS = (["maxpool_forward_basic"], {"grade_id": "maxpool_forward_basic"}, 7, None, "g" * 100_000,
                 "dup\x1b[2J\x1b]0;title\x07")

NAMES = {   # student id -> collect's record (what the LMS gave)
    "n1_comma": {"name": "Amy Ng, Jr.", "first_name": "Amy", "last_name": "Ng, Jr."},
    "n2_quote": {"name": 'Mallory "Evil', "first_name": "Mallory", "last_name": '"Evil'},
    "n3_markup": {"name": "<svg onload=alert(1)> Eve", "first_name": "<svg/onload=alert(1)>",
                  "last_name": "<img src=x onerror=alert(2)>", "email": '"><script>alert(3)</script>'},
    "n4_long": {"name": "A" * 200 + " " + "B" * 300, "first_name": "A" * 200, "last_name": "B" * 300,
                "email": "c" * 300 + "@example.org"},
    "n5_escapes": {"name": ESCAPES + "Zed", "first_name": ESCAPES, "last_name": "Zed" + ESCAPES},
}


def _bad_grade_ids(nb):
    """Every cell with nbgrader metadata gets a grade_id from BAD_GRADE_IDS, in turn (the test cells
    keep their ids and text, so the grader still knows them)."""
    k = 0
    for cell in nb["cells"]:
        nbg = cell.get("metadata", {}).get("nbgrader")
        if nbg:
            nbg["grade_id"] = BAD_GRADE_IDS[k % len(BAD_GRADE_IDS)]
            k += 1
    # two cells share the grade_id with escape sequences: the duplicate note quotes it
    nbg = next(c for c in nb["cells"] if not c.get("metadata", {}).get("nbgrader"))
    nbg.setdefault("metadata", {})["nbgrader"] = {"grade_id": BAD_GRADE_IDS[-1]}


def _lone_surrogates(nb):
    """JSON may hold a lone surrogate ("\\udfff"); UTF-8 cannot."""
    nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": "notes \ud800 here", "id": "s-md"})
    nb["cells"].insert(0, {"cell_type": "code", "metadata": {}, "source": "# \udfff", "id": "s-code",
                           "outputs": [], "execution_count": None})
    return json.dumps(nb, indent=1)          # ASCII JSON: the surrogates as escapes, as a file can hold them


RAISES_ESCAPES = f'''\
def maxpool_forward(x, pool=2, stride=2):
    raise ValueError({ESCAPES!r} + "learner text")
'''


def _class():
    students = [
        B.all_correct("x1_bad_grade_ids", kind="hostile",
                      edits={"pooling": [_bad_grade_ids], "convolution": [_bad_grade_ids]}),
        B.all_correct("x2_escapes", kind="hostile", sources={"maxpool_forward": RAISES_ESCAPES},
                      zero={"maxpool_forward"}),
        B.all_correct("x3_surrogates", kind="hostile",
                      edits={"pooling": [_lone_surrogates], "convolution": [_lone_surrogates]}),
        B.all_correct("h1_loops", "loops"),
        B.with_mistake("h2_mistake", "pool_ties_to_all"),
    ]
    students += [B.all_correct(sid, "im2col") for sid in NAMES]
    return students


def _write_records(submitted):
    for k, (sid, record) in enumerate(NAMES.items()):
        folder = submitted / sid / B.ASSIGNMENT
        (folder / "collect.json").write_text(json.dumps(dict(record, lms="moodle", lms_user_id=str(5001 + k))),
                                             encoding="utf-8")


def _control_characters(text):
    return sorted({f"U+{ord(ch):04X}" for ch in text if not ch.isprintable() and ch not in "\n"})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("learner-input")
    manifest = B.write_class(_class(), root / "submitted")
    _write_records(root / "submitted")
    proc = run_grade(root / "submitted", root / "out")
    return root, manifest, proc


@pytest.mark.slow
def test_the_class_is_graded_whole_and_everyone_gets_their_exact_score(graded):
    root, manifest, proc = graded
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = json.loads((root / "out" / "run.json").read_text())
    assert run["grader_errors"] == [] and run["students"] == len(manifest)
    assert run["export_check"] == {"ok": True, "students": len(manifest), "mismatched": []}
    totals = {r["student_id"]: float(r["score"]) for r in read_csv(root / "out" / "totals.csv")}
    assert totals == {sid: m["total"] for sid, m in manifest.items()}
    assert totals["x1_bad_grade_ids"] == B.MAX_TOTAL and totals["x2_escapes"] == B.MAX_TOTAL - 8
    assert totals["h1_loops"] == B.MAX_TOTAL and totals["n1_comma"] == B.MAX_TOTAL
    assert totals["x3_surrogates"] == B.MAX_TOTAL
    con = sqlite3.connect(root / "gradebook.db")
    try:
        assert {r[0] for r in con.execute("SELECT id FROM student")} == set(manifest)
    finally:
        con.close()
    for sid in manifest:
        for nb in B.NOTEBOOKS:
            path = root / "autograded" / sid / B.ASSIGNMENT / f"{nb}.ipynb"
            assert path.is_file(), path
            for cell in nbformat.read(path, as_version=4).cells:   # only the source's grade_ids remain
                gid = cell.metadata.get("nbgrader", {}).get("grade_id")
                assert gid is None or gid in B.POINTS[nb] or isinstance(gid, str) and len(gid) < 64
        assert (root / "out" / "feedback" / sid / f"{B.ASSIGNMENT}.html").is_file()


@pytest.mark.slow
def test_no_control_character_reaches_a_file_the_instructor_reads(graded):
    root, _manifest, proc = graded
    out = root / "out"
    for path in [out / "grades.csv", out / "totals.csv", out / "run.json", *sorted(out.glob("*_grades.csv")),
                 *sorted((out / "feedback").rglob("*.html"))]:
        text = path.read_text(encoding="utf-8")
        assert _control_characters(text) == [], path
    assert _control_characters(proc.stdout + proc.stderr) == []
    rows = {(r["student_id"], r["grade_id"]): r for r in read_csv(out / "grades.csv")}
    reason = rows[("x2_escapes", "maxpool_forward_basic")]["reason"]
    assert "learner text" in reason and "[2J" in reason and "\x1b" not in reason
    names = {r["student_id"]: r["name"] for r in read_csv(out / "totals.csv")}
    assert names["n1_comma"] == "Amy Ng, Jr." and names["n2_quote"] == 'Mallory "Evil'
    assert names["n5_escapes"] == "?[2J?[H?]0;owned??[31mred?[0m ??Zed"
    stored = json.loads((out / "results" / "x1_bad_grade_ids" / B.ASSIGNMENT / "pooling.json").read_text())
    assert any("duplicated grade_ids: dup?[2J?]0;title?" in n for n in stored["notes"]), stored["notes"]


@pytest.mark.slow
def test_the_gradebook_holds_inert_bounded_names(graded):
    root, _manifest, _proc = graded
    con = sqlite3.connect(root / "gradebook.db")
    try:
        rows = {r[0]: r[1:] for r in con.execute("SELECT id, first_name, last_name, email FROM student")}
    finally:
        con.close()
    assert rows["n1_comma"] == ("Amy", "Ng, Jr.", None)
    assert rows["n2_quote"] == ("Mallory", "＂Evil", None)
    assert rows["n3_markup"] == ("＜svg/onload=alert(1)＞", "＜img src=x onerror=alert(2)＞",
                                 "＂＞＜script＞alert(3)＜/script＞")
    assert rows["n4_long"] == ("A" * 128, "B" * 128, "c" * 128)
    assert rows["n5_escapes"] == ("?[2J?[H?]0;owned??[31mred?[0m ??", "Zed?[2J?[H?]0;owned??[31mred?[0m ??", None)
    for first, last, email in rows.values():
        for value in (first, last, email):
            assert value is None or not set(value) & set('<>&"`') and _control_characters(value) == []


@pytest.mark.slow
def test_an_autograded_notebook_of_an_earlier_version_is_written_again(graded):
    """Notebooks written before the learner's markup was made inert are replaced on the next run,
    even though nothing is regraded."""
    from autograder import autograded
    root, manifest, _proc = graded
    path = root / "autograded" / "h1_loops" / B.ASSIGNMENT / "pooling.ipynb"
    nb = nbformat.read(path, as_version=4)
    del nb.metadata["autograder"]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("<img src=x onerror=alert(1)>"))
    nbformat.write(nb, path)
    assert not autograded.is_current(path)
    proc = run_grade(root / "submitted", root / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"reused {2 * len(manifest)} stored" in proc.stdout
    assert autograded.is_current(path)
    assert all("<img" not in c.source or c.source.startswith("```") for c in nbformat.read(path, as_version=4).cells)


# ---------------------------------------------------------------------------- the pieces

def test_printable_and_inert_name():
    assert printable("a\x1b[2J\nb\tc\u202ed", 80) == "a?[2J b c?d"
    assert printable("x" * 100, 10) == "x" * 10
    assert inert_name('<a href="x">&`</a>') == "＜a href=＂x＂＞＆｀＜/a＞"
    assert inert_name("Amy O'Neil, Jr.") == "Amy O'Neil, Jr."


def test_export_reader_reads_rows_nbgrader_cannot_quote(tmp_path):
    """nbgrader's exporter writes fields unquoted: a comma or a quote in a name must not shift a score."""
    head = ("assignment,duedate,timestamp,student_id,last_name,first_name,email,raw_score,"
            "late_submission_penalty,score,max_score\n")
    rows = ['cnn_layers,,2026-03-01 10:00:00,amy,Ng, Jr.,Amy,,47.0,0.0,47.0,47.0\n',
            'cnn_layers,,,mal,"Evil,Mallory,,12.0,0.0,12.0,47.0\n',
            'cnn_layers,,,bo,Lee,Bo,bo@example.org,5.0,1.0,4.0,47.0\n',
            'other,,,bo,Lee,Bo,bo@example.org,1.0,0.0,1.0,9.0\n',
            'cnn_layers,,,stranger,X,Y,,3.0,0.0,3.0,47.0\n']
    path = tmp_path / "export.csv"
    path.write_text(head + "".join(rows), encoding="utf-8")
    keys = {"amy,Ng, Jr.,Amy,": "amy", 'mal,"Evil,Mallory,': "mal", "bo,Lee,Bo,bo@example.org": "bo"}
    scores, unread = grading.read_export(path, keys)
    assert scores == {"amy": 47.0, "mal": 12.0, "bo": 4.0}
    assert unread == [rows[4].rstrip("\n")]


@pytest.mark.parametrize("folder", ["<svg onload=alert(1)>", 'a"b', "a&b", "a`b", "a\\b", "a>b"])
def test_student_ids_that_markup_would_read_are_refused(folder):
    why = grading.student_id_problem(folder)
    assert why is not None and "markup" in why and "rename the folder" in why


def test_honest_student_ids_are_kept():
    for folder in ("amy-ng", "o'neil", "Zoë-Çelik_李小龍", "s1,2"):
        assert grading.student_id_problem(folder) is None


MARK = "LEARNERMARK"


class _LiveMarkup(html.parser.HTMLParser):
    """Where MARK appears outside plain text: in a tag's attributes, a script or a style."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.live, self._raw = [], None

    def handle_starttag(self, tag, attrs):
        if MARK in tag or any(MARK in (name or "") or MARK in (value or "") for name, value in attrs):
            self.live.append((tag, attrs))
        self._raw = tag if tag in ("script", "style") else None

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        if self._raw and MARK in data:
            self.live.append((self._raw, data[:80]))

    def handle_endtag(self, tag):
        self._raw = None


def hostile_notebook(release, js):
    """The released notebook with, before its cells, every route for markup a notebook offers; js(route)
    is the script each route would run."""
    nb = nbformat.read(release, as_version=4)
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("My notes on pooling: the largest value in each window wins."),
        v4.new_markdown_cell(f'<img src=x onerror="{js("md-img")}"> and <script>{js("md-script")}</script>'),
        v4.new_markdown_cell(f'![pixel](http://evil.example/{MARK}.png) [link](javascript:{js("md-link")}) '
                             f'<a href="http://evil.example/{MARK}">a</a>'),
        v4.new_markdown_cell(f'$$<img src=x onerror="{js("md-math")}">$$ and $<svg/onload="{js("md-svg")}">$'),
        v4.new_markdown_cell(f'```\n</code></pre><img src=x onerror="{js("md-fence")}">\n```'),
        v4.new_raw_cell(f'<img src=x onerror="{js("raw")}">'),
    ]
    raw_html = v4.new_raw_cell(f'<img src=x onerror="{js("raw-html")}">')
    raw_html.metadata.update({"raw_mimetype": "text/html", "format": "text/html"})
    cells.append(raw_html)
    attached = v4.new_markdown_cell("![a](attachment:p.svg)")
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" onload="{js("attachment")}"/>'
    attached.attachments = {"p.svg": {"image/svg+xml": base64.b64encode(svg.encode()).decode()}}
    cells.append(attached)
    code = v4.new_code_cell(f'print("</pre><img src=x onerror={js("code")}>")')
    code.outputs = [
        v4.new_output("display_data", data={"text/html": f'<img src=x onerror="{js("out-html")}">',
                                            "application/javascript": js("out-js"),
                                            "image/svg+xml": f'<svg onload="{js("out-svg")}"/>',
                                            "text/markdown": f'<img src=x onerror="{js("out-md")}">',
                                            "text/plain": "honest output"}),
        v4.new_output("execute_result", data={"text/html": f'<script>{js("out-result")}</script>'},
                      execution_count=1),
        v4.new_output("stream", name="stdout", text=f'<img src=x onerror="{js("out-stream")}">'),
    ]
    code.metadata["magics_language"] = "html"
    cells.append(code)
    forged = v4.new_markdown_cell("graded?")
    forged.metadata["nbgrader"] = {"grade": True, "grade_id": f'x"><img src=x onerror="{js("grade-id")}">',
                                   "points": 1}
    cells.append(forged)
    nb.cells = cells + nb.cells
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {}, "version_major": 2, "version_minor": 0}}
    return nb


def test_formgraders_template_shows_a_hostile_notebook_as_text(tmp_path):
    """The autograded notebook as formgrader renders it (nbconvert, formgrader's own template): the
    learner's markup is text, never a tag or an attribute; the honest text is there."""
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config
    from nbgrader.server_extensions.formgrader import handlers
    from autograder import autograded
    from autograder.assignment import load

    spec = load(str(REPO), B.ASSIGNMENT)
    path = tmp_path / "pooling.ipynb"
    nbformat.write(hostile_notebook(B.RELEASE_DIR / "pooling.ipynb", lambda route: f"window.{MARK}='{route}'"),
                   path)
    result = {"notebook": "pooling", "cells": []}
    nb = autograded.build(spec, result, str(path), str(REPO))
    config = Config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": B.ASSIGNMENT, "notebook_id": "pooling", "submission_id": "s", "index": 0,
                 "total": 1, "base_url": "", "student": "x", "last_name": "L", "first_name": "F",
                 "notebook_path": "p"}
    page, _ = HTMLExporter(config=config).from_notebook_node(nb, resources=resources)
    parser = _LiveMarkup()
    parser.feed(page)
    assert parser.live == []
    text = html.unescape(re.sub(r"<[^>]*>", "", page))     # what a reader sees
    assert "My notes on pooling: the largest value in each window wins." in text
    assert f"<img src=x onerror=\"window.{MARK}='md-img'\">" in text
    assert "widget-state" not in page and "![a](attachment:p.svg)" in text


def test_collect_prints_learners_file_names_as_printable_text(tmp_path, capsys):
    """A learner's file name in an LMS download reaches the terminal when collect reports it."""
    import zipfile
    import lms_downloads as L
    from autograder.cli import main as cli_main
    release = (B.RELEASE_DIR / "pooling.ipynb").read_bytes()
    z = L.moodle(tmp_path / "moodle.zip", [("Amy Ng", "5001", "pooling.ipynb", release)])
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(f"{ESCAPES}stray.ipynb", release)
        zf.writestr(f"{ESCAPES}notes.txt", "x")
    cli_main(["collect", str(z), "--to", str(tmp_path / "submitted")])
    out = capsys.readouterr()
    assert "stray.ipynb" in out.out + out.err
    assert _control_characters(out.out + out.err) == []
