#!/usr/bin/env bash
# The release build (scripts/release.sh: glibc 2.17, zig as the linker, the build users install
# for old hosts) against a build made with this machine's toolchain and the peers, on the same
# data in one run: full pulls of the 1 GiB file and the 1 GiB checkpoint tree (the kit's
# baseline.sh, `full` on `big` and `ckpt`), once on OpenSSH's default cipher and once with every
# tool on xfer's cipher (CIPHERS=aes256-gcm@openssh.com). Each xfer deploys itself as the agent.
# Markdown on stdout, with a column of ratios to the best peer (benches/ratios.py).
#
#   benches/portable.sh > benches/results/STAMP-portable.md      # about 8 minutes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
[ -x "$bench/baseline.sh" ] || { echo "portable.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }

cargo build --release --quiet --manifest-path "$root/Cargo.toml" >&2
"$root/scripts/release.sh" --targets x86_64-unknown-linux-gnu --out "$root/target/bench-release" >&2
sync
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
portable="$root/target/bench-release/xfer-$version-x86_64-linux/bin/xfer"
host="$root/target/release/xfer"
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
export XFER_STATE_DIR=$state

exec 3>&1
exec > >(python3 "$here/ratios.py" >&3)

echo "# the release build (glibc 2.17) against this machine's build and the peers ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr), $(ssh -V 2>&1))"
echo
echo "xfer is the release build; xfer-host the build made with this machine's toolchain (glibc $(ldd --version | head -1 | grep -o '[0-9.]*$'))."
for ciphers in "" aes256-gcm@openssh.com; do
  echo
  title="every tool on $ciphers"
  [ -n "$ciphers" ] || title="OpenSSH's default cipher for the peers"
  echo "## $title"
  echo
  CIPHERS=$ciphers SCENARIOS=full DATASETS="big ckpt" \
    XFER="$portable pull --retries 0 -F {config} bench:{src} {dst}" \
    "$bench/baseline.sh" --tool "xfer-host=$host pull --retries 0 -F {config} bench:{src} {dst}"
done
