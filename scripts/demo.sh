#!/usr/bin/env bash
# Run producer and consumer side by side: every line appended to ./input.txt lands in ./output.txt.
# One Ctrl-C stops both gracefully (scripts/demo.py says how); exit 0 when both stopped cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${DEMO_PYTHON:-.venv/bin/python}" scripts/demo.py
