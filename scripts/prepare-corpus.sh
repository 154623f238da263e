#!/usr/bin/env bash
# Builds the lab model's training text from two public-domain works shipped as Debian packages:
#   - the King James Version of the Bible (bible-kjv-text; the 1611 translation's copyright has expired),
#     all books except the Gospel of John, which is held out as an evaluation haystack;
#   - The Jargon File (dict-jargon; "The Jargon File is in the public domain").
# Usage: scripts/prepare-corpus.sh OUT_DIR   (writes OUT_DIR/kjv.txt, OUT_DIR/jargon.txt, OUT_DIR/kjv-john.txt)
set -euo pipefail
out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
if ! command -v bible >/dev/null || [ ! -f /usr/share/dictd/jargon.dict.dz ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv bible-kjv-text dict-jargon >/dev/null
fi
# One paragraph per chapter: verse numbers dropped, verses joined.
bible -f "Gen1:1-Rev22:21" | awk '
  { ref=$1; sub(/^[^ ]+ /, ""); book=ref; sub(/[0-9]+:[0-9]+$/, "", book); chap=ref; sub(/^[^0-9]*[0-9]*[^0-9]*/, "", chap);
    split(ref, a, ":"); key=a[1];
    if (key != last && last != "") { print para > (lastbook == "John" ? held : train); para="" }
    para = (para == "" ? $0 : para " " $0); last=key; lastbook=book }
  END { print para > (lastbook == "John" ? held : train) }' held="$out/kjv-john.txt" train="$out/kjv.txt"
# Entries of the Jargon File as paragraphs, cross-reference braces removed.
zcat /usr/share/dictd/jargon.dict.dz | awk '/^00-database/{skip=1} /^[^ 0]/{skip=0} !skip' \
  | sed -e 's/[{}]//g' -e 's/^ *//' | awk 'NF==0{if(p!="")print p; p=""; next} {p=(p==""?$0:p" "$0)} END{if(p!="")print p}' > "$out/jargon.txt"
wc -c "$out"/*.txt
