#!/usr/bin/env bash
# Prepare a Debian machine to build and run llama.cpp's Vulkan backend from Debian's packages alone, and
# print the CMake flags the build needs (nothing when the system's own headers will do).
#
# ggml-vulkan at llama-cpp-python 0.3.36 needs Vulkan headers 1.3.272 or newer (vk::LayerSettingEXT);
# Debian 12 ships 1.3.239. There, Debian 13's libvulkan-dev is fetched with apt from the system's own
# sources by scripts/fetch-vulkan-headers.sh (the suite name changed, nothing installed system-wide) and
# unpacked into a folder of its own; the build reads its headers and links the system's loader.
#
# usage: scripts/debian-vulkan.sh HEADERS_DIR   (HEADERS_DIR: where newer headers go, kept for later runs)
set -euo pipefail

headers_dir=$1
newer_suite=trixie
packages=(mesa-vulkan-drivers libvulkan1 libvulkan-dev glslc spirv-headers vulkan-tools)

# "1 3 239" from a vulkan_core.h, empty when there is none.
header_version() {
    [ -f "$1" ] || return 0
    local patch
    patch=$(sed -n 's/^#define VK_HEADER_VERSION \([0-9]*\)$/\1/p' "$1")
    sed -n 's/^#define VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION(0, \([0-9]*\), \([0-9]*\), .*/\1 \2/p' "$1" |
        sed "s/\$/ $patch/"
}
new_enough() { # major minor patch >= 1.3.272
    [ "$#" -eq 3 ] && { [ "$1" -gt 1 ] || { [ "$1" -eq 1 ] && { [ "$2" -gt 3 ] || { [ "$2" -eq 3 ] && [ "$3" -ge 272 ]; }; }; }; }
}
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "run as root (or install: ${packages[*]})" >&2; exit 1
    fi
}

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# shellcheck disable=SC2046
if new_enough $(header_version /usr/include/vulkan/vulkan_core.h); then
    exit 0
fi
# shellcheck disable=SC2046
if ! new_enough $(header_version "$headers_dir/usr/include/vulkan/vulkan_core.h"); then
    echo "Vulkan headers older than 1.3.272: fetching $newer_suite's libvulkan-dev into $headers_dir" >&2
    bash "$(dirname "$0")/fetch-vulkan-headers.sh" "$headers_dir" "$newer_suite"
fi
echo "-DVulkan_INCLUDE_DIR=$headers_dir/usr/include"
