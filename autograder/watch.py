"""Grade on submission: ``python -m autograder watch``, on nbgrader's exchange.

Run in the course folder, on the machine that hosts the exchange.  The exchange root and
the course id come from the course's nbgrader configuration, read by nbgrader's own
application class (``exchange_settings``), so the watcher sees what ``nbgrader collect``
would see.  It then polls ``<exchange>/<course>/inbound/`` and, for every new submission
folder of the assignment:

1. checks the folder's name against the pattern nbgrader's ``submit`` writes,
   ``<student>+<assignment>+<timestamp>+<random>``; the name is the only source of the
   learner's identity and submission time (nothing inside the folder decides them);
2. stages the assignment's notebooks (regular files only, size-capped, read with
   ``autograder.safeio``), a ``timestamp.txt`` written from the folder's name and the
   submission's ``submission_secret.txt`` (checked) in a private staging folder;
3. grades the learner in a worker process (``grading.grade_learner``: the same sandbox,
   hidden checks, course key and limits as ``grade``), storing the results;
4. places the staged folder at ``submitted/<student>/<assignment>/`` (as ``nbgrader
   collect --update`` would) and runs ``grading.grade_class`` over the course, which finds
   the new results stored and writes the gradebook, ``autograded/``, the CSV files and the
   learner's feedback page exactly as ``grade`` does (late policy, manual scores);
5. releases that page to ``<exchange>/<course>/feedback/<md5(secret + notebook)>.html``
   for every notebook of the submission, where ``nbgrader fetch_feedback`` looks for it
   (temporary file, fsync, rename; mode 0644 in a folder of mode 0711, as nbgrader's
   ``release_feedback`` leaves them);
6. records the folder in its journal (``OUT/watch/journal.json``, written atomically).

The newest submission wins: a learner is graded one submission at a time, and of the
submissions waiting for a learner only the newest (by the exchange's timestamp) is
graded; the others, and any older than the one already graded, get a short page that
names the submission that replaced them.  After ``kill -9`` or a reboot, folders not in the
journal are graded again from the inbound (same bytes, same course key: the same score),
so every submission gets its feedback, and the gradebook holds each learner once.
SIGTERM (or Ctrl-C) stops taking new submissions, lets the learners being graded finish,
releases their feedback and exits.
"""
import concurrent.futures as futures
import datetime as _dt
import hashlib
import html
import json
import logging
import os
import re
import shutil
import signal
import stat
import time

from . import grading, times
from .files import atomic_write
from .learnertext import printable
from .nbgrader_config import SUBMITTED_DIRECTORY
from .safeio import UnsafeFile, read_regular

log = logging.getLogger("autograder.watch")

JOURNAL_FORMAT = 1
SECRET_NAME = "submission_secret.txt"
SECRET_MAX_BYTES = 1024
SECRET_PATTERN = re.compile(r"^[0-9A-Za-z_-]{16,512}$")      # nbgrader 0.9 writes 128 hex digits
# <student>+<assignment>+<timestamp>[+<random>]: nbgrader's submit writes the random part as
# 12 characters of URL-safe base64 (add_random_string, the default) or leaves it out
INBOUND_NAME = re.compile(r"^(?P<student>[^+/]{1,255})\+(?P<assignment>[^+/]{1,255})"
                          r"\+(?P<timestamp>[^+/]{1,64})(?:\+(?P<random>[A-Za-z0-9_-]{1,64}))?$")
MAX_NOTEBOOK_NAMES = 100          # notebooks per submission that feedback is released for
INCOMPLETE_GRACE_S = 30.0         # a folder whose mode never became 0777 counts as complete after this
NO_SECRET_GIVE_UP_S = 300.0
FEEDBACK_FILE_MODE = 0o644
FEEDBACK_DIR_MODE = 0o711


class WatchError(Exception):
    """The watcher cannot start; the message says how to fix it."""


# --------------------------------------------------------------------------- configuration

def exchange_settings(course_dir):
    """(exchange root, course id, groupshared) as nbgrader's own commands read them in course_dir.

    nbgrader's application class loads the Jupyter config paths (``/etc/jupyter``,
    ``~/.jupyter``, the environment's), the folder it runs in and the course root, in its
    order; the watcher asks it rather than reading one file itself.
    """
    from nbgrader.apps.baseapp import NbGrader
    from nbgrader.exchange.default.exchange import Exchange
    here = os.getcwd()
    os.chdir(course_dir)
    try:
        app = NbGrader()
        app.initialize([])
        exchange = Exchange(coursedir=app.coursedir, parent=app)
        return exchange.root, app.coursedir.course_id, bool(app.coursedir.groupshared)
    finally:
        os.chdir(here)


