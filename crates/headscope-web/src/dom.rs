//! Small DOM helpers for the page: finding elements, building them, listening, reading files,
//! downloading. Every failure is a `String` the page can show; nothing here panics.

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, Element, HtmlElement, Window};

/// Result with a message for the page.
pub type Res<T> = Result<T, String>;

/// The text of a JS error value.
pub fn js_error(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    js_sys::JSON::stringify(e).ok().and_then(|s| s.as_string()).unwrap_or_else(|| "unknown error".into())
}

/// The window.
pub fn window() -> Res<Window> {
    web_sys::window().ok_or_else(|| "no window (the page script runs outside a page)".to_string())
}

/// The document.
pub fn document() -> Res<Document> {
    window()?.document().ok_or_else(|| "no document".to_string())
}

/// The element with `id`, as type `T`.
pub fn by_id<T: JsCast>(id: &str) -> Res<T> {
    document()?
        .get_element_by_id(id)
        .ok_or_else(|| format!("the page has no element #{id}"))?
        .dyn_into::<T>()
        .map_err(|_| format!("#{id} is not the expected kind of element"))
}

/// A new element `tag` with `class` (if not empty) and text.
pub fn el(tag: &str, class: &str, text: &str) -> Res<HtmlElement> {
    let e: HtmlElement =
        document()?.create_element(tag).map_err(|e| js_error(&e))?.dyn_into().map_err(|_| format!("<{tag}> is no HTML element"))?;
    if !class.is_empty() {
        e.set_class_name(class);
    }
    if !text.is_empty() {
        e.set_text_content(Some(text));
    }
    Ok(e)
}

/// Appends `child` to `parent`.
pub fn append(parent: &impl AsRef<web_sys::Node>, child: &impl AsRef<web_sys::Node>) -> Res<()> {
    parent.as_ref().append_child(child.as_ref()).map(|_| ()).map_err(|e| js_error(&e))
}

/// Removes every child of `e`.
pub fn clear(e: &Element) {
    e.set_inner_html("");
}

/// Runs `f` on every `event` at `target` for the page's lifetime.
pub fn on<E: JsCast + wasm_bindgen::convert::FromWasmAbi + 'static>(
    target: &impl AsRef<web_sys::EventTarget>,
    event: &str,
    f: impl FnMut(E) + 'static,
) -> Res<()> {
    let closure = Closure::<dyn FnMut(E)>::new(f);
    target.as_ref().add_event_listener_with_callback(event, closure.as_ref().unchecked_ref()).map_err(|e| js_error(&e))?;
    // Listeners on the page's fixed elements live as long as the page.
    closure.forget();
    Ok(())
}

/// Awaits a promise, turning a rejection into a message.
pub async fn wait(p: Promise) -> Res<JsValue> {
    JsFuture::from(p).await.map_err(|e| js_error(&e))
}

/// The text of a file.
pub async fn file_text(file: &web_sys::File) -> Res<String> {
    wait(file.text()).await?.as_string().ok_or_else(|| format!("{} is not text", file.name()))
}

/// The bytes of a file.
pub async fn file_bytes(file: &web_sys::File) -> Res<js_sys::ArrayBuffer> {
    wait(file.array_buffer()).await?.dyn_into().map_err(|_| format!("{} could not be read", file.name()))
}

/// Fetches `url` as text.
pub async fn fetch_text(url: &str) -> Res<String> {
    let resp: web_sys::Response = wait(window()?.fetch_with_str(url)).await?.dyn_into().map_err(|_| "not a response".to_string())?;
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    wait(resp.text().map_err(|e| js_error(&e))?).await?.as_string().ok_or_else(|| format!("{url} is not text"))
}

/// Offers `bytes` to the user as a file download called `name`.
pub fn download_bytes(name: &str, mime: &str, bytes: &[u8]) -> Res<()> {
    let parts = Array::new();
    parts.push(&Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(|e| js_error(&e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| js_error(&e))?;
    let result = download_url(name, &url);
    let _ = web_sys::Url::revoke_object_url(&url);
    result
}

/// Offers `url` (an object or data URL) as a download called `name`.
pub fn download_url(name: &str, url: &str) -> Res<()> {
    let a: web_sys::HtmlAnchorElement = document()?.create_element("a").map_err(|e| js_error(&e))?.unchecked_into();
    a.set_href(url);
    a.set_download(name);
    let body = document()?.body().ok_or("no body")?;
    append(&body, &a)?;
    a.click();
    a.remove();
    Ok(())
}

/// Shows or hides `e`.
pub fn show(e: &HtmlElement, visible: bool) {
    e.set_hidden(!visible);
}

/// Waits for the charts' font, so text measured for the layout is the text drawn.
pub async fn load_font(family: &str) {
    let Ok(doc) = document() else { return };
    let Ok(fonts) = js_sys::Reflect::get(&doc, &"fonts".into()) else { return };
    let Ok(load) = js_sys::Reflect::get(&fonts, &"load".into()) else { return };
    let Ok(load) = load.dyn_into::<js_sys::Function>() else { return };
    if let Ok(p) = load.call1(&fonts, &format!("15px \"{family}\"").into()) {
        if let Ok(p) = p.dyn_into::<Promise>() {
            let _ = JsFuture::from(p).await;
        }
    }
}

/// Files of a dropped folder (or of dropped files), with their paths, read from the drop's entries.
pub async fn dropped_files(dt: &web_sys::DataTransfer) -> Res<Vec<(String, web_sys::File)>> {
    let items = dt.items();
    let mut entries = Vec::new();
    for i in 0..items.length() {
        if let Some(item) = items.get(i) {
            if let Ok(Some(entry)) = item.webkit_get_as_entry() {
                entries.push(entry);
            }
        }
    }
    let mut out = Vec::new();
    // Walk breadth-first; folders are read in the batches readEntries returns.
    while let Some(entry) = entries.pop() {
        if entry.is_directory() {
            let dir: web_sys::FileSystemDirectoryEntry = entry.unchecked_into();
            let reader = dir.create_reader();
            loop {
                let batch = Promise::new(&mut |resolve, reject| {
                    if let Err(e) = reader.read_entries_with_callback_and_callback(&resolve, &reject) {
                        let _ = reject.call1(&JsValue::NULL, &e);
                    }
                });
                let batch: Array = wait(batch).await?.dyn_into().map_err(|_| "a folder listing is not a list".to_string())?;
                if batch.length() == 0 {
                    break;
                }
                for e in batch.iter() {
                    entries.push(e.unchecked_into());
                }
            }
        } else {
            let path = entry.full_path();
            let file_entry: web_sys::FileSystemFileEntry = entry.unchecked_into();
            let file = Promise::new(&mut |resolve, reject| {
                file_entry.file_with_callback_and_callback(&resolve, &reject);
            });
            out.push((path.trim_start_matches('/').to_string(), wait(file).await?.unchecked_into()));
        }
    }
    if out.is_empty() {
        if let Some(files) = dt.files() {
            for i in 0..files.length() {
                if let Some(f) = files.get(i) {
                    out.push((f.name(), f));
                }
            }
        }
    }
    Ok(out)
}

/// The browser's preferred language, where the page has it.
pub fn browser_lang() -> Option<crate::strings::Lang> {
    let navigator = window().ok()?.navigator();
    let languages = navigator.languages();
    languages.iter().filter_map(|l| l.as_string()).chain(navigator.language()).find_map(|l| crate::strings::Lang::parse(&l))
}
