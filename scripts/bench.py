"""Benchmark: grade one generated class with plain nbgrader and with the autograder.

    python scripts/bench.py                      # what `make bench` runs
    python scripts/bench.py --students 15 --no-book --no-layer
    python scripts/bench.py --layer-only         # the convolution layer against PyTorch
    python scripts/bench.py --assignments-only [--assignment cnn_network ...]
                                                 # the grading cost per notebook of each assignment

One class of correct students (solutions in the class generator's rotating
styles: loops, strided windows with einsum, im2col) is written once, then
graded

1. by plain ``nbgrader autograde cnn_layers`` in a scratch nbgrader course
   (the course's own source notebooks, visible tests only, one kernel per
   notebook), and
2. by ``python -m autograder grade`` with ``--jobs 1`` and with one job per
   core (hidden checks, every notebook in its own sandbox).

For each run it reports wall seconds per notebook, CPU seconds per notebook
(the run's own and its children's, from ``getrusage``, plus the learner
processes' own, which each result records from the learner's control group:
a sandbox reaps them inside its PID namespace, where getrusage cannot see
them), the ratio to nbgrader, and the peak resident memory of the grading
process and of one learner process (sampled every 100 ms).  It also measures the
fixed cost of a run, for both graders (the fastest of three runs that grade a class
of one student with one notebook, each in a new course, minus one notebook's
grading time), and from it the seconds per
notebook of a large class (fixed cost excluded) and that ratio to nbgrader;
the scaling from 1 to N jobs; the book's clean and unchanged rebuild; and the
vectorised convolution layer against PyTorch's ``conv2d`` on three layer
shapes (forward + backward, float64, the ratio of the two times, each timed after a pause
that lets the other library's idle threads stop spinning; with the machine's load average
before and after, since a loaded machine slows the two unevenly).  Both grading
runs must have graded every notebook (and the
autograder must give every correct student full marks), otherwise the
benchmark exits 1.

Then, for each assignment whose checks are registered (or each ``--assignment``), a
class of correct students only (``--assignment-students``, default 3: for cnn_layers
the class above, for the others the correct styles of their demo class,
``tests/classgen/<name>.py``) is graded with ``--jobs 1`` and checked for full marks;
the report gives per notebook its wall and CPU seconds (grader and learner), the
same with the run's fixed cost excluded (from grading the first student alone),
the CPU budget where the course sets one (``CPU_BUDGET_S``: a ``cnn_network``
notebook, training check included, at most 3 s) and the load average before and
after each run.

The figures go to the terminal and, as JSON and Markdown, to ``--report``
(default ``_build/bench/``).
"""
import argparse
import csv
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from classgen import build as B  # noqa: E402

ASSIGNMENT = B.ASSIGNMENT
NOTEBOOKS = B.NOTEBOOKS
STYLES = ("loops", "vectorized", "im2col")
# (N, C, H, W, F, k): the layer shapes chapter 9 times (small image, middle layer, late layer)
LAYER_SHAPES = [(32, 3, 32, 32, 16, 3), (32, 16, 16, 16, 32, 3), (16, 64, 14, 14, 64, 3)]
LAYER_ROUNDS = 8
# NumPy's BLAS (OpenBLAS) keeps a worker thread spinning for about a tenth of a second after
# each matrix product, PyTorch's OpenMP threads for a few milliseconds. Timed right after the
# other library, a contender shares a core with those spinning threads (on two cores PyTorch
# then took up to 1.4 times as long on the last shape, which flattered the ratio). Each
# contender is timed after a pause that outlasts them, as if it ran alone.
QUIET_S = 0.2
# After that pause the cores have idled: the first calls of a layer that uses two threads
# (PyTorch, or ours in shares) then ran up to twice as slow for about 50 ms while the idle
# core woke. Each contender runs for WARM_S before its timed calls, so that every one is
# timed in its steady state.
WARM_S = 0.1
FIXED_REPEATS = 3   # one-notebook runs per grader for the fixed cost; the fastest is kept


# ----------------------------------------------------------------------------- measuring

class PeakMemory:
    """Samples the resident memory of a process and of its descendants every 100 ms.

    Each sample walks the process table, which costs CPU on a machine the timed run
    keeps busy; every 100 ms is cheap, and the processes sampled (the grader, a learner
    process, a kernel) live several samples long.

    ``root`` is the peak RSS of the process itself; ``child`` the peak RSS of
    any one descendant whose command line contains ``child_marker``.
    """

    def __init__(self, pid, child_marker):
        import psutil
        self._psutil = psutil
        self.proc = psutil.Process(pid)
        self.marker = child_marker
        self.root = 0
        self.child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        ps = self._psutil
        seen = {}
        while not self._stop.is_set():
            try:
                self.root = max(self.root, self.proc.memory_info().rss)
                kids = self.proc.children(recursive=True)
            except ps.Error:
                break
            for kid in kids:
                try:
                    if kid.pid not in seen:
                        seen[kid.pid] = any(self.marker in part for part in kid.cmdline())
                    if seen[kid.pid]:
                        self.child = max(self.child, kid.memory_info().rss)
                except ps.Error:
                    continue
            self._stop.wait(0.1)

    def stop(self):
        self._stop.set()
        self._thread.join()


