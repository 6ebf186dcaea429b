"""The gradebook's database URL, checked before a run grades anything.

Only SQLAlchemy's core is needed to connect once; nbgrader's API (``autograder.gradebook``)
is not, so a run can check its gradebook first and load the rest while it grades.
"""
import os


class GradebookUnavailable(Exception):
    """The gradebook URL cannot be used; the message says why and what to do."""


def check_url(db_url):
    """Connect once to db_url; raise GradebookUnavailable with the reason and the fix."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    try:
        url = make_url(db_url)
    except ArgumentError as exc:
        raise GradebookUnavailable(f"'{db_url}' is not a database URL ({exc}); write it like "
                                   "sqlite:///path/gradebook.db or postgresql://user@host/database") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folder = os.path.dirname(os.path.abspath(url.database))
        try:
            os.makedirs(folder, exist_ok=True)   # the course folder of a first run
        except OSError as exc:
            raise GradebookUnavailable(f"cannot create {folder} for the gradebook: {exc.strerror}") from None
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
