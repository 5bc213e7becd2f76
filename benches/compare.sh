#!/usr/bin/env bash
# End-to-end comparison of xfer with scp, sftp and rsync on the same data in one run, over a
# throwaway OpenSSH sshd on loopback. Uses the benchmark kit in ../shared/bench (BENCH_DIR to
# point elsewhere): its baseline.sh times pulls (full copy of a 1 GiB file, a checkpoint-like
# tree and 10,000 small files; resume after a cut at half; delta after 1% mutation; no-op re-run;
# a far link), counts bytes on the wire through its proxy, and prints markdown tables. This script
# builds xfer in release mode, adds it to every table, then times pushes of the same data with a
# shell loop (median of REPS wall times; no byte counts, no content check), a delta push against
# rsync --inplace (time and bytes on the wire), a delta pull into an old copy already synced to
# disk against rsync --inplace, pulls of the 1 GiB file and the checkpoint tree
# and a push of the file over the emulated far link against rsync, a no-op re-run of the small
# files over that link against rsync, and xfer's peak memory (GNU
# time); every table gets a column of ratios to the best peer (benches/ratios.py). Arguments
# are passed to baseline.sh, so --tool NAME=TEMPLATE adds more tools to the pull tables.
#
# The peers run twice, on OpenSSH's default cipher (chacha20-poly1305) and on xfer's own
# (aes256-gcm@openssh.com: CIPHERS for baseline.sh, `-c` for the loops here), in the same run:
# every table has a `peers' cipher` column, and its ratios compare xfer with the peers on each.
# PEER_CIPHERS="default" (or one cipher) runs one of them only.
#
#   benches/compare.sh > report.md              # everything, about an hour
#   SCENARIOS="full resume" DATASETS=big benches/compare.sh
#   benches/compare.sh --tool "xfer-j1=$PWD/target/release/xfer pull -j 1 -F {config} bench:{src} {dst}"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
# shellcheck source=benches/timing.sh
source "$here/timing.sh"
[ -x "$bench/baseline.sh" ] || { echo "compare.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }

cargo build --release --quiet --manifest-path "$root/Cargo.toml" >&2
# The build leaves hundreds of MiB dirty; written back during the first timed runs, it delays
# every sync xfer makes (the peers never sync): every tool starts from a settled disk.
sync
xfer="$root/target/release/xfer"
state=$(mktemp -d)
work=$(mktemp -d)
trap '[ -z "${SSHD_DIR:-}" ] || "$bench/sshd-down" "$SSHD_DIR" >/dev/null 2>&1 || true; rm -rf "$state" "$work"' EXIT
export XFER_STATE_DIR=$state

# Every table gets its ratios to the best peer (benches/ratios.py) as the report is written.
exec 3>&1
exec > >(python3 "$here/ratios.py" >&3)
ratios=$!

echo "# xfer compared with scp, sftp and rsync ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr))"
echo
read -r -a peer_ciphers <<<"${PEER_CIPHERS:-default aes256-gcm@openssh.com}"
# ssh's option for a peer cipher: none for OpenSSH's default.
cipher_option() { [ "$1" = default ] || echo "-c $1"; }

for cipher in "${peer_ciphers[@]}"; do
  name=$cipher
  [ "$cipher" != default ] || name="OpenSSH's default cipher"
  echo "## Pull (baseline.sh, every tool on the same data in one run; the peers on $name)"
  echo
  # --retries 0: the resume scenario's first run goes through a proxy that kills the link at
  # half the file and refuses every later connection; like the other tools, xfer must stop there.
  ciphers=$cipher
  [ "$cipher" != default ] || ciphers=
  CIPHERS=$ciphers XFER="$xfer pull --retries 0 -F {config} bench:{src} {dst}" "$bench/baseline.sh" "$@"
  echo
done

# Push: the same data uploaded by each tool, timed with a shell loop (median of REPS).
echo
echo "## Push (${BIG_MIB:-1024} MiB file and the checkpoint tree, into an empty remote directory)"
echo
SSHD_DIR=$work/sshd
"$bench/sshd-up" "$SSHD_DIR" >/dev/null
config=$SSHD_DIR/ssh_config
"$bench/make-data" "$work/data" big "${BIG_MIB:-1024}" >/dev/null 2>&1
"$bench/make-data" "$work/data" ckpt "${CKPT_MIB:-1024}" >/dev/null 2>&1
# The data just made is still being written back: every tool starts from a settled disk, and
# each run from an empty remote directory whose removal has reached the disk.
sync
echo "| dataset | peers' cipher | tool | seconds (median of ${REPS:-3}) |"
echo "|---|---|---|---|"
for dataset in big.bin ckpt; do
  for cipher in "${peer_ciphers[@]}"; do
    copt=$(cipher_option "$cipher")
    for tool in xfer scp rsync; do
      times=()
      for _ in $(seq "${REPS:-3}"); do
        rm -rf "$work/remote" && mkdir -p "$work/remote" && sync
        start=$(date +%s.%N)
        # shellcheck disable=SC2086 # the cipher option is two words or none
        case $tool in
          xfer) "$xfer" push -q -F "$config" "$work/data/$dataset" "bench:$work/remote/$dataset" ;;
          scp) scp -q -r $copt -F "$config" "$work/data/$dataset" "bench:$work/remote/$dataset" ;;
          rsync) rsync -a -e "ssh -F $config $copt" "$work/data/$dataset" "bench:$work/remote/" ;;
        esac
        end=$(date +%s.%N)
        times+=("$(seconds_between "$start" "$end")")
      done
      median=$(median "${times[@]}")
      echo "| $dataset | $cipher | $tool | $median |"
    done
  done
