"""The book's public helper module, book/convbook.py: readers download it next to a page,
so it must work with NumPy and matplotlib alone, and its helpers must do what the pages
say they do."""
import ast
import importlib.util
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONVBOOK = ROOT / "book" / "convbook.py"
# What a reader's Jupyter environment has; IPython only for showing an animation.
ALLOWED_TOP_LEVEL = {"numpy", "matplotlib", "sklearn", "re", "IPython", "importlib", "sys", "html",
                     "os", "concurrent", "contextlib",
                     "threadpoolctl"}   # comes with scikit-learn; batch_threads does without it
# The modules load_layers looks up by name: the reader's file, then the course's layers.
LOOKED_UP = ["my_layers", "autograder.reference"]


@pytest.fixture(scope="module")
def convbook():
    spec = importlib.util.spec_from_file_location("convbook", CONVBOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def test_imports_only_what_readers_have():
    names = imported_modules(CONVBOOK)
    assert names <= ALLOWED_TOP_LEVEL, f"convbook imports {sorted(names - ALLOWED_TOP_LEVEL)}"
    assert "autograder" not in names and "scipy" not in names


def test_only_load_layers_imports_by_name():
    """importlib is allowed for one purpose: load_layers' look-up of my_layers.py and of the
    course's layers. Nothing else in convbook may import by name."""
    tree = ast.parse(CONVBOOK.read_text(encoding="utf-8"))
    found = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                        "importlib.import_module", "__import__", "importlib.__import__"):
                    found.setdefault(fn.name, []).append(ast.literal_eval(node.args[0]))
    assert found == {"load_layers": LOOKED_UP}, found


def test_import_scan_can_fail(tmp_path):
    planted = tmp_path / "helpers.py"
    planted.write_text("import numpy as np\nfrom autograder.reference import conv_forward\n")
    assert "autograder" in imported_modules(planted)


def test_rot180(convbook):
    w = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(convbook.rot180(w), np.rot90(w, 2))
    np.testing.assert_array_equal(convbook.rot180(convbook.rot180(w)), w)
    w4 = np.arange(2 * 3 * 2 * 3.0).reshape(2, 3, 2, 3)
    r4 = convbook.rot180(w4)
    for f in range(2):
        for c in range(3):          # every filter rotated alone, channel order kept
            np.testing.assert_array_equal(r4[f, c], np.rot90(w4[f, c], 2))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        convbook.rot180(np.arange(3.0))


