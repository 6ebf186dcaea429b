"""Collect submissions into nbgrader's layout: SUBMITTED/<student_id>/<assignment>/<notebook>.ipynb.

``collect(source, submitted_dir, assignment, lms=None, pattern=None)`` reads a folder or a
zip (an LMS bulk download, see ``autograder.lms``; only the zip it is given is opened, never
a zip inside the download, which is a learner's upload): the layout is the ``lms`` preset
(canvas, moodle, gradescope, blackboard, nbgrader), the ``pattern`` (a regular
expression with the groups ``student_id`` and ``notebook``, searched in the whole path
inside the zip or folder), or detected: the preset that recognises the most notebooks'
paths (then the one that places the most).
File names are matched to the assignment's notebooks ignoring case and the suffixes
browsers and LMSs add (``Convolution (1).ipynb``, ``convolution-1.ipynb``).

Next to each learner's notebooks collect writes ``collect.json`` (``MANIFEST``): the
LMS, the learner's LMS user id and name, the LMS's late marker, the submission time and
the original file names; and, when the LMS gives a submission time, nbgrader's
``timestamp.txt``.  The grader uses them for late penalties, the gradebook and the
LMS grade files.

Files are copied, never moved.  Nothing is guessed: a file that cannot be placed is
reported and makes the command exit 1, namely a file whose name is not a notebook of
the assignment, two files that would land on the same student and notebook, two
learners (two LMS user ids) who would get the same student id, a folder that does
not hold the assignment (``hw3/`` instead of ``cnn_layers/``), a file the LMS's own names
and metadata do not attribute safely (``lms.Found.problem``), a zip inside the download
(a learner's upload is not opened), a file that cannot be read (a bad CRC in the zip), and
a symbolic link, FIFO, device or socket (only regular files are read).  Such a file is
that learner's problem alone: everyone else is collected.  An existing notebook is
replaced only when the new file differs; ``--force`` is not needed for a resubmission.
"""
import datetime as _dt
import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field

from . import checks, lms
from .assignment import registered, unknown_message
from .nbgrader_config import ASSIGNMENT
from .safeio import UnsafeFile, describe_mode, read_regular
from .submission import MAX_FILE_BYTES   # the grader reads notebooks up to this size (outputs skipped)

MAX_SIDE_FILE_BYTES = 1 << 20
MANIFEST = "collect.json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
IGNORED = re.compile(r"(^|/)(__MACOSX|\.ipynb_checkpoints)(/|$)|(^|/)\.[^/]*$")


class CollectError(Exception):
    """Bad input for collect; the message says how to fix it."""


@dataclass
class CollectReport:
    lms: str = ""
    copied: list = field(default_factory=list)      # destination paths written
    unchanged: list = field(default_factory=list)   # destination already identical
    unplaced: list = field(default_factory=list)    # "name: why"
    ignored: list = field(default_factory=list)     # side files of the LMS (metadata), not submissions

    def summary(self):
        return (f"{self.lms}: {len(self.copied)} copied, {len(self.unchanged)} unchanged, "
                f"{len(self.unplaced)} not placed")


@dataclass
class Entry:
    path: str
    size: int
    read: object        # () -> bytes
    problem: str = ""   # why it cannot be read (link, FIFO, too large)


@dataclass
class _Item:
    entry: Entry
    found: lms.Found
    student: str
    notebook: str


_describe = describe_mode


def _read_regular(path, limit):
    """Bytes of a regular file, never through a link, at most limit (OSError otherwise)."""
    try:
        return read_regular(path, limit)
    except UnsafeFile as exc:
        raise OSError(f"{path}: {exc}") from None


def folder_entries(source):
    entries = []
    for folder, dirs, files in os.walk(source, followlinks=False):
        for name in sorted(dirs + files):
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, source).replace(os.sep, "/")
            info = os.lstat(full)
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                entries.append(Entry(rel, 0, None, f"{_describe(info.st_mode)}; collect copies regular files "
                                                    "only: replace it by the file itself"))
                continue
            entries.append(Entry(rel, info.st_size, lambda p=full: _read_regular(p, MAX_FILE_BYTES)))
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
    return entries