done

# Delta push: the remote holds the old file, the local one has 1% of its 64 KiB blocks rewritten
# (make-data mutate, the same blocks every run); xfer (agent: block hashes on both sides, then
# 32 KiB pieces of the differing blocks) against rsync --inplace (rolling checksum). Wall time,
# median of REPS on a direct connection, then one more run through wire-proxy for the bytes.
echo
echo "## Delta push (${BIG_MIB:-1024} MiB file, 1% of its 64 KiB blocks rewritten locally)"
echo
echo "| peers' cipher | tool | seconds (median of ${REPS:-3}) | wire MiB | same content |"
echo "|---|---|---|---|---|"
cp "$work/data/big.bin" "$work/mutated.bin"
"$bench/make-data" mutate "$work/mutated.bin" 1 >/dev/null 2>&1
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(source "$bench/lib.sh"; write_ssh_config "$SSHD_DIR" bench 127.0.0.1 "$proxy_port" "$work/proxy_config")
delta_push() { # TOOL CONFIG [CIPHER-OPTION]
  case $1 in
    xfer) "$xfer" push -q -F "$2" "$work/mutated.bin" "bench:$work/remote/big.bin" ;;
    rsync) rsync -a --inplace --no-whole-file -e "ssh -F $2 ${3:-}" "$work/mutated.bin" "bench:$work/remote/big.bin" ;;
  esac
}
old_copy() {
  rm -rf "$work/remote" && mkdir -p "$work/remote"
  cp "$work/data/big.bin" "$work/remote/big.bin"
  touch -d '2001-01-01' "$work/remote/big.bin"
  sync
}
for cipher in "${peer_ciphers[@]}"; do
  copt=$(cipher_option "$cipher")
  for tool in xfer rsync; do
    times=()
    for _ in $(seq "${REPS:-3}"); do
      old_copy
      start=$(date +%s.%N)
      delta_push "$tool" "$config" "$copt"
      end=$(date +%s.%N)
      times+=("$(seconds_between "$start" "$end")")
    done
    median=$(median "${times[@]}")
    old_copy
    "$bench/wire-proxy" "$proxy_port" "$(cat "$SSHD_DIR/port")" --stats "$work/wire.json" -- \
      bash -c "$(declare -f delta_push); xfer=$xfer work=$work delta_push $tool $work/proxy_config '$copt'" >/dev/null 2>&1
    wire=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round((d["total_up"]+d["total_down"])/1048576, 1))' "$work/wire.json")
    same=no
    cmp -s "$work/mutated.bin" "$work/remote/big.bin" && same=yes
    echo "| $cipher | $tool | $median | $wire | $same |"
  done
done

# Delta pull into a copy already on disk. The kit's delta scenario copies the old file over the
# previous run's copy just before each timed run: on ext4 that starts writing the whole copy
# back, and any durable write into it (xfer syncs what it writes before a file counts as done;
# rsync does not sync) waits for that writeback. Here the old copy is synced before the timer
# starts, as a checkpoint from an earlier day would be. Same data as the delta push, reversed.
echo
echo "## Delta pull into a copy on disk (${BIG_MIB:-1024} MiB file, 1% of its 64 KiB blocks rewritten remotely)"
echo
echo "| peers' cipher | tool | seconds (median of ${REPS:-3}) | same content |"
echo "|---|---|---|---|"
mkdir -p "$work/local"
for cipher in "${peer_ciphers[@]}"; do
  copt=$(cipher_option "$cipher")
  for tool in xfer rsync; do
    times=()
    for _ in $(seq "${REPS:-3}"); do
      cp -p "$work/data/big.bin" "$work/local/big.bin"
      sync
      start=$(date +%s.%N)
      case $tool in
        xfer) "$xfer" pull -q -F "$config" "bench:$work/mutated.bin" "$work/local/big.bin" ;;
        rsync) rsync -a --inplace -e "ssh -F $config $copt" "bench:$work/mutated.bin" "$work/local/big.bin" ;;
      esac
      end=$(date +%s.%N)
      times+=("$(seconds_between "$start" "$end")")
    done
    median=$(median "${times[@]}")
    same=no
    cmp -s "$work/mutated.bin" "$work/local/big.bin" && same=yes
    echo "| $cipher | $tool | $median | $same |"
  done
done

