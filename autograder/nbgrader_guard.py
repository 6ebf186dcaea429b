"""What keeps ``nbgrader autograde`` from replacing the hidden checks' scores.

The course folder's ``nbgrader_config.py`` makes
``RefuseAutograde`` nbgrader autograde's first step, for the command line and for
formgrader's "autograde" button alike: it stops before any score is written, with a
message that names the command that grades this course.  nbgrader's autograde would
run the learner's notebook and its visible tests in one kernel and store what they
give over the scores of the hidden checks.
"""
from nbgrader.preprocessors import NbGraderPreprocessor

MESSAGE = ("this course is graded by 'python -m autograder grade' (hidden checks run outside the learner's "
           "kernel); nbgrader autograde would replace those scores with the visible tests'. Nothing was "
           "graded: run 'python -m autograder grade' from the course folder instead (it also rewrites "
           "autograded/)")


class RefuseAutograde(NbGraderPreprocessor):
    """The first preprocessor of nbgrader's autograde: refuse, before anything is stored."""

    def preprocess(self, nb, resources):
        self.log.error(MESSAGE)
        raise RuntimeError(MESSAGE)
