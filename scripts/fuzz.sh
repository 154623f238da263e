#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (their bodies: crates/headscope-fuzz) from seed corpora made of the
# repository's own files. Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#   scripts/fuzz.sh [TARGET...]        every target (or the ones named), RUNS inputs each (default 1,000,000)
#   RUNS=100000 JOBS=2 scripts/fuzz.sh  fewer inputs; JOBS processes per target (libFuzzer's -fork)
#   MAX_LEN=4096 scripts/fuzz.sh haystack  inputs of at most MAX_LEN bytes (default 65536)
# Fails on the first crash (a panic), hang (over 1 s) or out-of-memory input; libFuzzer leaves it in
# fuzz/artifacts/TARGET/. Prints one line of figures per target and writes them to fuzz/results.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-1000000}
jobs=${JOBS:-1}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
cargo run -q --release -p headscope-fuzz --example write_seeds -- fuzz/corpus
# No sanitizer: the code under test is safe Rust (and candle's safetensors parsing), whose failures are
# panics, hangs and allocations, which libFuzzer sees without one; the run is several times faster.
(cd fuzz && cargo +nightly fuzz build -O -s none)
printf 'target\truns\tseconds\tcorpus\n' > fuzz/results.tsv
for t in "${targets[@]}"; do
  log=fuzz/target/$t.log
  mkdir -p fuzz/target
  fork=()
  [ "$jobs" -gt 1 ] && fork=(-fork="$jobs")
  start=$(date +%s)
  (cd fuzz && cargo +nightly fuzz run -O -s none "$t" "corpus/$t" -- -runs="$runs" -timeout=1 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -max_len="${MAX_LEN:-65536}" "${fork[@]}") > "$log" 2>&1 || { tail -40 "$log"; echo "fuzz: $t failed (see $log)"; exit 1; }
  secs=$(( $(date +%s) - start ))
  done_runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || echo "$runs")
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  printf '%s\t%s\t%s\t%s\n' "$t" "$done_runs" "$secs" "$corpus" >> fuzz/results.tsv
  echo "fuzz: $t: $done_runs runs in $secs s, no crash, hang or OOM; corpus $corpus inputs"
done
