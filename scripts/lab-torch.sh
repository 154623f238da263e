#!/usr/bin/env bash
# Lab model v4 on the lent GPU with the PyTorch trainer (crates/headscope-train/torch/train_lab.py):
# trains a chain of stages, evaluates models on the yardsticks of docs/lab-v4/README.md (and two of docs/lab-v5) and sends
# the last model back, within one command's time. Run on the GPU machine from the repository root:
#   STAGES="n1:docs/lab-v4/recipe-next-stage1.toml n2:docs/lab-v4/recipe-next-stage2.toml:n1" \
#     EVAL="n2" scripts/lab-torch.sh 570
# STAGES: name:recipe[:init[:key=value,...]], init being an earlier stage's name or a model folder (with a '/'),
# the key=value pairs replacing lines of this stage's recipe (as RECIPE_SET does for every stage);
# the stages train in one process; a stage whose loss log reached its recipe's last step is skipped,
# one stopped by the time limit resumes (while the machine stays warm: its state is under /root).
# ROPE_THETA=B trains every stage with RoPE base B in place of its recipe's (docs/lab-v4/README.md, "The
# RoPE base": the chain from scratch at 10000000); RECIPE_SET="key=value ..." replaces any recipe lines.
# TRAIN_FLAGS="--keep-at 1000,2000" also keeps those steps' weights as /root/NAME/at-STEP, which EVAL can name
# (a stage's held-out trajectory: docs/lab-v5/README.md, "d13").
# DET=1 first trains 60 steps of next stage 1 twice with deterministic kernels and prints both
# weights' md5 (they must agree). TRAIN_FLAGS go to train_lab.py (e.g. --f32-logits). LONG=1 adds a sixth
# yardstick at 8192 tokens (hws8192); EXTRA="tag:needles:haystack:length ..." adds more (5 depths each).
# Every evaluated model also runs `headscope detect` (default grid: the paper's needle in the village
# haystack, yardstick "village"). ONLY="village hws1024 ..." runs those yardsticks alone (a short call
# that checks one behaviour: about 25 s each is kept back from training). COT=1 then runs `headscope cot` with its head scores (public/cot tasks, 1 random seed, 96-token reasoning).
# Each extra costs GPU time: plan on about 60 s for LONG and 150 s for COT per model.
# Carried (git-ignored, made here):
#   .carry/headscope.xz      a CUDA build of headscope (see scripts/lab-gpu.sh), xz-compressed
#   .carry/corpus.tar.xz     the recipes' corpus files from scripts/prepare-corpus.sh, as a tar
#   .carry/tok/tokenizer.json  optional: the tokenizer `headscope train --stop-at 0` trains (deterministic)
#   .carry/eval/natural.jsonl  cargo run --release -p headscope-train --example natural_facts -- 48 77
#   .carry/eval/heldout-stories.txt  from scripts/prepare-corpus.sh
#   .carry/eval/lookalikes/  optional: cargo run --release -p headscope-train --example lookalikes --
#     .carry/eval/lookalikes 24 4242 .carry/eval/heldout-stories.txt (yardstick look1024)
#   .carry/models/NAME.tar.xz  optional: a model folder an earlier session trained (its files at the top
#     of the tar: config.json, tokenizer files, model.safetensors, loss.csv), unpacked as stage NAME, so
#     that a chain can go on from it ("n12:RECIPE:NAME") instead of training its stages again
# Results come back in $OUT (at most 8 files): losses.tgz (each stage's loss.csv), each evaluation's
# tests, the last model (its model.safetensors in 16 MiB parts: join them with cat) and, where that
# one stopped at the time limit, the last finished one.
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
for m in .carry/models/*.tar.xz; do
  [ -f "$m" ] || continue
  name=$(basename "$m" .tar.xz)
  if [ ! -f /root/$name/model.safetensors ]; then mkdir -p /root/$name && tar xJf "$m" -C /root/$name && echo "carried model $name: $(md5sum < /root/$name/model.safetensors | cut -c1-32)"; fi
done
if [ "${DET:-0}" = 1 ]; then
  for r in a b; do
    mkdir -p /root/det$r && { [ -f /root/det$r/tokenizer.json ] || cp .carry/tok/tokenizer.json /root/det$r/; }
    python3 $py --bin $hs --corpus /root/corpus --workers $workers --deterministic --stop-at 60 --stage /root/det$r:docs/lab-v4/recipe-next-stage1.toml 2>&1 | grep -E "finished|stopped|rror"
  done
  md5sum /root/det?/model.safetensors
fi
# The whole chain trains in one process, so that the compiled graphs serve every stage.
# Each evaluation takes about 150 s (seven yardsticks); the chain gets the rest, less a margin.
stage_args=() names=()
for s in ${STAGES:-}; do
  IFS=: read -r name recipe init own <<< "$s"
  case "$init" in */*) ;; "") ;; *) init=/root/$init ;; esac
  mkdir -p /root/$name
  # ROPE_THETA=B is RECIPE_SET="rope_theta=B"; RECIPE_SET="key=value ..." replaces those lines of every
  # stage's recipe (e.g. "num_attention_heads=6 num_key_value_heads=2": heads of width 64 at the same
  # hidden size); a fourth field, "name:recipe:init:key=value,key=value", those of this stage alone (a
  # control that differs from its stage by one setting trains in the same call: no second start-up).
  # The trainer copies the recipe it was given into the model folder as its record.
  sets="${RECIPE_SET:-}${ROPE_THETA:+ rope_theta=$ROPE_THETA} ${own//,/ }"
  if [ -n "${sets// /}" ]; then
    mkdir -p /root/recipes
    cp "$recipe" /root/recipes/$name.toml
    for kv in $sets; do
      key=${kv%%=*} value=${kv#*=}
      grep -q "^$key = " /root/recipes/$name.toml || { echo "$recipe has no '$key = ' line for RECIPE_SET to replace" >&2; exit 2; }
      sed -i "s/^$key = .*/$key = $value   # RECIPE_SET of scripts\/lab-torch.sh; the recipe says otherwise/" /root/recipes/$name.toml
    done
    recipe=/root/recipes/$name.toml
  fi
  if [ -f .carry/tok/tokenizer.json ] && [ -z "$init" ] && [ ! -f /root/$name/tokenizer.json ]; then cp .carry/tok/tokenizer.json /root/$name/; fi
  stage_args+=(--stage "/root/$name:$recipe:$init") names+=("$name")
done
last="" finished=""
if [ ${#names[@]} -gt 0 ]; then
  per_model=$(( 150 + ${LONG:-0} * 60 + ${COT:-0} * 150 ))
  [ -f .carry/eval/lookalikes/needles.jsonl ] && per_model=$(( per_model + 75 )) # 24 model loads
  [ -n "${ONLY:-}" ] && per_model=$(( $(echo $ONLY | wc -w) * 25 + $([[ " $ONLY " == *" look1024 "* ]] && echo 60 || echo 0) ))
  reserve=$(( $(echo ${EVAL:-} | wc -w) * per_model + 45 ))
  minutes=$(python3 -c "print(round(max(1, $(left) - $reserve) / 60, 2))")
  echo "== ${names[*]}: at most $minutes min ($(left) s left)"
  python3 $py --bin $hs --corpus /root/corpus --workers $workers --max-minutes "$minutes" ${TRAIN_FLAGS:-} "${stage_args[@]}" 2>&1 \
    | grep -v Warning | grep -E "step +[0-9]*[05]00 |finished|stopped|time limit|Error|error|resumed|parameters|nothing" | tail -60
  for name in "${names[@]}"; do
    [ -f /root/$name/loss.csv ] || break
    done_steps=$(tail -1 /root/$name/loss.csv 2>/dev/null | cut -d, -f1)
    echo "$name: $(md5sum < /root/$name/model.safetensors | cut -c1-32) $done_steps steps"
    last=$name
    # The recipe the trainer copied into the folder names the stage's steps.
    [ "$done_steps" = "$(sed -n 's/^steps = \([0-9]*\).*/\1/p' /root/$name/recipe.toml | head -1)" ] && finished=$name
  done
  (cd /root && tar czf "$out/losses.tgz" $(for n in "${names[@]}"; do [ -f $n/loss.csv ] && echo $n/loss.csv; done) 2>/dev/null)
fi
# The yardsticks: pass rate (recall >= 0.5) of 48 needles x 5 depths each.
for name in ${EVAL:-}; do
  dir=/root/$name; case "$name" in */*) dir=$name ;; esac
  [ -f "$dir/model.safetensors" ] || continue
  # Records are named after the model; a kept step (NAME/at-STEP) after its stage too, so that two
  # stages' at-1000 do not share a folder (niah would refuse the second, or resume the first's tests).
  label=$(basename $dir); case "$label" in at-*) label=$(basename "$(dirname $dir)")-$label ;; esac
  ev=/root/ev-$label
  hw=public/needles/handwritten.jsonl vil=public/haystacks/village.txt sto=.carry/eval/heldout-stories.txt
  # hws1024's haystack (the text's first page) holds one sentence that models copy whatever is asked
  # (docs/lab-v5/README.md, "d13"): hwsmid1024 and hwslate1024 run the same needles in the text's
  # middle and last quarter.
  n_lines=$(wc -l < $sto)
  [ -f /root/hs-mid.txt ] || tail -n +$((n_lines / 2)) $sto > /root/hs-mid.txt
  [ -f /root/hs-late.txt ] || tail -n +$((n_lines * 3 / 4)) $sto > /root/hs-late.txt
  yardsticks=("hwv256 $hw $vil 256" "hwv1024 $hw $vil 1024" "hws1024 $hw $sto 1024" "hwsmid1024 $hw /root/hs-mid.txt 1024"
    "hwslate1024 $hw /root/hs-late.txt 1024" "natv1024 .carry/eval/natural.jsonl $vil 1024" "hws4096 $hw $sto 4096")
  [ "${LONG:-0}" = 1 ] && yardsticks+=("hws8192 $hw $sto 8192")
  # EXTRA="tag:needles:haystack:length ..." adds yardsticks of its own (e.g. needles written for a trial).
  for x in ${EXTRA:-}; do IFS=: read -r tag needles hay len <<< "$x"; yardsticks+=("$tag $needles $hay $len"); done
  # Yardstick look1024: each needle of .carry/eval/lookalikes (the lookalikes example) in its own short
  # haystack holding a look-alike sentence, as the village haystack holds one for the paper's needle.
  [ -f .carry/eval/lookalikes/needles.jsonl ] && yardsticks+=("look1024 - - 1024")
  for y in "${yardsticks[@]}"; do
    read -r tag needles hay len <<< "$y"
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $tag "* ]]; then continue; fi
    if [ "$(left)" -lt 30 ]; then echo "no time for $name $tag"; break; fi
    if [ "$tag" = look1024 ]; then
      echo "$label $tag: $(HS=$hs scripts/lookalike-eval.sh "$dir" .carry/eval/lookalikes $len $ev/$tag \
        --device cuda --dtype f32 2>&1 | tail -1)"
      continue
    fi
    echo -n "$label $tag: "
    $hs niah --model "$dir" --device cuda --dtype f32 --plain --depths 5 --needles $needles --haystack $hay --lengths $len \
      --out $ev/$tag 2>&1 | grep -i "pass" | tail -1
  done
  # Yardstick village: the paper's needle in the page's default haystack, which holds a look-alike
  # sentence; a model that copies the look-alike still "passes" at recall 0.5, but no head scores.
  if [ "$(left)" -gt 30 ] && { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" village "* ]]; }; then
    echo "$label village: $($hs detect --model "$dir" --device cuda --dtype f32 --plain --out $ev/detect 2>&1 \
      | grep -E "pass rate|retrieval heads" | tail -2 | tr '\n' ' ')"
    [ -f $ev/detect/tests.jsonl ] && echo "$label village: $(python3 scripts/failure-kinds.py --line --haystack $vil $ev/detect/tests.jsonl)"
  fi
  if [ "${COT:-0}" = 1 ] && [ "$(left)" -gt 60 ] && [ -f $ev/detect/head_scores.json ]; then
    $hs cot --model "$dir" --device cuda --dtype f32 --plain --scores $ev/detect/head_scores.json --seeds 1 --max-new-tokens-step 96 \
      --out $ev/cot 2>&1 | grep -E "^ +(word_problem|two_hop)" | tail -12
  fi
  (cd $ev && tar czf "$out/ev-$label.tgz" */tests.jsonl */summary.json look1024/*/tests.jsonl cot/*/cot.jsonl 2>/dev/null)
done
# The last stage trained, and where that one stopped short (time limit), the last finished one too:
# a machine may be released between calls, and a chain can then go on from the finished stage
# (carried as .carry/models/NAME.tar.xz) instead of training it again.
for keep in $(echo "$last $finished" | tr ' ' '\n' | awk 'NF && !seen[$0]++'); do
  (cd /root/$keep && tar czf "$out/$keep-files.tgz" config.json generation_config.json tokenizer.json tokenizer_config.json recipe.toml loss.csv \
    && split -b 16M -d model.safetensors "$out/$keep-model.part")
done
echo "done at ${SECONDS}s"
