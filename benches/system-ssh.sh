#!/usr/bin/env bash
# The system ssh as xfer's transport (`-e ssh`) against xfer's own client and the peers, on the
# same data in one run: a full pull of the 1 GiB file and a resume after a cut at half (the kit's
# baseline.sh, `full` and `resume` on `big`), once on OpenSSH's default cipher and once with every
# tool, the system ssh under xfer included, on xfer's cipher (CIPHERS=aes256-gcm@openssh.com; the
# kit writes it into the ssh_config that `-e ssh` reads too). Markdown on stdout, with a column of
# ratios to the best peer (benches/ratios.py).
#
#   benches/system-ssh.sh > benches/results/STAMP-system-ssh.md      # about 5 minutes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
[ -x "$bench/baseline.sh" ] || { echo "system-ssh.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }

cargo build --release --quiet --manifest-path "$root/Cargo.toml" >&2
sync
xfer="$root/target/release/xfer"
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
export XFER_STATE_DIR=$state

exec 3>&1
exec > >(python3 "$here/ratios.py" >&3)

echo "# xfer over the system ssh (-e ssh) and over its own client, with the peers ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr), $(ssh -V 2>&1))"
for ciphers in "" aes256-gcm@openssh.com; do
  echo
  title="every tool on $ciphers"
  [ -n "$ciphers" ] || title="OpenSSH's default cipher for the peers and the system ssh"
  echo "## $title"
  echo
  # --retries 0: the resume scenario's first run must end at the cut, as the peers' do.
  CIPHERS=$ciphers SCENARIOS="full resume" DATASETS=big \
    XFER="$xfer pull --retries 0 -F {config} bench:{src} {dst}" \
    "$bench/baseline.sh" --tool "xfer-ssh=$xfer pull --retries 0 -e ssh -F {config} bench:{src} {dst}"
done
