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
     "learner_cpu_s": float | null,   # CPU time of the learner's processes (their control group)
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

Hidden inputs: each notebook's random inputs are drawn from a generator derived
from the secret course key and the SHA-256 of the notebook's bytes
(``notebook_rng``), so a regrade of an unchanged notebook reproduces every score
and a changed notebook gets fresh inputs.  The key is a file made on first use
with mode 0600: ``course_key`` (the CLI's ``--course-key``), else
``$AUTOGRADER_COURSE_KEY_FILE``, else ``OUT/course.key``; it never reaches the
learner's process.  ``seed`` replaces the key (tests only).
"""
import contextlib
import datetime as _dt
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
from dataclasses import asdict, replace

import numpy as np

from . import checks, feedback
from .nbgrader_config import ASSIGNMENT, COURSE_ID, SOURCE_DIRECTORY, default_db_url
from .policy import PARSE_LOCK
from .assignment import AssignmentError, load as load_assignment, load_check_modules
from .files import atomic_write, write_csv
from .learnertext import HTML_SIGNIFICANT, printable
from .safeio import UnsafeFile, check_inside, read_regular
from .submission import content_sha256, load_source, read_submission

FORMAT = 1
# score: what counts (a manual score set in formgrader replaces the automatic one)
GRADES_COLUMNS = ["student_id", "assignment", "notebook", "grade_id", "score", "max_score", "status", "reason",
                  "auto_score", "manual_score"]
# score: after the late penalty; raw_score: before it
TOTALS_COLUMNS = ["student_id", "assignment", "score", "max_score", "raw_score", "late_penalty", "timestamp",
                  "duedate", "seconds_late", "lms", "lms_user_id", "name", "lms_late"]


class GradingError(Exception):
    """Bad input for a grading run; the message says how to fix it."""


# --------------------------------------------------------------------------- the store

def result_path(out_dir, student, notebook, assignment=ASSIGNMENT):
    return os.path.join(out_dir, "results", student, assignment, notebook + ".json")


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
    return printable_result(data)


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


def student_id_problem(student):
    """Why a folder name cannot be a student id (None when it can).

    Control characters (newlines, tabs, escapes) would break the CSV files,
    nbgrader's export and the feedback paths; a leading dot marks a hidden
    folder.  Such folders are refused and named, never graded under an id
    that differs from the folder.
    """
    bad = sorted({f"U+{ord(ch):04X}" for ch in student
                  if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")})
    if bad:
        return (f"student folder {student!r} has control characters in its name ({', '.join(bad[:5])}); "
                "rename the folder to the student's id")
    if student.startswith("."):
        return f"student folder {student!r} starts with '.', a hidden folder; rename it to the student's id"
    marks = sorted(set(student).intersection(HTML_SIGNIFICANT + "\\"))
    if marks:
        return (f"student folder {student!r} has characters that web pages would read as markup "
                f"({' '.join(marks)}; nbgrader's formgrader prints student ids unescaped); "
                "rename the folder to the student's id")
    if student != student.strip():
        return f"student folder {student!r} starts or ends with white space; rename it to the student's id"
    return None


def discover(submitted_dir, assignment=ASSIGNMENT, refused=None):
    """Sorted student ids that have SUBMITTED/<student>/<assignment>/.

    Folders whose names cannot be student ids (see student_id_problem) are
    left out; their messages are appended to ``refused`` when it is a list.
    """
    load_check_modules()
    if not os.path.isdir(submitted_dir):
        raise GradingError(f"{submitted_dir}: no such folder. Pass the folder of submissions in nbgrader's "
                           f"layout, SUBMITTED/<student_id>/{assignment}/<notebook>.ipynb "
                           "(python -m autograder collect builds it from an LMS download)")
    students = []
    for d in sorted(os.listdir(submitted_dir)):
        if not os.path.isdir(os.path.join(submitted_dir, d, assignment)):
            continue
        problem = student_id_problem(d)
        if problem is None:
            students.append(d)
        elif refused is not None:
            refused.append(problem)
    if not students and refused:
        raise GradingError(f"{submitted_dir}: no valid student folder: " + "; ".join(refused[:3]))
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


COURSE_KEY_ENV = "AUTOGRADER_COURSE_KEY_FILE"
COURSE_KEY_NAME = "course.key"


def course_key_path(out_dir, path=None):
    """Where the course key lives: path, else $AUTOGRADER_COURSE_KEY_FILE, else OUT/course.key."""
    return path or os.environ.get(COURSE_KEY_ENV) or os.path.join(out_dir, COURSE_KEY_NAME)


def load_course_key(path):
    """The secret course key (bytes) stored at path, created (mode 0600) on first use.

    The hidden inputs of a submission are derived from this key and the submission's
    content, so they are secret (the key never reaches learner code, the repository or
    the sandbox) and reproducible (same key, same notebook: same inputs, same score).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:  # another grader created it meanwhile: read theirs
            return load_course_key(path)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return load_course_key(path)
    except OSError as exc:
        raise GradingError(f"{path}: the course key cannot be read ({exc.strerror}); it must be a regular file "
                           f"(not a link) readable by the grader. Point {COURSE_KEY_ENV} or --course-key at the "
                           "key file, or remove the path so that a new key is made (new hidden inputs)") from exc
    try:
        info = os.fstat(fd)
        text = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise GradingError(f"{path}: the course key must be a regular file")
    if info.st_mode & 0o077:
        raise GradingError(f"{path}: the course key is readable by other users (mode {info.st_mode & 0o777:o}); "
                           f"make it private with: chmod 600 {path}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise GradingError(f"{path}: not a course key (expected at least 32 hexadecimal digits on one line). "
                           "Restore the key from a backup, or delete the file so that a new key is made "
                           "(new hidden inputs for every notebook)")
    return key


def notebook_rng(key, notebook, content_hash):
    """The Generator of one submitted notebook's hidden inputs.

    Derived from the secret course key and the hash of the notebook's bytes: an unchanged
    notebook gets the same inputs (and so the same score) on every regrade, a changed one
    gets fresh inputs, and nobody without the key can compute them.
    """
    material = hashlib.sha256(b"cnn-course-inputs\0" + key + b"\0" + notebook.encode("utf-8") + b"\0"
                              + str(content_hash).encode("ascii", "replace")).digest()
    entropy = int.from_bytes(material, "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


# --------------------------------------------------------------------------- one notebook

def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _base(student, notebook, assignment):
    return {"format": FORMAT, "student_id": student, "assignment": assignment, "notebook": notebook,
            "status": "graded", "reason": "", "cells": [], "notes": [], "setup": [], "timestamp": None,
            "graded_at": _now(), "seconds": 0.0, "isolation": ""}


#: the most characters of one piece of learner text (a reason, a note, a feedback line) in a result
TEXT_CHARS = 2000


def printable_result(result):
    """result with its learner text (reasons, notes, setup messages, feedback lines; they quote the
    learner's exception messages) reduced to one line of printable characters each
    (``learnertext.printable``), so that no terminal escape sequence or line break reaches
    grades.csv, the feedback pages, the gradebook's comments or the terminal.  Every result
    passes here: when it is made (``_finish``) and when it is read back (``load_result``)."""
    result["reason"] = printable(result.get("reason", ""), TEXT_CHARS)
    result["notes"] = [printable(n, TEXT_CHARS) for n in result.get("notes") or []]
    for item in result.get("setup") or []:
        if isinstance(item, dict):
            item["message"] = printable(item.get("message", ""), TEXT_CHARS)
    for cell in result.get("cells") or []:
        if isinstance(cell, dict):
            cell["reason"] = printable(cell.get("reason", ""), TEXT_CHARS)
            cell["feedback"] = [printable(line, TEXT_CHARS) for line in cell.get("feedback") or []]
    return result


def _finish(result, verdicts):
    cells = []
    for v in verdicts:
        d = v.to_dict()
        d["reason"] = "" if v.status == "passed" else (v.feedback[0] if v.feedback else v.status)
        cells.append(d)
    result["cells"] = cells
    result["score"] = float(sum(c["score"] for c in cells))
    result["max_score"] = float(sum(c["max_score"] for c in cells))
    return printable_result(result)


def _all(notebook, status, reason):
    load_check_modules()
    return [checks.make_verdict(gid, status, [reason]) for gid in checks.cells_of(notebook)]


TIMESTAMP_MAX_BYTES = 1024


def read_timestamp(folder):
    """(ISO 8601 timestamp or None, note or None) from folder/timestamp.txt.

    The file is read only when it is a regular file (no link, FIFO or device)
    of at most TIMESTAMP_MAX_BYTES; text that is not a date, or a date out of
    ``times``'s range (one nbgrader's ``parse_utc`` would overflow on), counts as
    no timestamp, with a note that quotes it (printable characters only).
    """
    from . import times

    path = os.path.join(folder, "timestamp.txt")
    try:
        raw = read_regular(path, TIMESTAMP_MAX_BYTES)
    except FileNotFoundError:
        return None, None
    except (OSError, UnsafeFile) as exc:
        why = exc if isinstance(exc, UnsafeFile) else exc.strerror
        return None, f"timestamp.txt was not read ({why}); the submission counts as having no timestamp"
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None, None
    try:
        return times.parse(text).isoformat(), None
    except times.BadTime as exc:
        return None, f"timestamp.txt does not hold a date we can use ({exc}); the submission counts as having no timestamp"


def grade_notebook_file(path, notebook, source, rng, student="", assignment=ASSIGNMENT,
                        limits=None, budgets=None, isolation=None, submitted_dir=None, shared=None):
    """The result dict for one submitted notebook (never raises for a bad submission).

    With submitted_dir, a path that reaches the notebook through a symbolic
    link below submitted_dir (a linked student folder) is ungradable.  ``shared``
    (a list) keeps the learner's sandbox for their next notebook: the first
    notebook that needs one starts it and appends it, later ones load their cells
    into it (``LearnerProcess.load``: a fresh learner process), and the caller
    closes it.  Without ``shared`` the notebook gets a sandbox of its own.
    """
    from . import sandbox  # imported here so that the rest of the module works without it

    load_check_modules()
    start = time.monotonic()
    result = _base(student, notebook, assignment)
    try:
        if submitted_dir is not None:
            try:
                check_inside(submitted_dir, path)
            except UnsafeFile as exc:
                reason = f"ungradable: {exc}"
                result.update(status="ungradable", reason=reason)
                return _finish(result, _all(notebook, "ungradable", reason))
        result["timestamp"], stamp_note = read_timestamp(os.path.dirname(path))
        if stamp_note:
            result["notes"].append(stamp_note)
        if not os.path.lexists(path) or os.path.isdir(path):
            folder = os.path.dirname(path)
            known = {nb + ".ipynb" for nb in checks.notebooks_of(assignment)}
            others = sorted(f for f in os.listdir(folder) if f.endswith(".ipynb") and f not in known) \
                if os.path.isdir(folder) else []
            reason = "ungradable: notebook missing"
            if others:
                reason += f" (found instead: {', '.join(others[:5])})"
            result.update(status="ungradable", reason=reason)
            return _finish(result, _all(notebook, "ungradable", reason))
        sub = read_submission(path, source, notebook)
        result["notes"] += list(sub.notes)
        if not sub.gradable:
            reason = f"ungradable: {sub.reason}"
            result.update(status="ungradable", reason=reason)
            return _finish(result, _all(notebook, "ungradable", reason))
        if all(f in sub.ungradable for f in sub.functions):
            verdicts = checks.grade_notebook(notebook, None, rng, budgets, sub.ungradable)
            return _finish(result, verdicts)
        kwargs = {} if isolation is None else {"isolation": isolation}
        if shared:
            shared[0].load(sub.cells)
            context = contextlib.nullcontext(shared[0])
        else:
            context = sandbox.LearnerProcess(sub.cells, limits=limits or sandbox.Limits(), **kwargs)
            if shared is not None:
                shared.append(context)
                context = contextlib.nullcontext(context)
        with context as proc:
            report = proc.setup()
            result["isolation"] = getattr(report, "isolation", "") or getattr(proc, "isolation", "")
            for cell in getattr(report, "cells", ()):
                if cell.status != "ok":
                    result["setup"].append({"cell": cell.index, "status": cell.status,
                                            "message": checks._short(cell.message)})
            labels = getattr(sub, "labels", None) or []
            for item in result["setup"][:10]:
                where = (labels[item["cell"]] if 0 <= item["cell"] < len(labels)
                         else f"code cell {item['cell'] + 1}")
                result["notes"].append(f"{where} did not run to the end ({item['status']}): {item['message']}")
            verdicts = checks.grade_notebook(notebook, proc.call, rng, budgets, sub.ungradable)
        result["learner_cpu_s"] = proc.learner_cpu_seconds()
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


def _results_for(out_dir, students, notebooks, assignment):
    results = {}
    for student in students:
        per = {}
        for nb in notebooks:
            r = load_result(out_dir, student, nb, assignment)
            if r is None:
                reason = "no stored result (run grade again)"
                r = _finish(dict(_base(student, nb, assignment), status="error", reason=reason),
                            _all(nb, "error", reason))
            per[nb] = r
        results[student] = per
    return results


def _iso(when):
    return when.isoformat(sep=" ") + " UTC" if when is not None else ""


def write_reports(out_dir, spec, results, grades, learners=None, lms_column=None):
    """grades.csv, totals.csv, one feedback page per learner and the LMS grade files.

    results: {student: {notebook: stored result}}; grades: {student: gradebook.StudentGrades}
    (scores as nbgrader counts them, manual scores and late penalties included);
    learners: {student: what collect recorded}.  Returns {student: final score}.
    """
    from . import lms
    learners = learners or {}
    grade_rows, total_rows = [], []
    for student in sorted(results):
        g = grades[student]
        for nb in sorted(spec.notebooks):
            r = results[student][nb]
            cells = {c["grade_id"]: c for c in r["cells"]}
            for gid in sorted(spec.grade_ids(nb)):
                c = cells.get(gid) or {"status": "error", "reason": "no verdict stored"}
                cg = g.cells.get(nb, {}).get(gid)
                score = cg.score if cg else 0.0
                manual = "" if cg is None or cg.manual_score is None else _fmt(cg.manual_score)
                grade_rows.append([student, spec.name, nb, gid, _fmt(score), _fmt(spec.points(gid)),
                                   c["status"], " ".join(str(c.get("reason", "")).split()),
                                   _fmt(c.get("score", 0.0)), manual])
        page = os.path.join(out_dir, "feedback", student, spec.name + ".html")
        os.makedirs(os.path.dirname(page), exist_ok=True)
        atomic_write(page, feedback.render_student(spec, student, results[student], g, learners.get(student)))
        who = learners.get(student) or {}
        total_rows.append([student, spec.name, _fmt(g.score), _fmt(g.max_score), _fmt(g.raw_score),
                           _fmt(g.penalty), _iso(g.timestamp), _iso(g.duedate), _fmt(g.seconds_late),
                           who.get("lms", ""), who.get("lms_user_id", ""), who.get("name", ""),
                           "yes" if who.get("late") else ""])
    write_csv(os.path.join(out_dir, "grades.csv"), GRADES_COLUMNS, grade_rows)
    write_csv(os.path.join(out_dir, "totals.csv"), TOTALS_COLUMNS, total_rows)
    lms.write_grade_files(out_dir, spec, grades, learners, lms_column)
    return {row[0]: float(row[2]) for row in total_rows}


def _safe_url(url):
    """The URL with its password, if any, shown as ***."""
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


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


#: nbgrader's CSV export: these columns before the student's, these after them (all numbers)
EXPORT_HEAD = ("assignment", "duedate", "timestamp")
EXPORT_STUDENT = ("student_id", "last_name", "first_name", "email")
EXPORT_TAIL = ("raw_score", "late_submission_penalty", "score", "max_score")


def read_export(path, students, assignment=ASSIGNMENT):
    """({student_id: score}, lines not attributed) of the assignment's rows of nbgrader's CSV export.

    nbgrader's exporter joins its fields with commas and never quotes one, so a comma in a
    student id, a name or an e-mail address (``Amy Ng, Jr.``) shifts the columns, and a double
    quote misleads a CSV reader.  The columns around the student's are safe (the assignment,
    two dates; four numbers at the end), so a row is read from both ends, and the text
    between them (``student_id,last_name,first_name,email`` as the exporter writes it) is
    looked up in ``students`` ({that text: student id}, from the gradebook's rows).  A line
    that does not read so is returned, not guessed at.
    """
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        lines = fh.read().split("\n")
    scores, unread = {}, []
    for line in lines[1:]:
        if not line:
            continue
        parts = line.split(",")
        if len(parts) < len(EXPORT_HEAD) + len(EXPORT_STUDENT) + len(EXPORT_TAIL):
            unread.append(line)
            continue
        if parts[0] != assignment:
            continue
        student = students.get(",".join(parts[len(EXPORT_HEAD):-len(EXPORT_TAIL)]))
        try:
            score = float(parts[-len(EXPORT_TAIL) + EXPORT_TAIL.index("score")])
        except ValueError:
            student = None
        if student is None or student in scores:
            unread.append(line)
        else:
            scores[student] = score
    return scores, unread


def _export_keys(db_url, course_id=COURSE_ID):
    """({the student columns of a student's export row: student id}, ids whose row cannot be told
    apart: two students with the same text there, or a line break in it)."""
    from .gradebook import open_gradebook
    with open_gradebook(db_url, course_id) as gb:
        texts = {s.id: ",".join("" if v is None else str(v) for v in (s.id, s.last_name, s.first_name, s.email))
                 for s in gb.students}
    owners = {}
    for student, text in texts.items():
        owners.setdefault(text, []).append(student)
    unclear = sorted(s for text, ids in owners.items() for s in ids
                     if len(ids) > 1 or "\n" in text or "\r" in text)
    return {text: ids[0] for text, ids in owners.items() if len(ids) == 1}, unclear


def verify_export(db_url, totals, out_dir, assignment=ASSIGNMENT):
    """Export the gradebook with nbgrader's exporter and compare per-student scores with totals.

    A student whose export row cannot be told from another's (``_export_keys``) is not
    compared; that is a note in the answer (``not_compared``), not a disagreement."""
    from .gradebook import export_csv
    with tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
        dest = os.path.join(tmp, "export.csv")
        try:
            export_csv(db_url, dest)
            keys, unclear = _export_keys(db_url)
        except Exception as exc:  # the gradebook's own failure, reported like nbgrader export's
            raise GradingError(f"nbgrader's export of the gradebook failed: {type(exc).__name__}: "
                               f"{checks._short(exc)}") from exc
        exported, _unread = read_export(dest, keys, assignment)
    mismatched = sorted(s for s in totals if s not in unclear and (s not in exported
                                                                   or abs(exported[s] - totals[s]) > 1e-9))
    answer = {"ok": not mismatched, "students": len(totals), "mismatched": mismatched[:20]}
    skipped = sorted(s for s in totals if s in unclear)
    if skipped:
        answer["not_compared"] = skipped[:20]
        answer["note"] = (f"{len(skipped)} student(s) not compared: nbgrader's export does not quote its fields, "
                          "and their rows cannot be told apart from another student's")
    return answer


class _GradebookThread:
    """The gradebook's share of a run, in a thread of its own beside the grading.

    1. The URL is checked (``dburl.check_url``: one connection), and
       ``checked()`` waits for the answer, so that a gradebook that cannot be opened stops
       the run before it grades anything.
    2. nbgrader's API is loaded; once ``begin(...)`` has said what to write, the gradebook
       is opened as its one writer (``gradebook.writer``) and the assignment registered.
    3. Each student given to ``ready(student)`` (every notebook of the student graded, or
       nothing to grade) is written: the stored results to the gradebook, one transaction
       per student, then ``after(student, results)`` (the autograded notebooks).
    4. ``finish(students)`` writes those not written yet and returns {student:
       StudentGrades}, or raises what failed in the thread.  ``close()`` ends the thread
       early (the run stopped); what was written stays written.

    Loading nbgrader, opening the gradebook and writing the students take about a second
    of every run plus a tenth of a second per student; done here, they overlap the
    grading, which mostly waits for the learner processes.
    """

    def __init__(self, db_url):
        import queue
        self._queue = queue.Queue()
        self._answered = threading.Event()
        self._error = None
        self._sent = set()
        self.grades = {}
        self._thread = threading.Thread(target=self._run, args=(db_url,), name="gradebook")
        self._thread.start()

    def _run(self, db_url):
        from .dburl import check_url
        try:
            check_url(db_url)
        except BaseException as exc:   # noqa: BLE001  (raised in the grading thread by checked())
            self._error = exc
            return
        finally:
            self._answered.set()
        try:
            from . import gradebook
            job = self._queue.get()
            if job is None:
                return
            spec, learners, duedate, config, results_of, after = job
            with gradebook.writer(db_url, spec, duedate, gradebook.late_plugin(config)) as write:
                for student in iter(self._queue.get, None):
                    per_notebook = results_of(student)
                    self.grades[student] = write(student, per_notebook, learners.get(student))
                    after(student, per_notebook)
        except BaseException as exc:   # noqa: BLE001  (raised in the grading thread by finish())
            self._error = exc           # what is queued after it stays unread (the queue is unbounded)

    def checked(self):
        self._answered.wait()
        if self._error is not None:
            from .dburl import GradebookUnavailable
            if isinstance(self._error, GradebookUnavailable):
                raise GradingError(str(self._error)) from None
            raise self._error

    def begin(self, spec, learners, duedate, config, results_of, after):
        """What to write: the assignment, collect's records of the students, the due date, the
        course configuration (for nbgrader's late policy), results_of(student) -> {notebook:
        stored result}, and after(student, those results), called once a student is written."""
        self._queue.put((spec, learners, duedate, config, results_of, after))

    def ready(self, student):
        if student not in self._sent:
            self._sent.add(student)
            self._queue.put(student)

    def finish(self, students):
        for student in students:
            self.ready(student)
        self.close()
        if self._error is not None:
            raise self._error
        return self.grades

    def close(self):
        self._queue.put(None)
        self._queue.put(None)   # one for begin's place, should the run end before it
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- the class

def current_hash(path):
    """content_sha256 of a submitted notebook; None when there is none, "unreadable" when it cannot be read."""
    try:
        return content_sha256(path)
    except FileNotFoundError:
        return None
    except OSError:
        return "unreadable"


def _peak_rss_mib():
    """The grading process's own peak resident memory (learner processes not included).

    The kernel's high-water mark of this process's memory (``VmHWM``).  getrusage's maxrss is
    only the fallback: Linux carries it across exec, so it also holds what the process that
    started the grader held (a test runner that had loaded PyTorch showed 704 MiB for a run
    whose own peak was 148 MiB).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _longest(results):
    """[seconds, student, notebook] of the notebook that held a worker longest."""
    best = [0.0, "", ""]
    for student, per in results.items():
        for nb, r in per.items():
            seconds = float(r.get("seconds") or 0.0)
            if seconds > best[0]:
                best = [seconds, student, nb]
    return best


def grade_task(path, notebook, source, rng, student, assignment, limits, isolation, submitted_dir, shared=None):
    """One notebook's result dict, graded in the process that calls it (a worker of a pool or cluster).

    The time budgets are those of this process (``checks.DEFAULT_BUDGETS``), measured on the
    machine that runs the learner's code.
    """
    return grade_notebook_file(path, notebook, source, rng, student, assignment, limits,
                               checks.DEFAULT_BUDGETS, isolation, submitted_dir=submitted_dir, shared=shared)


def grade_learner(tasks):
    """The result dicts of one learner's notebooks (a list of grade_task argument tuples), in order.

    The notebooks are graded one after the other in one sandbox, each in a fresh learner
    process forked from the sandbox's template (``LearnerProcess.load``), so that the
    interpreter and NumPy start once per learner instead of once per notebook.  Learners
    never share a sandbox.
    """
    shared = []
    try:
        return [grade_task(*args, shared=shared) for args in tasks]
    finally:
        for proc in shared:
            proc.close()


def _worker_init(grader_pid):
    """A grading worker ends with the fork server that started it (Linux), which ends with the
    grading process (``autograder._preload``): never grading on alone, its sandboxes with it."""
    from .proctree import _pid_alive, die_with_parent
    die_with_parent(None)
    if not _pid_alive(grader_pid):   # gone before the signal was set: its fork server is going too
        os._exit(1)


def _prestarted(sandbox, limits, isolation):
    """A learner sandbox started now, for the learner graded next; None if it cannot start
    (that learner's grading then starts one and reports what fails).

    Only with bubblewrap: there the current learner's processes cannot see the next
    learner's sandbox (another PID namespace, no shared folder).  Without it, they could
    reach a process of the same user, so the next sandbox starts only after they are gone.
    """
    if (isolation or sandbox.isolation_mode()) != "bubblewrap":
        return None
    kwargs = {} if isolation is None else {"isolation": isolation}
    try:
        proc = sandbox.LearnerProcess([], limits=limits, **kwargs)
        proc.prestart()
        return proc
    except Exception:  # noqa: BLE001
        return None


def _start_fork_server():
    """Start the fork server of the grading workers (``autograder._preload`` loaded) if it is
    not running, and return its multiprocessing context.

    The server loads the grader in a process of its own, on a core the run's other work
    leaves free; asked for early, it is ready by the time the workers are forked.
    """
    import multiprocessing
    from multiprocessing import forkserver
    from .proctree import FORK_SERVER_PARENT
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["autograder._preload", "dateutil.parser"])
    # the server ends with this process (autograder._preload): it is told whose child it is
    before = os.environ.get(FORK_SERVER_PARENT)
    os.environ[FORK_SERVER_PARENT] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            os.environ.pop(FORK_SERVER_PARENT, None)
        else:
            os.environ[FORK_SERVER_PARENT] = before
    return ctx


def worker_pool(jobs):
    """A pool of ``jobs`` grading worker processes, forked from the grader's fork server; each
    worker ends with the server, which ends with this process."""
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(max_workers=jobs, mp_context=_start_fork_server(), initializer=_worker_init,
                               initargs=(os.getpid(),))


def _grade_in_processes(jobs, items, on_result):
    """Grade every (keys, grade_learner tasks) of items in ``jobs`` worker processes; on_result(key,
    result or exception) in this process for each notebook as its learner's task ends.

    Worker processes, not threads: the hidden checks are Python code, and in threads of one
    process they would take turns on the interpreter lock.  Workers come from a fork server
    that has the grader's modules loaded, so a worker starts in milliseconds.  When a worker
    dies (the grader's own failure: learner code runs in the sandbox), the notebooks it had
    are passed on as exceptions, and the run retries them one at a time.
    """
    from concurrent.futures import as_completed
    with worker_pool(jobs) as pool:
        futures = {pool.submit(grade_learner, tasks): keys for keys, tasks in items}
        for fut in as_completed(futures):
            keys = futures.pop(fut)
            try:
                results = fut.result()
            except Exception as exc:  # a worker died (BrokenProcessPool) or could not send the result
                results = [exc] * len(keys)
            for key, result in zip(keys, results):
                on_result(key, result)


#: memory the grading process, its fork server and its workers need besides the learners' (about)
GRADER_MEMORY_RESERVE = 768 << 20
#: the least memory a learner is given when the default limit is lowered to fit (honest code needs
#: about 100 MiB: the interpreter, NumPy and the hidden cases)
LEARNER_MEMORY_FLOOR = 256 << 20


def fit_learner_memory(limits, learners_at_once, lower=True):
    """(limits, note): the learners' memory limit, lowered where the grader's memory (the machine's,
    or its memory cgroup's) cannot hold ``learners_at_once`` learners at their limit besides the
    grader itself, and a note that says so ("" when nothing was wrong).

    Each learner's processes are limited together (``Limits.learner_memory_bytes``); when the
    learners graded at the same time can together take more than the grader has, a memory-hungry
    learner makes the kernel end *some* learner process, and that may be a classmate's.  With
    ``lower`` the limit is lowered to fit (not under ``LEARNER_MEMORY_FLOOR``); without (a limit
    the instructor chose, ``--learner-memory``) it is kept, with the note.
    """
    from .proctree import memory_available, memory_limited
    available = memory_available()
    if not memory_limited() or not available or learners_at_once < 1:
        return limits, ""
    wanted = limits.learner_memory_bytes
    if learners_at_once * wanted + GRADER_MEMORY_RESERVE <= available:
        return limits, ""
    fits = max(LEARNER_MEMORY_FLOOR, (available - GRADER_MEMORY_RESERVE) // learners_at_once)
    fits -= fits % (1 << 20)
    mib = 1 << 20
    where = (f"the grader may use {available // mib} MiB, and {learners_at_once} learner(s) graded at "
             f"once at {wanted // mib} MiB each, with about {GRADER_MEMORY_RESERVE // mib} MiB for the "
             "grader itself, do not fit")
    if not lower or fits >= wanted:
        return limits, (f"{where}: a learner who uses all of their memory can make the system stop a "
                        "classmate's process graded at the same time; lower --learner-memory or --jobs")
    return replace(limits, learner_memory_bytes=fits), (
        f"{where}: each learner's memory limit is {fits // mib} MiB in this run (--learner-memory sets it; "
        "give the grader more memory, or lower --jobs, to keep the default)")


def _by_learner(items):
    """[(keys, tasks)] from [((student, notebook), task)], one entry per student, in order."""
    grouped = {}
    for key, args in items:
        keys, tasks = grouped.setdefault(key[0], ([], []))
        keys.append(key)
        tasks.append(args)
    return list(grouped.values())


def plan(spec, submitted_dir, out_dir, students, regrade=False, only=None):
    """[(student, notebook, why)] to grade: why is new, changed, requested or retry.

    A stored result is reused only when it was graded from exactly the bytes now in
    SUBMITTED (its ``submission_sha256``); ``only`` (student ids) regrades those students
    and leaves everyone else's results as stored.
    """
    todo, waiting = [], 0
    for student in students:
        for nb in spec.notebooks:
            path = os.path.join(submitted_dir, student, spec.name, nb + ".ipynb")
            stored = None if regrade else load_result(out_dir, student, nb, spec.name)
            if regrade or (only and student in only):
                why = "requested"
            elif stored is None:
                why = "new"
            elif stored.get("status") == "error":
                why = "retry"
            elif stored.get("submission_sha256", "") != current_hash(path):
                why = "changed"
            else:
                continue
            if only and student not in only:
                waiting += 1
                continue
            todo.append((student, nb, why))
    return todo, waiting


def _learners(submitted_dir, students, assignment):
    """{student: what collect recorded next to the submission (autograder.collect.MANIFEST), with the
    submission time from nbgrader's timestamp.txt as it is now}."""
    from .collect import read_manifest
    out = {}
    for s in students:
        folder = os.path.join(submitted_dir, s, assignment)
        out[s] = dict(_printable_record(read_manifest(folder)), timestamp=read_timestamp(folder)[0])
    return out


#: the most characters of a name or other text collect recorded from the LMS
RECORD_CHARS = 256


def _printable_record(record):
    """collect's record of a learner with its text (names from the LMS, which a learner may choose)
    reduced to printable characters: it reaches totals.csv, the LMS files and the feedback page."""
    def clean(value):
        if isinstance(value, str):
            return printable(value, RECORD_CHARS)
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return {k: clean(v) for k, v in record.items()}


def grade_class(submitted_dir, out_dir, root, db_url=None, jobs=2, seed=None, regrade=False, progress=True,
                limits=None, isolation=None, check_export=True, assignment=ASSIGNMENT, students=None,
                course_dir=None, lms_column=None, dask=None, course_key=None, fit_memory=True):
    """Grade the class's notebooks that need it; return a summary dict (also written to OUT/run.json).

    See the module docstring for the output files.  A notebook is graded when it has no
    stored result, when its bytes differ from those its stored result was graded from,
    when the grader itself failed on it, or when ``regrade`` (everyone) or ``students``
    (those ids) asks for it.  nbgrader's files go to the course directory ``course_dir``
    (default: the folder that holds SUBMITTED, as in nbgrader's layout): the gradebook
    ``gradebook.db`` (unless ``db_url``) and ``autograded/``.  ``course_key`` is the path of
    the course key file the hidden inputs are derived from (see ``course_key_path``);
    ``seed`` replaces the key (tests only); ``limits`` and ``isolation`` go to the sandbox, with the
    learners' memory limit lowered to fit the grader's memory unless ``fit_memory`` is false
    (``fit_learner_memory``).
    ``dask`` is the address of a Dask scheduler, or ``"local"``, to grade each notebook as a
    task on its workers (``autograder.cluster``); everything else stays in this process.
    """
    started, t0 = _now(), time.monotonic()
    course_dir = os.path.abspath(course_dir or os.path.dirname(os.path.abspath(submitted_dir)))
    db_url = db_url or default_db_url(course_dir)
    with _GradebookThread(db_url) as book:
        run = _ClassRun(book, submitted_dir, out_dir, course_dir, assignment, jobs, dask, isolation)
        run.find_work(root, regrade, students)
        run.prepare(limits, fit_memory, seed, course_key)
        run.open_gradebook()
        run.grade(progress)
        grades = book.finish(run.found)    # the students the gradebook has not taken yet, then its answer
        results = _results_for(out_dir, run.found, run.spec.notebooks, assignment)
        totals = write_reports(out_dir, run.spec, results, grades, run.learners, lms_column)
        export = verify_export(db_url, totals, out_dir, assignment) if check_export else None
        summary = run.summary(results, grades, export, regrade, db_url, started, t0)
        atomic_write(os.path.join(out_dir, "run.json"), json.dumps(summary, indent=1))
        return summary


class _ClassRun:
    """The steps of one ``grade_class`` run and what they share: which notebooks it grades, the
    sandbox limits, the key of the hidden inputs, and what went wrong in the grader itself."""

    def __init__(self, book, submitted_dir, out_dir, course_dir, assignment, jobs, dask, isolation):
        self.book, self.submitted_dir, self.out_dir = book, submitted_dir, out_dir
        self.course_dir, self.assignment = course_dir, assignment
        self.jobs, self.dask, self.isolation = jobs, dask, isolation
        self.client = None          # the Dask client, when the run grades on a cluster
        self.spare = None           # a sandbox started ahead of the learner it will grade
        self.bar = None
        self.failed = {}            # (student, notebook) -> what went wrong in the grader itself
        self.digests = {}           # (student, notebook) -> the submission's hash, for the cluster's tasks
        self.errors = []

    def path(self, student, nb):
        return os.path.join(self.submitted_dir, student, self.assignment, nb + ".ipynb")

    # ----------------------------------------------------------------- what to grade

    def find_work(self, root, regrade, students):
        """The assignment, the students with a submission, and the notebooks to grade (``plan``)."""
        try:
            self.spec = load_assignment(root, self.assignment)
        except AssignmentError as exc:
            raise GradingError(str(exc)) from None
        self.root = os.path.abspath(root)
        self.refused = []
        self.found = found = discover(self.submitted_dir, self.assignment, self.refused)
        self.only = list(dict.fromkeys(students or []))
        missing = [s for s in self.only if s not in found]
        if missing:
            raise GradingError(f"--student {', '.join(missing)}: no submission of '{self.assignment}' in "
                               f"{self.submitted_dir} (expected {self.submitted_dir}/<student_id>/{self.assignment}/). "
                               f"Students there: {', '.join(found[:10])}{' ...' if len(found) > 10 else ''}")
        os.makedirs(self.out_dir, exist_ok=True)
        _remove_stale_temp_files(self.out_dir)
        self.todo, self.waiting = plan(self.spec, self.submitted_dir, self.out_dir, found, regrade, self.only)

    # ----------------------------------------------------------------- what to grade with

    def prepare(self, limits, fit_memory, seed, course_key):
        """Limits, sandboxes or workers started early, the source notebooks, the gradebook checked,
        the cluster reached, the course key and the time budgets."""
        from . import sandbox
        from .nbgrader_config import course_config
        todo, dask, jobs = self.todo, self.dask, self.jobs
        limits = limits or sandbox.Limits()
        self.in_order = list(dict.fromkeys(s for s, _nb, _why in todo))
        self.sequential = not dask and (jobs <= 1 or len(self.in_order) <= 1)
        # the learners' memory must fit beside each other and the grader (a cluster's workers: theirs)
        self.limits, self.memory_note = (limits, "") if dask or not todo else fit_learner_memory(
            limits, 1 if self.sequential else min(jobs, len(self.in_order)), lower=fit_memory)
        # the first learner's sandbox (or the workers' fork server) starts now, while the rest
        # of the run is set up
        self.spare = _prestarted(sandbox, self.limits, self.isolation) if self.sequential and todo else None
        if todo and not self.sequential and not dask:
            _start_fork_server()
        try:
            self.sources = {nb: load_source(source_notebook(self.root, nb, self.assignment), nb)
                            for nb in self.spec.notebooks}
            self.config = course_config(self.course_dir, self.root)
            self.book.checked()    # before grading: a gradebook that cannot be opened is found in seconds
            if dask:
                from . import cluster
                try:
                    self.client = cluster.connect(dask, jobs)
                except cluster.ClusterError as exc:
                    raise GradingError(str(exc)) from None
            self.mode = self.isolation or sandbox.isolation_mode()
            if seed is not None:
                self.secret = f"seed:{seed}".encode("utf-8")
            else:
                self.secret = load_course_key(course_key_path(self.out_dir, course_key))
            self.budgets = checks.Budgets()
        except BaseException:
            if self.spare is not None:
                self.spare.close()
            raise

    # ----------------------------------------------------------------- the gradebook

    def open_gradebook(self):
        """Start the gradebook's thread on this run; it takes each student once all their notebooks are graded."""
        from . import autograded
        from .nbgrader_config import duedate_of
        spec, assignment, course_dir = self.spec, self.assignment, self.course_dir
        regraded = {(s, nb) for s, nb, _why in self.todo}
        self.learners = _learners(self.submitted_dir, self.found, assignment)

        def write_autograded(student, per_notebook):
            for nb in spec.notebooks:
                dest = autograded.path_of(course_dir, student, assignment, nb)
                if (student, nb) in regraded or not autograded.is_current(dest):
                    autograded.write(course_dir, spec, per_notebook[nb], self.path(student, nb), self.root)
            # nbgrader's timestamp.txt and submission_secret.txt, for its generate/release_feedback
            autograded.carry_submission_files(course_dir, student, assignment,
                                              os.path.join(self.submitted_dir, student, assignment))

        self.book.begin(spec, self.learners, duedate_of(self.config, assignment), self.config,
                        lambda student: _results_for(self.out_dir, [student], spec.notebooks, assignment)[student],
                        write_autograded)
        self.pending = {}
        for s_, _nb, _why in self.todo:
            self.pending[s_] = self.pending.get(s_, 0) + 1
        for student in self.found:
            if student not in self.pending:
                self.book.ready(student)    # nothing to grade: its stored results go to the gradebook now
        self.troubled = set()

    def graded(self, key, ok):
        """A notebook graded (ok) or not: once all of a student's are, and all went well, the
        gradebook takes the student; the others wait for the retries, until finish()."""
        student = key[0]
        if not ok:
            self.troubled.add(student)
        if self.pending.get(student, 0) > 0:
            self.pending[student] -= 1
            if self.pending[student] == 0 and student not in self.troubled:
                self.book.ready(student)

    # ----------------------------------------------------------------- grading

    def grade(self, progress):
        """Grade every notebook of the plan (on the cluster, in this process, or in worker processes),
        then once more those on which the grader itself failed."""
        from tqdm import tqdm
        self.bar = tqdm(total=len(self.todo), disable=not progress, unit="notebook", desc="grading")
        try:
            if self.client is not None:
                self._grade_on_cluster()
            elif self.sequential:
                self._grade_here()
            else:
                by_learner = _by_learner(self.task(s, nb) for s, nb, _why in self.todo)
                _grade_in_processes(min(self.jobs, len(by_learner)), by_learner, self.arrived)
            if self.client is None:
                self._retry_failures()
        finally:
            self.bar.close()
            if self.client is not None:
                from . import cluster
                cluster.close(self.client)
        self.errors = [f"{s}/{nb}: {reason}" for (s, nb), reason in sorted(self.failed.items())]

    def work(self, student, nb, shared=None):
        """Grade one notebook here and store its result."""
        path = self.path(student, nb)
        digest = current_hash(path)
        result = grade_notebook_file(path, nb, self.sources[nb], notebook_rng(self.secret, nb, digest), student,
                                     self.assignment, self.limits, self.budgets, self.isolation,
                                     submitted_dir=self.submitted_dir, shared=shared)
        result["submission_sha256"] = digest
        store_result(self.out_dir, result)
        return result

    def task(self, student, nb):
        """((student, notebook), grade_task's arguments) of one notebook, for a worker."""
        path = self.path(student, nb)
        self.digests[(student, nb)] = current_hash(path)
        rng = notebook_rng(self.secret, nb, self.digests[(student, nb)])
        return (student, nb), (os.path.abspath(path), nb, self.sources[nb], rng, student, self.assignment,
                               self.limits, self.isolation, os.path.abspath(self.submitted_dir))

    def arrived(self, key, result):
        """Store a result that a worker sent back (or note why the cluster could not grade it)."""
        if isinstance(result, BaseException):
            where = "the Dask cluster" if self.client is not None else "a grading worker process"
            self.failed[key] = f"{where} could not grade it: {type(result).__name__}: {checks._short(result)}"
        else:
            result["submission_sha256"] = self.digests[key]
            try:
                store_result(self.out_dir, result)
                self.failed.pop(key, None)
                if result["status"] == "error":
                    self.failed[key] = result["reason"]
            except OSError as exc:
                self.failed[key] = f"could not store the result: {exc}"
        self.graded(key, key not in self.failed)
        self.bar.update(1)

    def _grade_on_cluster(self):
        from . import cluster
        cluster.grade_on_cluster(self.client, grade_learner,
                                 _by_learner(self.task(s, nb) for s, nb, _why in self.todo), self.arrived)
        if self.failed:  # once more, as a local run retries the grader's own failures
            self.bar.total += len(self.failed)
            cluster.grade_on_cluster(self.client, grade_learner,
                                     _by_learner(self.task(s, nb) for s, nb in sorted(self.failed)), self.arrived)

    def _grade_here(self):
        """One learner after another in this process, each in a sandbox of their own (started ahead)."""
        from . import sandbox
        following = dict(zip(self.in_order, self.in_order[1:]))
        shared, current = [], None
        try:
            for student, nb, _why in self.todo:
                if student != current:   # one sandbox per learner, never shared between learners
                    for proc in shared:
                        proc.close()
                    shared, current = ([self.spare] if self.spare is not None else []), student
                    # the next learner's sandbox starts while this learner is graded
                    self.spare = (_prestarted(sandbox, self.limits, self.isolation) if student in following
                                  else None)
                r = self.work(student, nb, shared)
                if r["status"] == "error":
                    self.failed[(student, nb)] = r["reason"]
                self.graded((student, nb), r["status"] != "error")
                self.bar.update(1)
        finally:
            for proc in shared + ([self.spare] if self.spare is not None else []):
                proc.close()

    def _retry_failures(self):
        # A failure of the grader itself (not of the learner's code) may be transient, such as
        # CPython 3.11's parser race between threads: retry those notebooks once, one at a time.
        for s, nb in sorted(self.failed):
            try:
                r = self.work(s, nb)
            except Exception as exc:
                self.failed[(s, nb)] = f"could not store the result: {exc}"
                continue
            if r["status"] == "error":
                self.failed[(s, nb)] = r["reason"]
            else:
                del self.failed[(s, nb)]

    # ----------------------------------------------------------------- the summary

    def summary(self, results, grades, export, regrade, db_url, started, t0):
        """The run's summary (run.json)."""
        from . import sandbox
        found, spec, todo = self.found, self.spec, self.todo
        statuses = {}
        for per in results.values():
            for r in per.values():
                for c in r["cells"]:
                    statuses[c["status"]] = statuses.get(c["status"], 0) + 1
        whys = {}
        for _s, _nb, why in todo:
            whys[why] = whys.get(why, 0) + 1
        return {
            "assignment": self.assignment,
            "students": len(found),
            "notebooks": len(found) * len(spec.notebooks),
            "graded_this_run": len(todo),
            "graded_why": dict(sorted(whys.items())),
            "changed": whys.get("changed", 0),
            "reused": len(found) * len(spec.notebooks) - len(todo),
            "not_graded_waiting": self.waiting,
            "only_students": self.only,
            "grader_errors": sorted(self.errors),
            "refused_students": self.refused,
            "cell_statuses": dict(sorted(statuses.items())),
            "late": sorted(s for s, g in grades.items() if g.seconds_late > 0),
            "manual_scores": sum(1 for g in grades.values() for per in g.cells.values() for c in per.values()
                                 if c.manual_score is not None),
            "isolation": self.mode,
            "cgroups": sandbox.cgroup_mode(),
            "learner_memory": ("cgroup" if sandbox.memory_limited() else "none"),
            "learner_memory_note": self.memory_note,
            "limits": asdict(self.limits),
            "time_budget": {"factor": checks.BUDGET_FACTOR, "minimum_s": checks.MIN_BUDGET_S},
            "jobs": self.jobs,
            "dask": self.dask,
            "regrade": bool(regrade),
            "course_dir": self.course_dir,
            "gradebook": _safe_url(db_url),
            "export_check": export,
            "grader_peak_rss_mib": _peak_rss_mib(),
            "longest_notebook_s": _longest(results),
            "started": started,
            "finished": _now(),
            "seconds": round(time.monotonic() - t0, 2),
        }
