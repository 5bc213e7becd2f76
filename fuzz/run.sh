#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain and
# runs each one for a while, starting from its committed seed corpus. Exits non-zero when the
# build fails or any target finds a crash, a hang or an out-of-memory input.
#
#   fuzz/run.sh                           every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=3600 fuzz/run.sh journal one target for an hour
#
# Environment:
#   FUZZ_SECONDS  how long each target runs (default 20)
#   FUZZ_JOBS     how many targets run at once, one core each (default: the number of cores)
#   FUZZ_TIMEOUT  seconds one input may take before it counts as a hang (default 10)
#   FUZZ_WORKDIR  where corpora, logs and crash artifacts go (default: a new temporary
#                 directory); reuse one to carry a grown corpus from one run to the next
#   FUZZ_ARGS     extra libFuzzer flags for every target, e.g. "-max_len=4096"
#
# The committed seeds in fuzz/corpus/<target>/ are only read, never written. How it works and
# why these flags: fuzz/README.md.
set -euo pipefail

# SanitizerCoverage as `cargo fuzz build --sanitizer none` sets it up, all stable -C options:
# libFuzzer's inline 8-bit edge counters and PC table, comparison tracing (so the fuzzer learns
# the magic numbers and keywords the decoders compare against), stack depth, and no branch
# folding (more distinct edges). `--cfg fuzzing` as cargo-fuzz passes it.
sancov=(
  --cfg fuzzing
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
)

