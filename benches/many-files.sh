#!/usr/bin/env bash
# Many tiny files: full pulls, no-op re-runs and full pushes of trees of COUNTS files (default
# 10,000, 100,000 and 1,000,000) of 100 B to 2 KiB, 1,000 per directory, by xfer and by rsync
# (on xfer's cipher, aes256-gcm@openssh.com, and on OpenSSH's default), over the kit's loopback
# sshd. For each run: the wall time, the same followed by `sync` (the fair durable comparison),
# the time per file, and the client's peak memory (GNU time's maximum resident set). The
# question it answers: does the cost per file stay flat as the tree grows, and does memory stay
# bounded? Medians of REPS (default 3; one run at a
# million files, where one run of each tool takes minutes). The machine must be idle.
#
#   benches/many-files.sh > benches/results/STAMP-many-files.md   # about 25 minutes with 1M
#   COUNTS="10000 100000" benches/many-files.sh                      # about 5 minutes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
# shellcheck source=benches/timing.sh
source "$here/timing.sh"
[ -x "$bench/sshd-up" ] || { echo "many-files.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "many-files.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
read -r -a counts <<<"${COUNTS:-10000 100000 1000000}"
reps=${REPS:-3}
cipher=aes256-gcm@openssh.com

start_bench

# make_tree DIR COUNT: COUNT files of 100-2048 bytes of deterministic noise, 1,000 per
# directory (d0000/f0000.bin ...), dated an hour ago like a dataset at rest: a pull of files
# written seconds before it is content-checked by the next run (docs/design.md, "Up to date"),
# which would make the no-op re-run measure that instead.
make_tree() {
  python3 - "$1" "$2" <<'PY'
import os, random, sys, time
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(26)
past = time.time() - 3600
for index in range(count):
    directory = os.path.join(root, f"d{index // 1000:04}")
    if index % 1000 == 0:
        os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"f{index % 1000:04}.bin")
    with open(path, "wb") as out:
        out.write(rng.randbytes(rng.randint(100, 2048)))
    os.utime(path, (past, past))
PY
}

# run LABEL COMMAND...: runs the command under GNU time; prints "SECONDS PEAK_KIB".
run() {
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -o "$work/time" -f "%M" "$@"
  end=$(date +%s.%N)
  echo "$(seconds_between "$start" "$end") $(tail -n 1 "$work/time")"
}

# per_file SECONDS COUNT: microseconds per file.
per_file() { python3 -c "print(round($1 * 1e6 / $2))"; }

# ratio A B: A / B as 0.00x.
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }

# pull TOOL SOURCE: one full pull into an empty directory.
pull() {
  rm -rf "$work/out" "$XFER_STATE_DIR" && mkdir -p "$work/out" && sync
  case $1 in
    xfer) run "$xfer" pull -q -F "$config" "bench:$2" "$work/out/tree" ;;
    rsync-aes) run rsync -a -e "ssh -F $config -c $cipher" "bench:$2/" "$work/out/tree" ;;
    rsync) run rsync -a -e "ssh -F $config" "bench:$2/" "$work/out/tree" ;;
  esac
}

# push TOOL SOURCE: one full push into an empty remote directory (the same disk, loopback).
push() {
  rm -rf "$work/pushed" && sync
  case $1 in
    xfer) run "$xfer" push -q -F "$config" "$2" "bench:$work/pushed" ;;
    rsync-aes) run rsync -a -e "ssh -F $config -c $cipher" "$2/" "bench:$work/pushed" ;;
    rsync) run rsync -a -e "ssh -F $config" "$2/" "bench:$work/pushed" ;;
  esac
}

# synced: the seconds a `sync` takes now, to 0.01 s: what a copy left in the page cache owes
# the disk (xfer's are durable when it returns; the peers' are not).
synced() {
  local start end
  start=$(date +%s.%N)
  sync
  end=$(date +%s.%N)
  seconds_between "$start" "$end"
}

