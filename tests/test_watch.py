"""Grading on submission through nbgrader's exchange, driven with real nbgrader commands.

Every learner has a HOME, USER and nbgrader cache of their own and runs plain ``nbgrader
fetch_assignment``, ``submit`` and ``fetch_feedback``.  As in a hub's containers, the OS
account is ``jovyan`` and the learner's name comes from ``JUPYTERHUB_USER``: each learner's
commands run under bubblewrap with an ``/etc/passwd`` whose only account is ``jovyan``.

* ``test_release_feedback_after_grade``: the instructor's manual path, ``nbgrader collect``,
  ``python -m autograder grade``, ``nbgrader generate_feedback`` and ``release_feedback``,
  also for a resubmission (no ``--force``).
* ``test_watch_end_to_end``: ``python -m autograder watch`` as a subprocess, a burst of
  learners (some twice) with a hostile one and hostile inbound folders among them, the
  latency from the end of ``nbgrader submit`` to released feedback, ``kill -9`` and a
  restart, SIGTERM.
"""
import hashlib
import html
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from classgen import build as B

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
COURSE_ID = "cnn_backprop"
SOLUTION = {nb: (REPO / "solutions" / "cnn_layers" / f"{nb}.ipynb").read_bytes() for nb in ("convolution", "pooling")}
RELEASE = {nb: (REPO / "exercises" / "cnn_layers" / f"{nb}.ipynb").read_bytes() for nb in ("convolution", "pooling")}
# what each hand-in scores: both notebooks right, one of them, none
WORK = {47.0: (SOLUTION["convolution"], SOLUTION["pooling"]), 18.0: (RELEASE["convolution"], SOLUTION["pooling"]),
        29.0: (SOLUTION["convolution"], RELEASE["pooling"]), 0.0: (RELEASE["convolution"], RELEASE["pooling"])}
LATENCY_BOUND_S = 120.0      # generous: the goal (p95 <= 15 s on a quiet 2-core machine) is reported, not asserted


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), PATH=os.path.dirname(PY) + os.pathsep + os.environ.get("PATH", ""))


def _run(cmd, cwd, timeout=600, env=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or _env())
    return proc


@pytest.fixture
def exchange(tmp_path):
    """A course folder (nbgrader_config.py naming a fresh exchange) with cnn_layers released to it."""
    return _exchange(tmp_path, "cnn_layers")


def _exchange(tmp_path, assignment):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is needed to give each learner the account jovyan")
    course, root = tmp_path / "course", tmp_path / "exchange"
    course.mkdir()
    root.mkdir()
    for folder in ("solutions", "exercises"):
        shutil.copytree(REPO / folder, course / folder)
    (course / "nbgrader_config.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from autograder.nbgrader_config import make_config\n"
        "c = get_config()\n"
        "c.merge(make_config(os.path.dirname(os.path.abspath(__file__))))\n"
        f"c.Exchange.root = {str(root)!r}\n")
    proc = _run([PY, "-m", "nbgrader", "release_assignment", assignment], course)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp_path / "passwd").write_text(f"jovyan:x:{os.getuid()}:{os.getgid()}::/home/jovyan:/bin/sh\n")
    return course, root


