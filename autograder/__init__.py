"""The course's instructor package.

``autograder.reference`` holds the reference layers (NumPy, NCHW, float64) and
``autograder.gradcheck`` the numerical gradient; the book imports both.  The
grading command lives in ``autograder.cli`` (``python -m autograder --help``).
Nothing here is shipped to learners, and none of it is readable from the
grading sandbox.
"""
