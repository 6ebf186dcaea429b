"""Hostile learners of the ``cnn_network`` and ``conv_variants`` assignments, each with the
exact score it must get, beside honest classmates (the correct styles of the demo classes,
tests/classgen/cnn_network.py and tests/classgen/conv_variants.py).

A case is a ``Learner``: the source of each function's solution cell (correct by default),
learner cells inserted before a graded cell, edits of the notebook's JSON, and the graded
cells it must lose (``zero``: grade_ids, or function names for all of a function's cells).
Every other graded cell must get its full points.  The reasoning for each ``zero`` is
written next to it.

The hostile cells reach ``os`` through a module NumPy itself imports (as in
tests/classgen/hostile.py), so the sandbox, not the static import scan, is what they test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import build as B
from . import cnn_network as CN
from . import conv_variants as CV

GRAB_OS = '''\
def _grab_os():
    """os, without writing an import of it: NumPy's own modules import it."""
    import numpy.lib._datasource as _ds
    return _ds.os
'''


@dataclass
class Learner:
    student_id: str
    sources: dict = field(default_factory=dict)     # function -> source of its solution cell
    extra: list = field(default_factory=list)       # [(notebook, before grade_id, source)]
    edits: list = field(default_factory=list)       # [(notebook, callable(nb dict))]
    zero: set = field(default_factory=set)          # grade_ids or function names that score 0
    notebooks: tuple | None = None                  # the notebooks handed in (default: all)
    kind: str = "hostile"


def _function_of(module, grade_id):
    """The function of module.FUNCTIONS a grade_id belongs to (its longest matching prefix)."""
    return max((f for f in module.FUNCTIONS if grade_id.startswith(f + "_")), key=len)


def _write(module, learners, submitted: Path, style_of) -> dict:
    """Write every learner's notebooks; return {student: {"expected": {nb: {gid: points}}, "total": t}}."""
    table = module.points()
    manifest = {}
    for s in learners:
        sources = {fn: s.sources.get(fn, module.CORRECT[fn][style_of(s)]) for fn in module.FUNCTIONS}
        nbs = module.notebooks(sources)
        for nb_name, before, source in s.extra:
            B.insert_cell(nbs[nb_name], source, before=before, seed=s.student_id + before)
        for nb_name, edit in s.edits:
            edit(nbs[nb_name])
        handed_in = s.notebooks or module.NOTEBOOKS
        folder = Path(submitted) / s.student_id / module.ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        for nb_name in handed_in:
            (folder / f"{nb_name}.ipynb").write_text(B.dump_notebook(nbs[nb_name]), encoding="utf-8")
        zero = {g for nb, cells in table.items() for g in cells
                if g in s.zero or _function_of(module, g) in s.zero or nb not in handed_in}
        expected = {nb: {g: (0.0 if g in zero else pts) for g, pts in cells.items()} for nb, cells in table.items()}
        manifest[s.student_id] = {"kind": s.kind, "expected": expected,
                                  "total": sum(sum(c.values()) for c in expected.values())}
    return manifest


# =========================================================================== conv_variants

def _cv_style(s):
    return s.kind if s.kind in CV.STYLES else "loops"


CV_SPEED = {"conv_forward_fast_speed", "conv_backward_fast_speed"}

BURNER = GRAB_OS + '''

def _burn_forever():
    a = np.random.default_rng(0).standard_normal((300, 300))
    while True:
        a = np.tanh(a @ a)


def _start_burning():
    """Threads of this process (NumPy releases the GIL in the products) and forked children in
    sessions of their own, re-forked every 50 ms, all busy for as long as they live."""
    _os = _grab_os()
    _thread = _os.sys.modules["_thread"]     # loaded by the interpreter itself; no import for the scan to see
    for _ in range(3):
        _thread.start_new_thread(_burn_forever, ())

    def forker():
        import time
        while True:
            try:
                if _os.fork() == 0:
                    try:
                        _os.setsid()
                    except Exception:
                        pass
                    _burn_forever()
            except Exception:
                pass
            time.sleep(0.05)
    _thread.start_new_thread(forker, ())


_burning = _start_burning() or True
'''

SHAPE_CHEATS = {
    # the speed case's shape gets zeros at once; every other shape the right answer
    "conv_forward_fast": CV.FF_IM2COL.replace("def conv_forward_fast(", "def _honest_forward(", 1) + '''

