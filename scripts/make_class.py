"""Build a demo class of submissions, with the score each student should get.

    python scripts/make_class.py --out demo/submitted [--students 60] [--hostile]
    python -m autograder grade demo/submitted --out demo/grading
    python scripts/make_class.py --check demo/manifest.json demo/grading
    python scripts/make_class.py --assignment conv_variants --out demo/conv_variants/submitted
    python scripts/make_class.py --assignment cnn_network --out demo/cnn_network/submitted

The class starts from the released notebooks (exercises/cnn_layers): students
with correct solutions in several styles (loops, strided windows with einsum,
im2col), one student per common mistake (missing or misplaced bias, averaged
db, dw of the last example only, kernel not flipped in dx, stride ignored,
padding not cropped, the dx[pad:-pad] crop, H/W mixed up, ceil output sizes,
channels or filters not summed, overlapping pooling windows that overwrite,
ties sent to every maximum, inputs modified in place), untouched and missing
notebooks; with --hostile, also 25 adversarial submissions that try to fool or
break the grader (endless loops, memory bombs, forbidden imports, reading the
reference, writing the gradebook...; they make the run a few minutes longer).  The manifest (``manifest.json`` next to the submitted
folder, or --manifest) gives each student's expected score per graded cell
and in total; ``--check`` compares a grading output with it.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from classgen import build as B  # noqa: E402
from classgen import cnn_network as CN  # noqa: E402
from classgen import conv_variants as CV  # noqa: E402
from classgen import hostile as H  # noqa: E402

# demo classes of the other assignments: assignment -> write_class(submitted) -> manifest
OTHER_CLASSES = {CN.ASSIGNMENT: CN.write_class, CV.ASSIGNMENT: CV.write_class}


def make(out, students=60, hostile=False, manifest=None, assignment=B.ASSIGNMENT):
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty: choose a new folder or remove it first")
    if assignment in OTHER_CLASSES:
        # every correct style and every classic mistake of that assignment, once
        data = OTHER_CLASSES[assignment](out)
    else:
        # every mistake once (the numerical backward pass, slow by design, only with --hostile)
        cls = B.standard_class(students, skip=("numerical_backward",))
        if hostile:
            cls += H.hostile_class()
        data = B.write_class(cls, out)
    manifest = Path(manifest) if manifest else out.parent / "manifest.json"
    B.write_manifest(data, manifest)
    kinds = {}
    for m in data.values():
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    print(f"wrote {len(data)} students to {out} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
    print(f"expected scores: {manifest}")
    return data


def check(manifest, grading):
    """Compare OUT/grades.csv with the manifest; return the number of mismatches."""
    data = json.loads(Path(manifest).read_text())
    with open(Path(grading) / "grades.csv", newline="", encoding="utf-8") as fh:
        rows = {(r["student_id"], r["notebook"], r["grade_id"]): r for r in csv.DictReader(fh)}
    bad = 0
    for student, m in sorted(data.items()):
        for nb, cells in m["expected"].items():
            for gid, exp in cells.items():
                row = rows.get((student, nb, gid))
                if row is None or float(row["score"]) not in B.allowed_scores(m, nb, gid):
                    bad += 1
                    got = "missing" if row is None else f"{row['score']} ({row['status']}: {row['reason'][:120]})"
                    print(f"{student} {gid}: expected {exp}, got {got}")
    print(f"{len(data)} students checked, {bad} cell(s) differ from the manifest")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="the submitted folder to create (e.g. demo/submitted)")
    ap.add_argument("--students", type=int, default=60,
                    help="honest students, at least 44 (default 60)")
    ap.add_argument("--hostile", action="store_true", help="add the 25 adversarial submissions")
    ap.add_argument("--manifest", help="where to write the expected scores (default: next to --out)")
    ap.add_argument("--assignment", default=B.ASSIGNMENT, choices=[B.ASSIGNMENT, *OTHER_CLASSES],
                    help=f"whose demo class to build (default {B.ASSIGNMENT}; --students and --hostile "
                         f"are for {B.ASSIGNMENT})")
    ap.add_argument("--check", nargs=2, metavar=("MANIFEST", "GRADING_OUT"),
                    help="compare a grading output folder with a manifest")
    args = ap.parse_args(argv)
    if args.check:
        return 1 if check(*args.check) else 0
    if not args.out:
        ap.error("--out is required (or --check MANIFEST GRADING_OUT)")
    make(args.out, args.students, args.hostile, args.manifest, args.assignment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
