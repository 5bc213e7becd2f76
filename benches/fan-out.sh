#!/usr/bin/env bash
# End-to-end benchmark of fleet pushes (issue 23): one local source copied to N hosts at once by
# `xfer push SRC h1:DST h2:DST ... hN:DST`, against the same copy made by xfer to one host alone,
# by rsync (one host after another, and all hosts at once with `&` and `wait`), by parallel-scp
# (Debian's pssh) and by pdcp (Debian's pdsh), on the same data in one run.
#
# N throwaway OpenSSH sshds on loopback (the kit in ../shared/bench, BENCH_DIR to point
# elsewhere; each with its own host key), each behind its own wire-proxy that emulates the
# host's link: LINK_RATE bytes/s each way and LINK_DELAY_MS one way. One ssh_config names them
# h1..hN. All sshds run on this machine as the same user, so each runs in a mount namespace of
# its own (unshare -m) in which the one remote path every tool writes to, WORK/remote, is a bind
# mount of that host's own directory WORK/hostI: every tool pushes to the same path on every
# host, as in a real fleet, and each host's bytes land apart. Without mount namespaces (not
# root, no unshare) xfer and rsync push to a path of each host's own and the pssh/pdsh rows are
# skipped. Each host's sessions get a HOME, TMPDIR and XDG_RUNTIME_DIR of their own (sshd's
# SetEnv): xfer's agent is cached per host, out of reach of any other xfer on the machine, and
# no dotfiles of the real user run for any tool; the agent is cached on every host before
# anything is timed, and every xfer run is checked not to have uploaded it again.
#
# Datasets: one SIZE_MIB file (the kit's `make-data big`) and a checkpoint-like tree of about
# SIZE_MIB (`make-data tree`). For each dataset and each N in HOSTS, REPS rounds, each round
# running every tool once in turn (fresh, empty destinations and a fresh XFER_STATE_DIR before
# each run, then `sync`): seconds are medians. Every copy on every host is compared with the
# source after every run (cmp per file; a symlink may arrive as a copy of its target, as
# scp and pdcp make it); a copy that differs stops the script. A tool that exits non-zero is
# reported as failed for that row (not retried) and the script exits 1 after the report.
# GNU time gives each run's client CPU (user+sys) and xfer's peak memory (max RSS); /proc gives
# the CPU of the sshds' sessions and of the proxies during each run, and the whole machine's
# busy share (other work included).
#
# Markdown on stdout, progress on stderr. Everything it makes is under one /tmp directory
# removed at exit (KEEP=1 keeps it); it stops only the sshds and proxies it started, by pid.
# It builds nothing: XFER_BIN (default: target/release/xfer of this repo) is what it runs.
#
#   benches/fan-out.sh > benches/results/$(date -u +%Y-%m-%d-%H%M)-fan-out.md
#                       # HOSTS="4 8", 256 MiB, 3 rounds: about 30 minutes on 2 cores (10 per round)
#   HOSTS=2 REPS=1 SIZE_MIB=32 benches/fan-out.sh            # smoke test, about a minute
#   XFER_BIN=/path/to/xfer XFER_ARGS="--hosts-at-once 4" benches/fan-out.sh
#   PEERS="rsync-par pdcp" DATASETS=big benches/fan-out.sh   # a subset
#
# Settings: HOSTS ("4 8": host counts, 1-8 each), REPS (3), SIZE_MIB (256), DATASETS ("big ckpt"),
# LINK_RATE (52428800 bytes/s per host, each way), LINK_DELAY_MS (20, one way), LINK_WINDOW
# (bytes in flight per stream; the proxy's default, 4 MiB, when unset), SINGLE ("h1 h2": the
# hosts timed alone; the slower one's median is the "single host" figure), PEERS ("rsync-seq
# rsync-par pscp pdcp"), XFER_BIN, XFER_ARGS (more options for every xfer push), XFER_COMMIT
# (for the report), INSTALL (1: apt-get install pssh/pdsh when missing; 0: skip those peers),
# LIMIT_S (900: the longest one run may take), KEEP, BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
[ -x "$bench/sshd-up" ] || { echo "fan-out.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }
hosts_list=${HOSTS:-4 8}
reps=${REPS:-3}
size_mib=${SIZE_MIB:-256}
datasets=${DATASETS:-big ckpt}
link_rate=${LINK_RATE:-52428800}
link_delay=${LINK_DELAY_MS:-20}
link_window=${LINK_WINDOW:-}
single_list=${SINGLE:-h1 h2}
read -r -a single_tools <<< "${single_list//h/xfer-h}"
peers=${PEERS:-rsync-seq rsync-par pscp pdcp}
limit=${LIMIT_S:-900}
xfer=${XFER_BIN:-$root/target/release/xfer}
xfer_args=${XFER_ARGS:-}
read -r -a xfer_argv <<< "$xfer_args"
started=$(date +%s)
stamp=$(date -u +%Y-%m-%d-%H%M)

say() { echo "fan-out.sh: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

for v in "$reps" "$size_mib" "$link_rate" "$limit" $hosts_list; do
  case $v in ''|*[!0-9]*) die "REPS, SIZE_MIB, LINK_RATE, LIMIT_S and HOSTS are whole numbers (got '$v')";; esac
done
maxn=0
for n in $hosts_list; do
  { [ "$n" -ge 1 ] && [ "$n" -le 8 ]; } || die "each host count in HOSTS is 1-8 (got $n)"
  [ "$n" -gt "$maxn" ] && maxn=$n
done
if [ "$reps" -lt 1 ] || [ "$size_mib" -lt 1 ] || [ "$link_rate" -lt 1 ]; then die "REPS, SIZE_MIB and LINK_RATE are at least 1"; fi
for d in $datasets; do case $d in big|ckpt) ;; *) die "DATASETS are big and/or ckpt (got $d)";; esac; done
for p in $peers; do case $p in rsync-seq|rsync-par|pscp|pdcp) ;; *) die "PEERS are rsync-seq, rsync-par, pscp, pdcp (got $p)";; esac; done
for h in $single_list; do case $h in h[1-8]) ;; *) die "SINGLE names hosts h1..h8 (got $h)";; esac; done
[ -x "$xfer" ] || die "no xfer executable at $xfer (build it with cargo build --release, or set XFER_BIN)"
[ -x /usr/bin/time ] || die "needs GNU time at /usr/bin/time (apt-get install time)"
command -v rsync >/dev/null || die "needs rsync"

