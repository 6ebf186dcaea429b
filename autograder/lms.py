"""What learning management systems produce and import: bulk-download layouts and grade files.

Download layouts (``PRESETS``, for ``python -m autograder collect --lms NAME``; each is
matched against the whole path of a file inside the zip or folder):

``canvas``
    "Download Submissions": one flat zip, ``<name>[_LATE]_<user id>_<file id>_<file name>``,
    where name is Canvas's lower-case ``lastnamefirstname`` and ``_LATE`` marks a submission
    after the due date; Canvas renames resubmitted files ``convolution-1.ipynb``.
``moodle``
    "Download all submissions", in per-student folders
    ``<Full Name>_<participant id>_assignsubmission_file_/<file name>`` or flat files
    ``<Full Name>_<participant id>_assignsubmission_file_<file name>``.
``gradescope``
    "Export Submissions": ``assignment_<id>_export/submission_<id>/<file name>`` with
    ``submission_metadata.yml`` naming each submission's submitters (name, SID, email)
    and its ``:created_at:`` time.
``blackboard``
    "Assignment File Download": ``<Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file name>``
    next to ``<Assignment>_<username>_attempt_<...>.txt``, whose ``Name:`` line gives the
    learner's name.
``nbgrader``
    nbgrader's own layout, ``<student id>/<assignment>/<notebook>.ipynb`` (``timestamp.txt``
    kept), or ``<student id>/<notebook>.ipynb``.

Grade files (``write_grade_files``): ``canvas_grades.csv`` in Canvas's gradebook import
format (``Student, ID, SIS User ID, SIS Login ID, Section, <assignment>`` with a
``Points Possible`` row, keyed by the Canvas user id) for the learners collected from
Canvas, and ``moodle_grades.csv`` in the format of Moodle's offline grading worksheet
(``Identifier`` = ``Participant <id>``, ``Full name``, ``Grade``, ``Maximum grade``,
``Feedback comments``) for those collected from Moodle.
"""
import csv
import datetime as _dt
import io
import os
import re
import unicodedata
from dataclasses import dataclass, field

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S UTC"   # what collect writes to timestamp.txt


@dataclass
class Found:
    """One submitted file, as a preset reads its path."""
    path: str                 # inside the zip or folder, with '/'
    file: str                 # the learner's file name (last component, LMS prefix removed)
    name: str = ""            # the learner's name as the LMS gives it
    lms_user_id: str = ""
    student_key: str = ""     # what the student id is made from by default
    late: bool = False
    submitted_at: object = None   # datetime (UTC) or None
    extra: dict = field(default_factory=dict)


