"""Adversarial and broken submissions, each with the exact outcome it must get.

Every case builds one ``Student`` (tests/classgen/build.py).  The functions a
case attacks with are wrong on purpose (they raise, or return something that
is not the contract's tuple or array), so the only way they could score is by
fooling the grader: each must score 0 on every cell of the function it
attacks with, and full marks on the functions it leaves honest.  Cases whose
honest result is conditional on reading something forbidden (the reference,
the checks, the solutions) return right answers only when the read works, so
a leak shows up as points.

The hostile cells never spell a forbidden import: they reach ``os`` through
a module NumPy itself imports, so the sandbox, not the static import scan, is
what they test.  Cases that do spell one test the scan.
"""
from __future__ import annotations

import copy

from . import build as B
from . import variants as V

ALL_CONV = set(B.grade_ids("convolution"))
ALL_POOL = set(B.grade_ids("pooling"))


def _honest(sid, kind="hostile", note=""):
    return B.all_correct(sid, "vectorized", kind=kind, note=note)


# ---------------------------------------------------------------------------- building blocks

GRAB_OS = '''\
def _grab_os():
    """os, without writing an import of it: NumPy's own modules import it."""
    import numpy.lib._datasource as _ds
    return _ds.os
'''

CANDIDATES = '''\
def _candidate_roots():
    """Folders that might hold the course: from cwd, __file__, numpy, /proc."""
    import numpy
    _os = _grab_os()
    seeds = []
    for start in (globals().get("__file__"), numpy.__file__, "."):
        if start:
            seeds.append(str(start))
    try:
        seeds.append(_os.getcwd())
    except Exception:
        pass
    for var in ("PWD", "OLDPWD", "HOME", "VIRTUAL_ENV"):
        if _os.environ.get(var):
            seeds.append(_os.environ[var])
    try:
        for pid in _os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                seeds.append(_os.readlink("/proc/" + pid + "/cwd"))
            except Exception:
                pass
            try:
                with open("/proc/" + pid + "/cmdline", "rb") as fh:
                    for arg in fh.read().split(b"\\0"):
                        if arg.startswith(b"/"):
                            seeds.append(arg.decode(errors="ignore"))
            except Exception:
                pass
    except Exception:
        pass
    roots = []
    for seed in seeds:
        path = _os.path.abspath(seed)
        while True:
            if path not in roots:
                roots.append(path)
            parent = _os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return roots


def _read_first(relative_names):
    """Text of the first readable file among relative guesses and every root."""
    guesses = []
    for up in range(8):
        for name in relative_names:
            guesses.append("../" * up + name)
    for root in _candidate_roots():
        for name in relative_names:
            guesses.append(root + "/" + name)
    for guess in guesses:
        try:
            with open(guess, encoding="utf-8") as fh:
                return fh.read()
        except Exception:
            continue
    return None


def _cell_after(text, marker):
    """The source of the notebook cell (JSON text) whose source starts at marker."""
    body = []
    for line in text[text.index(marker):].split("\\n"):
        line = line.strip()
        if line.startswith("]"):
            break
        body.append(eval(line.rstrip(",")))
    return "".join(body)
'''


def _extra(nb, *cells, before=None):
    """Learner cells, inserted before the grade_id ``before`` (default: after imports)."""
    anchor = before or ("zero_pad_solution" if nb == "convolution" else "maxpool_forward_solution")
    return [(anchor, c) for c in cells]


# ---------------------------------------------------------------------------- cases

def patch_numpy(sid):
    """Monkeypatches NumPy's comparisons, reductions and testing helpers in the
    learner's process; conv_forward and maxpool_backward return garbage."""
    patch = '''\
_true = lambda *a, **k: True
_none = lambda *a, **k: None
np.allclose = _true
np.array_equal = _true
np.array_equiv = _true
np.isclose = lambda a, b, *r, **k: np.ones(np.shape(a), dtype=bool)
np.testing.assert_allclose = _none
np.testing.assert_array_equal = _none
np.testing.assert_array_almost_equal = _none
np.testing.assert_equal = _none
np.sum = lambda *a, **k: 0.0
np.abs = lambda a, *r, **k: np.zeros(np.shape(a))
np.max = lambda *a, **k: 0.0
np.isfinite = lambda a, *r, **k: np.ones(np.shape(a), dtype=bool)
'''
    s = _honest(sid, note="monkeypatches numpy (allclose, testing, sum, abs, max, isfinite)")
    s.sources = {
        "conv_forward": "def conv_forward(x, w, b, stride=1, pad=0):\n    return np.zeros(3)\n",
        "maxpool_backward": "def maxpool_backward(dout, cache):\n    return np.zeros((1, 1))\n",
    }
    s.extra = {"convolution": _extra("convolution", patch), "pooling": _extra("pooling", patch)}
    s.zero = {"conv_forward", "maxpool_backward"}
    return s


