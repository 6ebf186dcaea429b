"""What learning management systems produce and import: bulk-download layouts and grade files.

Download layouts (``PRESETS``, for ``python -m autograder collect --lms NAME``; each reads
the path of a file relative to the top of the zip or folder):

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
    ``assignment_<id>_export/submission_metadata.yml`` naming each submission's submitters
    (name, SID, email) and its ``:created_at:`` time (the folder ``assignment_<id>_export``
    itself may be the download, too).
``blackboard``
    "Assignment File Download": ``<Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file name>``
    next to ``<Assignment>_<username>_attempt_<...>.txt``, whose first line
    ``Name: <full name> (<username>)`` gives the learner's name.
``nbgrader``
    nbgrader's own layout, ``<student id>/<assignment>/<notebook>.ipynb`` (``timestamp.txt``
    kept), or ``<student id>/<notebook>.ipynb``.

What the learner chooses is never read for identity or time.  A learner names the files
they upload (Canvas and Blackboard keep the name after their own prefix), the folders
inside their submission (Moodle, Gradescope) and whatever a zip they upload holds.  So a
preset reads only what the LMS writes: the prefix of a top-level name, cut at its first
LMS marker (the learner's file name comes after it); the LMS's own top-level folders
(the first component below Gradescope's export folder); and the LMS's metadata files
where the LMS puts them (Gradescope's ``submission_metadata.yml`` beside the submission
folders, Blackboard's receipts at the top).  Below those, only the last component counts,
as the file name.  The metadata is read with YAML's safe loader, at most
``MAX_METADATA_BYTES`` and ``MAX_YAML_NODES`` nodes, with aliases counted as what they
expand to; every time goes through ``autograder.times`` (range-checked).  A file that
cannot be attributed safely gets ``Found.problem``, and collect does not place it.

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

from . import times
from .files import atomic_write, csv_rows  # names from an LMS may start with =, +, - or @

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S UTC"   # what collect writes to timestamp.txt
MAX_METADATA_BYTES = 4 << 20    # an LMS's metadata file (Gradescope's submission_metadata.yml)
MAX_YAML_NODES = 500_000        # nodes of that file, each alias counted as the nodes it stands for
MAX_YAML_DEPTH = 64


@dataclass
class Found:
    """One submitted file, as a preset reads its path."""
    path: str                 # inside the zip or folder, with '/'
    file: str                 # the learner's file name (last component, LMS prefix removed)
    name: str = ""            # the learner's name as the LMS gives it
    lms_user_id: str = ""
    student_key: str = ""     # what the student id is made from by default
    late: bool = False
    submitted_at: object = None   # datetime (UTC, naive, range-checked) or None
    extra: dict = field(default_factory=dict)
    problem: str = ""         # why the file cannot be attributed safely: collect does not place it


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
        """Read the LMS's side files (metadata) before matching; files: {path: read()}, where
        read() returns the bytes or raises OSError (unreadable, or larger than MAX_METADATA_BYTES)."""

    def match(self, path):
        """A Found for a submitted file's path, or None when the path is not this LMS's."""
        raise NotImplementedError


class Canvas(Preset):
    name = "canvas"
    description = "<name>[_LATE]_<user id>_<file id>_<file name> (Canvas 'Download Submissions')"
    # the name has no '_', so the LMS's prefix ends at the file id, whatever the file is called
    _re = re.compile(r"^(?P<name>[a-z0-9-]+)(?P<late>_LATE)?_(?P<uid>\d+)_(?P<fid>\d+)_(?P<file>.+)$")

    def match(self, path):
        if "/" in path:   # Canvas's download is flat: a folder below the top is not Canvas's
            return None
        m = self._re.match(path)
        if not m:
            return None
        return Found(path, m.group("file"), name=m.group("name"), lms_user_id=m.group("uid"),
                     student_key=m.group("name"), late=bool(m.group("late")))


class Moodle(Preset):
    name = "moodle"
    description = ("<Full Name>_<participant id>_assignsubmission_file_/<file name>, or the same as one flat "
                   "name (Moodle 'Download all submissions')")
    _folder = re.compile(r"^(?P<name>[^/]+)_(?P<pid>\d+)_assignsubmission_file_$")
    # flat: the first '_<id>_assignsubmission_file_' is Moodle's, the file name follows it
    _flat = re.compile(r"^(?P<name>[^/]+?)_(?P<pid>\d+)_assignsubmission_file_(?P<file>[^/]+)$")

    def match(self, path):
        top, _, below = path.partition("/")
        if below:   # the student's folder is the top one; the folders inside it are the learner's
            m = self._folder.match(top)
            file = below.rsplit("/", 1)[-1]
        else:
            m = self._flat.match(top)
            file = m.group("file") if m else ""
        if not m:
            return None
        name = m.group("name").strip()
        first, last = _split_name(name)
        return Found(path, file, name=name, lms_user_id=m.group("pid"), student_key=slug(name),
                     extra={"first_name": first, "last_name": last})


def _scalar(value):
    """Text of a scalar from metadata ('' for anything else: lists, maps, booleans, None)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return str(value)


