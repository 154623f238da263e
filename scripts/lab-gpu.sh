#!/usr/bin/env bash
# The lab model's GPU steps, run on the lent GPU machine (which has no Rust): a CUDA build of
# `headscope` is carried as .carry/headscope.gz together with the corpus (.carry/corpus, from
# scripts/prepare-corpus.sh). Results are copied to $OUT when it is set.
#   scripts/lab-gpu.sh train MINUTES   train (or resume) into $LAB_TRAIN (/root/lab-train) for at most MINUTES;
#                                      RECIPE, INIT_FROM and STOP_AT select the stage; the model files come
#                                      back in $OUT, model.safetensors in parts of 15 MB (join them with cat)
#   scripts/lab-gpu.sh eval DIR        detection, NIAH and masking curves of model DIR into .carry/lab-eval
#                                      (NEEDLES, LENGTHS and CURVE_LENGTHS change the grids)
#   scripts/lab-gpu.sh reproduce SECS  lab model v3's twelve stages (docs/lab-v3), one after another, into $LAB_TRAIN/sN,
#                                      as many whole stages as fit in SECS; FROM_STAGE=N INIT_FROM=DIR goes on
#                                      from stage N-1's model DIR (what an earlier call packed into $OUT);
#                                      LAST_STAGE=N stops after stage N
# Build the binary first, here: source ~/.cache/cuda13/env.sh &&
#   cargo build --release -p headscope-cli --features cuda && gzip -9c target/release/headscope > .carry/headscope.gz
set -euo pipefail
# HEADSCOPE_BIN and DEVICE=cpu run `eval` with a local build (the CPU gives the same tokens, slower);
# rerunning `eval` into the same .carry/lab-eval resumes it (every command keeps what it has run).
bin=${HEADSCOPE_BIN:-.carry/headscope}
# It travels gzipped (.carry/headscope.gz) or, half the size, as .carry/headscope.xz (xz -9e).
if [ ! -x "$bin" ]; then
  # (Python's lzma, since the GPU machine's image need not have xz.)
  if [ -f .carry/headscope.xz ]; then
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' .carry/headscope.xz "$bin"
  else
    gunzip -c .carry/headscope.gz > "$bin"
  fi
  chmod +x "$bin"
fi
# The corpus travels as .carry/corpus (v3's two files) or packed as .carry/corpus.tar.xz (the larger
# corpus of v4), unpacked once per machine outside the carried folder.
corpus=.carry/corpus
if [ -f .carry/corpus.tar.xz ]; then
  corpus=/root/corpus
  if [ ! -f "$corpus/.unpacked" ]; then
    mkdir -p "$corpus"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' .carry/corpus.tar.xz "$corpus"
    touch "$corpus/.unpacked"
  fi