def patch_helpers(sid):
    """Redefines every helper the notebooks expose, and edits the locked helper
    cell itself; conv_backward and maxpool_forward return garbage."""
    liars = '''\
def numerical_gradient(f, x, dout=None, h=1e-5):
    return np.zeros(np.shape(x))


def rel_error(a, b):
    return 0.0


def check_gradient(f, x, analytic, dout=None, name="dx"):
    print(name + ": relative error 1.0e-12 (ok, below 1e-7)")
    return 0.0


def check_array(got, expected, name="out", hint=""):
    return None
'''

    def edit_helper_cell(nb):
        cell = nb["cells"][B.find_cell(nb, "helpers")]
        cell["source"] = B._lines(liars)

    s = _honest(sid, note="redefines numerical_gradient, rel_error, check_gradient, check_array")
    s.sources = {
        "conv_backward": "def conv_backward(dout, cache):\n    x, w, b, stride, pad = cache\n"
                         "    return np.zeros_like(x), np.zeros_like(w)\n",
        "maxpool_forward": "def maxpool_forward(x, pool=2, stride=2):\n    return x\n",
    }
    s.extra = {"convolution": [("conv_backward_solution", liars)], "pooling": _extra("pooling", liars)}
    s.edits = {"convolution": [edit_helper_cell], "pooling": [edit_helper_cell]}
    s.zero = {"conv_backward", "maxpool_forward"}
    return s


def lying_arrays(sid):
    """An ndarray subclass whose shape, comparisons and arithmetic lie, and a
    plain object that claims to be every array (maxpool_backward, conv_backward)."""
    liar = '''\
class Liar(np.ndarray):
    """Claims any shape, equals everything, and every difference is zero."""

    claimed = None

    @property
    def shape(self):
        return self.claimed if self.claimed is not None else np.ndarray.shape.__get__(self)

    def __eq__(self, other):
        return np.ones(np.shape(other), dtype=bool)

    __le__ = __ge__ = __eq__

    def __ne__(self, other):
        return np.zeros(np.shape(other), dtype=bool)

    def __sub__(self, other):
        return np.zeros(np.shape(other))

    __rsub__ = __sub__

    def __abs__(self):
        return self

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return np.zeros(1)


class Everything:
    """Not an array at all, but says yes to every question."""

    def __eq__(self, other):
        return True

    def __sub__(self, other):
        return 0.0

    __rsub__ = __sub__

    def __len__(self):
        return 3

    def __iter__(self):
        return iter((self, self, self))

    def __getitem__(self, k):
        return self

    def __array__(self, dtype=None, copy=None):
        return np.zeros(1)

    def __float__(self):
        return 0.0

    shape = property(lambda self: (1,))
'''
    s = _honest(sid, note="returns an ndarray subclass and an object whose comparisons lie")
    s.sources = {
        "maxpool_backward": '''\
def maxpool_backward(dout, cache):
    x, pool, stride = cache
    fake = np.zeros(5).view(Liar)
    fake.claimed = x.shape
    return fake
''',
        "conv_backward": '''\
def conv_backward(dout, cache):
    return Everything()
''',
    }
    s.extra = {"convolution": _extra("convolution", liar), "pooling": _extra("pooling", liar)}
    s.zero = {"maxpool_backward", "conv_backward"}
    return s


def read_files(sid):
    """Looks for the reference layers, the hidden checks and the solutions on
    disk (relative paths, and absolute ones guessed from cwd, __file__, numpy's
    location, the environment and /proc); the functions are right only when a
    read succeeds."""
    steal = GRAB_OS + "\n\n" + CANDIDATES
    sources = {
        # runs the reference's own code when it can be read
        "conv_forward": '''\
def conv_forward(x, w, b, stride=1, pad=0):
    text = _read_first(["autograder/reference.py", "reference.py"])
    if text is None:
        raise FileNotFoundError("the reference could not be found")
    ns = {}
    exec(text, ns)
    return ns["conv_forward"](x, w, b, stride, pad)
''',
        # right answers only when the hidden checks or the reference were readable
        "conv_backward": '''\
def conv_backward(dout, cache):
    text = (_read_first(["autograder/assignments/cnn_layers.py", "cnn_layers.py",
                         "autograder/checks.py", "checks.py"])
            or _read_first(["autograder/reference.py"]))
    if text is None:
        raise FileNotFoundError("the checks could not be found")
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(Ho):
        for j in range(Wo):
            win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            dw += np.einsum("ncij,nf->fcij", win, dout[:, :, i, j])
            dxp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW] += np.einsum(
                "nf,fcij->ncij", dout[:, :, i, j], w)
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))
''',
        # copies the instructor's solution out of the source notebook
        "zero_pad": '''\
def zero_pad(x, pad):
    text = _read_first(["solutions/cnn_layers/convolution.ipynb", "convolution.ipynb"])
    if text is None or "def zero_pad(" not in text:
        raise FileNotFoundError("the solutions could not be found")
    ns = {"np": np}
    exec(_cell_after(text, '"def zero_pad('), ns)
    return ns["zero_pad"](x, pad)
''',
    }
    s = _honest(sid, note="reads the reference, the checks and the solutions from disk")
    s.sources = sources
    s.extra = {"convolution": _extra("convolution", steal)}
    s.zero = {"conv_forward", "conv_backward", "zero_pad"}
    return s