class Learner:
    """One learner's account: a HOME, USER=jovyan, JUPYTERHUB_USER=name, and their nbgrader config."""

    def __init__(self, base, name, root, assignment="cnn_layers"):
        self.name, self.assignment = name, assignment
        self.home = base / "home" / name
        self.home.mkdir(parents=True)
        self.passwd = base / "passwd"
        (self.home / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.Exchange.root = {str(root)!r}\nc.CourseDirectory.course_id = {COURSE_ID!r}\n")

    def command(self, *args):
        return ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(self.passwd), "/etc/passwd",
                PY, "-m", "nbgrader", *args]

    def env(self):
        return dict(_env(), HOME=str(self.home), USER="jovyan", LOGNAME="jovyan", JUPYTERHUB_USER=self.name)

    def popen(self, *args):
        return subprocess.Popen(self.command(*args), cwd=self.home, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run(self, *args):
        proc = _run(self.command(*args), self.home, env=self.env())
        assert proc.returncode == 0, \
            f"{self.name}: nbgrader {' '.join(args)}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
        return proc

    def hand_in(self, convolution, pooling):
        self.hand_in_notebooks({"convolution": convolution, "pooling": pooling})

    def hand_in_notebooks(self, notebooks):
        for name, data in notebooks.items():
            (self.home / self.assignment / f"{name}.ipynb").write_bytes(data)

    def cache(self):
        return self.home / ".local" / "share" / "jupyter" / "nbgrader_cache" / COURSE_ID

    def submissions(self):
        """{timestamp: (secret, [notebook ids])} of the learner's own copies of their submissions."""
        out = {}
        for folder in self.cache().glob(f"*+{self.assignment}+*") if self.cache().is_dir() else ():
            stamp = folder.name.split("+")[2]
            out[stamp] = ((folder / "submission_secret.txt").read_text(),
                          sorted(p.stem for p in folder.glob("*.ipynb")))
        return out

    def fetched(self, stamp, notebook):
        return (self.home / self.assignment / "feedback" / stamp / f"{notebook}.html").read_text()


def released(root, secret, notebooks):
    """The feedback pages released in the exchange for one submission (None until all are there)."""
    paths = [root / COURSE_ID / "feedback" / (hashlib.md5((secret + nb).encode()).hexdigest() + ".html")
             for nb in notebooks]
    return [p.read_text() for p in paths] if all(p.exists() for p in paths) else None


def submit_and_wait(learner, root, watch):
    """nbgrader submit as the learner, then wait until the watcher released that submission's feedback;
    the submission's timestamp."""
    before = learner.submissions()
    learner.run("submit", "cnn_layers")
    (stamp,) = set(learner.submissions()) - set(before)
    secret, notebooks = learner.submissions()[stamp]
    deadline = time.monotonic() + LATENCY_BOUND_S
    while released(root, secret, notebooks) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert released(root, secret, notebooks) is not None, watch.text()[-3000:]
    return stamp


def notebook_score(page):
    """The notebook's score on a page of nbgrader's generate_feedback: 'name (Score: 55.0 / 55.0)'."""
    return float(re.search(r"\(Score: ([0-9.]+) / [0-9.]+\)", page).group(1))


def total_of(page):
    head = page.split("Total: <strong>", 1)[1]
    return float(head.split(" / ", 1)[0])


# --------------------------------------------------------------------------- nbgrader's own release path

def _grade_and_release(course, assignment, *collect_args):
    """The instructor's manual path: nbgrader collect, our grade, nbgrader generate_feedback and
    release_feedback (no --force)."""
    proc = _run([PY, "-m", "nbgrader", "collect", assignment, *collect_args], course)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _run([PY, "-m", "autograder", "--assignment", assignment, "grade", str(course / "submitted"),
                 "--out", str(course / "grading"), "--no-progress"], REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for args in (["generate_feedback", assignment], ["release_feedback", assignment]):
        proc = _run([PY, "-m", "nbgrader", *args], course)
        assert proc.returncode == 0, f"nbgrader {args[0]}: {proc.stderr[-2000:]}"


@pytest.mark.slow
def test_release_feedback_after_grade(exchange, tmp_path):
    course, root = exchange
    amy, bo = Learner(tmp_path, "amy", root), Learner(tmp_path, "bo", root)
    for learner, score in ((amy, 18.0), (bo, 0.0)):
        learner.run("fetch_assignment", "cnn_layers")
        learner.hand_in(*WORK[score])
        learner.run("submit", "cnn_layers")

    _grade_and_release(course, "cnn_layers")
    for name in ("amy", "bo"):
        for side in ("timestamp.txt", "submission_secret.txt"):
            carried = course / "autograded" / name / "cnn_layers" / side
            assert carried.read_bytes() == (course / "submitted" / name / "cnn_layers" / side).read_bytes()
    amy.run("fetch_feedback", "cnn_layers")
    (first,) = amy.submissions()
    assert "Hidden checks: ERROR" in amy.fetched(first, "convolution")       # the stubs
    assert "Hidden checks: ERROR" not in amy.fetched(first, "pooling")

    # a resubmission: collected with --update, graded, its feedback generated without --force
    amy.hand_in(*WORK[47.0])
    time.sleep(1.1)
    amy.run("submit", "cnn_layers")
    _grade_and_release(course, "cnn_layers", "--update")
    amy.run("fetch_feedback", "cnn_layers")
    (second,) = set(amy.submissions()) - {first}
    assert "Hidden checks: ERROR" not in amy.fetched(second, "convolution")
    assert "Hidden checks: passed" in amy.fetched(second, "convolution")
    assert "Hidden checks: ERROR" in amy.fetched(first, "convolution")      # the first one's is kept


@pytest.mark.slow
@pytest.mark.parametrize("assignment, full", [("cnn_network", 55.0), ("conv_variants", 110.0)])
def test_the_later_assignments_go_through_nbgraders_exchange(tmp_path, assignment, full):
    """cnn_network and conv_variants travel nbgrader's exchange as cnn_layers does: released,
    fetched and submitted by learners with homes of their own, collected, graded, and returned
    with nbgrader's commands. The solutions get full marks and the untouched release none, and
    each learner fetches feedback for their own notebooks only."""
    course, root = _exchange(tmp_path, assignment)
    notebooks = sorted(p.stem for p in (REPO / "solutions" / assignment).glob("*.ipynb"))
    amy, bo = Learner(tmp_path, "amy", root, assignment), Learner(tmp_path, "bo", root, assignment)
    for learner, folder in ((amy, "solutions"), (bo, "exercises")):
        learner.run("fetch_assignment", assignment)
        assert sorted(p.stem for p in (learner.home / assignment).glob("*.ipynb")) == notebooks
        learner.hand_in_notebooks({nb: (REPO / folder / assignment / f"{nb}.ipynb").read_bytes()
                                   for nb in notebooks})
        learner.run("submit", assignment)
    _grade_and_release(course, assignment)
    for learner, expected in ((amy, full), (bo, 0.0)):
        learner.run("fetch_feedback", assignment)
        (stamp,) = learner.submissions()
        pages = {nb: learner.fetched(stamp, nb) for nb in notebooks}
        assert sum(notebook_score(page) for page in pages.values()) == expected, learner.name
        for page in pages.values():
            assert ("Hidden checks: ERROR" in page) == (learner is bo)


# --------------------------------------------------------------------------- the watcher

class Watch:
    """``python -m autograder watch`` in the course folder, as a subprocess with its log in a file."""

    def __init__(self, course, log):
        self.course, self.log = course, log
        self.proc = None

    def start(self):
        self.fh = open(self.log, "a")
        self.proc = subprocess.Popen([PY, "-m", "autograder", "watch", "--jobs", "2", "--interval", "0.5",
                                      "--notebook-timeout", "30"], cwd=self.course, env=_env(), stdout=self.fh,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while "watching" not in self.text():
            assert self.proc.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, "the watcher did not start"
            time.sleep(0.2)

    def text(self):
        return Path(self.log).read_text() if Path(self.log).exists() else ""

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig, timeout=120):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.fh.close()
        return code


class Clock:
    """For each submission, the time from the end of nbgrader submit until its feedback is released."""

    def __init__(self, root):
        self.root = root
        self.watching = {}     # (learner, stamp) -> (secret, notebooks, end of submit)
        self.latency = {}
        self.took = {}         # how long nbgrader submit itself ran
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def submitted(self, learner, before, end, start=None):
        for stamp, (secret, notebooks) in learner.submissions().items():
            if stamp not in before:
                with self.lock:
                    self.watching[(learner.name, stamp)] = (secret, notebooks, end)
                    self.took[(learner.name, stamp)] = end - (start if start is not None else end)
                return stamp
        raise AssertionError(f"{learner.name}: no new submission in the cache")

    def _poll(self):
        while not self.done.is_set():
            with self.lock:
                items = [(k, v) for k, v in self.watching.items() if k not in self.latency]
            for key, (secret, notebooks, end) in items:
                if released(self.root, secret, notebooks) is not None:
                    self.latency[key] = time.monotonic() - end
            time.sleep(0.1)

    def wait(self, keys, timeout):
        deadline = time.monotonic() + timeout
        while any(k not in self.latency for k in keys) and time.monotonic() < deadline:
            time.sleep(0.2)
        return [k for k in keys if k not in self.latency]


def _submit_all(clock, jobs):
    """Run (learner, delay) submits at once, each after its delay; return {learner name: [stamps]}."""
    stamps, errors = {}, []

    def one(learner, delay):
        time.sleep(delay)
        before = learner.submissions()
        start = time.monotonic()
        proc = learner.popen("submit", "cnn_layers")
        out, _ = proc.communicate(timeout=600)
        end = time.monotonic()
        if proc.returncode != 0:
            errors.append(f"{learner.name}: {out[-1000:]}")
            return
        stamps.setdefault(learner.name, []).append(clock.submitted(learner, before, end, start))

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return stamps


def _hostile_folders(root, course):
    """Inbound folders a learner can make by hand: a name that is no submission, a link that claims to be
    amy's newest submission, and a submission whose notebook links to the instructor's solution and whose
    secret is a FIFO."""
    inbound = root / COURSE_ID / "inbound"
    bad = inbound / "eve+cnn_layers+not a date+AAAAAAAAAAAA"
    bad.mkdir()
    (bad / "pooling.ipynb").write_bytes(SOLUTION["pooling"])
    (bad / "submission_secret.txt").write_text("a" * 128)
    os.chmod(bad, 0o777)
    target = next(p for p in inbound.iterdir() if p.name.startswith("amy+"))
    os.symlink(target, inbound / "amy+cnn_layers+2030-01-01 00:00:00.000000 UTC+AAAAAAAAAAAA")
    sneaky = inbound / "trudy+cnn_layers+2026-01-01 00:00:00.000000 UTC+BBBBBBBBBBBB"
    sneaky.mkdir()
    os.symlink(course / "solutions" / "cnn_layers" / "pooling.ipynb", sneaky / "pooling.ipynb")
    (sneaky / "convolution.ipynb").write_bytes(RELEASE["convolution"])
    os.mkfifo(sneaky / "submission_secret.txt")
    os.chmod(sneaky, 0o777)


def _mallory_convolution():
    nb = json.loads(SOLUTION["convolution"])
    B.set_function(nb, "conv_forward", "def conv_forward(x, w, b, stride=1, pad=0):\n    while True:\n        pass\n")
    return json.dumps(nb).encode()


@pytest.mark.slow
def test_watch_end_to_end(exchange, tmp_path):
    from nbgrader.api import Gradebook
    course, root = exchange
    # eight honest learners (some hand in twice: newest wins, even when it is worse) and mallory, whose
    # conv_forward never returns
    plan = {"amy": [47.0], "bo": [18.0, 47.0], "cy": [29.0], "di": [0.0, 29.0], "ed": [47.0], "fay": [18.0, 0.0],
            "gus": [29.0], "hal": [47.0]}
    learners = {name: Learner(tmp_path, name, root) for name in list(plan) + ["mallory", "zoe"]}
    fetchers = [learners[n].popen("fetch_assignment", "cnn_layers") for n in learners]
    for proc in fetchers:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-1500:]
    watch = Watch(course, tmp_path / "watch.log")
    watch.start()
    clock = Clock(root)
    try:
        # the burst: eight learners within 20 seconds, mallory among them
        for name, scores in plan.items():
            learners[name].hand_in(*WORK[scores[0]])
        learners["mallory"].hand_in(_mallory_convolution(), SOLUTION["pooling"])
        jobs = [(learners[name], 2.5 * k) for k, name in enumerate(plan)] + [(learners["mallory"], 1.0)]
        stamps = _submit_all(clock, jobs)
        _hostile_folders(root, course)
        # the second hand-ins, while the first ones are being graded
        for name, scores in plan.items():
            if len(scores) > 1:
                learners[name].hand_in(*WORK[scores[1]])
        time.sleep(1.1)      # nbgrader's timestamps must differ
        again = _submit_all(clock, [(learners[n], 0.5 * k) for k, n in enumerate(n for n in plan if len(plan[n]) > 1)])
        for name, more in again.items():
            stamps[name] += more
        honest = [(n, s) for n in plan for s in stamps[n]]
        missing = clock.wait(honest, LATENCY_BOUND_S)
        assert not missing, f"no feedback within {LATENCY_BOUND_S} s for {missing}\n{watch.text()[-3000:]}"
        figures = sorted(clock.latency[k] for k in honest)
        p95 = figures[math.ceil(0.95 * len(figures)) - 1]     # nearest rank
        load = os.getloadavg()
        print(f"\nlatency of {len(figures)} submissions: median {statistics.median(figures):.1f} s, "
              f"p95 {p95:.1f} s, slowest {figures[-1]:.1f} s (load average {load[0]:.1f} {load[1]:.1f})")
        whole = sorted(clock.latency[k] + clock.took[k] for k in honest)
        print(f"from the start of nbgrader submit: median {statistics.median(whole):.1f} s, "
              f"p95 {whole[math.ceil(0.95 * len(whole)) - 1]:.1f} s, slowest {whole[-1]:.1f} s; "
              f"nbgrader submit itself ran {statistics.median(clock.took[k] for k in honest):.1f} s (median)")
        assert clock.wait([("mallory", stamps["mallory"][0])], 300) == []

        # kill -9 while zoe is being graded; bo hands in a third time while the watcher is down
        learners["zoe"].hand_in(*WORK[47.0])
        before = learners["zoe"].submissions()
        submit = learners["zoe"].popen("submit", "cnn_layers")
        staging = course / "grading" / "watch" / "staging" / "zoe"
        deadline = time.monotonic() + 300
        while not staging.exists() and time.monotonic() < deadline:    # picked up, not yet released
            time.sleep(0.02)
        assert staging.exists(), watch.text()[-2000:]
        assert watch.signal(signal.SIGKILL) == -signal.SIGKILL
        out, _ = submit.communicate(timeout=600)
        assert submit.returncode == 0, out[-1500:]
        zoe = [clock.submitted(learners["zoe"], before, time.monotonic())]
        assert "zoe cnn_layers" not in watch.text()
        learners["bo"].hand_in(*WORK[29.0])
        plan["bo"].append(29.0)
        stamps["bo"] += _submit_all(clock, [(learners["bo"], 0)])["bo"]
        watch.start()
        assert clock.wait([("zoe", zoe[0]), ("bo", stamps["bo"][-1])], LATENCY_BOUND_S) == [], watch.text()[-3000:]
        time.sleep(2)
        assert watch.signal(signal.SIGTERM) == 0
        assert watch.text().rstrip().endswith("stopped")
    finally:
        clock.done.set()
        watch.kill()
    plan["zoe"] = [47.0]
    stamps["zoe"] = zoe
    log = watch.text()
    print(log)

    # every learner's own fetch_feedback returns the newest submission's total
    fetchers = {n: learners[n].popen("fetch_feedback", "cnn_layers") for n in plan}
    for name, proc in fetchers.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-1500:]
        newest = stamps[name][-1]
        for nb in ("convolution", "pooling"):
            assert total_of(learners[name].fetched(newest, nb)) == plan[name][-1], (name, nb)
        for stamp, score in zip(stamps[name][:-1], plan[name][:-1]):   # earlier hand-ins: their own page
            page = learners[name].fetched(stamp, "pooling")
            assert ("replaced it" in page) or total_of(page) == score, (name, stamp)

    text = re.sub(r"<style>.*?</style>|<[^>]+>", " ", learners["bo"].fetched(stamps["bo"][-1], "pooling"), flags=re.S)
    print("bo's feedback, as fetch_feedback returned it:\n" + "\n".join(
        " ".join(line.split()) for line in html.unescape(text).splitlines() if line.strip()))

    # exactly once: one log line per submission over both runs, and one gradebook entry per learner
    for name in plan:
        for stamp in stamps[name]:
            lines = [line for line in log.splitlines()
                     if f" {name} cnn_layers " in line and f"submitted {stamp}" in line]
            assert len(lines) == 1, (name, stamp, lines)
    with Gradebook("sqlite:///" + str(course / "gradebook.db"), course_id=COURSE_ID) as gb:
        students = sorted(s.id for s in gb.students)
        scores = {s: gb.find_submission("cnn_layers", s).score for s in students}
    assert students == sorted(list(plan) + ["mallory", "trudy"])
    for name in plan:
        assert scores[name] == plan[name][-1], name
    assert scores["mallory"] < 47.0 and scores["trudy"] == 0.0
    # the hostile folders: refused, or graded without what they link to; trudy's FIFO never blocked anyone
    assert "not a date" in log and "it is not a folder" in log
    assert "trudy cnn_layers 0.0/47.0" in log and "feedback NOT released" in log
    journal = json.loads((course / "grading" / "watch" / "journal.json").read_text())
    outcomes = [v["outcome"] for v in journal["inbound"].values()]
    assert outcomes.count("refused") == 1


