#!/usr/bin/env bash
# System packages the course needs beyond Python:
#   bubblewrap  isolates learner code while grading (without it the grader falls back to
#               resource limits only, and warns)
#   chromium    the headless browser that tests the built book
#   npm         installs the pinned MathJax that the book serves itself (if Node.js is missing)
#   postgresql  the tests grade into a real PostgreSQL gradebook (a scratch server they start)
# Run as root (or through sudo) on Debian or Ubuntu. Elsewhere, install the same two
# packages with your system's package manager.
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
  || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: bubblewrap, chromium, npm and postgresql are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} (no apt-get here: install them by hand)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