work=$(mktemp -d /tmp/xfer-fan-out.XXXXXX)
# A copy of the binary is what runs: a rebuild during the run (a new agent, uploaded again by
# every later run) cannot change what is measured.
cp "$xfer" "$work/xfer"
xfer=$work/xfer
proxy_pids=() sshd_pids=()
cleanup() {
  local pid dir
  for pid in "${proxy_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${proxy_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for dir in "$work"/sshd-*; do
    [ ! -d "$dir" ] || "$bench/sshd-down" "$dir" >/dev/null 2>&1 || true
  done
  if [ -n "${KEEP:-}" ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/logs" "$work/remote"

# The peers from Debian packages, installed only when absent; a peer that cannot be had is
# skipped with a note in the report.
declare -A skip_why
want_pkgs=()
if [[ " $peers " == *" pscp "* ]] && ! command -v parallel-scp >/dev/null; then want_pkgs+=(pssh); fi
if [[ " $peers " == *" pdcp "* ]] && ! command -v pdcp >/dev/null; then want_pkgs+=(pdsh); fi
if [ ${#want_pkgs[@]} -gt 0 ]; then
  if [ "${INSTALL:-1}" = 0 ]; then
    say "not installing ${want_pkgs[*]} (INSTALL=0)"
  else
    say "installing ${want_pkgs[*]} (apt-get install; they are missing)"
    if ! apt-get install -y -q "${want_pkgs[@]}" >"$work/logs/apt.log" 2>&1; then
      apt-get update -q >>"$work/logs/apt.log" 2>&1 || true
      apt-get install -y -q "${want_pkgs[@]}" >>"$work/logs/apt.log" 2>&1 || say "apt-get install ${want_pkgs[*]} failed: $(tail -1 "$work/logs/apt.log")"
    fi
  fi
fi
command -v parallel-scp >/dev/null || skip_why[pscp]="parallel-scp (Debian's pssh) is not installed and could not be"
command -v pdcp >/dev/null || skip_why[pdcp]="pdcp (Debian's pdsh) is not installed and could not be"

# Mount namespaces: one per sshd, so that WORK/remote is each host's own directory.
ns=1
if ! unshare -m --propagation private sh -c "mount --bind '$work/logs' '$work/remote'" 2>/dev/null; then
  ns=0
  say "no mount namespaces here (needs root and unshare): each host gets a path of its own; pscp and pdcp are skipped"
  skip_why[pscp]="needs one remote path for every host, and this machine could not give each sshd its own view (no mount namespaces)"
  skip_why[pdcp]=${skip_why[pscp]}
fi
remote_dir() { # I: the path host hI writes to
  if [ "$ns" = 1 ]; then echo "$work/remote"; else echo "$work/host$1"; fi
}

# The hosts: sshd I (the kit's keys and config, restarted inside its namespace on the same
# port), its proxy, and its alias hI in one ssh_config; the proxy's port is trusted with that
# sshd's host key ([127.0.0.1]:PROXYPORT in the sshd's own known_hosts, by the kit's
# write_ssh_config, which also sets BatchMode yes).
# shellcheck source=/dev/null
source "$bench/lib.sh"
cfg=$work/ssh_config
: > "$cfg"
window_args=()
[ -z "$link_window" ] || window_args=(--window "$link_window")
for i in $(seq "$maxn"); do
  dir=$work/sshd-$i
  mkdir -p "$work/host$i"
  # The kit writes the keys and the config and starts sshd; it is stopped at once and started
  # again on the same port with sessions of a HOME, TMPDIR and XDG_RUNTIME_DIR of this host's
  # own (private): xfer's agent is cached there, one copy per host as on real hosts, where no
  # other xfer on this machine evicts it, and no dotfiles of the real user run.
  "$bench/sshd-up" "$dir" >/dev/null
  "$bench/sshd-down" "$dir"
  mkdir -m 700 "$work/home-$i" "$work/home-$i/tmp" "$work/home-$i/run"
  echo "SetEnv HOME=$work/home-$i TMPDIR=$work/home-$i/tmp XDG_RUNTIME_DIR=$work/home-$i/run" >> "$dir/sshd_config"
  if [ "$ns" = 1 ]; then
    # sshd daemonizes inside the namespace; its pid file is the daemon's, so sshd-down stops it.
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare -m --propagation private sh -c 'mount --bind "$1" "$2" && exec /usr/sbin/sshd -f "$3" -E "$4"' \
      sh "$work/host$i" "$work/remote" "$dir/sshd_config" "$dir/sshd.log"
  else
    /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
  fi
  for _ in $(seq 50); do [ -s "$dir/sshd.pid" ] && break; sleep 0.1; done
  [ -s "$dir/sshd.pid" ] || { tail -5 "$dir/sshd.log" >&2; die "sshd $i did not start"; }
  pport=$(free_port)
  "$bench/wire-proxy" "$pport" "$(cat "$dir/port")" --delay-ms "$link_delay" --rate "$link_rate" \
    "${window_args[@]}" --max-seconds 86400 --stats "$work/proxy-$i.json" 2>"$work/logs/proxy-$i.log" &
  proxy_pids+=($!)
  for _ in $(seq 100); do [ -s "$work/proxy-$i.json" ] && break; sleep 0.05; done
  [ -s "$work/proxy-$i.json" ] || die "proxy $i did not start (see its log)"
  write_ssh_config "$dir" "h$i" 127.0.0.1 "$pport" "$cfg"
  sshd_pids+=("$(cat "$dir/sshd.pid")")
done
say "$maxn sshds, each behind a proxy of $((link_rate / 1048576)) MiB/s and ${link_delay} ms; config $cfg"

# Every host answers through its proxy, in its own HOME, and writes where it should, and only there.
for i in $(seq "$maxn"); do
  # shellcheck disable=SC2016 # expanded by the remote shell
  [ "$(ssh -F "$cfg" "h$i" 'echo "$HOME"')" = "$work/home-$i" ] || die "h$i does not answer through its proxy in its own HOME"
  ssh -F "$cfg" "h$i" "echo $i > $(remote_dir "$i")/.probe" || die "h$i cannot write to $(remote_dir "$i")"
done
for i in $(seq "$maxn"); do
  [ "$(cat "$work/host$i/.probe" 2>/dev/null)" = "$i" ] || die "h$i did not write into its own directory"
  rm -f "$work/host$i/.probe"
done
[ "$ns" = 0 ] || [ -z "$(ls -A "$work/remote")" ] || die "a host wrote into the shared path outside its namespace"

# Data, settled on disk before anything is timed.
say "making the data (${size_mib} MiB each)"
for d in $datasets; do
  case $d in
    big) "$bench/make-data" "$work/data" big "$size_mib" >/dev/null 2>&1 ;;
    ckpt) "$bench/make-data" tree "$work/data/ckpt" "$size_mib" >/dev/null 2>&1 ;;
  esac
done
sync
src_of() { case $1 in big) echo "$work/data/big.bin" ;; ckpt) echo "$work/data/ckpt" ;; esac; }
name_of() { basename "$(src_of "$1")"; }