def _hand_ins_under_watch(tmp_path, course, root, scores, between=None):
    """amy hands in each of scores in turn under a running watcher (``between()`` after the first),
    then fetches her feedback; (amy, the last submission's timestamp, the watcher's log)."""
    amy = Learner(tmp_path, "amy", root)
    amy.run("fetch_assignment", "cnn_layers")
    watch = Watch(course, tmp_path / "watch.log")
    watch.start()
    try:
        for k, score in enumerate(scores):
            if k:
                (between or (lambda: None))()
                time.sleep(1.1)      # nbgrader's timestamps must differ
            amy.hand_in(*WORK[score])
            stamp = submit_and_wait(amy, root, watch)
        assert watch.signal(signal.SIGTERM) == 0
    finally:
        watch.kill()
    amy.run("fetch_feedback", "cnn_layers")
    return amy, stamp, watch.text()


@pytest.mark.slow
def test_watch_applies_the_due_date_and_late_policy(exchange, tmp_path):
    """The due date and late policy of the course's nbgrader_config.py hold for watch as for grade,
    and the learner's fetched feedback says so."""
    course, root = exchange
    with open(course / "nbgrader_config.py", "a") as fh:
        fh.write('c.CourseGrading.duedates = {"cnn_layers": "2026-03-06 12:00:00 UTC"}\n'
                 'c.LateSubmissionPlugin.penalty_method = "zero"\n')
    amy, stamp, log = _hand_ins_under_watch(tmp_path, course, root, [47.0])
    page = amy.fetched(stamp, "pooling")
    assert total_of(page) == 0.0
    assert "after the due date (2026-03-06 12:00 UTC). Late penalty: 47 point(s)." in page
    assert " amy cnn_layers 0.0/47.0 " in log


