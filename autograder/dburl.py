"""The gradebook's database URL, checked before a run grades anything.

nbgrader's API (``autograder.gradebook``) is not needed to connect once, so a run can check
its gradebook first and load the rest while it grades.  A plain SQLite file is opened with
the standard library's ``sqlite3`` (the driver SQLAlchemy's SQLite dialect uses), any
other URL through SQLAlchemy's core.
"""
import os
import re

#: sqlite:///PATH with nothing SQLAlchemy would decode or read as options (no %, ?, #)
_SQLITE_FILE = re.compile(r"sqlite(?:\+pysqlite)?:///([^?#%]+)")


class GradebookUnavailable(Exception):
    """The gradebook URL cannot be used; the message says why and what to do."""


def _makedirs_for(path):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)   # the course folder of a first run
    except OSError as exc:
        raise GradebookUnavailable(f"cannot create {folder} for the gradebook: {exc.strerror}") from None


def _check_sqlite_file(db_url, path):
    """Open the SQLite file (created if missing, as SQLAlchemy would) and read its schema table,
    which also refuses a file that is not a database."""
    import sqlite3
    _makedirs_for(path)
    try:
        con = sqlite3.connect(path)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise GradebookUnavailable(f"cannot open the gradebook {db_url}: {' '.join(str(exc).split())[:300]}") \
            from None


def check_url(db_url):
    """Connect once to db_url; raise GradebookUnavailable with the reason and the fix."""
    plain = _SQLITE_FILE.fullmatch(db_url)
    if plain and plain.group(1) != ":memory:":
        return _check_sqlite_file(db_url, plain.group(1))
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    try:
        url = make_url(db_url)
    except ArgumentError as exc:
        raise GradebookUnavailable(f"'{db_url}' is not a database URL ({exc}); write it like "
                                   "sqlite:///path/gradebook.db or postgresql://user@host/database") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        _makedirs_for(url.database)
    try:
        engine = create_engine(url)
    except NoSuchModuleError:
        raise GradebookUnavailable(f"SQLAlchemy has no database dialect '{url.drivername}'; use sqlite:/// or "
                                   "postgresql://") from None
    except ImportError as exc:
        raise GradebookUnavailable(f"the Python driver for '{url.drivername}' is not installed ({exc.name}); "
                                   "install it (requirements.txt pins psycopg for postgresql://)") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", exc)).split())[:300]
        raise GradebookUnavailable(f"cannot open the gradebook {url.render_as_string(hide_password=True)}: "
                                   f"{detail}") from None
    finally:
        engine.dispose()
