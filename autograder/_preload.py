"""What a grading worker process loads before the fork server forks it.

Imported in the fork server first: the server ends when the grading process that started
it ends (``kill -9`` included), and its workers, and their sandboxes, end with it.  Then the
grader's modules, with jsonschema (nbformat's validator) imported the cheap way that
the command line uses (``cli._import_jsonschema_without_iri_grammars``), so that starting
the workers of a parallel run costs a fraction of a second, not seconds.
"""
import os

from .proctree import FORK_SERVER_PARENT, die_with_parent

if os.environ.get(FORK_SERVER_PARENT, "").isdigit():   # set by grading._start_fork_server
    die_with_parent(int(os.environ[FORK_SERVER_PARENT]))

from .cli import _import_jsonschema_without_iri_grammars  # noqa: E402

_import_jsonschema_without_iri_grammars()

from . import checks, grading, sandbox, submission  # noqa: E402,F401
from .assignment import load_check_modules  # noqa: E402

# the checks of every assignment (autograder/assignments/), as the grading process has them
load_check_modules()

# whether bubblewrap works here, and the runtime it mounts, found once for all the workers
sandbox.isolation_mode()
