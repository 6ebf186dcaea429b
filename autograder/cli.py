"""The instructor's command line: ``python -m autograder {release,collect,grade,export,validate}``.

    python -m autograder release [--check]
    python -m autograder collect SOURCE [--to submitted] [--pattern REGEX] [--force]
    python -m autograder grade SUBMITTED --out OUT [--db URL] [--jobs N] [--regrade] [--no-progress]
    python -m autograder export --out OUT [--db URL] [--to FILE]
    python -m autograder validate

Exit codes: 0 success; 1 the command ran and found a problem (stale release,
failed validation, gradebook export that disagrees with totals.csv, grader
errors); 2 bad input (missing folder, wrong layout, unknown assignment).
"""
import argparse
import glob
import json
import os
import sys

from . import checks

ASSIGNMENT = checks.ASSIGNMENT


def default_root():
    """The course root: the folder holding solutions/ next to this package, else the current folder."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(here, "solutions")):
        return here
    return os.getcwd()


def _fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_release(args):
    from .release import release
    changed = release(args.root, assignment=args.assignment, check=args.check)
    if args.check:
        if changed:
            print("the release is stale; run 'python -m autograder release' and commit:")
            for path in changed:
                print(f"  {path}")
            return 1
        print("the release is up to date")
        return 0
    print("\n".join(f"wrote {p}" for p in changed) or "the release was already up to date")
    return 0


def cmd_collect(args):
    from .collect import DEFAULT_PATTERN, CollectError, collect
    try:
        report = collect(args.source, args.to, args.assignment, args.pattern or DEFAULT_PATTERN, args.force)
    except CollectError as exc:
        return _fail(exc)
    for path in report.copied:
        print(f"copied   {path}")
    for path in report.kept:
        print(f"kept     {path} (it is newer; --force replaces it)")
    for name in report.superseded:
        print(f"older    {name} (a newer file of the same student and notebook was used)")
    for line in report.unplaced:
        print(f"NOT PLACED {line}")
    print(report.summary())
    return 1 if report.unplaced else 0


def cmd_grade(args):
    from .grading import GradingError, grade_class
    try:
        summary = grade_class(args.submitted, args.out, args.root, db_url=args.db, jobs=args.jobs,
                              regrade=args.regrade, progress=not args.no_progress, assignment=args.assignment)
    except GradingError as exc:
        return _fail(exc)
    print(f"graded {summary['graded_this_run']} notebook(s), reused {summary['reused']} stored; "
          f"{summary['students']} student(s); isolation: {summary['isolation']}")
    print("cell statuses: " + ", ".join(f"{k} {v}" for k, v in summary["cell_statuses"].items()))
    print(f"wrote {os.path.join(args.out, 'grades.csv')}, totals.csv, feedback/, run.json; "
          f"gradebook {summary['gradebook']}")
    code = 0
    if summary["grader_errors"]:
        print(f"{len(summary['grader_errors'])} notebook(s) could not be graded (retried on the next run):",
              file=sys.stderr)
        for line in summary["grader_errors"][:20]:
            print(f"  {line}", file=sys.stderr)
        code = 1
    export = summary.get("export_check")
    if export and not export["ok"]:
        print(f"nbgrader export disagrees with totals.csv for: {', '.join(export['mismatched'])}",
              file=sys.stderr)
        code = 1
    return code


def cmd_export(args):
    from .grading import GradingError, default_db_url, nbgrader_export
    if args.db is None and not os.path.exists(os.path.join(args.out, "gradebook.db")):
        return _fail(f"{os.path.join(args.out, 'gradebook.db')} does not exist: run "
                     f"'python -m autograder grade SUBMITTED --out {args.out}' first, or pass --db URL")
    db = args.db or default_db_url(args.out)
    dest = args.to or os.path.join(args.out, "nbgrader_export.csv")
    try:
        nbgrader_export(db, dest)
    except GradingError as exc:
        return _fail(exc, 1)
    print(f"wrote {dest}")
    return 0


def cmd_validate(args):
    from nbgrader.validator import Validator
    from traitlets.config import Config
    from .nbgrader_config import RELEASE_DIRECTORY, SOURCE_DIRECTORY
    code = 0
    for folder, invert in ((SOURCE_DIRECTORY, False), (RELEASE_DIRECTORY, True)):
        paths = sorted(glob.glob(os.path.join(args.root, folder, args.assignment, "*.ipynb")))
        if not paths:
            return _fail(f"no notebooks in {os.path.join(args.root, folder, args.assignment)}")
        cfg = Config()
        cfg.Validator.invert = invert
        validator = Validator(config=cfg)
        for path in paths:
            results = validator.validate(path)
            bad = {k: v for k, v in results.items() if v}
            if invert:
                ok = not bad.get("failed") and not bad.get("changed") and not bad.get("type_changed") \
                    and not bad.get("passed")
                what = "every test cell fails on the stubs" if ok else json.dumps(bad)[:500]
            else:
                ok = not bad
                what = "all test cells pass" if ok else json.dumps(bad)[:500]
            print(f"{'ok  ' if ok else 'FAIL'} {os.path.relpath(path, args.root)}"
                  f"{' (--invert)' if invert else ''}: {what}")
            code = code or (0 if ok else 1)
    return code


def build_parser():
    p = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="course root (the folder with solutions/); default: found")
    p.add_argument("--assignment", default=ASSIGNMENT, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("release", help="regenerate exercises/ from solutions/")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 when exercises/ is stale")
    r.set_defaults(func=cmd_release)

    c = sub.add_parser("collect", help="copy submissions (folder or LMS zip) into nbgrader's layout")
    c.add_argument("source", help="a folder (nbgrader layout or flat files) or an LMS .zip")
    c.add_argument("--to", default="submitted", help="destination folder (default: submitted)")
    c.add_argument("--pattern", default=None,
                   help="regex with groups student_id and notebook for flat file names")
    c.add_argument("--force", action="store_true", help="replace existing files even when they are newer")
    c.set_defaults(func=cmd_collect)

    g = sub.add_parser("grade", help="grade every submission with the hidden checks")
    g.add_argument("submitted", help="SUBMITTED/<student_id>/cnn_layers/<notebook>.ipynb")
    g.add_argument("--out", required=True, help="output folder (results, CSV, feedback, gradebook)")
    g.add_argument("--db", default=None, help="gradebook SQLAlchemy URL (default: sqlite:///OUT/gradebook.db)")
    g.add_argument("--jobs", type=int, default=2, help="notebooks graded in parallel (default 2)")
    g.add_argument("--regrade", action="store_true", help="recompute results already stored")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_grade)

    e = sub.add_parser("export", help="nbgrader export of the gradebook to CSV")
    e.add_argument("--out", required=True, help="the grading output folder")
    e.add_argument("--db", default=None, help="gradebook URL (default: sqlite:///OUT/gradebook.db)")
    e.add_argument("--to", default=None, help="CSV file (default: OUT/nbgrader_export.csv)")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("validate", help="nbgrader validate solutions/ (and --invert on exercises/)")
    v.set_defaults(func=cmd_validate)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.root = os.path.abspath(args.root or default_root())
    if args.assignment != ASSIGNMENT:
        return _fail(f"unknown assignment '{args.assignment}': this course has '{ASSIGNMENT}'")
    if getattr(args, "jobs", 1) < 1:
        return _fail("--jobs must be at least 1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; results stored so far are kept, run the same command again to finish",
              file=sys.stderr)
        return 130
