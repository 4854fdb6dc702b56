#!/usr/bin/env bash
# Serve rate of the simulator *binary* pinned to one core: starts
# `ti-sidecar simulate <platform>` under `taskset -c 0` and runs the `sim` bench against it
# (the client pinned to core 1), for one platform.
#
#   benches/sim_binary.sh threatconnect|threatq [--rich-context] [BINARY]
#
# N = TI_SIM_BENCH_INDICATORS (default 200000; with --rich-context, TI_SIM_BENCH_RICH_INDICATORS,
# default 5000). BINARY defaults to target/release/ti-sidecar (build it first).
set -euo pipefail
platform=${1:?threatconnect or threatq}
rich=${2:-}
bin=${3:-target/release/ti-sidecar}
if [[ "$rich" == "--rich-context" ]]; then
  n=${TI_SIM_BENCH_RICH_INDICATORS:-5000}; case_name="${platform}_rich_context"; flags=(--rich-context)
else
  n=${TI_SIM_BENCH_INDICATORS:-200000}; case_name="$platform"; flags=()
fi
out=$(mktemp)
taskset -c 0 "$bin" simulate "$platform" --indicators "$n" --log-level warn "${flags[@]}" >"$out" &
sim=$!
trap 'kill "$sim" 2>/dev/null; rm -f "$out"' EXIT
until [[ -s "$out" ]]; do sleep 0.2; done
addr=$(head -n1 "$out")
var=TI_SIM_BENCH_TC_ADDR; [[ "$platform" == threatq ]] && var=TI_SIM_BENCH_TQ_ADDR
export "$var=$addr" TI_SIM_BENCH_ONLY="$case_name" TI_SIM_BENCH_INDICATORS="$n" TI_SIM_BENCH_RICH_INDICATORS="$n"
cargo bench --bench sim --no-run >/dev/null 2>&1
bench=$(ls -t target/release/deps/sim-* | grep -v '\.d$' | head -n1)
taskset -c 1 "$bench" --bench "sim/$case_name\$"
