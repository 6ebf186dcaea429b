"""nbgrader configuration of the course, in one place.

``make_config(root)`` returns the traitlets ``Config`` that every nbgrader
command of the course uses: the folder names of the course layout, the course
id, the gradebook and the code stub that replaces a solution in the release.
The ``nbgrader_config.py`` at the repository root loads it, so plain
``nbgrader ...`` commands run from the course root see the same settings as
``python -m autograder ...``.
"""
import os

from traitlets.config import Config

COURSE_ID = "cnn_backprop"
ASSIGNMENT = "cnn_layers"

SOURCE_DIRECTORY = "solutions"
RELEASE_DIRECTORY = "exercises"
SUBMITTED_DIRECTORY = "submitted"
AUTOGRADED_DIRECTORY = "autograded"
FEEDBACK_DIRECTORY = "feedback"
GRADEBOOK = "gradebook.db"

# What a learner sees where the solution was; indented by nbgrader to match.
CODE_STUB = (
    "# YOUR CODE HERE\n"
    'raise NotImplementedError("Replace this line with your implementation, '
    'then run the test cells below.")'
)


def default_db_url(root):
    """The sqlite gradebook in the course root."""
    return "sqlite:///" + os.path.join(os.path.abspath(root), GRADEBOOK)


def make_config(root, db_url=None):
    """nbgrader Config for the course rooted at ``root``.

    db_url defaults to ``sqlite:///<root>/gradebook.db``.
    """
    root = os.path.abspath(root)
    c = Config()
    c.CourseDirectory.root = root
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.source_directory = SOURCE_DIRECTORY
    c.CourseDirectory.release_directory = RELEASE_DIRECTORY
    c.CourseDirectory.submitted_directory = SUBMITTED_DIRECTORY
    c.CourseDirectory.autograded_directory = AUTOGRADED_DIRECTORY
    c.CourseDirectory.feedback_directory = FEEDBACK_DIRECTORY
    c.CourseDirectory.db_url = db_url or default_db_url(root)
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    return c


def course_config(course_dir, root=None):
    """The configuration nbgrader's own commands see in course_dir.

    ``make_config(course_dir)`` with the course's ``nbgrader_config.py`` (when there is one)
    loaded on top, so that what an instructor sets there for nbgrader (the late-submission
    policy ``c.LateSubmissionPlugin.penalty_method``, a custom ``c.AssignLatePenalties.plugin_class``,
    the due dates below) also holds for ``python -m autograder grade``.
    """
    from traitlets.config.loader import PyFileConfigLoader

    course_dir = os.path.abspath(course_dir)
    c = make_config(course_dir)
    path = os.path.join(course_dir, "nbgrader_config.py")
    if os.path.isfile(path):
        c.merge(PyFileConfigLoader("nbgrader_config.py", path=course_dir).load_config())
    return c


def duedate_of(config, assignment):
    """The due date the course configuration sets for assignment (``c.CourseGrading.duedates``), or None.

    ``c.CourseGrading.duedates = {"cnn_layers": "2026-03-06 23:59:00 Europe/Berlin"}`` in
    nbgrader_config.py; without it the gradebook's due date stands (``nbgrader db assignment
    add cnn_layers --duedate=...``).
    """
    section = config.get("CourseGrading", {}) if hasattr(config, "get") else {}
    dates = section.get("duedates", {}) if hasattr(section, "get") else {}
    return dates.get(assignment) if isinstance(dates, dict) else None
