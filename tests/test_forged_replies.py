"""Replies a learner forges on the protocol pipe: whatever they hold, the grader reads them
without raising, the forger gets ``bad-output`` with a reason, and the run goes on.

The learner's code can write any JSON line with the call's nonce (it is in the sandbox's own
frame) and any ``.npy`` file next to it.  ``autograder.wire.decode`` and ``read_npy`` are
fuzzed here with such replies (huge integers, NaN, deep nesting, wrong types, bools, forged
headers with impossible shapes or dtypes, non-ASCII text), then a class with a learner who
forges them is graded beside honest classmates.
"""
import json
import math
import os
import random

import numpy as np
import pytest

from autograder.sandbox import CallResult, Limits, LearnerProcess, Unreadable, isolation_mode
from autograder.wire import decode, read_npy
from conftest import grades_by_key, read_csv, run_grade
from classgen import build as B
from classgen import hostile as H

NONCE = "0" * 32
HUGE = 10 ** 400


def _npy(header, data=b"\0" * 8, version=1, size=None):
    """A .npy file with this header text (padded as NumPy pads it) and these data bytes."""
    text = header.encode("latin-1")
    width = 2 if version == 1 else 4
    text += b" " * ((64 - (8 + width + len(text) + 1) % 64) % 64) + b"\n"
    length = len(text) if size is None else size
    return b"\x93NUMPY" + bytes([version, 0]) + length.to_bytes(width, "little") + text + data


NPY_FILES = {
    # shapes whose product no file holds
    "huge_shape": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000000000,), }"),
    "huge_product": _npy("{'descr': '<f8', 'fortran_order': False, "
                         "'shape': (999999999999999999, 999999999999999999), }"),
    "short": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"),
    "zero_huge": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 999999999999999999), }", b""),
    # dtypes the pattern admits and NumPy has not, and dtypes that are not numbers
    "f3": _npy("{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }"),
    "u16": _npy("{'descr': '<u16', 'fortran_order': False, 'shape': (1,), }"),
    "structured": _npy("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }"),
    "subarray": _npy("{'descr': ('<f8', (1000000000,)), 'fortran_order': False, 'shape': (1,), }"),
    "object": _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"),
    "unicode": _npy("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", b"\0" * 12),
    # headers that are not what NumPy writes
    "negative": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }"),
    "float_dim": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1.5,), }"),
    "code": _npy("__import__('os').system('true')"),
    "nested": _npy("(" * 30000 + ")" * 30000),
    "non_ascii": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'é\x1b[2J': 1}"),
    "v9": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", version=9),
    "header_past_end": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", size=65535),
    "header_too_big": _npy("x", size=4_000_000_000, version=2),
    "not_npy": b"PK\x03\x04 not an array at all",
    "empty": b"",
    "big": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }"),
    # readable: the control
    "good": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", np.float64(2.5).tobytes(),
                 version=3),
}


def _leaves(rng):
    """Malformed and odd leaf nodes."""
    return [
        {"f": HUGE}, {"f": -HUGE}, {"f": 2 ** 1024}, {"i": HUGE}, {"i": 2 ** 63}, {"i": -2 ** 63 - 1},
        {"f": float("nan")}, {"f": float("inf")}, {"f": -float("inf")}, {"f": True}, {"i": False},
        {"f": "1.0"}, {"f": None}, {"f": [1.0]}, {"f": {"f": 1.0}}, {"i": 1.5}, {"i": "7"}, {"b": 1},
        {"b": "true"}, {"n": 5}, {"s": 5}, {"s": "é\x1b[2J\x1b]0;title\x07\u202e" * 500},
        {"c": [HUGE, 0]}, {"c": ["x", 1]}, {"c": [1]}, {"c": 5}, {"c": [True, 1.0]},
        {"c": [float("nan"), float("inf")]},
        {"x": {"deep": [1, 2]}}, {"x": HUGE}, {"x": "\x1b[2J" * 100},
        {"a": -1}, {"a": HUGE}, {"a": True}, {"a": "0"}, {"a": 1.0}, {"a": None},
        {"a": 0, "scalar": "yes"}, {"a": 0, "other": 1}, {"a": 0, "scalar": True, "extra": 1},
        {"t": 5}, {"l": {"a": 1}}, {"l": "abc"}, {"d": "x"}, {"d": [[1, {"n": None}]]}, {"d": [["k"]]},
        {"d": [["\x1b[2J" * 300, {"f": HUGE}], 5, None]}, {"d": [[HUGE, {"n": None}]]},
        {}, {"q": 1}, {"f": 1.0, "g": 2.0}, [], [1, 2], "string", 5, None, True, HUGE, float("nan"),
        {"a": rng.randrange(len(NPY_FILES))}, {"a": rng.randrange(len(NPY_FILES)), "scalar": True},
        {"i": rng.randrange(-2 ** 70, 2 ** 70)}, {"f": rng.random() * 10 ** rng.randrange(-300, 300)},
    ]