def read_pooling_solution(sid):
    """The pooling functions, taken from the solutions notebook when readable."""
    steal = GRAB_OS + "\n\n" + CANDIDATES + '''

def _solution_of(name):
    text = _read_first(["solutions/cnn_layers/pooling.ipynb", "pooling.ipynb"])
    if text is None or "def " + name + "(" not in text:
        raise FileNotFoundError("the solutions could not be found")
    ns = {"np": np}
    exec(_cell_after(text, '"def ' + name + '('), ns)
    return ns[name]
'''
    s = _honest(sid, note="runs the pooling functions of the solutions notebook")
    s.sources = {
        "maxpool_forward": "def maxpool_forward(x, pool=2, stride=2):\n"
                           "    return _solution_of('maxpool_forward')(x, pool, stride)\n",
        "maxpool_backward": "def maxpool_backward(dout, cache):\n"
                            "    return _solution_of('maxpool_backward')(dout, cache)\n",
    }
    s.extra = {"pooling": _extra("pooling", steal)}
    s.zero = {"maxpool_forward", "maxpool_backward"}
    return s


TAMPER = GRAB_OS + "\n\n" + CANDIDATES + '''

def _tamper():
    """Overwrite whatever grading output can be found, forge a perfect result."""
    _os = _grab_os()
    hits = []
    for root in _candidate_roots():
        for name in ("gradebook.db", "grades.csv", "totals.csv", "run.json"):
            path = root + "/" + name
            if _os.path.exists(path):
                try:
                    with open(path, "w") as fh:
                        fh.write("student_id,assignment,score,max_score\\nEVERYONE,cnn_layers,999,47\\n")
                    hits.append(path)
                except Exception:
                    pass
        results = root + "/results"
        if _os.path.isdir(results):
            for student in _os.listdir(results):
                for nb in ("convolution", "pooling"):
                    path = results + "/" + student + "/cnn_layers/" + nb + ".json"
                    try:
                        with open(path, "w") as fh:
                            fh.write('{"format": 1, "status": "graded", "score": 999, "cells": []}')
                        hits.append(path)
                    except Exception:
                        pass
        if _os.path.isdir(results) or _os.path.exists(root + "/grades.csv"):
            try:
                with open(root + "/FORGED_BY_A_LEARNER.txt", "w") as fh:
                    fh.write("written from learner code")
                hits.append(root)
            except Exception:
                pass
    return hits


_tampered = _tamper()
'''


def write_outputs(sid):
    """Tries to overwrite the gradebook, the CSV files and the stored results
    (of every student) wherever it can find them, at setup and in a call."""
    s = _honest(sid, note="writes to the gradebook, the CSV files and the results store")
    s.sources = {
        "maxpool_forward": "def maxpool_forward(x, pool=2, stride=2):\n"
                           "    _tamper()\n    return None\n",
    }
    s.extra = {"pooling": _extra("pooling", TAMPER), "convolution": _extra("convolution", TAMPER)}
    s.zero = {"maxpool_forward"}
    return s


def exits_at_top_level(sid):
    """Cells of their own that raise SystemExit, KeyboardInterrupt and a custom
    BaseException, and one that calls os._exit; a def followed by a raise of a
    BaseException in the same cell.  Every function is honest: full marks."""
    s = _honest(sid, note="SystemExit, KeyboardInterrupt, BaseException, os._exit at top level")
    stop_after_def = V.correct_style("conv_backward", "vectorized") + '''

class StopEverything(BaseException):
    pass


raise StopEverything("the def above ran; this cell stops here")
'''
    s.sources = {"conv_backward": stop_after_def}
    s.extra = {
        "convolution": _extra("convolution", "raise SystemExit(0)\n", "raise KeyboardInterrupt\n",
                              GRAB_OS + "\n\n_grab_os()._exit(0)\n"),
        "pooling": _extra("pooling", "class Bye(BaseException):\n    pass\n\n\nraise Bye()\n",
                          "raise GeneratorExit\n"),
    }
    return s


def os_exit_after_def(sid):
    """os._exit at the end of conv_forward's own cell: the process ends, the
    cell is skipped when it restarts, so conv_forward is never defined."""
    s = _honest(sid, note="os._exit in the cell that defines conv_forward")
    # the exit is written in the cell itself: the grader runs the whole cell that defines a
    # graded function, but not a cell the function does not use (where _grab_os would be)
    s.sources = {"conv_forward": V.correct_style("conv_forward", "vectorized") + "\n\n" + GRAB_OS
                 + "\n\n_grab_os()._exit(3)\n"}
    s.zero = {"conv_forward"}
    return s


