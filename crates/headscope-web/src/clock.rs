//! A monotonic clock in seconds on every target: `performance.now()` in the browser (std's `Instant`
//! panics on wasm32-unknown-unknown), `Instant` natively.

/// Seconds since an arbitrary fixed point.
#[cfg(target_arch = "wasm32")]
pub fn now() -> f64 {
    use wasm_bindgen::JsCast;
    // Both the page (Window) and the worker (WorkerGlobalScope) have `performance`.
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or_else(js_sys::Date::now, |p| p.now())
        / 1000.0
}

/// Seconds since an arbitrary fixed point.
#[cfg(not(target_arch = "wasm32"))]
pub fn now() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}