# Far link, at the sizes issue 5 names (the kit's far scenario pulls 128 MiB): the 1 GiB file
# and the checkpoint tree pulled, and the file pushed, through wire-proxy emulating 100 ms round
# trip, a 2 MiB window per connection and 100 MiB/s for the whole link. One run each (rsync
# takes about a minute each).
echo
echo "## Far link (pulls of the ${BIG_MIB:-1024} MiB file and the checkpoint tree, a push of the file; 100 ms, 2 MiB window, 100 MiB/s)"
echo
echo "| dataset | peers' cipher | tool | seconds | MB/s | same content |"
echo "|---|---|---|---|---|---|"
far_copy() { # TOOL DATASET CONFIG [CIPHER-OPTION] (pull, or push for DATASET "push:NAME")
  case $1:$2 in
    xfer:push:*) "$xfer" push -q -F "$3" "$work/data/${2#push:}" "bench:$work/far/${2#push:}" ;;
    rsync:push:*) rsync -a -e "ssh -F $3 ${4:-}" "$work/data/${2#push:}" "bench:$work/far/" ;;
    xfer:*) "$xfer" pull -q -F "$3" "bench:$work/data/$2" "$work/far/$2" ;;
    rsync:*) rsync -a -e "ssh -F $3 ${4:-}" "bench:$work/data/$2" "$work/far/" ;;
  esac
}
for dataset in big.bin ckpt push:big.bin; do
  name=${dataset#push:}
  bytes=$(du -sb --apparent-size "$work/data/$name" | cut -f1)
  for cipher in "${peer_ciphers[@]}"; do
    copt=$(cipher_option "$cipher")
    for tool in xfer rsync; do
      rm -rf "$work/far" && mkdir -p "$work/far"
      start=$(date +%s.%N)
      "$bench/wire-proxy" "$proxy_port" "$(cat "$SSHD_DIR/port")" --delay-ms 50 --window $((2 << 20)) \
        --rate $((100 << 20)) --stats "$work/wire.json" -- \
        bash -c "$(declare -f far_copy); xfer=$xfer work=$work far_copy $tool $dataset $work/proxy_config '$copt'" >/dev/null 2>&1
      end=$(date +%s.%N)
      seconds=$(seconds_between "$start" "$end")
      same=no
      diff -r "$work/data/$name" "$work/far/$name" >/dev/null 2>&1 && same=yes
      echo "| $dataset | $cipher | $tool | $seconds | $(python3 -c "print(round($bytes / ($end - $start) / 1e6))") | $same |"
    done
  done
done
rm -rf "$work/far"

# A no-op re-run over the far link: the 10,000 small files copied once through the proxy by each
# tool (xfer's completion records name the host as the proxy's port), then the same command
# again, REPS times. On a far link a re-run is round trips: listings, not data.
echo
echo "## Far link, no-op re-run of the 10,000 small files (100 ms, 2 MiB window, 100 MiB/s; median of ${REPS:-3})"
echo
echo "| peers' cipher | tool | seconds |"
echo "|---|---|---|"
"$bench/make-data" "$work/data" small >/dev/null 2>&1
far_run() { # COMMAND...: runs it through the far-link proxy
  "$bench/wire-proxy" "$proxy_port" "$(cat "$SSHD_DIR/port")" --delay-ms 50 --window $((2 << 20)) \
    --rate $((100 << 20)) -- "$@" >/dev/null 2>&1
}
for cipher in "${peer_ciphers[@]}"; do
  copt=$(cipher_option "$cipher")
  for tool in xfer rsync; do
    rm -rf "$work/far" && mkdir -p "$work/far"
    case $tool in
      xfer) copy=("$xfer" pull -q -F "$work/proxy_config" "bench:$work/data/small" "$work/far/small") ;;
      rsync) copy=(rsync -a -e "ssh -F $work/proxy_config $copt" "bench:$work/data/small" "$work/far/") ;;
    esac
    far_run "${copy[@]}"
    times=()
    for _ in $(seq "${REPS:-3}"); do
      start=$(date +%s.%N)
      far_run "${copy[@]}"
      end=$(date +%s.%N)
      times+=("$(seconds_between "$start" "$end")")
    done
    echo "| $cipher | $tool | $(median "${times[@]}") |"
  done
done
rm -rf "$work/far"

# Peak memory (maximum resident set size of the xfer process) for a full pull and a full push
# of the big file.
echo
echo "## Peak memory of xfer (max RSS, one run each)"
echo
echo "| transfer | MiB |"
echo "|---|---|"
rm -rf "$work/pulled" "$work/remote" && mkdir -p "$work/remote"
rss=$( { /usr/bin/time -f '%M' "$xfer" pull -q -F "$config" "bench:$work/data/big.bin" "$work/pulled" >/dev/null; } 2>&1 | tail -1)
echo "| pull ${BIG_MIB:-1024} MiB | $((rss / 1024)) |"
rss=$( { /usr/bin/time -f '%M' "$xfer" push -q -F "$config" "$work/data/big.bin" "bench:$work/remote/big.bin" >/dev/null; } 2>&1 | tail -1)
echo "| push ${BIG_MIB:-1024} MiB | $((rss / 1024)) |"

# The report is complete once the ratio filter has written it.
exec >&-
wait "$ratios"
