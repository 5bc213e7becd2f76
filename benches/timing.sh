# shellcheck shell=bash disable=SC2034,SC2154 # sourced: the scripts set root and bench, and use what start_bench sets
# Shell functions the benchmark scripts share (sourced, not run).

# seconds_between START END: wall seconds between two `date +%s.%N` readings, to 0.01 s.
seconds_between() { python3 -c "print(round($2 - $1, 2))"; }

# median VALUE...: the median of the values, by their first number (of an even count, the
# lower of the middle two).
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

# start_bench: builds xfer's release binary and starts the kit's loopback sshd in a new work
# directory, both undone when the script exits; sets xfer, work, config and XFER_STATE_DIR.
# Needs root (the checkout) and bench (the kit) set.
start_bench() {
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" >&2
  xfer="$root/target/release/xfer"
  work=$(mktemp -d)
  trap '"$bench/sshd-down" "$work/sshd" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  export XFER_STATE_DIR=$work/state
  "$bench/sshd-up" "$work/sshd" >/dev/null
  config=$work/sshd/ssh_config
}
