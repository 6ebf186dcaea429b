"""A whole class graded once through ``python -m autograder grade``.

The class (tests/classgen) holds every correct style of every function, one
student per learner mistake, untouched release notebooks, missing and partial
submissions, helpers defined in other cells, and the hostile cases of
tests/test_adversarial.py.  Every student's score on every graded cell must be
the one worked out in tests/classgen/variants.py (EXPECTED_FAILS) and
tests/classgen/hostile.py; grades.csv, totals.csv, the feedback pages, the
stored results and nbgrader's gradebook (and ``nbgrader export``) must agree.
"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, grades_by_key, read_csv
from classgen import build as B
from classgen import variants as V

STATUSES = {"passed", "failed", "error", "timeout", "out-of-memory", "killed", "ungradable"}


# ---------------------------------------------------------------------------- fast checks

def _run(source, name, *args, **kwargs):
    ns = {"np": np}
    exec(source, ns)
    return ns[name](*args, **kwargs)


@pytest.mark.parametrize("function,style", [(f, s) for f, styles in V.CORRECT.items() for s in styles])
def test_correct_variant_matches_reference(function, style):
    """Every correct style agrees with autograder.reference on awkward cases."""
    from autograder import reference as ref
    from autograder.gradcheck import rel_error
    rng = np.random.default_rng(7)
    src = V.CORRECT[function][style]
    conv_cases = [((2, 3, 7, 6), (4, 3, 3, 2), 2, 1), ((1, 2, 5, 5), (3, 2, 2, 2), 3, 0),
                  ((2, 1, 6, 9), (2, 1, 3, 2), 1, 2)]
    pool_cases = [((2, 3, 7, 6), 3, 2), ((1, 2, 5, 6), 2, 1), ((2, 1, 6, 6), 2, 2)]
    if function == "zero_pad":
        for pad in (0, 1, 3):
            x = rng.standard_normal((2, 3, 4, 5))
            assert rel_error(_run(src, function, x, pad), ref.zero_pad(x, pad)) == 0
    elif function.startswith("conv"):
        for xs, ws, stride, pad in conv_cases:
            x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
            out, cache = ref.conv_forward(x, w, b, stride, pad)
            if function == "conv_forward":
                got, got_cache = _run(src, function, x, w, b, stride, pad)
                assert got.shape == out.shape and rel_error(got, out) < 1e-12
                assert got_cache[3:] == (stride, pad)
            else:
                dout = rng.standard_normal(out.shape)
                for got, exp in zip(_run(src, function, dout, cache), ref.conv_backward(dout, cache)):
                    assert got.shape == exp.shape and rel_error(got, exp) < 1e-12
    else:
        for xs, pool, stride in pool_cases:
            x = rng.integers(0, 3, size=xs).astype(float)     # ties everywhere
            out, cache = ref.maxpool_forward(x, pool, stride)
            if function == "maxpool_forward":
                got = _run(src, function, x, pool, stride)[0]
                assert got.shape == out.shape and rel_error(got, out) == 0
            else:
                dout = rng.standard_normal(out.shape)
                got = _run(src, function, dout, cache)
                exp = ref.maxpool_backward(dout, cache)
                assert got.shape == exp.shape and rel_error(got, exp) < 1e-12


def test_generator_builds_from_the_release(tmp_path):
    """Only the solution cells change; ids and metadata are the release's."""
    s = B.with_mistake("x", "bias_missing")
    s.write(tmp_path)
    for nb in B.NOTEBOOKS:
        release = B.release_notebook(nb)
        built = json.loads((tmp_path / "x" / "cnn_layers" / f"{nb}.ipynb").read_text())
        assert [c.get("id") for c in built["cells"]] == [c.get("id") for c in release["cells"]]
        assert [c["metadata"] for c in built["cells"]] == [c["metadata"] for c in release["cells"]]
        changed = [B.grade_id_of(c) for c, r in zip(built["cells"], release["cells"])
                   if c["source"] != r["source"]]
        assert changed == [f"{f}_solution" for f in B.FUNCTIONS_OF[nb]]