# --------------------------------------------------------------------------- inbound folders

def parse_inbound_name(name, assignments):
    """{"student", "assignment", "timestamp" (text), "when" (aware UTC datetime)} of an inbound
    folder name, or (None, why it is not a submission folder of nbgrader's submit)."""
    from nbgrader.utils import parse_utc
    m = INBOUND_NAME.match(name)
    if m is None:
        return None, "the name is not <student>+<assignment>+<timestamp>+<random>"
    student, assignment, stamp = m.group("student"), m.group("assignment"), m.group("timestamp")
    if assignment not in assignments:
        return None, f"assignment {assignment!r} is not watched"
    problem = grading.student_id_problem(student)
    if problem is None and student in (".", ".."):
        problem = "the student id is a path"
    if problem is not None:
        return None, problem
    try:
        times.parse(stamp)          # the course's one range check, before nbgrader's arithmetic
        when = parse_utc(stamp)
    except times.BadTime as exc:
        return None, f"the timestamp is not a date we can use ({exc})"
    except (ValueError, OverflowError, TypeError) as exc:
        return None, f"the timestamp {printable(stamp, 80)!r} is not a date ({type(exc).__name__})"
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return {"student": student, "assignment": assignment, "timestamp": stamp, "when": when}, None


def _read_secret(folder):
    """(the submission's secret, None) or (None, why it cannot be used)."""
    try:
        data = read_regular(os.path.join(folder, SECRET_NAME), SECRET_MAX_BYTES)
    except FileNotFoundError:
        return None, f"{SECRET_NAME} is missing"
    except UnsafeFile as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{SECRET_NAME} could not be read ({exc.strerror})"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not SECRET_PATTERN.match(text):
        return None, f"{SECRET_NAME} is not a secret written by nbgrader submit"
    return text, None


def feedback_name(secret, notebook):
    """nbgrader's name of a notebook's released feedback: md5(secret + notebook id).html."""
    return hashlib.md5(secret.encode("utf-8") + notebook.encode("utf-8")).hexdigest() + ".html"


def _notebook_ids(folder):
    """The notebook ids (file names without .ipynb) in a submission folder, as fetch_feedback finds
    them in the learner's copy; names only, never followed."""
    names = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".ipynb") and len(names) < MAX_NOTEBOOK_NAMES:
                    names.append(entry.name[:-len(".ipynb")])
    except OSError:
        pass
    return sorted(names)


# --------------------------------------------------------------------------- pages

def superseded_page(assignment, submitted_at, newer_at):
    e = html.escape
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Feedback: {e(assignment)}"
            f"</title></head>\n<body>\n<h1>Feedback: {e(assignment)}</h1>\n<p>Your submission of "
            f"{e(submitted_at)} was not graded: your submission of {e(newer_at)} replaced it. Its feedback "
            "holds your score.</p>\n</body>\n</html>\n")


# --------------------------------------------------------------------------- the watcher