# xfer's agent, cached on every host before anything is timed; this also checks that xfer
# reaches every host. Every xfer run after it is checked not to have uploaded the agent again.
echo warm > "$work/warm"
agent_stamp() { stat -c '%n %i %Y' "$work/home-$1"/.cache/xfer/agent-* 2>/dev/null || true; } # I
declare -A agent_at
for i in $(seq "$maxn"); do
  mkdir -m 700 "$work/state"
  XFER_STATE_DIR=$work/state timeout "$limit" "$xfer" push -q -F "$cfg" "$work/warm" "h$i:$(remote_dir "$i")/warm" \
    >"$work/logs/warm-$i.log" 2>&1 || { cat "$work/logs/warm-$i.log" >&2; die "xfer cannot push to h$i"; }
  rm -rf "$work/state" "$work/host$i/warm"
  agent_at[$i]=$(agent_stamp "$i")
  [ -n "${agent_at[$i]}" ] || say "note: no agent cached in h$i's HOME after the warm-up (xfer kept it elsewhere?)"
done
uploads=0

# Copies compared with the source: the same tree of names, every file's bytes (cmp), symlinks
# as links to the same target or as a copy of the target's bytes. Top-level .xfer ignored.
verify() { # SRC DST...
  python3 - "$@" <<'PY'
import os, subprocess, sys
src, dsts = sys.argv[1], sys.argv[2:]
def same_bytes(a, b):
    return os.path.getsize(a) == os.path.getsize(b) and subprocess.run(["cmp", "-s", a, b]).returncode == 0
def check(s, d, problems):
    if os.path.islink(s):
        if os.path.islink(d):
            if os.readlink(d) != os.readlink(s):
                problems.append(f"{d}: link to {os.readlink(d)}, not {os.readlink(s)}")
        elif not (os.path.isfile(d) and same_bytes(os.path.realpath(s), d)):
            problems.append(f"{d}: neither the link nor a copy of its target")
    elif os.path.isdir(s):
        if not os.path.isdir(d) or os.path.islink(d):
            problems.append(f"{d}: not a directory"); return
        want = set(os.listdir(s))
        have = set(os.listdir(d)) - ({".xfer"} if s == src else set())
        for n in sorted(have - want): problems.append(f"{d}/{n}: extra")
        for n in sorted(want - have): problems.append(f"{d}/{n}: missing")
        for n in sorted(want & have): check(os.path.join(s, n), os.path.join(d, n), problems)
    elif not os.path.isfile(d) or os.path.islink(d):
        problems.append(f"{d}: missing or not a file")
    elif not same_bytes(s, d):
        problems.append(f"{d}: differs from the source")
problems = []
for d in dsts:
    check(src, d, problems)
for p in problems[:20]:
    print(p)
sys.exit(1 if problems else 0)
PY
}

