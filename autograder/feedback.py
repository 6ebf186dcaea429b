"""Per-student feedback: one self-contained HTML page per learner and assignment.

Everything shown (the notes and the feedback lines, which can quote a
learner's error message) is escaped; the page has no scripts and no external
resources, and its Content-Security-Policy says so to the browser (``CSP``: no
script, no request, only its own inline style), so that nothing would run even
if some text escaped the escaping.
"""
import html

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
.total { font-size: 1.2rem; margin: .5rem 0 1.5rem; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }
th, td { border: 1px solid #d0d0d0; padding: .4rem .6rem; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.score { white-space: nowrap; text-align: right; }
.status { font-weight: 600; white-space: nowrap; }
.passed { color: #176f2c; } .failed, .error, .ungradable { color: #a3161b; }
.timeout, .out-of-memory, .killed { color: #8a4b00; }
ul { margin: 0; padding-left: 1.2rem; }
.notes { background: #fff8e1; border: 1px solid #f0d98c; padding: .6rem 1rem; }
.comments { background: #eef5ff; border: 1px solid #9ec2f0; padding: .6rem 1rem; margin-bottom: 1rem; }
.late { font-weight: 600; color: #8a4b00; }
h2 { font-size: 1.2rem; margin-top: 2rem; }
footer { color: #666; font-size: .85rem; }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STATUS_WORDS = {
    "passed": "passed", "failed": "failed", "error": "error", "timeout": "time limit",
    "out-of-memory": "out of memory", "killed": "stopped", "ungradable": "not graded",
}


def _e(text):
    return html.escape(str(text), quote=True)


def _num(x):
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _fmt_when(when):
    return when.strftime("%Y-%m-%d %H:%M UTC") if when is not None else ""


def _late_text(grades):
    if not grades.seconds_late:
        return ""
    hours = grades.seconds_late / 3600.0
    text = (f"Submitted {_fmt_when(grades.timestamp)}, {hours:.1f} hour(s) after the due date "
            f"({_fmt_when(grades.duedate)}).")
    if grades.penalty:
        text += f" Late penalty: {_num(grades.penalty)} point(s)."
    else:
        text += " No late penalty applies."
    return text


def _notebook_section(spec, result, grades):
    notebook = result.get("notebook", "")
    cells = {c.get("grade_id"): c for c in result.get("cells", [])}
    counted = grades.cells.get(notebook, {})
    comments = grades.comments.get(notebook, {})
    rows = []
    for gid in spec.grade_ids(notebook):
        cell = cells.get(gid, {"status": "error", "feedback": ["no verdict stored"]})
        status = str(cell.get("status", ""))
        css = status if status in STATUS_WORDS else "error"
        lines = "".join(f"<li>{_e(line)}</li>" for line in cell.get("feedback", []))
        grade = counted.get(gid)
        score = grade.score if grade else float(cell.get("score", 0))
        adjusted = ""
        if grade is not None and grade.manual_score is not None:
            adjusted = (f"<li>Score set by your instructor: {_e(_num(grade.manual_score))} "
                        f"(automatic: {_e(_num(grade.auto_score))})</li>")
        rows.append(
            f"<tr><td><code>{_e(gid)}</code></td>"
            f"<td class=\"status {css}\">{_e(STATUS_WORDS.get(status, status))}</td>"
            f"<td class=\"score\">{_e(_num(score))} / {_e(_num(spec.points(gid)))}</td>"
            f"<td><ul>{adjusted}{lines}</ul></td></tr>")
    notes = result.get("notes") or []
    notes_html = ""
    if notes:
        notes_html = ("<div class=\"notes\"><p>Notes on your notebook:</p><ul>"
                      + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></div>")
    comment_html = ""
    if comments:
        comment_html = ("<div class=\"comments\"><p>Comments from your instructor:</p><ul>"
                        + "".join(f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in sorted(comments.items()))
                        + "</ul></div>")
    penalty = grades.penalties.get(notebook, 0.0)
    pen = f" (late penalty {_e(_num(penalty))})" if penalty else ""
    return f"""<section>
<h2>{_e(notebook)}.ipynb: {_e(_num(grades.notebook_score(notebook)))} / {_e(_num(spec.max_score(notebook)))}{pen}</h2>
<table>
<thead><tr><th>test</th><th>status</th><th>points</th><th>details</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
{comment_html}
{notes_html}
</section>"""


def render_student(spec, student, results, grades, learner=None):
    """The learner's one feedback page (a str): every notebook, the total, the late penalty, comments.

    results: {notebook: stored result}; grades: the learner's gradebook.StudentGrades
    (scores as nbgrader counts them: a manual score replaces the automatic one);
    learner: what collect recorded (name).
    """
    name = (learner or {}).get("name") or ""
    who = f"{_e(name)} (<code>{_e(student)}</code>)" if name else f"<code>{_e(student)}</code>"
    sections = "\n".join(_notebook_section(spec, results[nb], grades) for nb in spec.notebooks)
    late = _late_text(grades)
    if not late and (learner or {}).get("late"):
        late = f"Your {learner.get('lms', 'LMS').capitalize()} submission is marked late."
    late_html = f"<p class=\"late\">{_e(late)}</p>" if late else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Feedback: {_e(spec.name)} ({_e(student)})</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Feedback: {_e(spec.name)}</h1>
<p>Student: {who}</p>
<p class="total">Total: <strong>{_e(_num(grades.score))} / {_e(_num(spec.max_score()))}</strong></p>
{late_html}
<p>Each graded cell scores all its points or none. The hidden checks call your functions on new random
inputs of the sizes named below and compare the results with a reference implementation; printed output
and the visible tests do not count.</p>
{sections}
<footer>Generated by the course autograder.</footer>
</body>
</html>
"""
