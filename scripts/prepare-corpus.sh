#!/usr/bin/env bash
# Builds the lab model's training text from public-domain or freely licensed English texts shipped as
# Debian packages (docs/corpus-sources.md lists every source, its version, licence and size):
#   - kjv.txt, jargon.txt, kjv-john.txt: the King James Version of the Bible (bible-kjv-text; the 1611
#     translation's copyright has expired), all books except the Gospel of John, which is held out as an
#     evaluation haystack; and The Jargon File (dict-jargon; "The Jargon File is in the public domain").
#     These three are written exactly as before: older recipes name them.
#   - about 60 MB more: novels (Jane Austen), game fiction (Battle for Wesnoth campaigns, Endless Sky,
#     Dungeon Crawl), essays and history (Bierce, Spurgeon, "Copyright Does Not Exist"), FOLDOC, technical
#     manuals (Python, Django, Rust, Linux, PostgreSQL, Perl, Debian) and user help (GIMP, LibreOffice, GNOME),
#     one paragraph per line;
#   - heldout-{novels,stories,essays,technical,userdocs}.txt: whole works of each kind kept out of training,
#     for measuring perplexity on unseen prose.
# Usage: scripts/prepare-corpus.sh OUT_DIR
# Runs as root on Debian 12 (bookworm), in about 2 minutes. The packages (about 450 MB to download) are
# unpacked in part under OUT_DIR/.cache (about 400 MB) and reused on the next run; delete it to start afresh.
# Same package versions give the same output bytes.
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

