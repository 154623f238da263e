#!/usr/bin/env bash
# Lab model v4 on the lent GPU with the PyTorch trainer (crates/headscope-train/torch/train_lab.py):
# trains a chain of stages, evaluates models on the five yardsticks of docs/lab-v4/README.md and sends
# the last model back, within one command's time. Run on the GPU machine from the repository root:
#   STAGES="n1:docs/lab-v4/recipe-next-stage1.toml n2:docs/lab-v4/recipe-next-stage2.toml:n1" \
#     EVAL="n2" scripts/lab-torch.sh 570
# STAGES: name:recipe[:init], init being an earlier stage's name or a model folder (with a '/');
# a stage whose loss log reached its recipe's last step is skipped, one stopped by the time limit
# resumes (while the machine stays warm: its state is under /root). DET=1 first trains 60 steps of
# next stage 1 twice and prints both weights' md5 (they must agree).
# Carried (git-ignored, made here):
#   .carry/headscope.xz      a CUDA build of headscope (see scripts/lab-gpu.sh), xz-compressed
#   .carry/corpus.tar.xz     the recipes' corpus files from scripts/prepare-corpus.sh, as a tar
#   .carry/tok/tokenizer.json  optional: the tokenizer `headscope train --stop-at 0` trains (deterministic)
#   .carry/eval/natural.jsonl  cargo run --release -p headscope-train --example natural_facts -- 48 77
#   .carry/eval/heldout-stories.txt  from scripts/prepare-corpus.sh
# Results come back in $OUT: each stage's loss.csv, each evaluation's tests, the last model (its
# model.safetensors in 15 MB parts: join them with cat).
set -u
budget=${1:-560}
left() { echo $((budget - SECONDS)); }
py=crates/headscope-train/torch/train_lab.py
hs=/root/hs
out=${OUT:-/tmp/lab-torch-out}
mkdir -p "$out"
[ -x $hs ] || python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' .carry/headscope.xz $hs
chmod +x $hs
if [ ! -f /root/corpus/.ok ]; then mkdir -p /root/corpus && tar xJf .carry/corpus.tar.xz -C /root/corpus && touch /root/corpus/.ok; fi
workers=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
train() { # out recipe [init] [extra flags...]
  local dir=$1 recipe=$2 init=${3:-}
  shift 3
  mkdir -p "$dir"
  [ -f .carry/tok/tokenizer.json ] && [ -z "$init" ] && cp -n .carry/tok/tokenizer.json "$dir/"
  python3 $py --bin $hs --recipe "$recipe" --corpus /root/corpus --out "$dir" ${init:+--init-from "$init"} --workers $workers "$@" 2>&1 \
    | grep -v Warning | grep -E "step +[0-9]*[05]00 |step +[0-9]+ loss .* (60|50) |finished|stopped|time limit|Error|error|resumed|parameters|nothing" | tail -30
}
if [ "${DET:-0}" = 1 ]; then
  for r in a b; do train /root/det$r docs/lab-v4/recipe-next-stage1.toml "" --stop-at 60; done
  md5sum /root/det?/model.safetensors
fi
finished() { python3 - "$1" <<'PY'
import csv, sys, tomllib
d = sys.argv[1]
try:
    rows = list(csv.DictReader(open(d + "/loss.csv")))
    steps = tomllib.load(open(d + "/recipe.toml", "rb"))["train"]["steps"]
except OSError:
    sys.exit(1)
sys.exit(0 if rows and int(rows[-1]["step"]) >= steps else 1)
PY
}
last=""
for s in ${STAGES:-}; do
  IFS=: read -r name recipe init <<< "$s"
  case "$init" in */*) ;; "") ;; *) init=/root/$init ;; esac
  if ! finished /root/$name; then
    if [ "$(left)" -lt 120 ]; then echo "no time for $name"; break; fi
    # Each evaluation takes about 100 s (five yardsticks); the stage gets the rest, less a margin.
    reserve=$(( $(echo ${EVAL:-} | wc -w) * 100 + 45 ))
    minutes=$(python3 -c "print(round(max(1, $(left) - $reserve) / 60, 2))")
    echo "== $name: $recipe from ${init:-scratch}, at most $minutes min ($(left) s left)"
    train /root/$name "$recipe" "$init" --max-minutes "$minutes"
  fi
  mkdir -p "$out/$name" && cp /root/$name/loss.csv "$out/$name/" 2>/dev/null
  md5sum /root/$name/model.safetensors
  last=$name
  finished /root/$name || break
done
# The five yardsticks: pass rate (recall >= 0.5) of 48 needles x 5 depths each.
for name in ${EVAL:-}; do
  dir=/root/$name; case "$name" in */*) dir=$name ;; esac
  [ -f "$dir/model.safetensors" ] || continue
  hw=public/needles/handwritten.jsonl vil=public/haystacks/village.txt sto=.carry/eval/heldout-stories.txt
  for y in "hwv256 $hw $vil 256" "hwv1024 $hw $vil 1024" "hws1024 $hw $sto 1024" "natv1024 .carry/eval/natural.jsonl $vil 1024" "hws4096 $hw $sto 4096"; do
    read -r tag needles hay len <<< "$y"
    if [ "$(left)" -lt 30 ]; then echo "no time for $name $tag"; break; fi
    echo -n "$(basename $dir) $tag: "
    $hs niah --model "$dir" --device cuda --dtype f32 --plain --depths 5 --needles $needles --haystack $hay --lengths $len \
      --out /root/ev-$(basename $dir)/$tag 2>&1 | grep -i "pass" | tail -1
  done
  (cd /root/ev-$(basename $dir) && tar czf "$out/ev-$(basename $dir).tgz" */tests.jsonl */summary.json 2>/dev/null)
done
if [ -n "$last" ]; then
  (cd /root/$last && tar czf "$out/$last-files.tgz" config.json generation_config.json tokenizer.json tokenizer_config.json recipe.toml loss.csv \
    && split -b 15M -d model.safetensors "$out/$last-model.part")
fi
echo "done at ${SECONDS}s"
