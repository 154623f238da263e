#!/usr/bin/env bash
# The look-alike yardstick: each needle of a set made by the `lookalikes` example in its own short
# haystack, which holds a sentence that matches the question in part and answers otherwise. Prints
# the pass rate (recall >= 0.5) and how many answers copied the look-alike instead.
#   cargo run --release -p headscope-train --example lookalikes -- DIR 24 4242 .carry/eval/heldout-stories.txt
#   scripts/lookalike-eval.sh MODEL DIR LENGTH OUT [headscope niah flags, e.g. --device cuda --dtype f32]
# HS names the headscope binary (default target/release/headscope). PLAIN=1 runs the control: the same
# passages without their look-alikes (what the look-alike costs is the difference). ONCE=FILE follows
# each passage with FILE's first 12,000 bytes, so that a prompt holds the look-alike once instead of
# repeating the short passage (and the look-alike with it) to the length.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 MODEL DIR LENGTH OUT [niah flags]" >&2; exit 2; }
model=$1 dir=$2 length=$3 out=$4
shift 4
hs=${HS:-target/release/headscope}
[ -f "$dir/needles.jsonl" ] || { echo "$dir/needles.jsonl: no such file (make it with the lookalikes example)" >&2; exit 1; }
mkdir -p "$out"
n=$(wc -l < "$dir/needles.jsonl")
for ((i = 0; i < n; i++)); do
  nn=$(printf %02d "$i")
  [ -f "$out/$nn/summary.json" ] && continue # finished earlier: a rerun resumes
  sed -n "$((i + 1))p" "$dir/needles.jsonl" > "$out/needle-$nn.jsonl"
  hay="$dir/$([ "${PLAIN:-0}" = 1 ] && echo plain || echo hay)-$nn.txt"
  if [ -n "${ONCE:-}" ]; then
    { cat "$hay"; printf '\n\n'; head -c 12000 "$ONCE"; } > "$out/haystack-$nn.txt"
    hay="$out/haystack-$nn.txt"
  fi
  "$hs" niah --model "$model" --plain --depths 5 --lengths "$length" --needles "$out/needle-$nn.jsonl" \
    --haystack "$hay" --out "$out/$nn" "$@" > "$out/$nn.log" 2>&1 || { cat "$out/$nn.log" >&2; exit 1; }
done
python3 - "$dir" "$out" "$n" << 'EOF'
import json, os, sys
d, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pairs = [json.loads(l) for l in open(f"{d}/lookalikes.jsonl")]
tests = passed = copied = 0
for i in range(n):
    for line in open(f"{out}/{i:02d}/tests.jsonl"):
        t = json.loads(line)
        tests += 1
        if t["recall"] >= 0.5:
            passed += 1
            continue
        # Copied the look-alike: more of the answer's words are the look-alike's own than the needle's own.
        words = lambda s: set("".join(c if c.isalnum() else " " for c in s.lower()).split())
        answer, look, needle = words(t["answer"]), words(pairs[i]["lookalike"]), words(pairs[i]["needle"])
        copied += len(answer & (look - needle)) > len(answer & (needle - look))
print(f"look-alike yardstick{' (control: no look-alikes)' if os.environ.get('PLAIN') == '1' else ''}{' (passage once)' if os.environ.get('ONCE') else ''}: NIAH pass rate {100 * passed / tests:.1f}% ({passed}/{tests} tests with recall >= 0.5); "
      f"{copied} failed answers copied the look-alike")
EOF
