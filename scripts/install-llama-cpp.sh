#!/usr/bin/env bash
# Install llama-cpp-python built with llama.cpp's RPC backend (and a GPU backend when asked) into the
# Python environment that `python3` runs, then check that the build has what was asked for.
#
# pip's wheel cache is keyed by the source archive alone, not by CMAKE_ARGS: a machine that once built a
# CPU-only wheel silently installs it again when RPC or CUDA is asked for. So the wheel is built with pip's
# cache off, into a cache of our own keyed by the version and the build flags, and installed from there.
#
# usage: scripts/install-llama-cpp.sh [cpu|cuda|metal|vulkan|rocm]
#   default cpu (plus RPC); CMAKE_ARGS adds flags (e.g. -DCMAKE_CUDA_ARCHITECTURES=90); PYTHON picks the
#   interpreter; MIXTRAL_WHEEL_CACHE moves the cache (default: XDG cache dir/mixtral/wheels).
#   On Debian, vulkan installs what it needs from Debian's packages (scripts/debian-vulkan.sh).
set -euo pipefail

version=0.3.36
backend=${1:-cpu}
case "$backend" in
    cpu) backend_flags="" ;;
    cuda) backend_flags="-DGGML_CUDA=on" ;;
    metal) backend_flags="-DGGML_METAL=on" ;;
    vulkan) backend_flags="-DGGML_VULKAN=on" ;;
    rocm) backend_flags="-DGGML_HIP=on" ;;
    *) echo "usage: $0 [cpu|cuda|metal|vulkan|rocm]" >&2; exit 2 ;;
esac
cache_root="${MIXTRAL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixtral/wheels}"
if [ "$backend" = vulkan ] && command -v apt-get >/dev/null; then
    # The headers folder keeps one path, so the flags, and with them the cached wheel, stay the same.
    backend_flags="$backend_flags $(bash "$(dirname "$0")/debian-vulkan.sh" "$cache_root/vulkan-headers")"
fi
# RDMA off: a plain TCP build that needs no libibverbs where it runs.
flags="-DGGML_RPC=on -DGGML_RPC_RDMA=OFF $backend_flags ${CMAKE_ARGS:-}"
python=${PYTHON:-python3}

interpreter=$("$python" -c 'import platform, sys; print(sys.implementation.cache_tag, platform.machine())')
key=$(printf '%s\n' "$version" "$flags" "$interpreter" | sha256sum | cut -c1-16)
cache="$cache_root/$key"

wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $version with $flags (on 2 cores: about 6 minutes, 20 with Vulkan)" >&2
    mkdir -p "$(dirname "$cache")"
    staging=$(mktemp -d "$cache.partial.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    CMAKE_ARGS="$flags" "$python" -m pip wheel --no-cache-dir --no-deps -w "$staging" "llama-cpp-python==$version"
    printf 'llama-cpp-python %s\nCMAKE_ARGS=%s\n%s\n' "$version" "$flags" "$interpreter" >"$staging/FLAGS"
    rm -rf "$cache"
    mv "$staging" "$cache"
    trap - EXIT
    wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl | head -n 1)
fi

# --force-reinstall replaces a llama-cpp-python built with other flags; --no-deps keeps it from
# reinstalling numpy and the rest, which the second line installs only where missing.
"$python" -m pip install --force-reinstall --no-deps "$wheel"
"$python" -m pip install "$wheel"
"$python" - "$backend" <<'PY'
import sys
from pathlib import Path

import llama_cpp

if not llama_cpp.llama_supports_rpc():
    sys.exit("llama-cpp-python was installed without RPC: delete the wheel cache and run this script again")
library = {"cuda": "cuda", "metal": "metal", "vulkan": "vulkan", "rocm": "hip"}.get(sys.argv[1])
if library and not list((Path(llama_cpp.__file__).parent / "lib").glob(f"libggml-{library}.*")):
    sys.exit(f"llama-cpp-python was installed without {sys.argv[1]}: delete the wheel cache and run this script again")
print(f"llama-cpp-python {llama_cpp.__version__} with RPC ({sys.argv[1]}) installed", file=sys.stderr)
PY