def run_measured(cmd, cwd, child_marker, env=None, timeout=3600):
    """Run cmd; return (CompletedProcess-like dict, wall s, cpu s, peak root rss, peak child rss)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = PeakMemory(proc.pid, child_marker)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        mem.stop()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = "\n".join((err or out).strip().splitlines()[-15:])
        raise SystemExit(f"bench: {' '.join(map(str, cmd[:4]))} ... exited {proc.returncode}:\n{tail}")
    return {"stdout": out, "stderr": err}, wall, cpu, mem.root, mem.child


def mib(nbytes):
    return round(nbytes / (1 << 20), 1)


# ----------------------------------------------------------------------------- the class

def write_class(submitted, students):
    """Correct students, styles rotating per function; returns the manifest."""
    functions = list(B.V.FUNCTIONS)
    cls = []
    for k in range(students):
        variants = {f: STYLES[(k + j) % len(STYLES)] for j, f in enumerate(functions)}
        cls.append(B.all_correct(f"bench{k:04d}", variants))
    return B.write_class(cls, submitted)


# ----------------------------------------------------------------------------- nbgrader

NBGRADER_CONFIG = """\
import sys
sys.path.insert(0, {repo!r})
from autograder.nbgrader_config import make_config
c = get_config()  # noqa: F821
c.merge(make_config({root!r}))
c.Autograde.create_student = True
"""


def nbgrader_course(scratch, submitted, name="nbgrader-course"):
    """A scratch nbgrader course holding the course's source notebooks and the class."""
    from autograder.nbgrader_config import SOURCE_DIRECTORY, SUBMITTED_DIRECTORY
    root = Path(scratch) / name
    shutil.copytree(REPO / SOURCE_DIRECTORY / ASSIGNMENT, root / SOURCE_DIRECTORY / ASSIGNMENT)
    shutil.copytree(submitted, root / SUBMITTED_DIRECTORY)
    (root / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(repo=str(REPO), root=str(root)))
    return root


def bench_nbgrader(scratch, submitted, n_notebooks, name="nbgrader-course"):
    root = nbgrader_course(scratch, submitted, name)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    nbgrader = [sys.executable, "-m", "nbgrader"]
    # the assignment in the gradebook (nbgrader's own bookkeeping, not timed)
    run_measured(nbgrader + ["generate_assignment", ASSIGNMENT, "--force"], root, "ipykernel", env)
    _, wall, cpu, peak, kernel = run_measured(nbgrader + ["autograde", ASSIGNMENT], root, "ipykernel", env)
    graded = sorted(root.glob(f"autograded/*/{ASSIGNMENT}/*.ipynb"))
    if len(graded) != n_notebooks:
        raise SystemExit(f"bench: nbgrader autograded {len(graded)} of {n_notebooks} notebooks")
    export = root / "export.csv"
    run_measured(nbgrader + ["export", f"--to={export}"], root, "ipykernel", env)
    with open(export, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["assignment"] == ASSIGNMENT]
    return {"wall_s": wall, "cpu_s": cpu, "notebooks": len(graded), "students_exported": len(rows),
            "grader_peak_mib": mib(peak), "child_peak_mib": mib(kernel)}


# ----------------------------------------------------------------------------- autograder

def grade(submitted, out, jobs, extra=(), assignment=None):
    cmd = [sys.executable, "-m", "autograder", *(("--assignment", assignment) if assignment else ()),
           "grade", str(submitted), "--out", str(out), "--jobs", str(jobs), "--no-progress", *extra]
    _, wall, cpu, peak, child = run_measured(cmd, REPO, "_child.py")
    summary = json.loads((Path(out) / "run.json").read_text())
    # The learner processes run in a sandbox whose processes are reaped inside its own PID
    # namespace, so getrusage never sees their CPU time: each result carries it, measured by
    # the learner's control group.
    learner, measured = 0.0, True
    by_notebook = {}
    for path in sorted(Path(out).glob("results/*/*/*.json")):
        record = json.loads(path.read_text())
        value = record.get("learner_cpu_s")
        nb = by_notebook.setdefault(record.get("notebook", path.stem),
                                    {"notebooks": 0, "seconds": 0.0, "learner_cpu_s": 0.0})
        nb["notebooks"] += 1
        nb["seconds"] += record.get("seconds") or 0.0
        if value is None:
            measured = False
        else:
            learner += value
            nb["learner_cpu_s"] += value
    return {"wall_s": wall, "cpu_s": cpu + learner, "grader_cpu_s": cpu, "learner_cpu_s": learner,
            "learner_cpu_measured": measured, "summary": summary, "by_notebook": by_notebook,
            "grader_peak_mib": mib(peak), "child_peak_mib": mib(child)}


