//! The published config.json of each family (bench/configs: the paper's table 1 and the families added
//! since) is read as transformers reads it: every checkpoint's parameter count equals the count of the
//! model transformers 5.25 builds from the same file (on the meta device, vision towers left out), and
//! each family's quirks come out as its modeling code applies them.

use headscope_engine::spec::{Activation, LayerKind, ModelSpec, NormStyle, RopeScaling, TensorNames};
use std::path::Path;

fn spec(name: &str) -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/configs").join(name).join("config.json");
    ModelSpec::from_config_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn parameter_counts_equal_those_of_the_models_transformers_builds() {
    let counted_by_transformers = [
        ("llama-2-7b", 6_738_415_616u64),
        ("llama-2-13b", 13_015_864_320),
        ("mistral-7b-v0.2", 7_241_732_096),
        ("mixtral-8x7b-v0.1", 46_702_792_704),
        ("qwen1.5-14b", 14_167_290_880),
        ("yi-34b-200k", 34_388_917_248),
        ("qwen3-8b", 8_190_735_360),
        ("phi-3-128k", 3_821_079_552),
        ("gemma-2-9b", 9_241_705_984),
        ("gemma-3-1b", 999_885_952),
        ("gemma-3-4b", 3_880_263_168),
        ("jamba-v0.1", 51_570_323_328),
        ("smollm-135m", 134_515_008),
        ("qwen2.5-0.5b", 494_032_768),
    ];
    for (name, count) in counted_by_transformers {
        assert_eq!(spec(name).parameter_count(), count, "{name}");
    }
}

#[test]
fn qwen3_normalises_queries_and_keys_per_head() {
    let s = spec("qwen3-8b");
    assert!(s.qk_norm && !s.qkv_bias && !s.sandwich_norms);
    assert_eq!((s.heads, s.kv_heads, s.head_dim, s.rotary_dim), (32, 8, 128, 128));
    assert_eq!(s.sliding_windows, vec![None; 36]);
    assert_eq!(s.attention_scale, 1.0 / 128f64.sqrt());
}

#[test]
fn phi3_reads_longrope_from_a_transformers_4_config() {
    let s = spec("phi-3-128k");
    assert!(s.fused_projections);
    let RopeScaling::LongRope { short_factor, long_factor, original_max_position_embeddings, attention_factor } = &s.rope_scaling else {
        panic!("{:?}", s.rope_scaling)
    };
    assert_eq!((short_factor.len(), long_factor.len(), *original_max_position_embeddings), (48, 48, 4096));
    // transformers: sqrt(1 + ln(131072 / 4096) / ln(4096)).
    assert!((attention_factor - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-12);
    assert_eq!(s.rope_scaling.long_from(), Some(4096));
    assert_eq!(s.sliding_windows, vec![Some(131072); 32]);
}

#[test]
fn gemma2_soft_caps_and_alternates_sliding_layers() {
    let s = spec("gemma-2-9b");
    assert_eq!((s.attention_softcap, s.final_logit_softcap), (Some(50.0), Some(30.0)));
    assert_eq!(s.norm_style, NormStyle::OffsetByOne);
    assert!(s.sandwich_norms && !s.qk_norm && s.tie_word_embeddings);
    assert_eq!(s.activation, Activation::GeluTanh);
    assert_eq!(s.attention_scale, 1.0 / 16.0);
    assert_eq!(s.embedding_scale, Some(3584f64.sqrt()));
    // Layer 0 slides, layer 1 is global, and so on (transformers' default layer_types).
    assert!(s.sliding_windows.iter().enumerate().all(|(i, w)| *w == (i % 2 == 0).then_some(4096)));
    assert!(s.sliding_rope.is_none() && s.one_rope());
}

#[test]
fn gemma3_gives_its_sliding_layers_their_own_rope() {
    let s = spec("gemma-3-1b");
    assert!(s.qk_norm && s.sandwich_norms && s.attention_softcap.is_none() && s.final_logit_softcap.is_none());
    // Five sliding layers of every six.
    assert!(s.sliding_windows.iter().enumerate().all(|(i, w)| *w == ((i + 1) % 6 != 0).then_some(512)));
    assert_eq!((s.rope_theta, s.rope_scaling.clone()), (1_000_000.0, RopeScaling::None));
    let local = s.sliding_rope.clone().unwrap();
    assert_eq!((local.theta, local.scaling), (10_000.0, RopeScaling::None));
    assert_eq!(s.rope_of_layer(0).theta, 10_000.0);
    assert_eq!(s.rope_of_layer(5).theta, 1_000_000.0);
    assert_eq!(s.weight_prefix, "model");
    assert_eq!(s.eos_token_ids, vec![1, 106]);
}

#[test]
fn gemma3_multimodal_configs_describe_their_text_model_with_the_class_defaults() {
    let s = spec("gemma-3-4b");
    assert_eq!(s.model_type, "gemma3");
    // text_config gives only five fields; the rest are Gemma3TextConfig's defaults.
    assert_eq!((s.hidden_size, s.layers, s.heads, s.kv_heads, s.head_dim, s.vocab_size), (2560, 34, 8, 4, 256, 262_208));
    assert_eq!(s.rope_scaling, RopeScaling::Linear { factor: 8.0 });
    assert_eq!(s.sliding_rope.as_ref().map(|r| r.scaling.clone()), Some(RopeScaling::None));
    assert_eq!(s.weight_prefix, "language_model.model");
    assert_eq!(s.eos_token_ids, vec![1, 106], "the top-level eos ids");
}

#[test]
fn jamba_attends_in_four_layers_of_thirty_two_and_routes_every_other() {
    let s = spec("jamba-v0.1");
    assert_eq!(s.attention_layers(), vec![4, 12, 20, 28]);
    assert_eq!(s.layer_kinds.iter().filter(|k| **k == LayerKind::Mamba).count(), 28);
    // The head grid is the attention layers' heads only.
    assert_eq!((s.head_shape().layers, s.head_shape().heads), (4, 32));
    let moe = s.moe.as_ref().unwrap();
    assert_eq!((moe.experts, moe.experts_per_token, moe.renormalize), (16, 2, false));
    assert!(moe.layers.iter().enumerate().all(|(i, m)| *m == (i % 2 == 1)));
    let m = s.mamba.as_ref().unwrap();
    assert_eq!((m.state, m.conv, m.inner, m.dt_rank, m.conv_bias, m.proj_bias), (16, 4, 8192, 256, true, false));
    assert_eq!((s.rotary_dim, s.tensor_names), (0, TensorNames::Jamba), "no positional encoding in the attention");
}
