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
