//! The lab's Web Worker entry point: runs the model off the main thread, see `headscope_web::worker`.

#[cfg(target_arch = "wasm32")]
fn main() {
    headscope_web::worker::start();
}

/// Natively there is no worker: say how to get one.
#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the lab's worker runs in a browser: `scripts/web.sh serve` builds and serves it");
}
