"""nbgrader's gradebook as the record of a class's grades (``nbgrader.api.Gradebook``).

``sync(db_url, spec, results, students)`` writes what the hidden checks found and
reads back what the gradebook says, in one session:

* registers the assignment, its notebooks, its grade cells (``max_score`` from the
  source notebooks' points, ``autograder.assignment``), solution cells and source
  cells; sets the due date when the course configuration gives one;
* records every student (name and LMS user id from collect's manifest, made inert
  and cut to nbgrader's column sizes: ``student_fields``), every submission (with its
  timestamp) and each graded cell's ``auto_score``, and the feedback of a function's
  cells as the automatic comment of its solution cell;
* never touches ``manual_score``, ``extra_credit`` or ``manual_comment``: what an
  instructor sets in formgrader survives every regrade;
* applies nbgrader's late-submission policy (``AssignLatePenalties.plugin_class``,
  ``LateSubmissionPlugin.penalty_method``: none, zero or a custom plugin) to every
  notebook of a late submission and records the penalty;
* returns, per student, the score of every cell as nbgrader counts it (a manual
  score replaces the automatic one), the instructor's comments and the penalty,
  which is what ``totals.csv``, the feedback pages and the LMS files show.

Every write is an ``update_or_create_*`` or an update of an existing row, so
running it again gives the same database.  ``nbgrader export``, ``formgrader``
and ``generate_feedback`` read the result as usual.

``db_url`` is any SQLAlchemy URL.  On a PostgreSQL server, writers take an
advisory lock, so grading runs that share a gradebook write one after the
other, and the student id columns are widened to 255 characters (nbgrader
declares 128; a student id is a folder name, so 255 bytes fit any legal one).
"""
import ast
import contextlib
import importlib
import importlib.util
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field


