"""Grade a whole class: discovery, resume, the results store, CSV, feedback, gradebook.

``grade_class(SUBMITTED, OUT, root)`` grades every notebook of the assignment
for every student found as ``SUBMITTED/<student_id>/cnn_layers/<notebook>.ipynb``
(nbgrader's submitted layout).  Each notebook is read without running it
(``autograder.submission``), its learner cells run in a ``LearnerProcess``
(``autograder.sandbox``), and the hidden checks (``autograder.checks``) grade
the returned values in this process.

Output folder::

    OUT/results/<student>/<assignment>/<notebook>.json   one result per notebook (below)
    OUT/grades.csv       student_id, assignment, notebook, grade_id, score, max_score, status, reason
    OUT/totals.csv       student_id, assignment, score, max_score
    OUT/feedback/<student>/<assignment>/<notebook>.html
    OUT/gradebook.db     nbgrader gradebook (default; any SQLAlchemy URL with db_url)
    OUT/run.json         metadata of the last run (isolation, limits, counts, times)

Result JSON (``format`` 1)::

    {"format": 1, "student_id": str, "assignment": str, "notebook": str,
     "status": "graded" | "ungradable" | "error",   # error: the grader itself failed
     "reason": str,                                   # for ungradable / error
     "score": float, "max_score": float,
     "cells": [{"grade_id", "function", "status", "score", "max_score",
                "reason",        # one line (first feedback line when not passed)
                "feedback": [str, ...]}, ...],      # one per graded cell, table order
     "notes": [str, ...],                             # submission and setup notes
     "setup": [{"cell": int, "status": str, "message": str}, ...],  # cells that failed to run
     "timestamp": str | null,                         # from timestamp.txt, when present
     "graded_at": str (UTC, ISO 8601), "seconds": float, "isolation": str,
     "grader_traceback": str}                         # only when the grader itself failed

Cell statuses: passed, failed, error, timeout, out-of-memory, killed, ungradable.

Resume: a result is written atomically (temporary file, fsync, os.replace) as
soon as its notebook is graded, and a stored result is never recomputed
unless ``regrade=True`` -- except results with notebook status ``error``
(the grader failed, not the learner), which are retried: once more, one at a
time, at the end of the same run, and again on the next run.  A run killed at
any point and started again finishes the class with nothing lost or counted
twice.  The CSV files, feedback pages and gradebook are rebuilt from the
stored results at the end of every run.

The random inputs are drawn from a seed made from fresh entropy per run
(``seed`` fixes it, for tests); it is written nowhere.
"""
import csv
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict

import numpy as np

from . import checks, feedback
from .nbgrader_config import COURSE_ID, SOURCE_DIRECTORY
from .policy import PARSE_LOCK
from .submission import load_source, read_submission

FORMAT = 1
ASSIGNMENT = checks.ASSIGNMENT
GRADES_COLUMNS = ["student_id", "assignment", "notebook", "grade_id", "score", "max_score", "status", "reason"]
TOTALS_COLUMNS = ["student_id", "assignment", "score", "max_score"]


class GradingError(Exception):
    """Bad input for a grading run; the message says how to fix it."""


# --------------------------------------------------------------------------- the store