def zip_entries(path):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CollectError(f"{path}: not a readable zip file ({exc}); download it from the LMS again")
    entries = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = info.filename.replace("\\", "/")
        mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix mode bits, when a Unix zip
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            entries.append(Entry(name, 0, None, f"{_describe(mode)} inside the zip; collect copies regular "
                                                 "files only"))
            continue
        entries.append(Entry(name, info.file_size, lambda i=info: _zip_read(zf, i)))
    return entries


def _zip_read(zf, info):
    """A member's bytes; OSError when they cannot be had (bad CRC, cut short, encrypted, unknown compression)."""
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise OSError(f"the zip member cannot be read ({type(exc).__name__}: {exc}); download it from the LMS "
                      "again") from None


def _entries(source):
    if os.path.isdir(source):
        return folder_entries(source)   # a zip in it is a learner's upload: never opened
    if os.path.isfile(source) and zipfile.is_zipfile(source):
        return zip_entries(source)
    if os.path.lexists(source) and not os.path.isdir(source) and not os.path.isfile(source):
        raise CollectError(f"{source} is {_describe(os.lstat(source).st_mode)}; pass a folder or a .zip file")
    if os.path.isfile(source):
        raise CollectError(f"{source}: not a zip file; pass the LMS's zip download or a folder of submissions")
    raise CollectError(f"{source} does not exist; pass the LMS's zip download or a folder of submissions "
                       "(check the path, e.g. with: ls -l " + repr(source) + ")")


def _side_files(entries):
    """{path: read()} of the files a preset may read as the LMS's metadata (read() raises OSError
    for one larger than lms.MAX_METADATA_BYTES or unreadable)."""
    def reader(entry):
        def read():
            if entry.size > lms.MAX_METADATA_BYTES:
                raise OSError(f"larger than {lms.MAX_METADATA_BYTES >> 20} MiB")
            data = entry.read()
            if len(data) > lms.MAX_METADATA_BYTES:
                raise OSError(f"larger than {lms.MAX_METADATA_BYTES >> 20} MiB")
            return data
        return read
    return {e.path: reader(e) for e in entries if e.read is not None and not e.path.lower().endswith(".ipynb")}


@dataclass
class _Outcome:
    """What one preset makes of a download."""
    items: list = field(default_factory=list)
    unplaced: list = field(default_factory=list)
    ignored: list = field(default_factory=list)   # side files (not notebooks)
    recognised: int = 0   # notebooks whose path is this layout's (placed or not)

    def rank(self):
        """Detection picks the highest: every file of a download has its LMS's prefix or folder, so
        the LMS recognises all of them, and a learner whose uploads are named for another layout
        cannot outnumber it; then the most placed."""
        return self.recognised, len(self.items)