def slug(text):
    """A student id made from a name: ASCII letters and digits, words joined by '-', lower case."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "-".join(re.findall(r"[A-Za-z0-9]+", ascii_text)).lower()


def _split_name(name):
    parts = name.split()
    if len(parts) >= 2:
        return parts[0], " ".join(parts[1:])
    return name, ""


class Preset:
    name = ""
    description = ""

    def prepare(self, files):
        """Read side files (metadata) before matching; files: {path: reader()}."""

    def match(self, path):
        """A Found for a submitted file's path, or None when the path is not this LMS's."""
        raise NotImplementedError


class Canvas(Preset):
    name = "canvas"
    description = "<name>[_LATE]_<user id>_<file id>_<file name> (Canvas 'Download Submissions')"
    _re = re.compile(r"^(?P<name>[a-z0-9-]+?)(?P<late>_LATE)?_(?P<uid>\d+)_(?P<fid>\d+)_(?P<file>.+)$")

    def match(self, path):
        base = path.rsplit("/", 1)[-1]
        m = self._re.match(base)
        if not m:
            return None
        return Found(path, m.group("file"), name=m.group("name"), lms_user_id=m.group("uid"),
                     student_key=m.group("name"), late=bool(m.group("late")))


class Moodle(Preset):
    name = "moodle"
    description = ("<Full Name>_<participant id>_assignsubmission_file_/<file name>, or the same as one flat "
                   "name (Moodle 'Download all submissions')")
    _folder = re.compile(r"^(?:.*/)?(?P<name>[^/]+?)_(?P<pid>\d+)_assignsubmission_file_/(?:.*/)?(?P<file>[^/]+)$")
    _flat = re.compile(r"^(?:.*/)?(?P<name>[^/]+?)_(?P<pid>\d+)_assignsubmission_file_(?P<file>[^/]+)$")

    def match(self, path):
        m = self._folder.match(path) or self._flat.match(path)
        if not m:
            return None
        name = m.group("name").strip()
        first, last = _split_name(name)
        return Found(path, m.group("file"), name=name, lms_user_id=m.group("pid"), student_key=slug(name),
                     extra={"first_name": first, "last_name": last})


class Gradescope(Preset):
    name = "gradescope"
    description = "assignment_<id>_export/submission_<id>/<file name> with submission_metadata.yml (Gradescope export)"
    _re = re.compile(r"^(?:.*/)?(?P<sub>submission_\d+)/(?:.*/)?(?P<file>[^/]+)$")

    def __init__(self):
        self.meta = {}

    def prepare(self, files):
        import yaml
        for path, read in files.items():
            if path.rsplit("/", 1)[-1] != "submission_metadata.yml":
                continue
            try:
                data = yaml.safe_load(read().decode("utf-8", "replace"))
            except Exception:
                continue
            if isinstance(data, dict):
                for key, value in data.items():
                    if isinstance(value, dict):
                        self.meta[str(key)] = value

    def match(self, path):
        m = self._re.match(path)
        if not m:
            return None
        info = self.meta.get(m.group("sub"), {})
        people = info.get(":submitters") or info.get("submitters") or []
        person = people[0] if people and isinstance(people[0], dict) else {}
        name = str(person.get(":name") or person.get("name") or "")
        sid = str(person.get(":sid") or person.get("sid") or "")
        email = str(person.get(":email") or person.get("email") or "")
        when = info.get(":created_at") or info.get("created_at")
        first, last = _split_name(name)
        found = Found(path, m.group("file"), name=name, lms_user_id=sid or email,
                      student_key=sid or slug(name) or m.group("sub"), submitted_at=_parse_time(when),
                      extra={"first_name": first, "last_name": last, "email": email,
                             "submission": m.group("sub")})
        if len(people) > 1:
            found.extra["group"] = [str(p.get(":name") or p.get("name") or "") for p in people
                                    if isinstance(p, dict)]
        return found


class Blackboard(Preset):
    name = "blackboard"
    description = "<Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file name> (Blackboard 'Assignment File Download')"
    _re = re.compile(r"^(?P<title>.+)_(?P<user>[^_/]+)_attempt_(?P<ts>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)(?:_(?P<file>.+))?$")
    _receipt = re.compile(r"^.+_[^_/]+_attempt_\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d\.txt$")

    def __init__(self):
        self.names = {}

    def prepare(self, files):
        for path, read in files.items():
            if not self._receipt.match(path.rsplit("/", 1)[-1]):
                continue
            text = read().decode("utf-8", "replace")
            nm = re.search(r"^Name:\s*(?P<name>.+?)\s*\((?P<user>[^)]+)\)\s*$", text, re.MULTILINE)
            if nm:
                self.names[nm.group("user").strip()] = nm.group("name").strip()

    def match(self, path):
        base = path.rsplit("/", 1)[-1]
        m = self._re.match(base)
        if not m or not m.group("file"):
            return None
        user = m.group("user")
        when = _dt.datetime.strptime(m.group("ts"), "%Y-%m-%d-%H-%M-%S")
        name = self.names.get(user, "")
        first, last = _split_name(name)
        return Found(path, m.group("file"), name=name, lms_user_id=user, student_key=user, submitted_at=when,
                     extra={"first_name": first, "last_name": last})


class NbgraderLayout(Preset):
    name = "nbgrader"
    description = "<student id>/<assignment>/<notebook>.ipynb or <student id>/<notebook>.ipynb (nbgrader's layout)"
    _re = re.compile(r"^(?P<student>[^/]+)/(?:(?P<folder>[^/]+)/)?(?P<file>[^/]+)$")

    def match(self, path):
        m = self._re.match(path)
        if not m:
            return None
        found = Found(path, m.group("file"), student_key=m.group("student"))
        if m.group("folder"):
            found.extra["folder"] = m.group("folder")
        return found


class Pattern(Preset):
    """--pattern REGEX: named groups student_id and notebook, optional lms_user_id, name and late."""
    name = "pattern"

    def __init__(self, regex):
        self.regex = regex
        self.description = f"--pattern {regex.pattern}"

    def match(self, path):
        m = self.regex.search(path)
        if not m:
            return None
        groups = m.groupdict()
        file = groups["notebook"]
        return Found(path, file if file.lower().endswith(".ipynb") else file + ".ipynb",
                     name=groups.get("name") or "", lms_user_id=groups.get("lms_user_id") or "",
                     student_key=groups["student_id"], late=bool(groups.get("late")))


PRESETS = {p.name: p for p in (Canvas, Moodle, Gradescope, Blackboard, NbgraderLayout)}


def _parse_time(value):
    """A naive UTC datetime from a datetime or a string with a time zone; None when there is none."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        when = value
    else:
        from dateutil import parser
        try:
            when = parser.parse(str(value))
        except (ValueError, OverflowError):
            return None
    if when.tzinfo is not None:
        when = (when - when.utcoffset()).replace(tzinfo=None)
    return when


