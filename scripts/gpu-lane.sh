#!/usr/bin/env bash
# The GPU lane: the GPU path run for real, on whatever Vulkan device is visible (on a machine without a GPU,
# Mesa's lavapipe: software Vulkan on the CPU, from Debian's packages).
#
# 1. a virtual environment of its own with llama-cpp-python built for Vulkan (scripts/install-llama-cpp.sh
#    vulkan: Debian's packages, and the wheel cached, so only the first run builds it, about 20 minutes);
# 2. the tests marked `gpu` (tests/test_gpu.py), which fail when no GPU is visible;
# 3. the tests that touch devices, placement, workers and loading again with the GPU visible
#    (GPU_LANE_SUITE=all: the whole suite, about as long again as the main run).
#
# ggml ignores CPU-type Vulkan devices (lavapipe is one) unless GGML_VK_VISIBLE_DEVICES names them:
# "0" gives one device; the two-device tests ask for "0,0" themselves.
#
# usage: scripts/gpu-lane.sh   (GPU_LANE_VENV: where the environment goes; default a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${GPU_LANE_VENV:-$(mktemp -d)/venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
bash scripts/install-llama-cpp.sh vulkan
pip install -q -e ".[test]"

export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
python -m mixtral_cli devices
case "${GPU_LANE_SUITE:-devices}" in
    all) suite=(tests) ;;
    devices) suite=(tests/test_devices.py tests/test_fit.py tests/test_rpc.py tests/test_engine.py tests/test_complete.py) ;;
    *) echo "GPU_LANE_SUITE is all or devices" >&2; exit 2 ;;
esac
python -m pytest -m gpu tests/test_gpu.py
python -m pytest "${suite[@]}"
