#!/bin/sh
# `make lock-python`: regenerates embedded/requirements.txt from embedded/requirements.in with
# pip-tools' pip-compile --generate-hashes: every package, transitive ones included, pinned to
# one version with the SHA-256 of every file PyPI has for it (all platforms: x86_64 and aarch64
# wheels alike), for `pip install --require-hashes` (`make setup`).
#
#   scripts/lock-python.sh              keep the current pins, add what the .in file gained
#   LOCK_UPGRADE=1 scripts/lock-python.sh   move every package to its newest version allowed
#
# pip-tools runs in a throwaway venv (itself installed with --require-hashes); the tools venv
# is not touched.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
# pip-tools 7.6.2 and its dependencies, hash-pinned too (scripts/pip-tools.requirements.txt).
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    --only-binary=:all: -r scripts/pip-tools.requirements.txt
upgrade=""
if [ "${LOCK_UPGRADE:-0}" = "1" ]; then
    upgrade="--upgrade"
fi
# --allow-unsafe: pin setuptools/pip too if anything needs them, so --require-hashes holds.
CUSTOM_COMPILE_COMMAND="make lock-python" "$tmp/venv/bin/pip-compile" --quiet $upgrade \
    --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
    --output-file embedded/requirements.txt embedded/requirements.in
echo "lock-python: embedded/requirements.txt regenerated; check the diff, then run make setup in a fresh venv"
