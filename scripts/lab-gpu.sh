#!/usr/bin/env bash
# The lab model's GPU steps, run on the lent GPU machine (which has no Rust): a CUDA build of
# `headscope` is carried as .carry/headscope.gz together with the corpus (.carry/corpus, from
# scripts/prepare-corpus.sh). Results are copied to $OUT when it is set.
#   scripts/lab-gpu.sh train MINUTES   train (or resume) into .carry/lab-train for at most MINUTES
#   scripts/lab-gpu.sh eval DIR        detection, NIAH and masking curves of model DIR into .carry/lab-eval
# Build the binary first, here: source ~/.cache/cuda13/env.sh &&
#   cargo build --release -p headscope-cli --features cuda && gzip -9c target/release/headscope > .carry/headscope.gz
set -euo pipefail
bin=.carry/headscope
[ -x "$bin" ] || { gunzip -c .carry/headscope.gz > "$bin"; chmod +x "$bin"; }
out=${OUT:-.carry/out}
mkdir -p "$out"
case "${1:?train or eval}" in
  train)
    "$bin" train --recipe public/models/lab/recipe.toml --corpus .carry/corpus --out .carry/lab-train --device cuda --max-minutes "${2:-8}" 2>&1 | tee "$out/train.log"
    for f in model.safetensors tokenizer.json config.json generation_config.json tokenizer_config.json loss.csv; do cp .carry/lab-train/$f "$out/"; done
    ;;
  eval)
    model=${2:?model dir}
    ev=.carry/lab-eval
    needles=$ev/heldout.jsonl
    mkdir -p "$ev"
    cp public/needles/heldout.jsonl "$needles"
    common=(--model "$model" --device cuda --needles "$needles" --haystack public/haystacks/kjv-john.txt --plain)
    "$bin" detect "${common[@]}" --out "$ev/detect" --lengths 256:4096:8 --depths 10 2>&1 | tail -5
    k=$(python3 -c "import json;print(len(json.load(open('$ev/detect/summary.json'))['retrieval_heads']))")
    echo "retrieval heads: $k"
    curve=(--lengths 512:4096:4 --depths 5 --scores "$ev/detect/head_scores.json")
    for kk in $(seq 1 $((2 * k))); do
      "$bin" niah "${common[@]}" "${curve[@]}" --out "$ev/top-$kk" --mask-top "$kk" | tail -1
      for seed in 1 2 3; do
        "$bin" niah "${common[@]}" "${curve[@]}" --out "$ev/random-$kk-s$seed" --mask-random "$kk" --seed "$seed" | tail -1
      done
    done
    "$bin" niah "${common[@]}" --lengths 512:4096:4 --depths 5 --out "$ev/none" | tail -1
    tar czf "$out/lab-eval.tgz" -C .carry lab-eval
    ;;
esac
