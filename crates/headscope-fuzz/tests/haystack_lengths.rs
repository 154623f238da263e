//! Found by the haystack fuzz target: in a text whose characters the tokenizer splits into several byte
//! tokens (U+FFFD from invalid UTF-8, here), several tokens end at one character boundary. The prompt
//! builder's step back from one token too many then found the cut it had just tried, stopped with no
//! prompt short enough, and searched from an empty haystack: a 200-token test got a 180-token prompt,
//! after 512 encodes (80 ms for a 70-byte haystack). Prompts must be the asked length, or the longest
//! shorter one the text allows (a character that adds two tokens at once): within 2 tokens.

use headscope_core::niah::{Needle, NiahBuilder};
use headscope_core::prompt::PromptFormat;
use headscope_model::HfTokenizer;

#[test]
fn prompts_over_texts_of_split_characters_have_the_asked_length() {
    let tokenizer = HfTokenizer::from_dir(&headscope_fuzz::repo().join("public/models/lab")).unwrap();
    let needle = Needle {
        needle: "The best thing to do in San Francisco is eat a sandwich.".into(),
        question: "What is the best thing to do in San Francisco?".into(),
        real_needle: "eat a sandwich".into(),
    };
    let found: [&[u8]; 2] = [
        b"I,\x95n the beginning was the Wordan, d the Word wasw ith God,The alv ila",
        b"In\xbd t\xc4\xa0withhe beginning was the Word, and the Word was with God, a\x97nIn the begid the Word ws aGodthe herons \xff\xff\xff\xff",
    ];
    let village = std::fs::read_to_string(headscope_fuzz::repo().join("public/haystacks/village.txt")).unwrap();
    let mut texts: Vec<String> = found.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    texts.push(village.replace(['e', 'o'], "\u{fffd}"));
    for text in &texts {
        let mut builder = NiahBuilder::new(&tokenizer, PromptFormat::Plain, std::slice::from_ref(text)).unwrap();
        for length in [200, 257, 600] {
            for depth in [0.0, 61.0, 100.0] {
                let test = builder.build(&needle, length, depth).unwrap();
                let got = test.prompt_ids.len();
                assert!(got <= length && got + 2 >= length, "{got} tokens for {length} at depth {depth} in {text:?}");
            }
        }
    }
    // An ordinary text keeps exact lengths.
    let mut builder = NiahBuilder::new(&tokenizer, PromptFormat::Plain, &[village]).unwrap();
    for length in [200, 257, 600] {
        assert_eq!(builder.build(&needle, length, 61.0).unwrap().prompt_ids.len(), length);
    }
}