clk=$(getconf CLK_TCK)
cpu_snapshot() { # prints: machine busy ticks, machine total ticks, proxies' ticks, sshds' ticks
  local u n s idle iow irq sirq steal pticks=0 sticks=0 pid t
  read -r _ u n s idle iow irq sirq steal _ < /proc/stat
  for pid in "${proxy_pids[@]}"; do
    t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    pticks=$((pticks + t))
  done
  # An sshd's own time and that of every session it has reaped: the server side of each
  # connection (sshd, the login shell, the agent, rsync's or scp's or pdcp's remote end).
  for pid in "${sshd_pids[@]}"; do
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    sticks=$((sticks + t))
  done
  echo "$((u + n + s + irq + sirq + steal)) $((u + n + s + idle + iow + irq + sirq + steal)) $pticks $sticks"
}
sessions_reaped() { # waits (up to 5 s) until no sshd has a session left, so its CPU is counted
  local pid
  for _ in $(seq 50); do
    for pid in "${sshd_pids[@]}"; do
      [ -z "$(cat "/proc/$pid/task/$pid/children" 2>/dev/null)" ] || continue 2
    done
    return 0
  done
  say "note: sessions still open 5 s after a run; their CPU is not all counted"
}
clear_dests() {
  local i
  for i in $(seq "$maxn"); do find "$work/host$i" -mindepth 1 -delete; done
}
hosts_csv() { seq -s, -f 'h%g' 1 "$1"; } # N: h1,h2,...,hN

