#!/usr/bin/env bash
# CI for tools/: make sure the venv has the pinned requirements, then lint and test.
#
#   bash tools/ci.sh            (from anywhere)
#
# The venv lives at ${BVAE_VENV:-$HOME/.cache/bvae-ci/venv}. It is created when
# missing, and the requirements are (re)installed only when tools/requirements.txt
# changed since the last install (its SHA-256 is kept inside the venv).
set -euo pipefail

TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BVAE_VENV:-$HOME/.cache/bvae-ci/venv}"
PYTHON="${PYTHON:-python3}"
REQ="$TOOLS/requirements.txt"
STAMP="$VENV/.bvae-requirements.sha256"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    echo "tools/ci.sh: creating venv $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "tools/ci.sh: installing $REQ (this takes a few minutes the first time)"
    "$VENV/bin/python" -m pip install --quiet -r "$REQ"
    echo "$want" > "$STAMP"
else
    echo "tools/ci.sh: requirements unchanged, reusing $VENV"
fi

cd "$TOOLS"
echo "tools/ci.sh: ruff check + format --check (tools)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "tools/ci.sh: pytest"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
