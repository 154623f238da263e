#!/usr/bin/env bash
# HeadScope against the official detection loop (and the loop with the obvious fixes, bench/fixed_loop.py) on full-size checkpoints, on the lent GPU machine
# (PyTorch + transformers, no Rust, no network). A CUDA build of `headscope` travels as
# .carry/headscope.gz; checkpoints are random weights at the real configs of bench/configs, built
# there by bench/make_checkpoint.py into $CKPT (/root/ckpt; kept while the machine stays warm).
# Results go to $OUT (the run tool's output folder) or .carry/out.
#
#   scripts/gpu-bench.sh smoke            a minute: bf16 load of the lab model on CUDA, a tiny random
#                                          model through both sides and the report (checks the set-up)
#   scripts/gpu-bench.sh bench MODEL [LENGTHS]
#                                          both sides on MODEL (a folder of bench/configs, e.g. llama-2-7b,
#                                          mistral-7b-v0.2) at LENGTHS (4096,16384,32768,65536): per NIAH
#                                          test, prefill, decode step, peak memory, argmax agreement, and
#                                          HeadScope's longest context next to the physical limit
#   scripts/gpu-bench.sh agree MODEL...   HF agreement at $AGREE_CONTEXT (4096) tokens, bf16, with the
#                                          f32 noise floor where it fits (llama-2-7b mistral-7b-v0.2
#                                          qwen1.5-14b; mixtral-8x7b-v0.1 needs an H200 and 100 GB of disk)
#   scripts/gpu-bench.sh table1 MODEL...  each model loads, runs a short detect sweep, and a masked sweep
#                                          (uniform and zero) on the same tests; masked.md says how many
#                                          answers masking changed (checkpoints are deleted after each model)
#   scripts/gpu-bench.sh grid [MODEL]     the official code's default detection grid (llama-2-7b-80k: 20 lengths
#                                          1K-50K, 10 depths) timed end to end by `headscope bench --grid
#                                          official`, start-up included; the official loop's time for it computed
#                                          from one measured test at GRID_SAMPLES lengths (bench/grid_estimate.py)
#   scripts/gpu-bench.sh kv MODEL [LENGTHS] decode step and KV memory with the whole KV cache and with a
#                                          quarter of the KV heads whole (issue 20; 16384,65536)
#   scripts/gpu-bench.sh wgsl [MODEL...]  the page's WGSL forward natively through Vulkan (its parallel
#                                          kernel set with both prefill product tiles, WGSL_GEMM=64,128 (coop:
#                                          the cooperative-matrix tile, where the adapter has it);
#                                          WGSL_SERIAL=1 adds the serial set), beside the CUDA
#                                          path, both as means of 3 runs, on the lab model and MODEL
#                                          (smollm-135m qwen2.5-0.5b) at $WGSL_LENGTHS (1000 4000) (issue 25), and
#                                          the page's default sweep on the lab model through both, timed whole;
#                                          carry .carry/wgpu-bench.xz (headscope-gpu's bench example,
#                                          stripped) and .gl/ (the Vulkan loader as Debian packages: README
#                                          of the device tool, "Headless rendering"); WGPU_BENCH=PATH.xz
#                                          times another build of it (an A/B on one machine)
#   scripts/gpu-bench.sh report           results.md over every model folder in $OUT
#
# Build the binary first, on the Rust machine (see README, "Full-size checkpoints on CUDA"):
#   source ~/.cache/cuda13/env.sh && cargo build --release -p headscope-cli --features cuda &&
#   mkdir -p .carry && gzip -9c target/release/headscope > .carry/headscope.gz
# and run with the run tool: command "scripts/gpu-bench.sh bench llama-2-7b", carry [".carry/headscope.gz"].
set -euo pipefail
# HEADSCOPE_BIN, PYTHON and DEVICE=cpu allow a dry run of the script's logic on a machine without a GPU.
bin=${HEADSCOPE_BIN:-.carry/headscope}
# Unpack when missing or older than the carried archive (a warm machine keeps the last one).
if [ -z "${HEADSCOPE_BIN:-}" ] && { [ ! -x "$bin" ] || [ .carry/headscope.gz -nt "$bin" ]; }; then
  gunzip -c .carry/headscope.gz > "$bin"
  chmod +x "$bin"
