"""What learners choose in an LMS download never decides whose notebook it is or when it came in,
and one learner's upload never stops collect (or grading) for the class.

A learner chooses the name of the file they upload (Canvas and Blackboard keep it after their own
prefix), the folders inside their submission (Moodle, Gradescope) and what a zip they upload holds.
Each test builds a real download (tests/lms_downloads.py), adds what a hostile learner, mallory,
uploads, and checks that the honest classmates are placed exactly as without her: the same files,
bytes, names, LMS ids, late markers and times.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import collect, lms, times
from autograder.assignments import cnn_layers
from autograder.cli import main as cli_main

import lms_downloads as L

REPO = Path(__file__).resolve().parents[1]
SOLUTION = {nb: (REPO / "solutions" / "cnn_layers" / f"{nb}.ipynb").read_bytes() for nb in cnn_layers.NOTEBOOKS}
RELEASE = {nb: (REPO / "exercises" / "cnn_layers" / f"{nb}.ipynb").read_bytes() for nb in cnn_layers.NOTEBOOKS}
GS = "assignment_424242_export"


def _placed(report, dest):
    return sorted(os.path.relpath(p, dest) for p in report.copied)


def _stamp(dest, student):
    path = dest / student / "cnn_layers" / "timestamp.txt"
    return path.read_text().strip() if path.exists() else None


def _unplaced(report, text):
    return [line for line in report.unplaced if text in line]


# --------------------------------------------------------------------------- Blackboard

def test_blackboard_file_names_and_receipts_uploaded_by_a_learner_decide_nothing(tmp_path):
    z = L.blackboard(tmp_path / "gradebook_CNN101_Homework3.zip", [
        ("amyng", "Amy Ng", "2026-03-07-10-00-00", "convolution.ipynb", SOLUTION["convolution"]),
        ("boolee", "Bo Lee", "2026-03-05-09-30-00", "convolution.ipynb", RELEASE["convolution"]),
        # a username may hold '_': the receipt's Name line says which part is the username
        ("cy_li", "Cy Li", "2026-03-06-08-00-00", "pooling.ipynb", SOLUTION["pooling"]),
        # mallory's attempt came in late (March 10); the file she uploaded names an earlier attempt
        ("mallory", "Mallory Evil", "2026-03-10-12-00-00", "x_mallory_attempt_2026-03-01-10-00-00_pooling.ipynb",
         SOLUTION["pooling"]),
    ])
    attempt = "Homework 3_mallory_attempt_2026-03-10-12-00-00"
    L.add(z, {
        # a file named as bob's attempt, and a "receipt" that renames bob
        f"{attempt}_x_boolee_attempt_2026-03-05-09-30-00_pooling.ipynb": SOLUTION["pooling"],
        f"{attempt}_Homework 3_boolee_attempt_2026-03-05-09-30-00.txt": "Name: Mallory Evil (boolee)\n",
    })
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")
    assert rep.lms == "blackboard"
    # amy, bob and cy exactly as without mallory
    assert _placed(rep, dest) == ["amyng/cnn_layers/convolution.ipynb", "boolee/cnn_layers/convolution.ipynb",
                                  "cy_li/cnn_layers/pooling.ipynb"]
    assert collect.read_manifest(dest / "cy_li" / "cnn_layers")["name"] == "Cy Li"
    assert (dest / "boolee" / "cnn_layers" / "convolution.ipynb").read_bytes() == RELEASE["convolution"]
    assert not (dest / "boolee" / "cnn_layers" / "pooling.ipynb").exists()
    bo = collect.read_manifest(dest / "boolee" / "cnn_layers")
    assert (bo["name"], bo["lms_user_id"], bo["submitted_at"]) == ("Bo Lee", "boolee", "2026-03-05 09:30:00 UTC")
    assert _stamp(dest, "boolee") == "2026-03-05 09:30:00 UTC"
    assert _stamp(dest, "amyng") == "2026-03-07 10:00:00 UTC"
    assert collect.read_manifest(dest / "amyng" / "cnn_layers")["name"] == "Amy Ng"
    # mallory's files are hers, named as she named them: not notebooks of the assignment
    assert not (dest / "mallory").exists()
    assert len(_unplaced(rep, "is not a notebook of 'cnn_layers'")) == 2
    assert any(line.startswith(f"{attempt}_x_mallory_attempt_2026-03-01") for line in rep.unplaced)


# --------------------------------------------------------------------------- Moodle

def test_moodle_folders_inside_a_submission_are_the_learners(tmp_path):
    z = L.moodle(tmp_path / "moodle.zip", [
        ("Amy Ng", "5001", "convolution.ipynb", SOLUTION["convolution"]),
        ("Bo Lee", "5002", "convolution.ipynb", RELEASE["convolution"]),
        # mallory's own folder holds one named as bob's Moodle folder
        ("Mallory Evil", "5003", "Bo Lee_5002_assignsubmission_file_/convolution.ipynb", SOLUTION["convolution"]),
    ])
    dest = tmp_path / "submitted"
    assert cli_main(["collect", str(z), "--to", str(dest)]) == 0
    for student, data, pid in (("amy-ng", SOLUTION, "5001"), ("bo-lee", RELEASE, "5002"),
                               ("mallory-evil", SOLUTION, "5003")):
        assert (dest / student / "cnn_layers" / "convolution.ipynb").read_bytes() == data["convolution"]
        assert collect.read_manifest(dest / student / "cnn_layers")["lms_user_id"] == pid
    assert sorted(p.name for p in dest.iterdir()) == ["amy-ng", "bo-lee", "mallory-evil"]


# --------------------------------------------------------------------------- Canvas unpacked, learners' zips

def _canvas_class(tmp_path, mallory_upload, name="work.zip"):
    z = L.canvas(tmp_path / "submissions.zip", [
        ("ngamy", "1001", "9001", "Convolution.ipynb", SOLUTION["convolution"], False),
        ("ngamy", "1001", "9002", "pooling (1).ipynb", SOLUTION["pooling"], False),
        ("leebo", "1002", "9003", "convolution-1.ipynb", RELEASE["convolution"], True),
        ("mallory", "1003", "9005", name, mallory_upload, True),
    ])
    return z


def _assert_canvas_classmates(rep, dest):
    assert [p for p in _placed(rep, dest) if not p.startswith("mallory/")] == [
        "leebo/cnn_layers/convolution.ipynb", "ngamy/cnn_layers/convolution.ipynb", "ngamy/cnn_layers/pooling.ipynb"]
    assert (dest / "ngamy" / "cnn_layers" / "pooling.ipynb").read_bytes() == SOLUTION["pooling"]
    assert (dest / "leebo" / "cnn_layers" / "convolution.ipynb").read_bytes() == RELEASE["convolution"]
    bo = collect.read_manifest(dest / "leebo" / "cnn_layers")
    assert (bo["lms_user_id"], bo["late"], bo["files"]) == (
        "1002", True, {"convolution": "leebo_LATE_1002_9003_convolution-1.ipynb"})
    assert collect.read_manifest(dest / "ngamy" / "cnn_layers")["late"] is False


def test_canvas_unpacked_a_learners_zip_is_not_opened(tmp_path):
    upload = L.zip_bytes({"mallory_1003_9006_convolution.ipynb": SOLUTION["convolution"],
                          "leebo_1002_9007_pooling.ipynb": SOLUTION["pooling"]})
    folder = L.unzip(_canvas_class(tmp_path, upload), tmp_path / "download")
    dest = tmp_path / "submitted"
    rep = collect.collect(str(folder), str(dest), "cnn_layers")
    assert rep.lms == "canvas"
    _assert_canvas_classmates(rep, dest)
    assert not (dest / "leebo" / "cnn_layers" / "pooling.ipynb").exists()
    # mallory's late zip is hers, not placed; her late marker cannot be lost through it
    assert not (dest / "mallory").exists()
    (line,) = rep.unplaced
    assert line.startswith("mallory_LATE_1003_9005_work.zip: a zip file inside the download (from mallory)")


def test_a_learners_upload_named_zip_that_is_no_zip_stops_nobody(tmp_path, capsys):
    folder = L.unzip(_canvas_class(tmp_path, b"this is not a zip"), tmp_path / "download")
    dest = tmp_path / "submitted"
    assert cli_main(["collect", str(folder), "--to", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "NOT PLACED mallory_LATE_1003_9005_work.zip: a zip file inside the download" in out
    assert "3 copied, 0 unchanged, 1 not placed" in out
    for path in ("leebo/cnn_layers/convolution.ipynb", "ngamy/cnn_layers/convolution.ipynb",
                 "ngamy/cnn_layers/pooling.ipynb"):
        assert (dest / path).is_file()


def test_a_learners_zip_with_a_bad_crc_stops_nobody(tmp_path):
    inner = tmp_path / "inner.zip"
    inner.write_bytes(L.zip_bytes({"adee_1004_9010_convolution.ipynb": SOLUTION["convolution"]}))
    L.break_crc(inner, "adee_1004_9010_convolution.ipynb")
    folder = L.unzip(_canvas_class(tmp_path, inner.read_bytes(), name="mine.zip"), tmp_path / "download")
    dest = tmp_path / "submitted"
    rep = collect.collect(str(folder), str(dest), "cnn_layers")
    _assert_canvas_classmates(rep, dest)
    assert len(rep.unplaced) == 1 and "a zip file inside the download" in rep.unplaced[0]


def test_a_bad_crc_in_the_download_loses_only_that_file(tmp_path):
    z = _canvas_class(tmp_path, SOLUTION["convolution"], name="convolution.ipynb")
    L.break_crc(z, "leebo_LATE_1002_9003_convolution-1.ipynb")
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")
    assert _placed(rep, dest) == ["mallory/cnn_layers/convolution.ipynb", "ngamy/cnn_layers/convolution.ipynb",
                                  "ngamy/cnn_layers/pooling.ipynb"]
    (line,) = rep.unplaced
    assert line.startswith("leebo_LATE_1002_9003_convolution-1.ipynb: cannot be read")
    assert "Bad CRC-32" in line and "download it from the LMS again" in line
    # the LMS's side files are read safely too: a damaged Blackboard receipt only loses bob's name
    bb = L.blackboard(tmp_path / "bb.zip", [
        ("amyng", "Amy Ng", "2026-03-07-10-00-00", "convolution.ipynb", SOLUTION["convolution"]),
        ("boolee", "Bo Lee", "2026-03-05-09-30-00", "pooling.ipynb", RELEASE["pooling"]),
    ])
    L.break_crc(bb, "Homework 3_boolee_attempt_2026-03-05-09-30-00.txt")
    rep = collect.collect(str(bb), str(tmp_path / "bb"), "cnn_layers")
    assert _placed(rep, tmp_path / "bb") == ["amyng/cnn_layers/convolution.ipynb", "boolee/cnn_layers/pooling.ipynb"]
    assert collect.read_manifest(tmp_path / "bb" / "amyng" / "cnn_layers")["name"] == "Amy Ng"
    assert collect.read_manifest(tmp_path / "bb" / "boolee" / "cnn_layers")["name"] == ""


def test_uploads_named_for_another_layout_do_not_decide_the_layout(tmp_path):
    # five uploads whose names, after Canvas's prefix, read as Moodle's flat layout
    z = _canvas_class(tmp_path, SOLUTION["pooling"], name="pooling.ipynb")
    L.add(z, {f"mallory_LATE_1003_90{k}_x{k}_1_assignsubmission_file_convolution.ipynb": SOLUTION["convolution"]
              for k in range(10, 15)})
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")   # detected
    assert rep.lms == "canvas"
    _assert_canvas_classmates(rep, dest)
    assert (dest / "mallory" / "cnn_layers" / "pooling.ipynb").read_bytes() == SOLUTION["pooling"]
    assert len(_unplaced(rep, "is not a notebook of 'cnn_layers'")) == 5


def test_file_names_a_learner_chose_reach_the_terminal_escaped(tmp_path, capsys):
    z = _canvas_class(tmp_path, SOLUTION["pooling"], name="\x1b]0;owned\x07\x1b[2Jpooling.ipynb")
    L.add(z, {"mallory_LATE_1003_9009_\x1b[31mnotes.txt": "hi"})
    dest = tmp_path / "submitted"
    assert cli_main(["collect", str(z), "--to", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert r"NOT PLACED mallory_LATE_1003_9005_\x1b]0;owned\x07\x1b[2Jpooling.ipynb: " in out
    assert r"mallory_LATE_1003_9009_\x1b[31mnotes.txt" in out
    assert "3 copied, 0 unchanged, 1 not placed" in out


# --------------------------------------------------------------------------- Gradescope

def _gradescope(tmp_path, mallory_file="convolution.ipynb"):
    return L.gradescope(tmp_path / "gradescope.zip", [
        ("111", "Amy Ng", "s1001", "amy@example.edu", "2026-03-07 10:00:00.000000000 -08:00", "convolution.ipynb",
         SOLUTION["convolution"]),
        ("112", "Bo Lee", "s1002", "bo@example.edu", "2026-03-05 09:30:00.000000000 +00:00", "pooling.ipynb",
         RELEASE["pooling"]),
        ("113", "Mallory Evil", "s1003", "mal@example.edu", "2026-03-09 23:00:00.000000000 +00:00", mallory_file,
         SOLUTION["convolution"]),
    ])


def _assert_gradescope_classmates(rep, dest):
    assert [p for p in _placed(rep, dest) if not p.startswith("s1003/")] == [
        "s1001/cnn_layers/convolution.ipynb", "s1002/cnn_layers/pooling.ipynb"]
    assert (dest / "s1002" / "cnn_layers" / "pooling.ipynb").read_bytes() == RELEASE["pooling"]
    assert sorted(p.name for p in (dest / "s1002" / "cnn_layers").iterdir()) == [
        "collect.json", "pooling.ipynb", "timestamp.txt"]
    assert _stamp(dest, "s1001") == "2026-03-07 18:00:00 UTC"
    assert _stamp(dest, "s1002") == "2026-03-05 09:30:00 UTC"
    assert collect.read_manifest(dest / "s1002" / "cnn_layers")["name"] == "Bo Lee"


def test_gradescope_a_submission_folder_inside_a_submission_is_the_learners(tmp_path):
    z = _gradescope(tmp_path, mallory_file="submission_112/convolution.ipynb")
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z), str(dest), "cnn_layers")
    assert rep.lms == "gradescope" and rep.unplaced == []
    _assert_gradescope_classmates(rep, dest)
    assert (dest / "s1003" / "cnn_layers" / "convolution.ipynb").read_bytes() == SOLUTION["convolution"]
    assert _stamp(dest, "s1003") == "2026-03-09 23:00:00 UTC"


@pytest.mark.parametrize("mallory_time", ["2026-03-01 09:00:00.000000000 +00:00", "9999-12-31 23:59:59 -14:00"])
def test_gradescope_metadata_a_learner_uploads_is_not_gradescopes(tmp_path, mallory_time):
    z = _gradescope(tmp_path)
    forged = ("submission_112:\n  :submitters:\n  - :name: Bo Lee\n    :sid: 's1002'\n"
              "  :created_at: 2026-03-20 12:00:00.000000000 +00:00\n"
              f"submission_113:\n  :submitters:\n  - :name: Mallory Evil\n    :sid: 's1003'\n"
              f"  :created_at: {mallory_time}\n")
    L.add(z, {f"{GS}/submission_113/submission_metadata.yml": forged})
    folder = L.unzip(z, tmp_path / "download")   # unpacked, the learner's file is read after Gradescope's
    dest = tmp_path / "submitted"
    rep = collect.collect(str(folder), str(dest), "cnn_layers")
    assert rep.lms == "gradescope" and rep.unplaced == []
    _assert_gradescope_classmates(rep, dest)
    assert _stamp(dest, "s1003") == "2026-03-09 23:00:00 UTC"


def test_gradescope_time_out_of_range_is_that_submission_alone(tmp_path):
    z = _gradescope(tmp_path)
    import zipfile
    with zipfile.ZipFile(z) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    meta = members[f"{GS}/submission_metadata.yml"].decode()
    members[f"{GS}/submission_metadata.yml"] = meta.replace("2026-03-09 23:00:00.000000000 +00:00",
                                                            "9999-12-31 23:59:59 -14:00")
    z2 = tmp_path / "export.zip"
    L.add(z2, members)
    dest = tmp_path / "submitted"
    rep = collect.collect(str(z2), str(dest), "cnn_layers")
    _assert_gradescope_classmates(rep, dest)
    (line,) = rep.unplaced
    assert line.startswith(f"{GS}/submission_113/convolution.ipynb: the :created_at: of submission_113")
    assert "outside 1970-2100" in line or "no UTC time" in line
    assert not (dest / "s1003").exists()


def _collect_limited(args, mem_bytes=2 << 30, timeout=120):
    """collect in a child process limited to mem_bytes of address space: a YAML bomb fails it, not us."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "autograder", "collect", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit, env=env)
    return proc, time.monotonic() - start