def _import_nbgrader_without_server_extensions():
    """Make ``import nbgrader.api`` load only what the gradebook needs.

    nbgrader's package ``__init__`` imports its Jupyter server extensions (formgrader,
    the exchange, every converter and preprocessor, hence nbconvert and jupyter_server),
    about a second of every command, none of which the gradebook uses.  The package is
    registered here with its ``__path__`` and ``__version__`` but without running that
    ``__init__``; its submodules (``nbgrader.api``, ``nbgrader.plugins``, ...) import as
    usual.  Asking the package for anything else its ``__init__`` defines (what Jupyter
    server does to load the extensions) runs the ``__init__`` then, once, so nothing of
    the package is missing.
    """
    if "nbgrader" in sys.modules:
        return
    spec = importlib.util.find_spec("nbgrader")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return                      # the import below then fails as usual: no nbgrader installed
    package = importlib.util.module_from_spec(spec)

    def complete(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module 'nbgrader' has no attribute '{name}'")
        if importlib.util.find_spec(f"nbgrader.{name}") is not None:
            return importlib.import_module(f"nbgrader.{name}")      # a submodule: only that
        del package.__getattr__
        spec.loader.exec_module(package)                            # the whole __init__, once
        return getattr(package, name)

    package.__getattr__ = complete
    sys.modules["nbgrader"] = package
    try:
        package.__version__ = importlib.import_module("nbgrader._version").__version__
    except BaseException:
        del sys.modules["nbgrader"]
        raise


_import_nbgrader_without_server_extensions()

import nbformat  # noqa: E402
from sqlalchemy.exc import SAWarning  # noqa: E402
from nbgrader import api as nbgrader_api  # noqa: E402
from nbgrader.api import Comment, Grade, Gradebook, MissingEntry  # noqa: E402
from nbgrader.utils import compute_checksum, is_grade, is_locked, is_solution  # noqa: E402

from .dburl import GradebookUnavailable, check_url  # noqa: E402,F401  (this module's interface too)
from .learnertext import inert_name  # noqa: E402
from .nbgrader_config import COURSE_ID  # noqa: E402
from .policy import parse_source  # noqa: E402


@dataclass
class CellGrade:
    grade_id: str
    auto_score: float
    manual_score: object      # float or None
    score: float              # what nbgrader counts: manual if set, else auto, plus extra credit
    max_score: float


@dataclass
class StudentGrades:
    student_id: str
    cells: dict = field(default_factory=dict)      # notebook -> {grade_id: CellGrade}
    comments: dict = field(default_factory=dict)   # notebook -> {function or cell name: manual comment}
    penalties: dict = field(default_factory=dict)  # notebook -> late penalty (float)
    timestamp: object = None                       # datetime (UTC, naive) or None
    duedate: object = None
    seconds_late: float = 0.0

    @property
    def raw_score(self):
        return float(sum(c.score for per in self.cells.values() for c in per.values()))

    @property
    def max_score(self):
        return float(sum(c.max_score for per in self.cells.values() for c in per.values()))

    @property
    def penalty(self):
        return float(sum(self.penalties.values()))

    @property
    def score(self):
        return max(0.0, self.raw_score - self.penalty)

    def notebook_score(self, notebook):
        return max(0.0, sum(c.score for c in self.cells.get(notebook, {}).values())
                   - self.penalties.get(notebook, 0.0))


def _alembic_on_path():
    """nbgrader runs the `alembic` command when it creates a database; find the one next to Python."""
    if shutil.which("alembic") is None:
        here = os.path.dirname(sys.executable)
        if os.path.exists(os.path.join(here, "alembic")):
            os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


# pg_advisory_lock key that every writer of a gradebook takes (any fixed number, the same in every run)
_LOCK_KEY = 0x3A8F0D6B2C1E4F57
_STUDENT_ID_COLUMNS = (("student", "id"), ("submitted_assignment", "student_id"))
STUDENT_ID_LENGTH = 255


@contextlib.contextmanager
def _one_writer(db_url):
    """Hold PostgreSQL's advisory lock for the gradebook's writers (SQLite locks its file itself)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        yield None
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _widen_student_ids(conn):
    """nbgrader's VARCHAR(128) student ids to VARCHAR(255) on PostgreSQL, once."""
    from sqlalchemy import text
    for table, column in _STUDENT_ID_COLUMNS:
        length = conn.execute(text("SELECT character_maximum_length FROM information_schema.columns "
                                   "WHERE table_schema = current_schema() AND table_name = :t "
                                   "AND column_name = :c"), {"t": table, "c": column}).scalar()
        if length is not None and length < STUDENT_ID_LENGTH:
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR({STUDENT_ID_LENGTH})"))
    conn.commit()


def _linear_head(versions):
    """The one head revision of the migration scripts in versions, read as text; None unless the
    history is a plain chain of literal revisions (alembic's own reading then decides)."""
    revisions, downs = set(), []
    try:
        names = sorted(n for n in os.listdir(versions) if n.endswith(".py"))
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(versions, name), encoding="utf-8") as fh:
                tree = parse_source(fh.read())   # one thread at a time: the grading parses too
        except (OSError, SyntaxError, ValueError):
            return None
        found = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in ("revision", "down_revision", "branch_labels", "depends_on"):
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    return None
        revision, down = found.get("revision"), found.get("down_revision")
        if not isinstance(revision, str) or not isinstance(down, (str, type(None))) \
                or found.get("branch_labels") or found.get("depends_on") or revision in revisions:
            return None
        revisions.add(revision)
        if down is not None:
            downs.append(down)
    heads = revisions.difference(downs)
    if len(heads) != 1 or len(set(downs)) != len(downs) or not revisions.issuperset(downs):
        return None
    return heads.pop()


def alembic_head():
    """nbgrader's schema revision, read from its migration scripts in this process.

    nbgrader's Gradebook asks the ``alembic`` command for it when it creates a
    gradebook, which starts a new Python process (seconds); the answer is the same.
    nbgrader's history is a chain of scripts, each naming its revision and the one
    before it: its head is read from their text (importing alembic costs about 0.3 s);
    any other history is left to alembic's own reading.
    """
    import nbgrader
    location = os.path.join(os.path.dirname(nbgrader.__file__), "alembic")
    head = _linear_head(os.path.join(location, "versions"))
    if head is not None:
        return head
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    cfg = Config()
    cfg.set_main_option("script_location", location)
    return ScriptDirectory.from_config(cfg).get_current_head()


def export_csv(db_url, dest, course_id=COURSE_ID):
    """nbgrader's CSV export of the gradebook (the plugin ``nbgrader export`` runs), in this process."""
    from nbgrader.plugins.export import CsvExportPlugin
    with open_gradebook(db_url, course_id) as gb:
        CsvExportPlugin(to=os.path.abspath(dest)).export(gb)
    return dest


def open_gradebook(db_url, course_id=COURSE_ID):
    """nbgrader's Gradebook at db_url (created, with its schema, when it does not exist)."""
    _alembic_on_path()
    nbgrader_api.get_alembic_version = alembic_head   # in-process, not the alembic command
    return Gradebook(db_url, course_id=course_id)


