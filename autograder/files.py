"""The grader's own files: written whole or not at all, and CSV that a spreadsheet opens safely.

``atomic_write(path, text)`` leaves ``path`` holding either its old or its whole new content,
whatever stops the writer.  ``csv_rows`` neutralises text fields (names and messages from an LMS
or a learner may start with =, +, - or @, which a spreadsheet would run as a formula).

A low module: it imports nothing of the grader, so every module that writes files (grading,
autograded, lms, watch, gradescope) takes these from here.
"""
import csv
import io
import os
import tempfile


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, text, mode=None):
    """Write text (str, as UTF-8; or bytes) to path so that path holds either the old or the whole
    new content; ``mode`` sets the file's permission bits before it appears (default 0600)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if isinstance(text, bytes)
              else os.fdopen(fd, "w", encoding="utf-8", newline="")) as fh:
            fh.write(text)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(value):
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def csv_text(value):
    """A text field as a spreadsheet shows it and never runs it: a leading ' before =, +, -, @, tab, CR."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_rows(rows):
    """Rows for a CSV file that a spreadsheet opens: text fields neutralised, numbers as they are."""
    return [[v if _is_number(v) else csv_text(v) for v in row] for row in rows]


def write_csv(path, columns, rows):
    """Write a CSV file (header columns, then rows through csv_rows) with atomic_write."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(csv_rows(rows))
    atomic_write(path, buf.getvalue())