@pytest.mark.slow
def test_a_manual_score_survives_a_resubmission_under_watch(exchange, tmp_path):
    from nbgrader.api import Gradebook
    course, root = exchange

    def set_manual_score():
        with Gradebook("sqlite:///" + str(course / "gradebook.db"), course_id=COURSE_ID) as gb:
            gb.find_grade("maxpool_forward_basic", "pooling", "cnn_layers", "amy").manual_score = 0.5
            gb.db.commit()

    amy, stamp, _log = _hand_ins_under_watch(tmp_path, course, root, [18.0, 47.0], set_manual_score)
    page = amy.fetched(stamp, "convolution")
    assert total_of(page) == 47.0 - 2.0 + 0.5 and "Score set by your instructor: 0.5" in page
    with Gradebook("sqlite:///" + str(course / "gradebook.db"), course_id=COURSE_ID) as gb:
        assert gb.find_grade("maxpool_forward_basic", "pooling", "cnn_layers", "amy").manual_score == 0.5
        assert gb.find_submission("cnn_layers", "amy").score == 45.5


# --------------------------------------------------------------------------- the pieces, without nbgrader's commands

def test_inbound_names_decide_identity_only_in_nbgraders_pattern():
    from autograder.watch import parse_inbound_name
    ok, why = parse_inbound_name("amy+cnn_layers+2026-12-07 16:53:57.372268 UTC+WIxzwi6IFAPB", {"cnn_layers"})
    assert why is None and ok["student"] == "amy" and ok["when"].isoformat() == "2026-12-07T16:53:57.372268+00:00"
    assert parse_inbound_name("amy+cnn_layers+2026-12-07 16:53:57.372268 UTC", {"cnn_layers"})[1] is None
    for name, part in [("amy+cnn_layers+not a date+WIxzwi6IFAPB", "not a date"),
                       ("amy+other+2026-12-07 16:53:57 UTC+WIxzwi6IFAPB", "not watched"),
                       ("am\ny+cnn_layers+2026-12-07 16:53:57 UTC+WIxzwi6IFAPB", "control characters"),
                       (".amy+cnn_layers+2026-12-07 16:53:57 UTC+WIxzwi6IFAPB", "hidden folder"),
                       ("amy+cnn_layers+2026-12-07 16:53:57 UTC+WIxz/../x", "is not"),
                       ("amy+bo+cnn_layers+2026-12-07 16:53:57 UTC+WIxzwi6IFAPB", "is not"),
                       ("amy+cnn_layers+2026-12-07 16:53:57 UTC+WIxzw+extra", "is not")]:
        info, why = parse_inbound_name(name, {"cnn_layers"})
        assert info is None and part in why, (name, why)


