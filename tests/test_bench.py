"""The benchmark's arithmetic: the fixed cost of a run, and the seconds per notebook once it is paid."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", os.path.join(ROOT, "scripts", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixed_cost_comes_from_the_fastest_one_notebook_run(bench):
    # T(n) = 2 + 0.5 n: the one-notebook runs took 2.5 s, once disturbed (3.4 s)
    runs = [{"wall_s": 3.4, "cpu_s": 3.0}, {"wall_s": 2.5, "cpu_s": 2.4}, {"wall_s": 2.6, "cpu_s": 2.5}]
    fixed = bench._fixed(runs, {"wall_s": 2 + 0.5 * 30}, 30)
    assert fixed["wall_s"] == 2.5 and fixed["cpu_s"] == 2.4
    assert fixed["per_notebook_s"] == pytest.approx(0.5) and fixed["fixed_s"] == pytest.approx(2.0)
    assert fixed["one_notebook_runs_wall_s"] == [3.4, 2.5, 2.6]
    assert bench.steady({"wall_s": 2 + 0.5 * 30}, fixed["fixed_s"], 30) == pytest.approx(0.5)


LAYER = {"layer": "reference", "torch": "2.x", "threads": 2, "matmul_gflops": 100.0,
         "layer_threads": 2, "load_before": [0.5, 0.4, 0.3], "load_after": [0.6, 0.4, 0.3],
         "shapes": [{"shape": [32, 3, 32, 32, 16, 3], "ours_s": 0.0045, "ours_gflops": 6.0,
                     "threads_s": 0.0036, "torch_s": 0.003, "ratio": 1.5, "threads_ratio": 1.2}]}


def test_layer_only_measures_the_layer_and_nothing_else(bench, tmp_path, monkeypatch):
    """--layer-only: no class is written, nothing is graded, no book is built; the report has
    the ratio to PyTorch and the load the machine was under."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("--layer-only ran the class benchmark")
    monkeypatch.setattr(bench, "write_class", must_not_run)
    monkeypatch.setattr(bench, "bench_book", must_not_run)
    monkeypatch.setattr(bench, "bench_layer", lambda: LAYER)
    assert bench.main(["--layer-only", "--report", str(tmp_path)]) == 0
    report = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert "Grading benchmark" not in report
    assert "| (32, 3, 32, 32, 16, 3) | 4.5 | 6.0 | 3.6 | 3.0 | 1.50 | 1.20 |" in report
    assert "the batch cut in 2 shares" in report
    assert "Load average (1, 5, 15 min) before: 0.50, 0.40, 0.30; after: 0.60, 0.40, 0.30" in report
    with pytest.raises(SystemExit):
        bench.main(["--layer-only", "--no-layer"])


def test_each_layer_is_timed_after_the_other_librarys_threads_are_quiet(bench, monkeypatch):
    """NumPy's BLAS keeps a thread spinning for about 0.1 s after a product: timed straight
    after it, PyTorch shared a core with it. Every run of timed calls starts after a pause."""
    import itertools
    import numpy as np
    events = []
    monkeypatch.setattr(bench, "LAYER_SHAPES", [(1, 1, 4, 4, 1, 3)])
    monkeypatch.setattr(bench, "LAYER_ROUNDS", 3)
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("pause", s)))
    # a clock that moves 1 ms each time it is read: the warm-up's length in calls is then
    # fixed, whatever the machine's speed
    tick = 0.001
    ticks = itertools.count()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks) * tick)
    monkeypatch.setattr(bench, "fast_layer", lambda: (
        "layer", lambda x, w, b, stride=1, pad=0: (events.append(("ours", None)),
                                                   (np.zeros((1, 1, 4, 4)), None))[1],
        lambda dout, cache: (np.zeros((1, 1, 4, 4)), 0.0, 0.0)))
    result = bench.bench_layer()
    calls = [i for i, (what, _) in enumerate(events) if what == "ours"]
    assert len(calls) > 3 * 3      # the first call makes dout; then 3 rounds of warm-up + 3 timed
    starts = [i for i in calls[1:] if events[i - 1][0] != "ours"]
    # in each round the layer on one thread, then on threads (one image: one share)
    assert len(starts) == 2 * bench.LAYER_ROUNDS
    for i in starts:
        assert events[i - 1] == ("pause", bench.QUIET_S)
    assert bench.QUIET_S >= 0.15
    # after the pause, warm-up calls for WARM_S (a clock read each), then the 3 timed ones
    ends = [i for i in calls if i + 1 == len(events) or events[i + 1][0] != "ours"]
    for start, end in zip(starts, ends[1:]):
        assert end - start + 1 >= bench.WARM_S / tick, (start, end)
    assert bench.WARM_S >= 0.05
    report = "\n".join(bench.report_lines({"layer": result}))
    assert f"timed after a {bench.QUIET_S:g} s pause" in report
    assert f"after {bench.WARM_S:g} s of warm-up calls" in report


def test_the_layer_report_names_the_layer_timed(bench, monkeypatch):
    """The layer's name survives the timing loop (it once came out as 'torch')."""
    import numpy as np
    monkeypatch.setattr(bench, "LAYER_SHAPES", [(1, 1, 4, 4, 1, 3)])
    monkeypatch.setattr(bench, "LAYER_ROUNDS", 1)
    monkeypatch.setattr(bench, "fast_layer", lambda: (
        "the layer under test", lambda x, w, b, stride=1, pad=0: (np.zeros((1, 1, 4, 4)), None),
        lambda dout, cache: (np.zeros((1, 1, 4, 4)), 0.0, 0.0)))
    result = bench.bench_layer()
    assert result["layer"] == "the layer under test"
    assert len(result["shapes"]) == 1 and result["shapes"][0]["ours_s"] > 0
    assert result["shapes"][0]["threads_s"] > 0