def _match_all(preset, entries, known, assignment, ids):
    """The _Outcome of entries under one preset."""
    preset.prepare(_side_files(entries))
    out = _Outcome()
    items, unplaced, ignored = out.items, out.unplaced, out.ignored
    for entry in entries:
        if IGNORED.search(entry.path):
            continue
        if entry.problem:
            unplaced.append(f"{entry.path}: {entry.problem}")
            continue
        found = preset.match(entry.path)
        if entry.path.lower().endswith(".zip"):
            who = f" (from {found.student_key or found.lms_user_id})" if found and not found.problem else ""
            unplaced.append(f"{entry.path}: a zip file inside the download{who}; collect opens only the download it "
                            "is given, never a learner's upload: ask the learner for the notebook itself, or copy "
                            f"it by hand to <student id>/{assignment}/ (if this zip is an LMS download, collect it "
                            "on its own)")
            continue
        is_notebook = entry.path.lower().endswith(".ipynb")
        if not is_notebook:
            ignored.append(entry.path)
            continue
        if found is None:
            unplaced.append(f"{entry.path}: the path does not match the {preset.name} layout "
                            f"({preset.description})")
            continue
        out.recognised += 1
        if found.problem:
            unplaced.append(f"{entry.path}: {found.problem}")
            continue
        folder = found.extra.get("folder")
        if isinstance(preset, lms.NbgraderLayout) and folder is not None and folder != assignment:
            unplaced.append(f"{entry.path}: the folder '{folder}' is not the assignment '{assignment}' "
                            f"(nbgrader's layout: <student id>/{assignment}/<notebook>.ipynb); rename the folder "
                            f"or collect with --assignment {folder}")
            continue
        notebook = lms.notebook_name(found.file, known)
        if notebook is None:
            unplaced.append(f"{entry.path}: '{found.file}' is not a notebook of '{assignment}' "
                            f"({', '.join(n + '.ipynb' for n in sorted(known))})")
            continue
        student = found.lms_user_id if ids == "lms" and found.lms_user_id else found.student_key
        if not student or not _SAFE_ID.match(student):
            unplaced.append(f"{entry.path}: no usable student id ({student!r}: letters, digits and ._@+- only)")
            continue
        if entry.size > MAX_FILE_BYTES:
            unplaced.append(f"{entry.path}: larger than {MAX_FILE_BYTES >> 20} MiB")
            continue
        items.append(_Item(entry, found, student, notebook))
    return out


def _choose(entries, known, assignment, lms_name, pattern, ids):
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise CollectError(f"bad --pattern {pattern!r}: {exc}")
        if not {"student_id", "notebook"} <= set(regex.groupindex):
            raise CollectError("--pattern needs the named groups (?P<student_id>...) and (?P<notebook>...), e.g. "
                               r"'(?P<student_id>[^_/]+)_(?P<notebook>[^_/]+)\.ipynb$'")
        preset = lms.Pattern(regex)
        return preset, _match_all(preset, entries, known, assignment, ids)
    if lms_name is not None:
        if lms_name not in lms.PRESETS:
            raise CollectError(f"unknown --lms {lms_name!r}; choose one of {', '.join(lms.PRESETS)}, or describe the "
                               "file names with --pattern")
        preset = lms.PRESETS[lms_name]()
        return preset, _match_all(preset, entries, known, assignment, ids)
    best = None
    for cls in lms.PRESETS.values():
        preset = cls()
        outcome = _match_all(preset, entries, known, assignment, ids)
        if best is None or outcome.rank() > best[1].rank():
            best = (preset, outcome)
    if not best[1].recognised:
        notebooks = [e.path for e in entries if e.path.lower().endswith(".ipynb")][:3]
        layouts = "\n  ".join(f"--lms {c.name}: {c.description}" for c in lms.PRESETS.values())
        raise CollectError(
            "no file could be placed: the names match none of the layouts collect knows"
            + (f" (for example {', '.join(repr(n) for n in notebooks)})" if notebooks else " (no .ipynb file found)")
            + f".\nThe layouts:\n  {layouts}\nName the layout with --lms NAME, or describe the names with "
            r"--pattern REGEX, e.g. --pattern '^(?P<student_id>[^_/]+)_.*(?P<notebook>convolution|pooling)\.ipynb$'")
    return best


def _conflicts(items, report):
    """Drop (and report) items that would merge students or overwrite each other."""
    by_key, ids_of = {}, {}
    for item in items:
        by_key.setdefault((item.student, item.notebook), []).append(item)
        if item.found.lms_user_id:
            ids_of.setdefault(item.student, set()).add(item.found.lms_user_id)
    merged = {s for s, ids in ids_of.items() if len(ids) > 1}
    kept = []
    for (student, notebook), group in sorted(by_key.items()):
        if student in merged:
            for item in group:
                report.unplaced.append(
                    f"{item.entry.path}: learners with different LMS ids ({', '.join(sorted(ids_of[student]))}) "
                    f"would all become student '{student}'; collect with --ids lms to key students by their "
                    "LMS user id")
            continue
        if len(group) > 1:
            names = ", ".join(i.entry.path for i in group)
            for item in group:
                report.unplaced.append(f"{item.entry.path}: {len(group)} files would become {student}/{notebook}.ipynb "
                                       f"({names}); remove all but one from the download and collect again")
            continue
        kept.append(group[0])
    return kept


