"""A Gradescope autograder bundle: built by the instructor, run by Gradescope on every submission.

``build(root, assignment, out)`` (``python -m autograder gradescope --out autograder.zip``)
writes a zip in the layout of Gradescope's autograder specification::

    setup.sh            Gradescope runs it once, as root, when it builds the image (Ubuntu):
                        bubblewrap, a Python of 3.11 or newer, the course's requirements.txt
    run_autograder      Gradescope runs it for every submission, in /autograder
    requirements.txt    the course's pinned environment
    autograder/         this package: the grader, the sandbox and the assignment's checks
                        (of autograder/assignments/, only the module of this assignment)
    solutions/<assignment>/<notebook>.ipynb
                        the RELEASED notebooks (exercises/): their graded cells, points and
                        helper cell are all that grading reads; no solution text
    course.key          the secret the hidden inputs are derived from (mode 0600)
    gradescope.json     the assignment, the test visibility, the key's fingerprint

Gradescope unpacks it into ``/autograder/source``.  For each submission ``run_autograder``
calls ``main()`` with the ``python3`` that setup.sh put first on ``PATH``, importing this
package from ``/autograder/source`` only (``python3 -I``: no ``PYTHONPATH``, no current
folder; the source folder goes first on ``sys.path``, and ``main`` refuses to grade with
a package loaded from anywhere else).  ``main`` finds the learner's notebooks in
``/autograder/submission`` (any folder, inside a zip, names as browsers and learners write
them: ``Convolution (1).ipynb``), grades them as ``python -m autograder grade`` does
(``grading.grade_learner``: the same sandbox, hidden checks, limits and course key), and
writes ``/autograder/results/results.json``: the total ``score``, one entry of ``tests``
per graded cell (``name``, ``score``, ``max_score``, ``output``: the cell's feedback,
``visibility``) and an ``output`` for the whole submission that says which file was graded
as which notebook and why anything was not graded.  Whatever the submission holds, and
whatever fails, a results.json is written.
"""
import argparse
import datetime as _dt
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile

SOURCE = "/autograder/source"
SUBMISSION = "/autograder/submission"
RESULTS = "/autograder/results/results.json"
CONFIG = "gradescope.json"
KEY_NAME = "course.key"
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")   # Gradescope's values
STUDENT = "gradescope"          # the id of the one learner a container grades (results only)
MAX_LISTED = 10                 # file names quoted in the output, at most
MAX_READ_BYTES = 200 << 20      # notebook bytes read from one submission, at most
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu 22.04 or
# 24.04).  It installs bubblewrap (the grader's sandbox for learner code) and the course's
# Python environment from requirements.txt into /opt/course-venv, and makes that
# environment's python3 the first python3 on PATH: run_autograder runs that one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv=/opt/course-venv
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends bubblewrap ca-certificates
# The pinned packages need Python 3.11 or newer: Ubuntu 24.04's is 3.12, Ubuntu 22.04 packages 3.11.
python=""
for v in 3.13 3.12 3.11; do
  if apt-cache show "python$v-venv" >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends "python$v" "python$v-venv"
    python="python$v"
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup.sh: this image packages no Python 3.11 or newer; choose the Ubuntu 22.04 or 24.04 base image" >&2
  exit 1
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# PyTorch for the CPU, as in the course's own environment (grading itself needs NumPy only)
"$venv/bin/python" -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu \
  -r "$here/requirements.txt"
# the environment's python3 first on PATH (a wrapper, so that Python finds its environment)
printf '#!/bin/sh\nexec %s/bin/python3 "$@"\n' "$venv" > /usr/local/bin/python3
chmod 755 /usr/local/bin/python3
python3 -c "import numpy, nbformat, dateutil; print('course environment ready:', numpy.__version__)"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission, as root, in /autograder.  It grades
# /autograder/submission with the bundle's own grader (from /autograder/source only) and
# writes /autograder/results/results.json.
set -u
source_dir=/autograder/source
results=/autograder/results/results.json
mkdir -p /autograder/results
if [ "$(id -u)" -eq 0 ]; then
  # Where the container allows no bubblewrap, learner code runs as an unprivileged user with
  # resource limits only: it must not read the course key, the checks or the results.
  chmod -R go-rwx "$source_dir"
  chmod 755 /autograder/results
