"""Build submitted notebooks for a class of synthetic learners, with the
score each of them must get.

A submission starts from the RELEASED notebook (exercises/cnn_layers), exactly
as a learner downloads it; the source of each graded function's solution cell
is replaced by a chosen variant (tests/classgen/variants.py), keeping the
cell's id and metadata as Jupyter does when a learner types into a cell.
Notebooks land in ``SUBMITTED/<student_id>/cnn_layers/<notebook>.ipynb``.

Expected scores come from the points table of docs/ARCHITECTURE.md (``POINTS``)
and the explicit ``EXPECTED_FAILS`` of each mistake; hostile cases
(tests/classgen/hostile.py) state theirs explicitly.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import variants as V

REPO = Path(__file__).resolve().parents[2]
ASSIGNMENT = "cnn_layers"
RELEASE_DIR = REPO / "exercises" / ASSIGNMENT
NOTEBOOKS = ("convolution", "pooling")

# grade_id -> points, per notebook, in notebook order (docs/ARCHITECTURE.md).
POINTS = {
    "convolution": {
        "zero_pad": 1,
        "conv_forward_shapes": 1, "conv_forward_basic": 2, "conv_forward_padding": 2,
        "conv_forward_stride": 2, "conv_forward_uneven": 2, "conv_forward_nonsquare": 2,
        "conv_forward_channels": 2, "conv_forward_inputs_unchanged": 1,
        "conv_backward_shapes": 1, "conv_backward_basic": 2, "conv_backward_padding": 2,
        "conv_backward_stride": 2, "conv_backward_uneven": 2, "conv_backward_nonsquare": 2,
        "conv_backward_channels": 2, "conv_backward_inputs_unchanged": 1,
    },
    "pooling": {
        "maxpool_forward_shapes": 1, "maxpool_forward_basic": 2, "maxpool_forward_overlap": 2,
        "maxpool_forward_general": 2, "maxpool_forward_inputs_unchanged": 1,
        "maxpool_backward_shapes": 1, "maxpool_backward_basic": 2, "maxpool_backward_overlap": 2,
        "maxpool_backward_ties": 2, "maxpool_backward_general": 2,
        "maxpool_backward_inputs_unchanged": 1,
    },
}
MAX_TOTAL = sum(sum(p.values()) for p in POINTS.values())


def function_of(grade_id: str) -> str:
    """The graded function a grade_id belongs to (its longest matching prefix)."""
    best = max((f for f in V.FUNCTIONS if grade_id == f or grade_id.startswith(f + "_")), key=len)
    return best


def grade_ids(notebook: str, function: str | None = None) -> list[str]:
    return [g for g in POINTS[notebook] if function is None or function_of(g) == function]


# ---------------------------------------------------------------------------- notebooks

_RELEASE_CACHE: dict[str, dict] = {}


def release_notebook(notebook: str) -> dict:
    """A fresh copy of the released notebook (parsed JSON)."""
    if notebook not in _RELEASE_CACHE:
        path = RELEASE_DIR / f"{notebook}.ipynb"
        _RELEASE_CACHE[notebook] = json.loads(path.read_text(encoding="utf-8"))
    return copy.deepcopy(_RELEASE_CACHE[notebook])


def _lines(source: str) -> list[str]:
    """Jupyter's on-disk form of a cell source: lines that keep their newline."""
    return source.splitlines(keepends=True)


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def grade_id_of(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def find_cell(nb: dict, grade_id: str) -> int:
    for k, cell in enumerate(nb["cells"]):
        if grade_id_of(cell) == grade_id:
            return k
    raise KeyError(f"no cell with grade_id {grade_id!r}")


def set_function(nb: dict, function: str, source: str) -> None:
    """Replace the source of FUNCTION's solution cell, as a learner's edit would."""
    cell = nb["cells"][find_cell(nb, f"{function}_solution")]
    if not cell_source(cell).startswith(f"def {function}("):
        raise AssertionError(f"the released solution cell of {function} does not start with def {function}(")
    cell["source"] = _lines(source)
    cell["outputs"] = []
    cell["execution_count"] = None


def new_code_cell(source: str, seed: str) -> dict:
    """A cell the learner added: no nbgrader metadata, a fresh id."""
    cid = hashlib.sha1(seed.encode()).hexdigest()[:8]
    return {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {},
            "outputs": [], "source": _lines(source)}


def insert_cell(nb: dict, source: str, before: str | None = None, after: str | None = None,
                seed: str = "") -> None:
    """Insert a learner cell before/after the cell with that grade_id (default: at the end)."""
    cell = new_code_cell(source, seed or f"{before}{after}{source}{len(nb['cells'])}")
    if before is not None:
        nb["cells"].insert(find_cell(nb, before), cell)
    elif after is not None:
        nb["cells"].insert(find_cell(nb, after) + 1, cell)
    else:
        nb["cells"].append(cell)


def dump_notebook(nb: dict) -> str:
    """JSON as Jupyter writes it (indent 1, unicode kept, trailing newline)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- students

FUNCTIONS_OF = {nb: [f for f in V.FUNCTIONS if V.NOTEBOOK_OF[f] == nb] for nb in NOTEBOOKS}

# notebook states
SUBMITTED, RELEASE, MISSING, CORRUPT, NO_CELLS = "submitted", "release", "missing", "corrupt", "no-cells"


@dataclass
class Student:
    """One synthetic learner.

    ``variants`` maps a function to a label: a style of ``variants.CORRECT``
    (``loops``, ``vectorized``, ``im2col`` or a named style), a mistake of
    ``variants.MISTAKES``, or ``stub`` (the released body, untouched).
    ``sources`` overrides the source of a function's cell (hostile cases).
    ``extra`` adds learner cells: notebook -> [(before_grade_id or None, source)].
    ``edits`` change a notebook's JSON after everything else (hostile cases);
    an edit may return a str to be written verbatim (corrupt files).
    ``zero`` lists grade_ids or function names that must score 0 whatever the
    variants say; ``status`` fixes the status of some grade_ids (a string, or
    a tuple of the statuses that are acceptable).
    """

    student_id: str
    kind: str = "correct"
    variants: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    notebooks: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    edits: dict = field(default_factory=dict)
    zero: set = field(default_factory=set)
    status: dict = field(default_factory=dict)
    note: str = ""

    def state(self, notebook: str) -> str:
        return self.notebooks.get(notebook, SUBMITTED)

    def label(self, function: str) -> str:
        return self.variants.get(function, "stub")

    def source(self, function: str) -> str | None:
        """The cell source for function, or None to keep the released stub."""
        if function in self.sources:
            return self.sources[function]
        label = self.label(function)
        if label == "stub":
            return None
        if label in V.MISTAKES:
            fn, src = V.MISTAKES[label]
            if fn != function:
                raise ValueError(f"mistake {label} is a mistake of {fn}, not {function}")
            return src
        return V.correct_style(function, label)

    # -- expectations -------------------------------------------------------
    def expected(self) -> dict:
        """{notebook: {grade_id: score}}"""
        out = {}
        for nb in NOTEBOOKS:
            out[nb] = {}
            for gid, pts in POINTS[nb].items():
                out[nb][gid] = pts if self._passes(nb, gid) else 0
        return out

    def _passes(self, nb: str, gid: str) -> bool:
        if self.state(nb) != SUBMITTED:
            return False
        fn = function_of(gid)
        if gid in self.zero or fn in self.zero:
            return False
        if fn in self.sources:       # a hostile source passes unless listed in zero
            return True
        label = self.label(fn)
        if label == "stub":
            return False
        if label in V.MISTAKES:
            return gid not in V.EXPECTED_FAILS[label]
        return True

    def expected_status(self) -> dict:
        """{notebook: {grade_id: status, tuple of statuses, or None (any failing status)}}"""
        exp = self.expected()
        out = {}
        for nb in NOTEBOOKS:
            out[nb] = {}
            for gid in POINTS[nb]:
                if gid in self.status:
                    out[nb][gid] = self.status[gid]
                elif exp[nb][gid] == POINTS[nb][gid]:
                    out[nb][gid] = "passed"
                elif self.state(nb) in (MISSING, CORRUPT, NO_CELLS):
                    out[nb][gid] = "ungradable"
                elif self.state(nb) == RELEASE:
                    out[nb][gid] = "error"          # the stub raises NotImplementedError
                else:
                    fn = function_of(gid)
                    label = self.label(fn)
                    if fn in self.sources or gid in self.zero or fn in self.zero:
                        out[nb][gid] = None
                    elif label == "stub":
                        out[nb][gid] = "error"
                    elif label in V.MISTAKES:
                        out[nb][gid] = V.EXPECTED_STATUS.get(label)
                    else:
                        out[nb][gid] = None
        return out

    def total(self) -> float:
        return sum(sum(v.values()) for v in self.expected().values())

    # -- writing ------------------------------------------------------------
    def notebook_json(self, nb_name: str) -> dict | str | None:
        state = self.state(nb_name)
        if state == MISSING:
            return None
        nb = release_notebook(nb_name)
        if state == CORRUPT:
            text = dump_notebook(nb)
            return text[: len(text) // 3]          # a file cut short mid-write
        if state == NO_CELLS:
            nb["cells"] = []
            return nb
        if state == SUBMITTED:
            for fn in FUNCTIONS_OF[nb_name]:
                src = self.source(fn)
                if src is not None:
                    set_function(nb, fn, src)
            for k, (anchor, src) in enumerate(self.extra.get(nb_name, [])):
                insert_cell(nb, src, before=anchor, seed=f"{self.student_id}-{nb_name}-{k}")
        for edit in self.edits.get(nb_name, []):
            res = edit(nb)
            if res is not None:
                nb = res
        return nb

    def write(self, submitted: Path) -> None:
        folder = Path(submitted) / self.student_id / ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        for nb_name in NOTEBOOKS:
            content = self.notebook_json(nb_name)
            if content is None:
                continue
            text = content if isinstance(content, str) else dump_notebook(content)
            (folder / f"{nb_name}.ipynb").write_text(text, encoding="utf-8")

    def manifest(self) -> dict:
        return {"kind": self.kind, "note": self.note, "variants": dict(self.variants),
                "notebooks": {nb: self.state(nb) for nb in NOTEBOOKS},
                "expected": self.expected(), "expected_status": self.expected_status(),
                "total": self.total(), "max_total": MAX_TOTAL}


def write_class(students, submitted: Path) -> dict:
    """Write every student's notebooks; return the manifest {student_id: ...}."""
    submitted = Path(submitted)
    submitted.mkdir(parents=True, exist_ok=True)
    ids = [s.student_id for s in students]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate student ids")
    for s in students:
        s.write(submitted)
    return {s.student_id: s.manifest() for s in students}


def write_manifest(manifest: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- classes

def all_correct(student_id: str, style: str | dict = "vectorized", **kw) -> Student:
    if isinstance(style, str):
        variants = {f: style for f in V.FUNCTIONS}
    else:
        variants = dict(style)
    return Student(student_id, kind=kw.pop("kind", "correct"), variants=variants, **kw)


def _rotating_styles(k: int) -> dict:
    """A mix of styles that differs from one student to the next."""
    styles = ("loops", "vectorized", "im2col")
    return {f: styles[(k + j) % 3] for j, f in enumerate(V.FUNCTIONS)}


def with_mistake(student_id: str, mistake: str, k: int = 0) -> Student:
    fn = V.MISTAKES[mistake][0]
    variants = {f: ("vectorized" if (k + j) % 2 else "im2col") for j, f in enumerate(V.FUNCTIONS)}
    variants[fn] = mistake
    return Student(student_id, kind="mistake", variants=variants, note=mistake)


# Helpers and constants a learner defines in cells of their own.
HELPER_CELL = '''\
PAD_AXES = (2, 3)


def pad_hw(x, pad):
    """Zeros around the last two axes."""
    widths = [(0, 0)] * x.ndim
    for axis in PAD_AXES:
        widths[axis] = (pad, pad)
    return np.pad(x, widths)


def out_size(size, k, stride, pad=0):
    return (size + 2 * pad - k) // stride + 1
'''

HELPER_USERS = {
    "zero_pad": '''\
def zero_pad(x, pad):
    return pad_hw(x, pad)
''',
    "conv_forward": '''\
def conv_forward(x, w, b, stride=1, pad=0):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = out_size(H, HH, stride, pad), out_size(W, WW, stride, pad)
    xp = pad_hw(x, pad)
    out = np.empty((N, F, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, stride, pad)
''',
}

POOL_HELPER_CELL = '''\
def window_slices(i, j, pool, stride):
    return slice(i * stride, i * stride + pool), slice(j * stride, j * stride + pool)
'''

POOL_HELPER_USER = '''\
def maxpool_forward(x, pool=2, stride=2):
    N, C, H, W = x.shape
    Ho, Wo = (H - pool) // stride + 1, (W - pool) // stride + 1
    out = np.empty((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            rows, cols = window_slices(i, j, pool, stride)
            out[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
    return out, (x, pool, stride)
'''


def with_helper_cells(student_id: str, k: int = 0) -> Student:
    """Correct code that depends on helpers and constants of another cell."""
    s = all_correct(student_id, _rotating_styles(k), kind="helpers",
                    note="functions use helpers defined in cells of their own")
    s.sources = {"zero_pad": HELPER_USERS["zero_pad"], "conv_forward": HELPER_USERS["conv_forward"],
                 "maxpool_forward": POOL_HELPER_USER}
    s.extra = {"convolution": [("zero_pad_solution", HELPER_CELL)],
               "pooling": [("maxpool_forward_solution", POOL_HELPER_CELL)]}
    return s


def standard_class(n: int = 50, prefix: str = "s", skip=("numerical_backward",)) -> list[Student]:
    """A class of at least ``n`` students: every correct style, every mistake
    but those in ``skip``, untouched release notebooks, missing and partial
    submissions, helpers in other cells.  Deterministic."""
    students: list[Student] = []
    num = iter(range(1, 10_000))

    def sid(tag):
        return f"{prefix}{next(num):03d}_{tag}"

    # every style of every function, each in a full submission
    for style in ("loops", "vectorized", "im2col"):
        students.append(all_correct(sid(f"all_{style}"), style))
    for f, styles in V.CORRECT.items():
        for name in styles:
            if name in ("loops", "im2col"):
                continue          # covered by the uniform students above
            variants = {g: "vectorized" for g in V.FUNCTIONS}
            variants[f] = name
            students.append(all_correct(sid(f"{f}_{name}"), variants))
    for k in range(3):
        students.append(all_correct(sid(f"mixed{k}"), _rotating_styles(k)))
    # one student per mistake (the numerical backward pass, which spends its
    # whole time budget, is one of the hostile cases)
    for k, mistake in enumerate(m for m in V.MISTAKES if m not in skip):
        students.append(with_mistake(sid(mistake), mistake, k))
    # untouched release notebooks, missing notebooks, partial work
    for k in range(2):
        students.append(Student(sid("empty"), kind="empty", note="both release notebooks untouched"))
    s = all_correct(sid("no_pooling"), "vectorized", kind="missing", note="pooling.ipynb not handed in")
    s.notebooks = {"pooling": MISSING}
    students.append(s)
    s = all_correct(sid("no_convolution"), "im2col", kind="missing", note="convolution.ipynb not handed in")
    s.notebooks = {"convolution": MISSING}
    students.append(s)
    s = all_correct(sid("pooling_release"), "loops", kind="partial", note="pooling.ipynb untouched")
    s.notebooks = {"pooling": RELEASE}
    students.append(s)
    s = Student(sid("forward_only"), kind="partial", note="backward functions left as released",
                variants={"zero_pad": "nppad", "conv_forward": "einsum", "maxpool_forward": "windows"})
    students.append(s)
    s = Student(sid("two_mistakes"), kind="mistake", note="two mistakes at once",
                variants={"zero_pad": "concat", "conv_forward": "hw_swapped",
                          "conv_backward": "crop_minus_pad", "maxpool_forward": "im2col",
                          "maxpool_backward": "pool_ties_to_all"})
    students.append(s)
    # helpers and constants in other cells
    for k in range(2):
        students.append(with_helper_cells(sid("helpers"), k))
    while len(students) < n:
        k = len(students)
        students.append(all_correct(sid(f"mixed{k}"), _rotating_styles(k)))
    return students


class AssignmentClass:
    """The demo class of an assignment graded function by function (cnn_network, conv_variants):
    one learner per correct style, and one per classic mistake, written into that assignment's
    released notebooks.

    notebook_of maps each graded function to its notebook; correct[function][style] and
    mistakes[name] = (function, source) are learner code; expected_fails[name] is the set of
    grade_ids the mistake loses; there is one correct learner per style of ``styles``, and a
    mistake learner has the ``base_style`` solution elsewhere. draw_dependent[name] is the set
    of grade_ids whose verdict for that mistake depends on the course's draw (the course key
    decides it, and a regrade keeps it): the manifest lists them, and a score of 0 or the
    cell's points is right for them (see ``allowed_scores``).
    """

    def __init__(self, assignment, notebooks, notebook_of, correct, mistakes, expected_fails, styles,
                 base_style, draw_dependent=None):
        self.assignment, self.notebook_names, self.notebook_of = assignment, tuple(notebooks), dict(notebook_of)
        self.correct, self.mistakes, self.expected_fails = correct, mistakes, expected_fails
        self.draw_dependent = dict(draw_dependent or {})
        self.base_style = base_style
        self.release_dir = REPO / "exercises" / assignment
        self.styles = tuple(styles)

    def _release(self, nb):
        return json.loads((self.release_dir / f"{nb}.ipynb").read_text(encoding="utf-8"))

    def points(self):
        """grade_id -> points, per notebook, read from the released notebooks."""
        out = {}
        for nb in self.notebook_names:
            out[nb] = {c["metadata"]["nbgrader"]["grade_id"]: float(c["metadata"]["nbgrader"]["points"])
                       for c in self._release(nb)["cells"]
                       if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
        return out

    def notebooks(self, sources):
        """{notebook: notebook dict} of the release with each function's solution cell set to
        sources[function]."""
        out = {}
        for nb in self.notebook_names:
            data = self._release(nb)
            for fn, where in self.notebook_of.items():
                if where == nb:
                    set_function(data, fn, sources[fn])
            out[nb] = data
        return out

    def students(self):
        """[(student_id, kind, {function: source}, failing grade_ids, draw-dependent grade_ids)]:
        each style, each mistake."""
        functions = tuple(self.notebook_of)
        out = [(f"correct_{style}", "correct", {fn: self.correct[fn][style] for fn in functions}, set(), set())
               for style in self.styles]
        base = {fn: self.correct[fn][self.base_style] for fn in functions}
        for name, (fn, src) in self.mistakes.items():
            out.append((f"mistake_{name}", "mistake", {**base, fn: src}, self.expected_fails[name],
                        self.draw_dependent.get(name, set())))
        return out

    def write_class(self, submitted) -> dict:
        """Write every student's notebooks under submitted/<student>/<assignment>/; return the
        manifest (student -> kind, expected score per notebook and grade_id, total)."""
        table = self.points()
        manifest = {}
        for sid, kind, sources, fails, either in self.students():
            folder = Path(submitted) / sid / self.assignment
            folder.mkdir(parents=True, exist_ok=True)
            for nb, data in self.notebooks(sources).items():
                (folder / f"{nb}.ipynb").write_text(dump_notebook(data), encoding="utf-8")
            expected = {nb: {gid: (0.0 if gid in fails else pts) for gid, pts in cells.items()}
                        for nb, cells in table.items()}
            manifest[sid] = {"kind": kind, "expected": expected,
                             "total": sum(sum(c.values()) for c in expected.values())}
            if either:
                manifest[sid]["draw_dependent"] = {nb: {gid: [0.0, pts] for gid, pts in cells.items()
                                                        if gid in either}
                                                   for nb, cells in table.items()}
        return manifest


def allowed_scores(m, nb, gid):
    """The scores a manifest entry m accepts for cell gid of notebook nb: the expected one, or
    either outcome of a cell whose verdict depends on the course's draw."""
    return set(m.get("draw_dependent", {}).get(nb, {}).get(gid, ())) | {m["expected"][nb][gid]}
