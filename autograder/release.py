"""Release: generate ``exercises/<assignment>/`` from ``solutions/<assignment>/``.

The student version is made by nbgrader's own ``GenerateAssignment`` converter
(solutions replaced by the code stub, outputs cleared, read-only cells locked,
checksums recorded), run on a copy of the source folder in a scratch course
root. The gradebook is not touched unless ``db=True``. The result depends on
the source notebooks only, so releasing twice gives byte-identical files, and
``release(root, check=True)`` can tell whether the committed release is stale.
"""
import logging
import os
import re
import shutil
import sys
import tempfile

import nbformat

from .nbgrader_config import (ASSIGNMENT, RELEASE_DIRECTORY, SOURCE_DIRECTORY,
                              make_config)

# Text that must never reach a learner.
FORBIDDEN = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
             "HIDDEN TESTS")
_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc", ".DS_Store")


class ReleaseError(RuntimeError):
    """nbgrader could not generate the release, or the result is unsafe to publish."""


def _run_generate(course_root, assignment, release_dir=None, use_db=False, db_url=None):
    """Run nbgrader's GenerateAssignment for one assignment of course_root."""
    # imported here: nbgrader is heavy and only the release needs it
    from nbgrader.converters import GenerateAssignment, NbGraderException
    from nbgrader.coursedir import CourseDirectory

    config = make_config(course_root, db_url=db_url)
    config.CourseDirectory.assignment_id = assignment
    if release_dir is not None:
        config.CourseDirectory.release_directory = release_dir
    config.BaseConverter.force = True
    if not use_db:
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False
    coursedir = CourseDirectory(config=config)
    converter = GenerateAssignment(coursedir=coursedir, config=config)
    errors = _Collect()
    old_level = converter.log.level
    converter.log.addHandler(errors)
    converter.log.setLevel(logging.WARNING)
    # nbgrader runs the `alembic` command when it creates a gradebook: make the one
    # installed next to this Python findable even when its environment is not activated
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + old_path
    try:
        converter.start()
    except NbGraderException as err:
        detail = "\n".join(errors.messages) or str(err)
        raise ReleaseError(f"nbgrader could not generate '{assignment}':\n{detail}") from err
    finally:
        os.environ["PATH"] = old_path
        converter.log.removeHandler(errors)
        converter.log.setLevel(old_level)


class _Collect(logging.Handler):
    """Keeps nbgrader's error messages for the exception we raise."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _read_tree(folder):
    """{relative posix path: bytes} of every file under folder (empty if absent)."""
    files = {}
    if not os.path.isdir(folder):
        return files
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in (".ipynb_checkpoints", "__pycache__"))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            with open(path, "rb") as fh:
                files[rel] = fh.read()
    return files


#: A link to a page of the book in a source notebook: ``[text](book:03_backprop_2d)``, with an
#: optional ``#anchor``.  The release turns it into the page's address on the published book.
BOOK_LINK = re.compile(r"\]\(book:([A-Za-z0-9_\-]+)(#[A-Za-z0-9_\-]+)?\)")


def book_url(root):
    """The published book's base URL: ``html.baseurl`` of the book's _config.yml, ending in '/'."""
    import yaml

    path = os.path.join(root, "_config.yml")
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ReleaseError(f"{path}: cannot read the book's configuration ({exc.strerror})") from exc
    url = ((config.get("html") or {}).get("baseurl") or "").strip()
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        raise ReleaseError(f"{path}: html.baseurl is {url!r}; set it to the address where the book is "
                           "published (e.g. https://your-course.example.org/cnn-book/): the exercise "
                           "notebooks link the book's pages there")
    return url if url.endswith("/") else url + "/"


def link_book(text, base):
    """text with every ``(book:PAGE#anchor)`` link turned into the page's published URL."""
    return BOOK_LINK.sub(lambda m: f"]({base}book/{m.group(1)}.html{m.group(2) or ''})", text)


def _normalise(data, base):
    """Canonical bytes of a release notebook: no outputs, no execution counts, book links by URL."""
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = link_book(cell.source, base)
    text = nbformat.writes(nb)
    for marker in FORBIDDEN:
        if marker in text:
            raise ReleaseError(f"the release still contains '{marker}'")
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def generate(root, assignment=ASSIGNMENT):
    """The release of an assignment as {relative path: bytes}, without writing anything."""
    root = os.path.abspath(root)
    source = os.path.join(root, SOURCE_DIRECTORY, assignment)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"no source folder {SOURCE_DIRECTORY}/{assignment} in {root}")
    with tempfile.TemporaryDirectory(prefix="release-") as scratch:
        shutil.copytree(source, os.path.join(scratch, SOURCE_DIRECTORY, assignment), ignore=_IGNORE)
        _run_generate(scratch, assignment)
        files = _read_tree(os.path.join(scratch, RELEASE_DIRECTORY, assignment))
    if not any(rel.endswith(".ipynb") for rel in files):
        raise ReleaseError(f"nbgrader produced no notebook for '{assignment}'")
    base = book_url(root)
    return {rel: (_normalise(data, base) if rel.endswith(".ipynb") else data)
            for rel, data in files.items()}


def release(root, assignment=ASSIGNMENT, check=False, *, db=False, db_url=None):
    """Regenerate exercises/<assignment>/ from solutions/<assignment>/.

    Returns the release files (paths relative to root) that differ from what
    the source notebooks give: with check=True nothing is written and an empty
    list means the committed release is up to date; otherwise those files have
    just been rewritten (or removed). db=True also records the assignment, its
    notebooks and graded cells in the gradebook (nbgrader's usual bookkeeping);
    by default the gradebook is left alone.
    """
    root = os.path.abspath(root)
    from .assignment import problems
    found = problems(root, assignment)
    if found:
        raise ReleaseError(f"the notebooks of '{assignment}' disagree with its registered checks; nothing was "
                           "released:\n  " + "\n  ".join(found))
    wanted = generate(root, assignment)
    dest = os.path.join(root, RELEASE_DIRECTORY, assignment)
    present = _read_tree(dest)
    stale = sorted(rel for rel in set(wanted) | set(present) if wanted.get(rel) != present.get(rel))
    changed = [f"{RELEASE_DIRECTORY}/{assignment}/{rel}" for rel in stale]
    if check:
        return changed
    for rel in stale:
        path = os.path.join(dest, *rel.split("/"))
        if rel not in wanted:
            os.remove(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(wanted[rel])
    if db:
        with tempfile.TemporaryDirectory(prefix="release-db-") as scratch:
            # the gradebook is filled from the source; the files it writes are thrown away
            _run_generate(root, assignment, release_dir=scratch, use_db=True, db_url=db_url)
    return changed
