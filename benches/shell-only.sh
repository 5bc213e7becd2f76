#!/usr/bin/env bash
# xfer over a shell-only endpoint's terminal against xfer over exec, on the same file in one run.
# Two throwaway OpenSSH sshds on loopback, started with the kit in ../shared/bench (BENCH_DIR to
# point elsewhere): (a) a normal one (exec and SFTP) and (b) a shell-only one: no SFTP subsystem
# and a ForceCommand that refuses any command and any session without a terminal and otherwise
# runs a login shell, as GPU rental relays do. Both give their sessions a HOME, TMPDIR and
# XDG_RUNTIME_DIR of the benchmark's own (sshd's SetEnv, and the ForceCommand script), so
# clearing the agent's cache there never touches the real user's ~/.cache.
#
# Times (median of RUNS, a fresh destination and a fresh XFER_STATE_DIR each run, the two
# endpoints alternating) a pull and a push of one SIZE_MIB file over each endpoint, twice:
# "first run" (the agent's cache cleared before each run, so the upload of xfer's executable,
# through the terminal on (b), is included; the script checks that the upload did happen) and
# "re-run" (agent cached; checked not uploaded again). Every copy is compared byte for byte
# (cmp) and the script stops at the first difference. Every run on (b) must print xfer's
# shell-only notice and none on (a) may. Then records what `xfer doctor` measures of the
# terminal's raw throughput on (b), and times trzsz (PyPI `trzsz`, its python client driven by
# benches/trzsz_drive.py) downloading and uploading the same file through the same terminal, as
# the peer that also needs nothing but a shell (its server side installed beforehand).
#
# Writes a markdown report to REPORT (benches/results/YYYY-MM-DD-HHMM-shell-only.md, UTC) and
# prints it; progress on stderr. Everything it makes is under one /tmp directory removed at exit
# (KEEP=1 keeps it and prints where); it stops only the two sshds it started.
#
#   benches/shell-only.sh                                 # 256 MiB, 3 runs each: ~6 minutes here
#   SIZE_MIB=64 RUNS=1 REPORT=/tmp/smoke.md benches/shell-only.sh   # smoke test, under a minute
#   XFER_BIN=/path/to/xfer benches/shell-only.sh          # that binary; no cargo build
#   TRZSZ=0 benches/shell-only.sh                         # without trzsz
#   TRZSZ_VENV=/tmp/venv benches/shell-only.sh            # a venv that has trzsz + trzsz-iterm2
#
# Settings: SIZE_MIB (256), RUNS (3), XFER_BIN (else a release build of this tree), TRZSZ (1),
# XFER_COMMIT (the commit XFER_BIN was built from, for the report), TRZSZ_FLAGS ("-q -b -y":
# quiet, binary mode, overwrite), TRZSZ_VENV (else a new venv with `pip install trzsz
# trzsz-iterm2`), LIMIT_S (900: the longest one transfer may take), REPORT (- for none), KEEP,
# BENCH_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${BENCH_DIR:-$root/../shared/bench}
[ -x "$bench/sshd-up" ] || { echo "shell-only.sh: no benchmark kit at $bench (set BENCH_DIR)" >&2; exit 2; }
size_mib=${SIZE_MIB:-256}
runs=${RUNS:-3}
limit=${LIMIT_S:-900}
trzsz_flags=${TRZSZ_FLAGS:--q -b -y}
case $size_mib$runs in *[!0-9]*) echo "shell-only.sh: SIZE_MIB and RUNS are whole numbers" >&2; exit 2;; esac
if [ "$runs" -lt 1 ] || [ "$size_mib" -lt 1 ]; then echo "shell-only.sh: SIZE_MIB and RUNS are at least 1" >&2; exit 2; fi
stamp=$(date -u +%Y-%m-%d-%H%M)
report=${REPORT:-$here/results/$stamp-shell-only.md}
notice='a shell-only endpoint (no exec, no SFTP): transfers go through the terminal'

