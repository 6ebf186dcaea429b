"""The benchmark's arithmetic: the fixed cost of a run, and the seconds per notebook once it is paid."""
import importlib.util
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
         "load_before": [0.5, 0.4, 0.3], "load_after": [0.6, 0.4, 0.3],
         "shapes": [{"shape": [32, 3, 32, 32, 16, 3], "ours_s": 0.0045, "ours_gflops": 6.0,
                     "torch_s": 0.003, "ratio": 1.5}]}


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
    assert "| (32, 3, 32, 32, 16, 3) | 4.5 | 6.0 | 3.0 | 1.50 |" in report
    assert "Load average (1, 5, 15 min) before: 0.50, 0.40, 0.30; after: 0.60, 0.40, 0.30" in report
    with pytest.raises(SystemExit):
        bench.main(["--layer-only", "--no-layer"])


def test_the_layer_report_names_the_layer_timed(bench, monkeypatch):
    """The layer's name survives the timing loop (it once came out as 'torch')."""
    import numpy as np
    monkeypatch.setattr(bench, "LAYER_SHAPES", [(1, 1, 4, 4, 1, 3)])
    monkeypatch.setattr(bench, "LAYER_ROUNDS", 1)
    monkeypatch.setattr(bench, "fast_layer", lambda: (
        "the layer under test", lambda x, w, b, s, p: (np.zeros((1, 1, 4, 4)), None),
        lambda dout, cache: None))
    result = bench.bench_layer()
    assert result["layer"] == "the layer under test"
    assert len(result["shapes"]) == 1 and result["shapes"][0]["ours_s"] > 0