def _registered(gb, assignment):
    """{(kind, notebook, cell name): {column: value}} of the assignment's grade, solution and source
    cells as the gradebook holds them, read in three queries."""
    from nbgrader.api import Assignment, GradeCell, Notebook, SolutionCell, SourceCell
    found = {}
    for kind, model, columns in (("grade", GradeCell, _GRADE_COLUMNS), ("solution", SolutionCell, ()),
                                 ("source", SourceCell, _SOURCE_COLUMNS)):
        rows = gb.db.query(model, Notebook.name).join(Notebook, Notebook.id == model.notebook_id) \
            .join(Assignment, Assignment.id == Notebook.assignment_id).filter(Assignment.name == assignment)
        for cell, notebook in rows:
            found[(kind, notebook, cell.name)] = {c: getattr(cell, c) for c in columns}
    return found


_GRADE_COLUMNS = ("max_score", "cell_type")
_SOURCE_COLUMNS = ("cell_type", "locked", "source", "checksum")


def register_assignment(gb, spec, duedate=None):
    """Assignment, notebooks and cells, from the assignment's source notebooks.

    A cell the gradebook holds with other values goes through nbgrader's
    ``update_or_create_*``; a cell it does not hold is added as nbgrader's ``add_*`` adds
    it (the same row, on the notebook row at hand instead of a query for it per cell); a
    cell it holds with exactly these values is left alone.  The cells are read in three
    queries, so a run after the first changes nothing in a few queries, and a first run
    writes every row in one flush.
    """
    from nbgrader.api import GradeCell, SolutionCell, SourceCell
    kwargs = {"duedate": duedate} if duedate is not None else {}
    gb.update_or_create_assignment(spec.name, **kwargs)
    have = _registered(gb, spec.name)

    def put(kind, notebook, name, values, update, model):
        known = have.get((kind, notebook.name, name))
        have[(kind, notebook.name, name)] = values   # a cell named twice: the last one wins, as in nbgrader
        if known is None:
            gb.db.add(model(name=name, notebook=notebook, **values))
        elif known != values:
            update(name, notebook.name, spec.name, **values)

    for name in spec.notebooks:
        notebook = gb.update_or_create_notebook(name, spec.name)
        for cell in spec.cells_of(name):
            put("grade", notebook, cell.grade_id, dict(zip(_GRADE_COLUMNS, (cell.points, "code"))),
                gb.update_or_create_grade_cell, GradeCell)
        graded = set(spec.grade_ids(name))
        nb = nbformat.read(spec.source_path(name), as_version=4)
        for cell in nb.cells:
            nbg = cell.metadata.get("nbgrader")
            if not nbg or not nbg.get("grade_id"):
                continue
            gid = nbg["grade_id"]
            if is_solution(cell):
                put("solution", notebook, gid, {}, gb.update_or_create_solution_cell, SolutionCell)
            if is_grade(cell) and gid not in graded:
                continue
            put("source", notebook, gid, dict(zip(_SOURCE_COLUMNS, (cell.cell_type, is_locked(cell), cell.source,
                                                                   compute_checksum(cell)))),
                gb.update_or_create_source_cell, SourceCell)
    gb.db.flush()


#: the configuration sections an ``AssignLatePenalties`` and its default plugin read (their classes
#: and base classes); a course configuration that sets none of them has nbgrader's default policy
LATE_SECTIONS = frozenset({"AssignLatePenalties", "NbGraderPreprocessor", "Preprocessor", "NbConvertBase",
                           "LateSubmissionPlugin", "BasePlugin", "LoggingConfigurable", "Configurable"})


class LatePolicy:
    """nbgrader's late-submission policy as the course configures it: its ``AssignLatePenalties``.

    The preprocessor is nbconvert's (importing it costs about half a second), and only a
    late submission needs it: it is built on first use, or at once when the configuration
    sets any of ``LATE_SECTIONS`` (a custom ``plugin_class``, a ``penalty_method``), so that
    a mistake there is reported in every run, whether or not anyone is late.
    """

    def __init__(self, config=None):
        self.config = config
        self._preprocessor = None
        if config is not None and LATE_SECTIONS.intersection(config):
            self.preprocessor  # noqa: B018  (built now: a configuration error shows in this run)

    @property
    def preprocessor(self):
        if self._preprocessor is None:
            from nbgrader.preprocessors import AssignLatePenalties
            pre = AssignLatePenalties(config=self.config) if self.config is not None else AssignLatePenalties()
            pre.init_plugin()
            self._preprocessor = pre
        return self._preprocessor

    @property
    def built(self):
        return self._preprocessor is not None

    def penalty(self, student, notebook, seconds_late):
        """The penalty of a submitted notebook, or None: the plugin's, bounded as AssignLatePenalties bounds it."""
        pre = self.preprocessor
        penalty = pre.plugin_inst.late_submission_penalty(student, notebook.score, seconds_late)
        return None if penalty is None else pre._check_late_penalty(notebook, penalty)


