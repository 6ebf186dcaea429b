"""The Gradescope autograder bundle: built by ``python -m autograder gradescope``, run as Gradescope runs it.

The bundle is unzipped into a scratch ``/autograder`` inside a bubblewrap root that holds the
system read-only and the course's Python environment (first on PATH as ``python3``, standing in
for what setup.sh installs), but no checkout of the repository: ``run_autograder`` must grade
with the bundle's own code.  The submissions are generated (tests/classgen): a correct one, a
faulty one, and the odd uploads learners make.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from classgen import build as B
import lms_downloads as L

ASSIGNMENT = "cnn_layers"
RUN_TIMEOUT = 600
DOCKER_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
               "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP")
# about 90 s on two cores: each case starts the bundle's grader in a fresh interpreter
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")]


# --------------------------------------------------------------------------- helpers

def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOGRADER_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(zip path, key file) of a bundle built by the CLI with a fresh course key."""
    folder = tmp_path_factory.mktemp("bundle")
    key = folder / "course.key"
    out = folder / "autograder.zip"
    proc = subprocess.run([sys.executable, "-m", "autograder", "gradescope", "--out", str(out),
                           "--course-key", str(key)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "fingerprint" in proc.stdout
    return out, key


def unzip(zip_path, dest):
    """Extract as unzip does on Linux: the Unix modes stored in the zip are kept."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = Path(dest, info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def gradescope_folder(tmp_path, bundle_zip):
    """A scratch /autograder as Gradescope lays it out: source/ (the zip), run_autograder, results/, submission/."""
    ag = tmp_path / "autograder"
    unzip(bundle_zip, ag / "source")
    shutil.copy2(ag / "source" / "run_autograder", ag / "run_autograder")
    (ag / "results").mkdir()
    (ag / "submission").mkdir()
    (ag / "submission_metadata.json").write_text(json.dumps({
        "id": 123456, "created_at": "2026-03-01T14:22:32.365935-07:00", "submission_method": "upload",
        "assignment": {"title": "CNN layers", "total_points": "47.0"},
        "users": [{"email": "amy@example.edu", "id": 1234, "name": "Amy Ng"}], "previous_submissions": []}))
    return ag


def write_student(student, submission):
    """The student's notebooks, as the learner uploads them: convolution.ipynb and pooling.ipynb."""
    for nb in B.NOTEBOOKS:
        content = student.notebook_json(nb)
        if content is not None:
            (Path(submission) / f"{nb}.ipynb").write_text(B.dump_notebook(content), encoding="utf-8")


def checkouts():
    """The folders that hold a checkout of this repository that Python could import the grader from."""
    found = {str(REPO)}
    proc = subprocess.run([sys.executable, "-I", "-c",
                           "import importlib.util as u; s = u.find_spec('autograder'); print(s.origin if s else '')"],
                          cwd="/", capture_output=True, text=True)
    origin = proc.stdout.strip()
    if origin:
        found.add(os.path.dirname(os.path.dirname(os.path.realpath(origin))))
    return sorted(found)


def root_argv(ag, nested_namespaces=True):
    """bubblewrap argv of a root with the system read-only, /autograder = ag, the course's
    environment first on PATH, and no checkout of the repository.

    ``nested_namespaces=False`` denies the grader's own bubblewrap what it needs (a new user
    namespace, and mounting /proc), as an unprivileged container does.
    """
    venv = os.path.realpath(sys.prefix)
    argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
    if os.getuid() != 0:
        argv.append("--unshare-user")
    if not nested_namespaces:     # the capabilities a Docker container keeps by default: no CAP_SYS_ADMIN
        argv += ["--cap-drop", "ALL"]
        for cap in DOCKER_CAPS:
            argv += ["--cap-add", f"CAP_{cap}"]
    for entry in sorted(os.listdir("/")):
        top = "/" + entry
        if entry in ("proc", "dev", "tmp", "sys", "autograder") or not os.path.isdir(top):
            continue
        argv += ["--symlink", os.readlink(top), top] if os.path.islink(top) else ["--ro-bind", top, top]
    argv += ["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    # the checkouts hidden, then the environment shown again if it lies inside one (or in /tmp,
    # where a fresh clone may be)
    for folder in checkouts():
        argv += ["--tmpfs", folder]
    argv += ["--ro-bind", venv, venv]
    argv += ["--bind", str(ag), "/autograder",
             "--chdir", "/autograder", "--clearenv",
             "--setenv", "PATH", f"{venv}/bin:/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/root",
             "--setenv", "LANG", "C.UTF-8"]
    return argv


def run_autograder(ag, nested_namespaces=True, command=("/autograder/run_autograder",)):
    proc = subprocess.run(root_argv(ag, nested_namespaces) + list(command), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    results = ag / "results" / "results.json"
    return proc, (json.loads(results.read_text()) if results.exists() else None)


def run_bundle_code(source, submission, results):
    """run_autograder's Python entry point, outside a root: the bundle's code, from ``source`` only."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from autograder.gradescope import main; "
            "sys.exit(main(sys.argv[2:]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOGRADER_"))}
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(source), "--source", str(source),
                           "--submission", str(submission), "--results", str(results)],
                          cwd=str(Path(results).parent), env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    return proc, (json.loads(Path(results).read_text()) if Path(results).exists() else None)


def by_name(results):
    return {t["name"]: t for t in results["tests"]}


def expected_by_name(student):
    return {f"{nb}.ipynb: {gid}": score for nb, cells in student.expected().items() for gid, score in cells.items()}


def assert_gradescope_shape(results):
    assert set(results) >= {"score", "tests", "output"}
    assert len(results["tests"]) == sum(len(c) for c in B.POINTS.values())
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility"}
        assert test["visibility"] in ("visible", "after_due_date", "after_published", "hidden")
        assert test["output"].strip()
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
    assert sum(t["max_score"] for t in results["tests"]) == B.MAX_TOTAL


# --------------------------------------------------------------------------- the bundle

def _solution_lines():
    """Lines of the instructor's solutions (inside BEGIN/END SOLUTION), long enough to be telling."""
    lines = set()
    for path in sorted((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")):
        for cell in nbformat.read(str(path), as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                if "BEGIN SOLUTION" in line:
                    inside = True
                elif "END SOLUTION" in line:
                    inside = False
                elif inside and len(line.strip()) >= 30:
                    lines.add(line.strip())
    return lines


def test_bundle_follows_gradescope_layout_and_holds_no_solution(bundle):
    zip_path, key_file = bundle
    assert stat.S_IMODE(os.stat(zip_path).st_mode) == 0o600          # it holds the course key
    with zipfile.ZipFile(zip_path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        texts = {name: zf.read(name).decode("utf-8") for name in infos}
    modes = {name: (i.external_attr >> 16) & 0o777 for name, i in infos.items()}
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755        # at the zip's root, executable
    assert texts["run_autograder"].startswith("#!") and texts["setup.sh"].startswith("#!")
    assert "bubblewrap" in texts["setup.sh"] and "requirements.txt" in texts["setup.sh"]
    for script in ("setup.sh", "run_autograder"):          # at least valid bash (setup.sh runs on Gradescope only)
        assert subprocess.run(["bash", "-n"], input=texts[script], text=True).returncode == 0
    assert texts["requirements.txt"] == (REPO / "requirements.txt").read_text()
    # the course key: in the bundle (0600) and nowhere else in it
    key_hex = key_file.read_text().strip()
    assert modes["course.key"] == 0o600 and texts["course.key"].strip() == key_hex
    assert [n for n, t in texts.items() if key_hex in t] == ["course.key"]
    config = json.loads(texts["gradescope.json"])
    assert config["assignment"] == ASSIGNMENT and config["max_score"] == B.MAX_TOTAL
    assert key_hex not in texts["gradescope.json"]
    # the package and this assignment's checks only; the released notebooks, never solution text
    assert "autograder/checks.py" in texts and "autograder/gradescope.py" in texts
    assert [n for n in texts if n.startswith("autograder/assignments/")] == [
        "autograder/assignments/__init__.py", f"autograder/assignments/{ASSIGNMENT}.py"]
    assert sorted(n for n in texts if n.endswith(".ipynb")) == [f"solutions/{ASSIGNMENT}/{nb}.ipynb"
                                                               for nb in sorted(B.NOTEBOOKS)]
    for nb in B.NOTEBOOKS:
        released = (REPO / "exercises" / ASSIGNMENT / f"{nb}.ipynb").read_text()
        assert texts[f"solutions/{ASSIGNMENT}/{nb}.ipynb"] == released
    # the solution notebooks' text: nowhere outside the package (whose reference layers the checks
    # compare with, as on the grading machine), except what the release shows learners anyway
    public = "".join((REPO / "exercises" / ASSIGNMENT / f"{nb}.ipynb").read_text() for nb in B.NOTEBOOKS)
    solution = [line for line in _solution_lines() if line not in public]
    assert solution, "the solutions have BEGIN SOLUTION regions"
    leaked = [(name, line) for name, text in texts.items() if not name.startswith("autograder/")
              for line in solution if line in text]
    assert not leaked
    assert not [n for n, t in texts.items() if "BEGIN SOLUTION" in t and not n.startswith("autograder/")]
    assert not [n for n in texts if "__pycache__" in n or n.endswith(".pyc")]


def test_the_default_bundle_path_is_ignored_by_git():
    proc = subprocess.run(["git", "check-ignore", "-q", "autograder.zip"], cwd=REPO)
    assert proc.returncode == 0


def test_a_stale_release_is_refused(tmp_path):
    """The bundle grades with the released notebooks' cells: a release behind the source stops the build."""
    root = tmp_path / "course"
    shutil.copytree(REPO / "solutions", root / "solutions")
    shutil.copytree(REPO / "exercises", root / "exercises")
    shutil.copy2(REPO / "requirements.txt", root / "requirements.txt")
    nb_path = root / "exercises" / ASSIGNMENT / "pooling.ipynb"
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells[0].source += "\nAn edit made by hand."
    nbformat.write(nb, str(nb_path))
    proc = subprocess.run([sys.executable, "-m", "autograder", "--root", str(root), "gradescope", "--out",
                           str(tmp_path / "a.zip"), "--course-key", str(tmp_path / "k.key")],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 1
    assert "stale" in proc.stderr and "release" in proc.stderr
    assert not (tmp_path / "a.zip").exists()


# --------------------------------------------------------------------------- run as Gradescope runs it

def test_run_autograder_grades_with_the_bundle_alone(tmp_path, bundle):
    """A correct submission scores 47/47 and a faulty one exactly its cells, in a root without the checkout."""
    zip_path, _key = bundle
    correct = B.all_correct("amy", style="loops")
    faulty = B.with_mistake("bo", "dx_kernel_not_flipped")
    for student, expect_total in ((correct, 47.0), (faulty, 34.0)):
        ag = gradescope_folder(tmp_path / student.student_id, zip_path)
        write_student(student, ag / "submission")
        proc, results = run_autograder(ag)
        assert results is not None, proc.stdout + proc.stderr
        assert_gradescope_shape(results)
        assert results["score"] == expect_total == student.total()
        assert {n: t["score"] for n, t in by_name(results).items()} == expected_by_name(student)
        assert results["extra_data"]["isolation"] == "bubblewrap"
        assert f"{expect_total:g} / 47" in results["output"]
        assert "with the bundle in /autograder/source" in proc.stdout
    failed = by_name(results)["convolution.ipynb: conv_backward_basic"]
    assert failed["score"] == 0 and failed["max_score"] == 2 and failed["output"].startswith("failed")
    # the root hides every checkout: nothing but the bundle could have graded
    proc, _ = run_autograder(ag, command=("python3", "-I", "-c", "import autograder"))
    assert proc.returncode == 1 and "No module named 'autograder'" in proc.stderr
    proc, _ = run_autograder(ag, command=("python3", "-c", f"import os; print(sorted(os.listdir({str(REPO)!r})))"))
    # the environment standing in for setup.sh's is shown again at its own path, which on
    # a fresh clone lies inside the checkout (.venv): that, and nothing else, may be there
    venv = os.path.realpath(sys.prefix)
    shown = [os.path.relpath(venv, REPO).split(os.sep)[0]] if venv.startswith(str(REPO) + os.sep) else []
    assert proc.stdout.strip() == repr(shown)


# right only where the learner's process cannot read the bundle (PermissionError); wrong where it can
SNOOPING_ZERO_PAD = '''\
def zero_pad(x, pad):
    for secret in ("/autograder/source/course.key", "/autograder/source/autograder/checks.py",
                   "/autograder/source/autograder/assignments/cnn_layers.py"):
        try:
            open(secret).read()
            return x
        except PermissionError:
            pass
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
'''


@pytest.mark.skipif(os.getuid() != 0, reason="imitating a container's capabilities needs root")
def test_run_autograder_where_the_container_denies_nested_namespaces(tmp_path, bundle):
    """In a container with Docker's default capabilities (no CAP_SYS_ADMIN) bubblewrap cannot make its
    namespaces: the grader falls back to resource limits and an unprivileged user, says so to the
    instructor (run_autograder's output, which learners do not see), and grades the same."""
    zip_path, _key = bundle
    ag = gradescope_folder(tmp_path, zip_path)
    snooper = B.all_correct("cy", style="vectorized")
    snooper.sources["zero_pad"] = SNOOPING_ZERO_PAD
    write_student(snooper, ag / "submission")
    proc, results = run_autograder(ag, nested_namespaces=False)
    assert results is not None, proc.stdout + proc.stderr
    assert "grading WITHOUT filesystem isolation" in proc.stderr
    assert results["extra_data"]["isolation"] == "rlimits-only"
    # 47: zero_pad is right only because reading the key and the checks was refused
    assert results["score"] == 47.0, results["output"]
    # run_autograder made the bundle unreadable to the learner's unprivileged user
    assert stat.S_IMODE(os.stat(ag / "source" / "course.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ag / "source").st_mode) & 0o077 == 0


def test_results_json_even_without_the_course_environment(tmp_path, bundle):
    """setup.sh's environment missing (a python3 without NumPy first on PATH): a results.json that says so."""
    zip_path, _key = bundle
    ag = gradescope_folder(tmp_path, zip_path)
    write_student(B.all_correct("dee"), ag / "submission")
    argv = root_argv(ag)
    argv[argv.index("PATH") + 1] = "/usr/bin:/bin"          # the system's python3 only
    proc = subprocess.run(argv + ["/autograder/run_autograder"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    results = json.loads((ag / "results" / "results.json").read_text())
    assert results["score"] == 0.0 and "could not" in results["output"]
    assert proc.returncode == 0


# --------------------------------------------------------------------------- what learners upload

def _correct_notebooks():
    student = B.all_correct("eve", style="im2col")
    return {nb: B.dump_notebook(student.notebook_json(nb)) for nb in B.NOTEBOOKS}


def _upload(kind, submission, nbs):
    if kind == "browser names":
        (submission / "convolution (1).ipynb").write_text(nbs["convolution"])
        (submission / "Pooling.ipynb").write_text(nbs["pooling"])
    elif kind == "a zip":
        (submission / "hw.zip").write_bytes(L.zip_bytes({"cnn_layers/convolution.ipynb": nbs["convolution"],
                                                     "cnn_layers/pooling-1.ipynb": nbs["pooling"],
                                                     "__MACOSX/cnn_layers/._pooling.ipynb": "junk"}))
    elif kind == "a zip and its contents":
        (submission / "hw.zip").write_bytes(L.zip_bytes({"convolution.ipynb": nbs["convolution"],
                                                     "pooling.ipynb": nbs["pooling"]}))
        (submission / "convolution.ipynb").write_text(nbs["convolution"])
        (submission / "pooling.ipynb").write_text(nbs["pooling"])
    elif kind == "one notebook":
        (submission / "convolution.ipynb").write_text(nbs["convolution"])
    elif kind == "nothing usable":
        (submission / "homework.ipynb").write_text(nbs["convolution"])
        (submission / "notes.txt").write_text("see attached")
        (submission / "broken.zip").write_bytes(b"PK\x03\x04 not a zip")
    elif kind == "nothing":
        pass
    elif kind == "two versions":
        (submission / "convolution.ipynb").write_text(nbs["convolution"])
        (submission / "convolution (2).ipynb").write_text(nbs["convolution"].replace("im2col", "im2col ", 1)
                                                          + "\n")
        (submission / "pooling.ipynb").write_text(nbs["pooling"])
    elif kind == "a link to the key":
        os.symlink("/autograder/source/course.key", submission / "convolution.ipynb")
        os.symlink(str(submission.parent / "source" / "course.key"), submission / "pooling.ipynb")
    elif kind == "control characters":
        (submission / "convolution\x1b[2J\n.ipynb").write_text(nbs["convolution"])
        (submission / "pooling.ipynb").write_text(nbs["pooling"])


CONV, POOL = (float(sum(B.POINTS[nb].values())) for nb in ("convolution", "pooling"))   # 29, 18
ODD = {   # kind: (score, words the output must hold)
    "browser names": (47.0, ["graded from 'convolution (1).ipynb'", "graded from 'Pooling.ipynb'"]),
    "a zip": (47.0, ["graded from 'hw.zip/cnn_layers/convolution.ipynb'"]),
    "a zip and its contents": (47.0, ["convolution.ipynb: 29 / 29", "pooling.ipynb: 18 / 18"]),
    "one notebook": (CONV, ["no pooling.ipynb was found", "named pooling.ipynb"]),
    "nothing usable": (0.0, ["no convolution.ipynb was found", "'homework.ipynb'", "'notes.txt'",
                             "'broken.zip' is not a readable zip file"]),
    "nothing": (0.0, ["no convolution.ipynb was found", "no pooling.ipynb was found"]),
    "two versions": (POOL, ["2 different files could be convolution.ipynb", "'convolution (2).ipynb'",
                            "upload exactly one convolution.ipynb"]),
    "a link to the key": (0.0, ["'convolution.ipynb' was not read: only regular files are read, and it is a "
                               "symbolic link", "'pooling.ipynb' was not read"]),
    "control characters": (POOL, ["not a notebook of this assignment: 'convolution?[2J .ipynb'"]),
}


@pytest.mark.parametrize("kind", sorted(ODD))
def test_what_learners_upload_gets_a_clear_results_json(tmp_path, bundle, kind):
    zip_path, key_file = bundle
    ag = gradescope_folder(tmp_path, zip_path)
    _upload(kind, ag / "submission", _correct_notebooks())
    proc, results = run_bundle_code(ag / "source", ag / "submission", ag / "results" / "results.json")
    assert results is not None, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert_gradescope_shape(results)
    score, words = ODD[kind]
    assert results["score"] == score, results["output"]
    for word in words:
        assert word in results["output"], results["output"]
    text = json.dumps(results)
    assert key_file.read_text().strip() not in text and "\x1b" not in text
    assert "Traceback" not in text


def test_a_broken_bundle_still_writes_results_json(tmp_path, bundle):
    """The grader failing on its own bundle (here a key others may read) gives a results.json, never a crash."""
    zip_path, key_file = bundle
    ag = gradescope_folder(tmp_path, zip_path)
    (ag / "source" / "course.key").chmod(0o644)
    (ag / "submission" / "convolution.ipynb").write_text(_correct_notebooks()["convolution"])
    proc, results = run_bundle_code(ag / "source", ag / "submission", ag / "results" / "results.json")
    assert proc.returncode == 0
    assert results["score"] == 0.0 and results["tests"] == []
    assert "could not grade this submission" in results["output"] and "GradingError" in results["output"]
    assert "chmod 600" in proc.stderr                    # the instructor's log (stdout) says how to fix it
    assert key_file.read_text().strip() not in json.dumps(results)


def test_visibility_chosen_at_build_reaches_every_test(tmp_path):
    out = tmp_path / "hidden-until-due.zip"
    proc = subprocess.run([sys.executable, "-m", "autograder", "gradescope", "--out", str(out), "--course-key",
                           str(tmp_path / "k.key"), "--visibility", "after_due_date"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    ag = gradescope_folder(tmp_path, out)
    (ag / "submission" / "pooling.ipynb").write_text(_correct_notebooks()["pooling"])
    proc, results = run_bundle_code(ag / "source", ag / "submission", ag / "results" / "results.json")
    assert results["visibility"] == "after_due_date"
    assert {t["visibility"] for t in results["tests"]} == {"after_due_date"}
    assert results["score"] == POOL
