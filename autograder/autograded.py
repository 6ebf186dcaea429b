"""nbgrader's ``autograded/`` notebooks, written from our verdicts, for formgrader and generate_feedback.

``write(course_dir, spec, result, submitted_path)`` writes
``COURSE/autograded/<student>/<assignment>/<notebook>.ipynb``: the learner's notebook,
never executed, with

* every graded test cell restored from the source notebook (the learner's copy
  never counts) and its output replaced by our verdict: status, points and the
  feedback lines of the hidden checks (never their inputs);
* the nbgrader metadata of every cell the source knows taken from the source, and
  removed from cells it does not know (a learner's copy of a graded cell), so that
  each grade_id appears once and is in the gradebook;
* graded test cells the learner deleted appended at the end, so that formgrader
  shows every score;
* a notebook that is missing or cannot be read replaced by the released notebook
  with a first cell that says why.

The learner's own outputs are dropped: the grader never ran the notebook, so they
would show what the learner's kernel printed, not what was graded.

Nothing the learner wrote can run or load anything where the notebook is shown
(formgrader renders it with nbconvert, unsanitised, on the Jupyter server's own
origin, in the instructor's session): every cell is rebuilt from its type, its
text and nbgrader's metadata from the source, nothing else (no outputs,
attachments or other metadata of the learner's; the notebook's metadata is the
source's).  A code cell's text is shown as highlighted code (escaped).  Markdown,
raw and any other cell the learner wrote is shown as its text, verbatim, in a fenced
block that markdown renders as escaped code; only a markdown cell whose text is
exactly one of the source's (the instructor's own) is rendered as markdown.  A
grade_id that is not a string (a list, a number) or not one of the source's is
no grade_id.  The notebook's metadata records the version of this rule
(``FORMAT``); ``grade`` writes again every notebook of an earlier version
(``is_current``), so an upgrade leaves no notebook written by the old rule.
"""
import copy
import os
import re

import nbformat

from .files import atomic_write
from .nbgrader_config import AUTOGRADED_DIRECTORY, RELEASE_DIRECTORY
from .safeio import UnsafeFile, read_regular
from .submission import MAX_NOTEBOOK_BYTES, NotebookUnreadable, _grade_id, read_notebook

#: the version of what ``build`` writes, kept in the notebook's metadata; a notebook written by an
#: earlier version (which kept the learner's markup) is written again on the next run
FORMAT = 2
_FORMAT_MARK = f'"autograded_format": {FORMAT}'.encode("ascii")

STATUS_LINE = {"passed": "passed", "failed": "FAILED", "error": "ERROR", "timeout": "TIME LIMIT",
               "out-of-memory": "OUT OF MEMORY", "killed": "STOPPED", "ungradable": "NOT GRADED"}


def path_of(course_dir, student, assignment, notebook):
    return os.path.join(course_dir, AUTOGRADED_DIRECTORY, student, assignment, notebook + ".ipynb")


def _num(x):
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def verdict_text(cell):
    status = str(cell.get("status", ""))
    head = (f"Hidden checks: {STATUS_LINE.get(status, status)}, "
            f"{_num(cell.get('score', 0))} / {_num(cell.get('max_score', 0))} point(s)")
    lines = [str(line) for line in cell.get("feedback", []) if status != "passed"]
    return "\n".join([head] + [f"  - {line}" for line in lines]) + "\n"