class Watcher:
    """One course's watcher; ``run()`` polls until stopped (``stop()``, SIGTERM, SIGINT)."""

    def __init__(self, root, course_dir, out_dir, assignment, jobs=2, interval=1.0, limits=None,
                 course_key=None, db_url=None, exchange_root=None, course_id=None, fit_memory=True):
        self.root = os.path.abspath(root)
        self.course_dir = os.path.abspath(course_dir)
        self.out_dir = os.path.abspath(out_dir)
        self.assignment = assignment
        self.jobs = max(1, int(jobs))
        self.interval = float(interval)
        self.course_key = course_key
        self.db_url = db_url
        if exchange_root is None or course_id is None:
            root_, course_, _shared = exchange_settings(self.course_dir)
            exchange_root, course_id = exchange_root or root_, course_id or course_
        if not course_id:
            raise WatchError("the course id is not set: set c.CourseDirectory.course_id in the course's "
                             "nbgrader_config.py (or /etc/jupyter/nbgrader_config.py)")
        self.course_id = course_id
        self.inbound = os.path.join(exchange_root, course_id, "inbound")
        self.feedback_dir = os.path.join(exchange_root, course_id, "feedback")
        if not os.path.isdir(self.inbound):
            raise WatchError(f"{self.inbound} does not exist: the exchange root ({exchange_root}) or the course id "
                             f"({course_id}) differs from the learners' configuration, or the assignment was never "
                             "released; run 'nbgrader release_assignment' in the course folder first")
        self.submitted_dir = os.path.join(self.course_dir, SUBMITTED_DIRECTORY)
        self.state_dir = os.path.join(self.out_dir, "watch")
        self.staging = os.path.join(self.state_dir, "staging")
        self.journal_path = os.path.join(self.state_dir, "journal.json")
        from . import grading, sandbox
        # the learners graded at once must fit beside each other and the watcher, as in grade
        self.limits, note = grading.fit_learner_memory(limits or sandbox.Limits(), self.jobs, lower=fit_memory)
        if note:
            log.warning("%s", note)
        self.stopping = False
        self.journal = self._load_journal()
        self.pending = {}          # student -> [submission], not yet graded
        self.running = {}          # future -> (student, submission)
        self.done = []             # [(student, submission)] graded, waiting to be placed and released
        self.refused_logged = set()
        self.pool = None

    # ---------------------------------------------------------------- journal
    def _load_journal(self):
        try:
            with open(self.journal_path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            data = None
        except (OSError, ValueError) as exc:
            raise WatchError(f"{self.journal_path} cannot be read ({exc}); move it away to grade every "
                             "submission in the inbound again") from None
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            data = {"format": JOURNAL_FORMAT, "inbound": {}, "graded": {}}
        return data

    def _save_journal(self):
        os.makedirs(self.state_dir, exist_ok=True)
        atomic_write(self.journal_path, json.dumps(self.journal, indent=1, sort_keys=True))

    def _graded_when(self, student):
        stamp = self.journal["graded"].get(f"{student}+{self.assignment}")
        return _dt.datetime.fromisoformat(stamp) if stamp else None

    # ---------------------------------------------------------------- scanning
    def scan(self):
        """Add the inbound folders not yet handled to self.pending."""
        known = self.journal["inbound"]
        queued = {s["folder"] for subs in self.pending.values() for s in subs}
        queued |= {s["folder"] for _st, s in self.running.values()} | {s["folder"] for _st, s in self.done}
        now = time.time()
        try:
            names = os.listdir(self.inbound)
        except OSError as exc:
            log.error("cannot list %s: %s", self.inbound, exc.strerror)
            return
        for name in sorted(names):
            if name in known or name in queued or name.startswith("."):
                continue
            info, why = parse_inbound_name(name, {self.assignment})
            if info is None:
                if name not in self.refused_logged and not why.startswith("assignment "):
                    self.refused_logged.add(name)
                    log.warning("inbound folder %r is not graded: %s", printable(name, 200), why)
                continue
            path = os.path.join(self.inbound, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                self._refuse(name, info, "it is not a folder")
                continue
            age = now - st.st_mtime
            has_secret = os.path.lexists(os.path.join(path, SECRET_NAME))
            complete = has_secret and ((st.st_mode & 0o777) == 0o777 or age > INCOMPLETE_GRACE_S)
            if not complete:
                if not has_secret and age > NO_SECRET_GIVE_UP_S:
                    info.update(folder=name, path=path, seen=time.time())
                    self.pending.setdefault(info["student"], []).append(info)   # graded, not released
                continue                 # nbgrader submit is still copying it
            info.update(folder=name, path=path, seen=time.time())
            self.pending.setdefault(info["student"], []).append(info)

    def _refuse(self, name, info, why):
        log.warning("inbound folder %r is not graded: %s", printable(name, 200), why)
        self.journal["inbound"][name] = {"outcome": "refused", "reason": why}
        self._save_journal()

    # ---------------------------------------------------------------- staging and grading
    def _stage(self, sub):
        """Copy the submission's notebooks, timestamp and secret into a fresh staging folder."""
        from .submission import MAX_NOTEBOOK_BYTES
        from .assignment import load as load_assignment
        spec = load_assignment(self.root, self.assignment)
        folder = os.path.join(self.staging, sub["student"], self.assignment)
        shutil.rmtree(os.path.join(self.staging, sub["student"]), ignore_errors=True)
        os.makedirs(folder, mode=0o700)
        sub["notes"] = []
        for nb in spec.notebooks:
            try:
                data = read_regular(os.path.join(sub["path"], nb + ".ipynb"), MAX_NOTEBOOK_BYTES)
            except FileNotFoundError:
                continue
            except (OSError, UnsafeFile) as exc:
                sub["notes"].append(f"{nb}.ipynb not taken: {exc if isinstance(exc, UnsafeFile) else exc.strerror}")
                continue
            atomic_write(os.path.join(folder, nb + ".ipynb"), data)
        atomic_write(os.path.join(folder, "timestamp.txt"), sub["timestamp"].encode("utf-8"))
        sub["secret"], why = _read_secret(sub["path"])
        if sub["secret"] is not None:
            atomic_write(os.path.join(folder, SECRET_NAME), sub["secret"].encode("ascii"))
        else:
            sub["notes"].append(f"feedback cannot be released: {why}")
        sub["notebook_ids"] = _notebook_ids(sub["path"])
        return spec, folder

    def _tasks(self, spec, sub):
        from .submission import load_source
        key = self._key()
        tasks, digests = [], {}
        base = os.path.join(self.staging)
        for nb in spec.notebooks:
            path = os.path.join(self.staging, sub["student"], self.assignment, nb + ".ipynb")
            digests[nb] = grading.current_hash(path)
            rng = grading.notebook_rng(key, nb, digests[nb])
            source = load_source(grading.source_notebook(self.root, nb, self.assignment), nb)
            tasks.append((os.path.abspath(path), nb, source, rng, sub["student"], self.assignment, self.limits,
                          None, base))
        return tasks, digests

    def _key(self):
        return grading.load_course_key(grading.course_key_path(self.out_dir, self.course_key))

    def _pool(self):
        if self.pool is None:
            self.pool = grading.worker_pool(self.jobs)
            for _ in range(self.jobs):    # the workers start, and test the sandbox, before the first learner
                self.pool.submit(_warm_worker)
        return self.pool

    def start_learners(self):
        """Start grading the newest waiting submission of each learner not being graded, up to jobs."""
        busy = {student for student, _s in self.running.values()} | {student for student, _s in self.done}
        for student in sorted(self.pending, key=lambda s: min(x["seen"] for x in self.pending[s])):
            if len(self.running) >= self.jobs or self.stopping:
                return
            if student in busy:
                continue
            subs = sorted(self.pending.pop(student), key=lambda x: x["when"])
            newest = subs[-1]
            graded_when = self._graded_when(student)
            for old in subs[:-1]:
                self._supersede(old, newest)
            if graded_when is not None and newest["when"] <= graded_when:
                self._supersede(newest, {"timestamp": graded_when.isoformat(sep=" ")})
                continue
            spec, _folder = self._stage(newest)
            tasks, digests = self._tasks(spec, newest)
            newest["digests"] = digests
            newest["started"] = time.monotonic()
            fut = self._pool().submit(grading.grade_learner, tasks)
            self.running[fut] = (student, newest)

    def _supersede(self, old, newer):
        secret, _why = _read_secret(old["path"]) if "path" in old else (None, None)
        released = 0
        if secret is not None:
            page = superseded_page(self.assignment, old["timestamp"], newer["timestamp"]).encode("utf-8")
            for nb in _notebook_ids(old["path"]):
                self._release_one(secret, nb, page)
                released += 1
        self.journal["inbound"][old["folder"]] = {"outcome": "superseded", "student": old["student"],
                                                  "by": newer["timestamp"], "released": released}
        self._save_journal()
        log.info("%s %s submitted %s: replaced by the submission of %s, not graded", old["student"],
                 self.assignment, old["timestamp"], newer["timestamp"])

    def collect_finished(self, timeout):
        """Wait up to timeout for a learner to be graded; store what arrived."""
        if not self.running:
            if timeout > 0:
                time.sleep(timeout)
            return
        finished, _ = futures.wait(list(self.running), timeout=timeout, return_when=futures.FIRST_COMPLETED)
        for fut in finished:
            student, sub = self.running.pop(fut)
            try:
                results = fut.result()
            except Exception as exc:   # a worker died (the grader's failure: learner code runs sandboxed)
                log.error("grading %s %s failed in a worker (%s: %s); it is graded again", student,
                          sub["folder"], type(exc).__name__, exc)
                if isinstance(exc, futures.process.BrokenProcessPool):
                    self.pool = None
                self.pending.setdefault(student, []).append(sub)
                continue
            for result in results:
                result["submission_sha256"] = sub["digests"][result["notebook"]]
                grading.store_result(self.out_dir, result)
            self.done.append((student, sub))

    # ---------------------------------------------------------------- placing and releasing
    def _place(self, student):
        """Move the staged folder to submitted/<student>/<assignment>/ (the old one is replaced)."""
        staged = os.path.join(self.staging, student, self.assignment)
        dest = os.path.join(self.submitted_dir, student, self.assignment)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        incoming = os.path.join(os.path.dirname(dest), f".{self.assignment}.watch-new")
        old = os.path.join(os.path.dirname(dest), f".{self.assignment}.watch-old")
        for leftover in (incoming, old):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.move(staged, incoming)
        os.chmod(incoming, 0o755)
        if os.path.lexists(dest):
            os.rename(dest, old)
        os.rename(incoming, dest)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(os.path.join(self.staging, student), ignore_errors=True)

    def _release_one(self, secret, notebook, data):
        if not os.path.isdir(self.feedback_dir):
            os.makedirs(self.feedback_dir, exist_ok=True)
            os.chmod(self.feedback_dir, FEEDBACK_DIR_MODE)
        atomic_write(os.path.join(self.feedback_dir, feedback_name(secret, notebook)), data,
                             FEEDBACK_FILE_MODE)

    def _totals(self):
        import csv
        try:
            with open(os.path.join(self.out_dir, "totals.csv"), newline="", encoding="utf-8") as fh:
                return {row["student_id"]: row for row in csv.DictReader(fh)}
        except (OSError, ValueError):
            return {}

    def commit(self):
        """Place every graded learner's submission, write the course's files, release, journal."""
        if not self.done:
            return
        batch, self.done = self.done, []
        for student, sub in batch:
            if not sub.get("placed"):
                self._place(student)
                sub["placed"] = True
        try:
            grading.grade_class(self.submitted_dir, self.out_dir, self.root, db_url=self.db_url, jobs=1,
                                progress=False, limits=self.limits, check_export=False, assignment=self.assignment,
                                course_dir=self.course_dir, course_key=self.course_key)
        except Exception:
            self.done = batch + self.done        # placed already: retried on the next round
            raise
        totals = self._totals()
        for student, sub in batch:
            page_path = os.path.join(self.out_dir, "feedback", student, self.assignment + ".html")
            released = 0
            if sub.get("secret"):
                with open(page_path, "rb") as fh:
                    page = fh.read()
                for nb in sub["notebook_ids"]:
                    self._release_one(sub["secret"], nb, page)
                    released += 1
            row = totals.get(student, {})
            score, max_score = row.get("score", "?"), row.get("max_score", "?")
            self.journal["inbound"][sub["folder"]] = {"outcome": "graded", "student": student, "score": score,
                                                      "max_score": max_score, "released": released}
            self.journal["graded"][f"{student}+{self.assignment}"] = sub["when"].isoformat()
            seconds = time.monotonic() - sub["started"]
            notes = "; ".join(sub.get("notes", []))
            log.info("%s %s %s/%s in %.1f s (submitted %s%s)%s", student, self.assignment, score, max_score,
                     seconds, sub["timestamp"], "" if released else ", feedback NOT released",
                     f": {notes}" if notes else "")
        self._save_journal()

    # ---------------------------------------------------------------- the loop
    def _cleanup(self):
        shutil.rmtree(self.staging, ignore_errors=True)
        if os.path.isdir(self.submitted_dir):
            for student in os.listdir(self.submitted_dir):
                for suffix in ("watch-new", "watch-old"):
                    shutil.rmtree(os.path.join(self.submitted_dir, student, f".{self.assignment}.{suffix}"),
                                  ignore_errors=True)

    def stop(self, *_args):
        self.stopping = True

    def run(self, once=False):
        """Poll until stopped; with once, until everything in the inbound now is handled."""
        self._cleanup()
        os.makedirs(self.state_dir, exist_ok=True)
        self._pool()
        from . import gradebook, sandbox  # noqa: F401  (loaded now, not when the first learner is written)
        sandbox.isolation_mode()
        log.info("watching %s for '%s' (course %s); feedback to %s", self.inbound, self.assignment,
                 self.course_id, self.feedback_dir)
        try:
            while True:
                if not self.stopping:
                    self.scan()
                    self.start_learners()
                self.collect_finished(self.interval if not self.done else 0)
                try:
                    self.commit()
                except Exception as exc:   # e.g. the gradebook is locked or down: kept, retried
                    log.error("could not write the grades of %d learner(s): %s: %s; retrying", len(self.done),
                              type(exc).__name__, exc)
                    time.sleep(self.interval)
                idle = not self.running and not self.done and not any(self.pending.values())
                if self.stopping and not self.running and not self.done:
                    log.info("stopped")
                    return 0
                if once and idle:
                    return 0
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)


def _warm_worker():
    """Run in each grading worker as it starts: the sandbox's self-test, answered before a learner waits."""
    from . import sandbox
    return sandbox.isolation_mode()


def main(root, course_dir, out_dir, assignment, jobs=2, interval=1.0, limits=None, course_key=None, db_url=None,
         fit_memory=True):
    """``python -m autograder watch``: run a Watcher until SIGTERM or SIGINT; the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    watcher = Watcher(root, course_dir, out_dir, assignment, jobs=jobs, interval=interval, limits=limits,
                      course_key=course_key, db_url=db_url, fit_memory=fit_memory)
    signal.signal(signal.SIGTERM, watcher.stop)
    signal.signal(signal.SIGINT, watcher.stop)
    return watcher.run()