def late_plugin(config):
    """nbgrader's late-submission policy as the course configures it (a ``LatePolicy``)."""
    return LatePolicy(config)


@contextlib.contextmanager
def _one_transaction(gb):
    """nbgrader's ``update_or_create_*`` and ``add_*`` commit after every row (a disk sync each
    on SQLite); inside this block they only flush, and the block commits once at its end (or
    rolls back on an error), so the rows are those nbgrader writes, in one transaction."""
    session = gb.db
    session.commit = session.flush        # shadows the scoped session's commit for nbgrader's calls
    try:
        yield
    except BaseException:
        del session.commit
        session.rollback()
        raise
    del session.commit
    session.commit()


#: what collect records of a student that the gradebook's student row holds
STUDENT_FIELDS = ("first_name", "last_name", "lms_user_id", "email")


def student_fields(meta):
    """The columns of a student's row from what collect recorded (names, LMS user id, e-mail).

    These come from the LMS, and a learner may choose them: each is written as
    ``learnertext.inert_name`` makes it (one line of printable characters, no character that
    means something in HTML: formgrader prints names unescaped) and cut to the length of
    nbgrader's column (128 characters; PostgreSQL refuses a longer value, and the class would
    stop).  An empty value is not written.
    """
    from nbgrader.api import Student
    fields = {}
    for name in STUDENT_FIELDS:
        value = meta.get(name)
        if value:
            value = inert_name(value, Student.__table__.c[name].type.length)
            if value:
                fields[name] = value
    return fields


def _auto_comment(result, function):
    lines = []
    for c in result.get("cells", []):
        if c.get("function") == function and c.get("status") != "passed":
            lines.append(f"{c['grade_id']}: {c.get('reason') or c.get('status')}")
    return "\n".join(lines) or None


@contextlib.contextmanager
def writer(db_url, spec, duedate=None, late=None, course_id=COURSE_ID):
    """The gradebook at db_url, open as its one writer: ``with writer(...) as write:``.

    On entry the assignment is registered (``register_assignment``; ``duedate`` sets its
    due date when given).  ``write(student, per_notebook, meta)`` then records one student's
    results ({notebook: result}) and returns the student's ``StudentGrades`` as the gradebook
    counts them; ``meta`` is what collect recorded ({"first_name", "last_name",
    "lms_user_id", "email", "timestamp"}).  Each student is one transaction, ended before
    ``write`` returns, so that the gradebook is never left locked between students (an
    instructor's formgrader may write meanwhile).  ``late`` is ``late_plugin(config)``
    (default: nbgrader's default, no penalty).  Calls of ``write`` must come from the
    thread that entered the block.
    """
    late = late or LatePolicy()
    with _one_writer(db_url) as lock_conn, warnings.catch_warnings(), open_gradebook(db_url, course_id) as gb:
        # nbgrader's add_submission trips SQLAlchemy 2's autoflush warnings; they are harmless
        warnings.simplefilter("ignore", SAWarning)
        if lock_conn is not None:
            gb.db.commit()        # end the session's first transaction before altering tables
            _widen_student_ids(lock_conn)
        with _one_transaction(gb):
            register_assignment(gb, spec, duedate)

        def write(student, per_notebook, meta=None):
            meta = meta or {}
            with _one_transaction(gb):   # one commit per student: the grades are then read back
                gb.update_or_create_student(student, **student_fields(meta))
                sub = gb.update_or_create_submission(spec.name, student, timestamp=meta.get("timestamp") or None)
                grades_of, comments_of = _grades_of(gb, sub), _comments_of(gb, sub)
                for notebook, result in sorted(per_notebook.items()):
                    scores = {c["grade_id"]: c for c in result.get("cells", [])}
                    for gid in spec.grade_ids(notebook):
                        try:
                            grade = grades_of.get((notebook, gid)) or gb.find_grade(gid, notebook, spec.name, student)
                        except MissingEntry:  # a submission recorded before this cell existed
                            grade = Grade(cell_id=gb.find_grade_cell(gid, notebook, spec.name).id,
                                          notebook=gb.find_submission_notebook(notebook, spec.name, student))
                            gb.db.add(grade)
                        cell = scores.get(gid, {})
                        grade.auto_score = float(cell.get("score", 0.0))
                        grade.needs_manual_grade = False
                    for function in dict.fromkeys(c.function for c in spec.cells_of(notebook)):
                        try:
                            comment = comments_of.get((notebook, f"{function}_solution")) or \
                                gb.find_comment(f"{function}_solution", notebook, spec.name, student)
                        except MissingEntry:
                            continue
                        comment.auto_comment = _auto_comment(result, function)
            grades = _read_back(gb, spec, student, sub, late)
            gb.db.commit()               # the read-back's transaction (and its late penalties) ends here
            return grades

        yield write
        gb.db.commit()


