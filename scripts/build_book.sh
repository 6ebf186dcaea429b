#!/usr/bin/env bash
# Build the book strictly, from the repository root, into _build/html.
#
#   bash scripts/build_book.sh
#
# Every notebook is executed (cells that fail fail the build), and any Sphinx warning,
# such as a broken cross-reference, is an error (-W -n); --keep-going reports all of
# them before failing. The exercise notebooks are published through the {download}
# role, which copies them into _build/html/_downloads/; the script checks they are there.
# Every page that is a notebook is also published as an .ipynb (scripts/ipynb_download.py
# converts it with jupytext and lists it in the page's download menu); the script checks
# that each one is there and that nbformat reads it.
#
# MathJax is served from the site, not from a CDN (see _config.yml). The pinned copy
# (MathJax 4 and its default font, New Computer Modern) is installed with npm into
# node_modules/ when it is missing; set MATHJAX_NO_INSTALL=1 to forbid that and fail
# instead. The files the pages load are then staged in _build/mathjax-static/mathjax/,
# which _config.yml serves as _static/mathjax/:
#   tex-svg.js                the single-file component (TeX input, SVG output, the
#                             menu and the base of the font)
#   input/ a11y/ sre/ ui/     what it loads on demand: TeX extensions, the speech and
#                             explorer of the accessibility menu and their rule files
#   fonts/mathjax-newcm-font/svg/dynamic/
#                             the font's further character ranges (arrows, double-struck...)
set -euo pipefail
cd "$(dirname "$0")/.."

MATHJAX_VERSION=4.1.3
MATHJAX_PACKAGES="mathjax@$MATHJAX_VERSION @mathjax/mathjax-newcm-font@$MATHJAX_VERSION"
MATHJAX_DIR=node_modules/mathjax
FONT_DIR=node_modules/@mathjax/mathjax-newcm-font
STAGE=_build/mathjax-static/mathjax

if [ -x .venv/bin/jupyter-book ]; then
  JB=.venv/bin/jupyter-book
elif command -v jupyter-book >/dev/null 2>&1; then
  JB=$(command -v jupyter-book)
else
  echo "build_book: jupyter-book not found (no .venv/bin/jupyter-book, none on PATH);" \
       "run 'make setup' or 'pip install -r requirements.txt'" >&2
  exit 1
fi

installed_version() {  # installed_version node_modules/PACKAGE
  sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$1/package.json" 2>/dev/null | head -n 1
}
if [ ! -f "$MATHJAX_DIR/tex-svg.js" ] || [ ! -d "$FONT_DIR/svg/dynamic" ] \
   || [ "$(installed_version "$MATHJAX_DIR")" != "$MATHJAX_VERSION" ] \
   || [ "$(installed_version "$FONT_DIR")" != "$MATHJAX_VERSION" ]; then
  if [ "${MATHJAX_NO_INSTALL:-0}" = 1 ] || ! command -v npm >/dev/null 2>&1; then
    echo "build_book: MathJax $MATHJAX_VERSION is missing ($MATHJAX_DIR, $FONT_DIR); install it with" >&2
    echo "  npm install --no-save --no-package-lock $MATHJAX_PACKAGES" >&2
    echo "(npm comes with Debian's 'npm' package or with Node.js)" >&2
    exit 1
  fi
  echo "build_book: installing MathJax $MATHJAX_VERSION into node_modules/"
  # shellcheck disable=SC2086  # two package names
  npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error $MATHJAX_PACKAGES
  test -f "$MATHJAX_DIR/tex-svg.js" && test -d "$FONT_DIR/svg/dynamic"
fi

rm -rf "$STAGE"
mkdir -p "$STAGE/fonts/mathjax-newcm-font/svg"
cp "$MATHJAX_DIR/tex-svg.js" "$MATHJAX_DIR/LICENSE" "$STAGE/"
cp -r "$MATHJAX_DIR/input" "$MATHJAX_DIR/a11y" "$MATHJAX_DIR/sre" "$MATHJAX_DIR/ui" "$STAGE/"
cp -r "$FONT_DIR/svg/dynamic" "$STAGE/fonts/mathjax-newcm-font/svg/"

for nb in exercises/cnn_layers/convolution.ipynb exercises/cnn_layers/pooling.ipynb; do
  if [ ! -f "$nb" ]; then
    echo "build_book: $nb is missing; generate it with 'python -m autograder release'" >&2
    exit 1
  fi
done

# The execution cache (_config.yml: execute_notebooks: cache) is keyed on each page's own
# text, but what a page shows also comes from the code it imports: book/convbook.py (its
# helpers, and the PNG formatter that records each figure's text size for the browser
# test) and the course's reference layers. When either is newer than the cache, the cache
# is dropped, so that every page runs again instead of showing outputs of the old code.
CACHE_DB=_build/.jupyter_cache/global.db
if [ -f "$CACHE_DB" ] && { [ book/convbook.py -nt "$CACHE_DB" ] \
                           || [ autograder/reference.py -nt "$CACHE_DB" ]; }; then
  echo "build_book: book/convbook.py or autograder/reference.py changed; running every page again"
  rm -rf _build/.jupyter_cache _build/.doctrees   # the doctrees too: Sphinx re-reads a page
                                                 # (and so runs it) only when it is outdated
fi

"$JB" build . -W -n --keep-going

# The build must have published both exercise notebooks and the local MathJax.
for name in convolution.ipynb pooling.ipynb; do
  if ! compgen -G "_build/html/_downloads/*/$name" >/dev/null; then
    echo "build_book: $name was not copied to _build/html/_downloads/" >&2
    exit 1
  fi
done
PY=$(dirname "$JB")/python
[ -x "$PY" ] || PY=python3
"$PY" - <<'PYTHON'
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, "scripts")
from ipynb_download import notebook_source

site = Path("_build/html/_sources")
pages = [p for p in sorted(site.rglob("*.md")) if notebook_source(p)]
missing = [str(p.with_suffix(".ipynb")) for p in pages if not p.with_suffix(".ipynb").is_file()]
if not pages or missing:
    sys.exit(f"build_book: notebook pages without their .ipynb: {missing or 'no pages found'}")
for page in pages:
    nbformat.validate(nbformat.read(page.with_suffix(".ipynb"), as_version=4))
PYTHON
test -f _build/html/_static/mathjax/tex-svg.js \
  && test -d _build/html/_static/mathjax/fonts/mathjax-newcm-font/svg/dynamic || {
  echo "build_book: MathJax was not copied to _build/html/_static/" >&2
  exit 1
}
echo "build_book: the book is in _build/html (open _build/html/index.html)"
