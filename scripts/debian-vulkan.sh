#!/usr/bin/env bash
# Prepare a Debian machine to build and run llama.cpp's Vulkan backend from Debian's packages alone, and
# print the CMake flags the build needs (nothing when the system's own headers will do).
#
# ggml-vulkan at llama-cpp-python 0.3.36 needs Vulkan headers 1.3.272 or newer (vk::LayerSettingEXT);
# Debian 12 ships 1.3.239. There, Debian 13's libvulkan-dev is fetched with apt from the system's own
# sources (the suite name changed, nothing installed system-wide) and unpacked into a folder of its own;
# the build reads its headers and links the system's loader.
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
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    echo "Vulkan headers older than 1.3.272: fetching $newer_suite's libvulkan-dev into $headers_dir" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/archives/partial"
    # The system's own entries for its release, with the suite renamed; every other entry is left out.
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v RS= -v from="$codename" -v to="$newer_suite" '{
            keep = 0; out = ""; n = split($0, lines, "\n")
            for (i = 1; i <= n; i++) {
                line = lines[i]
                if (line ~ /^Suites:/) {
                    m = split(substr(line, 8), suites, " ")
                    for (j = 1; j <= m; j++) if (suites[j] == from) keep = 1
                    line = "Suites: " to
                }
                out = out line "\n"
            }
            if (keep) printf "%s\n", out
        }' "$file" >"$work/sources.list.d/$(basename "$file")"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        awk -v from="$codename" -v to="$newer_suite" '
            $1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($(i + 2) == from) { $(i + 2) = to; print } }
        ' "$file" >>"$work/sources.list"
    done
    touch "$work/sources.list"
    apt_options=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/sources.list.d"
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
    # apt's download user cannot enter a root-only temporary folder.
    [ "$(id -u)" -ne 0 ] || apt_options+=(-o "APT::Sandbox::User=root")
    apt-get "${apt_options[@]}" update -qq >&2
    (cd "$work" && apt-get "${apt_options[@]}" download -qq "libvulkan-dev/$newer_suite" >&2)
    rm -rf "$headers_dir.partial"
    dpkg -x "$work"/libvulkan-dev_*.deb "$headers_dir.partial"
    rm -rf "$headers_dir"
    mv "$headers_dir.partial" "$headers_dir"
fi
echo "-DVulkan_INCLUDE_DIR=$headers_dir/usr/include"
