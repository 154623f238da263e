#!/usr/bin/env bash
# GPU fault check: a sweep that runs out of CUDA memory stops with a message naming the test, its length
# and the device's memory, keeps its finished tests, and a rerun with shorter lengths goes on from them.
# Run on the GPU machine (PyTorch there holds the memory):
#   scripts/gpu-oom-check.sh HEADSCOPE MODEL_DIR
# For each LEAVE (MiB, default "1500 900 600 400"), a PyTorch process holds all of the GPU's free memory
# but LEAVE while `headscope niah` runs 256- and 8192-token tests; where that ran out of memory, the
# same sweep is rerun with 256 and 1024 tokens in the same output folder. Logs go to $OUT/oom (or /tmp/oom).
set -u
headscope=$1 model=$2
out=${OUT:-/tmp}/oom
mkdir -p "$out"
for leave in ${LEAVE:-1500 900 600 400}; do
  dir=$out/leave-$leave
  rm -rf "$dir" /tmp/held
  python3 - "$leave" <<'PY' &
import sys, time, torch
free, total = torch.cuda.mem_get_info()
held = torch.empty(max(0, free - int(sys.argv[1]) * 2**20), dtype=torch.uint8, device="cuda")
open("/tmp/held", "w").write(f"{free} {total}\n")
time.sleep(600)
PY
  holder=$!
  while [ ! -f /tmp/held ]; do sleep 0.5; done
  niah() { "$headscope" niah --model "$model" --device cuda --dtype f32 --plain --depths 2 --lengths "$1" --out "$dir"; }
  niah 256:8192:2 > "$dir.first.log" 2>&1
  status=$?
  kept() { cat "$dir/tests.jsonl" 2> /dev/null | wc -l; }
  echo "leave $leave MiB, lengths 256 and 8192: exit $status; $(kept) tests kept"
  tail -n 2 "$dir.first.log"
  if grep -q "ran out of device memory" "$dir.first.log"; then
    niah 256:1024:2 > "$dir.rerun.log" 2>&1
    echo "  rerun with lengths 256 and 1024: exit $?; $(kept) tests in all"
    tail -n 2 "$dir.rerun.log"
  fi
  kill "$holder"
  wait "$holder" 2> /dev/null
done