def load_yaml(data, max_nodes=MAX_YAML_NODES, max_depth=MAX_YAML_DEPTH):
    """The value of a YAML document (bytes), with YAML's safe loader; ValueError when it is larger
    than MAX_METADATA_BYTES, nests deeper than max_depth, or holds more than max_nodes nodes with
    each alias counted as the nodes it stands for (a few hundred bytes of aliases can stand for
    billions), or is not YAML."""
    import yaml

    if len(data) > MAX_METADATA_BYTES:
        raise ValueError(f"larger than {MAX_METADATA_BYTES >> 20} MiB")

    class Refused(ValueError):
        pass

    class Counting(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self._node_sizes, self._node_depth = {}, 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):   # the anchored node, once more
                node = self.anchors.get(self.peek_event().anchor)
                if node is not None and id(node) not in self._node_sizes:
                    raise Refused("an alias refers to a node that holds it")
                node = super().compose_node(parent, index)
            else:
                self._node_depth += 1
                if self._node_depth > max_depth:
                    raise Refused(f"nested deeper than {max_depth} levels")
                node = super().compose_node(parent, index)
                self._node_depth -= 1
                if isinstance(node, yaml.SequenceNode):
                    children = node.value
                elif isinstance(node, yaml.MappingNode):
                    children = [n for pair in node.value for n in pair]
                else:
                    children = []
                self._node_sizes[id(node)] = 1 + sum(self._node_sizes[id(c)] for c in children)
            if self._node_sizes[id(node)] > max_nodes:
                raise Refused(f"more than {max_nodes} nodes once its aliases are expanded")
            return node

    loader = Counting(data.decode("utf-8", "replace"))
    try:
        return loader.get_single_data()
    except Refused:
        raise
    except Exception as exc:   # yaml.YAMLError, a bad date, RecursionError, ...: not a document we can read
        raise ValueError(f"not readable YAML ({type(exc).__name__}: {str(exc)[:200]})") from None
    finally:
        loader.dispose()


def _lms_time(value, what):
    """(naive UTC datetime or None, problem) for a time an LMS wrote."""
    if value is None or value == "":
        return None, ""
    try:
        return times.to_utc(times.parse(value)), ""
    except times.BadTime as exc:
        return None, f"{what}: {exc}; fix the time in the download, or collect this learner by hand"