# plus A B: A + B, to 0.01 s.
plus() { python3 -c "print(round($1 + $2, 2))"; }

# again TOOL SOURCE: the same command once more, with nothing to do.
again() {
  case $1 in
    xfer) run "$xfer" pull -q -F "$config" "bench:$2" "$work/out/tree" ;;
    rsync-aes) run rsync -a -e "ssh -F $config -c $cipher" "bench:$2/" "$work/out/tree" ;;
    rsync) run rsync -a -e "ssh -F $config" "bench:$2/" "$work/out/tree" ;;
  esac
}

echo "# Many tiny files ($(date -u +%Y-%m-%d\ %H:%M) UTC, $(nproc) cores, $(uname -sr), $(ssh -V 2>&1), $(rsync --version | head -n 1))"
echo
echo "Files of 100-2048 bytes, 1,000 per directory; xfer \`$(git -C "$root" rev-parse --short HEAD)\`;"
echo "rsync-aes runs on $cipher (xfer's cipher), rsync on OpenSSH's default. Medians of $reps"
echo "runs (1 at 1,000,000 files); peak = the client's maximum resident set; + sync = the copy"
echo "and then \`sync\` (xfer's copy is durable when it ends: its sync costs nothing more)."
echo
echo "| files | tool | full pull s | + sync s | µs per file | peak MiB | no-op re-run s | µs per file | full push s | + sync s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for count in "${counts[@]}"; do
  source_tree=$work/data/tree-$count
  make_tree "$source_tree" "$count"
  sync
  tries=$reps
  [ "$count" -lt 1000000 ] || tries=1
  declare -A full=() durable=() noop=() pushed=() pushed_durable=()
  for tool in xfer rsync-aes rsync; do
    fulls=() durables=() noops=() peaks=() pushes=() push_durables=()
    for _ in $(seq "$tries"); do
      read -r seconds peak < <(pull "$tool" "$source_tree")
      fulls+=("$seconds") peaks+=("$peak") durables+=("$(plus "$seconds" "$(synced)")")
      read -r seconds _ < <(again "$tool" "$source_tree")
      noops+=("$seconds")
      read -r seconds _ < <(push "$tool" "$source_tree")
      pushes+=("$seconds") push_durables+=("$(plus "$seconds" "$(synced)")")
    done
    diff -r "$source_tree" "$work/out/tree" >/dev/null || { echo "many-files.sh: $tool's copy of $count files differs" >&2; exit 1; }
    diff -r "$source_tree" "$work/pushed" >/dev/null || { echo "many-files.sh: $tool's push of $count files differs" >&2; exit 1; }
    full[$tool]=$(median "${fulls[@]}")
    durable[$tool]=$(median "${durables[@]}")
    noop[$tool]=$(median "${noops[@]}")
    pushed[$tool]=$(median "${pushes[@]}")
    pushed_durable[$tool]=$(median "${push_durables[@]}")
    peak=$(printf '%s\n' "${peaks[@]}" | sort -n | tail -n 1)
    echo "| $count | $tool | ${full[$tool]} | ${durable[$tool]} | $(per_file "${full[$tool]}" "$count") | $((peak / 1024)) | ${noop[$tool]} | $(per_file "${noop[$tool]}" "$count") | ${pushed[$tool]} | ${pushed_durable[$tool]} |"
  done
  for peer in rsync-aes rsync; do
    echo "| $count | xfer ÷ $peer | $(ratio "${full[xfer]}" "${full[$peer]}") | $(ratio "${durable[xfer]}" "${durable[$peer]}") | | | $(ratio "${noop[xfer]}" "${noop[$peer]}") | | $(ratio "${pushed[xfer]}" "${pushed[$peer]}") | $(ratio "${pushed_durable[xfer]}" "${pushed_durable[$peer]}") |"
  done
  rm -rf "$source_tree" "$work/out" "$work/pushed"
done
