"""Importing nbformat's validator the cheap way (a low module: it imports nothing of the grader).

The command line, the grading workers (``_preload``) and the Gradescope runner all call
``import_jsonschema_without_iri_grammars`` before nbformat validates a notebook.
"""
import sys


def import_jsonschema_without_iri_grammars():
    """Import jsonschema (nbformat's validator) without ``rfc3987_syntax``.

    When that package is installed (Jupyter's event schemas pull it in), jsonschema
    compiles 38 parser grammars on import, for the "iri" string formats, about 3 s of
    every command; notebook schemas never use those formats.  The module is hidden only
    while jsonschema registers its format checkers.
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        return
    sys.modules["rfc3987_syntax"] = None      # makes `import rfc3987_syntax` raise ImportError
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        pass
    finally:
        if sys.modules.get("rfc3987_syntax", 0) is None:
            del sys.modules["rfc3987_syntax"]
