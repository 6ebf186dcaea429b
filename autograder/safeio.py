"""Reading files that a learner (or learner code) controls, without being led astray.

A submission folder, and the job folder a learner process writes into, may
hold symbolic links (to ``/etc/shadow``, to the instructor's solutions),
FIFOs that block a reader forever, devices, or files of any size.  Every file
the grader reads from such a place goes through ``open_regular``:

* ``O_NOFOLLOW``: a link as the last component is refused (``ELOOP``);
* ``O_NONBLOCK``: opening a FIFO returns at once instead of waiting for a
  writer; it is then refused because it is not a regular file;
* ``fstat`` on the open descriptor (no race with a swap after a check):
  only a regular file is accepted, and only up to ``max_bytes``.

``check_inside(base, path)`` refuses a path any component of which, below
``base``, is a link: a student folder that is a link to another student's is
not graded as a copy of it.
"""
import errno
import os
import stat

__all__ = ["UnsafeFile", "open_regular", "read_regular", "check_inside", "describe_mode"]


class UnsafeFile(ValueError):
    """The file is a link, not a regular file, or too large; the message says which."""


def describe_mode(mode):
    """What a file of this st_mode is, in words ('a symbolic link', 'a FIFO (named pipe)', ...)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def open_regular(path, max_bytes):
    """A binary file object for path, a regular file of at most max_bytes (never a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a link
            raise UnsafeFile(f"{os.path.basename(path)} is a symbolic link; only regular files are read") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{os.path.basename(path)} is {describe_mode(st.st_mode)}; only regular files are read")
        if st.st_size > max_bytes:
            raise UnsafeFile(f"{os.path.basename(path)} is too large ({st.st_size} bytes; the limit is "
                             f"{max_bytes} bytes)")
        # back to blocking reads: a regular file never blocks, and buffered reads expect it
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path, max_bytes):
    """The bytes of path (see open_regular); never more than max_bytes, even if it grows."""
    with open_regular(path, max_bytes) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{os.path.basename(path)} grew past the limit of {max_bytes} bytes while read")
    return data


def check_inside(base, path):
    """Raise UnsafeFile when a component of path below base is a symbolic link.

    Missing components are fine (the caller reports a missing file its own way).
    """
    base = os.path.abspath(base)
    path = os.path.abspath(path)
    rel = os.path.relpath(path, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise UnsafeFile(f"{path} is outside {base}")
    current = base
    for part in rel.split(os.sep):
        if part in ("", os.curdir):
            continue
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise UnsafeFile(f"{os.path.relpath(current, base)} is a symbolic link; submissions are read "
                             "only from regular files and folders inside the submitted folder")
