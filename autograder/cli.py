"""The instructor's command line: ``python -m autograder {release,validate,collect,grade,export,gradescope,watch}``.

    python -m autograder [--assignment NAME] release [--check]
    python -m autograder [--assignment NAME] validate
    python -m autograder [--assignment NAME] collect SOURCE [--to submitted] [--lms NAME | --pattern REGEX] [--ids name|lms]
    python -m autograder [--assignment NAME] grade [SUBMITTED] [--out grading] [--student ID ...] [--regrade]
                         [--course DIR] [--db URL] [--jobs N] [--dask ADDRESS|local] [--lms-column NAME]
                         [--no-progress]
                         [--course-key FILE]
    python -m autograder [--assignment NAME] export [--course DIR | --db URL] [--to FILE]
    python -m autograder [--assignment NAME] gradescope [--out autograder.zip] [--course-key FILE]
                         [--visibility visible|after_due_date|after_published|hidden]
    python -m autograder [--assignment NAME] watch [--course DIR] [--out DIR] [--db URL] [--jobs N]
                         [--interval SECONDS] [--notebook-timeout SECONDS] [--course-key FILE]

Exit codes: 0 success; 1 the command ran and found a problem (stale release,
failed validation, files that could not be placed, gradebook export that
disagrees with totals.csv, grader errors); 2 bad input (missing folder, wrong
layout, unknown assignment, no virtual environment).
"""
import argparse
import glob
import json
import os
import sys

from .learnertext import escaped, printable    # what is printed may quote a learner's name, file or message
from .quickimport import import_jsonschema_without_iri_grammars as _import_jsonschema_without_iri_grammars

DEFAULT_ASSIGNMENT = "cnn_layers"