_SUFFIX = re.compile(r"(?:\s*\(\d+\)|-\d+|\s+copy)+$", re.IGNORECASE)


def notebook_name(file, known):
    """The assignment notebook a learner's file name stands for, or None.

    Case is ignored and the suffixes browsers, LMSs and learners add are removed:
    ``Convolution.ipynb``, ``convolution (1).ipynb``, ``convolution-1.ipynb``.
    """
    if not file.lower().endswith(".ipynb"):
        return None
    stem = file[:-len(".ipynb")].strip()
    lower = {k.lower(): k for k in known}
    for candidate in (stem.lower(), _SUFFIX.sub("", stem).lower()):
        if candidate in lower:
            return lower[candidate]
    return None


# --------------------------------------------------------------------------- grade files

def _csv_text(rows):
    from .grading import csv_rows  # names from an LMS may start with =, +, - or @
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(csv_rows(rows))
    return buf.getvalue()


def _num(x):
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.4g}"


def canvas_rows(spec, grades, learners, column=None):
    column = column or spec.name
    rows = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", column],
            ["Points Possible", "", "", "", "", _num(spec.max_score())]]
    for student in sorted(grades):
        who = learners.get(student) or {}
        if who.get("lms") != "canvas" or not who.get("lms_user_id"):
            continue
        rows.append([who.get("name") or student, who["lms_user_id"], "", "", "", _num(grades[student].score)])
    return rows


def moodle_rows(spec, grades, learners):
    rows = [["Identifier", "Full name", "Grade", "Maximum grade", "Feedback comments"]]
    for student in sorted(grades):
        who = learners.get(student) or {}
        if who.get("lms") != "moodle" or not who.get("lms_user_id"):
            continue
        g = grades[student]
        note = f"{_num(g.score)} / {_num(spec.max_score())}"
        if g.penalty:
            note += f" after a late penalty of {_num(g.penalty)}"
        rows.append([f"Participant {who['lms_user_id']}", who.get("name") or student, _num(g.score),
                     _num(spec.max_score()), note])
    return rows


def write_grade_files(out_dir, spec, grades, learners, column=None):
    """canvas_grades.csv and moodle_grades.csv in out_dir, for the learners collected from each LMS."""
    from .grading import atomic_write
    written = []
    for name, rows in (("canvas_grades.csv", canvas_rows(spec, grades, learners, column)),
                       ("moodle_grades.csv", moodle_rows(spec, grades, learners))):
        path = os.path.join(out_dir, name)
        if len(rows) > (2 if name.startswith("canvas") else 1):
            atomic_write(path, _csv_text(rows))
            written.append(path)
        elif os.path.exists(path):
            os.remove(path)
    return written


def format_timestamp(when):
    return when.strftime(TIMESTAMP_FORMAT)
