"""Shared fixtures: one synthetic class graded once through the CLI.

``graded_class`` builds the standard class (every correct style, every
mistake, untouched and missing notebooks) plus every hostile case
(tests/classgen), grades it with ``python -m autograder grade`` in a
subprocess, and is shared by the end-to-end and adversarial tests.
"""
import csv
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from classgen import build as B  # noqa: E402
from classgen import hostile as H  # noqa: E402

GRADE_TIMEOUT_S = 1800


def run_grade(submitted, out, *extra, jobs=2, timeout=GRADE_TIMEOUT_S):
    """``python -m autograder grade SUBMITTED --out OUT ...`` from the repository root."""
    cmd = [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out),
           "--jobs", str(jobs), "--no-progress", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def grade_command(submitted, out, *extra, jobs=2):
    return [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out),
            "--jobs", str(jobs), "--no-progress", *extra]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def grades_by_key(out):
    """{(student, notebook, grade_id): row} of OUT/grades.csv; fails on a duplicate key."""
    rows = read_csv(Path(out) / "grades.csv")
    keyed = {}
    for row in rows:
        key = (row["student_id"], row["notebook"], row["grade_id"])
        assert key not in keyed, f"grades.csv has {key} twice"
        keyed[key] = row
    return keyed


def tree_digest(folder):
    """{relative path: sha256} of every file under folder."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class GradedClass:
    root: Path
    submitted: Path
    out: Path
    students: list
    manifest: dict
    proc: subprocess.CompletedProcess
    submitted_before: dict

    def expected(self, student, notebook, grade_id):
        return self.manifest[student]["expected"][notebook][grade_id]


TAMPER_MARKS = (b"FORGED_BY_A_LEARNER", b"EVERYONE,cnn_layers,999", b'"score": 999')
TAMPER_TARGETS = {"gradebook.db", "grades.csv", "totals.csv", "run.json"}


def tampered_files(*roots):
    """Files the hostile cases would have forged (tests/classgen/hostile.py, _tamper)."""
    skip = {".venv", ".git", "node_modules", "_build"}
    hits = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip]
            for name in files:
                _check_tampered(Path(folder) / name, hits)
    return hits


def _check_tampered(p, hits):
    if p.is_file():
        if "FORGED" in p.name:
            hits.append(p)
        elif p.name in TAMPER_TARGETS or (p.suffix == ".json" and "results" in p.parts):
            with open(p, "rb") as fh:
                head = fh.read(4096)
            if any(mark in head for mark in TAMPER_MARKS):
                hits.append(p)


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    students = B.standard_class(50) + H.hostile_class()
    submitted = root / "submitted"
    manifest = B.write_class(students, submitted)
    B.write_manifest(manifest, root / "manifest.json")
    before = tree_digest(submitted)
    proc = run_grade(submitted, root / "out")
    return GradedClass(root, submitted, root / "out", students, manifest, proc, before)
