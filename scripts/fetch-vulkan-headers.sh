#!/usr/bin/env bash
# Fetch a newer Debian suite's libvulkan-dev with apt (the system's own sources, the suite renamed; nothing
# installed system-wide) and unpack it into HEADERS_DIR, replacing what was there only once it is complete.
#
# usage: scripts/fetch-vulkan-headers.sh HEADERS_DIR [SUITE]   (SUITE: default trixie)
set -euo pipefail

headers_dir=$1
newer_suite=${2:-trixie}
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
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
# dpkg -x makes its target folder but not the folders above it (a cache folder not made yet).
mkdir -p "$(dirname "$headers_dir")"
dpkg -x "$work"/libvulkan-dev_*.deb "$headers_dir.partial"
rm -rf "$headers_dir"
mv "$headers_dir.partial" "$headers_dir"