class Gradescope(Preset):
    name = "gradescope"
    description = "assignment_<id>_export/submission_<id>/<file name> with submission_metadata.yml (Gradescope export)"
    METADATA = "submission_metadata.yml"
    _export = re.compile(r"^assignment_\d+_export$")
    _submission = re.compile(r"^submission_\d+$")

    def __init__(self):
        self.meta = {}       # export folder ('' at the top) -> {submission folder: its metadata}
        self.problems = {}   # export folder -> why its metadata cannot be used

    def _split(self, path):
        """(the export folder with '/', or '', and the components below it)."""
        parts = path.split("/")
        if len(parts) > 1 and self._export.match(parts[0]):
            return parts[0] + "/", parts[1:]
        return "", parts

    def prepare(self, files):
        for path, read in files.items():
            export, parts = self._split(path)
            if parts != [self.METADATA]:   # only Gradescope's own file, beside the submission folders
                continue
            try:
                data = load_yaml(read())
            except (OSError, ValueError) as exc:
                self.problems[export] = f"{path} cannot be used ({exc})"
                continue
            if not isinstance(data, dict):
                self.problems[export] = f"{path} is not a map of submissions"
                continue
            self.meta[export] = {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def match(self, path):
        export, parts = self._split(path)
        if len(parts) < 2 or not self._submission.match(parts[0]):
            return None
        sub, file = parts[0], parts[-1]   # the folders between are the learner's
        if export in self.problems:
            return Found(path, file, problem=f"{self.problems[export]}; export the submissions from Gradescope again")
        info = self.meta.get(export, {}).get(sub, {})
        people = info.get(":submitters") or info.get("submitters") or []
        people = [p for p in people if isinstance(p, dict)] if isinstance(people, list) else []
        person = people[0] if people else {}
        name = _scalar(person.get(":name") or person.get("name"))
        sid = _scalar(person.get(":sid") or person.get("sid"))
        email = _scalar(person.get(":email") or person.get("email"))
        when, problem = _lms_time(info.get(":created_at") or info.get("created_at"),
                                  f"the :created_at: of {sub} in {export}{self.METADATA}")
        first, last = _split_name(name)
        found = Found(path, file, name=name, lms_user_id=sid or email,
                      student_key=sid or slug(name) or sub, submitted_at=when, problem=problem,
                      extra={"first_name": first, "last_name": last, "email": email, "submission": sub})
        if len(people) > 1:
            found.extra["group"] = [_scalar(p.get(":name") or p.get("name")) for p in people]
        return found


class Blackboard(Preset):
    name = "blackboard"
    description = "<Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file name> (Blackboard 'Assignment File Download')"
    # the first '_<username>_attempt_<time>' of a top-level name is Blackboard's: the learner's
    # file name comes after it, and may hold another one
    _attempt = re.compile(r"_(?P<user>[^_/]+)_attempt_(?P<ts>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)")
    _name_line = re.compile(r"Name:[ \t]*(?P<name>[^\r\n]*?)[ \t]*\((?P<user>[^()\r\n]+)\)[ \t]*$")

    def __init__(self):
        self.attempts = {}   # '<Assignment>_<username>_attempt_<time>' -> (username, full name), from receipts

    def _split(self, path):
        """(the attempt prefix, its regex match, what follows it) of a top-level name, or None."""
        if "/" in path:
            return None
        m = self._attempt.search(path)
        if not m or m.start() == 0:
            return None
        return path[:m.end()], m, path[m.end():]

    def prepare(self, files):
        for path, read in files.items():
            split = self._split(path)
            if not split or split[2] != ".txt":   # a receipt is the attempt's name and .txt, nothing else
                continue
            head, m, _rest = split
            try:
                first_line = read().decode("utf-8", "replace").lstrip().split("\n", 1)[0].rstrip("\r")
            except OSError:
                continue
            nm = self._name_line.match(first_line)
            if not nm:
                continue
            user = nm.group("user").strip()
            # the receipt's own name must end with this user's attempt (a username may hold '_')
            suffix = f"_{user}_attempt_{m.group('ts')}"
            if head.endswith(suffix) and len(head) > len(suffix):
                self.attempts[head] = (user, nm.group("name").strip())

    def match(self, path):
        split = self._split(path)
        if not split or not split[2].startswith("_") or len(split[2]) < 2:
            return None
        head, m, rest = split
        user, name = self.attempts.get(head, (m.group("user"), ""))
        try:
            when, problem = _lms_time(_dt.datetime.strptime(m.group("ts"), "%Y-%m-%d-%H-%M-%S"),
                                      f"the attempt time of {head}")
        except ValueError:   # 2026-02-30
            when, problem = None, f"the attempt time of {head} is no date; download the submissions again"
        first, last = _split_name(name)
        return Found(path, rest[1:], name=name, lms_user_id=user, student_key=user, submitted_at=when,
                     problem=problem, extra={"first_name": first, "last_name": last})


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