def _output(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _source_cells(spec, notebook):
    nb = nbformat.read(spec.source_path(notebook), as_version=4)
    known = {}
    for cell in nb.cells:
        gid = _grade_id(cell)
        if gid:
            known.setdefault(gid, cell)
    return nb, known


def _text(cell):
    """A learner cell's text: its source when that is text (nbformat joins a list of lines), else '';
    a lone surrogate (JSON allows "\\udfff", UTF-8 cannot hold it) becomes '?'."""
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    return source.encode("utf-8", "replace").decode("utf-8") if isinstance(source, str) else ""


def inert_markdown(text):
    """Markdown that shows text verbatim and renders nothing of it: a fenced code block whose fence
    is longer than any run of backticks in text, so nothing in text can end it."""
    text = re.sub(r"\r\n?", "\n", text).replace("\0", "\ufffd")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _learner_notebook(path):
    """(notebook, None) or (None, why it cannot be shown)."""
    if not os.path.lexists(path):
        return None, "the notebook was not submitted"
    try:  # without outputs, bounded as the grader reads it
        nb = read_notebook(path, keep_text=True)[0]
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
        return nb, None
    except NotebookUnreadable as exc:
        return None, f"the submitted notebook could not be read ({exc})"
    except Exception as exc:  # not readable as a notebook: show the release instead
        return None, f"the submitted notebook could not be read ({type(exc).__name__})"


def build(spec, result, submitted_path, root):
    """The autograded notebook (a NotebookNode) for one stored result."""
    notebook = result["notebook"]
    source, known = _source_cells(spec, notebook)
    graded = set(spec.grade_ids(notebook))
    verdicts = {c["grade_id"]: c for c in result.get("cells", [])}
    nb, why = _learner_notebook(submitted_path)
    if nb is None:
        release = os.path.join(root, RELEASE_DIRECTORY, spec.name, notebook + ".ipynb")
        nb = nbformat.read(release if os.path.isfile(release) else spec.source_path(notebook), as_version=4)
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"**Not graded from the learner's file:** {why}. "
                                                         "The released notebook is shown instead."))
    trusted = {c.source for c in source.cells if c.cell_type == "markdown"}
    if why is not None:    # the course's own notebook and our note: nothing of the learner's
        trusted.update(c.source for c in nb.cells if c.cell_type == "markdown")
    seen = set()
    cells = []
    for index, learner in enumerate(nb.cells):
        kind = learner.get("cell_type") if isinstance(learner, dict) else None
        text = _text(learner)
        gid = _grade_id(learner) if isinstance(learner, dict) else None
        if kind == "code":
            cell = nbformat.v4.new_code_cell(text)
        elif kind == "markdown" and text in trusted:
            cell = nbformat.v4.new_markdown_cell(text)
        else:              # the learner's markdown, a raw cell, anything else: its text, shown as text
            cell = nbformat.v4.new_markdown_cell(inert_markdown(text))
            kind = "markdown" if kind == "markdown" else None
        cell.id = f"cell-{index}"
        if gid in known and gid not in seen and known[gid].cell_type == kind:
            seen.add(gid)
            original = known[gid]
            cell.metadata["nbgrader"] = copy.deepcopy(original.metadata["nbgrader"])
            if gid in graded or original.metadata["nbgrader"].get("locked") and \
                    not original.metadata["nbgrader"].get("solution"):
                cell.source = original.source
        if cell.cell_type == "code" and gid in graded and gid in seen:
            cell.outputs = [_output(verdict_text(verdicts.get(gid, {"status": "ungradable"})))]
        cells.append(cell)
    for gid in spec.grade_ids(notebook):
        if gid not in seen:
            cell = copy.deepcopy(known[gid])
            cell.outputs = [_output("(this test cell was missing from the submission; restored)\n"
                                    + verdict_text(verdicts.get(gid, {"status": "ungradable"})))]
            cell.execution_count = None
            cells.append(cell)
    nb.cells = cells
    nb.metadata = copy.deepcopy(source.metadata)
    nb.metadata["autograder"] = {"autograded_format": FORMAT}
    return nb


def is_current(path):
    """Whether path holds an autograded notebook that this version of ``build`` wrote (the mark is
    looked for in its bytes: a learner's text is a JSON string there, with its quotes escaped)."""
    try:
        return _FORMAT_MARK in read_regular(path, 4 * MAX_NOTEBOOK_BYTES)
    except (OSError, UnsafeFile):
        return False


def write(course_dir, spec, result, submitted_path, root):
    """Write the autograded notebook of one result; return its path."""
    path = path_of(course_dir, result["student_id"], spec.name, result["notebook"])
    nb = build(spec, result, submitted_path, root)
    atomic_write(path, nbformat.writes(nb))
    return path


# nbgrader's side files of a submission, which its generate_feedback copies next to the
# feedback and its release_feedback reads there: the submission time and the secret that
# names the released feedback in the exchange.
SUBMISSION_FILES = ("timestamp.txt", "submission_secret.txt")
SUBMISSION_FILE_MAX_BYTES = 4096


def _side_file_problem(name, data):
    """Why nbgrader could not use this side file (None when it can)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "it is not ASCII text"
    if not text.strip():
        return "it is empty"
    if name == "timestamp.txt":
        from nbgrader.utils import parse_utc
        try:
            parse_utc(text.strip())
        except (ValueError, OverflowError, TypeError):  # nbgrader's generate_feedback would stop on it
            return "it does not hold a date"
    elif any(not ch.isprintable() for ch in text):
        return "it holds control characters"
    return None


def carry_submission_files(course_dir, student, assignment, submitted_folder):
    """Copy the submission's ``timestamp.txt`` and ``submission_secret.txt`` into autograded/.

    ``nbgrader generate_feedback`` copies them on to ``feedback/<student>/<assignment>/``
    (and, without ``--force``, regenerates a submission whose timestamp is newer), and
    ``nbgrader release_feedback`` needs both there.  Each is copied byte for byte, only
    from a regular file (never a link, FIFO or device) of at most
    SUBMISSION_FILE_MAX_BYTES that nbgrader can use; a copy left from an earlier
    submission is removed when the new one has none.  Returns a note per file not copied.
    """
    from .safeio import UnsafeFile
    dest_folder = os.path.dirname(path_of(course_dir, student, assignment, "x"))
    notes = []
    for name in SUBMISSION_FILES:
        dest = os.path.join(dest_folder, name)
        try:
            data = read_regular(os.path.join(submitted_folder, name), SUBMISSION_FILE_MAX_BYTES)
            problem = _side_file_problem(name, data)
        except FileNotFoundError:
            data, problem = None, None
        except (OSError, UnsafeFile) as exc:
            data, problem = None, str(exc) if isinstance(exc, UnsafeFile) else exc.strerror
        if data is not None and problem is None:
            atomic_write(dest, data.decode("ascii"))
            continue
        if problem is not None:
            notes.append(f"{name} was not copied to autograded/ ({problem})")
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
    return notes
