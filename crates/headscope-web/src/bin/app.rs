//! The lab page's entry point (the main thread): builds nothing itself, see `headscope_web::app`.

#[cfg(target_arch = "wasm32")]
fn main() {
    headscope_web::app::start();
}

/// Natively there is no page: say how to get one.
#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the lab page runs in a browser: `scripts/web.sh serve` builds and serves it");
}