def _bomb_metadata(levels=9):
    anchors, alias = L.yaml_alias_bomb(levels)
    return (anchors + "submission_113:\n  :submitters:\n"
            f"  - :name: {alias}\n    :sid: {alias}\n    :email: {alias}\n"
            f"  :created_at: {alias}\n")


def test_gradescope_yaml_alias_bomb_from_a_learner_is_not_read(tmp_path):
    z = _gradescope(tmp_path)
    L.add(z, {f"{GS}/submission_113/submission_metadata.yml": _bomb_metadata()})
    folder = L.unzip(z, tmp_path / "download")
    dest = tmp_path / "submitted"
    proc, seconds = _collect_limited([str(folder), "--to", str(dest)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "3 copied, 0 unchanged, 0 not placed" in proc.stdout
    assert seconds < 60
    assert _stamp(dest, "s1002") == "2026-03-05 09:30:00 UTC"
    assert _stamp(dest, "s1003") == "2026-03-09 23:00:00 UTC"


def test_gradescope_metadata_is_loaded_with_bounded_nodes(tmp_path):
    # Gradescope's own file, were it a bomb: refused in a moment, and nothing is guessed
    bomb = _bomb_metadata().encode()
    assert len(bomb) < 1000
    z = _gradescope(tmp_path)
    import zipfile
    with zipfile.ZipFile(z) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members[f"{GS}/submission_metadata.yml"] = bomb
    z2 = L.add(tmp_path / "export.zip", members)
    proc, seconds = _collect_limited([str(z2), "--to", str(tmp_path / "submitted")])
    assert proc.returncode == 1 and seconds < 60, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("submission_metadata.yml cannot be used (more than 500000 nodes") == 3
    start = time.monotonic()
    with pytest.raises(ValueError, match="more than 500000 nodes"):
        lms.load_yaml(bomb)
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="nested deeper"):
        lms.load_yaml(b"[" * 1000 + b"]" * 1000)
    with pytest.raises(ValueError, match="holds it"):
        lms.load_yaml(b"a: &a [*a]\n")
    # an honest anchor is fine, and counted once per use
    assert lms.load_yaml(b"x: &p {n: 1}\ny: *p\n") == {"x": {"n": 1}, "y": {"n": 1}}


# --------------------------------------------------------------------------- times

def test_times_are_range_checked_in_one_place():
    assert times.to_utc(times.parse("2026-03-07 10:00:00 -08:00")) == times.parse("2026-03-07 18:00:00")
    for bad in ("9999-12-31 23:59:59 -14:00", "0001-01-01 00:00:00 +14:00", "1969-12-31 23:59:59 UTC",
                "2100-01-01 00:00:00 UTC", "not a date", "x" * 500):
        with pytest.raises(times.BadTime):
            times.parse(bad)
    assert lms.format_timestamp(times.to_utc(times.parse("2099-12-31 23:59:59 UTC"))) == "2099-12-31 23:59:59 UTC"
