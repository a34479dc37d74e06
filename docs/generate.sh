#!/usr/bin/env bash
# Regenerate docs/cli.md (or the file given) from the app's --help; tests/test_cli.py fails when it is stale.
set -euo pipefail
output=$(realpath "${1:-$(dirname "$0")/cli.md}")
cd "$(dirname "$0")/.."
python -m typer mixtral_cli.cli utils docs --name mixtral --title "mixtral command reference" --output "$output"