def _tree(rng, depth=0):
    if depth > 6 or rng.random() < 0.35:
        return rng.choice(_leaves(rng))
    kind = rng.choice("tld")
    items = [_tree(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == "d":
        return {"d": [[rng.choice(["k", "é", "\x1b", str(i)]), v] for i, v in enumerate(items)]}
    return {kind: items}


def _deep(n):
    node = {"n": None}
    for _ in range(n):
        node = {"l": [node]}
    return node


def _printable(text):
    return all(ch.isprintable() for ch in text)


@pytest.fixture
def proc(tmp_path):
    """A learner process that is never started: its reply reader, over a folder of forged files."""
    p = LearnerProcess([], limits=Limits())
    p._out = str(tmp_path)
    for k, data in enumerate(NPY_FILES.values()):
        for prefix in ("out", "arg"):
            (tmp_path / f"{prefix}-{NONCE}-{k}.npy").write_bytes(data)
    yield p
    p.close()


def test_read_npy_refuses_every_forged_header(tmp_path):
    """Each forged .npy file is refused with a ValueError (never another exception, never a huge
    allocation); the well-formed control is read."""
    for name, data in NPY_FILES.items():
        path = tmp_path / name
        path.write_bytes(data)
        with open(path, "rb") as fh:
            if name == "good":
                assert read_npy(fh).tolist() == [2.5]
                continue
            with pytest.raises(ValueError):
                read_npy(fh)


def test_decode_never_raises_on_forged_replies(proc):
    """Thousands of random forged value trees (and a few hand-made ones): decode returns a value
    and _result a CallResult, with printable, bounded messages; never an exception."""
    rng = random.Random(16)
    trees = [_tree(rng) for _ in range(3000)] + _leaves(rng) + [
        _deep(100), _deep(5000), {"l": [{"n": None}] * 300_000},
        {"d": [["k" * 100_000, {"f": HUGE}]]}, {"l": [{"a": k} for k in range(len(NPY_FILES))] * 3},
    ]
    for tree in trees:
        bad = []
        decode(tree, proc._out, proc.limits, "out", NONCE, bad, "")
        assert all(isinstance(w, str) and isinstance(d, str) and _printable(d) and len(d) <= 120
                   for w, d in bad), bad[:3]
        for reply in ({"status": "ok", "value": tree, "args_after": tree},
                      {"status": "ok", "value": tree, "message": tree}):
            res = proc._result("f", reply, NONCE, 0.0)
            assert isinstance(res, CallResult)
            assert res.status in ("ok", "bad-output"), res
            assert _printable(res.message) and len(res.message) <= 600, res.message[:200]
    for reply in ({"status": ["ok"]}, {"status": HUGE, "message": HUGE}, {"status": "error", "message": {"x": 1}},
                  {"status": "out-of-memory", "message": "\x1b[2J", "args_after": _deep(80)},
                  {"status": "missing", "message": None}, {}):
        res = proc._result("f", reply, NONCE, 0.0)
        assert res.status in ("error", "out-of-memory", "missing"), res
        assert _printable(res.message), res.message


def test_forged_numbers_are_bad_output_with_a_reason(proc):
    """The reply of the finding, {"f": 10**400}, and its relatives: bad-output, and the reason says why."""
    cases = {
        json.dumps({"f": HUGE}): "a number too large for a float",
        json.dumps({"i": HUGE}): "an integer too large for 64 bits",
        json.dumps({"c": [HUGE, 0]}): "a complex number the grader could not read",
        json.dumps({"t": [{"a": list(NPY_FILES).index("huge_shape")}]}): "impossible shape",
        json.dumps({"t": [{"a": list(NPY_FILES).index("big")}]}): "the header announces 8000000",
        json.dumps({"t": [{"a": list(NPY_FILES).index("unicode")}]}): "an ndarray of dtype <U3",
        json.dumps({"t": [{"a": list(NPY_FILES).index("structured")}]}): "not the one NumPy writes",
    }
    for text, reason in cases.items():
        res = proc._result("conv_backward", {"status": "ok", "value": json.loads(text)}, NONCE, 0.0)
        assert res.status == "bad-output" and reason in res.message, (text[:60], res)
    # NaN and infinities are floats: the checks judge them (they are not finite)
    res = proc._result("f", {"status": "ok", "value": {"t": [{"f": float("nan")}, {"f": float("inf")}]}},
                       NONCE, 0.0)
    assert res.status == "ok" and math.isnan(res.value[0]) and res.value[1] == float("inf")
    good = list(NPY_FILES).index("good")
    res = proc._result("f", {"status": "ok", "value": {"a": good, "scalar": True}}, NONCE, 0.0)
    assert res.status == "ok" and res.value == 2.5 and not isinstance(res.value, Unreadable)


# ---------------------------------------------------------------------------- a forger in a class

FORGE_NPY = '''
def _forged_npy(path, header, data=b"\\0" * 8):
    text = header.encode("latin-1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\\n"
    with open(path, "wb") as fh:
        fh.write(b"\\x93NUMPY\\x01\\x00" + len(text).to_bytes(2, "little") + text + data)


_FORGED = [
    {"f": 10 ** 400},
    {"i": 10 ** 400},
    {"c": [10 ** 400, "x"]},
    {"t": [{"a": 0}, {"a": 1}, {"a": 2}]},
    {"t": [{"a": 0, "scalar": "yes"}, {"d": [["\\x1b[2J\\x1b]0;owned\\x07", {"f": 10 ** 400}], [5, 6]]}]},
    {"t": [{"f": float("nan")}, {"x": {"nested": [1]}}, {"b": 1}]},
    {"l": [{"l": [{"l": [{"l": []}]}]}] * 3 + [{"n": 5}]},
    {"s": "\\u00e9\\x1b[2J" * 1000},
]
_calls = [0]
'''

FORGE_CALL = '''
def conv_backward(dout, cache):
    f = _frames_up(1)
    rn, job = f["rn"], _frames_up(2)["job"]
    _forged_npy(job + "/out-" + rn + "-0.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000000000,), }")
    _forged_npy(job + "/out-" + rn + "-1.npy", "{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }")
    _forged_npy(job + "/out-" + rn + "-2.npy", "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }")
    value = _FORGED[_calls[0] % len(_FORGED)]
    _calls[0] += 1
    f["chan"].send({"nonce": rn, "status": "ok", "message": "", "value": value})
    return None
'''


def forged_values(sid):
    """conv_backward and maxpool_backward answer every call with a forged reply of its own (the
    real reply that follows carries the same nonce and is ignored): huge numbers, forged .npy
    headers, wrong types; both score 0 (bad output), everything else full marks."""
    s = H._honest(sid, note="forged replies: 10**400, forged .npy headers, wrong types")
    s.sources = {
        "conv_backward": H.FORGE_FRAMES + FORGE_NPY + FORGE_CALL,
        "maxpool_backward": H.FORGE_FRAMES + '''
def maxpool_backward(dout, cache):
    f = _frames_up(1)
    f["chan"].send({"nonce": f["rn"], "status": "ok", "message": "", "value": {"f": 10 ** 400}})
    return None
''',
    }
    s.zero = {"conv_backward", "maxpool_backward"}
    s.status = {g: "failed" for g in B.grade_ids("convolution", "conv_backward") + B.grade_ids("pooling",
                                                                                                "maxpool_backward")}
    return s


@pytest.mark.slow
@pytest.mark.skipif(isolation_mode() != "bubblewrap", reason="the forged files are written in the sandbox's /job")
def test_a_forged_reply_is_the_forgers_bad_output(tmp_path):
    """The forger's two functions score 0 with the reason; the run ends with exit 0, run.json, every
    student in totals.csv, and the honest classmates' exact scores."""
    students = [forged_values("h_forger"), B.all_correct("n1_loops", "loops"),
                B.with_mistake("n2_mistake", "pool_ties_to_all")]
    manifest = B.write_class(students, tmp_path / "submitted")
    out = tmp_path / "out"
    proc = run_grade(tmp_path / "submitted", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["grader_errors"] == []
    totals = {r["student_id"]: float(r["score"]) for r in read_csv(out / "totals.csv")}
    assert totals == {sid: m["total"] for sid, m in manifest.items()}, totals
    assert totals["n1_loops"] == B.MAX_TOTAL
    rows = grades_by_key(out)
    for nb in B.NOTEBOOKS:
        for gid in B.POINTS[nb]:
            row = rows[("h_forger", nb, gid)]
            assert float(row["score"]) == manifest["h_forger"]["expected"][nb][gid], (gid, row)
            if B.function_of(gid) in ("conv_backward", "maxpool_backward"):
                assert row["status"] == "failed" and "returned" in row["reason"], (gid, row["status"], row["reason"])
                assert all(ch.isprintable() for ch in row["reason"]), row["reason"]
    reason = rows[("h_forger", "pooling", "maxpool_backward_basic")]["reason"]
    assert "a number too large for a float" in reason, reason
    print("forger:", totals["h_forger"], "of", B.MAX_TOTAL, "| maxpool_backward:", reason)
