//! The page's inputs as a value that travels: in a link ("Copy link": compressed into the URL's
//! fragment, so a teacher can send a prepared experiment) and in the browser's storage (the last
//! session, restored on reload). No browser here, so native tests cover it; the link's text is outside
//! input and is read with limits (a fuzz target runs it).

use headscope_core::HeadId;
use serde::{Deserialize, Serialize};

/// The fragment key of a shared link: `...#state=TEXT`.
pub const LINK_KEY: &str = "state=";
/// Haystacks up to this many characters travel in a link; a longer one (a book) stays on the machine,
/// and the link says the page's default is used instead.
pub const LINK_HAYSTACK_CHARS: usize = 6_000;
/// The most bytes a link's state may inflate to: a link is never a way to fill a page's memory.
const MAX_STATE_BYTES: usize = 1 << 20;
/// This format's version; a state of a later version is refused with a message, not misread.
const VERSION: u32 = 1;

/// What the page's inputs are: the form, the masked heads and the chosen head. Results are not in it:
/// a link reproduces an experiment, which the reader then runs. Every field has a default, so a state
/// written by an older page still reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageState {
    /// Format version.
    pub v: u32,
    /// `auto`, `gpu` or `cpu`.
    pub backend: String,
    pub needle: String,
    pub question: String,
    pub answer: String,
    /// The haystack; `None`: the page's default haystack.
    pub haystack: Option<String>,
    pub lengths: String,
    pub depths: String,
    pub max_new: String,
    pub gate: String,
    pub plain: bool,
    /// Masked heads as `layer-head`.
    pub masked: Vec<String>,
    /// How they were chosen ("top-3"), for the names of runs.
    pub mask_origin: String,
    pub mask_mode: String,
    pub mask_scope: String,
    pub mask_k: String,
    pub random_k: String,
    pub seed: String,
    /// The head whose view was asked for, as `layer-head`.
    pub selected_head: Option<String>,
    /// The lesson step shown (0-based); `None`: the lessons are closed.
    pub lesson: Option<usize>,
    /// The needle grid's colours: `niah` (red to green) or `colour-blind`.
    pub palette: String,
    /// The page's language (`en`, `zh`); empty: the browser's.
    pub lang: String,
}

impl Default for PageState {
    fn default() -> Self {
        PageState {
            v: VERSION,
            backend: "auto".into(),
            needle: String::new(),
            question: String::new(),
            answer: String::new(),
            haystack: None,
            lengths: String::new(),
            depths: String::new(),
            max_new: String::new(),
            gate: String::new(),
            plain: true,
            masked: vec![],
            mask_origin: String::new(),
            mask_mode: String::new(),
            mask_scope: String::new(),
            mask_k: String::new(),
            random_k: String::new(),
            seed: String::new(),
            selected_head: None,
            lesson: None,
            palette: String::new(),
            lang: String::new(),
        }
    }
}

impl PageState {
    /// The masked heads, each checked to read as `layer-head`.
    pub fn masked_heads(&self) -> Result<Vec<HeadId>, String> {
        self.masked.iter().map(|h| parse_head(h)).collect()
    }

    /// The chosen head, checked to read as `layer-head`.
    pub fn selected(&self) -> Result<Option<HeadId>, String> {
        self.selected_head.as_deref().map(parse_head).transpose()
    }

    /// The state as stored in the browser: JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored state, or why it cannot be read.
    pub fn from_json(text: &str) -> Result<PageState, String> {
        let state: PageState = serde_json::from_str(text).map_err(|e| format!("it is not a page state ({e})"))?;
        if state.v > VERSION {
            return Err(format!("it was written by a newer version of the page (format {}, this page reads {VERSION})", state.v));
        }
        state.masked_heads()?;
        state.selected()?;
        Ok(state)
    }

    /// The state for a link: compressed JSON in URL-safe base64. A haystack longer than
    /// [`LINK_HAYSTACK_CHARS`] is left out (the reader gets the page's default); the second value says
    /// whether that happened.
    pub fn to_link_text(&self) -> (String, bool) {
        let mut state = self.clone();
        let dropped = state.haystack.as_ref().is_some_and(|h| h.chars().count() > LINK_HAYSTACK_CHARS);
        if dropped {
            state.haystack = None;
        }
        let deflated = miniz_oxide::deflate::compress_to_vec(state.to_json().as_bytes(), 9);
        (base64url_encode(&deflated), dropped)
    }