def test_feedback_is_named_as_nbgraders_fetch_feedback_looks_for_it():
    from nbgrader.utils import notebook_hash
    from autograder.watch import feedback_name
    secret = "ab" * 64
    assert feedback_name(secret, "pooling") == notebook_hash(secret=secret, notebook_id="pooling") + ".html"


def test_only_usable_side_files_reach_autograded(tmp_path):
    from autograder import autograded
    course, sub = tmp_path / "course", tmp_path / "course" / "submitted" / "amy" / "cnn_layers"
    sub.mkdir(parents=True)
    (sub / "timestamp.txt").write_text("2026-12-07 16:53:57.372268 UTC")
    (sub / "submission_secret.txt").write_text("ab" * 64)
    assert autograded.carry_submission_files(str(course), "amy", "cnn_layers", str(sub)) == []
    dest = course / "autograded" / "amy" / "cnn_layers"
    assert (dest / "timestamp.txt").read_text() == "2026-12-07 16:53:57.372268 UTC"
    assert (dest / "submission_secret.txt").read_text() == "ab" * 64
    # a resubmission whose secret links to the course key and whose timestamp is no date: neither is
    # copied, and the earlier submission's copies go
    (course / "course.key").write_text("0" * 64)
    (sub / "submission_secret.txt").unlink()
    os.symlink(course / "course.key", sub / "submission_secret.txt")
    (sub / "timestamp.txt").write_text("yesterday, honest")
    notes = autograded.carry_submission_files(str(course), "amy", "cnn_layers", str(sub))
    assert notes == ["timestamp.txt was not copied to autograded/ (it does not hold a date)",
                     "submission_secret.txt was not copied to autograded/ (submission_secret.txt is a symbolic "
                     "link; only regular files are read)"]
    assert sorted(os.listdir(dest)) == []
    (sub / "timestamp.txt").unlink()
    os.mkfifo(sub / "timestamp.txt")      # never blocks the grader
    assert "FIFO" in autograded.carry_submission_files(str(course), "amy", "cnn_layers", str(sub))[0]


