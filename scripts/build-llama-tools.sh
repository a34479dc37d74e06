#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-server, llama-perplexity, llama-batched-bench, llama-completion, llama-bench)
# from the llama.cpp that llama-cpp-python vendors, CPU only, into a cache keyed by the version; print the folder
# that holds them. Tests and benchmarks compare against these: the same llama.cpp our engine runs.
#
# The source is llama-cpp-python's sdist, fetched by pip (the registry pip is set up for, checked by pip's
# hashes), never built into the repository.
#
# usage: scripts/build-llama-tools.sh      (MIXTRAL_TOOLS_CACHE moves the cache; PYTHON picks pip's interpreter)
set -euo pipefail

version=0.3.36
targets=(llama-server llama-perplexity llama-batched-bench llama-completion llama-bench)
python=${PYTHON:-python3}
cache_root="${MIXTRAL_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixtral/llama-tools}"
key=$(printf '%s\n' "$version" "${targets[*]}" "$(uname -m)" | sha256sum | cut -c1-16)
cache="$cache_root/$key"

missing=0
for target in "${targets[@]}"; do [ -x "$cache/bin/$target" ] || missing=1; done
if [ "$missing" = 1 ]; then
    echo "building ${targets[*]} from llama-cpp-python $version's llama.cpp (on 2 cores: about 10 minutes)" >&2
    mkdir -p "$cache_root"
    work=$(mktemp -d "$cache.partial.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    "$python" -m pip download --quiet --no-deps --no-binary :all: -d "$work/sdist" \
        "llama-cpp-python==$version" >&2
    tar -xzf "$work"/sdist/llama_cpp_python-"$version".tar.gz -C "$work"
    source="$work/llama_cpp_python-$version/vendor/llama.cpp"
    cmake -S "$source" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >&2
    cmake --build "$work/build" --target "${targets[@]}" -j "$(nproc)" >&2
    mkdir -p "$work/out/bin"
    for target in "${targets[@]}"; do cp "$work/build/bin/$target" "$work/out/bin/"; done
    rm -rf "$cache"
    mv "$work/out" "$cache"
fi
echo "$cache/bin"