    /// The state of a link's text, or why it cannot be read (never a panic, whatever the text).
    pub fn from_link_text(text: &str) -> Result<PageState, String> {
        let bytes = base64url_decode(text.trim())?;
        let json = miniz_oxide::inflate::decompress_to_vec_with_limit(&bytes, MAX_STATE_BYTES)
            .map_err(|e| format!("its data is damaged or too large ({:?})", e.status))?;
        let json = String::from_utf8(json).map_err(|_| "its data is not text".to_string())?;
        PageState::from_json(&json)
    }
}

/// `layer-head`, read as core reads a head; the message quotes at most 40 characters of a link's text.
fn parse_head(text: &str) -> Result<HeadId, String> {
    text.parse().map_err(|_| format!("`{}` is not a head (layer-head, as 5-0)", text.chars().take(40).collect::<String>()))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding (RFC 4648, section 5).
fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn base64url_decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return Err("its data is cut short".into());
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == c).ok_or("its data holds a character a link does not")?;
            n |= (v as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PageState {
        PageState {
            needle: "The best thing to do in San Francisco is eat a sandwich.".into(),
            question: "What is the best thing to do in San Francisco?".into(),
            answer: "eat a sandwich".into(),
            haystack: Some("Short haystack, with ünïcödé and 中文.\n".repeat(20)),
            lengths: "256:1024:3".into(),
            depths: "5".into(),
            masked: vec!["5-0".into(), "3-7".into()],
            mask_origin: "top-2".into(),
            selected_head: Some("5-0".into()),
            lesson: Some(4),
            ..PageState::default()
        }
    }

    #[test]
    fn a_state_survives_a_link_and_storage() {
        let s = sample();
        let (text, dropped) = s.to_link_text();
        assert!(!dropped);
        assert!(text.bytes().all(|b| ALPHABET.contains(&b)), "{text}");
        assert_eq!(PageState::from_link_text(&text).unwrap(), s);
        assert_eq!(PageState::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.masked_heads().unwrap(), vec![HeadId::new(5, 0), HeadId::new(3, 7)]);
        // A book-length haystack stays on the machine; the rest of the state travels.
        let long = PageState { haystack: Some("word ".repeat(LINK_HAYSTACK_CHARS)), ..sample() };
        let (text, dropped) = long.to_link_text();
        assert!(dropped && text.len() < 1000, "{}", text.len());
        assert_eq!(PageState::from_link_text(&text).unwrap(), PageState { haystack: None, ..sample() });
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for n in 0..70 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64url_decode(&base64url_encode(&bytes)).unwrap(), bytes, "{n} bytes");
        }
        assert_eq!(base64url_encode(b"Man"), "TWFu");
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn broken_links_are_refused_with_a_reason() {
        let (text, _) = sample().to_link_text();
        for (bad, why) in
            [("", "damaged"), ("A", "cut short"), ("ab$d", "character"), (&text[..text.len() / 8 * 4], "damaged"), ("AAAA", "damaged")]
        {
            let e = PageState::from_link_text(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![b' '; 2 * MAX_STATE_BYTES], 9);
        assert!(PageState::from_link_text(&base64url_encode(&bomb)).unwrap_err().contains("too large"));
        let newer = PageState { v: VERSION + 1, ..sample() };
        assert!(PageState::from_json(&newer.to_json()).unwrap_err().contains("newer version"));
        let bad_head = PageState { masked: vec!["five".into()], ..sample() };
        assert!(PageState::from_link_text(&bad_head.to_link_text().0).unwrap_err().contains("`five` is not a head"));
        // An older page's state, with fields missing, reads with defaults.
        let old = PageState::from_json(r#"{"v":1,"needle":"n"}"#).unwrap();
        assert_eq!((old.needle.as_str(), old.plain), ("n", true));
    }
}