fi
python3 -I -c 'import sys; sys.path.insert(0, "/autograder/source"); from autograder.gradescope import main; sys.exit(main())'
code=$?
if [ ! -s "$results" ]; then
  # the grader could not start at all (no python3 from setup.sh?): Gradescope still gets a result
  printf '{"score": 0.0, "output": "The autograder could not start (exit code %s), so nothing was graded. Please tell your instructor.", "tests": []}\n' "$code" > "$results"
fi
exit 0
"""


class BundleError(Exception):
    """The bundle cannot be built; the message says how to fix it."""


# --------------------------------------------------------------------------- build

def _package_files(root, assignment):
    """{path in the bundle: path here} of the package: every module and package-data file,
    and of ``autograder/assignments/`` only ``__init__.py`` and the modules (or packages) whose
    checks grade this assignment."""
    from . import checks
    from .assignment import load_check_modules
    load_check_modules()
    needed = {module.rsplit(".", 1)[1] for module in checks.MODULES.get(assignment, ())
              if module.startswith("autograder.assignments.")}
    here = os.path.dirname(os.path.abspath(__file__))
    files = {}
    for folder, dirs, names in os.walk(here):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel_folder = os.path.relpath(folder, here)
        for name in sorted(names):
            if not name.endswith((".py", ".json", ".html", ".css")):
                continue
            rel = os.path.normpath(os.path.join(rel_folder, name))
            parts = rel.split(os.sep)
            # an assignment's checks are a module (assignments/NAME.py) or a package (assignments/NAME/)
            if parts[0] == "assignments" and parts[1:] != ["__init__.py"] \
                    and os.path.splitext(parts[1])[0] not in needed:
                continue
            files["autograder/" + "/".join(parts)] = os.path.join(folder, name)
    return files


def key_fingerprint(key):
    """A short public name of a course key (which key a bundle holds, without showing it)."""
    return hashlib.sha256(b"course-key-fingerprint\0" + key).hexdigest()[:16]


def _released_notebooks(root, assignment):
    """{path in the bundle: path here} of the released notebooks, refused when exercises/ is stale."""
    from . import checks
    from .assignment import load_check_modules
    from .release import ReleaseError, release
    load_check_modules()
    try:
        stale = release(root, assignment=assignment, check=True)
    except ReleaseError as exc:
        raise BundleError(f"the release of '{assignment}' cannot be checked: {exc}") from None
    if stale:
        raise BundleError(f"exercises/{assignment}/ is stale ({', '.join(stale)}): the bundle grades with the "
                          f"released notebooks' graded cells, so run 'python -m autograder --assignment "
                          f"{assignment} release' first")
    from .nbgrader_config import RELEASE_DIRECTORY, SOURCE_DIRECTORY
    return {f"{SOURCE_DIRECTORY}/{assignment}/{nb}.ipynb": os.path.join(root, RELEASE_DIRECTORY, assignment,
                                                                          nb + ".ipynb")
            for nb in checks.notebooks_of(assignment)}


def _zip_info(name, mode):
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.create_system = 3                       # Unix: the modes below are kept by unzip
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build(root, assignment, out, course_key=None, visibility="visible"):
    """Write the bundle to ``out`` (mode 0600: it holds the course key); return a summary dict.

    ``course_key`` is the key file (default as for ``grade``: ``$AUTOGRADER_COURSE_KEY_FILE``,
    else ``grading/course.key``, made on first use), so that Gradescope and ``grade`` give the
    same notebook the same hidden inputs and the same score.
    """
    from .assignment import AssignmentError, load as load_assignment
    from .grading import GradingError, course_key_path, load_course_key
    if visibility not in VISIBILITIES:
        raise BundleError(f"unknown visibility {visibility!r}; Gradescope knows {', '.join(VISIBILITIES)}")
    root = os.path.abspath(root)
    try:
        spec = load_assignment(root, assignment)
    except AssignmentError as exc:
        raise BundleError(str(exc)) from None
    key_path = course_key_path("grading", course_key)
    try:
        key = load_course_key(key_path)
    except GradingError as exc:
        raise BundleError(str(exc)) from None
    requirements = os.path.join(root, "requirements.txt")
    if not os.path.isfile(requirements):
        raise BundleError(f"{requirements} is missing: the bundle installs the course's environment from it")
    files = dict(_package_files(root, assignment))
    files.update(_released_notebooks(root, assignment))
    files["requirements.txt"] = requirements
    config = {"format": 1, "assignment": assignment, "visibility": visibility,
              "key_fingerprint": key_fingerprint(key), "max_score": spec.max_score(),
              "notebooks": list(spec.notebooks)}
    texts = {"setup.sh": (SETUP_SH, 0o755), "run_autograder": (RUN_AUTOGRADER, 0o755),
             KEY_NAME: (key.hex() + "\n", 0o600), CONFIG: (json.dumps(config, indent=1) + "\n", 0o644)}
    out = os.path.abspath(out)
    with tempfile.TemporaryDirectory(prefix="gradescope-bundle-") as stage:
        for name, src in files.items():
            dest = os.path.join(stage, *name.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(src, "rb") as fh_in, open(dest, "wb") as fh_out:
                fh_out.write(fh_in.read())
        for name, (text, mode) in texts.items():
            dest = os.path.join(stage, name)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
        _check_stage(stage, assignment)
        names = sorted(list(files) + list(texts))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix="." + os.path.basename(out) + ".")
        try:
            with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
                for name in names:
                    mode = texts[name][1] if name in texts else 0o644
                    with open(os.path.join(stage, *name.split("/")), "rb") as src:
                        zf.writestr(_zip_info(name, mode), src.read())
            os.chmod(tmp, 0o600)
            os.replace(tmp, out)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return {"out": out, "assignment": assignment, "files": names, "key_path": os.path.abspath(key_path),
            "key_fingerprint": config["key_fingerprint"], "max_score": spec.max_score(),
            "visibility": visibility}


def _check_stage(stage, assignment):
    """Load the staged bundle's own package in a fresh interpreter, as run_autograder will:
    a module the assignment needs but the bundle lacks is found here, not on Gradescope."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from autograder.gradescope import check_source; "
            "check_source(sys.argv[1], sys.argv[2])")
    proc = subprocess.run([sys.executable, "-I", "-c", code, stage, assignment], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BundleError("the bundle does not load on its own: " + " | ".join(tail))


def check_source(source, assignment):
    """Raise unless this package was imported from ``source`` and the assignment loads from it."""
    from .assignment import load as load_assignment
    here = os.path.dirname(os.path.abspath(__file__))
    expected = os.path.join(os.path.abspath(source), "autograder")
    if os.path.realpath(here) != os.path.realpath(expected):
        raise BundleError(f"the grader was imported from {here}, not from {expected}")
    return load_assignment(source, assignment)


# --------------------------------------------------------------------------- the submission

def _printable(name):
    from .learnertext import printable
    return repr(printable(name, 120))


def find_notebooks(submission, known, folder):
    """Copy the learner's notebooks from ``submission`` (as Gradescope hands it over) to
    ``folder/<notebook>.ipynb``; return (``{notebook: the learner's file name}``, notes
    for the learner, ``{notebook: why it was not placed}``).

    Files are found in any sub-folder and inside zip files, and matched to the notebooks
    of the assignment ignoring case and the suffixes browsers add (``lms.notebook_name``).
    Only regular files are read (``collect``'s readers: no link, FIFO or device, a size cap).
    Two different files for one notebook place neither: which one was meant is not guessed.
    """
    from . import collect, lms
    entries, notes = [], []
    if not os.path.isdir(submission):
        return {}, ["The submission folder is empty: nothing was uploaded."], {}
    for entry in collect.folder_entries(submission):
        if entry.read is not None and entry.path.lower().endswith(".zip"):
            try:
                inner = collect.zip_entries(os.path.join(submission, entry.path))
            except collect.CollectError:
                notes.append(f"{_printable(entry.path)} is not a readable zip file; it was not opened.")
                continue
            entries += [collect.Entry(f"{entry.path}/{e.path}", e.size, e.read, e.problem) for e in inner]
        else:
            entries.append(entry)
    candidates, others, unreadable, total = {}, [], [], 0
    for entry in entries:
        if collect.IGNORED.search(entry.path):
            continue
        base = entry.path.rsplit("/", 1)[-1]
        notebook = lms.notebook_name(base, known)
        if notebook is None:
            others.append(entry.path)
            continue
        if entry.problem:   # a link, FIFO or device: what it is, in words
            unreadable.append((entry.path, f"only regular files are read, and it is {entry.problem.split(';')[0]}"))
            continue
        if entry.size > collect.MAX_FILE_BYTES:
            unreadable.append((entry.path, f"it is larger than {collect.MAX_FILE_BYTES >> 20} MiB"))
            continue
        same = candidates.setdefault(notebook, {})
        if len(same) > MAX_LISTED or total + entry.size > MAX_READ_BYTES:   # refused anyway: not read
            unreadable.append((entry.path, "the submission holds too many notebook files"))
            continue
        try:
            data = entry.read()
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
            unreadable.append((entry.path, f"it cannot be read ({type(exc).__name__})"))
            continue
        total += len(data)
        digest = hashlib.sha256(data).hexdigest()
        # one file twice (a zip and what it holds): named by its shallowest copy
        if digest not in same or (entry.path.count("/"), entry.path) < (same[digest][0].count("/"), same[digest][0]):
            same[digest] = (entry.path, data)
    placed, refused = {}, {}
    os.makedirs(folder, exist_ok=True)
    for notebook in sorted(candidates):
        versions = list(candidates[notebook].values())
        if len(versions) > 1:
            names = ", ".join(_printable(p) for p, _d in versions[:MAX_LISTED])
            refused[notebook] = (f"{len(versions)} different files could be {notebook}.ipynb ({names}); "
                                 f"upload exactly one {notebook}.ipynb")
            continue
        path, data = versions[0]
        with open(os.path.join(folder, notebook + ".ipynb"), "wb") as fh:
            fh.write(data)
        placed[notebook] = path
    for path, why in unreadable[:MAX_LISTED]:
        notes.append(f"{_printable(path)} was not read: {why}.")
    if others:
        listed = ", ".join(_printable(p) for p in others[:MAX_LISTED])
        more = f" and {len(others) - MAX_LISTED} more" if len(others) > MAX_LISTED else ""
        notes.append(f"Not graded, not a notebook of this assignment: {listed}{more}.")
    return placed, notes, refused


# --------------------------------------------------------------------------- results.json

def _num(x):
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _test_entry(spec, notebook, cell, number, visibility, refused):
    from . import checks
    from .assignment import load_check_modules
    from .feedback import STATUS_WORDS
    load_check_modules()
    gid = cell.get("grade_id", "")
    status = str(cell.get("status", "error"))
    lines = [STATUS_WORDS.get(status, status)]
    if refused:
        lines.append(refused)
    lines += [str(line) for line in cell.get("feedback", [])]
    described = checks.GRADED_CELLS.get(gid)
    if described is not None and described.description:
        lines.append(f"What this test checks: {described.description}.")
    return {"name": f"{notebook}.ipynb: {gid}", "number": number,
            "score": float(cell.get("score", 0.0)), "max_score": float(spec.points(gid)),
            "output": "\n".join(lines), "visibility": visibility}


def results_json(spec, per_notebook, placed, notes, refused, visibility, isolation, seconds):
    """The results.json dict of one graded submission."""
    tests, summary = [], []
    total = 0.0
    for k, nb in enumerate(spec.notebooks, start=1):
        result = per_notebook[nb]
        cells = {c.get("grade_id"): c for c in result.get("cells", [])}
        score = 0.0
        for j, gid in enumerate(spec.grade_ids(nb), start=1):
            cell = cells.get(gid) or {"grade_id": gid, "status": "error", "score": 0.0,
                                      "feedback": ["no verdict was recorded"]}
            entry = _test_entry(spec, nb, cell, f"{k}.{j}", visibility, refused.get(nb))
            score += entry["score"]
            tests.append(entry)
        total += score
        where = f" (graded from {_printable(placed[nb])})" if nb in placed and placed[nb] != nb + ".ipynb" else ""
        summary.append(f"{nb}.ipynb{where}: {_num(score)} / {_num(spec.max_score(nb))}")
        if nb in refused:
            summary.append(f"  Not graded: {refused[nb]}.")
        elif nb not in placed:
            summary.append(f"  Not graded: no {nb}.ipynb was found in your submission; upload the notebook you "
                           f"downloaded, with your code filled in, named {nb}.ipynb.")
        elif result.get("status") == "ungradable":
            summary.append(f"  Not graded: {str(result.get('reason', '')).removeprefix('ungradable: ')}")
        elif result.get("status") == "error":
            summary.append("  The autograder itself failed on this notebook (not your code): submit again, "
                           "and tell your instructor if it happens again.")
        summary += [f"  Note: {n}" for n in result.get("notes", [])[:MAX_LISTED]]
    head = [f"{spec.name}: {_num(total)} / {_num(spec.max_score())}"]
    output = "\n".join(head + summary + notes)
    out = {"score": total, "execution_time": round(seconds), "output": output, "tests": tests,
           "extra_data": {"assignment": spec.name, "isolation": isolation,
                          "graded_files": dict(placed),
                          "notebooks": {nb: per_notebook[nb].get("status") for nb in spec.notebooks}}}
    if visibility != "visible":
        out["visibility"] = visibility
    return out


def _failure_json(reason, visibility="visible"):
    return {"score": 0.0, "output": f"The autograder could not grade this submission: {reason}. Nothing of it "
                                    "was scored; please tell your instructor.", "tests": [],
            **({"visibility": visibility} if visibility != "visible" else {})}


# --------------------------------------------------------------------------- run

def grade(source, submission, workdir, isolation=None, limits=None):
    """(results.json dict, a log line for the instructor) of the submission, graded with the bundle at source."""
    from . import grading
    from .assignment import load as load_assignment
    from .submission import load_source
    t0 = time.monotonic()
    with open(os.path.join(source, CONFIG), encoding="utf-8") as fh:
        config = json.load(fh)
    assignment = config["assignment"]
    visibility = config.get("visibility", "visible")
    spec = check_source(source, assignment)
    key = grading.load_course_key(os.path.join(source, KEY_NAME))
    submitted = os.path.join(workdir, "submitted")
    folder = os.path.join(submitted, STUDENT, assignment)
    placed, notes, refused = find_notebooks(submission, set(spec.notebooks), folder)
    tasks = []
    for nb in spec.notebooks:
        path = os.path.join(folder, nb + ".ipynb")
        src = load_source(grading.source_notebook(source, nb, assignment), nb)
        rng = grading.notebook_rng(key, nb, grading.current_hash(path))
        tasks.append((path, nb, src, rng, STUDENT, assignment, limits, isolation, submitted))
    results = dict(zip(spec.notebooks, grading.grade_learner(tasks)))
    # the grader's own failure may be transient: once more, as `grade` retries it
    again = [t for t in tasks if results[t[1]].get("status") == "error"]
    if again:
        results.update(zip([t[1] for t in again], grading.grade_learner(again)))
    for r in results.values():
        if r.get("grader_traceback"):
            print(f"grader failure on {r['notebook']}:\n{r['grader_traceback']}")
    mode = next((r.get("isolation") for r in results.values() if r.get("isolation")), "") or "not started"
    out = results_json(spec, results, placed, notes, refused, visibility, mode, time.monotonic() - t0)
    log = (f"{assignment}: {_num(out['score'])} / {_num(spec.max_score())}; files {json.dumps(placed)}; "
           f"isolation {mode}; key {config.get('key_fingerprint')}; {time.monotonic() - t0:.1f} s")
    return out, log


def run(source=SOURCE, submission=SUBMISSION, results=RESULTS, isolation=None, limits=None):
    """Grade and write results.json (always, even when the grader fails); return its dict."""
    from .files import atomic_write
    try:
        with tempfile.TemporaryDirectory(prefix="gradescope-") as workdir:
            out, log = grade(source, submission, workdir, isolation=isolation, limits=limits)
        print(log)
    except Exception as exc:  # noqa: BLE001  (whatever failed, Gradescope gets a results.json)
        traceback.print_exc()
        out = _failure_json(f"{type(exc).__name__} in the grader")
    atomic_write(results, json.dumps(out, indent=1) + "\n")
    return out


def main(argv=None):
    """run_autograder's entry point (``python3 -I``): grade /autograder/submission."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    p = argparse.ArgumentParser(prog="run_autograder", description="grade one Gradescope submission")
    p.add_argument("--source", default=SOURCE)
    p.add_argument("--submission", default=SUBMISSION)
    p.add_argument("--results", default=RESULTS)
    args = p.parse_args(argv)
    try:
        from .quickimport import import_jsonschema_without_iri_grammars
        import_jsonschema_without_iri_grammars()
    except ImportError:
        pass
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    print(f"grading {args.submission} with the bundle in {args.source} ({started})")
    run(args.source, args.submission, args.results)
    return 0