fi
out=${OUT:-.carry/out}
ckpt=${CKPT:-/root/ckpt}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out" "$ckpt"

# nvidia-smi samples of memory.used (MiB) every 50 ms into $1, in the background; prints its pid.
smi_start() {
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$1" 2> /dev/null &
    echo $!
  else
    echo ""
  fi
}
smi_stop() { [ -z "$1" ] || kill "$1" 2> /dev/null || true; }

checkpoint() { # MODEL: make the random-weight checkpoint once
  local m=$1
  [ -f "bench/configs/$m/config.json" ] || { echo "no bench/configs/$m/config.json" >&2; exit 2; }
  if [ ! -f "$ckpt/$m/model.safetensors.index.json" ] && [ ! -f "$ckpt/$m/model.safetensors" ]; then
    # CKPT_STREAM=DIR draws the checkpoint a layer at a time, shards that do not fit on the disk going to
    # DIR (Mixtral-8x7B on an nvidia-h200: CKPT_STREAM=/dev/shm/overflow; see bench/make_checkpoint.py).
    $py bench/make_checkpoint.py --config "bench/configs/$m/config.json" --out "$ckpt/$m" --device "$device" \
      ${CKPT_STREAM:+--stream --overflow "$CKPT_STREAM/$m"} 2>&1 | grep -v "Writing model shards"
  fi
}

both_sides() { # NAME MODEL_DIR LENGTHS [extra headscope bench flags...]
  local name=$1 dir=$2 lengths=$3
  shift 3
  local d="$out/$name" pid
  mkdir -p "$d"
  nvidia-smi > "$d/nvidia-smi.txt" 2>&1 || true
  pid=$(smi_start "$d/smi-headscope.csv")
  "$bin" bench --model "$dir" --device "$device" --lengths "$lengths" --steps "${STEPS:-20}" "$@" \
    --json "$d/headscope.json" --save-prompts "$d/prompts.json" 2>&1 | tee "$d/headscope.log"
  smi_stop "$pid"
  pid=$(smi_start "$d/smi-official.csv")
  $py bench/official_loop.py --model "$dir" --device "$device" --prompts "$d/prompts.json" --json "$d/official.json" 2>&1 \
    | grep -v "Loading weights" | tee "$d/official.log"
  smi_stop "$pid"
  # The loop with the obvious fixes (issue 24), on the same prompts; FIXED=0 leaves it out.
  if [ "${FIXED:-1}" = 1 ]; then
    $py bench/fixed_loop.py --model "$dir" --device "$device" --prompts "$d/prompts.json" --json "$d/fixed.json" 2>&1 \
      | grep -v "Loading weights\|FutureWarning\|return forward_call" | tee "$d/fixed.log"
  fi
  $py bench/bench_report.py "$d" --out "$d/results.md" > /dev/null
  cat "$d/results.md"
}

case "${1:?smoke, bench MODEL, grid [MODEL], kv MODEL, agree MODEL..., table1 MODEL..., or report}" in
  smoke)
    # The known CUDA bug: auto dtype (bf16) loading the lab model's f16 weights.
    "$bin" generate --model public/models/lab --device "$device" --prompt "In the beginning was the Word" --max-new-tokens 12 \
      2>&1 | tee "$out/smoke-generate.log"
    tiny=/tmp/headscope-smoke
    mkdir -p "$tiny/config"
    cat > "$tiny/config/config.json" << 'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
 "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 32000,
 "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2}
