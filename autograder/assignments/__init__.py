"""The hidden checks of the course's assignments, one module per assignment.

Each module here registers the hidden checks of one assignment with
``autograder.checks.register(assignment, notebook, grade_id, function, points, check)``,
one call per graded cell of ``solutions/<assignment>/<notebook>.ipynb``; the grader,
``release`` and ``validate`` then handle that assignment like ``cnn_layers``
(``python -m autograder --assignment NAME ...``).  ``cnn_layers.py`` holds the checks of
``cnn_layers``; ``autograder/checks.py`` holds the machinery they share (verdicts,
tolerance, time budgets and probes, hints) and knows no assignment.
"""
