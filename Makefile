# The course's commands. `make book` sets everything up and builds the book;
# `make test` runs every test. See README.md.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# every assignment the course has: the folders of the nbgrader source directory
ASSIGNMENTS := $(notdir $(wildcard solutions/*))

.PHONY: setup book test test-fast release grade-demo bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	bash scripts/install_system.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

book: setup
	bash scripts/build_book.sh

release: setup
	for a in $(ASSIGNMENTS); do $(PY) -m autograder --assignment $$a release || exit 1; done

# Everything: the release is fresh, the book builds strictly, then all tests
# (notebooks, checks, sandbox, whole-class grading, adversarial class, leak scan, browser).
test: book
	for a in $(ASSIGNMENTS); do $(PY) -m autograder --assignment $$a release --check || exit 1; done
	$(PY) -m pytest -q

# The tests that need neither the built book nor a whole class (a quick loop while editing).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

# A demo class per assignment (correct work in several styles, every classic mistake), graded
# and checked against the scores each student should get.
grade-demo: setup
	rm -rf demo
	for a in $(ASSIGNMENTS); do \
	  $(PY) scripts/make_class.py --assignment $$a --out demo/$$a/submitted && \
	  $(PY) -m autograder --assignment $$a grade demo/$$a/submitted --out demo/$$a/grading && \
	  $(PY) scripts/make_class.py --check demo/$$a/manifest.json demo/$$a/grading || exit 1; \
	done

# Plain nbgrader against the autograder on one generated class, fixed cost per run, scaling
# with jobs, the book's build times and the convolution layer against PyTorch; the figures
# are printed and written to _build/bench/ (a few minutes on two cores).
bench: setup
	$(PY) scripts/bench.py

clean:
	rm -rf _build demo ci-artifacts
