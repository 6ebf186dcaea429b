"""Checks of further assignments.

Each module here registers the hidden checks of one assignment with
``autograder.checks.register(assignment, notebook, grade_id, function, points, check)``,
one call per graded cell of ``solutions/<assignment>/<notebook>.ipynb``; the grader,
``release`` and ``validate`` then handle that assignment like ``cnn_layers``
(``python -m autograder --assignment NAME ...``).  The checks of ``cnn_layers``
themselves live in ``autograder/checks.py``.
"""