def check_full_marks(out, manifest):
    """Every student's total as expected and, for a student of kind 'correct' (all of the
    benchmark's), the assignment's maximum; exits 1 otherwise."""
    with open(Path(out) / "totals.csv", newline="", encoding="utf-8") as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    totals = {s: float(r["score"]) for s, r in rows.items()}
    wrong = {s: totals.get(s) for s, m in manifest.items() if totals.get(s) != m["total"]}
    if wrong:
        raise SystemExit(f"bench: the autograder's totals differ from the expected ones: {wrong}")
    short = {s: f"{rows[s]['score']} of {rows[s]['max_score']}" for s, m in manifest.items()
             if m.get("kind", "correct") == "correct" and float(rows[s]["score"]) != float(rows[s]["max_score"])}
    if short:
        raise SystemExit(f"bench: correct students without full marks: {short}")


def bench_autograder(scratch, submitted, manifest, n_notebooks, jobs):
    r = grade(submitted, Path(scratch) / f"grading-jobs{jobs}", jobs)
    s = r["summary"]
    if s["graded_this_run"] != n_notebooks or s["grader_errors"]:
        raise SystemExit(f"bench: --jobs {jobs} graded {s['graded_this_run']} of {n_notebooks} notebooks; "
                         f"grader errors: {s['grader_errors'][:3]}")
    check_full_marks(Path(scratch) / f"grading-jobs{jobs}", manifest)
    r["notebooks"] = s["graded_this_run"]
    r["isolation"] = s["isolation"]
    return r


def one_notebook_class(scratch):
    """A class of one correct student with one notebook (a missing notebook costs no grading time)."""
    submitted = Path(scratch) / "one"
    if not submitted.exists():
        student = B.all_correct("bench-one", "vectorized")
        student.notebooks = {"pooling": B.MISSING}
        B.write_class([student], submitted)
    return submitted


def split_fixed(one_run, class_run, n_notebooks):
    """(fixed s, s per further notebook) from a one-notebook run and an n-notebook run.

    With T(n) = fixed + n * per_notebook, the two runs give both.
    """
    per = (class_run["wall_s"] - one_run["wall_s"]) / (n_notebooks - 1) if n_notebooks > 1 else 0.0
    return one_run["wall_s"] - per, per


def _fixed(runs, class_run, n_notebooks):
    """The fixed cost from the fastest of several one-notebook runs (the least disturbed by
    whatever else the machine does: one run alone varies by a few tenths of a second)."""
    r = min(runs, key=lambda run: run["wall_s"])
    fixed, per = split_fixed(r, class_run, n_notebooks)
    return {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "per_notebook_s": per, "fixed_s": fixed,
            "one_notebook_runs_wall_s": [round(run["wall_s"], 3) for run in runs]}


def bench_fixed_cost(scratch, class_run, n_notebooks):
    """What a run costs whatever the class: from FIXED_REPEATS runs that grade one notebook, each
    in a course of its own (a new gradebook), and the --jobs 1 run."""
    runs = []
    for k in range(FIXED_REPEATS):
        course = Path(scratch) / f"one-course-{k}"
        shutil.copytree(one_notebook_class(scratch), course / "submitted")
        runs.append(grade(course / "submitted", course / "grading", 1))
    return _fixed(runs, class_run, n_notebooks)


def bench_nbgrader_fixed_cost(scratch, class_run, n_notebooks):
    """plain nbgrader's fixed cost, the same way (one notebook, each run in its own scratch course)."""
    runs = [bench_nbgrader(scratch, one_notebook_class(scratch), 1, f"nbgrader-one-{k}")
            for k in range(FIXED_REPEATS)]
    return _fixed(runs, class_run, n_notebooks)


def steady(run, fixed_s, n_notebooks):
    """Seconds per notebook once the run's fixed cost is paid: what a class of thousands sees."""
    return max(run["wall_s"] - fixed_s, 1e-9) / n_notebooks


# ----------------------------------------------------------------------------- per assignment

ASSIGNMENT_STUDENTS = 3   # correct students per assignment in the per-notebook cost section
# CPU seconds one notebook may cost, training check included, on a 2-core machine
CPU_BUDGET_S = {"cnn_network": 3.0}