def test_points_table_matches_the_release():
    """POINTS (docs/ARCHITECTURE.md) is what the release notebooks carry."""
    for nb in B.NOTEBOOKS:
        release = B.release_notebook(nb)
        points = {B.grade_id_of(c): c["metadata"]["nbgrader"]["points"] for c in release["cells"]
                  if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
        assert points == B.POINTS[nb]


def test_class_is_big_and_varied():
    students = B.standard_class(50)
    assert len(students) >= 50
    kinds = {s.kind for s in students}
    assert {"correct", "mistake", "empty", "missing", "helpers"} <= kinds
    from classgen import hostile as H
    hostile = {s.note for s in H.hostile_class() if s.note in V.MISTAKES}
    assert {s.note for s in students if s.kind == "mistake"} | hostile >= set(V.MISTAKES)


# ---------------------------------------------------------------------------- the graded class

@pytest.fixture(scope="module")
def graded(graded_class):
    gc = graded_class
    assert gc.proc.returncode == 0, f"grading failed:\n{gc.proc.stdout[-3000:]}\n{gc.proc.stderr[-3000:]}"
    return gc


@pytest.mark.slow
def test_every_cell_of_every_student(graded):
    rows = grades_by_key(graded.out)
    expected_keys = {(s, nb, gid) for s in graded.manifest for nb in B.NOTEBOOKS for gid in B.POINTS[nb]}
    assert set(rows) == expected_keys
    wrong = []
    for (student, nb, gid), row in sorted(rows.items()):
        exp = graded.expected(student, nb, gid)
        exp_status = graded.manifest[student]["expected_status"][nb][gid]
        status = row["status"]
        assert status in STATUSES, row
        assert float(row["max_score"]) == B.POINTS[nb][gid]
        bad = float(row["score"]) != exp
        bad |= (status == "passed") != (exp == B.POINTS[nb][gid])
        if isinstance(exp_status, str):
            exp_status = [exp_status]
        bad |= exp_status is not None and status not in exp_status
        if bad:
            wrong.append(f"{student} {gid}: got {row['score']} ({status}: {row['reason'][:160]}), "
                         f"expected {exp}" + (f" ({exp_status})" if exp_status else ""))
    assert not wrong, f"{len(wrong)} cell(s) off:\n" + "\n".join(wrong)


@pytest.mark.slow
def test_failing_cells_have_a_reason(graded):
    for row in grades_by_key(graded.out).values():
        if row["status"] != "passed":
            assert row["reason"].strip(), row


@pytest.mark.slow
def test_totals(graded):
    totals = {r["student_id"]: r for r in read_csv(graded.out / "totals.csv")}
    assert set(totals) == set(graded.manifest)
    rows = grades_by_key(graded.out)
    for student, m in graded.manifest.items():
        assert float(totals[student]["score"]) == m["total"], student
        assert float(totals[student]["max_score"]) == B.MAX_TOTAL
        assert totals[student]["assignment"] == B.ASSIGNMENT
        from_rows = sum(float(r["score"]) for (s, _, _), r in rows.items() if s == student)
        assert from_rows == m["total"], student


@pytest.mark.slow
def test_stored_results_agree_with_csv(graded):
    rows = grades_by_key(graded.out)
    for student in graded.manifest:
        for nb in B.NOTEBOOKS:
            path = graded.out / "results" / student / B.ASSIGNMENT / f"{nb}.json"
            result = json.loads(path.read_text())
            assert result["student_id"] == student and result["notebook"] == nb
            cells = {c["grade_id"]: c for c in result["cells"]}
            assert set(cells) == set(B.POINTS[nb])
            for gid, c in cells.items():
                row = rows[(student, nb, gid)]
                assert float(row["score"]) == c["score"] and row["status"] == c["status"]
            assert result["score"] == sum(graded.expected(student, nb, g) for g in B.POINTS[nb])


def _solution_lines():
    """Distinctive lines of the instructor's solutions and reference layers:
    what must never reach a learner's feedback page."""
    learner_text = "\n".join(src for styles in V.CORRECT.values() for src in styles.values())
    learner_text += "\n".join(src for _, src in V.MISTAKES.values())
    lines = set()
    for path in sorted((REPO / "solutions" / B.ASSIGNMENT).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            src = B.cell_source(cell)
            for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", src, re.S):
                lines.update(block.splitlines())
    ref_src = (REPO / "autograder" / "reference.py").read_text()
    lines.update(ln for ln in ref_src.splitlines() if "=" in ln or "return" in ln)
    return {ln.strip() for ln in lines if len(ln.strip()) >= 28 and ln.strip() not in learner_text}


@pytest.mark.slow
def test_feedback_pages(graded):
    import html as html_lib
    secret = _solution_lines()
    assert secret, "no solution lines found to look for"
    rows = grades_by_key(graded.out)
    for student in graded.manifest:
        page = graded.out / "feedback" / student / f"{B.ASSIGNMENT}.html"
        assert page.is_file(), page
        text = html_lib.unescape(page.read_text(encoding="utf-8"))
        leaked = [ln for ln in secret if ln in text]
        assert not leaked, f"{page.name} of {student} shows solution code: {leaked[:3]}"
        for nb in B.NOTEBOOKS:
            assert f"{nb}.ipynb" in text, f"{student}: the feedback page has no section for {nb}"
            for gid in B.POINTS[nb]:
                row = rows[(student, nb, gid)]
                if row["status"] == "passed":
                    continue
                assert gid in text, f"{student}/{nb}: feedback does not name {gid}"
                if row["status"] == "failed" and graded.manifest[student]["kind"] == "mistake":
                    # the failing case is named ("case stride 2: x (...)")
                    assert re.search(r"case [^:<]+:", text), f"{student}/{nb}: no failing case named"


@pytest.mark.slow
def test_mistake_feedback_names_the_failing_case(graded):
    """For a few mistakes, the page names the very case that exposes them."""
    probes = {"crop_minus_pad": ("conv_backward_basic", "pad 0"),
              "pad_not_cropped": ("conv_backward_padding", "pad 1"),
              "stride_ignored_backward": ("conv_backward_stride", "stride 2"),
              "pool_ties_to_all": ("maxpool_backward_ties", "ties")}
    import html as html_lib
    for student, m in graded.manifest.items():
        if m["kind"] != "mistake" or m["note"] not in probes:
            continue
        gid, words = probes[m["note"]]
        text = html_lib.unescape((graded.out / "feedback" / student / f"{B.ASSIGNMENT}.html").read_text())
        assert words in text, f"{student}: feedback on {gid} does not mention {words!r}"


def _gradebook(url):
    from nbgrader.api import Gradebook
    from autograder.nbgrader_config import COURSE_ID
    return Gradebook(url, course_id=COURSE_ID)


@pytest.mark.slow
def test_gradebook_agrees(graded):
    url = "sqlite:///" + str(graded.root / "gradebook.db")
    with _gradebook(url) as gb:
        assert {s.id for s in gb.students} == set(graded.manifest)
        subs = {s.student.id: s for s in gb.assignment_submissions(B.ASSIGNMENT)}
        assert set(subs) == set(graded.manifest)
        n_grades = 0
        for student, m in graded.manifest.items():
            assert float(subs[student].score) == m["total"], student
            assert float(subs[student].max_score) == B.MAX_TOTAL
            for nb in B.NOTEBOOKS:
                for gid, pts in B.POINTS[nb].items():
                    grade = gb.find_grade(gid, nb, B.ASSIGNMENT, student)
                    assert float(grade.score) == m["expected"][nb][gid], (student, gid)
                    assert float(grade.max_score) == pts
                    n_grades += 1
        assert n_grades == len(graded.manifest) * sum(len(p) for p in B.POINTS.values())


@pytest.mark.slow
def test_nbgrader_export(graded):
    from autograder.nbgrader_config import COURSE_ID
    url = "sqlite:///" + str(graded.root / "gradebook.db")
    with tempfile.TemporaryDirectory() as cwd:
        dest = Path(cwd) / "grades_export.csv"
        proc = subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--db={url}", f"--to={dest}",
                               f"--CourseDirectory.course_id={COURSE_ID}"],
                              cwd=cwd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = read_csv(dest)
    exported = {r["student_id"]: r for r in rows if r["assignment"] == B.ASSIGNMENT}
    assert set(exported) == set(graded.manifest)
    for student, m in graded.manifest.items():
        assert float(exported[student]["score"]) == m["total"], student
        assert float(exported[student]["max_score"]) == B.MAX_TOTAL
