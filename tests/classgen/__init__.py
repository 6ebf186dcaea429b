"""Synthetic classes for end-to-end grading tests: learner implementations
(variants), adversarial submissions (hostile) and the notebook builder (build)."""