def assignments():
    """The assignments the grader knows: those whose hidden checks are registered."""
    from autograder.assignment import registered
    return registered()


def correct_class(name, submitted, students):
    """Write up to ``students`` correct students of assignment ``name``; return (manifest, notebooks).

    cnn_layers: the benchmark's own class (styles rotating per function).  Any other
    assignment: the correct students of its demo class, ``tests/classgen/<name>.py``
    (``write_class(submitted)``; one student per correct style), its mistakes left out.
    """
    submitted = Path(submitted)
    if name == ASSIGNMENT:
        return write_class(submitted, students), students * len(NOTEBOOKS)
    try:
        module = importlib.import_module(f"classgen.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"classgen.{name}":
            raise
        raise SystemExit(f"bench: '{name}' has no demo class (tests/classgen/{name}.py with write_class)")
    staging = submitted.with_name(submitted.name + "-demo")
    demo = module.write_class(staging)
    chosen = [sid for sid, m in sorted(demo.items()) if m["kind"] == "correct"][:students]
    if not chosen:
        raise SystemExit(f"bench: the demo class of '{name}' has no correct student")
    submitted.mkdir(parents=True, exist_ok=True)
    for sid in chosen:
        shutil.move(str(staging / sid), str(submitted / sid))
    shutil.rmtree(staging)
    return {sid: demo[sid] for sid in chosen}, len(chosen) * len(module.NOTEBOOKS)


def bench_assignment(scratch, name, students):
    """Grade a class of correct students of one assignment with --jobs 1: the cost per notebook."""
    submitted = Path(scratch) / f"{name}-submitted"
    out = Path(scratch) / f"{name}-grading"
    manifest, n = correct_class(name, submitted, students)
    load_before = list(os.getloadavg())
    r = grade(submitted, out, 1, assignment=name)
    load_after = list(os.getloadavg())
    s = r["summary"]
    if s["graded_this_run"] != n or s["grader_errors"]:
        raise SystemExit(f"bench: {name}: graded {s['graded_this_run']} of {n} notebooks; "
                         f"grader errors: {s['grader_errors'][:3]}")
    check_full_marks(out, manifest)
    # the run's fixed cost (starting the grader, the sandbox, the gradebook): from the same grading
    # of the first student alone, in a course of its own; T(n) = fixed + n * per notebook
    split = {"one_student": None, "cpu_s_per_further_notebook": None, "wall_s_per_further_notebook": None,
             "fixed_cpu_s": None}
    if len(manifest) > 1:
        first = sorted(manifest)[0]
        one = Path(scratch) / f"{name}-one"
        shutil.copytree(submitted / first, one / "submitted" / first)
        r1 = grade(one / "submitted", one / "grading", 1, assignment=name)
        n1 = r1["summary"]["graded_this_run"]
        check_full_marks(one / "grading", {first: manifest[first]})
        marginal = (r["cpu_s"] - r1["cpu_s"]) / (n - n1)
        split = {"one_student": {"notebooks": n1, "wall_s": r1["wall_s"], "cpu_s": r1["cpu_s"]},
                 "cpu_s_per_further_notebook": marginal,
                 "wall_s_per_further_notebook": (r["wall_s"] - r1["wall_s"]) / (n - n1),
                 "fixed_cpu_s": r1["cpu_s"] - n1 * marginal}
    return {"students": len(manifest), "notebooks": n, "full_marks_checked": True, **split,
            "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "grader_cpu_s": r["grader_cpu_s"],
            "learner_cpu_s": r["learner_cpu_s"], "learner_cpu_measured": r["learner_cpu_measured"],
            "wall_s_per_notebook": r["wall_s"] / n, "cpu_s_per_notebook": r["cpu_s"] / n,
            "grader_cpu_s_per_notebook": r["grader_cpu_s"] / n,
            "learner_cpu_s_per_notebook": r["learner_cpu_s"] / n,
            "by_notebook": {nb: {"notebooks": v["notebooks"], "seconds": v["seconds"] / v["notebooks"],
                                 "learner_cpu_s": v["learner_cpu_s"] / v["notebooks"]}
                            for nb, v in sorted(r["by_notebook"].items())},
            "cpu_budget_s": CPU_BUDGET_S.get(name), "grader_peak_mib": r["grader_peak_mib"],
            "child_peak_mib": r["child_peak_mib"], "load_before": load_before, "load_after": load_after}


def bench_assignments(scratch, names, students):
    out = {}
    for name in names:
        print(f"bench: {name}, grading cost per notebook (--jobs 1) ...", flush=True)
        out[name] = bench_assignment(scratch, name, students)
    return out


# ----------------------------------------------------------------------------- the book

def bench_book(scratch):
    """Clean build and unchanged rebuild of the book, in a copy of the repository."""
    copy = Path(scratch) / "book-copy"
    ignore = shutil.ignore_patterns(".venv", ".git", "_build", ".jupyter_cache", "demo", "ci-artifacts",
                                    "node_modules")
    shutil.copytree(REPO, copy, ignore=ignore)
    if (REPO / "node_modules").is_dir():
        os.symlink(REPO / "node_modules", copy / "node_modules")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    times = {}
    for what in ("clean_build_s", "unchanged_rebuild_s"):
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "scripts/build_book.sh"], cwd=copy, env=env, capture_output=True,
                              text=True)
        times[what] = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise SystemExit(f"bench: the book build failed:\n{tail}")
    return times


