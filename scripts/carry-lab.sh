#!/usr/bin/env bash
# Makes here, from a clean clone, what scripts/lab-torch.sh reads from .carry (git-ignored) on the GPU
# machine, which has no Rust and no network. Each step is skipped while its output is newer than what it
# is made from, so a second run after a code change rebuilds only the binary.
#   scripts/carry-lab.sh [NAME=MODEL_DIR ...]     e.g. scripts/carry-lab.sh v4=public/models/lab
#   .carry/headscope.xz          the CUDA build of headscope (CUDA_ENV: a script that puts the CUDA 13
#                                toolkit on the paths; default ~/.cache/cuda13/env.sh, which
#                                ../shared/tools/cuda-toolkit.sh installs where that exists)
#   .carry/corpus.tar.xz         the corpus files the lab-v4/lab-v5 recipes name (scripts/prepare-corpus.sh)
#   .carry/eval/heldout-stories.txt, .carry/eval/lookalikes/   yardsticks hws* and look1024
#   .carry/tok/tokenizer.json    the shipped model's tokenizer, which a chain from scratch trains on
#   .carry/models/NAME.tar.xz    each named model folder's files at the top of a tar (a chain starts from it)
# Run it before scripts/device-stash.sh out, which moves the shipped model's weights away. The whole
# .carry and the stashed tree must stay within the device tool's 64 MiB: one 30 MB model at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry/eval .carry/tok .carry/models
newer() { [ -e "$1" ] && [ -z "$(find "${@:2}" -newer "$1" -print -quit 2>/dev/null)" ]; }

env_script=${CUDA_ENV:-$HOME/.cache/cuda13/env.sh}
if [ ! -f "$env_script" ] && [ -z "${CUDA_ENV:-}" ] && [ -f ../shared/tools/cuda-toolkit.sh ]; then
  bash ../shared/tools/cuda-toolkit.sh
fi
[ -f "$env_script" ] || { echo "no CUDA toolkit: $env_script is missing (set CUDA_ENV)" >&2; exit 1; }
# shellcheck disable=SC1090
source "$env_script"
cargo build --release -p headscope-cli --features cuda --target-dir target/cuda
if ! newer .carry/headscope.xz target/cuda/release/headscope; then
  strip -o target/cuda/headscope.stripped target/cuda/release/headscope
  xz -9 -T2 -c target/cuda/headscope.stripped > .carry/headscope.xz
fi

[ -f corpus/heldout-stories.txt ] || bash scripts/prepare-corpus.sh corpus
# The files of the recipes lab-torch.sh runs (v4's chain and the lab-v5 stages; v4's first recipes also
# name kjv.txt: CORPUS_RECIPES="docs/lab-v4/*.toml docs/lab-v5/*.toml" to carry it too).
files=$(grep -h "^corpus = " ${CORPUS_RECIPES:-docs/lab-v4/recipe-next-*.toml docs/lab-v5/*.toml} | grep -o '"[^"]*"' | tr -d '"' | sort -u)
if ! newer .carry/corpus.tar.xz $(printf 'corpus/%s ' $files); then
  (cd corpus && tar cf - $files | xz -9 -T2 > ../.carry/corpus.tar.xz)
fi
cp -p corpus/heldout-stories.txt .carry/eval/
if ! newer .carry/eval/lookalikes/needles.jsonl .carry/eval/heldout-stories.txt; then
  cargo run --release -p headscope-train --target-dir target/cuda --example lookalikes -- \
    .carry/eval/lookalikes 24 4242 .carry/eval/heldout-stories.txt
fi
cp -p public/models/lab/tokenizer.json .carry/tok/

for m in "$@"; do
  name=${m%%=*} dir=${m#*=}
  [ "$name" != "$m" ] && [ -f "$dir/model.safetensors" ] || { echo "$m: give NAME=DIR, DIR holding model.safetensors" >&2; exit 2; }
  parts=$(cd "$dir" && ls config.json generation_config.json tokenizer.json tokenizer_config.json model.safetensors 2>/dev/null)
  if ! newer .carry/models/$name.tar.xz $(printf "$dir/%s " $parts); then
    (cd "$dir" && tar cf - $parts | xz -6 -T2 > "$OLDPWD/.carry/models/$name.tar.xz")
  fi
done
echo ".carry: $(du -sh .carry | cut -f1) ($(ls .carry/models | tr '\n' ' '))"