def test_full_marks_check_fails_when_a_correct_student_lost_a_point(bench, tmp_path):
    """The per-assignment section exits 1 unless every correct student got the maximum."""
    def totals(score, max_score):
        (tmp_path / "totals.csv").write_text(
            f"student_id,assignment,score,max_score\ns1,cnn_network,{score},{max_score}\n", encoding="utf-8")
    totals(10.0, 10.0)
    bench.check_full_marks(tmp_path, {"s1": {"kind": "correct", "total": 10.0}})
    totals(9.0, 10.0)
    with pytest.raises(SystemExit, match="differ from the expected"):
        bench.check_full_marks(tmp_path, {"s1": {"kind": "correct", "total": 10.0}})
    # a manifest that expects less than the maximum for a correct student does not excuse it
    with pytest.raises(SystemExit, match="without full marks"):
        bench.check_full_marks(tmp_path, {"s1": {"kind": "correct", "total": 9.0}})


def test_the_assignments_come_from_the_registry(bench):
    from autograder.assignment import registered
    names = bench.assignments()
    assert names == registered()
    assert {"cnn_layers", "cnn_network", "conv_variants"} <= set(names)
    with pytest.raises(SystemExit):
        bench.main(["--assignments-only", "--assignment", "no_such_assignment"])
    with pytest.raises(SystemExit):
        bench.main(["--assignments-only", "--layer-only"])


def test_the_budget_is_judged_on_the_cost_of_a_further_notebook(bench):
    base = {"students": 3, "notebooks": 3, "wall_s_per_notebook": 2.0, "cpu_s_per_notebook": 3.5,
            "grader_cpu_s_per_notebook": 2.0, "learner_cpu_s_per_notebook": 1.5, "fixed_cpu_s": 2.0,
            "cpu_budget_s": 3.0, "load_before": [1.0, 1.0, 1.0], "load_after": [1.5, 1.0, 1.0],
            "by_notebook": {"network": {"notebooks": 3, "seconds": 1.9, "learner_cpu_s": 1.3}}}
    within = "\n".join(bench.assignment_lines(
        {"cores": 2, "assignments": {"cnn_network": {**base, "cpu_s_per_further_notebook": 2.9}}}))
    assert "| cnn_network | 3 | 3 | 2.00 | 3.50 | 2.00 | 1.50 | 2.90 | 2.00 | 3.0 (within) | 1.00, 1.50 |" in within
    assert "| cnn_network | network | 1.90 | 1.30 |" in within
    over = "\n".join(bench.assignment_lines(
        {"cores": 2, "assignments": {"cnn_network": {**base, "cpu_s_per_further_notebook": 3.1}}}))
    assert "3.0 (OVER)" in over
    # one student: no split, the run's own figure is judged
    alone = "\n".join(bench.assignment_lines(
        {"cores": 2, "assignments": {"cnn_network": {**base, "cpu_s_per_further_notebook": None,
                                                     "fixed_cpu_s": None}}}))
    assert "| 1.50 | - | - | 3.0 (OVER) |" in alone


def test_assignments_only_grades_a_class_and_checks_full_marks(bench, tmp_path, monkeypatch):
    """--assignments-only --assignment cnn_network: one correct student graded for real (the
    training check included), full marks checked, nothing else run; the timing is not asserted
    (the machines are noisy): `make bench` reports it."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("--assignments-only ran another section")
    for name in ("bench_nbgrader", "bench_book", "bench_layer", "bench_fixed_cost", "write_class"):
        monkeypatch.setattr(bench, name, must_not_run)
    checked = []
    real_check = bench.check_full_marks

    def spy(out, manifest):
        real_check(out, manifest)
        checked.append((out, manifest))
    monkeypatch.setattr(bench, "check_full_marks", spy)
    report = tmp_path / "report"
    assert bench.main(["--assignments-only", "--assignment", "cnn_network", "--assignment-students", "1",
                       "--report", str(report)]) == 0
    assert len(checked) == 1
    (student, expected), = checked[0][1].items()
    assert expected["kind"] == "correct" and expected["total"] > 0
    data = json.loads((report / "bench.json").read_text(encoding="utf-8"))
    assert "autograder" not in data and "layer" not in data and "book" not in data
    assert list(data["assignments"]) == ["cnn_network"]
    a = data["assignments"]["cnn_network"]
    assert a["students"] == 1 and a["notebooks"] == 1 and a["full_marks_checked"] is True
    assert a["cpu_budget_s"] == 3.0 and a["cpu_s_per_further_notebook"] is None
    assert a["cpu_s_per_notebook"] == pytest.approx(a["grader_cpu_s_per_notebook"] + a["learner_cpu_s_per_notebook"])
    assert a["cpu_s_per_notebook"] > 0 and a["wall_s_per_notebook"] > 0
    assert list(a["by_notebook"]) == ["network"] and a["by_notebook"]["network"]["notebooks"] == 1
    assert len(a["load_before"]) == 3 and len(a["load_after"]) == 3
    md = (report / "bench.md").read_text(encoding="utf-8")
    assert "# Grading cost per notebook, per assignment" in md
    assert "| cnn_network | 1 | 1 | " in md and "| cnn_network | network | " in md