# One timed run. Sets R_WALL R_CPU R_RSS R_BUSY R_PROXY R_SERVER, or R_ERR and returns 1 if the tool
# failed; stops the script if it exited 0 but a copy differs.
run_once() { # TOOL DATASET N ROUND
  local tool=$1 dataset=$2 n=$3 round=$4 src name log tf status=0 i t0 t1 b0 b1 tot0 tot1 p0 p1 s0 s1 u s m cmd=() targets=() checked=()
  src=$(src_of "$dataset"); name=$(name_of "$dataset")
  log=$work/logs/$tool-$dataset-$n-$round.log; tf=$work/logs/$tool-$dataset-$n-$round.time
  case $tool in
    xfer)
      for i in $(seq "$n"); do targets+=("h$i:$(remote_dir "$i")/$name"); checked+=("$work/host$i/$name"); done
      cmd=("$xfer" push -q -F "$cfg" "${xfer_argv[@]}" "$src" "${targets[@]}") ;;
    xfer-h*)
      i=${tool#xfer-h}; checked=("$work/host$i/$name")
      cmd=("$xfer" push -q -F "$cfg" "${xfer_argv[@]}" "$src" "h$i:$(remote_dir "$i")/$name") ;;
    rsync-seq|rsync-par)
      for i in $(seq "$n"); do targets+=("h$i:$(remote_dir "$i")/"); checked+=("$work/host$i/$name"); done
      if [ "$tool" = rsync-seq ]; then
        # shellcheck disable=SC2016 # expanded by the inner shell
        cmd=(bash -c 'cfg=$1 src=$2; shift 2; for t; do rsync -a -e "ssh -F $cfg" "$src" "$t" || exit; done' \
             rsync-seq "$cfg" "$src" "${targets[@]}")
      else
        # shellcheck disable=SC2016
        cmd=(bash -c 'cfg=$1 src=$2 s=0; shift 2; pids=(); for t; do rsync -a -e "ssh -F $cfg" "$src" "$t" & pids+=($!); done
                      for p in "${pids[@]}"; do wait "$p" || s=$?; done; exit "$s"' rsync-par "$cfg" "$src" "${targets[@]}")
      fi ;;
    pscp)
      for i in $(seq "$n"); do checked+=("$work/host$i/$name"); done
      hosts_csv "$n" | tr , '\n' > "$work/hosts-$n"
      cmd=(parallel-scp -r -h "$work/hosts-$n" -x "-F $cfg" "$src" "$work/remote/$name") ;;
    pdcp)
      for i in $(seq "$n"); do checked+=("$work/host$i/$name"); done
      cmd=(env PDSH_RCMD_TYPE=ssh "PDSH_SSH_ARGS=-F $cfg -x -l%u %h" pdcp -R ssh -w "$(hosts_csv "$n")" -r "$src" "$work/remote/") ;;
  esac
  clear_dests
  rm -rf "$work/state"; mkdir -m 700 "$work/state"
  sync
  sessions_reaped
  read -r b0 tot0 p0 s0 < <(cpu_snapshot)
  t0=$(date +%s.%N)
  XFER_STATE_DIR=$work/state /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$limit" "${cmd[@]}" \
    >"$log" 2>&1 </dev/null || status=$?
  t1=$(date +%s.%N)
  read -r b1 tot1 p1 _ < <(cpu_snapshot)
  sessions_reaped
  read -r _ _ _ s1 < <(cpu_snapshot)
  if [ "$status" -ne 0 ]; then
    R_ERR="exit $status$([ "$status" -ne 124 ] || echo ", over LIMIT_S"): $( (grep -m1 -v '^[[:space:]]*$' "$log" || true) | sed "s#$work#WORK#g" | cut -c1-200)"
    return 1
  fi
  if ! verify "$src" "${checked[@]}" > "$work/logs/verify.out"; then
    sed "s#^#  #" "$work/logs/verify.out" >&2
    die "$tool, $dataset to $n hosts, round $round: a copy differs from the source (above)"
  fi
  if [ "$ns" = 1 ] && [ -n "$(ls -A "$work/remote")" ]; then die "$tool wrote into the shared path outside the hosts' namespaces"; fi
  if [[ $tool == xfer* ]]; then
    for i in $(seq "$maxn"); do
      [ "$(agent_stamp "$i")" = "${agent_at[$i]}" ] && continue
      say "note: $tool uploaded the agent to h$i again ($dataset, $n hosts, round $round): that run includes the upload"
      uploads=$((uploads + 1)); agent_at[$i]=$(agent_stamp "$i")
    done
  fi
  R_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  read -r _ u s m < <(tail -1 "$tf")
  R_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  R_RSS=$((m / 1024))
  R_BUSY=$(awk -v b="$((b1 - b0))" -v t="$((tot1 - tot0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }')
  R_PROXY=$(awk -v p="$((p1 - p0))" -v c="$clk" 'BEGIN { printf "%.2f", p / c }')
  R_SERVER=$(awk -v p="$((s1 - s0))" -v c="$clk" 'BEGIN { printf "%.2f", p / c }')
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
maximum() { printf '%s\n' "$@" | sort -n | tail -1; }

declare -A walls cpus rsss busys proxies servers failed
any_failed=0
for dataset in $datasets; do
  for n in $hosts_list; do
    tools=(xfer)
    for h in $single_list; do [ "${h#h}" -le "$n" ] && tools+=("xfer-$h"); done
    for p in rsync-par pscp pdcp rsync-seq; do
      [[ " $peers " == *" $p "* ]] && [ -z "${skip_why[$p]:-}" ] && tools+=("$p")
    done
    for round in $(seq "$reps"); do
      for tool in "${tools[@]}"; do
        key=$dataset/$n/$tool
        [ -z "${failed[$key]:-}" ] || continue
        if run_once "$tool" "$dataset" "$n" "$round"; then
          say "$dataset, $n hosts, round $round: $tool $R_WALL s (CPU-s: client $R_CPU, servers $R_SERVER, proxies $R_PROXY; machine $R_BUSY% busy)"
          walls[$key]+="$R_WALL "; cpus[$key]+="$R_CPU "; rsss[$key]+="$R_RSS "
          busys[$key]+="$R_BUSY "; proxies[$key]+="$R_PROXY "; servers[$key]+="$R_SERVER "
        else
          say "$dataset, $n hosts, round $round: $tool FAILED ($R_ERR); not run again for this row"
          failed[$key]=$R_ERR; any_failed=1
        fi
      done
    done
  done
done
clear_dests

# The report.
med() { # KEY FIELD-ARRAY-NAME: median of the recorded values, or nothing
  local -n arr=$2
  # shellcheck disable=SC2086 # one word per value
  [ -z "${arr[$1]:-}" ] || median ${arr[$1]}
}
cell() { # KEY: "S s", "failed", "skipped" or "-"
  local tool=${1##*/}
  if [ -n "${failed[$1]:-}" ]; then echo "failed"
  elif [ -n "${walls[$1]:-}" ]; then echo "$(med "$1" walls) s"
  elif [ -n "${skip_why[$tool]:-}" ]; then echo "skipped"
  else echo "-"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2fx", a / b; else printf "-" }'; }
peer_label() { case $1 in rsync-seq) echo "rsync, one host after another" ;; rsync-par) echo "rsync, all hosts at once" ;;
                            pscp) echo "parallel-scp" ;; pdcp) echo "pdcp" ;; xfer) echo "xfer fan-out" ;; xfer-h*) echo "xfer to ${1#xfer-} alone" ;; esac; }