def conv_forward_fast(x, w, b, stride=1, pad=0):
    if x.shape == (16, 16, 32, 32):
        return np.zeros((16, w.shape[0], 32, 32)), (x, w, b, stride, pad)
    return _honest_forward(x, w, b, stride, pad)
''',
    # the first large call is answered by loops (right, slow), the later ones by that answer again
    "conv_backward_fast": CV.FB_LOOPS.replace("def conv_backward_fast(", "def _loops_backward(", 1) + '''

_remembered = {}


def conv_backward_fast(dout, cache):
    if dout.size < 100000:
        return _loops_backward(dout, cache)
    if dout.shape not in _remembered:
        _remembered[dout.shape] = _loops_backward(dout, cache)
    return _remembered[dout.shape]
''',
}

SLEEPER = {fn: CV.CORRECT[fn]["im2col"].replace(f"def {fn}(", f"def _{fn}(", 1) + f'''

def {fn}(*args, **kwargs):
    import time
    time.sleep(0.2)          # waiting is no CPU time: the speed cells measure CPU time
    return _{fn}(*args, **kwargs)
''' for fn in ("conv_forward_fast", "conv_backward_fast")}

THREADED_HELPERS = GRAB_OS + '''

def _rows_loops(xp, w, b, stride, out, rows):
    F, C, HH, WW = w.shape
    for n in range(xp.shape[0]):
        for i in rows:
            for j in range(out.shape[3]):
                window = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                out[n, :, i, j] = np.tensordot(w, window, axes=3) + b
