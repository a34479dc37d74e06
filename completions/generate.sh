#!/usr/bin/env bash
# Regenerate the completion scripts from the app; tests/test_cli.py fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")"
python -m mixtral_cli completion bash > mixtral.bash
python -m mixtral_cli completion zsh > _mixtral
python -m mixtral_cli completion fish > mixtral.fish
