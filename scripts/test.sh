#!/usr/bin/env bash
# The README's test command (and CI's, through .ci/run): every test, from the repository root.
# Rust tests first (cargo test --workspace --locked), then the browser lab end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
# headscope-gpu's tests run the GPU forward on Vulkan: Mesa's lavapipe (a CPU Vulkan driver) lets CI
# really run them; without a driver they print why they skip. Idempotent.
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null; } ||
            echo "warning: could not install mesa-vulkan-drivers; headscope-gpu tests will skip" >&2
    else
        echo "warning: mesa-vulkan-drivers is missing and cannot be installed here; headscope-gpu tests will skip" >&2
    fi
fi
cargo test --workspace --locked
# The browser lab end to end: installs the pinned web tools and Chromium when missing (idempotent),
# builds the page, and checks it in headless Chromium against `headscope detect` (WebGPU and CPU).
scripts/web.sh e2e