def result_path(out_dir, student, notebook, assignment=ASSIGNMENT):
    return os.path.join(out_dir, "results", student, assignment, notebook + ".json")


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, text):
    """Write text to path so that path holds either the old or the whole new content."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def store_result(out_dir, result):
    path = result_path(out_dir, result["student_id"], result["notebook"], result["assignment"])
    atomic_write(path, json.dumps(result, indent=1, sort_keys=True))
    return path


def load_result(out_dir, student, notebook, assignment=ASSIGNMENT):
    """The stored result, or None when there is none (or it cannot be read)."""
    try:
        with open(result_path(out_dir, student, notebook, assignment), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("cells"), list):
        return None
    return data


def _remove_stale_temp_files(out_dir):
    root = os.path.join(out_dir, "results")
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass


# --------------------------------------------------------------------------- discovery

def source_notebook(root, notebook, assignment=ASSIGNMENT):
    return os.path.join(root, SOURCE_DIRECTORY, assignment, notebook + ".ipynb")


def discover(submitted_dir, assignment=ASSIGNMENT):
    """Sorted student ids that have SUBMITTED/<student>/<assignment>/."""
    if not os.path.isdir(submitted_dir):
        raise GradingError(f"{submitted_dir}: no such folder. Pass the folder of submissions in nbgrader's "
                           f"layout, SUBMITTED/<student_id>/{assignment}/<notebook>.ipynb "
                           "(python -m autograder collect builds it from an LMS download)")
    students = sorted(d for d in os.listdir(submitted_dir)
                      if not d.startswith(".") and os.path.isdir(os.path.join(submitted_dir, d, assignment)))
    if not students:
        loose = [f for f in os.listdir(submitted_dir) if f.endswith((".ipynb", ".zip"))]
        others = sorted(d for d in os.listdir(submitted_dir) if os.path.isdir(os.path.join(submitted_dir, d)))
        extra = ""
        if loose:
            extra = (f" It holds {len(loose)} loose notebook or zip file(s): run "
                     f"'python -m autograder collect {submitted_dir} --to submitted' first.")
        elif others:
            extra = f" Student folders found ({', '.join(others[:3])}...) have no '{assignment}' folder."
        raise GradingError(f"{submitted_dir}: no submissions of '{assignment}' found; expected "
                           f"SUBMITTED/<student_id>/{assignment}/<notebook>.ipynb.{extra}")
    return students


def _student_key(student):
    return int.from_bytes(hashlib.sha256(student.encode("utf-8")).digest()[:8], "little")


def student_rng(seed_seq, student, notebook):
    """A Generator for one student's notebook, derived from the run's seed."""
    child = np.random.SeedSequence(entropy=seed_seq.entropy,
                                   spawn_key=(_student_key(student), checks.NOTEBOOKS.index(notebook)))
    return np.random.Generator(np.random.PCG64(child))


# --------------------------------------------------------------------------- one notebook

def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _base(student, notebook, assignment):
    return {"format": FORMAT, "student_id": student, "assignment": assignment, "notebook": notebook,
            "status": "graded", "reason": "", "cells": [], "notes": [], "setup": [], "timestamp": None,
            "graded_at": _now(), "seconds": 0.0, "isolation": ""}


def _finish(result, verdicts):
    cells = []
    for v in verdicts:
        d = v.to_dict()
        d["reason"] = "" if v.status == "passed" else (v.feedback[0] if v.feedback else v.status)
        cells.append(d)
    result["cells"] = cells
    result["score"] = float(sum(c["score"] for c in cells))
    result["max_score"] = float(sum(c["max_score"] for c in cells))
    return result


def _all(notebook, status, reason):
    return [checks.make_verdict(gid, status, [reason]) for gid in checks.cells_of(notebook)]


def _read_timestamp(folder):
    try:
        with open(os.path.join(folder, "timestamp.txt"), encoding="utf-8") as fh:
            text = fh.read(200).strip()
        return text or None
    except OSError:
        return None


def grade_notebook_file(path, notebook, source, rng, student="", assignment=ASSIGNMENT,
                        limits=None, budgets=None, isolation=None):
    """The result dict for one submitted notebook (never raises for a bad submission)."""
    from . import sandbox  # imported here so that the rest of the module works without it

    start = time.monotonic()
    result = _base(student, notebook, assignment)
    result["timestamp"] = _read_timestamp(os.path.dirname(path))
    try:
        if not os.path.isfile(path):
            folder = os.path.dirname(path)
            known = {nb + ".ipynb" for nb in checks.NOTEBOOKS}
            others = sorted(f for f in os.listdir(folder) if f.endswith(".ipynb") and f not in known) \
                if os.path.isdir(folder) else []
            reason = "ungradable: notebook missing"
            if others:
                reason += f" (found instead: {', '.join(others[:5])})"
            result.update(status="ungradable", reason=reason)
            return _finish(result, _all(notebook, "ungradable", reason))
        sub = read_submission(path, source, notebook)
        result["notes"] = list(sub.notes)
        if not sub.gradable:
            reason = f"ungradable: {sub.reason}"
            result.update(status="ungradable", reason=reason)
            return _finish(result, _all(notebook, "ungradable", reason))
        if all(f in sub.ungradable for f in sub.functions):
            verdicts = checks.grade_notebook(notebook, None, rng, budgets, sub.ungradable)
            return _finish(result, verdicts)
        kwargs = {} if isolation is None else {"isolation": isolation}
        with sandbox.LearnerProcess(sub.cells, limits=limits or sandbox.Limits(), **kwargs) as proc:
            report = proc.setup()
            result["isolation"] = getattr(report, "isolation", "") or getattr(proc, "isolation", "")
            for cell in getattr(report, "cells", ()):
                if cell.status != "ok":
                    result["setup"].append({"cell": cell.index, "status": cell.status,
                                            "message": checks._short(cell.message)})
            for item in result["setup"][:10]:
                result["notes"].append(f"code cell {item['cell'] + 1} (counting your code cells) did not run "
                                       f"to the end ({item['status']}): {item['message']}")
            verdicts = checks.grade_notebook(notebook, proc.call, rng, budgets, sub.ungradable)
        return _finish(result, verdicts)
    except Exception as exc:  # the grader failed on this notebook: record it, go on
        reason = f"grading failed: {type(exc).__name__}: {checks._short(exc)}"
        with PARSE_LOCK:  # formatting a traceback parses source lines on CPython 3.11
            result["grader_traceback"] = traceback.format_exc(limit=20)
        result.update(status="error", reason=reason)
        return _finish(result, _all(notebook, "error", reason))
    finally:
        result["seconds"] = round(time.monotonic() - start, 3)


# --------------------------------------------------------------------------- reports

def _fmt(x):
    return repr(float(x))


def _results_for(out_dir, students, assignment):
    results = {}
    for student in students:
        per = {}
        for nb in checks.NOTEBOOKS:
            r = load_result(out_dir, student, nb, assignment)
            if r is None:
                reason = "no stored result (run grade again)"
                r = _finish(dict(_base(student, nb, assignment), status="error", reason=reason),
                            _all(nb, "error", reason))
            per[nb] = r
        results[student] = per
    return results


def _write_csv(path, columns, rows):
    import io
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def write_reports(out_dir, results, assignment=ASSIGNMENT):
    """grades.csv, totals.csv and the feedback pages, from results {student: {notebook: result}}."""
    grade_rows, total_rows = [], []
    for student in sorted(results):
        score = maximum = 0.0
        for nb in sorted(results[student]):
            r = results[student][nb]
            cells = {c["grade_id"]: c for c in r["cells"]}
            for gid in sorted(checks.cells_of(nb)):
                c = cells.get(gid) or {"score": 0.0, "max_score": checks.GRADED_CELLS[gid].points,
                                       "status": "error", "reason": "no verdict stored"}
                grade_rows.append([student, assignment, nb, gid, _fmt(c["score"]), _fmt(c["max_score"]),
                                   c["status"], " ".join(str(c.get("reason", "")).split())])
                score += float(c["score"])
                maximum += float(c["max_score"])
            page = os.path.join(out_dir, "feedback", student, assignment, nb + ".html")
            os.makedirs(os.path.dirname(page), exist_ok=True)
            atomic_write(page, feedback.render(r))
        total_rows.append([student, assignment, _fmt(score), _fmt(maximum)])
    _write_csv(os.path.join(out_dir, "grades.csv"), GRADES_COLUMNS, grade_rows)
    _write_csv(os.path.join(out_dir, "totals.csv"), TOTALS_COLUMNS, total_rows)
    return {row[0]: float(row[2]) for row in total_rows}


def default_db_url(out_dir):
    return "sqlite:///" + os.path.join(os.path.abspath(out_dir), "gradebook.db")


def _safe_url(url):
    """The URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def nbgrader_export(db_url, dest, course_id=COURSE_ID):
    """Run `nbgrader export` on the gradebook; raise GradingError when it fails."""
    cmd = [sys.executable, "-m", "nbgrader", "export", f"--db={db_url}", f"--to={os.path.abspath(dest)}",
           f"--course={course_id}"]
    with tempfile.TemporaryDirectory(prefix="export-") as cwd:  # no nbgrader_config.py from elsewhere
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(dest):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise GradingError("nbgrader export failed: " + " | ".join(tail))
    return dest


