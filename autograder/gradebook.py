"""Write autograded scores into nbgrader's gradebook (``nbgrader.api.Gradebook``).

``write_gradebook(db_url, root, results)`` registers the assignment, its
notebooks, grade cells (max_score from ``autograder.checks.GRADED_CELLS``),
solution cells and source cells (from the source notebooks), then every
student and submission, and sets each grade's ``auto_score``.  Every write is
an ``update_or_create_*`` or an update of an existing row, so running it
again gives the same database, with no duplicated rows.  ``nbgrader export``,
``formgrader`` and ``generate_feedback`` read the result as usual.
"""
import os
import shutil
import sys
import warnings

import nbformat
from sqlalchemy.exc import SAWarning
from nbgrader.api import Grade, Gradebook, MissingEntry
from nbgrader.utils import compute_checksum, is_grade, is_locked, is_solution

from . import checks
from .nbgrader_config import COURSE_ID, SOURCE_DIRECTORY


def register_assignment(gb, root, assignment=checks.ASSIGNMENT):
    """Assignment, notebooks and cells, from GRADED_CELLS and the source notebooks."""
    gb.update_or_create_assignment(assignment)
    for notebook in checks.NOTEBOOKS:
        gb.update_or_create_notebook(notebook, assignment)
        for gid in checks.cells_of(notebook):
            gb.update_or_create_grade_cell(gid, notebook, assignment,
                                           max_score=checks.GRADED_CELLS[gid].points, cell_type="code")
        path = os.path.join(root, SOURCE_DIRECTORY, assignment, notebook + ".ipynb")
        if not os.path.exists(path):
            continue
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            nbg = cell.metadata.get("nbgrader")
            if not nbg or not nbg.get("grade_id"):
                continue
            name = nbg["grade_id"]
            if is_solution(cell):
                gb.update_or_create_solution_cell(name, notebook, assignment)
            if is_grade(cell) and name not in checks.GRADED_CELLS:
                continue  # a graded cell the checks do not know: not registered
            gb.update_or_create_source_cell(name, notebook, assignment, cell_type=cell.cell_type,
                                            locked=is_locked(cell), source=cell.source,
                                            checksum=compute_checksum(cell))


def _alembic_on_path():
    """nbgrader runs the `alembic` command when it creates a database; find the one next to Python."""
    if shutil.which("alembic") is None:
        here = os.path.dirname(sys.executable)
        if os.path.exists(os.path.join(here, "alembic")):
            os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


def open_gradebook(db_url, course_id=COURSE_ID):
    _alembic_on_path()
    return Gradebook(db_url, course_id=course_id)


def write_gradebook(db_url, root, results, assignment=checks.ASSIGNMENT, course_id=COURSE_ID):
    """Store results ({student_id: {notebook: result dict}}) in the gradebook at db_url."""
    with warnings.catch_warnings(), open_gradebook(db_url, course_id) as gb:
        # nbgrader's add_submission trips SQLAlchemy 2's autoflush warnings; they are harmless
        warnings.simplefilter("ignore", SAWarning)
        register_assignment(gb, root, assignment)
        for student in sorted(results):
            gb.update_or_create_student(student)
            stamps = [r.get("timestamp") for r in results[student].values() if r.get("timestamp")]
            kwargs = {"timestamp": stamps[0]} if stamps else {}
            gb.update_or_create_submission(assignment, student, **kwargs)
            for notebook, result in sorted(results[student].items()):
                scores = {c["grade_id"]: c for c in result.get("cells", [])}
                for gid in checks.cells_of(notebook):
                    try:
                        grade = gb.find_grade(gid, notebook, assignment, student)
                    except MissingEntry:  # a submission recorded before this cell existed
                        grade = Grade(cell_id=gb.find_grade_cell(gid, notebook, assignment).id,
                                      notebook=gb.find_submission_notebook(notebook, assignment, student))
                        gb.db.add(grade)
                    cell = scores.get(gid, {})
                    grade.auto_score = float(cell.get("score", 0.0))
                    grade.needs_manual_grade = False
            gb.db.commit()


def gradebook_totals(db_url, assignment=checks.ASSIGNMENT, course_id=COURSE_ID):
    """{student_id: score} of the assignment as the gradebook computes it."""
    with open_gradebook(db_url, course_id) as gb:
        out = {}
        for sub in gb.assignment_submissions(assignment):
            out[sub.student.id] = float(sub.score)
        return out
