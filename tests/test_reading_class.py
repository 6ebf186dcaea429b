"""Reading submissions: honest work keeps every point, wrong work still fails, and no notebook
makes the grader slow or large.

One class (tests/classgen/reading.py) graded through the command line beside honest
classmates: a draft that imports matplotlib above the final version, a 57 MB notebook that is
one figure, a complex128 answer with zero imaginary parts and a notebook of 3,000 notes get
47/47; the matplotlib version as the final one, 51 MiB of code-cell metadata, a nonzero
imaginary part and a flood of 500,000 markdown cells lose exactly what they must, with the
reason.  The flood is refused after its first 10,000 cells, so the grader stays small.
"""
import json

import pytest

from conftest import grades_by_key, read_csv, run_grade
from classgen import build as B
from classgen import reading as R

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("reading")
    students = ([make(f"r_{name}") for name, make in {**R.HONEST, **R.WRONG}.items()]
                + [B.all_correct("n1_loops", "loops"), B.with_mistake("n2_mistake", "pool_ties_to_all")])
    manifest = B.write_class(students, root / "submitted")
    proc = run_grade(root / "submitted", root / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out", manifest


def _totals(out):
    return {r["student_id"]: float(r["score"]) for r in read_csv(out / "totals.csv")}


def _result(out, sid, nb):
    return json.loads((out / "results" / sid / B.ASSIGNMENT / f"{nb}.json").read_text())


def test_every_score_is_exact(graded):
    out, manifest = graded
    totals = _totals(out)
    assert {sid: totals.get(sid) for sid in manifest} == {sid: m["total"] for sid, m in manifest.items()}
    for name in R.HONEST:
        assert totals[f"r_{name}"] == B.MAX_TOTAL == 47
    assert totals["r_final_matplotlib"] == 33
    assert totals["r_large_code_part"] == 18
    assert totals["r_complex_nonzero_imag"] == 39
    assert totals["r_markdown_flood"] == 29
    rows = grades_by_key(out)
    off = []
    for sid, m in manifest.items():
        for nb in B.NOTEBOOKS:
            for gid in B.POINTS[nb]:
                want = m["expected_status"][nb][gid]
                want = [want] if isinstance(want, str) else want
                if want and rows[(sid, nb, gid)]["status"] not in want:
                    off.append(f"{sid} {gid}: {rows[(sid, nb, gid)]['status']}, expected {want}")
    assert not off, "\n".join(off)


def test_a_superseded_draft_is_not_run_and_the_final_version_is(graded):
    out, _ = graded
    honest = _result(out, "r_draft_matplotlib", "convolution")
    assert any("conv_backward is defined again" in n for n in honest["notes"]), honest["notes"]
    rows = grades_by_key(out)
    reason = rows[("r_final_matplotlib", "convolution", "conv_backward_basic")]["reason"]
    assert "import matplotlib.pyplot is not allowed" in reason, reason


def test_outputs_do_not_count_towards_the_size_limit(graded):
    out, _ = graded
    assert _result(out, "r_large_figure", "convolution")["status"] != "ungradable"
    reason = _result(out, "r_large_code_part", "convolution")["reason"]
    assert "besides its outputs" in reason, reason


def test_a_nonzero_imaginary_part_fails_with_a_hint(graded):
    out, _ = graded
    reason = grades_by_key(out)[("r_complex_nonzero_imag", "pooling", "maxpool_forward_basic")]["reason"]
    assert "nonzero imaginary part" in reason, reason


def test_a_markdown_flood_is_refused_cheaply(graded):
    out, _ = graded
    reason = _result(out, "r_markdown_flood", "pooling")["reason"]
    assert "more than 10000 cells" in reason, reason
    run = json.loads((out / "run.json").read_text())
    # before: 1913 MiB and 108 s for the flood alone; the 57 MB figure and the 51 MiB of
    # metadata are never held as parsed JSON either
    # 354 MiB measured alone, 616 MiB once in a full run on a loaded machine: the reader maps
    # each file (its pages count in the RSS), and how many of the 44-57 MB notebooks are mapped
    # at once by the grading and the gradebook threads depends on timing
    assert run["grader_peak_rss_mib"] < 1000, run["grader_peak_rss_mib"]
    longest, who, nb = run["longest_notebook_s"]
    assert longest < 60, (longest, who, nb)
    print(f"grader peak memory {run['grader_peak_rss_mib']} MiB; longest notebook {longest} s ({who}/{nb})")