def _rows_of(gb, sub, model, cell_model):
    """{(notebook, cell name): row} of the submission ``sub``'s rows of ``model`` (``Grade`` on
    grade cells, ``Comment`` on solution cells), in one query: the rows that nbgrader's
    ``find_grade`` and ``find_comment`` find one query at a time (a cell not listed here is
    asked of them)."""
    from nbgrader.api import Notebook, SubmittedNotebook
    rows = gb.db.query(model, cell_model.name, Notebook.name) \
        .join(cell_model, cell_model.id == model.cell_id) \
        .join(SubmittedNotebook, SubmittedNotebook.id == model.notebook_id) \
        .join(Notebook, Notebook.id == SubmittedNotebook.notebook_id) \
        .filter(SubmittedNotebook.assignment_id == sub.id)
    return {(notebook, cell): row for row, cell, notebook in rows}


def _grades_of(gb, sub):
    from nbgrader.api import GradeCell
    return _rows_of(gb, sub, Grade, GradeCell)


def _comments_of(gb, sub):
    from nbgrader.api import SolutionCell
    return _rows_of(gb, sub, Comment, SolutionCell)


def sync(db_url, spec, results, students=None, duedate=None, late=None, course_id=COURSE_ID):
    """Write results ({student: {notebook: result}}) to the gradebook; return {student: StudentGrades}.

    students maps a student id to what collect recorded ({"first_name", "last_name",
    "lms_user_id", "timestamp": the submission time from timestamp.txt}); duedate (str or
    datetime) sets the assignment's due date when given; late is ``late_plugin(config)``
    (default: nbgrader's default, no penalty).  One ``writer`` block, the students in order.
    """
    students = students or {}
    with writer(db_url, spec, duedate, late, course_id) as write:
        return {student: write(student, results[student], students.get(student)) for student in sorted(results)}


def _read_back(gb, spec, student, sub, late):
    gb.db.refresh(sub)
    grades = StudentGrades(student, timestamp=sub.timestamp, duedate=sub.duedate,
                           seconds_late=float(sub.total_seconds_late))
    for snb in sub.notebooks:
        name = snb.notebook.name
        if name not in spec.notebooks:
            continue
        graded = set(spec.grade_ids(name))
        # nbgrader's own late-submission policy, as AssignLatePenalties applies it
        snb.late_submission_penalty = None
        if grades.seconds_late > 0:
            penalty = late.penalty(student, snb, grades.seconds_late)
            if penalty is not None:
                snb.late_submission_penalty = penalty
        grades.penalties[name] = float(snb.late_submission_penalty or 0.0)
        per = {}
        for g in snb.grades:
            if g.name in graded:
                per[g.name] = CellGrade(g.name, float(g.auto_score or 0.0), g.manual_score, float(g.score),
                                        float(g.max_score))
        grades.cells[name] = per
        notes = {}
        for c in gb.db.query(Comment).filter(Comment.notebook_id == snb.id):
            if c.manual_comment:
                notes[c.name[:-len("_solution")] if c.name.endswith("_solution") else c.name] = c.manual_comment
        grades.comments[name] = notes
    return grades


def gradebook_totals(db_url, assignment, course_id=COURSE_ID):
    """{student_id: score after the late penalty} of the assignment, as nbgrader's export computes it."""
    with open_gradebook(db_url, course_id) as gb:
        return {s.student.id: max(0.0, float(s.score) - float(s.late_submission_penalty or 0.0))
                for s in gb.assignment_submissions(assignment)}