def default_root():
    """The course root: the folder holding solutions/ next to this package, else the current folder."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(here, "solutions")):
        return here
    return os.getcwd()


def _fail(message, code=2):
    print(f"error: {printable(message)}", file=sys.stderr)
    return code


def missing_module_message(exc):
    return (f"the Python package '{exc.name}' is missing, so this Python ({sys.executable}) is not the course's "
            "virtual environment.\nActivate it with 'source .venv/bin/activate' (or run "
            "'.venv/bin/python -m autograder ...'); on a fresh clone create it first with 'make setup'.")


def _assignment_problems(args):
    from .assignment import problems, release_problems
    found = problems(args.root, args.assignment)
    if not found and getattr(args, "with_release", False):
        found = release_problems(args.root, args.assignment)
    return found


def cmd_release(args):
    from .release import ReleaseError, release
    try:
        changed = release(args.root, assignment=args.assignment, check=args.check)
    except ReleaseError as exc:
        return _fail(exc, 1)
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
    from .collect import CollectError, collect
    try:
        report = collect(args.source, args.to, args.assignment, lms_name=args.lms, pattern=args.pattern,
                         ids=args.ids)
    except CollectError as exc:
        return _fail(exc)
    print(f"layout: {report.lms}")
    for path in report.copied:
        print(f"copied     {path}")
    for path in report.unchanged:
        print(f"unchanged  {path}")
    for line in report.unplaced:
        print(f"NOT PLACED {escaped(line)}")
    if report.ignored:
        print(f"{len(report.ignored)} other file(s) (not notebooks) were not copied: "
              f"{escaped(', '.join(report.ignored[:5]))}{' ...' if len(report.ignored) > 5 else ''}")
    print(report.summary())
    if report.unplaced:
        print("Files were not placed: fix them (see each line), or name the layout with --lms "
              "canvas|moodle|gradescope|blackboard|nbgrader, or describe the names with --pattern REGEX",
              file=sys.stderr)
        return 1
    return 0


def _limits(args):
    """The sandbox Limits that --notebook-timeout and --learner-memory ask for (None: the defaults);
    ValueError when bad."""
    changed = {}
    if args.notebook_timeout is not None:
        if not args.notebook_timeout > 0:
            raise ValueError("--notebook-timeout must be a positive number of seconds")
        changed["notebook_timeout"] = float(args.notebook_timeout)
    if args.learner_memory is not None:
        if not 64 <= args.learner_memory <= 1 << 20:
            raise ValueError("--learner-memory must be a number of MiB between 64 and 1048576 (the default is 2048)")
        changed["learner_memory_bytes"] = int(args.learner_memory) << 20
    if not changed:
        return None
    from .sandbox import Limits
    return Limits(**changed)


def cmd_grade(args):
    from .grading import GradingError, grade_class
    if not os.path.exists(args.submitted):
        return _fail(f"{args.submitted} does not exist: collect the submissions first "
                     f"('python -m autograder collect DOWNLOAD.zip --to {args.submitted}'), or pass the folder "
                     "that holds them")
    try:
        limits = _limits(args)
    except ValueError as exc:
        return _fail(exc)
    try:
        summary = grade_class(args.submitted, args.out, args.root, db_url=args.db, jobs=args.jobs,
                              regrade=args.regrade, progress=not args.no_progress, assignment=args.assignment,
                              students=args.student, course_dir=args.course, lms_column=args.lms_column,
                              limits=limits, dask=args.dask, course_key=args.course_key,
                              fit_memory=args.learner_memory is None)
    except GradingError as exc:
        return _fail(exc)
    why = summary["graded_why"]
    detail = ", ".join(f"{v} {k}" for k, v in why.items())
    print(f"graded {summary['graded_this_run']} notebook(s){f' ({detail})' if detail else ''}, "
          f"reused {summary['reused']} stored; {summary['students']} student(s); "
          f"isolation: {summary['isolation']}")
    if summary["changed"]:
        print(f"{summary['changed']} notebook(s) changed since they were graded and were regraded")
    if summary["not_graded_waiting"]:
        print(f"{summary['not_graded_waiting']} notebook(s) of other students are new or changed and were not "
              "graded (only --student was asked for); run grade without --student to grade them")
    print("cell statuses: " + ", ".join(f"{k} {v}" for k, v in summary["cell_statuses"].items()))
    if summary.get("learner_memory_note"):
        print(f"note: {summary['learner_memory_note']}", file=sys.stderr)
    if summary["late"]:
        print(f"late: {', '.join(summary['late'][:20])}")
    if summary["manual_scores"]:
        print(f"{summary['manual_scores']} manual score(s) from the gradebook count in the totals")
    print(f"wrote {os.path.join(args.out, 'grades.csv')}, totals.csv, feedback/, run.json; "
          f"autograded/ in {summary['course_dir']}; gradebook {summary['gradebook']}")
    code = 0
    if summary.get("refused_students"):
        print(f"{len(summary['refused_students'])} student folder(s) were not graded:", file=sys.stderr)
        for line in summary["refused_students"][:20]:
            print(f"  {line}", file=sys.stderr)
        code = 1
    if summary["grader_errors"]:
        print(f"{len(summary['grader_errors'])} notebook(s) could not be graded (retried on the next run):",
              file=sys.stderr)
        for line in summary["grader_errors"][:20]:
            print(f"  {printable(line)}", file=sys.stderr)
        code = 1
    export = summary.get("export_check")
    if export and not export["ok"]:
        print(f"nbgrader export disagrees with totals.csv for: {', '.join(export['mismatched'])}",
              file=sys.stderr)
        code = 1
    if export and export.get("note"):
        print(f"note: {export['note']}: {', '.join(export['not_compared'])}")
    return code


def cmd_export(args):
    from .grading import GradingError, nbgrader_export
    from .nbgrader_config import GRADEBOOK, default_db_url
    course = os.path.abspath(args.course or args.root)
    if args.db is None and not os.path.exists(os.path.join(course, GRADEBOOK)):
        return _fail(f"{os.path.join(course, GRADEBOOK)} does not exist: run 'python -m autograder grade' first, "
                     "or pass the course folder that holds the gradebook with --course DIR (or --db URL)")
    db = args.db or default_db_url(course)
    dest = args.to or os.path.join(course, "nbgrader_export.csv")
    try:
        nbgrader_export(db, dest)
    except GradingError as exc:
        return _fail(exc, 1)
    print(f"wrote {dest}")
    return 0


def cmd_gradescope(args):
    from .gradescope import BundleError, build
    try:
        report = build(args.root, args.assignment, args.out, course_key=args.course_key,
                       visibility=args.visibility)
    except BundleError as exc:
        return _fail(exc, 1)
    print(f"wrote {report['out']} ({len(report['files'])} files; '{report['assignment']}', "
          f"{report['max_score']:g} points; tests {report['visibility']})")
    print(f"course key {report['key_path']} (fingerprint {report['key_fingerprint']}): the zip holds it, so keep "
          "the zip private and out of git; upload it on Gradescope's Configure Autograder page")
    return 0


def cmd_watch(args):
    from .grading import GradingError
    from .watch import WatchError, main as watch_main
    course = os.path.abspath(args.course or os.getcwd())
    try:
        limits = _limits(args)
    except ValueError as exc:
        return _fail(exc)
    try:
        return watch_main(args.root, course, args.out or os.path.join(course, "grading"), args.assignment,
                          jobs=args.jobs, interval=args.interval, limits=limits, course_key=args.course_key,
                          db_url=args.db, fit_memory=args.learner_memory is None)
    except (WatchError, GradingError) as exc:
        return _fail(exc)


def cmd_validate(args):
    from nbgrader.validator import Validator
    from traitlets.config import Config
    from .nbgrader_config import RELEASE_DIRECTORY, SOURCE_DIRECTORY
    args.with_release = True
    found = _assignment_problems(args)
    for line in found:
        print(f"FAIL {line}")
    if found:
        print(f"the notebooks of '{args.assignment}' disagree with its registered checks; fix the cells named "
              "above (nbgrader's validation runs once they agree)", file=sys.stderr)
        return 1
    code = 0
    for folder, invert in ((SOURCE_DIRECTORY, False), (RELEASE_DIRECTORY, True)):
        paths = sorted(glob.glob(os.path.join(args.root, folder, args.assignment, "*.ipynb")))
        if not paths:
            return _fail(f"{os.path.join(args.root, folder, args.assignment)} has no notebooks"
                         + (": run 'python -m autograder release'" if invert else ""))
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
    p.add_argument("--assignment", default=DEFAULT_ASSIGNMENT,
                   help=f"the assignment (default {DEFAULT_ASSIGNMENT}); any assignment whose checks are registered")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("release", help="regenerate exercises/ from solutions/")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 when exercises/ is stale")
    r.set_defaults(func=cmd_release)

    v = sub.add_parser("validate", help="the notebooks agree with the checks; nbgrader validate (and --invert)")
    v.set_defaults(func=cmd_validate)

    c = sub.add_parser("collect", help="copy submissions (LMS zip or folder) into nbgrader's layout")
    c.add_argument("source", help="an LMS bulk download (.zip) or a folder")
    c.add_argument("--to", default="submitted", help="destination folder (default: submitted)")
    c.add_argument("--lms", default=None, metavar="NAME",
                   help="the layout: canvas, moodle, gradescope, blackboard or nbgrader (default: detected)")
    c.add_argument("--pattern", default=None,
                   help="regex searched in each file's path, with groups student_id and notebook "
                        "(optional: lms_user_id, name, late); anchor it with ^ so that no name a learner "
                        "chose gives the student id")
    c.add_argument("--ids", choices=("name", "lms"), default="name",
                   help="student ids from the learner's name as the LMS writes it (default) or the LMS user id")
    c.set_defaults(func=cmd_collect)

    g = sub.add_parser("grade", help="grade the submissions with the hidden checks")
    g.add_argument("submitted", nargs="?", default="submitted",
                   help="SUBMITTED/<student_id>/<assignment>/<notebook>.ipynb (default: submitted)")
    g.add_argument("--out", default="grading", help="output folder: CSV, feedback, results (default: grading)")
    g.add_argument("--student", action="append", default=None, metavar="ID",
                   help="regrade this student (repeatable); the others keep their stored results")
    g.add_argument("--regrade", action="store_true", help="regrade every notebook")
    g.add_argument("--course", default=None, metavar="DIR",
                   help="nbgrader's course folder for gradebook.db and autograded/ (default: the folder "
                        "holding SUBMITTED)")
    g.add_argument("--db", default=None, help="gradebook SQLAlchemy URL (default: sqlite:///COURSE/gradebook.db)")
    g.add_argument("--jobs", type=int, default=2, help="notebooks graded in parallel (default 2)")
    g.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="grade each notebook as a task on the Dask scheduler at ADDRESS (tcp://host:8786), "
                        "or 'local' for a local cluster of --jobs workers")
    g.add_argument("--lms-column", default=None, metavar="NAME",
                   help="the Canvas gradebook column of canvas_grades.csv, e.g. 'Homework 3 (123456)'")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--notebook-timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock time one notebook may use in all, cells and calls together "
                        "(default 180)")
    g.add_argument("--learner-memory", type=int, default=None, metavar="MIB",
                   help="memory of all of one learner's processes together, swap included, in MiB "
                        "(default 2048; needs a cgroup memory controller, see run.json 'learner_memory')")
    g.add_argument("--course-key", default=None, metavar="FILE",
                   help="the secret course key the hidden inputs are derived from, made on first use "
                        "(default: $AUTOGRADER_COURSE_KEY_FILE, else OUT/course.key)")
    g.set_defaults(func=cmd_grade)

    e = sub.add_parser("export", help="nbgrader export of the gradebook to CSV")
    e.add_argument("--course", default=None, metavar="DIR", help="the course folder (default: the course root)")
    e.add_argument("--db", default=None, help="gradebook URL (default: sqlite:///COURSE/gradebook.db)")
    e.add_argument("--to", default=None, help="CSV file (default: COURSE/nbgrader_export.csv)")
    e.set_defaults(func=cmd_export)

    s = sub.add_parser("gradescope", help="build a Gradescope autograder bundle (zip) of the assignment")
    s.add_argument("--out", default="autograder.zip", help="the zip to write (default: autograder.zip)")
    s.add_argument("--course-key", default=None, metavar="FILE",
                   help="the course key the bundle grades with, made on first use "
                        "(default: $AUTOGRADER_COURSE_KEY_FILE, else grading/course.key, as for grade)")
    from .gradescope import VISIBILITIES
    s.add_argument("--visibility", default="visible", choices=VISIBILITIES,
                   help="when learners see each test's result on Gradescope (default: visible)")
    s.set_defaults(func=cmd_gradescope)
    w = sub.add_parser("watch", help="grade each submission on nbgrader's exchange as it arrives; release feedback")
    w.add_argument("--course", default=None, metavar="DIR",
                   help="the course folder, with its nbgrader_config.py (default: the current folder)")
    w.add_argument("--out", default=None, help="output folder, as for grade (default: COURSE/grading)")
    w.add_argument("--db", default=None, help="gradebook SQLAlchemy URL (default: sqlite:///COURSE/gradebook.db)")
    w.add_argument("--jobs", type=int, default=2, help="learners graded at once (default 2)")
    w.add_argument("--interval", type=float, default=1.0, help="seconds between looks at the inbound (default 1)")
    w.add_argument("--notebook-timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock time one notebook may use in all (default 180)")
    w.add_argument("--course-key", default=None, metavar="FILE",
                   help="the course key, as for grade (default: $AUTOGRADER_COURSE_KEY_FILE, else OUT/course.key)")
    w.add_argument("--learner-memory", type=int, default=None, metavar="MIB",
                   help="memory for all of one learner's processes, as for grade (default 2048, lowered to fit "
                        "--jobs learners beside the watcher)")
    w.set_defaults(func=cmd_watch)
    return p


def _start_sandbox_self_test():
    """Start the sandbox's self-test now, in a thread, and return the thread.

    ``grade`` asks ``sandbox.isolation_mode()`` whether bubblewrap works before it grades;
    the answer costs about a second, most of it spent waiting for other programs (``ldd`` on
    the interpreter's libraries, one ``bwrap`` run).  Asked here, it runs while this process
    loads the grader's modules, and ``grade_class`` finds it ready (or waits for the rest).
    Should it fail here, ``grade_class`` asks again and reports the failure itself.
    """
    import threading
    from . import sandbox

    def self_test():
        try:
            sandbox.isolation_mode()
        except Exception:  # noqa: BLE001  (asked again, and reported, by grade_class)
            pass
    thread = threading.Thread(target=self_test, name="sandbox-self-test")
    thread.start()
    return thread


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.root = os.path.abspath(args.root or default_root())
    if getattr(args, "jobs", 1) < 1:
        return _fail("--jobs must be at least 1")
    try:
        if args.command == "grade" and os.path.exists(args.submitted):
            _start_sandbox_self_test()
        _import_jsonschema_without_iri_grammars()
        from .assignment import registered, unknown_message
        if args.assignment not in registered():
            return _fail(unknown_message(args.assignment))
        return args.func(args)
    except ModuleNotFoundError as exc:
        return _fail(missing_module_message(exc))
    except KeyboardInterrupt:
        print("interrupted; results stored so far are kept, run the same command again to finish",
              file=sys.stderr)
        return 130


def run(argv=None):
    """``python -m autograder``: main(), then the process ends without tearing down every module.

    The interpreter's own shutdown frees the grader's modules one by one (SQLAlchemy's,
    nbgrader's, NumPy's), about half a second at the end of every command that none of
    them needs: every file a command writes is closed (results, CSVs and the gradebook
    also synced to disk) before main returns.  What that shutdown must do is done here:
    wait for the threads that are not daemons, run the ``atexit`` handlers (temporary
    folders, logging, this run's control groups, a Dask client), flush standard output
    and error, in the interpreter's order; then the process exits with main's code.
    """
    import atexit
    import threading
    code = main(argv)
    threading._shutdown()      # what the interpreter's shutdown runs first: threading's exit hooks, joins
    atexit._run_exitfuncs()    # then the atexit handlers, in the same order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe: what could not be written is lost either way
            pass
    os._exit(int(code or 0))