# ----------------------------------------------------------------------------- the layer

def fast_layer():
    """(name, conv_forward, conv_backward) of the vectorised layer that chapter 9 teaches."""
    from autograder import reference
    return ("autograder.reference.conv_forward/conv_backward (chapter 9's im2col layer)",
            reference.conv_forward, reference.conv_backward)


def on_threads(forward, backward):
    """The layer with the batch cut in shares on threads, as chapter 9 runs it: the book's
    own helper (book/convbook.py), so that the benchmark times what the chapter teaches."""
    sys.path.insert(0, str(REPO / "book"))
    from convbook import batch_threads
    return batch_threads(forward, backward)


def _best_of(fn, repeat=5, warm_s=0.0):
    """The fastest of `repeat` timed calls of fn, after calling it for warm_s seconds (at
    least once)."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warm_s:
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_layer():
    import numpy as np
    load_before = list(os.getloadavg())
    name, fwd, bwd = fast_layer()
    threaded_fwd, threaded_bwd = on_threads(fwd, bwd)
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    n = 512
    a, b2 = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    gflops = 2 * n ** 3 / _best_of(lambda: a @ b2) / 1e9
    rows = []
    for N, C, H, W, F, k in LAYER_SHAPES:
        x = rng.standard_normal((N, C, H, W))
        w = rng.standard_normal((F, C, k, k))
        b = rng.standard_normal(F)
        out, cache = fwd(x, w, b, 1, 1)
        dout = rng.standard_normal(out.shape)

        def ours_step():
            return bwd(dout, fwd(x, w, b, 1, 1)[1])

        def threads_step():
            return threaded_bwd(dout, threaded_fwd(x, w, b, 1, 1)[1])
        steps = {"ours": ours_step, "threads": threads_step}
        if torch is not None:
            tx = torch.tensor(x, requires_grad=True)
            tw = torch.tensor(w, requires_grad=True)
            tb = torch.tensor(b, requires_grad=True)
            td = torch.tensor(dout)

            def torch_step():
                for t in (tx, tw, tb):
                    t.grad = None
                torch.nn.functional.conv2d(tx, tw, tb, stride=1, padding=1).backward(td)
            steps["torch"] = torch_step
        # the two in turn, several rounds, the best of each: a busy moment of the machine
        # then falls on both rather than on one
        best = {who: float("inf") for who in steps}
        for _round in range(LAYER_ROUNDS):
            for who, step in steps.items():
                time.sleep(QUIET_S)
                best[who] = min(best[who], _best_of(step, 3, WARM_S))
        ours = best["ours"]
        row = {"shape": [N, C, H, W, F, k], "ours_s": ours, "threads_s": best["threads"],
               # forward, dx and dw: three products of 2 N F C k k H' W' flops each
               "ours_gflops": 3 * 2 * N * F * C * k * k * out.shape[2] * out.shape[3] / ours / 1e9}
        if torch is not None:
            row["torch_s"] = best["torch"]
            row["ratio"] = ours / row["torch_s"]
            row["threads_ratio"] = best["threads"] / row["torch_s"]
        rows.append(row)
    return {"layer": name, "torch": None if torch is None else torch.__version__,
            "threads": None if torch is None else torch.get_num_threads(),
            "layer_threads": threaded_fwd.workers,
            "matmul_gflops": gflops, "shapes": rows, "load_before": load_before, "quiet_s": QUIET_S,
            "warm_s": WARM_S,
            "load_after": list(os.getloadavg())}


# ----------------------------------------------------------------------------- report

def grading_lines(res):
    """The grading part of the report: the runs, the fixed cost, the scaling, the book."""
    L = []
    L.append(f"# Grading benchmark ({res['students']} correct students, {res['notebooks']} notebooks, "
             f"{res['cores']} cores, isolation: {res.get('isolation', '?')})")
    L.append("")
    L.append("| run | wall s/notebook | CPU s/notebook | throughput vs nbgrader (wall) | (CPU) | "
             "s/notebook, fixed cost excluded | throughput vs nbgrader, fixed cost excluded | "
             "grader peak MiB | learner process peak MiB |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    nbg = res.get("nbgrader")
    base = nbg["wall_s"] / nbg["notebooks"] if nbg else None
    base_cpu = nbg["cpu_s"] / nbg["notebooks"] if nbg else None
    base_steady = nbg.get("steady_s") if nbg else None
    rows = []
    if nbg:
        rows.append(("plain nbgrader autograde", nbg))
    for jobs, r in res["autograder"].items():
        rows.append((f"autograder grade --jobs {jobs}", r))
    for label, r in rows:
        per, cpu = r["wall_s"] / r["notebooks"], r["cpu_s"] / r["notebooks"]
        ratio = f"{base / per:.2f}x" if base else "-"
        cpu_ratio = f"{base_cpu / cpu:.2f}x" if base_cpu else "-"
        st = r.get("steady_s")
        st_text = f"{st:.3f}" if st else "-"
        st_ratio = f"{base_steady / st:.2f}x" if st and base_steady else "-"
        L.append(f"| {label} | {per:.3f} | {cpu:.3f} | {ratio} | {cpu_ratio} | {st_text} | {st_ratio} | "
                 f"{r['grader_peak_mib']} | {r['child_peak_mib']} |")
    L.append("")
    L.append("CPU time counts the grading process, its workers and every learner process (from each "
             "learner's control group); nbgrader's counts its process and its kernels. "
             "'Fixed cost excluded': (run's wall time - the run's fixed cost) / notebooks, the cost per "
             "notebook of a large class.")
    if any(not r.get("learner_cpu_measured", True) for r in res["autograder"].values()):
        L.append("Learner CPU time could not be measured (no control groups): the autograder's CPU "
                 "figures leave it out.")
    L.append("")
    fc = res.get("fixed_cost")
    if fc:
        L.append(f"Fixed cost per run: {fc['fixed_s']:.2f} s; each further notebook "
                 f"{fc['per_notebook_s']:.3f} s (the fastest run grading one notebook took {fc['wall_s']:.2f} s "
                 f"wall, {fc['cpu_s']:.2f} s CPU; the {len(fc['one_notebook_runs_wall_s'])} runs: "
                 f"{', '.join(f'{w:.2f}' for w in fc['one_notebook_runs_wall_s'])} s).")
    nfc = res.get("nbgrader_fixed_cost")
    if nfc:
        L.append(f"plain nbgrader: fixed cost {nfc['fixed_s']:.2f} s; each further notebook "
                 f"{nfc['per_notebook_s']:.3f} s (the fastest of its one-notebook runs took {nfc['wall_s']:.2f} s "
                 f"wall; the runs: {', '.join(f'{w:.2f}' for w in nfc['one_notebook_runs_wall_s'])} s).")
    sc = res.get("scaling")
    if sc:
        L.append(f"Scaling from 1 to {sc['jobs']} jobs: {sc['speedup']:.2f}x faster "
                 f"({sc['efficiency'] * 100:.0f} % parallel efficiency).")
    bk = res.get("book")
    if bk:
        L.append(f"Book: clean build {bk['clean_build_s']:.1f} s, unchanged rebuild "
                 f"{bk['unchanged_rebuild_s']:.1f} s.")
    return L


def assignment_lines(res):
    """The per-assignment part of the report: the cost of one notebook of each assignment."""
    per = res["assignments"]
    L = [f"# Grading cost per notebook, per assignment (autograder grade --jobs 1, correct students "
         f"only, every one checked for full marks; {res.get('cores', '?')} cores)", ""]
    L.append("| assignment | students | notebooks | wall s/notebook | CPU s/notebook | grader CPU s/notebook | "
             "learner CPU s/notebook | CPU s/notebook, fixed cost excluded | run's fixed CPU s | "
             "CPU budget s/notebook | load average (1 min) before, after |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def fmt(value):
        return "-" if value is None else f"{value:.2f}"
    for name, a in per.items():
        budget = a.get("cpu_budget_s")
        cost = a.get("cpu_s_per_further_notebook")
        cost = a["cpu_s_per_notebook"] if cost is None else cost
        budget_text = "-" if budget is None else f"{budget:.1f} ({'within' if cost <= budget else 'OVER'})"
        L.append(f"| {name} | {a['students']} | {a['notebooks']} | {a['wall_s_per_notebook']:.2f} | "
                 f"{a['cpu_s_per_notebook']:.2f} | {a['grader_cpu_s_per_notebook']:.2f} | "
                 f"{a['learner_cpu_s_per_notebook']:.2f} | {fmt(a.get('cpu_s_per_further_notebook'))} | "
                 f"{fmt(a.get('fixed_cpu_s'))} | {budget_text} | "
                 f"{a['load_before'][0]:.2f}, {a['load_after'][0]:.2f} |")
    L.append("")
    L.append("CPU s/notebook: the grading process and its children (getrusage) plus the learner processes "
             "(their control groups), divided by the notebooks, the run's fixed cost (starting the grader, "
             "the sandbox, the gradebook) included. 'Fixed cost excluded': (the class's CPU - the CPU of "
             "grading its first student alone) / the further notebooks, what each notebook of a large class "
             "costs; the budget applies to it (to the run's figure when the class has one student).")
    if any(not a.get("learner_cpu_measured", True) for a in per.values()):
        L.append("Learner CPU time could not be measured (no control groups): the CPU figures leave it out.")
    L.append("")
    L.append("| assignment | notebook | wall s (grading one) | learner CPU s (one) |")
    L.append("| --- | --- | --- | --- |")
    for name, a in per.items():
        for nb, v in a["by_notebook"].items():
            L.append(f"| {name} | {nb} | {v['seconds']:.2f} | {v['learner_cpu_s']:.2f} |")
    return L


def report_lines(res):
    L = []
    if res.get("autograder"):
        L += grading_lines(res)
    if res.get("assignments"):
        if L:
            L.append("")
        L += assignment_lines(res)
    ly = res.get("layer")
    if ly:
        L.append("")
        L.append(f"Convolution layer, forward + backward, float64, stride 1, pad 1: {ly['layer']}; "
                 f"matrix product {ly['matmul_gflops']:.1f} GFLOP/s"
                 + (f"; PyTorch {ly['torch']} on {ly['threads']} threads" if ly["torch"] else
                    "; PyTorch not installed (pip install torch to compare)"))
        if ly.get("quiet_s"):
            L.append(f"Each layer is timed after a {ly['quiet_s']:g} s pause, so that the other library's "
                     "idle threads have stopped spinning (NumPy's BLAS spins for about 0.1 s after a product)"
                     + (f", and after {ly['warm_s']:g} s of warm-up calls, so that the idle cores are awake."
                        if ly.get("warm_s") else "."))
        load = ly.get("load_before"), ly.get("load_after")
        if all(load):
            L.append(f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load[0])}; "
                     f"after: {', '.join(f'{v:.2f}' for v in load[1])} on {res.get('cores', '?')} cores.")
        if ly.get("layer_threads"):
            L.append(f"'threads': the same layer with the batch cut in {ly['layer_threads']} shares, "
                     "one thread and one BLAS thread each (chapter 9's batch_threads).")
        L.append("")
        L.append("| (N, C, H, W, F, k) | ours ms | ours GFLOP/s | threads ms | PyTorch ms "
                 "| ours / PyTorch | threads / PyTorch |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        for r in ly["shapes"]:
            threads = f"{r['threads_s'] * 1e3:.1f}" if "threads_s" in r else "-"
            torch_ms = f"{r['torch_s'] * 1e3:.1f}" if "torch_s" in r else "-"
            ratios = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in ("ratio", "threads_ratio"))
            L.append(f"| {tuple(r['shape'])} | {r['ours_s'] * 1e3:.1f} | {r['ours_gflops']:.1f} "
                     f"| {threads} | {torch_ms} | {ratios} |")
    return L


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=15, help="correct students in the class (default 15)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="jobs of the parallel run (default: one per core)")
    ap.add_argument("--report", default=str(REPO / "_build" / "bench"),
                    help="folder for bench.json and bench.md (default _build/bench)")
    ap.add_argument("--no-nbgrader", action="store_true", help="skip plain nbgrader (no ratio then)")
    ap.add_argument("--no-book", action="store_true", help="skip the book's build times")
    ap.add_argument("--no-layer", action="store_true", help="skip the layer against PyTorch")
    ap.add_argument("--layer-only", action="store_true",
                    help="only the convolution layer against PyTorch (no class, no book)")
    ap.add_argument("--assignments-only", action="store_true",
                    help="only the grading cost per notebook of each assignment (no nbgrader, no book, no layer)")
    ap.add_argument("--assignment", action="append", default=None, metavar="NAME",
                    help="an assignment for the per-assignment section (repeatable; default: every "
                         "assignment whose checks are registered)")
    ap.add_argument("--assignment-students", type=int, default=ASSIGNMENT_STUDENTS, metavar="N",
                    help=f"correct students per assignment in that section (default {ASSIGNMENT_STUDENTS}; "
                         "at most the correct styles of a demo class)")
    ap.add_argument("--no-assignments", action="store_true", help="skip the per-assignment section")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder and print where it is")
    args = ap.parse_args(argv)
    if args.students < 1 or args.jobs < 1 or args.assignment_students < 1:
        ap.error("--students, --jobs and --assignment-students must be at least 1")
    if args.layer_only and args.no_layer:
        ap.error("--layer-only and --no-layer contradict each other")
    if args.assignments_only and (args.layer_only or args.no_assignments):
        ap.error("--assignments-only contradicts --layer-only and --no-assignments")
    names = []
    if not args.layer_only and not args.no_assignments:
        known = assignments()
        names = list(dict.fromkeys(args.assignment)) if args.assignment else known
        unknown = [a for a in names if a not in known]
        if unknown:
            ap.error(f"unknown assignment {', '.join(unknown)}: the registered ones are {', '.join(known)}")
    if args.assignments_only:
        scratch = tempfile.mkdtemp(prefix="bench-")
        try:
            res = {"cores": os.cpu_count(), "python": platform.python_version(),
                   "machine": platform.machine(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "assignments": bench_assignments(scratch, names, args.assignment_students)}
        finally:
            if args.keep:
                print(f"bench: scratch folder kept: {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        return write_report(res, Path(args.report))
    if args.layer_only:
        print("bench: convolution layer against PyTorch ...", flush=True)
        res = {"cores": os.cpu_count(), "python": platform.python_version(),
               "machine": platform.machine(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "layer": bench_layer()}
        return write_report(res, Path(args.report))

    scratch = tempfile.mkdtemp(prefix="bench-")
    try:
        submitted = Path(scratch) / "submitted"
        manifest = write_class(submitted, args.students)
        n = args.students * len(NOTEBOOKS)
        res = {"students": args.students, "notebooks": n, "cores": os.cpu_count(),
               "python": platform.python_version(), "machine": platform.machine(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "autograder": {}}
        print(f"bench: {args.students} students, {n} notebooks, in {scratch}", flush=True)
        if not args.no_nbgrader:
            print("bench: plain nbgrader autograde ...", flush=True)
            res["nbgrader"] = bench_nbgrader(scratch, submitted, n)
        for jobs in sorted({1, args.jobs}):
            print(f"bench: autograder grade --jobs {jobs} ...", flush=True)
            r = bench_autograder(scratch, submitted, manifest, n, jobs)
            res["isolation"] = r.pop("isolation")
            r.pop("summary")
            res["autograder"][jobs] = r
        print("bench: fixed cost (one notebook) ...", flush=True)
        res["fixed_cost"] = bench_fixed_cost(scratch, res["autograder"][1], n)
        for r in res["autograder"].values():
            r["steady_s"] = steady(r, res["fixed_cost"]["fixed_s"], n)
        if "nbgrader" in res:
            print("bench: plain nbgrader, fixed cost (one notebook) ...", flush=True)
            res["nbgrader_fixed_cost"] = bench_nbgrader_fixed_cost(scratch, res["nbgrader"], n)
            res["nbgrader"]["steady_s"] = steady(res["nbgrader"], res["nbgrader_fixed_cost"]["fixed_s"], n)
        if args.jobs > 1:
            speedup = res["autograder"][1]["wall_s"] / res["autograder"][args.jobs]["wall_s"]
            res["scaling"] = {"jobs": args.jobs, "speedup": speedup, "efficiency": speedup / args.jobs}
        if "nbgrader" in res:
            base = res["nbgrader"]["wall_s"] / n
            res["ratio_vs_nbgrader"] = {j: base / (r["wall_s"] / n) for j, r in res["autograder"].items()}
            base_cpu = res["nbgrader"]["cpu_s"] / n
            res["cpu_ratio_vs_nbgrader"] = {j: base_cpu / (r["cpu_s"] / n) for j, r in res["autograder"].items()}
            res["steady_ratio_vs_nbgrader"] = {j: res["nbgrader"]["steady_s"] / r["steady_s"]
                                               for j, r in res["autograder"].items()}
        if names:
            res["assignments"] = bench_assignments(scratch, names, args.assignment_students)
        if not args.no_layer:
            print("bench: convolution layer against PyTorch ...", flush=True)
            res["layer"] = bench_layer()
        if not args.no_book:
            print("bench: the book, clean build and unchanged rebuild ...", flush=True)
            res["book"] = bench_book(scratch)
    finally:
        if args.keep:
            print(f"bench: scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    return write_report(res, Path(args.report))


def write_report(res, report):
    """Print the report and write it as bench.json and bench.md into the folder report."""
    lines = report_lines(res)
    report.mkdir(parents=True, exist_ok=True)
    (report / "bench.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    (report / "bench.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print()
    print("\n".join(lines))
    print(f"\nwrote {report / 'bench.json'} and {report / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
