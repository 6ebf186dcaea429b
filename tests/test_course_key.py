"""The course key and the hidden inputs derived from it: same notebook, same inputs."""
import os
import stat

import numpy as np
import pytest

from autograder import grading
from autograder.grading import GradingError, load_course_key, notebook_rng
from autograder.submission import content_sha256


def test_key_is_made_once_private_and_reused(tmp_path):
    path = tmp_path / "out" / "course.key"
    key = load_course_key(str(path))
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_course_key(str(path)) == key
    assert load_course_key(str(tmp_path / "other.key")) != key


def test_key_path_setting_order(tmp_path, monkeypatch):
    monkeypatch.delenv(grading.COURSE_KEY_ENV, raising=False)
    assert grading.course_key_path("OUT") == os.path.join("OUT", "course.key")
    monkeypatch.setenv(grading.COURSE_KEY_ENV, str(tmp_path / "env.key"))
    assert grading.course_key_path("OUT") == str(tmp_path / "env.key")
    assert grading.course_key_path("OUT", "given.key") == "given.key"


@pytest.mark.parametrize("setup, says", [
    (lambda p: (p.write_text("ab" * 32 + "\n"), p.chmod(0o644)), "chmod 600"),
    (lambda p: (p.write_text("not a key\n"), p.chmod(0o600)), "not a course key"),
])
def test_bad_key_files_are_refused_with_the_fix(tmp_path, setup, says):
    path = tmp_path / "course.key"
    setup(path)
    with pytest.raises(GradingError, match=says):
        load_course_key(str(path))


def test_a_link_is_not_followed(tmp_path):
    real = tmp_path / "real.key"
    load_course_key(str(real))
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(GradingError, match="regular file"):
        load_course_key(str(link))
    with pytest.raises(OSError):
        content_sha256(str(link))


def test_inputs_depend_on_key_notebook_and_content_only(tmp_path):
    nb = tmp_path / "n.ipynb"
    nb.write_bytes(b'{"cells": []}')
    h = content_sha256(str(nb))
    assert len(h) == 64 and h == content_sha256(str(nb))
    key = b"k" * 32
    draw = lambda k, name, hh: notebook_rng(k, name, hh).standard_normal(5)  # noqa: E731
    np.testing.assert_array_equal(draw(key, "convolution", h), draw(key, "convolution", h))
    nb.write_bytes(b'{"cells": [] }')  # one byte more: fresh inputs
    h2 = content_sha256(str(nb))
    assert h2 != h
    assert not np.array_equal(draw(key, "convolution", h), draw(key, "convolution", h2))
    assert not np.array_equal(draw(key, "convolution", h), draw(b"j" * 32, "convolution", h))
    assert not np.array_equal(draw(key, "convolution", h), draw(key, "pooling", h))