fi
out=${OUT:-.carry/out}
# Outside the carried folder: a carry replaces .carry on the GPU machine, and the checkpoint must
# survive between calls while the machine stays warm.
train=${LAB_TRAIN:-/root/lab-train}
mkdir -p "$out"
case "${1:?train or eval}" in
  train)
    # RECIPE and INIT_FROM select a further stage (see public/models/lab/recipe-stage2.toml).
    # A tokenizer trained beforehand (headscope train --stop-at 0, on any machine: it is deterministic)
    # can travel as $TOKENIZER, sparing the GPU machine the BPE training.
    mkdir -p "$train"
    if [ -n "${TOKENIZER:-}" ] && [ ! -f "$train/tokenizer.json" ]; then cp "$TOKENIZER" "$train/tokenizer.json"; fi
    "$bin" train --recipe "${RECIPE:-public/models/lab/recipe.toml}" ${INIT_FROM:+--init-from "$INIT_FROM"} ${STOP_AT:+--stop-at "$STOP_AT"} \
      --corpus "$corpus" --out "$train" --device "${DEVICE:-cuda}" --max-minutes "${2:-8}" 2>&1 | tee "$out/train.log" | tail -30 || status=$?
    # Also after an error: the weights of the last checkpoint are in $train.
    for f in tokenizer.json config.json generation_config.json tokenizer_config.json loss.csv; do [ ! -f "$train/$f" ] || cp "$train/$f" "$out/"; done
    # Files come back from the GPU machine in at most 16 MiB each.
    [ ! -f "$train/model.safetensors" ] || split -b 15M -d "$train/model.safetensors" "$out/model.safetensors.part"
    exit "${status:-0}"
    ;;
  reproduce)
    # Lab model v3's stages (docs/lab-v3/MODEL_CARD.md) and where a command's time limit stopped them when
    # they were first trained. (v4 trains with scripts/lab-torch.sh: public/models/lab/MODEL_CARD.md.)
    declare -A stop_at=([3]=3456 [5]=1500 [6]=1468)
    root=${LAB_TRAIN:-/root/lab-repro}
    budget=${2:-540}
    prev=${INIT_FROM:-}
    trained_steps=0 trained_seconds=0
    mkdir -p "$out/repro"
    for i in $(seq "${FROM_STAGE:-1}" "${LAST_STAGE:-12}"); do
      recipe=docs/lab-v3/recipe-stage$i.toml
      [ "$i" = 1 ] && recipe=docs/lab-v3/recipe.toml
      dir=$root/s$i
      [ -f "$dir/done" ] && { prev=$dir; continue; }
      steps=${stop_at[$i]:-$(sed -n 's/^steps = \([0-9]*\).*/\1/p' "$recipe")}
      # Seconds per step measured on this machine so far (before the first stage: $SECONDS_PER_STEP or 0.08), plus 5 %.
      predicted=$(python3 -c "print(int($steps * ($trained_seconds / $trained_steps if $trained_steps else ${SECONDS_PER_STEP:-0.08}) * 1.05) + 20)")
      if [ $((SECONDS + predicted)) -gt "$budget" ]; then
        echo "stage $i (about ${predicted}s) does not fit in the ${budget}s budget; go on with FROM_STAGE=$i"
        break
      fi
      "$bin" train --recipe "$recipe" ${prev:+--init-from "$prev"} ${stop_at[$i]:+--stop-at "${stop_at[$i]}"} \
        --corpus "$corpus" --out "$dir" --device "${DEVICE:-cuda}" --max-minutes "$(python3 -c "print(max(0.5, ($budget - $SECONDS) / 60))")" > "$out/repro/train-s$i.log" 2>&1 || true
      tail -2 "$out/repro/train-s$i.log"
      cp "$dir/loss.csv" "$out/repro/loss-stage$i.csv"
      grep -q "^\(finished\|stopped at\) step $steps of" "$out/repro/train-s$i.log" || { echo "stage $i did not finish"; break; }
      touch "$dir/done"
      trained_steps=$((trained_steps + steps))
      trained_seconds=$(python3 -c "print($trained_seconds + float(open('$dir/loss.csv').read().split()[-1].split(',')[-1]))")
      rm -rf "$out/repro/model" && mkdir -p "$out/repro/model"
      for f in model.safetensors tokenizer.json config.json generation_config.json tokenizer_config.json; do cp "$dir/$f" "$out/repro/model/"; done
      echo "$i" > "$out/repro/model/stage"
      prev=$dir
    done
    tar czf "$out/repro.tgz" -C "$out" repro && rm -rf "$out/repro"
    ;;
  eval)
    # Detection on the full held-out grid, then pass rates with the top-K retrieval heads and K random
    # non-retrieval heads (3 seeds) masked, for K = 1..2x their number, on a smaller grid, until
    # ${BUDGET:-480} seconds have passed. Results are packed into $OUT/lab-eval.tgz after every stage.
    model=${2:?model dir}
    ev=.carry/lab-eval
    mkdir -p "$ev"
    pack() { tar czf "$out/lab-eval.tgz" -C .carry lab-eval; }
    common=(--model "$model" --device "${DEVICE:-cuda}" --dtype f32 --haystack public/haystacks/kjv-john.txt --plain)
    needles=${NEEDLES:-public/needles/heldout.jsonl}
    "$bin" detect "${common[@]}" --needles "$needles" --out "$ev/detect" --lengths "${LENGTHS:-256:4096:8}" --depths 10 2>&1 | tail -4
    pack
    k=$(python3 -c "import json;print(len(json.load(open('$ev/detect/summary.json'))['retrieval_heads']))")
    echo "retrieval heads: $k"
    head -n 4 "$needles" > "$ev/curve-needles.jsonl"
    curve=(--needles "$ev/curve-needles.jsonl" --lengths "${CURVE_LENGTHS:-512:4096:4}" --depths 5 --scores "$ev/detect/head_scores.json")
    "$bin" niah "${common[@]}" "${curve[@]}" --out "$ev/none" | tail -1
    for kk in "$k" $(seq 1 $((2 * k))); do
      [ "$SECONDS" -lt "${BUDGET:-480}" ] || { echo "budget spent before K=$kk"; break; }
      [ -d "$ev/top-$kk" ] && [ "$kk" != "$k" ] && continue
      "$bin" niah "${common[@]}" "${curve[@]}" --out "$ev/top-$kk" --mask-top "$kk" | tail -1
      for seed in 1 2 3; do
        "$bin" niah "${common[@]}" "${curve[@]}" --out "$ev/random-$kk-s$seed" --mask-random "$kk" --seed "$seed" | tail -1
      done
      pack
    done
    pack
    ;;
esac
