#!/usr/bin/env bash
# Builds xfer for release: for each target, a client package whose agent bundle holds the
# agents for the other targets, so a client can deploy the agent to hosts of every platform
# built here.
#
#   scripts/release.sh [--targets "TRIPLE ..."] [--out DIR]
#
# Linux targets are built against glibc 2.17 (cargo-zigbuild with zig as the linker), so the
# client, which is also the agent it deploys, starts on CentOS 7 and everything newer; the
# script fails if one needs a newer symbol. macOS targets link only with a macOS SDK (SDKROOT,
# or on a Mac); without one they are compiled and checked, not packaged. Without --targets,
# every target of this list whose Rust standard library is installed is built:
#
#   x86_64-unknown-linux-gnu  aarch64-unknown-linux-gnu  x86_64-apple-darwin  aarch64-apple-darwin
#
# Add one with `rustup target add TRIPLE`. zig, cargo-zigbuild and BLAKE3 for the manifests
# come from the Python package registry, into a virtual environment under target/release-tools.
#
# Output, for version V, in DIR (default target/dist):
#   agents/xfer-agent-V-OS-ARCH, agents/MANIFEST.b3   every agent built, and their BLAKE3s
#   xfer-V-ARCH-OS/bin/xfer                            the client
#   xfer-V-ARCH-OS/lib/xfer/agents/                    its bundle: the other platforms' agents
#   xfer-V-ARCH-OS.tar.gz                              the same, packed
# Install a package by copying its bin and lib directories under a prefix (/usr/local).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS="x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-apple-darwin aarch64-apple-darwin"
# The oldest glibc the Linux builds may need: CentOS 7's.
GLIBC=2.17
# Tool versions, pinned so a release is built the same way twice.
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
BLAKE3_VERSION=1.0.11

targets=""
out=target/dist
while [ $# -gt 0 ]; do
  case $1 in
    --targets) targets=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

installed=$(rustup target list --installed 2>/dev/null || rustc --print target-list)
if [ -z "$targets" ]; then
  for target in $ALL_TARGETS; do
    if grep -qx "$target" <<<"$installed"; then targets="$targets $target"; fi
  done
fi
for target in $targets; do
  if ! grep -qx "$target" <<<"$installed"; then
    echo "release.sh: the Rust standard library for $target is not installed (rustup target add $target)" >&2
    exit 2
  fi
done

tools=target/release-tools
if [ ! -x "$tools/bin/cargo-zigbuild" ] || ! "$tools/bin/python" -c 'import blake3, ziglang' >/dev/null 2>&1; then
  echo "release.sh: installing zig, cargo-zigbuild and blake3 into $tools" >&2
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION" "blake3==$BLAKE3_VERSION"
fi
PATH="$PWD/$tools/bin:$PATH"
python="$PWD/$tools/bin/python"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# The output directory is replaced: only one this script made (its marker inside) or an empty
# or missing one, never a directory that holds anything else (`--out /usr/local` by mistake).
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/.xfer-release" ] && [ ! -f "$out/agents/MANIFEST.b3" ]; then
  echo "release.sh: $out is not empty and was not made by this script; choose another --out" >&2
  exit 2
fi
rm -rf "$out"
mkdir -p "$out/agents"
: > "$out/.xfer-release"

# Rust's names for a target's platform, as bundle files name it: linux-x86_64, macos-aarch64.
platform_of() {
  local arch=${1%%-*} os
  case $1 in
    *-linux-*) os=linux ;;
    *-apple-darwin) os=macos ;;
    *) echo "release.sh: no platform name for $1" >&2; exit 2 ;;
  esac
  echo "$os-$arch"
}

b3() { "$python" -c 'import sys, blake3; print(blake3.blake3(open(sys.argv[1], "rb").read()).hexdigest())' "$1"; }

# The highest GLIBC_ symbol version an ELF executable needs (readelf, from binutils).
highest_glibc() {
  readelf -W --dyn-syms -V "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n | tail -1
}

built=""
for target in $targets; do
  zig_target=$target
  case $target in *-linux-gnu) zig_target=$target.$GLIBC ;; esac
  case $target in
    *-apple-darwin)
      if [ -z "${SDKROOT:-}" ] && ! command -v xcrun >/dev/null 2>&1; then
        # zig links for macOS only against its SDK's frameworks (Security, CoreFoundation).
        echo "release.sh: $target: checking only, not linking: no macOS SDK here (set SDKROOT to a MacOSX.sdk, or run on a Mac)" >&2
        cargo-zigbuild check --locked --release --target "$target" --target-dir target/release-build --bin xfer
        continue
      fi
      ;;
  esac
  echo "release.sh: building $zig_target" >&2
  cargo zigbuild --locked --release --target "$zig_target" --target-dir target/release-build --bin xfer
  platform=$(platform_of "$target")
  agent="$out/agents/xfer-agent-$version-$platform"
  cp "target/release-build/$target/release/xfer" "$agent"
  case $target in
    *-linux-gnu)
      needs=$(highest_glibc "$agent")
      if [ "$(printf '%s\n%s\n' "$needs" "$GLIBC" | sort -t. -k1,1n -k2,2n | tail -1)" != "$GLIBC" ]; then
        echo "release.sh: $target needs GLIBC_$needs, newer than $GLIBC: a dependency calls a newer C library function" >&2
        exit 1
      fi
      echo "release.sh: $target needs glibc $needs at most" >&2
      ;;
  esac
  built="$built $target"
done
targets=$built

# The manifest, in b3sum's format.
(
  cd "$out/agents"
  for agent in xfer-agent-*; do
    hash=$(b3 "$agent")
    echo "$hash  $agent"
  done
) > "$out/agents/MANIFEST.b3.tmp"
mv "$out/agents/MANIFEST.b3.tmp" "$out/agents/MANIFEST.b3"

for target in $targets; do
  platform=$(platform_of "$target")
  package="xfer-$version-${platform#*-}-${platform%%-*}"
  mkdir -p "$out/$package/bin" "$out/$package/lib/xfer/agents"
  cp "$out/agents/xfer-agent-$version-$platform" "$out/$package/bin/xfer"
  # Its own platform's agent is the client itself.
  grep -v -- "-$platform\$" "$out/agents/MANIFEST.b3" > "$out/$package/lib/xfer/agents/MANIFEST.b3" || true
  while read -r _ agent; do
    cp "$out/agents/$agent" "$out/$package/lib/xfer/agents/"
  done < "$out/$package/lib/xfer/agents/MANIFEST.b3"
  chmod -R go-w "$out/$package"
  # Owned by root in the archive: extracted by root under /usr/local, the bundle is then
  # root's, which xfer trusts for every user (a bundle of another account is not used).
  tar -C "$out" --owner=0 --group=0 --numeric-owner -czf "$out/$package.tar.gz" "$package"
  echo "release.sh: $out/$package.tar.gz" >&2
done
