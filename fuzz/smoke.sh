#!/usr/bin/env bash
# Fuzz smoke run: every target for SECONDS (default 20) from its seed corpus.
# New inputs go to a temporary directory, so fuzz/corpus/ stays as committed.
# Exits non-zero as soon as a target crashes (the input is in fuzz/artifacts/).
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target"
    echo "fuzz smoke: $target for ${seconds}s"
    cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>"$scratch/$target.log" ||
        { tail -n 60 "$scratch/$target.log"; exit 1; }
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$scratch/$target.log"
done
