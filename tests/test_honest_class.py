"""Honest work gets full marks, the same marks every time.

The honest-styles class (tests/classgen/honest.py: plots, timings, tqdm, sys,
copy, warnings, starter-code headers, an extra cache entry, prints in inner
loops, astype copies, helpers above and below, drafts, cells out of order,
and every correct style) is graded three times in a row with ``--regrade``
and one course key: every student gets full marks, the same each time.  A
float32 intermediate (outside the float64 contract) gets the same score and
the same feedback in all three runs, because the hidden inputs are derived
from the course key and the notebook's content, not drawn afresh.
"""
import json
from pathlib import Path

import pytest

from conftest import grades_by_key, run_grade
from classgen import build as B
from classgen import honest as H

RUNS = 3


@pytest.fixture(scope="module")
def regraded(tmp_path_factory):
    root = tmp_path_factory.mktemp("honest")
    students = H.honest_class() + [H.float32_student()]
    submitted, out = root / "submitted", root / "out"
    manifest = B.write_class(students, submitted)
    key = root / "keys" / "course.key"
    runs = []
    for k in range(RUNS):
        proc = run_grade(submitted, out, "--regrade", "--course-key", str(key))
        assert proc.returncode == 0, f"run {k + 1} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        results = {}
        for path in sorted((out / "results").rglob("*.json")):
            r = json.loads(path.read_text())
            results[(r["student_id"], r["notebook"])] = r
        runs.append((grades_by_key(out), results, json.loads((out / "run.json").read_text())))
    return manifest, runs


@pytest.mark.slow
def test_the_class_is_big_and_covers_every_habit():
    students = H.honest_class()
    assert len(students) >= 25
    assert set(H.CASES) <= {s.student_id.split("_", 1)[1] for s in students}


@pytest.mark.slow
def test_every_honest_student_gets_full_marks_in_every_run(regraded):
    manifest, runs = regraded
    for k, (rows, _, run) in enumerate(runs, 1):
        assert run["regrade"] and run["graded_this_run"] == 2 * len(manifest)
        wrong = [f"run {k}: {s} {gid}: {row['score']} ({row['status']}: {row['reason'][:160]})"
                 for (s, nb, gid), row in sorted(rows.items())
                 if manifest[s]["kind"] != "float32" and float(row["score"]) != B.POINTS[nb][gid]]
        assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_scores_statuses_and_feedback_identical_in_every_run(regraded):
    _, runs = regraded
    first_rows, first_results, _ = runs[0]
    for rows, results, _ in runs[1:]:
        assert {k: (r["score"], r["status"], r["reason"]) for k, r in rows.items()} == \
               {k: (r["score"], r["status"], r["reason"]) for k, r in first_rows.items()}
        for key, r in results.items():
            assert [c["feedback"] for c in r["cells"]] == [c["feedback"] for c in first_results[key]["cells"]]


@pytest.mark.slow
def test_float32_intermediate_scores_the_same_three_times(regraded):
    _, runs = regraded
    student = H.float32_student().student_id
    totals = [sum(float(r["score"]) for (s, _, _), r in rows.items() if s == student) for rows, _, _ in runs]
    assert len(set(totals)) == 1, totals
    dw_cells = [[(gid, r["status"]) for (s, nb, gid), r in sorted(rows.items())
                 if s == student and gid.startswith("conv_backward")] for rows, _, _ in runs]
    assert dw_cells[0] == dw_cells[1] == dw_cells[2]


@pytest.mark.slow
def test_feedback_says_what_was_not_run_and_never_blames_a_print(regraded):
    _, runs = regraded
    _, results, _ = runs[-1]
    plot = next(r for (s, nb), r in results.items() if s.endswith("plot_cell") and nb == "convolution")
    assert any(n.startswith("not run for grading") for n in plot["notes"])
    printing = [r for (s, _), r in results.items() if s.endswith("print_in_loop")]
    assert printing and all(c["status"] == "passed" for r in printing for c in r["cells"])
    torch = next(r for (s, nb), r in results.items() if s.endswith("torch_comparison") and nb == "convolution")
    assert torch["score"] == torch["max_score"] and not any("torch" in c["reason"] for c in torch["cells"])
