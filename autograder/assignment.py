"""The assignments of the course, read from the source notebooks and bound to the registered checks.

The notebooks are the single truth of what is graded: an assignment's graded cells
and their points are those of ``solutions/<assignment>/<notebook>.ipynb`` (nbgrader's
``grade: true`` cells and their ``points``).  Every graded cell is bound by its
grade_id to a check registered in ``autograder.checks`` (``GRADED_CELLS`` /
``CHECKS``, ``checks.register``) by a module of ``autograder/assignments/``.  ``problems(root, name)`` lists every disagreement,
each naming the notebook and the cell; ``load(root, name)`` refuses to return an
assignment that has one, so ``release``, ``validate`` and ``grade`` all stop on it.

A course adds an assignment without editing the grader: its source notebooks go
under ``solutions/<assignment>/`` and a module that calls ``checks.register`` for
each graded cell goes under ``autograder/assignments/`` (imported by
``load_check_modules``).
"""
import importlib
import os
import pkgutil
from dataclasses import dataclass

from . import checks
from .nbgrader_config import RELEASE_DIRECTORY, SOURCE_DIRECTORY


class AssignmentError(Exception):
    """The assignment is unknown, or its notebooks disagree with its checks; the message says how to fix it."""


@dataclass(frozen=True)
class Cell:
    grade_id: str
    notebook: str
    function: str
    points: float


@dataclass(frozen=True)
class Assignment:
    name: str
    root: str
    notebooks: tuple          # notebook names, in registry order
    cells: dict               # notebook -> tuple of Cell, in notebook order

    def cells_of(self, notebook):
        return self.cells[notebook]

    def grade_ids(self, notebook):
        return [c.grade_id for c in self.cells[notebook]]

    def points(self, grade_id):
        for cells in self.cells.values():
            for c in cells:
                if c.grade_id == grade_id:
                    return c.points
        raise KeyError(grade_id)

    def max_score(self, notebook=None):
        return float(sum(c.points for nb, cells in self.cells.items() if notebook in (None, nb)
                         for c in cells))

    def source_path(self, notebook, folder=SOURCE_DIRECTORY):
        return os.path.join(self.root, folder, self.name, notebook + ".ipynb")


_LOADED = False


def load_check_modules():
    """Import every module of ``autograder.assignments`` (each registers the checks of one assignment).

    Everything that reads the registry of ``autograder.checks`` calls this first.
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import assignments
    for info in pkgutil.iter_modules(assignments.__path__):
        importlib.import_module(f"{assignments.__name__}.{info.name}")


def registered():
    """Names of the assignments whose checks are registered."""
    load_check_modules()
    return sorted(checks.ASSIGNMENTS)


def unknown_message(name):
    return (f"unknown assignment '{name}': the assignments with registered checks are "
            f"{', '.join(registered())}. A new assignment needs its source notebooks in "
            f"{SOURCE_DIRECTORY}/{name}/ and a module in autograder/assignments/ that registers a check "
            "for each graded cell (autograder.checks.register)")


def graded_cells(path):
    """[(grade_id, points, cell number counting from 1)] of the graded cells of a notebook file."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    out = []
    for index, cell in enumerate(nb.cells, start=1):
        nbg = cell.get("metadata", {}).get("nbgrader") or {}
        if nbg.get("grade"):
            out.append((nbg.get("grade_id"), nbg.get("points"), index))
    return out


def problems(root, name, folder=SOURCE_DIRECTORY):
    """Every disagreement between the notebooks of folder/<name>/ and the registered checks (list of str)."""
    load_check_modules()
    if name not in checks.ASSIGNMENTS:
        return [unknown_message(name)]
    found = []
    seen = {}
    for notebook in checks.notebooks_of(name):
        rel = f"{folder}/{name}/{notebook}.ipynb"
        path = os.path.join(root, folder, name, notebook + ".ipynb")
        registered_ids = checks.cells_of(notebook)
        if not os.path.isfile(path):
            found.append(f"{rel} does not exist, but checks are registered for its cells "
                         f"({', '.join(registered_ids)})")
            continue
        try:
            cells = graded_cells(path)
        except Exception as exc:  # not a notebook: nbformat's message says why
            found.append(f"{rel}: not a readable notebook ({type(exc).__name__}: {exc})")
            continue
        for gid, points, index in cells:
            where = f"{rel}, cell {index}"
            if not gid:
                found.append(f"{where}: a graded cell without a grade_id")
                continue
            if gid in seen:
                found.append(f"{where}: grade_id '{gid}' is also used by {seen[gid]}")
                continue
            seen[gid] = where
            spec = checks.GRADED_CELLS.get(gid)
            if spec is None or gid not in checks.CHECKS:
                found.append(f"{where}: graded cell '{gid}' has no registered check; register one "
                             "(autograder.checks.register) or make the cell ungraded")
                continue
            if spec.notebook != notebook:
                found.append(f"{where}: graded cell '{gid}' is registered for {spec.notebook}.ipynb")
                continue
            try:
                pts = float(points)
            except (TypeError, ValueError):
                found.append(f"{where}: graded cell '{gid}' has no valid points ({points!r})")
                continue
            if pts != spec.points:
                found.append(f"{where}: graded cell '{gid}' gives {pts:g} point(s), but its check is "
                             f"registered for {spec.points:g}; change the cell's points or the check's "
                             "registration so that they agree")
        present = {gid for gid, _p, _i in cells}
        for gid in registered_ids:
            if gid not in present:
                found.append(f"{rel}: the check '{gid}' is registered, but the notebook has no graded "
                             f"cell with that grade_id")
    other = os.path.join(root, folder, name)
    if os.path.isdir(other):
        known = set(checks.notebooks_of(name))
        for entry in sorted(os.listdir(other)):
            stem = entry[:-len(".ipynb")] if entry.endswith(".ipynb") else None
            if stem and stem not in known:
                path = os.path.join(other, entry)
                try:
                    extra = graded_cells(path)
                except Exception:
                    extra = []
                for gid, _points, index in extra:
                    found.append(f"{folder}/{name}/{entry}, cell {index}: graded cell '{gid}' in a notebook "
                                 "that has no registered checks")
    return found


def load(root, name):
    """The Assignment, its points read from the source notebooks; AssignmentError on any disagreement."""
    root = os.path.abspath(root)
    found = problems(root, name)
    if found:
        if len(found) == 1 and found[0].startswith("unknown assignment"):
            raise AssignmentError(found[0])
        raise AssignmentError(f"the notebooks of '{name}' disagree with its registered checks:\n  "
                              + "\n  ".join(found))
    cells = {}
    for notebook in checks.notebooks_of(name):
        path = os.path.join(root, SOURCE_DIRECTORY, name, notebook + ".ipynb")
        cells[notebook] = tuple(Cell(gid, notebook, checks.GRADED_CELLS[gid].function, float(points))
                                for gid, points, _i in graded_cells(path))
    return Assignment(name, root, tuple(checks.notebooks_of(name)), cells)


def release_problems(root, name):
    """problems() for the released notebooks (exercises/): the learners' copies must agree too."""
    return problems(root, name, RELEASE_DIRECTORY)
