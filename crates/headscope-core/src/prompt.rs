//! How a NIAH test becomes prompt text: the question wrapped around the context, either as plain text
//! (base models) or through the model's own chat template (instruction-tuned models).

use crate::error::{CoreError, Result};

/// How to turn the user message into the prompt the model sees.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptFormat {
    /// The message as is, encoded with the tokenizer's special tokens (so BOS comes from the tokenizer).
    Plain,
    /// A Hugging Face chat template (Jinja, from `tokenizer_config.json`), rendered with one user turn and
    /// the generation prompt; its output already holds any BOS, so it is encoded without special tokens.
    Chat(ChatTemplate),
}

impl PromptFormat {
    /// A short name for provenance records: `plain` or `chat`.
    pub fn name(&self) -> &'static str {
        match self {
            PromptFormat::Plain => "plain",
            PromptFormat::Chat(_) => "chat",
        }
    }
}

/// A chat template and the special-token strings it may refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    /// `bos_token` as a string, if the tokenizer has one.
    pub bos_token: Option<String>,
    /// `eos_token` as a string, if the tokenizer has one.
    pub eos_token: Option<String>,
}

/// The user message of a NIAH test: the context as a book, then the question (the official harness's wording).
pub fn niah_user_message(context: &str, question: &str) -> String {
    format!("<book>{context}</book>{}", niah_question(question))
}

/// What follows the book in [`niah_user_message`]: the question and the cue to answer it.
pub fn niah_question(question: &str) -> String {
    format!("\nBased on the content of the book, Question: {question}\nAnswer:")
}

/// Byte offset of the context inside [`niah_user_message`].
pub const CONTEXT_OFFSET_IN_MESSAGE: usize = "<book>".len();

/// A rendered prompt: its text, where the user message starts in it, and how to encode it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPrompt {
    /// The full prompt text.
    pub text: String,
    /// Byte offset of the user message within `text`.
    pub message_offset: usize,
    /// Whether the tokenizer should add its special tokens (BOS) when encoding `text`.
    pub add_special_tokens: bool,
}

impl PromptFormat {
    /// Renders `message` as the prompt.
    pub fn render(&self, message: &str) -> Result<RenderedPrompt> {
        match self {
            PromptFormat::Plain => Ok(RenderedPrompt { text: message.to_owned(), message_offset: 0, add_special_tokens: true }),
            PromptFormat::Chat(t) => {
                let text = t.render_user_turn(message)?;
                let message_offset = text.find(message).ok_or_else(|| {
                    CoreError::Template("the chat template changed the user message (it is not found verbatim in its output)".into())
                })?;
                Ok(RenderedPrompt { text, message_offset, add_special_tokens: false })
            }
        }
    }
}

impl ChatTemplate {
    /// Renders one user turn followed by the assistant's generation prompt.
    pub fn render_user_turn(&self, message: &str) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source).map_err(|e| CoreError::Template(e.to_string()))?;
        let tmpl = env.get_template("chat").map_err(|e| CoreError::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => vec![minijinja::context!{ role => "user", content => message }],
            add_generation_prompt => true,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        tmpl.render(ctx).map_err(|e| CoreError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_is_the_message() {
        let m = niah_user_message("CTX", "Q?");
        assert_eq!(&m[CONTEXT_OFFSET_IN_MESSAGE..CONTEXT_OFFSET_IN_MESSAGE + 3], "CTX");
        let r = PromptFormat::Plain.render(&m).unwrap();
        assert_eq!(r.text, m);
        assert!(r.add_special_tokens);
    }

    #[test]
    fn chat_template_renders_like_hf() {
        // The Mistral-Instruct-v0.2 style template.
        let t = ChatTemplate {
            source: "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}".into(),
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
        };
        let r = PromptFormat::Chat(t).render("hello").unwrap();
        assert_eq!(r.text, "<s>[INST] hello [/INST]");
        assert_eq!(r.message_offset, "<s>[INST] ".len());
        assert!(!r.add_special_tokens);
    }

    #[test]
    fn chatml_with_python_methods_and_generation_prompt() {
        let t = ChatTemplate {
            source: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".into(),
            bos_token: None,
            eos_token: Some("<|im_end|>".into()),
        };
        let r = PromptFormat::Chat(t).render("hi").unwrap();
        assert_eq!(r.text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn broken_template_is_an_error_not_a_panic() {
        let t = ChatTemplate { source: "{% for %}".into(), bos_token: None, eos_token: None };
        assert!(matches!(PromptFormat::Chat(t.clone()).render("x"), Err(CoreError::Template(_))));
        let t = ChatTemplate { source: "{{ raise_exception('only user/assistant roles') }}".into(), ..t };
        let e = PromptFormat::Chat(t).render("x").unwrap_err().to_string();
        assert!(e.contains("only user/assistant roles"), "{e}");
    }
}