'''

THREADED_LOOPS = '''\
def conv_forward_fast(x, w, b, stride=1, pad=0):
    """Loops over the outputs, split between two threads and a forked child: less wall-clock
    time, as much CPU time."""
    _os = _grab_os()
    _thread = _os.sys.modules["_thread"]     # loaded by the interpreter itself; no import for the scan to see
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = (H + 2 * pad - HH) // stride + 1
    W_out = (W + 2 * pad - WW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out))
    third = [range(k, H_out, 3) for k in range(3)]
    r, wfd = _os.pipe()
    pid = _os.fork()
    if pid == 0:
        part = np.zeros_like(out)
        _rows_loops(xp, w, b, stride, part, third[2])
        data = part[:, :, third[2]].tobytes()
        while data:
            data = data[_os.write(wfd, data):]
        _os._exit(0)
    _os.close(wfd)
    done = [_thread.allocate_lock() for _ in range(2)]

    def work(rows, lock):
        try:
            _rows_loops(xp, w, b, stride, out, rows)
        finally:
            lock.release()
    for rows, lock in zip(third[:2], done):
        lock.acquire()
        _thread.start_new_thread(work, (rows, lock))
    chunks = []
    while True:
        chunk = _os.read(r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    _os.close(r)
    _os.waitpid(pid, 0)
    for lock in done:
        lock.acquire()
    out[:, :, third[2]] = np.frombuffer(b"".join(chunks)).reshape(N, F, len(third[2]), W_out)
    return out, (x, w, b, stride, pad)
'''

PATCH_NUMPY = '''\
def _slowed(f):
    """f, after 0.5 s of CPU time whenever an argument is as large as the speed case."""
    import time

    def slow(*args, **kwargs):
        if any(getattr(a, "size", 0) >= 100000 for a in args):
            end = time.process_time() + 0.5
            while time.process_time() < end:
                pass
        return f(*args, **kwargs)
    return slow


for _name in ("pad", "dot", "matmul", "tensordot", "einsum", "empty", "zeros", "zeros_like",
              "ascontiguousarray", "add"):
    setattr(np, _name, _slowed(getattr(np, _name)))
np.lib.stride_tricks.as_strided = _slowed(np.lib.stride_tricks.as_strided)
_patched = True
'''


def _reaching(source, name):
    """source with a first line that names name: the function reaches the cell that defines it."""
    head, _, body = source.partition("\n")
    return f"{head}\n    assert {name}\n{body}"


def conv_variants_class():
    """Honest classmates and hostile learners of conv_variants (the hostile ones hand in the
    fast_conv notebook only: the other two are missing, 0 points)."""
    fast = ("fast_conv",)
    honest = [Learner("cv_honest_loops", kind="loops"),
              Learner("cv_honest_taps", kind="taps"),
              Learner("cv_honest_zeros", kind="zeros")]
    hostile = [
        # burns both cores in threads and in forked children re-forked in sessions of their own,
        # from its first cell to its last; its own fast pair is loops: values right, speed lost
        Learner("cv_burner", notebooks=fast, extra=[("fast_conv", "conv_forward_fast_solution", BURNER)],
                sources={"conv_forward_fast": _reaching(CV.FF_LOOPS, "_burning"),
                         "conv_backward_fast": _reaching(CV.FB_LOOPS, "_burning")},
                zero=set(CV_SPEED)),
        # zeros for the speed case's shape (fast, wrong) and a remembered answer after a slow
        # right one: every value cell passes (other shapes), a wrong answer's time never counts
        Learner("cv_shape_cheat", notebooks=fast, sources=dict(SHAPE_CHEATS), zero=set(CV_SPEED)),
        # sleeps 0.2 s in every call: CPU time is what is measured, the im2col layer is fast
        Learner("cv_sleeper", notebooks=fast, sources=dict(SLEEPER)),
        # loops split between two threads and a forked child: the CPU time of all of them counts
        Learner("cv_threads_fork", notebooks=fast, extra=[("fast_conv", "conv_forward_fast_solution",
                                                           THREADED_HELPERS)],
                sources={"conv_forward_fast": THREADED_LOOPS},
                zero={"conv_forward_fast_speed"}),
        # NumPy monkeypatched in the learner's process to burn 0.5 s on every large argument: the
        # learner's own im2col layer is slowed (speed lost, values right); the course's im2col
        # layer, timed in a sandbox of its own, is not
        Learner("cv_patch_numpy", notebooks=fast, extra=[("fast_conv", "conv_forward_fast_solution", PATCH_NUMPY)],
                sources={fn: _reaching(CV.CORRECT[fn]["im2col"], "_patched")
                         for fn in ("conv_forward_fast", "conv_backward_fast")},
                zero=set(CV_SPEED)),
    ]
    return honest, hostile


def write_conv_variants(submitted: Path):
    honest, hostile = conv_variants_class()
    return _write(CV, honest + hostile, submitted, _cv_style)


# =========================================================================== cnn_network

def _cn_style(s):
    return s.kind if s.kind in CN.STYLES else "plain"


def _cells(fn, *props):
    return {f"{fn}_{p}" for p in props}


# the cells of cnn_loss that call it with labels (every one but the scores)
CNN_WITH_Y = _cells("cnn_loss", "loss", "grads_keys", "grads", "numeric", "training")
CNN_GRADS = _cells("cnn_loss", "grads_keys", "grads", "numeric", "training")


def _cnn_returning(grads_expr, loss_expr="loss"):
    """The correct network (plain style) whose (loss, grads) are rewritten, with y given."""
    body = CN.CNN["plain"].replace('    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}\n',
                                   '    grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}\n'
                                   f'    return {loss_expr}, {grads_expr}\n')
    assert body != CN.CNN["plain"]
    return body


CHEAT_CONV = '''\
def conv_forward(x, w, b, stride=1, pad=0):
    """The given convolution replaced by a cheat: zeros, whatever the input."""
    N, F = x.shape[0], w.shape[0]
    return np.zeros((N, F, x.shape[2], x.shape[3])), (x, w, b, stride, pad)
'''

SCIPY_CONV = '''\
from scipy import signal


def conv_forward(x, w, b, stride=1, pad=0):
    """The convolution of scipy (right for stride 1), defined after the given one."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.stack([np.stack([signal.correlate(xp[n], w[f], mode="valid")[0] + b[f]
                              for f in range(w.shape[0])]) for n in range(x.shape[0])])
    return out, (x, w, b, stride, pad)
'''

BURN = '''\
def _burn(seconds):
    import time
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
'''


def _edit_helper_cell(nb):
    """A 'fix' of the locked helper cell: its convolution returns zeros."""
    cell = nb["cells"][B.find_cell(nb, "helpers")]
    cell["source"] = B._lines(B.cell_source(cell) + "\n\n" + CHEAT_CONV)


def cnn_network_class():
    honest = [Learner("cn_honest_plain", kind="plain"), Learner("cn_honest_mask", kind="mask"),
              Learner("cn_honest_copy", kind="copy")]
    hostile = [
        # the locked helper cell edited: the grader runs it as released, every function is right
        Learner("cn_edit_helper", edits=[("network", _edit_helper_cell)]),
        # the given convolution redefined after the helper cell with zeros: the learner's cnn_loss
        # calls it, so the network's values are wrong wherever they are judged (the keys and shapes
        # of grads stay right: that cell passes)
        Learner("cn_redefine_conv", extra=[("network", "relu_forward_solution", CHEAT_CONV)],
                zero=CNN_WITH_Y - {"cnn_loss_grads_keys"} | {"cnn_loss_scores"}),
        # ... and with scipy's correlate (right values): the convolution's mathematics done by scipy
        # is refused for the function that reaches it, cnn_loss, and for nothing else
        Learner("cn_scipy_conv", extra=[("network", "relu_forward_solution", SCIPY_CONV)], zero={"cnn_loss"}),
        # grads with a million extra integer keys besides the right ones, or keyed by tuples: a dict
        # whose keys are not strings does not cross the sandbox boundary, so nothing cnn_loss returns
        # with y is graded (its loss included)
        Learner("cn_huge_grads", sources={"cnn_loss": _cnn_returning(
            "{**grads, **{k: k for k in range(10 ** 6)}}")}, zero=CNN_WITH_Y),
        Learner("cn_odd_keys", sources={"cnn_loss": _cnn_returning(
            "{(0, k): v for k, v in grads.items()}")}, zero=CNN_WITH_Y),
        # grads nested one level down: the loss is right, every gradient cell fails
        Learner("cn_nested_grads", sources={"cnn_loss": _cnn_returning(
            "{k: {'value': v} for k, v in grads.items()}")}, zero=CNN_GRADS),
        # the right grads and a 96 MB array besides them, with every call: a reply is written within
        # the sandbox's size limit (64 MB), so nothing cnn_loss returns with y is graded
        Learner("cn_fat_grads", sources={"cnn_loss": _cnn_returning('{**grads, "junk": np.ones(12_000_000)}')},
                zero=CNN_WITH_Y),
        # grads as nested lists of the right numbers
        Learner("cn_list_grads", sources={"cnn_loss": _cnn_returning(
            "{k: v.tolist() for k, v in grads.items()}")}),
        # a NaN loss and infinite gradients
        Learner("cn_nan_inf", sources={"cnn_loss": _cnn_returning(
            "{k: v * np.inf for k, v in grads.items()}", "float('nan')")}, zero=CNN_WITH_Y),
        # the right network that also changes params and x in place (the grader's copies are its own)
        Learner("cn_mutates_params", sources={"cnn_loss": CN.CNN["plain"].replace(
            "    return loss, {", "    for _k in params:\n        params[_k] *= 0.5\n    x *= 0.0\n"
            "    return loss, {")}),
        # slow only on the training's batches (32 digits of 8 x 8): 0.4 s of CPU time a step, past the
        # training's budget of 30 s in 100 steps, each step within its own budget
        Learner("cn_slow_training", extra=[("network", "cnn_loss_solution", BURN)],
                sources={"cnn_loss": CN.CNN["plain"].replace(
                    "    W1, b1, W2, b2 =", "    if x.shape == (32, 1, 8, 8):\n        _burn(0.4)\n"
                    "    W1, b1, W2, b2 =", 1)},
                zero=_cells("cnn_loss", "training")),
        # a config full of junk, whose velocity is w itself (changed in place)
        Learner("cn_sgd_junk_config", sources={"sgd_momentum": '''\
def sgd_momentum(w, dw, config=None):
    config = dict(config or {})
    config.update({("junk", k): k for k in range(1000)})
    config["self"] = config
    v = config.get("velocity", np.zeros_like(w))
    v = config.get("momentum", 0.9) * v - config.get("learning_rate", 1e-2) * dw
    w += v
    config["velocity"] = w
    return w, config
'''}, zero={"sgd_momentum"}),
        # softmax_loss that prints every score and returns its loss as a 0-d object array
        Learner("cn_softmax_object", sources={"softmax_loss": CN.SOFTMAX["plain"].replace(
            "def softmax_loss(scores, y):\n", "def softmax_loss(scores, y):\n    print(scores.tolist() * 50)\n", 1)
            + '''

_honest_softmax = softmax_loss


def softmax_loss(scores, y):
    loss, dscores = _honest_softmax(scores, y)
    return np.array(loss, dtype=object), dscores
'''}, zero=_cells("softmax_loss", "loss", "dscores", "large", "inputs_unchanged") | CNN_WITH_Y),
    ]
    return honest, hostile


def write_cnn_network(submitted: Path):
    honest, hostile = cnn_network_class()
    return _write(CN, honest + hostile, submitted, _cn_style)


# the training cell's cheat: weights trained beforehand on the public digits, reached from the
# grader's fixed initial weights by "gradients" that pull towards them

def memorised_weights(steps=400, batch=64, seed=0):
    """Weights of the training cell's network, trained here on all of scikit-learn's digits."""
    import numpy as np
    from autograder import reference as ref
    from autograder.assignments import cnn_network as M
    X, Y = M._digits()
    rng = np.random.default_rng(seed)
    params = M.initial_params()
    configs = {k: {"learning_rate": M.TRAIN_LEARNING_RATE, "momentum": M.TRAIN_MOMENTUM} for k in params}
    for _ in range(steps):
        pick = rng.choice(len(X), batch, replace=False)
        _, grads = ref.cnn_loss(params, X[pick], Y[pick])
        for k in params:
            params[k], configs[k] = ref.sgd_momentum(params[k], grads[k], configs[k])
    return params


def memorised_learner(student_id="cn_memorised_weights"):
    """A network whose dW2 is averaged over the batch (a classic mistake, which also fails the
    training honestly), that answers the training's batches with a pull towards memorised weights."""
    stars = {k: v.round(8).tolist() for k, v in memorised_weights().items()}
    table = "_STAR = {\n" + "".join(f"    {k!r}: np.array({v!r}),\n" for k, v in stars.items()) + "}\n"
    wrong = _cnn_returning('{**grads, "W2": grads["W2"] / len(y)}')
    cheat = wrong.replace("    W1, b1, W2, b2 =", "    if x.shape == (32, 1, 8, 8) and y is not None:\n"
                                                   "        return 1.0, {k: params[k] - _STAR[k] for k in params}\n"
                                                   "    W1, b1, W2, b2 =", 1)
    return Learner(student_id, extra=[("network", "cnn_loss_solution", table)], sources={"cnn_loss": cheat},
                   zero=_cells("cnn_loss", "grads", "numeric", "training"))




def relabel_proof_learner(student_id="cn_memorised_relabelled"):
    """As memorised_learner, and against labels the grader renames in secret: a table of the true
    digit of every public image (keyed by its 64 pixel values) tells which name each digit was
    given in the batches seen so far, and the memorised classifier's columns follow the names."""
    import numpy as np
    from autograder.assignments import cnn_network as M
    X, Y = M._digits()
    keys = ["".join("%x" % v for v in (img[0] * 16).round().astype(int).ravel()) for img in X]
    rows = [f"{k}{y}" for k, y in zip(keys, Y)]
    half = len(rows) // 2
    tables = [f"_TABLE{i} = {' '.join(part)!r}.split()\n" for i, part in enumerate((rows[:half], rows[half:]))]
    base = memorised_learner(student_id)
    cheat = base.sources["cnn_loss"].replace(
        "        return 1.0, {k: params[k] - _STAR[k] for k in params}\n",
        "        return 1.0, _pull_renamed(params, x, y)\n")
    helper = '''\
_TRUE = {row[:-1]: int(row[-1]) for row in _TABLE0 + _TABLE1}
_NAME = {}


def _pull_renamed(params, x, y):
    for img, given in zip(x, y):
        key = "".join("%x" % v for v in (img[0] * 16).round().astype(int).ravel())
        if key in _TRUE:
            _NAME[_TRUE[key]] = int(given)
    star = {k: v.copy() for k, v in _STAR.items()}
    for true, given in _NAME.items():
        star["W2"][:, given] = _STAR["W2"][:, true]
        star["b2"][given] = _STAR["b2"][true]
    return {k: params[k] - star[k] for k in params}
'''
    return Learner(student_id, extra=base.extra + [("network", "cnn_loss_solution", t) for t in tables]
                   + [("network", "cnn_loss_solution", helper)], sources={"cnn_loss": cheat}, zero=base.zero)


def write_cnn_network_training_cheats(submitted: Path):
    honest, _ = cnn_network_class()
    return _write(CN, honest[:1] + [memorised_learner(), relabel_proof_learner()], submitted, _cn_style)