def test_dilate(convbook):
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(convbook.dilate(a, 2),
                                  [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    assert convbook.dilate(np.ones((2, 3, 4, 4)), 3).shape == (2, 3, 10, 10)
    d1 = convbook.dilate(a, 1)
    np.testing.assert_array_equal(d1, a)
    assert d1 is not a
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            convbook.dilate(a, bad)


def test_show_grid_draws_every_number_and_blanks(convbook):
    fig, ax = plt.subplots()
    a = np.array([[1.0, np.nan], [0.0, -2.5]])
    convbook.show_grid(ax, a, "t", box=(0, 0, 1, 2), shade=np.isnan(a), mark=a < 0,
                       fade_zeros=True)
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["-2.5", "0", "1"]
    assert ax.get_title() == "t" and len(ax.patches) == 2
    colours = ax.images[0].get_array()
    assert tuple(colours[0, 1]) == (0.85, 0.85, 0.85)        # shaded
    assert tuple(colours[1, 1]) == (1.0, 0.75, 0.45)         # marked
    plt.close(fig)
    fig, ax = plt.subplots()
    convbook.show_grid(ax, np.array([["$x_{00}$", ""]], dtype=object))
    assert [t.get_text() for t in ax.texts] == ["$x_{00}$", ""]
    with pytest.raises(ValueError, match="2D"):
        convbook.show_grid(ax, np.zeros(3))
    plt.close(fig)


def test_animation_html_drops_the_cdn_link(convbook):
    from matplotlib.animation import FuncAnimation

    fig, ax = plt.subplots()
    anim = FuncAnimation(fig, lambda k: [], frames=2)
    html = convbook.animation_html(anim).data
    described = convbook.animation_html(anim, alt='the window "slides" <right>').data
    plt.close(fig)
    assert "font-awesome" not in html.lower() and "<img" in html
    frame = re.search(r"<img[^>]*_anim_img[^>]*>", described).group(0)
    assert 'alt="the window &quot;slides&quot; &lt;right&gt;"' in frame


def _function_source(path, name):
    source = Path(path).read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node)
    raise AssertionError(f"{path} defines no {name}()")


@pytest.mark.parametrize("module, names", [
    ("gradcheck.py", ["numerical_gradient", "rel_error"]),
    ("reference.py", ["output_size"]),
])
def test_public_copies_equal_the_course_package(module, names):
    """Readers get these without the instructor's package; the copy must not drift."""
    for name in names:
        assert _function_source(CONVBOOK, name) == \
            _function_source(ROOT / "autograder" / module, name), \
            f"convbook.{name} differs from autograder/{module}; copy it again"


GRADED = ("zero_pad", "conv_forward", "conv_backward", "maxpool_forward", "maxpool_backward",
          "relu_forward", "relu_backward", "affine_forward", "affine_backward", "avgpool_forward",
          "avgpool_backward", "softmax_loss", "cnn_loss", "sgd_momentum")


def test_publishes_no_graded_layer(convbook):
    """Every layer the exercises grade (cnn_layers and cnn_network) is the reader's to write:
    the pages get them through load_layers, never from convbook."""
    defined = {node.name for node in ast.parse(CONVBOOK.read_text(encoding="utf-8")).body
               if isinstance(node, ast.FunctionDef)}
    assert not defined & set(GRADED), sorted(defined & set(GRADED))
    assert not set(convbook.__all__) & set(GRADED)
    assert convbook.rel_error(np.ones(3), np.ones(3) * (1 + 1e-3)) > 1e-4
    with pytest.raises(ValueError, match="does not fit"):
        convbook.output_size(2, 3)


# ----------------------------------------------------------------------------- load_layers

MINE = """import numpy as np

def conv_forward(x, w, b, stride=1, pad=0):
    return "mine", None

def conv_backward(dout, cache):
    return "mine backward"
"""


@pytest.fixture
def reader(tmp_path, monkeypatch):
    """A folder on the import path, as the folder a downloaded page runs in; my_layers and
    the course's package are forgotten before and after."""
    import sys
    for name in ("my_layers", "autograder.reference"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_layers", None)


def test_load_layers_takes_the_readers_layers(convbook, reader):
    (reader / "my_layers.py").write_text(MINE, encoding="utf-8")
    conv_forward, conv_backward = convbook.load_layers("conv_forward", "conv_backward")
    assert conv_forward(None, None, None) == ("mine", None)
    assert conv_backward(None, None) == "mine backward"
    assert convbook.layers_used() == "yours, from my_layers.py"
    one = convbook.load_layers("conv_forward")                       # one name: no tuple
    assert callable(one) and one(None, None, None) == ("mine", None)


def test_load_layers_names_what_my_layers_lacks(convbook, reader):
    (reader / "my_layers.py").write_text(MINE, encoding="utf-8")
    with pytest.raises(ImportError, match=r"defines no function maxpool_forward, maxpool_backward"):
        convbook.load_layers("conv_forward", "maxpool_forward", "maxpool_backward")


def test_load_layers_picks_up_an_edited_my_layers(convbook, reader):
    """The error says "add them and run the page again": running the cell again must see
    the edited file, without restarting the kernel."""
    (reader / "my_layers.py").write_text(MINE, encoding="utf-8")
    assert convbook.load_layers("conv_forward")(None, None, None) == ("mine", None)
    with pytest.raises(ImportError, match="defines no function conv_forward_loops"):
        convbook.load_layers("conv_forward", "conv_forward_loops")
    (reader / "my_layers.py").write_text(
        MINE.replace('"mine"', '"edited"')
        + "\n\ndef conv_forward_loops(x, w, b, stride=1, pad=0):\n    return 'loops', None\n",
        encoding="utf-8")
    conv_forward, loops = convbook.load_layers("conv_forward", "conv_forward_loops")
    assert conv_forward(None, None, None) == ("edited", None)
    assert loops(None, None, None) == ("loops", None)


def test_load_layers_missing_ok_gives_none_for_what_my_layers_lacks(convbook, reader):
    (reader / "my_layers.py").write_text(MINE, encoding="utf-8")
    conv_forward, loops = convbook.load_layers("conv_forward", "conv_forward_loops",
                                               missing_ok=True)
    assert conv_forward(None, None, None) == ("mine", None) and loops is None
    assert convbook.layers_used() == "yours, from my_layers.py"


def test_load_layers_does_not_hide_an_import_error_inside_my_layers(convbook, reader):
    (reader / "my_layers.py").write_text("import no_such_module_here\n", encoding="utf-8")
    with pytest.raises(ModuleNotFoundError) as caught:
        convbook.load_layers("conv_forward")
    assert caught.value.name == "no_such_module_here"


def test_load_layers_falls_back_to_the_course_layers_in_the_build(convbook, reader):
    got = convbook.load_layers("conv_forward", "maxpool_backward")
    assert [(f.__module__, f.__name__) for f in got] == \
        [("autograder.reference", "conv_forward"), ("autograder.reference", "maxpool_backward")]
    assert convbook.layers_used() == "the course's reference layers"


def test_load_layers_tells_a_reader_what_to_write(convbook, reader, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "autograder", None)     # a reader has no course package
    with pytest.raises(ModuleNotFoundError, match=r"your own conv_forward, conv_backward .*"
                       r"save them in a file my_layers\.py next to this notebook") as caught:
        convbook.load_layers("conv_forward", "conv_backward")
    assert caught.value.name == "my_layers"
    with pytest.raises(TypeError, match="function names as strings"):
        convbook.load_layers(convbook.rel_error)


def test_figures_record_the_size_of_their_smallest_text(convbook):
    """A figure's PNG records its smallest drawn text in pixels (what the browser test
    scales to the phone's column): hidden text and the axis of an axes drawn without one
    do not count."""
    import io

    from PIL import Image

    fig, (a, b) = plt.subplots(1, 2, figsize=(4, 2), dpi=100)
    a.set_title("title", fontsize=20)
    a.tick_params(labelsize=7)
    a.text(0.5, 0.5, "hidden", fontsize=2, visible=False)
    b.tick_params(labelsize=4)
    b.text(0.5, 0.5, "shown", fontsize=12)
    fig.canvas.draw()                   # b's tick labels get their text ...
    b.axis("off")                       # ... but are not drawn any more
    with Image.open(io.BytesIO(convbook._png_with_font_size(fig))) as png:
        assert png.text[convbook.FONT_PX_KEY] == f"{7 * 100 / 72:.3f}"
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.axis("off")
    assert convbook.smallest_font_px(fig) is None
    plt.close(fig)


def test_animation_records_its_text_size_without_running_again(convbook):
    """animation_html adds the frame's text size and leaves the animation's state as
    matplotlib's player left it (chapter 6 checks the state of its last frame)."""
    from matplotlib.animation import FuncAnimation

    def run(show):
        calls = []
        fig, ax = plt.subplots(figsize=(3, 2), dpi=100)
        ax.tick_params(labelsize=9)
        anim = FuncAnimation(fig, lambda k: calls.append(k), frames=3)
        page = show(anim)
        plt.close(fig)
        return calls, page

    plain, _ = run(lambda anim: anim.to_jshtml())
    recorded, html = run(lambda anim: convbook.animation_html(anim, alt="three frames").data)
    assert recorded == plain
    assert f'data-font-px="{9 * 100 / 72:.3f}"' in html and 'alt="three frames"' in html


# ----------------------------------------------------------------------------- batch_threads
# Chapter 9 runs a layer with the batch cut in shares on threads; `make bench` times the
# course's layer that way. The wrapped layer must give the layer's own numbers.

def _blas_threads():
    from threadpoolctl import threadpool_info
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("N, workers, stride, pad", [
    (1, 2, 1, 1), (2, 2, 1, 0), (5, 2, 2, 1), (7, 3, 1, 2), (3, 8, 2, 0)])
def test_batch_threads_gives_the_layers_own_numbers(convbook, N, workers, stride, pad):
    """Every share's out and dx are its own images' rows, dw and db the sum of the shares';
    more threads than images leaves some idle."""
    from autograder import reference as R
    rng = np.random.default_rng(N)
    x, w, b = rng.normal(size=(N, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    forward, backward = convbook.batch_threads(R.conv_forward, R.conv_backward, workers)
    out, cache = forward(x, w, b, stride=stride, pad=pad)
    expected, ref_cache = R.conv_forward(x, w, b, stride=stride, pad=pad)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert len(cache[1]) == min(N, workers)
    dout = rng.normal(size=out.shape)
    for got, want in zip(backward(dout, cache), R.conv_backward(dout, ref_cache)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_batch_threads_runs_the_shares_at_once_with_one_blas_thread(convbook):
    """The two shares meet at a barrier inside the layer, which only works if they run at
    the same time; BLAS has one thread while they run and gets its own count back after."""
    import threading
    from autograder import reference as R
    before = _blas_threads()
    meet = threading.Barrier(2, timeout=10)
    seen = []

    def forward(x, w, b, stride=1, pad=0):
        seen.append(_blas_threads())
        meet.wait()
        return R.conv_forward(x, w, b, stride=stride, pad=pad)

    threaded_forward, _ = convbook.batch_threads(forward, R.conv_backward, workers=2)
    rng = np.random.default_rng(0)
    threaded_forward(rng.normal(size=(4, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3)), np.zeros(3))
    assert seen == [[1] * len(before)] * 2
    assert _blas_threads() == before


def test_batch_threads_passes_a_shares_error_on(convbook):
    """A layer that fails on one share fails the call, with its own error, and BLAS gets
    its thread count back."""
    from autograder import reference as R
    before = _blas_threads()

    def forward(x, w, b, stride=1, pad=0):
        if x[0, 0, 0, 0] > 100:
            raise ValueError("this share's images are too bright")
        return R.conv_forward(x, w, b, stride=stride, pad=pad)

    threaded_forward, _ = convbook.batch_threads(forward, R.conv_backward, workers=2)
    x = np.zeros((4, 1, 4, 4))
    x[2, 0, 0, 0] = 1000                 # the first image of the second share
    with pytest.raises(ValueError, match="too bright"):
        threaded_forward(x, np.ones((1, 1, 2, 2)), np.zeros(1))
    assert _blas_threads() == before
