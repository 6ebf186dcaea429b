"""Submission times read from files that LMSs and learners write, range-checked in one place.

A time may come from an LMS download (Gradescope's ``submission_metadata.yml``,
Blackboard's file names), from nbgrader's ``timestamp.txt`` or from the gradebook.
Any of them can hold a date that parses and then breaks arithmetic later:
``9999-12-31 23:59:59 -14:00`` is a valid date whose UTC time is past year 9999,
and nbgrader's ``parse_utc`` (the gradebook, the late penalty) raises
``OverflowError`` on it.  Every reader therefore goes through ``parse`` or
``to_utc``, which accept only times whose UTC value lies in
[``EARLIEST``, ``LATEST``) and raise ``BadTime`` (a ValueError whose message
quotes the value, printable characters only) for anything else.
"""
import datetime as _dt

from .learnertext import printable

EARLIEST = _dt.datetime(1970, 1, 1)
LATEST = _dt.datetime(2100, 1, 1)
MAX_TEXT = 100    # characters of a date given as text; a longer text is not a date


class BadTime(ValueError):
    """Not a date, or a date outside [EARLIEST, LATEST) in UTC."""


def _quote(value, limit=60):
    return repr(printable(value, limit))


def to_utc(when, given=None):
    """The naive UTC datetime of when (a datetime, naive meaning UTC), checked to lie in range;
    a BadTime quotes given (the text when was read from) or when."""
    shown = _quote(when if given is None else given)
    if not isinstance(when, _dt.datetime):
        raise BadTime(f"{shown} is not a date")
    try:
        utc = when if when.tzinfo is None else (when - when.utcoffset()).replace(tzinfo=None)
    except (OverflowError, ValueError, TypeError) as exc:   # past year 9999, or an offset of 24 h or more
        raise BadTime(f"{shown} has no UTC time ({type(exc).__name__})") from None
    if not EARLIEST <= utc < LATEST:
        raise BadTime(f"{shown} is outside {EARLIEST:%Y}-{LATEST:%Y} (UTC)")
    return utc


def parse(value):
    """The datetime value gives (a datetime, or text with an optional time zone), as given
    (aware or naive), after checking that its UTC time lies in range; BadTime otherwise."""
    if isinstance(value, _dt.datetime):
        when, text = value, None
    else:
        text = str(value).strip()
        if not text or len(text) > MAX_TEXT:
            raise BadTime(f"{_quote(text)} is not a date")
        from dateutil import parser
        try:
            when = parser.parse(text)
        except (ValueError, OverflowError, TypeError) as exc:   # dateutil's ParserError is a ValueError
            raise BadTime(f"{_quote(text)} is not a date ({type(exc).__name__})") from None
    to_utc(when, text)
    return when
