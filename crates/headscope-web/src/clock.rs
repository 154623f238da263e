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

/// Seconds since an arbitrary fixed point: the engine's clock, which every native backend times with.
#[cfg(not(target_arch = "wasm32"))]
pub fn now() -> f64 {
    headscope_engine::decode::now()
}
