#!/usr/bin/env bash
# Moves the tracked files a GPU job never reads out of the working tree and back, because the device
# tool carries the whole tree and the carried files together within 64 MiB (a carried 28 MB model
# and the corpus do not fit beside the shipped lab model, the benchmark records and the lab-v4 records).
#   scripts/device-stash.sh out     before a `run` call
#   scripts/device-stash.sh back    after it (also after a failed call: the files wait in $STASH)
set -eu
cd "$(dirname "$0")/.."
stash=${STASH:-/tmp/headscope-device-stash}
paths=(public/models/lab/model.safetensors bench/results docs/lab-retrain)
case "${1:-}" in
  out)
    if [ -e "$stash/.full" ]; then echo "$stash already holds stashed files: run '$0 back' first" >&2; exit 1; fi
    mkdir -p "$stash"
    # docs/lab-v4 without its recipes: loss logs and evaluation records; lab v3's loss logs and the
    # lab-v5 candidates' records (the tree grew past the limit beside a 28 MB carried model without them)
    for p in docs/lab-v4/*; do case "$p" in *.toml) ;; *) paths+=("$p") ;; esac; done
    for p in docs/lab-v3/*.csv docs/lab-v5/s7*; do [ -e "$p" ] && paths+=("$p"); done
    # ... and, since a carried model of 12 heads (32 MB) joined them, the lab-v5 records but its recipes
    # and needle files, the figures of docs and the CLI's agreement fixtures, which no GPU job reads.
    for p in docs/lab-v5/*/ docs/kv docs/report docs/*.png crates/headscope-cli/tests/fixtures; do
      p=${p%/}; case " ${paths[*]} " in *" $p "*) continue ;; esac; [ -e "$p" ] && paths+=("$p")
    done
    printf '%s\n' "${paths[@]}" > "$stash/.full"
    for p in "${paths[@]}"; do mkdir -p "$stash/$(dirname "$p")" && mv "$p" "$stash/$p"; done
    echo "stashed ${#paths[@]} paths in $stash; tree now $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes"
    # `git add DIR` or `commit -a` would now record them as deleted (the nineteenth session did once).
    echo "until '$0 back': add files to git by name, not by folder" ;;
  back)
    [ -f "$stash/.full" ] || { echo "nothing stashed in $stash" >&2; exit 1; }
    while read -r p; do
      if [ -e "$p" ]; then echo "$p exists in the tree again; left the stashed copy in $stash" >&2; continue; fi
      mkdir -p "$(dirname "$p")" && mv "$stash/$p" "$p"
    done < "$stash/.full"
    rm "$stash/.full"
    git status --short ;;
  *) echo "usage: $0 out|back" >&2; exit 2 ;;
esac
