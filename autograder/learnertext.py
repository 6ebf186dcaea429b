"""Learner text made safe for what an instructor reads: terminals, CSV files, web pages.

Learner text is everything a learner (or a learner's LMS profile) chooses: exception
messages quoted in verdicts and notes, names, e-mail addresses, markdown.

* ``printable(text, limit)`` is one line of printable characters: every run of white space
  (line breaks, tabs) becomes one space, and every other character that is not printable
  (the ESC of a terminal escape sequence, other control and format characters such as
  bidirectional overrides) becomes ``?``.  ``cat grades.csv`` then shows what is there and
  nothing else; a CSV row stays one line.
* ``inert_name(text, limit)`` is ``printable`` and, in addition, free of the characters that
  mean something in HTML and JavaScript (``< > & "`` and the backtick): each is replaced by
  its full-width form (``＜ ＞ ＆ ＂ ｀``), so a name stays readable and is text wherever a
  template prints it unescaped (nbgrader's formgrader does).
* ``escaped(text)`` keeps every character but shows each one that is not printable as its
  Python escape (``\\x1b``): for a file name in a terminal line, where the instructor must
  see exactly which file is meant, and an escape sequence must not clear or retitle the screen.
* ``HTML_SIGNIFICANT`` lists those characters (a student id holding one is refused, since
  an id names a folder and cannot be rewritten).
"""

HTML_SIGNIFICANT = "<>&\"`"
_FULL_WIDTH = {ord(ch): chr(ord(ch) + 0xFEE0) for ch in HTML_SIGNIFICANT}


def printable(text, limit=None):
    """text as one line of printable characters, at most ``limit`` characters (None: no bound)."""
    text = " ".join(str(text if text is not None else "").split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if limit is None else text[:limit]


def inert_name(text, limit=None):
    """text as printable(text, limit) with the HTML-significant characters in their full-width forms."""
    return printable(text, limit).translate(_FULL_WIDTH)


def escaped(text):
    """text with each character that is not printable shown as its escape (``\\x1b``), nothing dropped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))