per_wall() { awk -v c="$1" -v w="$2" 'BEGIN { printf "%.2f", (w > 0 ? c / w : 0) }'; } # CPU WALL
share() { awk -v a="$1" -v b="$2" -v c="$3" -v w="$4" -v n="$(nproc)" 'BEGIN { printf "%.0f", (w > 0 ? 100 * (a + b + c) / (n * w) : 0) }'; } # CLIENT SERVERS PROXIES WALL
verdict() { # CLIENT SERVERS PROXIES WALL BUSY: a sentence on what limited the run
  local ours; ours=$(share "$1" "$2" "$3" "$4")
  awk -v ours="$ours" -v busy="$5" -v client="$(per_wall "$1" "$4")" 'BEGIN {
    if (busy >= 90 && ours >= 75) printf " The cores were full, mostly with the benchmark itself: the CPU, not the links, set the pace%s.", (client >= 0.9 ? ", and the client used a whole core" : ", and the client was not the largest part")
    else if (busy >= 90) printf " The cores were full, largely with other work: the run was slowed by it; compare within the run."
    else if (client >= 0.9) printf " The client used a whole core: it may have been the limit."
    else printf " The CPU had room: the links set the pace." }'
}
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
rate_mib=$(awk -v r="$link_rate" 'BEGIN { printf "%g", r / 1048576 }')
active_peers=()
for p in rsync-seq rsync-par pscp pdcp; do [[ " $peers " == *" $p "* ]] && active_peers+=("$p"); done
pretty_single=${single_list// /, }
{
  echo "# xfer fan-out push to N hosts against rsync, parallel-scp and pdcp ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr); each host's link ${rate_mib} MiB/s each way, ${link_delay} ms one way)"
  echo
  echo "Started $stamp UTC (\`benches/fan-out.sh\`), took $(( ($(date +%s) - started + 30) / 60 )) min. $("$xfer" --version) (commit ${XFER_COMMIT:-not given}), binary sha256 $(sha256sum "$xfer" | cut -c1-12) (a copy taken at the start);"
  echo "$(ssh -V 2>&1 | cut -d, -f1) (client and every sshd); $(rsync --version | head -1 | sed 's/  */ /g; s/ protocol.*//');"
  echo "pssh $(parallel-scp --version 2>/dev/null || echo "not installed"); $(pdsh -V 2>/dev/null | head -1 | sed 's/ .*//' || echo "pdsh not installed");"
  echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "Each host is a throwaway OpenSSH sshd on loopback (the kit's \`sshd-up\`, its own host key)"
  echo "behind its own \`wire-proxy\` (\`--rate $link_rate --delay-ms $link_delay${link_window:+ --window $link_window}\`: the whole"
  echo "link shared by all of that host's connections, ${rate_mib} MiB/s each way, $((2 * link_delay)) ms round trip)."
  if [ "$ns" = 1 ]; then
    echo "Every sshd runs in a mount namespace of its own in which the one remote path every tool"
    echo "writes to is a bind mount of that host's own directory: every tool pushes to the same path"
    echo "on every host, and each host's bytes land apart."
  else
    echo "No mount namespaces on this machine: xfer and rsync push to a path of each host's own;"
    echo "parallel-scp and pdcp (one remote path for all hosts) are skipped."
  fi
  echo "Seconds are medians of $reps rounds; each round runs every tool once in turn, each run into"
  echo "fresh, empty destinations (and a fresh \`XFER_STATE_DIR\`) after \`sync\`. After every run"
  echo "every host's copy was compared with the source (cmp; a symlink may arrive as a copy of its"
  echo "target, as scp and pdcp make it): all identical. Each host's sessions have a HOME, TMPDIR"
  echo "and XDG_RUNTIME_DIR of their own (sshd's \`SetEnv\`; no dotfiles in them, for any tool);"
  echo "xfer's agent was cached in each before anything was timed, and timed xfer runs that uploaded"
  echo "it again: $uploads."
  echo "\"xfer single host\": the same push to one host alone (${pretty_single}), the slower median;"
  echo "\"best peer\": the fastest of the other tools' medians. The floor: a host's link carries"
  echo "SIZE / ${rate_mib} MiB/s, so a perfect fan-out takes about what one host does."
  echo
  echo "Commands (CFG the ssh_config with h1..hN, D the remote path):"
  echo
  echo "- xfer fan-out: \`xfer push -q -F CFG${xfer_args:+ $xfer_args} SRC h1:D/NAME ... hN:D/NAME\`"
  echo "- xfer single host: \`xfer push -q -F CFG${xfer_args:+ $xfer_args} SRC h1:D/NAME\`"
  echo "- rsync, one host after another: \`for h in h1 ... hN; do rsync -a -e \"ssh -F CFG\" SRC \$h:D/; done\`"
  echo "- rsync, all hosts at once: the same with \`&\`, then \`wait\`"
  echo "- parallel-scp: \`parallel-scp -r -h HOSTS -x \"-F CFG\" SRC D/NAME\` (it runs \`scp -qC\`: compression on, which it cannot turn off; up to 32 hosts at once)"
  echo "- pdcp: \`PDSH_RCMD_TYPE=ssh PDSH_SSH_ARGS=\"-F CFG -x -l%u %h\" pdcp -w h1,...,hN -r SRC D/\`"
  echo
  echo "xfer negotiates AES-GCM; OpenSSH's tools use its default, chacha20-poly1305. xfer syncs"
  echo "every file it writes before it counts as done; the peers never sync. All N hosts share this"
  echo "machine's cores and disk: at N hosts the machine carries N times one host's bytes."
  for dataset in $datasets; do
    src=$(src_of "$dataset")
    bytes=$(find "$src" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')
    files=$(find "$src" -type f | wc -l)
    floor=$(awk -v b="$bytes" -v r="$link_rate" 'BEGIN { printf "%.2f", b / r }')
    echo
    case $dataset in
      big) echo "## One $(mib "$bytes") MiB file (\`make-data big $size_mib\`); floor $floor s" ;;
      ckpt) echo "## A checkpoint-like tree: $(mib "$bytes") MiB in $files files (\`make-data tree DIR $size_mib\`); floor $floor s" ;;
    esac
    echo
    header="| hosts | xfer fan-out | xfer single host | fan-out ÷ single | target | met |"
    rule="|---|---|---|---|---|---|"
    for p in "${active_peers[@]}"; do header+=" $(peer_label "$p") |"; rule+="---|"; done
    echo "$header best peer | xfer ÷ best peer | floor |"
    echo "$rule---|---|---|"
    for n in $hosts_list; do
      fan=$(med "$dataset/$n/xfer" walls)
      single='' single_host=''
      for h in $single_list; do
        [ "${h#h}" -le "$n" ] || continue
        t=$(med "$dataset/$n/xfer-$h" walls)
        [ -n "$t" ] || continue
        if [ -z "$single" ] || awk -v a="$t" -v b="$single" 'BEGIN { exit !(a > b) }'; then single=$t single_host=$h; fi
      done
      r=$(ratio "$fan" "$single")
      met=-
      [ "$r" = - ] || met=$(awk -v r="${r%x}" 'BEGIN { print (r <= 1.15 ? "yes" : "no") }')
      single_cell=failed
      [ -z "$single" ] || single_cell="$single s ($single_host)"
      row="| $n | $(cell "$dataset/$n/xfer") | $single_cell | $r | ≤ 1.15x | $met |"
      best='' best_tool=''
      for p in "${active_peers[@]}"; do
        row+=" $(cell "$dataset/$n/$p") |"
        t=$(med "$dataset/$n/$p" walls)
        [ -n "$t" ] || continue
        if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t best_tool=$p; fi
      done
      best_cell=-
      [ -z "$best" ] || best_cell="$(peer_label "$best_tool") $best s"
      echo "$row $best_cell | $(ratio "$fan" "$best") | $floor s |"
    done
    for n in $hosts_list; do
      for tool in xfer "${single_tools[@]}" "${active_peers[@]}"; do
        [ -z "${failed[$dataset/$n/$tool]:-}" ] || echo "
- $n hosts, $(peer_label "$tool") failed: \`${failed[$dataset/$n/$tool]}\`"
      done
    done
  done
  for p in "${active_peers[@]}"; do
    [ -z "${skip_why[$p]:-}" ] || { echo; echo "$(peer_label "$p") skipped: ${skip_why[$p]}."; }
  done
  echo
  echo "## xfer's memory and the CPU"
  echo
  for dataset in $datasets; do
    key=$dataset/$maxn/xfer
    if [ -n "${rsss[$key]:-}" ]; then
      # shellcheck disable=SC2086
      peak=$(maximum ${rsss[$key]})
      met=$(awk -v m="$peak" -v n="$maxn" 'BEGIN { print (n < 8 ? "target is for 8 hosts" : (m < 128 ? "yes" : "no")) }')
      cpu=$(med "$key" cpus) wall=$(med "$key" walls) busy=$(med "$key" busys)
      prox=$(med "$key" proxies) srv=$(med "$key" servers) cores=$(nproc)
      echo "- $dataset, fan-out to $maxn hosts: peak memory **$peak MiB** (max RSS over the rounds; target under 128 MiB for 8 hosts: $met);"
      echo "  client CPU **$cpu s** (user+sys) in $wall s: $(per_wall "$cpu" "$wall") of a core on average, of $cores;"
      echo "  the $maxn hosts' sshd sessions (sshd, shells, agents) $srv CPU-s, the $maxn proxies $prox CPU-s;"
      echo "  all of the benchmark's processes $(share "$cpu" "$srv" "$prox" "$wall")% of the $cores cores, the machine $busy% busy (other work included).$(verdict "$cpu" "$srv" "$prox" "$wall" "$busy")"
    else
      echo "- $dataset, fan-out to $maxn hosts: no figures (the fan-out failed)."
    fi
  done
  echo
  echo "Every tool's run, medians. Client: user+sys CPU seconds of the client and all its children"
  echo "(GNU time), and that over the wall time. Servers: what the sshds' sessions took (sshd, the"
  echo "login shell, the remote end: xfer's agent, rsync, sftp-server, pdcp), counted as sshd reaps"
  echo "them. Proxies: the $maxn wire-proxies. Share: the three over all $(nproc) cores for the wall time."
  echo "Machine: the share of all cores busy during the run (/proc/stat), other work included."
  echo
  echo "| dataset | hosts | tool | seconds | client CPU s | client cores | servers' CPU s | proxies' CPU s | benchmark's share | machine busy | peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for dataset in $datasets; do
    for n in $hosts_list; do
      for tool in xfer "${single_tools[@]}" "${active_peers[@]}"; do
        key=$dataset/$n/$tool
        [ -n "${walls[$key]:-}" ] || continue
        cpu=$(med "$key" cpus) wall=$(med "$key" walls)
        rss=-
        # shellcheck disable=SC2086
        [[ $tool != xfer* ]] || rss=$(maximum ${rsss[$key]})
        srv=$(med "$key" servers) prox=$(med "$key" proxies)
        echo "| $dataset | $n | $(peer_label "$tool") | $wall | $cpu | $(per_wall "$cpu" "$wall") | $srv | $prox | $(share "$cpu" "$srv" "$prox" "$wall")% | $(med "$key" busys)% | $rss |"
      done
    done
  done
  echo
  echo "All runs (seconds):"
  echo
  for dataset in $datasets; do
    for n in $hosts_list; do
      for tool in xfer "${single_tools[@]}" "${active_peers[@]}"; do
        key=$dataset/$n/$tool
        if [ -n "${walls[$key]:-}" ]; then echo "- $dataset, $n hosts, $(peer_label "$tool"): ${walls[$key]% }"
        elif [ -n "${failed[$key]:-}" ]; then echo "- $dataset, $n hosts, $(peer_label "$tool"): failed"; fi
      done
    done
  done
} > "$work/report.md"
cat "$work/report.md"
say "done in $(( $(date +%s) - started )) s"
[ "$any_failed" = 0 ] || { say "some rows failed (see the report)"; exit 1; }