say() { echo "shell-only.sh: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

if [ -n "${XFER_BIN:-}" ]; then
  xfer=$XFER_BIN
else
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" >&2
  xfer=$root/target/release/xfer
  XFER_COMMIT=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
fi
[ -x "$xfer" ] || die "no xfer executable at $xfer"

work=$(mktemp -d /tmp/xfer-shell-bench.XXXXXX)
cleanup() {
  local dir
  for dir in "$work/sshd-exec" "$work/sshd-shell"; do
    [ ! -d "$dir" ] || "$bench/sshd-down" "$dir" >/dev/null 2>&1 || true
  done
  if [ -n "${KEEP:-}" ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
uid=$(id -u)
mkdir -p "$work/logs"

# One sshd per endpoint, each with a remote HOME, TMPDIR and XDG_RUNTIME_DIR of its own, all
# private (0700): the agent's first usable cache is then $HOME/.cache/xfer, and the second and
# third places are the benchmark's too. The fourth, /dev/shm/xfer-agent-UID, is the machine's;
# every first run checks that its upload happened (an agent cached there would skip it).
endpoint_env() { # KIND: the session's environment as NAME=VALUE words
  echo "HOME=$work/home-$1 TMPDIR=$work/tmp-$1 XDG_RUNTIME_DIR=$work/run-$1"
}
start_sshd() { # KIND (exec|shell)
  local kind=$1 dir=$work/sshd-$1 pid
  mkdir -m 700 "$work/home-$kind" "$work/tmp-$kind" "$work/run-$kind"
  # The kit writes the keys, the config and the client's ssh_config (alias "bench") and starts
  # sshd; it is stopped at once and started again on the same port with this endpoint's config.
  "$bench/sshd-up" "$dir" >/dev/null
  "$bench/sshd-down" "$dir"
  echo "SetEnv $(endpoint_env "$kind")" >> "$dir/sshd_config"
  if [ "$kind" = shell ]; then
    sed -i '/^Subsystem[[:space:]]/d' "$dir/sshd_config"
    cat > "$dir/shell-only" <<SCRIPT
#!/bin/sh
# ForceCommand of a shell-only endpoint: no command, no session without a terminal; a login shell.
if [ -n "\${SSH_ORIGINAL_COMMAND+set}" ]; then
  echo "this endpoint runs no commands: open an interactive session" >&2
  exit 1
fi
if [ ! -t 0 ]; then
  echo "this endpoint needs a terminal (ssh -t)" >&2
  exit 1
fi
export $(endpoint_env "$kind")
cd "\$HOME" || exit 1
exec /bin/bash -l
SCRIPT
    chmod 755 "$dir/shell-only"
    echo "ForceCommand $dir/shell-only" >> "$dir/sshd_config"
  fi
  /usr/sbin/sshd -t -f "$dir/sshd_config" || die "sshd rejects the $kind endpoint's config"
  # sshd re-executes itself: -f and -E take absolute paths ($work is one).
  /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
  for _ in $(seq 50); do [ -s "$dir/sshd.pid" ] && break; sleep 0.1; done
  [ -s "$dir/sshd.pid" ] || { tail -5 "$dir/sshd.log" >&2; die "the $kind sshd did not start"; }
  pid=$(cat "$dir/sshd.pid")
  say "$kind sshd (pid $pid) on 127.0.0.1:$(cat "$dir/port")"
}
start_sshd exec
start_sshd shell
exec_config=$work/sshd-exec/ssh_config
shell_config=$work/sshd-shell/ssh_config

# The endpoints are what they should be, before anything is timed.
[ "$(ssh -F "$exec_config" bench 'echo "$HOME"')" = "$work/home-exec" ] \
  || die "the exec endpoint does not run commands in the benchmark's HOME"
echo pwd | sftp -b - -F "$exec_config" bench >/dev/null 2>&1 || die "the exec endpoint refuses SFTP"
if ssh -F "$shell_config" bench true >/dev/null 2>&1; then die "the shell-only endpoint ran a command"; fi
if echo pwd | sftp -b - -F "$shell_config" bench >/dev/null 2>&1; then die "the shell-only endpoint allows SFTP"; fi
if ssh -F "$shell_config" bench </dev/null >/dev/null 2>&1; then die "the shell-only endpoint gave a session without a terminal"; fi
# shellcheck disable=SC2016 # expanded by the remote shell
login=$(printf 'echo "HOME=$HOME"; exit\r' | timeout 30 ssh -tt -F "$shell_config" bench 2>/dev/null | tr -d '\r' || true)
grep -q "HOME=$work/home-shell\$" <<<"$login" || die "the shell-only endpoint's login shell is not in the benchmark's HOME"
shm=/dev/shm/xfer-agent-$uid
if compgen -G "$shm/agent-*" >/dev/null; then
  say "note: $shm holds cached agents (not the benchmark's; left alone); a first run that finds ours there fails"
fi

# Data: one incompressible file; settled on disk before anything is timed.
say "making ${size_mib} MiB of data"
"$bench/make-data" "$work/data" big "$size_mib" >/dev/null 2>&1
src=$work/data/big.bin
bytes=$(stat -c %s "$src")
sync

clear_cache() { # KIND: every cache place the sessions of that endpoint look in, but /dev/shm
  rm -rf "$work/home-$1/.cache/xfer" "$work/run-$1/xfer" "$work/tmp-$1/xfer-agent-$uid"
}
cached_agent() { # KIND: the cached agent in the first place, or nothing
  compgen -G "$work/home-$1/.cache/xfer/agent-*" | head -1 || true
}
median() { local -a v; mapfile -t v < <(printf '%s\n' "$@" | sort -n); echo "${v[$(( (${#v[@]} - 1) / 2 ))]}"; }  # TIMES...
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v n="$bytes" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", n / s / 1e6; else printf "-" }'; }

# One timed xfer transfer; prints its wall seconds. Fails loudly on an error, a copy that
# differs, a missing or misplaced notice, or an agent upload that did (not) happen.
xfer_run() { # DIRECTION(pull|push) KIND(exec|shell) WHEN(first|rerun) N
  local direction=$1 kind=$2 when=$3 n=$4 config=$work/sshd-$2/ssh_config
  local log=$work/logs/xfer-$1-$2-$3-$4.log dst start end status=0 before=
  rm -rf "$work/local" "$work/remote" "$work/state"
  mkdir -p "$work/local" "$work/remote"
  mkdir -m 700 "$work/state"
  if [ "$when" = first ]; then
    clear_cache "$kind"
  else
    if [ -z "$(cached_agent "$kind")" ]; then  # no first run before: cache the agent, untimed
      XFER_STATE_DIR=$work/state timeout "$limit" "$xfer" pull -q -F "$config" "bench:$work/sshd-$kind/port" "$work/local/warm" >&2 \
        || die "caching the agent on the $kind endpoint failed"
      rm -f "$work/local/warm"
    fi
    before=$(stat -c '%i %Y' "$(cached_agent "$kind")")
  fi
  sync
  start=$(date +%s.%N)
  case $direction in
    pull) dst=$work/local/big.bin
          XFER_STATE_DIR=$work/state timeout "$limit" "$xfer" pull -F "$config" "bench:$src" "$dst" >"$log" 2>&1 || status=$? ;;
    push) dst=$work/remote/big.bin
          XFER_STATE_DIR=$work/state timeout "$limit" "$xfer" push -F "$config" "$src" "bench:$dst" >"$log" 2>&1 || status=$? ;;
  esac
  end=$(date +%s.%N)
  if [ "$status" -ne 0 ]; then cat "$log" >&2; die "xfer $direction over $kind ($when run $n) exited $status"; fi
  cmp "$src" "$dst" >&2 || die "xfer $direction over $kind ($when run $n): the copy differs from the source"
  if [ "$kind" = shell ]; then
    grep -qF "$notice" "$log" || { cat "$log" >&2; die "xfer $direction over the shell-only endpoint did not say it is one"; }
  elif grep -qF -e "$notice" -e "using SFTP" "$log"; then
    cat "$log" >&2; die "xfer $direction over exec did not use the agent over exec"
  fi
  if [ "$when" = first ]; then
    [ -n "$(cached_agent "$kind")" ] || die "xfer $direction over $kind, first run: no agent was uploaded to the benchmark's HOME (one cached in $shm?)"
  else
    [ "$(stat -c '%i %Y' "$(cached_agent "$kind")")" = "$before" ] || die "xfer $direction over $kind, re-run: the agent was uploaded again"
  fi
  seconds "$start" "$end"
}

declare -A median_of all_of
for direction in pull push; do
  for when in first rerun; do
    declare -A times=([exec]="" [shell]="")
    for n in $(seq "$runs"); do
      for kind in exec shell; do  # alternating, so both see the same background load
        t=$(xfer_run "$direction" "$kind" "$when" "$n")
        say "xfer $direction, $kind, $when run $n: $t s"
        times[$kind]+="$t "
      done
    done
    for kind in exec shell; do
      # shellcheck disable=SC2086 # one word per time
      median_of[$direction-$when-$kind]=$(median ${times[$kind]})
      all_of[$direction-$when-$kind]=${times[$kind]% }
    done
  done
done

# What doctor measures of the terminal itself, each way (agent cached by now).
say "xfer doctor on the shell-only endpoint"
doctor_down=- doctor_up=- doctor_mode=-
if XFER_STATE_DIR=$work/state timeout "$limit" "$xfer" doctor --json -F "$shell_config" bench >"$work/doctor.json" 2>"$work/logs/doctor.log"; then :; fi
if read -r doctor_mode doctor_down doctor_up < <(python3 - "$work/doctor.json" <<'PY' 2>>"$work/logs/doctor.log"
import json, sys
host = json.load(open(sys.argv[1]))[0]
rate = lambda key: "%.1f" % (host[key] / 1e6) if host.get(key) else "-"
print(host.get("mode", "-").replace(" ", "_"), rate("terminal_down_bytes_per_second"), rate("terminal_up_bytes_per_second"))
PY
); then doctor_mode=${doctor_mode//_/ }; else say "doctor gave no report:"; cat "$work/logs/doctor.log" >&2; fi

# The terminal's own ceiling, before xfer or any framing: the same number of bytes down one
# OpenSSH connection of the exec endpoint, through a raw terminal (`ssh -tt`, `stty raw`) and
# without one (`ssh -T`).
raw_stream() { # -tt|-T: prints wall seconds
  local start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2029 # the byte count is expanded here, on purpose
  ssh "$1" -e none -F "$exec_config" bench "stty raw -echo 2>/dev/null; head -c $bytes /dev/zero | tr '\\000' a" \
    </dev/null >"$work/raw.out" 2>/dev/null || die "the raw stream with ssh $1 failed"
  end=$(date +%s.%N)
  [ "$(wc -c <"$work/raw.out")" -ge "$bytes" ] || die "the raw stream with ssh $1 came short"
  rm -f "$work/raw.out"
  seconds "$start" "$end"
}
say "raw streams down one connection, with and without a terminal"
declare -A raw_median raw_all
for mode in -tt -T; do
  raw_times=
  for ((n = 1; n <= runs; n++)); do raw_times+="$(raw_stream "$mode") "; done
  # shellcheck disable=SC2086 # one word per time
  raw_median[$mode]=$(median $raw_times)
  raw_all[$mode]=${raw_times% }
done

# trzsz: the same file down (tsz) and up (trz) through the same terminal.
trzsz_why=
trzsz_version=
if [ "${TRZSZ:-1}" = 0 ]; then
  trzsz_why="trzsz not measured: TRZSZ=0"
else
  venv=${TRZSZ_VENV:-$work/trzsz-venv}
  if [ -z "${TRZSZ_VENV:-}" ]; then
    say "installing trzsz (pip) into a venv"
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q trzsz trzsz-iterm2; } >"$work/logs/pip.log" 2>&1; then
      trzsz_why="trzsz not measured: \`pip install trzsz trzsz-iterm2\` failed ($(tail -1 "$work/logs/pip.log"))"
    fi
  fi
  if [ -z "$trzsz_why" ]; then
    if ! [ -x "$venv/bin/tsz" ] || ! [ -x "$venv/bin/trz" ] || ! "$venv/bin/python" -c 'import trzsz.iterm2.main' 2>/dev/null; then
      trzsz_why="trzsz not measured: TRZSZ_VENV has no tsz, trz or trzsz-iterm2 (pip install trzsz trzsz-iterm2)"
    fi
  fi
  if [ -z "$trzsz_why" ]; then
    trzsz_version=$("$venv/bin/pip" show trzsz 2>/dev/null | sed -n 's/^Version: //p')
  fi
fi
trzsz_run() { # download|upload N: prints wall seconds, or fails
  local mode=$1 n=$2 log=$work/logs/trzsz-$1-$2.log start end dst status=0
  rm -rf "$work/local" "$work/remote" "$work/trzsz-tmp"
  mkdir -p "$work/local" "$work/remote" "$work/trzsz-tmp"
  sync
  start=$(date +%s.%N)
  # shellcheck disable=SC2086 # TRZSZ_FLAGS is a list of words
  case $mode in
    download) dst=$work/local/big.bin
              TMPDIR=$work/trzsz-tmp timeout "$limit" "$venv/bin/python" "$here/trzsz_drive.py" download "$shell_config" bench \
                "$src" "$work/local" "$venv/bin" $trzsz_flags >"$log" 2>&1 || status=$? ;;
    upload)   dst=$work/remote/big.bin
              TMPDIR=$work/trzsz-tmp timeout "$limit" "$venv/bin/python" "$here/trzsz_drive.py" upload "$shell_config" bench \
                "$work/remote" "$src" "$venv/bin" $trzsz_flags >"$log" 2>&1 || status=$? ;;
  esac
  end=$(date +%s.%N)
  [ "$status" -eq 0 ] || { tail -20 "$log" >&2; return 1; }
  cmp "$src" "$dst" >&2 || { say "trzsz $mode run $n: the copy differs from the source"; return 1; }
  seconds "$start" "$end"
}
declare -A trzsz_median trzsz_all
if [ -z "$trzsz_why" ]; then
  for mode in download upload; do
    list=
    for n in $(seq "$runs"); do
      if ! t=$(trzsz_run "$mode" "$n"); then
        trzsz_why="trzsz not measured: its $mode through the terminal failed (see above); xfer's figures stand"
        break 2
      fi
      say "trzsz $mode run $n: $t s"
      list+="$t "
    done
    # shellcheck disable=SC2086 # one word per time
    trzsz_median[$mode]=$(median $list)
    trzsz_all[$mode]=${list% }
  done