# ---------------------------------------------------------------------------------------------------------
# The larger corpus. Each line: package, the version the documented sizes were made with, and the parts of
# the package to unpack (none: all of it). apt serves only the newest version of a package in a suite: when a
# pinned version is gone the newest one is taken with a warning, and that file's bytes may change.
sources='
r-cran-janeaustenr     1.0.0-1             ./usr/lib/R/site-library/janeaustenr/data/*
wesnoth-1.16-did       1:1.16.9-1          *.cfg
wesnoth-1.16-dm        1:1.16.9-1          *.cfg
wesnoth-1.16-dw        1:1.16.9-1          *.cfg
wesnoth-1.16-ei        1:1.16.9-1          *.cfg
wesnoth-1.16-httt      1:1.16.9-1          *.cfg
wesnoth-1.16-l         1:1.16.9-1          *.cfg
wesnoth-1.16-low       1:1.16.9-1          *.cfg
wesnoth-1.16-nr        1:1.16.9-1          *.cfg
wesnoth-1.16-sof       1:1.16.9-1          *.cfg
wesnoth-1.16-sota      1:1.16.9-1          *.cfg
wesnoth-1.16-sotbe     1:1.16.9-1          *.cfg
wesnoth-1.16-thot      1:1.16.9-1          *.cfg
wesnoth-1.16-trow      1:1.16.9-1          *.cfg
wesnoth-1.16-tsg       1:1.16.9-1          *.cfg
wesnoth-1.16-ttb       1:1.16.9-1          *.cfg
wesnoth-1.16-utbs      1:1.16.9-1          *.cfg
endless-sky-data       0.9.8-1.2           ./usr/share/games/endless-sky/data/*
crawl-common           2:0.28.0-1.1        ./usr/share/crawl/dat/descript/*
dict-devil             1.0-13.1
cfi-en                 3.0-10.2
sword-comm-tdavid      2.1-1
dict-foldoc            20230119-1
python3.11-doc         3.11.2-6+deb12u9    ./usr/share/doc/python3.11/html/*
python-django-doc      3:3.2.25-0+deb12u7  ./usr/share/doc/python-django-doc/html/*
rust-doc               1.63.0+dfsg1-2      ./usr/share/doc/rust-doc/html/book/* ./usr/share/doc/rust-doc/html/reference/* ./usr/share/doc/rust-doc/html/nomicon/* ./usr/share/doc/rust-doc/html/rust-by-example/* ./usr/share/doc/rust-doc/html/edition-guide/* ./usr/share/doc/rust-doc/html/embedded-book/*
linux-doc-6.1          6.1.192-3           ./usr/share/doc/linux-doc-6.1/html/*
postgresql-doc-15      15.20-0+deb12u1     ./usr/share/doc/postgresql-doc-15/html/*
perl-doc               5.36.0-7+deb12u4    ./usr/share/perl/*
mh-book                200605-2.2          ./usr/share/doc/mh-book/html/*
debian-handbook        11.20220922         ./usr/share/doc/debian-handbook/html/en-US/*.html
debian-reference-en    2.100               ./usr/share/debian-reference/*.html
gimp-help-en           2.10.34-2           ./usr/share/gimp/2.0/help/en/*
libreoffice-help-en-us 4:7.4.7-1+deb12u14  ./usr/share/libreoffice/help/en-US/*
gnome-user-docs        43.0-2              ./usr/share/help/C/*
'
cache="$out/.cache"
mkdir -p "$cache/src"
command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; }
updated=0
download() {  # download NAME[=VERSION] into the current directory; refreshes the package lists once if needed
  apt-get download -qq -o APT::Sandbox::User=root "$1" >/dev/null 2>&1 && return 0
  [ "$updated" = 1 ] && return 1
  apt-get update -qq && updated=1
  apt-get download -qq -o APT::Sandbox::User=root "$1" >/dev/null 2>&1
}
while read -r name version parts; do
  [ -n "$name" ] || continue
  dir="$cache/src/$name"
  [ -f "$dir.version" ] && [ "$(cat "$dir.version")" = "$version" ] && continue
  tmp=$(mktemp -d "$cache/download.XXXXXX")
  if ! (cd "$tmp" && download "$name=$version"); then
    (cd "$tmp" && download "$name") || { echo "prepare-corpus: cannot download $name" >&2; exit 1; }
  fi
  deb=$(echo "$tmp"/*.deb)
  got=$(dpkg-deb -f "$deb" Version)
  [ "$got" = "$version" ] || echo "prepare-corpus: warning: $name $version is no longer in the archive; using $got" >&2
  rm -rf "$dir" && mkdir -p "$dir"
  # Pictures, fonts and styles are left out: they are not needed, and a partial unpack cannot restore the hard
  # links that some packages use between identical files in other languages' folders.
  # shellcheck disable=SC2086  # $parts is a list of tar patterns, word-split but not globbed here
  (set -f; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards --exclude='*.png' --exclude='*.gif' \
     --exclude='*.jpg' --exclude='*.svg' --exclude='*.xpm' --exclude='*.woff*' --exclude='*.ttf' --exclude='*.css' --exclude='*.js' $parts)
  rm -rf "$tmp"
  echo "$version" > "$dir.version"  # the pinned version, so a later run does not download it again
done <<< "$sources"
cat > "$cache/clean.py" <<'PY'
"""Turns the unpacked Debian packages under SRC into one-paragraph-per-line text files in OUT.
Usage: python3 clean.py SRC OUT   (SRC/<package>/ holds each package's unpacked files)
Standard library only; deterministic (files are read in sorted order, no randomness)."""
import gzip, os, re, struct, sys, unicodedata, zlib
from html.parser import HTMLParser

SRC, OUT = sys.argv[1], sys.argv[2]

# ---------------------------------------------------------------- helpers
_CTRL = dict.fromkeys(c for c in range(32) if c not in (9, 10))
_CTRL.update({0xad: None, 0x200b: None, 0xfeff: None, 0xa0: 32, 0x2028: 32, 0x2029: 32})


def norm(s):
    """NFC, no control characters, runs of whitespace collapsed to one space."""
    return ' '.join(unicodedata.normalize('NFC', s).translate(_CTRL).split())


WORD = re.compile(r"[^\W\d_][^\W\d_'’.-]*")
URL = re.compile(r'https?://|ftp://|www\.\w|\w@\w+\.\w')
END = tuple('.!?:;"\')”’')
BOILERPLATE = re.compile(r'(?i:without any warranty)|[Pp]ermission is (hereby )?granted|Copyright \(c\)|©|All rights reserved')


def prose(p, minwords=6, end=True):
    """Heuristic: does this paragraph read as prose (not a heading, code, table row or link list)?"""
    words = p.split()
    if len(words) < minwords or len(p) < 4 * minwords:
        return False
    if end and not p.endswith(END):
        return False
    if URL.search(p) or BOILERPLATE.search(p):
        return False
    nospace = len(p) - p.count(' ')
    if sum(c.isalpha() for c in p) < 0.75 * nospace:
        return False
    if len(WORD.findall(p)) < 0.8 * len(words):  # mostly real words, not identifiers/numbers
        return False
    if sum(any(c.isdigit() for c in w) for w in words) > 0.2 * len(words):
        return False
    if not any(c.islower() for c in p):
        return False
    codey = sum(1 for w in words if re.search(r'[_=<>{}\[\]|\\#$@^~]|\w\(|::|->|\.\w+\(', w))
    return codey <= 0.1 * len(words)


def write(name, paras, dedupe=True, exclude=()):
    """Writes one paragraph per line; returns the set of paragraphs written."""
    seen = set()
    path = os.path.join(OUT, name)
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for p in paras:
            if p in exclude or (dedupe and p in seen):
                continue
            seen.add(p)
            f.write(p + '\n')
    return seen


def files(root, exts, skip=()):
    """Files under root with one of the extensions, in sorted (deterministic) order."""
    found = []
    for dp, dn, fn in os.walk(root):
        dn[:] = sorted(d for d in dn if d not in skip)
        for f in fn:
            if f.endswith(exts):
                found.append(os.path.join(dp, f))
    return sorted(found, key=natural)


def natural(path):
    """Sort key that puts ch2 before ch10."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r'(\d+)', path))]


def read(path):
    op = gzip.open if path.endswith(('.gz', '.dz')) else open
    with op(path, 'rb') as f:
        return f.read().decode('utf-8', errors='replace')


def pkg(name, *rel):
    return os.path.join(SRC, name, *rel)


# ---------------------------------------------------------------- HTML / XML
SKIP_TAGS = {'script', 'style', 'pre', 'nav', 'head', 'svg', 'math', 'title', 'button', 'select',
             'textarea', 'header', 'footer', 'aside', 'form', 'sup', 'info', 'screen', 'synopsis',
             'media', 'object', 'map'}
BREAK_TAGS = {'p', 'li', 'dd', 'dt', 'blockquote', 'div', 'td', 'th', 'tr', 'table', 'h1', 'h2', 'h3',
              'h4', 'h5', 'h6', 'ul', 'ol', 'dl', 'section', 'article', 'body', 'html', 'figcaption',
              'caption', 'center', 'item', 'note', 'steps', 'list', 'terms', 'tree', 'example',
              'listing', 'figure', 'desc', 'links', 'page', 'comment', 'quote', 'cite'}
HEAD_TAGS = {'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'dt', 'th', 'caption', 'figcaption'}
SKIP_CLASS = re.compile(
    r'(?:^|\s)(?:sphinxsidebar|related|footer|headerlink|highlight(?:-\w+)?|toctree-wrapper|sig|'
    r'sig-object|navheader|navfooter|toc|list-of-\w+|titlepage|legalnotice|programlisting|screen|'
    r'synopsis|cmdsynopsis|funcsynopsis|literallayout|navbar|breadcrumbs?|contents|topic|rubric|'
    r'footnotes?|citation|genindex|searchbox|refsynopsisdiv|indexterm|glosslist|doc-revision|'
    r'c function|c struct|c macro|c enum|c type|c var|c member|c union|c enumerator|'
    r'relbar\w*|bottomnav|topnav|copyright|author|authorgroup|revhistory)(?=\s|$)')
VOID = {'br', 'hr', 'img', 'meta', 'link', 'input', 'area', 'base', 'col', 'embed', 'param', 'source',
        'track', 'wbr'}


class _Html(HTMLParser):
    def __init__(self, skip_tables):
        super().__init__(convert_charrefs=True)
        self.stack, self.skip, self.head, self.buf, self.out = [], 0, 0, [], []
        self.skip_tags = SKIP_TAGS | ({'table'} if skip_tables else set())

    def flush(self):
        t = norm(''.join(self.buf))
        self.buf = []
        if t:
            self.out.append(t)

    def handle_starttag(self, tag, attrs):
        tag = tag.split(':')[-1]
        if tag in VOID:
            if tag in ('br', 'hr') and not self.skip:
                self.flush()
            return
        a = dict(attrs)
        cls = a.get('class') or ''
        skip = (tag in self.skip_tags or a.get('role') in ('navigation', 'search')
                or (tag == 'code' and a.get('mime') is not None)
                or (bool(SKIP_CLASS.search(cls)) and 'sig-inline' not in cls))
        if tag in BREAK_TAGS and not self.skip:
            self.flush()
        self.stack.append((tag, skip, tag in HEAD_TAGS))
        self.skip += skip
        self.head += tag in HEAD_TAGS

    def handle_endtag(self, tag):
        tag = tag.split(':')[-1]
        if tag in VOID:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                break
        else:
            return
        while len(self.stack) > i:
            t, skip, head = self.stack.pop()
            if t in BREAK_TAGS and not self.skip:
                if self.head:
                    self.buf = []  # headings are dropped
                else:
                    self.flush()
            self.skip -= skip
            self.head -= head

    def handle_data(self, d):
        if not self.skip:
            self.buf.append(d)


def html_paras(text, skip_tables=True):
    x = _Html(skip_tables)
    x.feed(text)
    x.close()
    if not x.head:
        x.flush()
    return x.out


def html_tree(root, exts=('.html', '.htm'), skip_dirs=(), skip_files=re.compile(r'$^'),
              skip_tables=True, minwords=6):
    for path in files(root, exts, skip_dirs):
        if skip_files.search(os.path.relpath(path, root)):
            continue
        for p in html_paras(read(path), skip_tables):
            if prose(p, minwords):
                yield p


# ---------------------------------------------------------------- Jane Austen (R lazy-load database)
def r_strings(blob):
    """Character vector from one R serialization (XDR, version 2 or 3) of a plain STRSXP."""
    assert blob[:2] == b'X\n', 'not an XDR R serialization'
    q = 2 + 12
    if struct.unpack('>I', blob[2:6])[0] == 3:
        q += 4 + struct.unpack('>I', blob[q:q + 4])[0]
    flags, n = struct.unpack('>Ii', blob[q:q + 8])
    assert flags & 0xff == 16, 'not a character vector'
    q += 8
    out = []
    for _ in range(n):
        _, ln = struct.unpack('>Ii', blob[q:q + 8])
        q += 8
        out.append('' if ln < 0 else blob[q:q + ln].decode('utf-8', 'replace'))
        q += max(ln, 0)
    return out


def austen():
    d = pkg('r-cran-janeaustenr', 'usr/lib/R/site-library/janeaustenr/data')
    rdb = open(os.path.join(d, 'Rdata.rdb'), 'rb').read()
    titles = {'emma': 'emma', 'mansfield park': 'mansfieldpark', 'northanger abbey': 'northangerabbey',
              'persuasion': 'persuasion', 'pride and prejudice': 'prideprejudice',
              'sense and sensibility': 'sensesensibility'}
    books, p = {}, 0
    while p < len(rdb):  # each object: 4-byte length, then a zlib stream
        dec = zlib.decompressobj()
        lines = r_strings(dec.decompress(rdb[p + 4:]))
        books[titles[lines[0].strip().lower()]] = lines
        p = len(rdb) - len(dec.unused_data)
    assert len(books) == 6, sorted(books)
    result = {}
    for name, lines in sorted(books.items()):
        paras, cur, started = [], [], False
        for line in lines + ['']:
            if line.strip():
                cur.append(line)
                continue
            if cur:
                p = norm(' '.join(cur).replace('_', ''))
                cur = []
                if re.match(r'(?i)chapter\b', p):
                    started = True
                    continue
                if started and any(c.islower() for c in p) and not re.match(r'(?i)(volume|end of)\b', p):
                    paras.append(p)
        result[name] = paras
    return result


# ---------------------------------------------------------------- dictd files
def dict_blocks(path):
    """Blank-line separated blocks of a dictd .dict.dz file, as lists of raw lines."""
    block = []
    for line in read(path).split('\n'):
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def devil():
    text = read(pkg('dict-devil', 'usr/share/dictd/devil.dict.dz'))
    text = text[re.search(r'\n *PREFACE *\n', text).end():]
    out = []
    for block in re.split(r'\n\s*\n', text):
        lines = [l for l in block.split('\n') if l.strip() and not re.match(r' {20,}\S', l)]
        p = norm(' '.join(lines).replace('_', ''))
        if p and prose(p, minwords=3):
            out.append(p)
    return out


def foldoc():
    out, entry = [], None

    def emit():
        if entry is None:
            return
        paras = [norm(' '.join(b).replace('{', '').replace('}', '')) for b in entry]
        if any('Jargon File' in p for p in paras):
            return  # already in jargon.txt
        for p in paras:
            p = re.sub(r'^(\d+\.\s+)?<[^>]*>\s*', '', p)  # sense number and <category> tag
            if p.startswith('[') or re.fullmatch(r'\(\d{4}-\d\d-\d\d\)', p):
                continue
            if prose(p, minwords=5):
                out.append(p)

    for block in dict_blocks(pkg('dict-foldoc', 'usr/share/dictd/foldoc.dict.dz')):
        if not block[0][0].isspace():  # a headword block starts a new entry
            emit()
            entry = None if block[0].startswith('00-database') else []  # skip the database's own info
            continue
        if entry is not None:
            entry.append(block)
    emit()
    return out


# ---------------------------------------------------------------- Perl documentation (POD)
POD_CODE = re.compile(r'([A-Z])<(<+\s)?')


def pod_inline(s):
    """Strip POD formatting codes: B<x> -> x, L<text|link> -> text, E<gt> -> >, X<..>/Z<> -> ''."""
    ents = {'lt': '<', 'gt': '>', 'verbar': '|', 'sol': '/', 'quot': '"', 'amp': '&'}
    out, i, stack = [], 0, []
    while i < len(s):
        m = POD_CODE.match(s, i)
        if m and (i == 0 or not s[i - 1].isalnum() or True):
            letter, dbl = m.group(1), m.group(2)
            close = ' ' + '>' * (len(dbl) - 1) if dbl else '>'
            stack.append((letter, close, len(out)))
            i = m.end()
            continue
        if stack and s.startswith(stack[-1][1], i):
            letter, close, start = stack.pop()
            inner = ''.join(out[start:])
            del out[start:]
            if letter in 'XZ':
                inner = ''
            elif letter == 'E':
                inner = ents.get(inner, chr(int(inner, 0)) if inner[:1].isdigit() else '')
            elif letter == 'L':
                if '|' in inner:
                    inner = inner.split('|', 1)[0]
                elif '/' in inner:
                    a, b = inner.split('/', 1)
                    inner = b.strip('"') if b else a
            out.append(inner)
            i += len(close)
            continue
        out.append(s[i])
        i += 1
    return ''.join(out)


def perl():
    root = pkg('perl-doc', 'usr/share/perl')
    skip = re.compile(r'/perl5\d+delta\.pod$|/perl(toc|apio|intern|api|diag|artistic|gpl)\.pod$')
    for path in files(root, ('.pod',)):
        if skip.search(path):
            continue
        in_pod, in_begin = True, False
        for para in re.split(r'\n\s*\n', read(path)):
            first = para.lstrip('\n')
            if first.startswith('=begin') or first.startswith('=for'):
                in_begin = first.startswith('=begin')
                continue
            if first.startswith('=end'):
                in_begin = False
                continue
            if first.startswith('=cut'):
                in_pod = False
                continue
            if first.startswith('=pod') or first.startswith('=head'):
                in_pod = True
                continue
            if first.startswith('='):
                if first.startswith('=item'):
                    rest = first.split(None, 1)[1:] or ['']
                    if len(rest[0].split()) > 6:  # "=item text" used as a paragraph
                        p = norm(pod_inline(rest[0]))
                        if prose(p):
                            yield p
                continue
            if not in_pod or in_begin or first[:1] in (' ', '\t'):
                continue  # code or verbatim block
            p = norm(pod_inline(first))
            if prose(p):
                yield p


# ---------------------------------------------------------------- Spurgeon, Treasury of David (SWORD zCom4)
def treasury():
    d = pkg('sword-comm-tdavid', 'usr/share/sword/modules/comments/zcom/tdavid')
    idx, data = open(os.path.join(d, 'ot.czs'), 'rb').read(), open(os.path.join(d, 'ot.czz'), 'rb').read()
    psalms = {}
    for k in range(len(idx) // 12):
        off, size, _ = struct.unpack('<III', idx[12 * k:12 * k + 12])
        raw = zlib.decompress(data[off:off + size]).decode('utf-8', 'replace')
        m = re.search(r'osisID="Ps\.(\d+)"', raw)
        num = int(m.group(1)) if m else 0  # 0: the preface
        raw = re.sub(r'<title\b[^>]*>.*?</title>', '\n\n', raw, flags=re.S)
        raw = re.sub(r'<(div|lb|p|l|lg|chapter)\b[^>]*>', '\n\n', raw)
        raw = re.sub(r'<[^>]+>', '', raw)
        raw = raw.replace('&quot;', '"').replace('&amp;', '&').replace('&lt;', '<').replace('&gt;', '>')
        paras = [norm(p) for p in re.split(r'\n\s*\n', raw)]
        outline = re.compile(r'(\(?[0-9a-z]{1,3}[.)]|Verse \d+\.|Whole Psalm\.)\s')  # sermon-outline headings
        psalms.setdefault(num, []).extend(p for p in paras if prose(p, minwords=6)
                                          and not (outline.match(p) and len(p.split()) < 12))
    return psalms


# ---------------------------------------------------------------- game fiction
ES_SUBST = {'first': 'Robin', 'last': 'Hale', 'ship': 'Wanderer', 'planet': 'Hestia',
            'system': 'Alnitak', 'destination': 'Hestia in the Alnitak system', 'origin': 'Earth',
            'payment': '48,000 credits', 'bunks': 'four', 'tons': 'twelve tons', 'cargo': 'medical supplies',
            'commodity': 'food', 'date': 'the 12th', 'day': 'Tuesday', 'npc': 'Osprey', 'capacity': 'four', 'fare': '3,000 credits',
            'passengers': 'four passengers', 'stopovers': 'Hestia', 'waypoints': 'Alnitak',
            'fine': '10,000 credits', 'origin planet': 'Earth', 'model': 'Sparrow', 'gov': 'the Republic'}


def endless_sky():
    """Paragraphs of (training, held out): the Free Worlds storyline is held out."""
    root = pkg('endless-sky-data', 'usr/share/games/endless-sky/data')
    train, held = [], []
    for path in files(root, ('.txt',)):
        out = held if os.path.basename(path).startswith('free worlds') else train
        text = read(path)
        strings = re.findall(r'`([^`]*)`', text)
        strings += re.findall(r'^\s*(?:description|spaceport)\s+"([^"\n]*)"\s*$', text, flags=re.M)
        for s in strings:
            s = re.sub(r'<([a-z ]+)>', lambda m: ES_SUBST.get(m.group(1), m.group(0)), s)
            if '<' in s or '>' in s:
                continue
            for part in re.split(r'\n\s*\n', s):
                p = norm(part)
                if prose(p, minwords=4):
                    out.append(p)
    return train, held


WES_STR = re.compile(r'(?:_\s*)?"((?:[^"]|"")*)"')


def wml_text(s):
    s = s.replace('""', '"')
    s = re.sub(r'<[^>]*>', '', s)
    s = s.replace('&amp;', '&').replace('&lt;', '<').replace('&gt;', '>')
    return s


def wml_value(text, pos):
    """The (possibly '+'-concatenated) string value starting at pos."""
    parts = []
    while True:
        m = WES_STR.match(text, pos)
        if not m:
            break
        parts.append(m.group(1))
        pos = m.end()
        m2 = re.match(r'\s*\+\s*', text[pos:])
        if not m2:
            break
        pos += m2.end()
    return ''.join(parts)


def wesnoth_campaign(cdir):
    out = []
    for path in files(cdir, ('.cfg',)):
        text = '\n'.join(l for l in read(path).split('\n') if not l.lstrip().startswith('#'))
        for m in re.finditer(r'\b(message|story)\s*=\s*(?=_?\s*")', text):
            value = wml_text(wml_value(text, m.end()))
            speaker = ''
            if m.group(1) == 'message':
                block_start = text.rfind('[message]', 0, m.start())
                block_end = text.find('[/message]', m.end())
                block = text[block_start:block_end] if block_start >= 0 and block_end >= 0 else ''
                sm = re.search(r'\b(?:speaker|id)\s*=\s*"?([^"\n]+?)"?\s*$', block, flags=re.M)
                if sm and re.fullmatch(r"[A-Z][\w'-]*(?: [A-Z][\w'-]*)*", sm.group(1)) \
                        and sm.group(1) not in ('Narrator',):
                    speaker = sm.group(1).replace('_', ' ')
            for part in re.split(r'\n\s*\n', value):
                p = norm(part)
                if '$' in p or '{' in p or '}' in p or not prose(p, minwords=3):
                    continue
                out.append(f'{speaker}: {p}' if speaker else p)
    return out


def crawl():
    root = pkg('crawl-common', 'usr/share/crawl/dat/descript')
    out = []
    for name in sorted(os.listdir(root)):
        if not name.endswith('.txt') or name == 'quotes.txt':
            continue  # quotes.txt quotes other (partly copyrighted) books
        for entry in read(os.path.join(root, name)).split('%%%%'):
            lines = [l for l in entry.split('\n') if not l.startswith('#')]
            while lines and not lines[0].strip():
                lines.pop(0)
            body = '\n'.join(lines[1:])  # first line is the key
            for part in re.split(r'\n\s*\n', body):
                p = norm(re.sub(r'<[^>]*>', '', part))
                if re.search(r'[@${}\[\]]|it is a bug', p) or not prose(p, minwords=5):
                    continue
                out.append(p)
    return out


# ---------------------------------------------------------------- main
def main():
    os.makedirs(OUT, exist_ok=True)
    # Novels: Jane Austen; Persuasion is held out.
    books = austen()
    held = write('heldout-novels.txt', books['persuasion'], dedupe=False)
    write('austen.txt', [p for b in ('sensesensibility', 'prideprejudice', 'mansfieldpark', 'emma',
                                     'northangerabbey') for p in books[b]], dedupe=False, exclude=held)
    # Stories: game fiction. The Wesnoth campaign "The South Guard" and Endless Sky's Free Worlds storyline
    # are held out.
    camps = {}
    for d in sorted(os.listdir(SRC)):
        root = os.path.join(SRC, d, 'usr/share/games/wesnoth/1.16/data/campaigns')
        if d.startswith('wesnoth-') and os.path.isdir(root):
            for c in sorted(os.listdir(root)):
                camps[c] = os.path.join(root, c)
    es_train, es_held = endless_sky()
    held = write('heldout-stories.txt', wesnoth_campaign(camps.pop('The_South_Guard')) + es_held)
    write('wesnoth.txt', [p for c in sorted(camps) for p in wesnoth_campaign(camps[c])], exclude=held)
    write('endless-sky.txt', es_train, exclude=held)
    write('crawl.txt', crawl())
    # Essays, satire, history. Spurgeon on Psalms 146-150 is held out.
    write('devil.txt', devil())
    write('cfi.txt', html_tree(pkg('cfi-en', 'usr/share/doc/cfi-en/html'), skip_tables=False,
                               skip_files=re.compile(r'mainindex|index\.html')))
    ps = treasury()
    held_ps = range(146, 151)
    held = write('heldout-essays.txt', [p for n in held_ps for p in ps[n]])
    write('spurgeon.txt', [p for n in sorted(ps) if n not in held_ps for p in ps[n]], exclude=held)
    write('foldoc.txt', foldoc())
    # Technical documentation. The Python HOWTOs are held out.
    py = pkg('python3.11-doc', 'usr/share/doc/python3.11/html')
    held = write('heldout-technical.txt', html_tree(os.path.join(py, 'howto')))
    write('python-docs.txt', html_tree(py, skip_dirs=('_sources', '_static', '_images', 'howto'), skip_files=re.compile(
        r'^(genindex|search|py-modindex|license|copyright|contents|bugs|download|about)')), exclude=held)
    dj = pkg('python-django-doc', 'usr/share/doc/python-django-doc/html')
    write('django-docs.txt', html_tree(dj, skip_dirs=('_sources', '_static', '_images', '_modules', 'releases'),
                                       skip_files=re.compile(r'^(genindex|search|py-modindex|contents)')))
    rs = pkg('rust-doc', 'usr/share/doc/rust-doc/html')
    write('rust-books.txt', [p for b in ('book', 'reference', 'nomicon', 'rust-by-example', 'edition-guide',
                                         'embedded-book')
                             for p in html_tree(os.path.join(rs, b),
                                                skip_files=re.compile(r'(^|/)(print|toc|404)\.html$'))])
    write('linux-docs.txt', html_tree(pkg('linux-doc-6.1', 'usr/share/doc/linux-doc-6.1/html'),
                                      skip_dirs=('_sources', '_static', '_images', 'translations'),
                                      skip_files=re.compile(r'^(genindex|search)|fdl-appendix')))
    write('postgresql-docs.txt', html_tree(pkg('postgresql-doc-15', 'usr/share/doc/postgresql-doc-15/html'),
                                           skip_files=re.compile(r'^(release-|bookindex|legalnotice)')))
    write('perl-docs.txt', perl())
    write('mh-book.txt', html_tree(pkg('mh-book', 'usr/share/doc/mh-book/html')))
    write('debian-handbook.txt', html_tree(pkg('debian-handbook', 'usr/share/doc/debian-handbook/html/en-US')))
    write('debian-reference.txt', html_tree(pkg('debian-reference-en', 'usr/share/debian-reference'),
                                            skip_files=re.compile(r'^index')))
    # User documentation. The GNOME System Administration Guide and LibreOffice Impress's help are held out.
    gh = pkg('gnome-user-docs', 'usr/share/help/C')
    lo = pkg('libreoffice-help-en-us', 'usr/share/libreoffice/help/en-US')
    held = write('heldout-userdocs.txt', list(html_tree(os.path.join(gh, 'system-admin-guide'), exts=('.page',)))
                 + list(html_tree(os.path.join(lo, 'text', 'simpress'))))
    write('gimp-help.txt', html_tree(pkg('gimp-help-en', 'usr/share/gimp/2.0/help/en'),
                                     skip_files=re.compile(r'^(gfdl|legal)')), exclude=held)
    write('libreoffice-help.txt', html_tree(lo, skip_dirs=('simpress',)), exclude=held)
    write('gnome-help.txt', html_tree(os.path.join(gh, 'gnome-help'), exts=('.page',)), exclude=held)


if __name__ == '__main__':
    main()
PY
python3 "$cache/clean.py" "$cache/src" "$out"
wc -c "$out"/*.txt