# Run by cargo as RUSTC_WRAPPER (set below): the flags go to the crate under test (xfer) and the
# targets (xfer-fuzz) only. Every other crate is compiled exactly as `cargo test` compiles it,
# so the build reuses those artifacts instead of compiling ~300 dependencies again.
if [ "${XFER_FUZZ_RUSTC_WRAPPER:-}" = 1 ]; then
  inner=()
  [ -n "${XFER_FUZZ_INNER_WRAPPER:-}" ] && inner=("$XFER_FUZZ_INNER_WRAPPER")
  case "${CARGO_PKG_NAME:-}/${CARGO_CRATE_NAME:-}" in
    xfer/build_script_* | xfer-fuzz/build_script_*) ;;
    xfer/* | xfer-fuzz/*) exec "${inner[@]}" "$@" "${sancov[@]}" ;;
  esac
  exec "${inner[@]}" "$@"
fi

caller_dir=$PWD
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller_dir/$1" ;; esac; }
cd "$(dirname "$0")"
fuzz_dir=$PWD
repo=$(cd .. && pwd)

seconds=${FUZZ_SECONDS:-20}
parallel=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
timeout=${FUZZ_TIMEOUT:-10}
read -r -a extra_args <<<"${FUZZ_ARGS:-}"

# Every [[bin]] of fuzz/Cargo.toml is a target.
mapfile -t all_targets < <(awk '
  /^\[\[bin\]\]/ { in_bin = 1; next }
  /^\[/ { in_bin = 0 }
  in_bin && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print }
' Cargo.toml)
if [ $# -gt 0 ]; then
  targets=("$@")
  for target in "${targets[@]}"; do
    if ! printf '%s\n' "${all_targets[@]}" | grep -qxF -- "$target"; then
      echo "fuzz/run.sh: no fuzz target '$target' (targets: ${all_targets[*]})" >&2
      exit 2
    fi
  done
else
  targets=("${all_targets[@]}")
fi

# The dev profile of ../Cargo.toml (its [profile.dev] tables), given to cargo as configuration:
# with it, and the main package's target directory, every dependency has the same profile,
# features permitting, as in `cargo test`. fuzz/Cargo.toml's own [profile.dev.package.*]
# entries then optimise xfer and the targets.
if [ -n "${FUZZ_WORKDIR:-}" ]; then
  work=$(absolute "$FUZZ_WORKDIR")
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/xfer-fuzz.XXXXXX")
fi
awk '
  /^\[/ { keep = ($0 ~ /^\[profile\.dev[].]/) }
  keep
' "$repo/Cargo.toml" >"$work/profile.toml"
target_dir=$(absolute "${CARGO_TARGET_DIR:-$repo/target}")

bin_args=()
for target in "${targets[@]}"; do bin_args+=(--bin "$target"); done
start=$SECONDS
echo "fuzz: building ${#targets[@]} target(s), instrumented, into $target_dir/debug"
XFER_FUZZ_INNER_WRAPPER=${RUSTC_WRAPPER:-} XFER_FUZZ_RUSTC_WRAPPER=1 \
  RUSTC_WRAPPER="$fuzz_dir/run.sh" \
  cargo build --locked --config "$work/profile.toml" --target-dir "$target_dir" "${bin_args[@]}" \
  2>&1 | tee "$work/build.log"
compiled=$(grep -c '^ *Compiling ' "$work/build.log" || true)
echo "fuzz: built in $((SECONDS - start)) s ($compiled crates compiled)"
if [ "$compiled" -gt 10 ]; then
  echo "fuzz: (few crates are compiled when \`cargo test\` has built the dependencies into" \
    "$target_dir first; see fuzz/README.md)"
fi
bin_dir=$target_dir/debug

echo "fuzz: ${#targets[@]} target(s), $seconds s each, $parallel at a time; logs, corpora and" \
  "crash artifacts in $work"

# One target: new inputs go to $work/<target>/corpus (the first directory, the one libFuzzer
# writes to), the seeds are read from fuzz/corpus/<target> (the second).
run_one() {
  local target=$1 dir=$work/$1 status=0
  mkdir -p "$dir/corpus" "$dir/artifacts"
  local seeds=()
  [ -d "corpus/$target" ] && seeds=("$fuzz_dir/corpus/$target")
  "$bin_dir/$target" \
    -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "${extra_args[@]}" \
    "$dir/corpus" "${seeds[@]}" >"$dir/log" 2>&1 || status=$?
  echo "$status" >"$dir/status"
}

for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  run_one "$target" &
done
wait

# One line per target: executions, then edges covered (cov), features (ft) and corpus size,
# from the end of the first pass over the seeds (INITED) to the end of the run.
field() { sed -n "s/.* $1: \([0-9]*\).*/\1/p" <<<"$2"; }
corpus_of() { sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$1"; }
failed=0
for target in "${targets[@]}"; do
  dir=$work/$target
  status=$(cat "$dir/status" 2>/dev/null || echo "?")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -n 1)
  first=$(grep -m 1 -E '^#[0-9]+[[:space:]]+INITED' "$dir/log" || true)
  last=$(grep -E '^#[0-9]+[[:space:]]+(INITED|NEW|REDUCE|pulse|DONE)' "$dir/log" | tail -n 1 || true)
  coverage="cov $(field cov "$first")->$(field cov "$last")"
  coverage+=" ft $(field ft "$first")->$(field ft "$last")"
  coverage+=" corpus $(corpus_of "$first")->$(corpus_of "$last")"
  if [ "$status" = 0 ]; then
    printf 'fuzz: %-12s ok     %s runs (%s/s), %s\n' "$target" "${runs:-?}" "${rate:-?}" \
      "$coverage"
  else
    failed=1
    artifact=$(find "$dir/artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' \
      -o -name 'oom-*' -o -name 'leak-*' \) | head -n 1)
    printf 'fuzz: %-12s FAILED (exit %s) after %s runs, %s\n' "$target" "$status" \
      "${runs:-?}" "$coverage"
    echo "      input:     ${artifact:-none written}"
    echo "      log:       $dir/log"
    echo "      reproduce: $bin_dir/$target ${artifact:-<input>}"
    grep -m 1 -B 2 -A 12 -E 'panicked at|ERROR: libFuzzer' "$dir/log" | sed 's/^/      | /' ||
      true
  fi
done
echo "fuzz: done in $((SECONDS - start)) s; logs, corpora and artifacts in $work"
exit "$failed"