fi
[ -z "$trzsz_why" ] || say "$trzsz_why"

# The report.
cell() { echo "${1} s ($(mbps "$1") MB/s)"; }
ratio() { awk -v e="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.2f", e / t; else printf "-" }'; }  # throughput T / throughput E = time E / time T
met() { awk -v r="$1" 'BEGIN { print (r >= 0.5 ? "yes" : "no") }'; }
grep -hF "$notice" "$work/logs/"xfer-*-shell-*.log > "$work/notices" || true
shown_notice=$(sed -E '1!d; s/127\.0\.0\.1:[0-9]+/127.0.0.1:PORT/' "$work/notices")
notice_runs=$(grep -lF "$notice" "$work/logs/"xfer-*-shell-*.log | wc -l)
shell_runs=$(find "$work/logs" -name 'xfer-*-shell-*.log' | wc -l)
{
  echo "# xfer through a shell-only endpoint's terminal against xfer over exec ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr))"
  echo
  echo "Started $stamp UTC (\`benches/shell-only.sh\`). $("$xfer" --version) (commit ${XFER_COMMIT:-not given}), binary sha256 $(sha256sum "$xfer" | cut -c1-12);"
  echo "$(ssh -V 2>&1 | cut -d, -f1) (client and both loopback sshds); CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1);"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "One file of $size_mib MiB (the kit's \`make-data big\`), median of $runs runs, each into a fresh"
  echo "destination with a fresh state directory, the two endpoints alternating. Exec: the kit's sshd"
  echo "(exec and SFTP). Terminal: the same sshd config without \`Subsystem sftp\` and with a"
  echo "\`ForceCommand\` that refuses commands and sessions without a terminal and runs \`bash -l\`."
  echo "First run: the agent's cache cleared before each run (its upload is included; on the terminal"
  echo "as base64 chunks). Re-run: the agent cached. Every copy identical to the source (cmp)."
  echo "Both endpoints' sessions have a HOME of the benchmark's (no dotfiles in it)."
  echo
  echo "| scenario | xfer over exec | xfer over the terminal | terminal ÷ exec (throughput) | target | met |"
  echo "|---|---|---|---|---|---|"
  for direction in pull push; do
    for when in first rerun; do
      e=${median_of[$direction-$when-exec]} t=${median_of[$direction-$when-shell]}
      r=$(ratio "$e" "$t")
      case $when in first) what="first run (agent uploaded)" ;; rerun) what="re-run (agent cached)" ;; esac
      echo "| $direction, $what | $(cell "$e") | $(cell "$t") | ${r}x | ≥ 0.50x | $(met "$r") |"
    done
  done
  echo
  echo "All runs (seconds):"
  echo
  for direction in pull push; do
    for when in first rerun; do
      for kind in exec shell; do
        echo "- $direction, $when, $kind: ${all_of[$direction-$when-$kind]}"
      done
    done
  done
  echo
  echo "xfer's notice on the shell-only endpoint, in $notice_runs of $shell_runs runs there (and in none over exec):"
  echo "\`${shown_notice:-none}\`"
  echo
  echo "## The terminal's raw throughput (\`xfer doctor --json\` on the shell-only endpoint)"
  echo
  echo "| direction | doctor's measure | xfer, re-run (median) |"
  echo "|---|---|---|"
  echo "| from the host (pull) | $doctor_down MB/s | $(mbps "${median_of[pull-rerun-shell]}") MB/s |"
  echo "| to the host (push) | $doctor_up MB/s | $(mbps "${median_of[push-rerun-shell]}") MB/s |"
  echo
  echo "doctor's mode: $doctor_mode."
  echo
  echo "## The terminal's own ceiling"
  echo
  echo "The same $size_mib MiB of text down one OpenSSH connection of the exec endpoint (OpenSSH's"
  echo "client, its default cipher), with no xfer and no framing: through a raw terminal and without one."
  echo
  echo "| stream | time | throughput | xfer's terminal pull, re-run, ÷ this |"
  echo "|---|---|---|---|"
  for mode in -tt -T; do
    case $mode in -tt) what="\`ssh -tt\` (terminal, raw)" ;; -T) what="\`ssh -T\` (no terminal)" ;; esac
    echo "| $what | ${raw_median[$mode]} s | $(mbps "${raw_median[$mode]}") MB/s | $(ratio "${raw_median[$mode]}" "${median_of[pull-rerun-shell]}")x |"
  done
  echo
  echo "Raw runs (seconds): -tt ${raw_all[-tt]}; -T ${raw_all[-T]}."
  echo
  echo "## trzsz through the same terminal"
  echo
  if [ -n "$trzsz_why" ]; then
    echo "$trzsz_why."
  else
    echo "trzsz $trzsz_version (PyPI \`trzsz\`: server side \`tsz\`/\`trz\` typed at the shell-only"
    echo "endpoint's prompt with \`$trzsz_flags\`; client side \`trzsz-iterm2\` driven by"
    echo "\`benches/trzsz_drive.py\` as a terminal emulator would, over \`ssh -tt\`). trzsz does not"
    echo "install itself: its server side was there beforehand, so it compares with xfer's re-run."
    echo "Time: login, transfer and logout. Every copy identical to the source (cmp)."
    echo
    echo "| direction | trzsz | xfer over the terminal, re-run | xfer ÷ trzsz (throughput) |"
    echo "|---|---|---|---|"
    for mode in download upload; do
      case $mode in download) direction=pull ;; upload) direction=push ;; esac
      x=${median_of[$direction-rerun-shell]} z=${trzsz_median[$mode]}
      echo "| $direction ($([ $mode = download ] && echo tsz || echo trz)) | $(cell "$z") | $(cell "$x") | $(ratio "$z" "$x")x |"
    done
    echo
    echo "trzsz runs (seconds): download ${trzsz_all[download]}; upload ${trzsz_all[upload]}."
  fi
} > "$work/report.md"
if [ "$report" != - ]; then
  mkdir -p "$(dirname "$report")"
  cp "$work/report.md" "$report"
  say "report written to $report"
fi
cat "$work/report.md"