EOF
    [ -f "$tiny/model/config.json" ] || $py bench/make_checkpoint.py --config "$tiny/config/config.json" --out "$tiny/model" --shard-size 20MB --device "$device" \
      2>&1 | grep -v "Writing model shards"
    both_sides smoke "$tiny/model" 1024,4096 --max-context --memory-gib 4
    ;;
  bench)
    m=${2:?model: a folder of bench/configs}
    checkpoint "$m"
    # SCORE_BUDGET_MIB tries another prefill score budget (headscope bench --score-budget-mib); SWEEP_DEPTHS=N
    # also times a depth sweep of N depths per length with prefix reuse (headscope bench --sweep-depths).
    both_sides "$m" "$ckpt/$m" "${3:-4096,16384,32768,65536}" --max-context ${SCORE_BUDGET_MIB:+--score-budget-mib "$SCORE_BUDGET_MIB"} \
      ${SWEEP_DEPTHS:+--sweep-depths "$SWEEP_DEPTHS"}
    ;;
  grid)
    m=${2:-llama-2-7b-80k}
    checkpoint "$m"
    d="$out/$m-grid"
    mkdir -p "$d"
    rm -rf "$d/run"
    "$bin" bench --model "$ckpt/$m" --device "$device" --grid official --grid-out "$d/run" --json "$d/grid.json" 2>&1 | tee "$d/grid.log" | grep -v "^\["
    # The official loop (and the fixed one) on one test at each of a few of the grid's lengths, on the
    # prompts HeadScope builds for them; the grid's time is computed from those.
    "$bin" bench --model "$ckpt/$m" --device "$device" --lengths "${GRID_SAMPLES:-1000,13895,26789,38684,50000}" --steps 20 \
      --json "$d/headscope.json" --save-prompts "$d/prompts.json" > "$d/samples.log" 2>&1
    $py bench/official_loop.py --model "$ckpt/$m" --device "$device" --prompts "$d/prompts.json" --json "$d/official.json" 2>&1 \
      | grep -v "Loading weights" | tee "$d/official.log"
    $py bench/fixed_loop.py --model "$ckpt/$m" --device "$device" --prompts "$d/prompts.json" --json "$d/fixed.json" 2>&1 \
      | grep -v "Loading weights\|FutureWarning\|return forward_call" | tee "$d/fixed.log"
    $py bench/grid_estimate.py --grid "$d/grid.json" --official "$d/official.json" --fixed "$d/fixed.json" | tee "$d/estimate.md"
    ;;
  kv)
    # The retrieval-head KV cache at long context (issue 20): decode step time and KV memory with the
    # whole cache and with a quarter of the KV heads whole (random: a random-weight checkpoint has no
    # retrieval heads; the cost does not depend on which heads), the rest a sink of 4 and KV_WINDOW.
    m=${2:?model: a folder of bench/configs}
    checkpoint "$m"
    kv_heads=$($py -c "import json; c = json.load(open('bench/configs/$m/config.json')); print(c['num_hidden_layers'] * c.get('num_key_value_heads', c['num_attention_heads']))")
    d="$out/$m-kv"
    mkdir -p "$d"
    for policy in full "random:$((kv_heads / 4)):0"; do
      name=${policy%%:*}
      "$bin" bench --model "$ckpt/$m" --device "$device" --lengths "${3:-16384,65536}" --steps "${STEPS:-20}" \
        --kv-cache "$policy" --kv-window "${KV_WINDOW:-256}" --json "$d/$name.json" 2>&1 | tee "$d/$name.log"
    done
    ;;
  wgsl)
    shift
    [ $# -gt 0 ] || set -- smollm-135m qwen2.5-0.5b
    wb=/root/wgpu-bench
    $py -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "${WGPU_BENCH:-.carry/wgpu-bench.xz}" "$wb"
    chmod +x "$wb"
    # Machines with a Vulkan loader (this one's lavapipe, for a dry run) need no .gl/.
    for f in .gl/*.deb; do if [ -e "$f" ]; then dpkg -x "$f" /; fi; done
    ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
    for m in lab "$@"; do
      dir=${LAB_DIR:-public/models/lab}
      if [ "$m" != lab ]; then checkpoint "$m"; dir=$ckpt/$m; fi
      for n in ${WGSL_LENGTHS:-1000 4000}; do
        echo "-- $m at $n"
        BENCH_CPU=0 BENCH_SERIAL=${WGSL_SERIAL:-0} BENCH_GEMM=${WGSL_GEMM:-64,128} "$wb" "$dir" "$n" 16 3 2>&1 | grep -E "adapter|cooperative|gpu \(|rror|profile| x[0-9]" | sed 's/^/   /' || true
        "$bin" bench --model "$dir" --device "$device" --lengths "$n" --steps 16 --repeats 3 2>&1 | grep -E "^\| [0-9]|rror" | head -1 | sed "s/^/   $device: /" || true
      done
      if [ "$m" = lab ]; then
        # The page's default sweep (its form's defaults: 256:1024:3 tokens, 5 depths, 32 new tokens, the
        # paper's needle in the village haystack) through the same engine, start-up and loading included.
        for dev in wgpu "$device"; do
          rm -rf /tmp/default-sweep
          s=$(date +%s.%N)
          "$bin" detect --model "$dir" --device "$dev" --plain --lengths 256:1024:3 --depths 5 --max-new-tokens 32 \
            --out /tmp/default-sweep 2>&1 | grep -E "pass rate|rror" | tail -1 | sed "s/^/   default sweep on $dev: /" || true
          echo "   default sweep on $dev: $($py -c "import time; print(f'{time.time() - $s:.2f}')") s wall, start-up included"
        done
      fi
    done
    ;;
  agree)
    shift
    [ $# -gt 0 ] || set -- llama-2-7b mistral-7b-v0.2 qwen1.5-14b
    for m in "$@"; do
      d="$out/$m"
      a=${AGREE_DIR:-/root/agree}
      mkdir -p "$d"
      rm -rf "${a:?}/$m"
      # AGREE_LAYERS keeps only the first N layers of each config (its case is then named MODEL-N-layers);
      # AGREE_DTYPE=float32 compares both sides in f32 (no rounding noise; the noise floor is bf16's).
      case_name=$m${AGREE_LAYERS:+-$AGREE_LAYERS-layers}
      $py bench/hf_agreement.py --config "bench/configs/$m/config.json" --context "${AGREE_CONTEXT:-4096}" --dtype "${AGREE_DTYPE:-bfloat16}" \
        --device "$device" --noise-floor --tokenizer public/models/lab/tokenizer.json ${AGREE_LAYERS:+--layers "$AGREE_LAYERS"} \
        --out "$a" 2>&1 | grep -v "Writing model shards" | tee "$d/hf-agreement.log"
      # Exit status 1 means a disagreement: keep going, the report shows it.
      "$bin" hf-agreement "$a/$case_name/expected.json" --device "$device" --json "$d/agreement.json" 2>&1 | tee -a "$d/hf-agreement.log" || true
      rm -rf "${a:?}/$case_name" # one model on disk at a time
    done
    ;;
  table1)
    shift
    [ $# -gt 0 ] || { echo "table1 needs model names (folders of bench/configs)" >&2; exit 2; }
    for m in "$@"; do
      d="$out/$m"
      mkdir -p "$d"
      checkpoint "$m"
      sweep=(--model "$ckpt/$m" --device "$device" --lengths "${TABLE1_LENGTH:-2048}" --depths 3 --max-new-tokens 16)
      # Random weights find no needle: the sweep shows the model loads and runs, not what it retrieves.
      "$bin" detect "${sweep[@]}" --out "$d/detect" 2>&1 | tail -n 4 | tee "$d/table1.log"
      for mode in uniform zero; do
        # 64 heads: enough to move a random model's near-flat logits, and drawn (seeded) from every layer.
        "$bin" niah "${sweep[@]}" --mask-random 64 --scores "$d/detect/head_scores.json" --seed 1 --mask-mode "$mode" \
          --out "$d/masked-$mode" 2>&1 | tail -n 2 | tee -a "$d/table1.log"
      done
      $py - "$d" "$m" << 'EOF2' | tee -a "$out/masked.md"
import json, sys
d, name = sys.argv[1], sys.argv[2]
def answers(run):
    return {r["id"]: r["answer"] for r in map(json.loads, open(f"{d}/{run}/tests.jsonl"))}
base = answers("detect")
for mode in ("uniform", "zero"):
    masked = answers(f"masked-{mode}")
    changed = sum(masked[k] != base[k] for k in base if k in masked)
    print(f"| {name} | {mode} | {changed}/{len(base)} answers changed by masking 64 random heads |")
EOF2
      rm -rf "${ckpt:?}/$m" ${CKPT_STREAM:+"$CKPT_STREAM/$m"} # one checkpoint on disk at a time
    done
    ;;
  report)
    dirs=()
    for d in "$out"/*/; do [ -f "$d/headscope.json" ] || [ -f "$d/agreement.json" ] && dirs+=("$d"); done
    $py bench/bench_report.py "${dirs[@]}" --out "$out/results.md"
    ;;
  *)
    echo "usage: scripts/gpu-bench.sh smoke | bench MODEL [LENGTHS] | kv MODEL [LENGTHS] | agree MODEL... | table1 MODEL... | report" >&2
    exit 2
    ;;
esac
