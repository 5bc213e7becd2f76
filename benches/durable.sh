#!/usr/bin/env bash
# The durable comparison: full pulls of the 1 GiB file and the 1 GiB checkpoint tree where
# every peer is followed by `sync`, since xfer returns only once what it wrote is on disk and
# the peers return with it in the page cache. Over the kit's loopback sshd, the peers on
# OpenSSH's default cipher and then on aes256-gcm (PEER_CIPHERS to pick), medians of REPS
# (default 3), each run from an empty directory on a settled disk. Markdown on stdout, with a
# column of ratios to the best peer (benches/ratios.py).
#
#   benches/durable.sh > benches/results/STAMP-durable.md      # about 6 minutes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
# shellcheck source=benches/timing.sh
source "$here/timing.sh"
[ -x "$bench/baseline.sh" ] || { echo "durable.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }
reps=${REPS:-3}
read -r -a peer_ciphers <<<"${PEER_CIPHERS:-default aes256-gcm@openssh.com}"

start_bench
"$bench/make-data" "$work/data" big >/dev/null 2>&1
"$bench/make-data" "$work/data" ckpt >/dev/null 2>&1
sync

exec 3>&1
exec > >(python3 "$here/ratios.py" >&3)
ratios=$!

echo "# Durable full pulls: the peers followed by sync ($(date -u +%Y-%m-%d\ %H:%M) UTC, $(nproc) cores, $(uname -sr), $(ssh -V 2>&1))"
echo
echo "| dataset | peers' cipher | tool | seconds (median of $reps) |"
echo "|---|---|---|---|"
for dataset in big.bin ckpt; do
  for cipher in "${peer_ciphers[@]}"; do
    copt=
    [ "$cipher" = default ] || copt="-c $cipher"
    for tool in xfer scp+sync sftp+sync rsync+sync; do
      times=()
      for _ in $(seq "$reps"); do
        rm -rf "$work/out" "$XFER_STATE_DIR" && mkdir -p "$work/out" && sync
        start=$(date +%s.%N)
        # shellcheck disable=SC2086 # the cipher option is two words or none
        case $tool in
          xfer) "$xfer" pull -q -F "$config" "bench:$work/data/$dataset" "$work/out/$dataset" ;;
          scp+sync) scp -q -r $copt -F "$config" "bench:$work/data/$dataset" "$work/out/" && sync ;;
          sftp+sync) sftp -q $copt -F "$config" -r "bench:$work/data/$dataset" "$work/out/" >/dev/null && sync ;;
          rsync+sync) rsync -a -e "ssh -F $config $copt" "bench:$work/data/$dataset" "$work/out/" && sync ;;
        esac
        end=$(date +%s.%N)
        times+=("$(seconds_between "$start" "$end")")
      done
      median=$(median "${times[@]}")
      echo "| $dataset | $cipher | $tool | $median |"
    done
  done
done

exec >&-
wait "$ratios"
