"""What a grading worker process loads before the fork server forks it.

The grader's modules, with jsonschema (nbformat's validator) imported the cheap way that
the command line uses (``cli._import_jsonschema_without_iri_grammars``), so that starting
the workers of a parallel run costs a fraction of a second, not seconds.
"""
from .cli import _import_jsonschema_without_iri_grammars

_import_jsonschema_without_iri_grammars()

from . import checks, grading, sandbox, submission  # noqa: E402,F401

# whether bubblewrap works here, and the runtime it mounts, found once for all the workers
sandbox.isolation_mode()