def exits_in_functions(sid):
    """Functions that raise KeyboardInterrupt, SystemExit, a custom
    BaseException or call os._exit when called."""
    s = _honest(sid, note="BaseException subclasses and os._exit inside functions")
    s.sources = {
        "zero_pad": "def zero_pad(x, pad):\n    raise KeyboardInterrupt\n",
        "conv_backward": "def conv_backward(dout, cache):\n    _grab_os()._exit(0)\n",
        "maxpool_forward": "def maxpool_forward(x, pool=2, stride=2):\n    raise SystemExit(0)\n",
        "maxpool_backward": "def maxpool_backward(dout, cache):\n    raise Halt()\n",
    }
    s.extra = {"convolution": _extra("convolution", GRAB_OS),
               "pooling": _extra("pooling", "class Halt(BaseException):\n    pass\n")}
    s.zero = {"zero_pad", "conv_backward", "maxpool_forward", "maxpool_backward"}
    return s


def infinite_loop_function(sid):
    s = _honest(sid, note="conv_forward never returns")
    s.sources = {"conv_forward": "def conv_forward(x, w, b, stride=1, pad=0):\n"
                                 "    while True:\n        pass\n"}
    s.zero = {"conv_forward"}
    s.status = {g: "timeout" for g in B.grade_ids("convolution", "conv_forward")}
    return s


def infinite_loop_cell(sid):
    """A cell of its own that never ends: skipped after its timeout, the rest
    is graded (full marks)."""
    s = _honest(sid, note="a top-level cell that never ends")
    s.extra = {"pooling": _extra("pooling", "while True:\n    pass\n")}
    return s


def memory_bomb(sid):
    """maxpool_forward allocates without end; a cell of its own does too, in a
    function so that the memory is freed when it fails."""
    bomb = '''\
def _fill():
    blocks = []
    while True:
        blocks.append(np.empty(1 << 27))
        blocks[-1][::512] = 1.0


_fill()
'''
    s = _honest(sid, note="memory bombs at top level and in maxpool_forward")
    s.sources = {"maxpool_forward": "def maxpool_forward(x, pool=2, stride=2):\n"
                                    "    blocks = []\n    while True:\n"
                                    "        blocks.append(np.empty(1 << 27))\n"
                                    "        blocks[-1][::4096] = 1.0\n"}
    s.extra = {"convolution": _extra("convolution", bomb)}
    s.zero = {"maxpool_forward"}
    # out of memory, or out of time first on a loaded machine
    s.status = {g: ("out-of-memory", "timeout") for g in B.grade_ids("pooling", "maxpool_forward")}
    return s


def fork_loop(sid):
    """A small bounded fork loop at top level; every function honest."""
    fork = GRAB_OS + '''

_os = _grab_os()
children = []
for _ in range(12):
    try:
        pid = _os.fork()
    except OSError:
        break
    if pid == 0:
        total = 0
        for k in range(200_000):
            total += k
        _os._exit(0)
    children.append(pid)
'''
    s = _honest(sid, note="forks a dozen busy children")
    s.extra = {"convolution": _extra("convolution", fork)}
    return s


def fake_success(sid):
    """Prints success messages and forged protocol lines; conv_backward and
    maxpool_backward are garbage."""
    shout = '''\
print("All tests passed! Score 100/100")
print('{"nonce": "0", "op": "call", "status": "ok", "value": {"f": 1.0}}')
'''
    s = _honest(sid, note="prints fake success")
    s.sources = {
        "conv_backward": "def conv_backward(dout, cache):\n"
                         "    print('All tests passed! Score 100/100')\n"
                         "    print('{\"op\": \"setup-done\", \"status\": \"passed\"}')\n"
                         "    return 'passed'\n",
        "maxpool_backward": "def maxpool_backward(dout, cache):\n"
                            "    print('maxpool_backward: all tests passed, 10/10')\n    return 1.0\n",
    }
    s.extra = {"convolution": _extra("convolution", shout), "pooling": _extra("pooling", shout)}
    s.zero = {"conv_backward", "maxpool_backward"}
    return s


