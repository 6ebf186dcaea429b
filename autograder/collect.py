"""Collect submissions into nbgrader's layout: SUBMITTED/<student_id>/<assignment>/<notebook>.ipynb.

``collect(source, submitted_dir, assignment)`` accepts

* a folder already in that layout (``SOURCE/<student>/<assignment>/*.ipynb``,
  ``timestamp.txt`` kept), or one level less (``SOURCE/<student>/*.ipynb``);
* a folder of flat files, or an LMS zip download, whose file names look like
  ``<student_id>_<anything>_<notebook>.ipynb`` (``pattern``: a regular
  expression with the named groups ``student_id`` and ``notebook``; LMS
  re-submission suffixes such as ``-1`` are allowed before ``.ipynb``).

Files are copied, never moved.  An existing file is replaced only by a newer
one (or with ``force=True``); when one source holds several files for the same
student and notebook, the newest wins.  Files that cannot be placed (unknown
notebook, no student id, unsafe names, too large) are reported, not guessed.
"""
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field

from . import checks

DEFAULT_PATTERN = r"^(?P<student_id>[^_/\\]+)_(?:.*_)?(?P<notebook>[^_/\\]+?)(?:-\d+)?\.ipynb$"
MAX_FILE_BYTES = 50 << 20
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class CollectError(Exception):
    """Bad input for collect; the message says how to fix it."""


@dataclass
class CollectReport:
    copied: list = field(default_factory=list)      # destination paths written
    unchanged: list = field(default_factory=list)   # destination already identical
    kept: list = field(default_factory=list)        # destination newer: left alone (use force)
    unplaced: list = field(default_factory=list)    # "name: why"
    superseded: list = field(default_factory=list)  # older duplicates in the source

    def summary(self):
        return (f"{len(self.copied)} copied, {len(self.unchanged)} unchanged, {len(self.kept)} kept "
                f"(destination newer), {len(self.superseded)} superseded, {len(self.unplaced)} not placed")


@dataclass
class _Item:
    name: str           # as shown in the report
    student: str
    notebook: str
    mtime: float
    read: object        # () -> bytes
    size: int
    extra: dict = field(default_factory=dict)  # other files to copy along (timestamp.txt)


def _notebooks(assignment):
    if assignment != checks.ASSIGNMENT:
        raise CollectError(f"unknown assignment '{assignment}': this course has '{checks.ASSIGNMENT}'")
    return set(checks.NOTEBOOKS)


def _classify(name, student, notebook, known, report):
    if not student or not _SAFE_ID.match(student):
        report.unplaced.append(f"{name}: no usable student id")
        return False
    if notebook not in known:
        report.unplaced.append(f"{name}: '{notebook}' is not a notebook of the assignment "
                               f"({', '.join(sorted(known))})")
        return False
    return True


def _from_zip(path, regex, known, report):
    items = []
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CollectError(f"{path}: not a readable zip file ({exc})")
    for info in zf.infolist():
        if info.is_dir():
            continue
        base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
        if not base.endswith(".ipynb"):
            if base and not base.startswith("."):
                report.unplaced.append(f"{info.filename}: not a notebook")
            continue
        m = regex.match(base)
        if not m:
            report.unplaced.append(f"{info.filename}: name does not match the pattern")
            continue
        if info.file_size > MAX_FILE_BYTES:
            report.unplaced.append(f"{info.filename}: larger than {MAX_FILE_BYTES >> 20} MiB")
            continue
        student, nb = m.group("student_id"), m.group("notebook")
        if _classify(info.filename, student, nb, known, report):
            import time
            mtime = time.mktime(info.date_time + (0, 0, -1))
            items.append(_Item(info.filename, student, nb, mtime,
                               (lambda i=info: zf.read(i)), info.file_size))
    return items


def _file_item(name, path, student, nb):
    st = os.stat(path)

    def read(p=path):
        with open(p, "rb") as fh:
            return fh.read()
    return _Item(name, student, nb, st.st_mtime, read, st.st_size)


def _from_folder(source, regex, known, assignment, report):
    items = []
    for entry in sorted(os.listdir(source)):
        full = os.path.join(source, entry)
        if entry.startswith("."):
            continue
        if os.path.isdir(full):
            inner = os.path.join(full, assignment)
            folder = inner if os.path.isdir(inner) else full
            for f in sorted(os.listdir(folder)):
                p = os.path.join(folder, f)
                if not f.endswith(".ipynb") or not os.path.isfile(p):
                    continue
                nb = f[:-len(".ipynb")]
                rel = os.path.relpath(p, source)
                if _classify(rel, entry, nb, known, report):
                    item = _file_item(rel, p, entry, nb)
                    ts = os.path.join(folder, "timestamp.txt")
                    if os.path.isfile(ts):
                        item.extra["timestamp.txt"] = ts
                    items.append(item)
        elif entry.endswith(".ipynb"):
            m = regex.match(entry)
            if not m:
                report.unplaced.append(f"{entry}: name does not match the pattern")
                continue
            if _classify(entry, m.group("student_id"), m.group("notebook"), known, report):
                items.append(_file_item(entry, full, m.group("student_id"), m.group("notebook")))
        elif entry.endswith(".zip"):
            items += _from_zip(full, regex, known, report)
        else:
            report.unplaced.append(f"{entry}: not a notebook, a zip or a student folder")
    return items


def collect(source, submitted_dir, assignment=checks.ASSIGNMENT, pattern=DEFAULT_PATTERN, force=False):
    """Copy the submissions found in source (folder or zip) into submitted_dir; return a CollectReport."""
    known = _notebooks(assignment)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise CollectError(f"bad --pattern: {exc}")
    if not {"student_id", "notebook"} <= set(regex.groupindex):
        raise CollectError("--pattern needs the named groups (?P<student_id>...) and (?P<notebook>...)")
    report = CollectReport()
    if os.path.isfile(source) and source.endswith(".zip"):
        items = _from_zip(source, regex, known, report)
    elif os.path.isdir(source):
        items = _from_folder(source, regex, known, assignment, report)
    else:
        raise CollectError(f"{source}: not a folder or a .zip file")

    newest = {}
    for item in items:
        key = (item.student, item.notebook)
        if key in newest and newest[key].mtime >= item.mtime:
            report.superseded.append(item.name)
            continue
        if key in newest:
            report.superseded.append(newest[key].name)
        newest[key] = item

    for (student, nb), item in sorted(newest.items()):
        folder = os.path.join(submitted_dir, student, assignment)
        dest = os.path.join(folder, nb + ".ipynb")
        data = item.read()
        if os.path.exists(dest):
            with open(dest, "rb") as fh:
                if fh.read() == data:
                    report.unchanged.append(dest)
                    continue
            if not force and os.path.getmtime(dest) >= item.mtime:
                report.kept.append(dest)
                continue
        os.makedirs(folder, exist_ok=True)
        tmp = dest + ".collect-tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.utime(tmp, (item.mtime, item.mtime))
        os.replace(tmp, dest)
        for name, src in item.extra.items():
            shutil.copy2(src, os.path.join(folder, name))
        report.copied.append(dest)
    return report