def read_export(path, assignment=ASSIGNMENT):
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["student_id"]: float(row["score"]) for row in csv.DictReader(fh)
                if row.get("assignment") == assignment}


def verify_export(db_url, totals, out_dir, assignment=ASSIGNMENT):
    """Export the gradebook with nbgrader and compare per-student scores with totals."""
    with tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
        dest = os.path.join(tmp, "export.csv")
        nbgrader_export(db_url, dest)
        exported = read_export(dest, assignment)
    mismatched = sorted(s for s in totals if abs(exported.get(s, float("nan")) - totals[s]) > 1e-9
                        or s not in exported)
    return {"ok": not mismatched, "students": len(totals), "mismatched": mismatched[:20]}


# --------------------------------------------------------------------------- the class

def grade_class(submitted_dir, out_dir, root, db_url=None, jobs=2, seed=None, regrade=False, progress=True,
                limits=None, isolation=None, check_export=True, assignment=ASSIGNMENT):
    """Grade every student's notebooks; return a summary dict (also written to OUT/run.json).

    See the module docstring for the output files.  ``seed`` fixes the random
    inputs (tests only); ``limits`` and ``isolation`` go to the sandbox.
    """
    from tqdm import tqdm

    if assignment != ASSIGNMENT:
        raise GradingError(f"unknown assignment '{assignment}': this course grades '{ASSIGNMENT}'")
    started, t0 = _now(), time.monotonic()
    root = os.path.abspath(root)
    students = discover(submitted_dir, assignment)
    sources = {}
    for nb in checks.NOTEBOOKS:
        path = source_notebook(root, nb, assignment)
        if not os.path.isfile(path):
            raise GradingError(f"{path}: source notebook missing; pass the course root (the folder with "
                               f"{SOURCE_DIRECTORY}/{assignment}/) with --root")
        sources[nb] = load_source(path, nb)
    os.makedirs(out_dir, exist_ok=True)
    _remove_stale_temp_files(out_dir)

    from . import sandbox
    mode = isolation or sandbox.isolation_mode()
    limits = limits or sandbox.Limits()
    seed_seq = np.random.SeedSequence(seed)
    budgets = checks.Budgets()

    todo = []
    for student in students:
        for nb in checks.NOTEBOOKS:
            stored = None if regrade else load_result(out_dir, student, nb, assignment)
            if stored is None or stored.get("status") == "error":
                todo.append((student, nb))

    def work(student, nb):
        path = os.path.join(submitted_dir, student, assignment, nb + ".ipynb")
        result = grade_notebook_file(path, nb, sources[nb], student_rng(seed_seq, student, nb), student,
                                     assignment, limits, budgets, isolation)
        store_result(out_dir, result)
        return result

    failed = {}  # (student, notebook) -> what went wrong in the grader itself
    bar = tqdm(total=len(todo), disable=not progress, unit="notebook", desc="grading")
    try:
        if jobs <= 1:
            for student, nb in todo:
                r = work(student, nb)
                if r["status"] == "error":
                    failed[(student, nb)] = r["reason"]
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(work, s, nb): (s, nb) for s, nb in todo}
                for fut in as_completed(futures):
                    s, nb = futures[fut]
                    try:
                        r = fut.result()
                        if r["status"] == "error":
                            failed[(s, nb)] = r["reason"]
                    except Exception as exc:  # storing failed (disk full, permissions)
                        failed[(s, nb)] = f"could not store the result: {exc}"
                    bar.update(1)
        # A failure of the grader itself (not of the learner's code) may be transient, such as
        # CPython 3.11's parser race between threads: retry those notebooks once, one at a time.
        for s, nb in sorted(failed):
            try:
                r = work(s, nb)
            except Exception as exc:
                failed[(s, nb)] = f"could not store the result: {exc}"
                continue
            if r["status"] == "error":
                failed[(s, nb)] = r["reason"]
            else:
                del failed[(s, nb)]
    finally:
        bar.close()
    errors = [f"{s}/{nb}: {reason}" for (s, nb), reason in sorted(failed.items())]

    results = _results_for(out_dir, students, assignment)
    totals = write_reports(out_dir, results, assignment)
    db_url = db_url or default_db_url(out_dir)
    from .gradebook import write_gradebook
    write_gradebook(db_url, root, results, assignment)
    export = verify_export(db_url, totals, out_dir, assignment) if check_export else None

    statuses = {}
    for per in results.values():
        for r in per.values():
            for c in r["cells"]:
                statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    summary = {
        "assignment": assignment,
        "students": len(students),
        "notebooks": len(students) * len(checks.NOTEBOOKS),
        "graded_this_run": len(todo),
        "reused": len(students) * len(checks.NOTEBOOKS) - len(todo),
        "grader_errors": sorted(errors),
        "cell_statuses": dict(sorted(statuses.items())),
        "isolation": mode,
        "limits": asdict(limits),
        "time_budget": {"factor": checks.BUDGET_FACTOR, "minimum_s": checks.MIN_BUDGET_S},
        "jobs": jobs,
        "regrade": bool(regrade),
        "gradebook": _safe_url(db_url),
        "export_check": export,
        "started": started,
        "finished": _now(),
        "seconds": round(time.monotonic() - t0, 2),
    }
    atomic_write(os.path.join(out_dir, "run.json"), json.dumps(summary, indent=1))
    return summary
