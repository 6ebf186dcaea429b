# nbgrader reads this file when a command runs in the course root; the
# settings themselves live in autograder/nbgrader_config.py.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from autograder.nbgrader_config import make_config  # noqa: E402

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)
c.merge(make_config(os.path.dirname(os.path.abspath(__file__))))

# Grades come from `python -m autograder grade`; nbgrader autograde (on the command line or
# formgrader's "autograde" button) is refused before it can overwrite them.
c.Autograde.sanitize_preprocessors = ["autograder.nbgrader_guard.RefuseAutograde"]