def _inbound_submission(inbound, student, stamp, secret, score):
    """An inbound folder as nbgrader submit leaves it: notebooks, timestamp.txt, the secret, mode 0777."""
    folder = inbound / f"{student}+cnn_layers+{stamp}+{hashlib.md5(stamp.encode()).hexdigest()[:12]}"
    folder.mkdir()
    for nb, data in zip(("convolution", "pooling"), WORK[score]):
        (folder / f"{nb}.ipynb").write_bytes(data)
    (folder / "timestamp.txt").write_text(stamp)
    (folder / "submission_secret.txt").write_text(secret)
    os.chmod(folder, 0o777)
    return folder


def test_older_waiting_submissions_are_superseded_by_the_newest(tmp_path):
    """Submissions that wait for the same learner: only the newest is graded; the others' feedback
    names the one that replaced them, as does that of a submission older than the one graded."""
    from autograder.watch import Watcher
    inbound, course = tmp_path / "exchange" / COURSE_ID / "inbound", tmp_path / "course"
    inbound.mkdir(parents=True)
    course.mkdir()
    old, new = "a1" * 64, "b2" * 64
    _inbound_submission(inbound, "amy", "2026-12-07 10:00:00.000001 UTC", old, 0.0)
    _inbound_submission(inbound, "amy", "2026-12-07 10:05:00.000001 UTC", new, 47.0)

    def watch_once():
        Watcher(str(REPO), str(course), str(course / "grading"), "cnn_layers", jobs=1, interval=0.1,
                exchange_root=str(tmp_path / "exchange"), course_id=COURSE_ID).run(once=True)

    watch_once()
    root = tmp_path / "exchange"
    assert [total_of(p) for p in released(root, new, ["convolution", "pooling"])] == [47.0, 47.0]
    for page in released(root, old, ["convolution", "pooling"]):
        assert "2026-12-07 10:00:00.000001 UTC was not graded: your submission of 2026-12-07 10:05:00.000001 UTC " \
               "replaced it" in page
    # one that arrives late, with a timestamp older than the one graded, is not graded either
    older = "c3" * 64
    _inbound_submission(inbound, "amy", "2026-12-07 09:00:00.000001 UTC", older, 0.0)
    watch_once()
    assert "replaced it" in released(root, older, ["pooling"])[0]
    journal = json.loads((course / "grading" / "watch" / "journal.json").read_text())
    assert sorted(v["outcome"] for v in journal["inbound"].values()) == ["graded", "superseded", "superseded"]
    totals = (course / "grading" / "totals.csv").read_text().splitlines()
    assert len(totals) == 2 and totals[1].startswith("amy,cnn_layers,47.0,47.0,")
    mode = os.stat(root / COURSE_ID / "feedback").st_mode & 0o777
    assert mode == 0o711 and all(os.stat(p).st_mode & 0o777 == 0o644
                                 for p in (root / COURSE_ID / "feedback").iterdir())
