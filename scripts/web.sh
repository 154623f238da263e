#!/usr/bin/env bash
# The browser lab in one command. Installs the pinned tools when missing (trunk, wasm-bindgen-cli,
# wasm-opt from npm binaryen, and for tests Chromium), then:
#
#   scripts/web.sh serve [trunk args]   build the page (release) and serve it on http://127.0.0.1:8080
#   scripts/web.sh build                build the page into dist/ (release, wasm-opt)
#   scripts/web.sh bundle               the page as one folder and zip a teacher can host anywhere:
#                                       bundle/headscope-lab/ and bundle/headscope-lab.zip (relative paths,
#                                       so any static host or subfolder serves it; a README.txt inside)
#   scripts/web.sh e2e                  build, then the end-to-end test in headless Chromium (WebGPU + CPU),
#                                       then the page under fuzzed uploads (12 mutants of each kind)
#   scripts/web.sh fuzz                 build, then only the fuzzed uploads (UPLOAD_MUTANTS=N, UPLOAD_SEED=S)
#   scripts/web.sh bench                build, then decode tokens/s and sweep time, WebGPU vs CPU
#   scripts/web.sh screenshots          build, then the README's screenshots into docs/
#   scripts/web.sh tools                only install the tools
#
# Versions are pinned to the set checked together (see the README): trunk 0.21.14 (0.22 needs a newer
# rustc), wasm-bindgen-cli 0.2.130 (must equal the wasm-bindgen crate in Cargo.lock), binaryen 132.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=0.2.130
E2E=$ROOT/tests/e2e
export PATH="$E2E/node_modules/.bin:$HOME/.cargo/bin:$PATH"

log() { echo "web.sh: $*" >&2; }

# `cargo +stable` where rustup manages toolchains (trunk's lockfile wants a stable compiler).
cargo_stable() {
    if command -v rustup >/dev/null 2>&1; then cargo +stable "$@"; else cargo "$@"; fi
}

install_tools() {
    if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        log "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi
    if ! trunk --version 2>/dev/null | grep -q " $TRUNK_VERSION"; then
        log "installing trunk $TRUNK_VERSION (about 10 minutes on two cores)"
        cargo_stable install --locked trunk --version "$TRUNK_VERSION"
    fi
    if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION"; then
        # Without --locked: its lockfile names a crate version this registry mirror lacks.
        log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 5 minutes)"
        cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
    fi
    if [ ! -x "$E2E/node_modules/.bin/wasm-opt" ] || [ ! -d "$E2E/node_modules/playwright-core" ] || [ ! -d "$E2E/node_modules/axe-core" ]; then
        command -v npm >/dev/null 2>&1 || { log "npm is missing: install Node.js 18 or newer (Debian: apt-get install nodejs npm)"; exit 1; }
        log "installing wasm-opt (npm binaryen), playwright-core and axe-core into tests/e2e/node_modules"
        (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

install_browser() {
    if [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then return; fi
    log "installing Debian's chromium"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
}

build() {
    trunk build --release --offline --skip-version-check
    local wasm
    for wasm in dist/*.wasm; do log "$(basename "$wasm"): $(( $(stat -c %s "$wasm") / 1024 )) KiB"; done
}

# The built page with relative paths, so that it runs from any folder of any static host (a school's
# web space, GitHub Pages, `python3 -m http.server` on a laptop from a USB stick), as a folder and a zip.
# (dist/ has relative paths already: Trunk.toml's public_url.)
bundle() {
    local out=$ROOT/bundle dir=$ROOT/bundle/headscope-lab
    rm -rf "$out"
    mkdir -p "$out"
    cp -r dist "$dir"
    cat > "$dir/README.txt" <<'TXT'
HeadScope lab: retrieval heads in the browser (https://arxiv.org/abs/2404.15574)

This folder is the whole lab: the page, its WebAssembly programs, the bundled lab model and the default
haystack and needles. Nothing in it calls the internet.

Put it on any static web host, in any folder (a school's web space, GitHub Pages, an intranet server),
and open the folder's address. After a first visit the page also works offline.

On a laptop, from a USB stick: browsers do not run a page's programs from file:// addresses, so serve
the folder with any local web server, for example (Python 3, installed on most machines):

    python3 -m http.server 8080 --directory headscope-lab

then open http://127.0.0.1:8080/ in Chrome, Edge, Firefox or Safari.
TXT
    (cd "$out" && python3 -m zipfile -c headscope-lab.zip headscope-lab/)
    log "bundle: $dir ($(du -sh "$dir" | cut -f1)) and $out/headscope-lab.zip ($(du -sh "$out/headscope-lab.zip" | cut -f1))"
}

# The page under fuzzed uploads (tests/e2e/fuzz-uploads.mjs): UPLOAD_MUTANTS mutants of each upload kind
# (default 12, as in CI; UPLOAD_SEED picks them), written by headscope-fuzz's write_uploads example.
fuzz_uploads() {
    local dir
    dir=$(mktemp -d)
    cargo run -q --release -p headscope-fuzz --example write_uploads -- "$dir" "${UPLOAD_MUTANTS:-12}" "${UPLOAD_SEED:-1}"
    node "$E2E/fuzz-uploads.mjs" "$dir"
    rm -rf "$dir"
}

# Serves dist/ with trunk and says where only once the page answers there (trunk builds again first).
serve() {
    local port=8080 arg prev=""
    for arg in "$@"; do
        if [ "$prev" = "--port" ]; then port=$arg; fi
        case "$arg" in --port=*) port=${arg#--port=} ;; esac
        prev=$arg
    done
    trunk serve --release --offline --skip-version-check "$@" &
    local pid=$!
    trap 'kill "$pid" 2>/dev/null' INT TERM
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            exit $?
        fi
        sleep 1
    done
    log "serving the lab on http://127.0.0.1:$port (Ctrl+C stops)"
    wait "$pid"
}

cmd=${1:-serve}
shift || true
case "$cmd" in
    serve)
        install_tools
        log "building the page (the first build compiles candle and wgpu to WebAssembly: several minutes)"
        serve "$@"
        ;;
    build)
        install_tools
        build
        ;;
    bundle)
        install_tools
        build
        bundle
        ;;
    e2e)
        install_tools
        install_browser
        build
        node "$E2E/e2e.mjs"
        node "$E2E/lessons.mjs"
        bundle
        node "$E2E/bundle.mjs" bundle
        fuzz_uploads
        ;;
    fuzz)
        install_tools
        install_browser
        build
        fuzz_uploads
        ;;
    bench)
        install_tools
        install_browser
        build
        node "$E2E/bench.mjs" "$@"
        ;;
    screenshots)
        install_tools
        install_browser
        build
        node "$E2E/screenshots.mjs"
        ;;
    tools)
        install_tools
        install_browser
        ;;
    *)
        log "unknown command $cmd: use serve, build, bundle, e2e, bench, screenshots or tools"
        exit 2
        ;;
esac