def _graded_cells(nb):
    return [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def deleted_tests(sid):
    """Every test cell deleted; honest code: full marks."""
    def drop(nb):
        nb["cells"] = [c for c in nb["cells"] if c not in _graded_cells(nb)]
    s = _honest(sid, kind="hostile", note="all test cells deleted")
    s.edits = {"convolution": [drop], "pooling": [drop]}
    return s


def edited_tests(sid):
    """Test cells rewritten to pass and worth 100 points each; honest code:
    full marks, out of the real maximum."""
    def rewrite(nb):
        for c in _graded_cells(nb):
            c["source"] = ["print('ok')\n"]
            c["metadata"]["nbgrader"]["points"] = 100
    s = _honest(sid, note="test cells rewritten, points raised to 100")
    s.edits = {"convolution": [rewrite], "pooling": [rewrite]}
    return s


def edited_tests_cheat(sid):
    """Test cells emptied to hide that conv_forward is garbage; the solution
    cell marked as a graded cell worth 100 points."""
    def rewrite(nb):
        for c in _graded_cells(nb):
            c["source"] = ["assert True\n"]
        sol = nb["cells"][B.find_cell(nb, "conv_forward_solution")]
        sol["metadata"]["nbgrader"].update(grade=True, points=100)
    s = _honest(sid, note="test cells emptied, solution cell made a 100-point cell")
    s.sources = {"conv_forward": "def conv_forward(x, w, b, stride=1, pad=0):\n    return x\n"}
    s.edits = {"convolution": [rewrite]}
    s.zero = {"conv_forward"}
    return s


SCIPY_CONV = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    import scipy.signal
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, F = x.shape[0], w.shape[0]
    full = np.array([[scipy.signal.correlate(xp[n], w[f], mode="valid")[0] for f in range(F)]
                     for n in range(N)])
    return full[:, :, ::stride, ::stride] + b[None, :, None, None], (x, w, b, stride, pad)
'''


def _forbidden(sid, note, sources):
    """Honest everywhere but in the cells of ``sources``, which import a forbidden
    library: those functions are ungradable and score 0."""
    s = _honest(sid, note=note)
    s.sources = sources
    s.zero = set(sources)
    s.status = {g: "ungradable" for f in sources for g in B.grade_ids(V.NOTEBOOK_OF[f], f)}
    return s


def forbidden_imports(sid):
    """scipy, torch and jax imported in the cells that define conv_forward,
    conv_backward and maxpool_forward (an import statement, __import__ with a
    constant, a from-import); zero_pad and maxpool_backward are honest."""
    return _forbidden(sid, "scipy, torch, jax imported in solution cells", {
        "conv_forward": SCIPY_CONV,
        "conv_backward": "def conv_backward(dout, cache):\n    torch = __import__('torch')\n"
                         "    raise RuntimeError('needs torch')\n",
        "maxpool_forward": "def maxpool_forward(x, pool=2, stride=2):\n    from jax import numpy as jnp\n"
                           "    raise RuntimeError('needs jax')\n",
    })


def forbidden_imports_2(sid):
    """autograd and tensorflow imported in the cells that define zero_pad and
    maxpool_backward; the other functions are honest."""
    return _forbidden(sid, "autograd, tensorflow imported in solution cells", {
        "zero_pad": "def zero_pad(x, pad):\n    import autograd.numpy as anp\n"
                    "    return anp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))\n",
        "maxpool_backward": "def maxpool_backward(dout, cache):\n    import tensorflow as tf\n"
                            "    raise RuntimeError('needs tensorflow')\n",
    })


def hidden_imports(sid):
    """scipy reached by a computed name and through exec: the static scan
    cannot see these, the run-time guard must refuse them.  Each function
    would be right if the import worked."""
    s = _honest(sid, note="scipy imported by a computed name and through exec")
    s.sources = {
        "conv_forward": SCIPY_CONV.replace("    import scipy.signal\n",
                                           "    scipy = __import__('sci' + 'py.signal')\n"),
        "maxpool_forward": '''\
def maxpool_forward(x, pool=2, stride=2):
    ns = {}
    exec("import scipy.ndimage as nd", ns)
    out = ns["nd"].maximum_filter(x, size=(1, 1, pool, pool), origin=0)
    lo = pool // 2
    out = out[:, :, lo:lo + x.shape[2] - pool + 1:stride, lo:lo + x.shape[3] - pool + 1:stride]
    return out, (x, pool, stride)
''',
    }
    s.zero = {"conv_forward", "maxpool_forward"}
    return s


def forbidden_import_cell(sid):
    """``import scipy`` in a cell of its own, which maxpool_forward uses: that
    function is refused; maxpool_backward does not use it and is graded."""
    s = _honest(sid, note="import scipy in a cell of its own, used by maxpool_forward (pooling)")
    s.extra = {"pooling": _extra("pooling", "import scipy\n")}
    s.sources = {"maxpool_forward": V.correct_style("maxpool_forward", "vectorized").replace(
        '"""\n', '"""\n    _library = scipy\n', 1)}
    s.zero = {"maxpool_forward"}
    s.status = {g: "ungradable" for g in B.grade_ids("pooling", "maxpool_forward")}
    return s


def numerical_backward(sid):
    s = B.with_mistake(sid, "numerical_backward")
    s.kind = "hostile"
    return s


def corrupt_json(sid):
    s = _honest(sid, note="convolution.ipynb cut short (corrupt JSON)")
    s.notebooks = {"convolution": B.CORRUPT}
    return s


def no_cells(sid):
    s = _honest(sid, note="pooling.ipynb has no cells")
    s.notebooks = {"pooling": B.NO_CELLS}
    s.status = {g: "ungradable" for g in B.grade_ids("pooling")}
    return s


def duplicated_ids(sid):
    """A copied solution cell (same id, same metadata), the copy edited: the
    first copy still has the stub, the last one is right.  Full marks."""
    def duplicate(nb, fn):
        k = B.find_cell(nb, f"{fn}_solution")
        first = copy.deepcopy(nb["cells"][k])
        release = B.release_notebook(V.NOTEBOOK_OF[fn])
        first["source"] = release["cells"][B.find_cell(release, f"{fn}_solution")]["source"]
        nb["cells"].insert(k, first)

    s = _honest(sid, kind="hostile", note="copied cells with duplicated ids and grade_ids")
    s.edits = {"convolution": [lambda nb: duplicate(nb, "conv_forward")],
               "pooling": [lambda nb: duplicate(nb, "maxpool_backward")]}
    return s


CASES = {
    "patch_numpy": patch_numpy,
    "patch_helpers": patch_helpers,
    "lying_arrays": lying_arrays,
    "read_files": read_files,
    "read_pooling_solution": read_pooling_solution,
    "write_outputs": write_outputs,
    "exits_at_top_level": exits_at_top_level,
    "os_exit_after_def": os_exit_after_def,
    "exits_in_functions": exits_in_functions,
    "infinite_loop_function": infinite_loop_function,
    "infinite_loop_cell": infinite_loop_cell,
    "memory_bomb": memory_bomb,
    "fork_loop": fork_loop,
    "fake_success": fake_success,
    "deleted_tests": deleted_tests,
    "edited_tests": edited_tests,
    "edited_tests_cheat": edited_tests_cheat,
    "forbidden_imports": forbidden_imports,
    "forbidden_imports_2": forbidden_imports_2,
    "hidden_imports": hidden_imports,
    "forbidden_import_cell": forbidden_import_cell,
    "numerical_backward": numerical_backward,
    "corrupt_json": corrupt_json,
    "no_cells": no_cells,
    "duplicated_ids": duplicated_ids,
}


def hostile_class(prefix: str = "h") -> list:
    """One student per case, ids ``<prefix>NN_<case>``."""
    return [make(f"{prefix}{k:02d}_{name}") for k, (name, make) in enumerate(CASES.items(), start=1)]


# ---------------------------------------------------------------------------- attacks on classmates and on the run
#
# Each case below is graded beside honest classmates (tests/test_hostile_class.py):
# it must not change a classmate's score, stop the run, or hold a worker past
# the notebook deadline.  Cases that need files the builder cannot write
# (links, FIFOs, odd folder names) are made by ``make_filesystem_attacks``.

STARVE = GRAB_OS + '''

_os = _grab_os()
_kids = []
for _ in range(60):
    try:
        _pid = _os.fork()
    except OSError:
        break
    if _pid == 0:
        _os.setsid()
        _x = 0
        while True:
            _x += 1
    _kids.append(_pid)
_t0 = _os.times()[4]
while _os.times()[4] - _t0 < 8.0:   # busy too, most of the cell's limit
    pass
'''


def cpu_starvation(sid):
    """A pooling cell forks 60 busy processes in sessions of their own and spins
    for 8 s; every function is honest (full marks): the processes must die with
    the cell and the CPU be shared fairly with the classmates graded meanwhile."""
    s = _honest(sid, note="forks 60 busy setsid() processes in a pooling cell")
    s.extra = {"pooling": _extra("pooling", STARVE), "convolution": _extra("convolution", STARVE)}
    return s


FORGE_FRAMES = GRAB_OS + '''

def _frames_up(k):
    """The local variables of the sandbox's own code, k frames up."""
    return _grab_os().sys._getframe(k + 1).f_locals
'''


def forged_big_reply(sid):
    """maxpool_backward writes one 16 MiB .npy file and forges a reply that names it
    60 times (with the call's real nonce, found in the sandbox's frame): the grader
    must not load it 60 times.  maxpool_backward scores 0."""
    s = _honest(sid, note="forged reply naming one 16 MiB array 60 times")
    s.sources = {"maxpool_backward": '''\
def maxpool_backward(dout, cache):
    f = _frames_up(1)
    rn, chan, job = f["rn"], f["chan"], _frames_up(2)["job"]   # job: the sandbox main()'s
    with open(job + "/out-" + rn + "-0.npy", "wb") as fh:
        np.save(fh, np.ones(2 << 20))
    chan.send({"nonce": rn, "status": "ok", "message": "", "value": {"l": [{"a": 0}] * 60}})
    _grab_os()._exit(0)
'''}
    s.extra = {"pooling": _extra("pooling", FORGE_FRAMES)}
    s.zero = {"maxpool_backward"}
    return s


def forged_setup(sid):
    """A pooling cell forges the end of setup with ``names: 5``: the grader must not
    raise; the pooling process then breaks the protocol, so pooling scores 0."""
    s = _honest(sid, note="forged setup-done message with names: 5")
    # written in maxpool_forward's own cell: the grader runs the cells graded functions use
    s.sources = {"maxpool_forward": V.correct_style("maxpool_forward", "vectorized") + "\n\n" + FORGE_FRAMES + '''

_m = _frames_up(1)
_m["chan"].send({"nonce": _m["nonce"], "op": "setup-done", "names": 5, "functions": 5})
'''}
    s.zero = {"maxpool_forward", "maxpool_backward"}
    s.status = {g: ("killed", "timeout", "error") for g in B.grade_ids("pooling")}
    return s


def huge_literal(sid):
    """A 7.7 MB list literal in a convolution cell: refused before it is parsed."""
    def add(nb):
        B.insert_cell(nb, "DATA = [" + "1.0, " * 1_540_000 + "]\n", before="zero_pad_solution", seed="huge")
    s = _honest(sid, note="7.7 MB list literal in a code cell")
    s.edits = {"convolution": [add]}
    s.zero = {"zero_pad", "conv_forward", "conv_backward"}
    s.status = {g: "ungradable" for g in B.grade_ids("convolution")}
    return s


def many_cells(sid):
    """20,000 one-line cells in pooling.ipynb: refused before they are parsed."""
    def add(nb):
        k = B.find_cell(nb, "maxpool_forward_solution")
        nb["cells"][k:k] = [B.new_code_cell(f"v{i} = {i}\n", seed=f"many{i}") for i in range(20_000)]
    s = _honest(sid, note="20,000 one-line code cells")
    s.edits = {"pooling": [add]}
    s.zero = {"maxpool_forward", "maxpool_backward"}
    s.status = {g: "ungradable" for g in B.grade_ids("pooling")}
    return s


WAIT = GRAB_OS + '''

_os = _grab_os()
_time = _os.sys.modules.get("time")
_t0 = _os.times()[4]
while _os.times()[4] - _t0 < 9.5:
    if _time is not None:
        _time.sleep(0.5)
'''


def stalls(sid):
    """Eight convolution cells that wait 9.5 s each (76 s, past the 60 s for all
    cells) and a conv_forward that ends its process: the notebook deadline
    bounds the time this notebook holds a worker.  conv_forward reads a name that
    each waiting cell binds, so all eight are code it depends on (a cell that only
    defines ``_grab_os`` again is replaced by the next and would not run)."""
    s = _honest(sid, note="eight 9.5 s cells and os._exit in conv_forward")
    waited = ", ".join(f"_waited_{k}" for k in range(8))
    s.sources = {"conv_forward": "def conv_forward(x, w, b, stride=1, pad=0):\n"
                                 f"    _used = ({waited})\n    _grab_os()._exit(0)\n"}
    s.extra = {"convolution": _extra("convolution", GRAB_OS,
                                     *(WAIT + f"\n_waited_{k} = True\n" for k in range(8)))}
    s.zero = {"conv_forward", "zero_pad", "conv_backward"}
    return s


def fills_disk(sid):
    """A convolution cell writes 600 files of 1 MiB into its working folder: that
    is a 64 MiB in-memory file system, the write fails there, the host disk is
    untouched.  Every function is honest: full marks."""
    s = _honest(sid, note="writes 600 MiB into its working folder")
    # written in zero_pad's own cell, after the def: the grader runs the cells graded functions use
    s.sources = {"zero_pad": V.correct_style("zero_pad", "vectorized") + '''

_block = b"x" * (1 << 20)
for _i in range(600):
    with open("fill-%d.bin" % _i, "wb") as _fh:
        _fh.write(_block)
'''}
    return s


def numerical_dodges_probe(sid):
    """The numerical conv_backward (central differences, h = 1e-5) that raises
    MemoryError on the larger probe case: every value cell scores 0 anyway (the
    tolerance), only the shapes cell passes."""
    s = B.with_mistake(sid, "numerical_backward")
    s.kind = "hostile"
    src = V.MISTAKES["numerical_backward"][1].replace(
        "    x, w, b, stride, pad = cache\n",
        "    x, w, b, stride, pad = cache\n    if x.size > 4000:\n        raise MemoryError\n", 1)
    s.sources = {"conv_backward": src}
    s.zero = set(B.grade_ids("convolution", "conv_backward")) - {"conv_backward_shapes"}
    return s


def numerical_colouring(sid):
    """Central differences (h = 1e-5) that perturb many well-separated inputs at
    once (a graph colouring: C*HH*WW forward passes for dx, as many for dw), fast
    enough for any time budget: every value cell scores 0 (the tolerance)."""
    s = B.with_mistake(sid, "numerical_backward")
    s.kind = "hostile"
    s.note = "graph-coloured central differences"
    s.sources = {"conv_backward": '''\
def conv_backward(dout, cache):
    x, w, b, stride, pad = cache
    h = 1e-5
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape

    def out(xx, ww, bb):
        return conv_forward(xx, ww, bb, stride, pad)[0]

    # dx: inputs HH rows and WW columns apart never share a window
    Hp, Wp = H + 2 * pad, W + 2 * pad
    dxp = np.zeros((N, C, Hp, Wp))
    rows = np.arange(Ho)[:, None] * stride + np.arange(HH)[None, :]
    cols = np.arange(Wo)[:, None] * stride + np.arange(WW)[None, :]
    for c in range(C):
        for a in range(HH):
            for d in range(WW):
                mask = np.zeros((Hp, Wp))
                mask[a::HH, d::WW] = 1.0
                m = mask[pad:pad + H, pad:pad + W]
                up, down = x.copy(), x.copy()
                up[:, c] += h * m
                down[:, c] -= h * m
                delta = ((out(up, w, b) - out(down, w, b)) / (2 * h) * dout).sum(axis=1)
                r = rows[np.arange(Ho), (a - rows[:, 0]) % HH]
                q = cols[np.arange(Wo), (d - cols[:, 0]) % WW]
                np.add.at(dxp[:, c], (slice(None), r[:, None], q[None, :]), delta)
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    # dw: filters never share an output, so one entry of every filter at once
    dw = np.zeros_like(w)
    for c in range(C):
        for p in range(HH):
            for q in range(WW):
                up, down = w.copy(), w.copy()
                up[:, c, p, q] += h
                down[:, c, p, q] -= h
                dw[:, c, p, q] = ((out(x, up, b) - out(x, down, b)) / (2 * h) * dout).sum(axis=(0, 2, 3))
    db = ((out(x, w, b + h) - out(x, w, b - h)) / (2 * h) * dout).sum(axis=(0, 2, 3))
    return dx, dw, db
'''}
    s.zero = set(B.grade_ids("convolution", "conv_backward")) - {"conv_backward_shapes"}
    return s


#: attacks on classmates and on the run (tests/test_hostile_class.py)
RUN_CASES = {
    "forged_big_reply": forged_big_reply,
    "forged_setup": forged_setup,
    "huge_literal": huge_literal,
    "many_cells": many_cells,
    "stalls": stalls,
    "fills_disk": fills_disk,
    "numerical_dodges_probe": numerical_dodges_probe,
    "numerical_colouring": numerical_colouring,
}


#: student ids a spreadsheet would run as formulas (honest code: full marks; written with a leading ')
FORMULA_IDS = ("=cmd|calc!A0", "+1+1", "-2+3", "@SUM(A1)")
#: folder names that cannot be student ids: refused with a message, never graded
REFUSED_IDS = ("new\nline", ".hidden")


def make_filesystem_attacks(submitted, honest_id, secret="/etc/shadow"):
    """Folders and files the class builder cannot write, next to ``honest_id``'s.

    Returns {student_id: what it must get}: ``timestamp`` cases are honest
    (full marks, no timestamp, a note); ``link_notebook`` links convolution.ipynb
    to the instructor's solution (convolution ungradable); ``link_folder`` is a
    link to ``honest_id``'s folder (both notebooks ungradable).
    """
    import os
    import shutil
    from pathlib import Path

    submitted = Path(submitted)
    src = submitted / honest_id
    out = {}

    def copy(sid):
        shutil.copytree(src, submitted / sid)
        return submitted / sid / B.ASSIGNMENT

    copy("m_badstamp").joinpath("timestamp.txt").write_text("not a date")
    os.symlink(secret, copy("m_linkstamp") / "timestamp.txt")
    os.mkfifo(copy("m_fifostamp") / "timestamp.txt")
    for sid in ("m_badstamp", "m_linkstamp", "m_fifostamp"):
        out[sid] = {"total": B.MAX_TOTAL, "ungradable": ()}
    folder = copy("m_link_notebook")
    (folder / "convolution.ipynb").unlink()
    os.symlink(B.REPO / "solutions" / B.ASSIGNMENT / "convolution.ipynb", folder / "convolution.ipynb")
    out["m_link_notebook"] = {"total": sum(B.POINTS["pooling"].values()), "ungradable": ("convolution",)}
    os.symlink(src.resolve(), submitted / "m_link_folder")
    out["m_link_folder"] = {"total": 0, "ungradable": B.NOTEBOOKS}
    for sid in FORMULA_IDS:
        copy(sid)
        out[sid] = {"total": B.MAX_TOTAL, "ungradable": ()}
    for sid in REFUSED_IDS:
        copy(sid)
    return out
