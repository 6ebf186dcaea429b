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
