#!/usr/bin/env bash
# Where a full pull's CPU goes: the 1 GiB file (or the kit's tree or small files, DATASET=ckpt
# or small) pulled over a loopback sshd by xfer, sftp, scp and rsync, every tool on
# aes256-gcm@openssh.com, each run measured three ways: the client's user and system CPU
# (GNU time), xfer's agent's (a wrapper given with --agent runs it under GNU time), and the
# whole machine's busy time from /proc/stat. What is left after the client and the agent is
# sshd (and the peers' server-side programs) and the kernel's loopback work. Medians of REPS
# (default 3), in CPU-seconds per GiB moved, beside the wall time. The machine must be idle.
#
#   benches/budget.sh > benches/results/STAMP-budget.md      # about 3 minutes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
# shellcheck source=benches/timing.sh
source "$here/timing.sh"
[ -x "$bench/baseline.sh" ] || { echo "budget.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "budget.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
dataset=${DATASET:-big}
reps=${REPS:-3}
cipher=aes256-gcm@openssh.com

start_bench
"$bench/make-data" "$work/data" "$dataset" >/dev/null 2>&1
source=$work/data/$dataset
[ -e "$source" ] || source=$work/data/$dataset.bin
bytes=$(du -sb --apparent-size "$source" | cut -f1)
# xfer's agent under GNU time: the remote is this machine, so the local binary serves.
cat > "$work/agent" <<SCRIPT
#!/bin/sh
exec /usr/bin/time -a -o "$work/agent.cpu" -f "%U %S" "$xfer" "\$@"
SCRIPT
chmod 755 "$work/agent"
sync

busy() { awk '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / 100 }' /proc/stat; }

echo "# Where a full pull's CPU goes ($(date -u +%Y-%m-%d\ %H:%M) UTC, $(nproc) cores, $(uname -sr), $(ssh -V 2>&1))"
echo
echo "Dataset $dataset ($((bytes / 1048576)) MiB), every tool on $cipher; medians of $reps runs;"
echo "CPU-seconds per GiB moved. 'server and kernel' is the machine's busy time less the"
echo "client's and the agent's: sshd (sftp-server, rsync, scp on the remote side) and the"
echo "kernel's loopback work."
echo
echo "| tool | wall s | client CPU s/GiB | agent CPU s/GiB | server and kernel CPU s/GiB | all CPU s/GiB |"
echo "|---|---|---|---|---|---|"
for tool in xfer sftp scp rsync; do
  rows=()
  for _ in $(seq "$reps"); do
    rm -rf "$work/out" "$work/agent.cpu" "$XFER_STATE_DIR" && mkdir -p "$work/out" && sync
    before=$(busy)
    start=$(date +%s.%N)
    case $tool in
      xfer) /usr/bin/time -o "$work/client.cpu" -f "%U %S" "$xfer" pull -q --agent "$work/agent" -F "$config" "bench:$source" "$work/out/" ;;
      sftp) /usr/bin/time -o "$work/client.cpu" -f "%U %S" sftp -q -c "$cipher" -F "$config" -r "bench:$source" "$work/out/" >/dev/null ;;
      scp) /usr/bin/time -o "$work/client.cpu" -f "%U %S" scp -q -r -c "$cipher" -F "$config" "bench:$source" "$work/out/" ;;
      rsync) /usr/bin/time -o "$work/client.cpu" -f "%U %S" rsync -a -e "ssh -F $config -c $cipher" "bench:$source" "$work/out/" ;;
    esac
    end=$(date +%s.%N)
    after=$(busy)
    agent=0
    [ ! -s "$work/agent.cpu" ] || agent=$(awk '{ sum += $1 + $2 } END { print sum }' "$work/agent.cpu")
    rows+=("$(python3 - "$bytes" "$start" "$end" "$before" "$after" "$(cat "$work/client.cpu")" "$agent" <<'PY'
import sys
size, start, end, before, after, client, agent = sys.argv[1:]
gib = int(size) / 2**30
user, system = (float(x) for x in client.split()[-2:])
client = user + system
agent = float(agent)
total = float(after) - float(before)
rest = max(total - client - agent, 0.0)
print(f"{float(end) - float(start):.2f} {client / gib:.2f} {agent / gib:.2f} {rest / gib:.2f} {total / gib:.2f}")
PY
)")
  done
  median=$(median "${rows[@]}")
  read -r wall client agent rest total <<<"$median"
  [ "$tool" = xfer ] || agent=-
  echo "| $tool | $wall | $client | $agent | $rest | $total |"
done