def read_manifest(folder):
    """What collect recorded in folder/collect.json ({} when there is none or it cannot be read)."""
    try:
        data = json.loads(_read_regular(os.path.join(folder, MANIFEST), MAX_SIDE_FILE_BYTES).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_bytes(path, data):
    tmp = path + ".collect-tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def collect(source, submitted_dir, assignment=ASSIGNMENT, lms_name=None, pattern=None, ids="name"):
    """Copy the submissions found in source (folder or zip) into submitted_dir; return a CollectReport."""
    if assignment not in registered():
        raise CollectError(unknown_message(assignment))
    known = set(checks.notebooks_of(assignment))
    entries = _entries(source)
    preset, outcome = _choose(entries, known, assignment, lms_name, pattern, ids)
    report = CollectReport(lms=preset.name, unplaced=list(outcome.unplaced), ignored=outcome.ignored)
    items = _conflicts(outcome.items, report)

    per_student = {}
    for item in items:
        per_student.setdefault(item.student, []).append(item)
    for student, group in sorted(per_student.items()):
        folder = os.path.join(submitted_dir, student, assignment)
        wanted = []
        for item in sorted(group, key=lambda i: i.notebook):
            try:
                data = item.entry.read()
            except OSError as exc:
                report.unplaced.append(f"{item.entry.path}: cannot be read ({exc})")
                continue
            wanted.append((item, data))
        if not wanted:
            continue
        os.makedirs(folder, exist_ok=True)
        for item, data in wanted:
            dest = os.path.join(folder, item.notebook + ".ipynb")
            if os.path.islink(dest):
                os.unlink(dest)
            elif os.path.isfile(dest):
                with open(dest, "rb") as fh:
                    if fh.read() == data:
                        report.unchanged.append(dest)
                        continue
            _atomic_bytes(dest, data)
            report.copied.append(dest)
        _write_side_files(folder, preset.name, [i for i, _d in wanted], source)
    return report


def _write_side_files(folder, lms_name, items, source):
    old = read_manifest(folder)
    first = items[0].found
    stamps = [i.found.submitted_at for i in items if i.found.submitted_at is not None]
    when = max(stamps) if stamps else None
    files = dict(old.get("files") or {})
    files.update({i.notebook: i.entry.path for i in items})
    manifest = {
        "lms": lms_name,
        "lms_user_id": first.lms_user_id or old.get("lms_user_id", ""),
        "name": first.name or old.get("name", ""),
        "first_name": first.extra.get("first_name", "") or old.get("first_name", ""),
        "last_name": first.extra.get("last_name", "") or old.get("last_name", ""),
        "email": first.extra.get("email", "") or old.get("email", ""),
        "late": any(i.found.late for i in items),
        "submitted_at": lms.format_timestamp(when) if when else old.get("submitted_at"),
        "files": files,
        "source": os.path.basename(os.path.abspath(source)),
        "collected_at": _dt.datetime.now(_dt.timezone.utc).strftime(lms.TIMESTAMP_FORMAT),
    }
    if first.extra.get("group"):
        manifest["group"] = first.extra["group"]
    _atomic_bytes(os.path.join(folder, MANIFEST), (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    if when is not None:
        _atomic_bytes(os.path.join(folder, "timestamp.txt"), (lms.format_timestamp(when) + "\n").encode())
    else:
        # nbgrader's layout copied as it is: its timestamp.txt travels with the notebooks
        for item in items:
            if isinstance(item.found, lms.Found) and lms_name == "nbgrader":
                src_dir = item.entry.path.rsplit("/", 1)[0] if "/" in item.entry.path else ""
                stamp = os.path.join(source, src_dir, "timestamp.txt") if os.path.isdir(source) else None
                if stamp and os.path.isfile(stamp) and not os.path.islink(stamp):
                    _atomic_bytes(os.path.join(folder, "timestamp.txt"), _read_regular(stamp, 4096))
                break
