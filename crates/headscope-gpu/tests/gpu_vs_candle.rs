//! The GPU forward held against the candle path (headscope-model's Transformer, CPU, f32) on the same
//! weights: logits, greedy tokens, every query head's argmax position, attention rows, masks in both
//! modes and scopes, GQA, biases, sliding windows, chunked prefill and cache growth.
//!
//! Tolerance: both paths compute in f32 from identical f32 weights (f16/bf16 checkpoints are widened
//! the same way), so they differ only by summation order (register tiles and an online softmax here,
//! candle's gemm blocking there) and by the rounding of exp/sqrt: ~1e-7 relative per operation,
//! compounded over a few layers; measured gaps are 1e-6..5e-6 of the logits' scale. The bound, 1e-4 of
//! that scale, leaves 20x headroom, while real errors (a wrong position, a missed bias or mask) move
//! logits by whole units. Attention argmaxes may flip only where two weights tie to within that noise,
//! so at least 99% of (step, head) pairs must agree (measured: all of them).
//!
//! Without a GPU adapter (no Vulkan driver) each test prints why it skips and passes.

use headscope_core::rng::SplitMix64;
use headscope_core::tokenize::TextTokenizer;
use headscope_core::HeadId;
use headscope_engine::Engine;
use headscope_gpu::{
    greedy_decode, GemmTile, GpuContext, GpuError, GpuModel, HeadMask, KernelSet, MaskMode, MaskScope, ModelSpec, Probe, WeightFormat,
};
use headscope_model::loader::weight_files;
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{DType, LoadOptions, LoadedModel};
use pollster::block_on;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// Logit gaps allowed, relative to the largest logit magnitude (at least 1).
const LOGIT_TOLERANCE: f32 = 1e-4;
/// Share of (step, head) argmax positions that must agree.
const ARGMAX_AGREEMENT: f64 = 0.99;

/// Prints past the test harness's capture, so a skip is visible in plain `cargo test` output.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// The shared GPU, or `None` (with a message) where the machine has no adapter.
fn gpu() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match block_on(GpuContext::new()) {
        Ok(c) => {
            say(&format!("headscope-gpu tests run on {} (software: {})", c.adapter().describe(), c.adapter().is_software()));
            Some(c)
        }
        Err(e) => {
            say(&format!("SKIPPING headscope-gpu tests: {e}"));
            None
        }
    })
    .as_ref()
}

/// The shared GPU with the other kernel set than it chose (parallel on lavapipe, serial on a real
/// GPU), so that both kinds are held to candle on any adapter.
fn gpu_other_kernels() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        gpu().map(|c| {
            let other = if c.kernel_set() == KernelSet::Serial { KernelSet::Parallel } else { KernelSet::Serial };
            c.clone().with_kernel_set(other)
        })
    })
    .as_ref()
}

/// Both kernel sets of the shared GPU (none without an adapter).
fn contexts() -> Vec<&'static GpuContext> {
    gpu().into_iter().chain(gpu_other_kernels()).collect()
}

/// Both paths on one model directory.
struct Pair {
    cpu: LoadedModel,
    gpu: GpuModel,
}

fn load_pair(ctx: &GpuContext, dir: &Path) -> Pair {
    let cpu = LoadedModel::load(dir, &LoadOptions::default()).unwrap();
    let spec = ModelSpec::from_config_file(&dir.join("config.json")).unwrap();
    let bytes: Vec<Vec<u8>> = weight_files(dir).unwrap().iter().map(|p| std::fs::read(p).unwrap()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let gpu = block_on(GpuModel::load(ctx, &spec, &refs)).unwrap();
    Pair { cpu, gpu }
}

fn tiny(tiny: TinyModel) -> (tempfile::TempDir, TinyModel) {
    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path()).unwrap();
    (dir, tiny)
}

fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| 3 + r.below(vocab as u64 - 3) as u32).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// How far the two paths agreed over one decode.
#[derive(Debug, Default)]
struct Agreement {
    steps: usize,
    worst_logit_gap: f32,
    greedy_mismatches: usize,
    argmax_agree: usize,
    argmax_total: usize,
    worst_row_gap: f32,
}

impl Agreement {
    fn share(&self) -> f64 {
        self.argmax_agree as f64 / self.argmax_total.max(1) as f64
    }

    fn assert_close(&self, what: &str) {
        say(&format!(
            "{what}: {} steps, worst logit gap {:.2e} (relative), greedy mismatches {}, argmax agreement {}/{} ({:.2}%), worst row gap {:.2e}",
            self.steps,
            self.worst_logit_gap,
            self.greedy_mismatches,
            self.argmax_agree,
            self.argmax_total,
            100.0 * self.share(),
            self.worst_row_gap
        ));
        assert!(self.worst_logit_gap <= LOGIT_TOLERANCE, "{what}: logits differ by {} (relative)", self.worst_logit_gap);
        assert_eq!(self.greedy_mismatches, 0, "{what}: greedy tokens differ");
        assert!(self.share() >= ARGMAX_AGREEMENT, "{what}: argmax agreement {:.4}", self.share());
        assert!(self.worst_row_gap <= 1e-4, "{what}: attention rows differ by {}", self.worst_row_gap);
    }
}

/// Decodes `steps` tokens after `prompt` on both paths (the GPU fed the candle path's tokens, so one
/// flip cannot cascade) and compares every output.
fn compare(pair: &mut Pair, prompt: &[u32], steps: usize, mask: Option<HeadMask>, rows: &[HeadId], capacity: usize) -> Agreement {
    pair.cpu.model.set_mask(mask.clone()).unwrap();
    pair.gpu.set_mask(mask).unwrap();
    pair.cpu.model.reserve(capacity).unwrap();
    pair.gpu.reserve(capacity).unwrap();
    let probe = Probe { rows: rows.to_vec(), ..Probe::default() };
    let (&last, context) = prompt.split_last().unwrap();
    pair.cpu.model.prefill(context).unwrap();
    block_on(pair.gpu.prefill(context)).unwrap();
    let mut a = Agreement::default();
    let mut input = last;
    for _ in 0..steps {
        let c = pair.cpu.model.step(input, &probe).unwrap();
        let g = block_on(pair.gpu.step(input, &probe)).unwrap();
        let cl = c.logits.to_vec1::<f32>().unwrap();
        assert_eq!(cl.len(), g.logits.len());
        let scale = cl.iter().fold(1f32, |m, v| m.max(v.abs()));
        let gap = cl.iter().zip(&g.logits).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        a.worst_logit_gap = a.worst_logit_gap.max(gap);
        let next = argmax(&cl) as u32;
        if g.greedy_token() != next {
            a.greedy_mismatches += 1;
        }
        assert_eq!(c.argmax_position.len(), g.argmax_position.len());
        a.argmax_total += c.argmax_position.len();
        a.argmax_agree += c.argmax_position.iter().zip(&g.argmax_position).filter(|(x, y)| x == y).count();
        assert_eq!(c.attention_rows.len(), g.attention_rows.len());
        for (cr, gr) in c.attention_rows.iter().zip(&g.attention_rows) {
            assert_eq!(cr.head, gr.head);
            assert_eq!(cr.weights.len(), gr.weights.len());
            let gap = cr.weights.iter().zip(&gr.weights).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            a.worst_row_gap = a.worst_row_gap.max(gap);
        }
        a.steps += 1;
        input = next;
    }
    assert_eq!(pair.cpu.model.position(), pair.gpu.position());
    a
}

fn all_heads(spec: &ModelSpec) -> Vec<HeadId> {
    spec.head_shape().iter().collect()
}

fn masks(heads: Vec<HeadId>) -> Vec<(String, Option<HeadMask>)> {
    let mut out = vec![("no mask".to_string(), None)];
    for mode in [MaskMode::Uniform, MaskMode::Zero] {
        for scope in [MaskScope::Decode, MaskScope::All] {
            out.push((format!("mask {mode}/{scope}"), Some(HeadMask { heads: heads.clone(), mode, scope })));
        }
    }
    out
}

#[test]
fn tiny_llama_gqa_matches_candle_with_and_without_masks() {
    for ctx in contexts() {
        let (dir, t) = tiny(TinyModel { seed: 5, ..TinyModel::new(TinyArch::Llama) });
        let mut pair = load_pair(ctx, dir.path());
        assert!(pair.gpu.spec().kv_heads < pair.gpu.spec().heads, "the tiny model is GQA");
        // Past 256 positions: the parallel values pass sums more than one chunk.
        let prompt = random_ids(290, t.vocab, 1);
        let rows = vec![HeadId::new(1, 2), HeadId::new(0, 1), HeadId::new(1, 3)];
        let masked = vec![HeadId::new(0, 1), HeadId::new(1, 2), HeadId::new(1, 3)];
        for (what, mask) in masks(masked) {
            let a = compare(&mut pair, &prompt, 12, mask, &rows, 320);
            a.assert_close(&format!("tiny llama, {what}, {:?} kernels", ctx.kernel_set()));
        }
    }
}

#[test]
fn masks_change_the_gpu_output_as_on_candle() {
    // Guards the comparison above against a mask that does nothing on both sides.
    let Some(ctx) = gpu() else { return };
    let (dir, t) = tiny(TinyModel { seed: 8, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(ctx, dir.path());
    let prompt = random_ids(40, t.vocab, 2);
    let head = HeadId::new(1, 0);
    let mut run = |mask: Option<HeadMask>| {
        pair.gpu.set_mask(mask).unwrap();
        pair.gpu.reset();
        block_on(pair.gpu.prefill(&prompt[..39])).unwrap();
        block_on(pair.gpu.step(prompt[39], &Probe { rows: vec![head], ..Probe::default() })).unwrap()
    };
    let plain = run(None);
    let uniform = run(Some(HeadMask { heads: vec![head], mode: MaskMode::Uniform, scope: MaskScope::Decode }));
    let zero = run(Some(HeadMask { heads: vec![head], mode: MaskMode::Zero, scope: MaskScope::Decode }));
    let slot = head.layer * t.heads + head.head;
    // Uniform: the head's weights are 1/40 everywhere, its argmax the first position.
    assert!(uniform.attention_rows[0].weights.iter().all(|w| (w - 1.0 / 40.0).abs() < 1e-6));
    assert_eq!(uniform.argmax_position[slot], 0);
    // Zero: attention itself is unchanged, the output is not.
    assert_eq!(zero.attention_rows[0].weights, plain.attention_rows[0].weights);
    assert_ne!(zero.logits, plain.logits);
    assert_ne!(uniform.logits, plain.logits);
}

#[test]
fn qwen2_biases_and_tied_embeddings_match_candle() {
    // Both kernel sets: the biases go through each set's matmul epilogue.
    for ctx in contexts() {
        let (dir, t) = tiny(TinyModel { seed: 6, ..TinyModel::new(TinyArch::Qwen2) });
        let mut pair = load_pair(ctx, dir.path());
        let prompt = random_ids(50, t.vocab, 3);
        let a = compare(&mut pair, &prompt, 8, None, &[HeadId::new(0, 0)], 128);
        a.assert_close(&format!("tiny qwen2, {:?} kernels", ctx.kernel_set()));
    }
}

#[test]
fn qwen3_query_and_key_norms_match_candle() {
    for ctx in contexts() {
        let (dir, t) = tiny(TinyModel { seed: 8, ..TinyModel::new(TinyArch::Qwen3) });
        let mut pair = load_pair(ctx, dir.path());
        let prompt = random_ids(60, t.vocab, 5);
        let rows = all_heads(pair.gpu.spec());
        for (what, mask) in masks(vec![HeadId::new(1, 2)]) {
            let a = compare(&mut pair, &prompt, 8, mask, &rows, 128);
            a.assert_close(&format!("tiny qwen3, {what}, {:?} kernels", ctx.kernel_set()));
        }
    }
}

#[test]
fn mistral_sliding_window_matches_candle() {
    for ctx in contexts() {
        // A window much shorter than the prompt: prefill chunks and decode steps both cut keys off.
        let (dir, t) = tiny(TinyModel { seed: 7, ..TinyModel::new(TinyArch::Mistral(Some(24))) });
        let mut pair = load_pair(ctx, dir.path());
        let prompt = random_ids(70, t.vocab, 4);
        let rows = all_heads(pair.gpu.spec());
        for (what, mask) in masks(vec![HeadId::new(0, 3), HeadId::new(1, 0)]) {
            let a = compare(&mut pair, &prompt, 10, mask, &rows, 128);
            a.assert_close(&format!("tiny mistral window 24, {what}, {:?} kernels", ctx.kernel_set()));
        }
    }
}

#[test]
fn scaled_rope_matches_candle() {
    let Some(ctx) = gpu() else { return };
    let scalings = [
        serde_json::json!({"rope_type": "linear", "factor": 4.0}),
        // A short original context puts the prompt's wavelengths in all three llama3 bands.
        serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    ];
    for scaling in scalings {
        let (dir, t) = tiny(TinyModel { seed: 10, ..TinyModel::new(TinyArch::Llama) });
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["rope_scaling"] = scaling.clone();
        std::fs::write(&path, config.to_string()).unwrap();
        let mut pair = load_pair(ctx, dir.path());
        assert_ne!(pair.gpu.spec().rope_scaling, headscope_model::spec::RopeScaling::None);
        let prompt = random_ids(120, t.vocab, 10);
        let a = compare(&mut pair, &prompt, 6, None, &[HeadId::new(1, 0)], 256);
        a.assert_close(&format!("tiny llama, rope_scaling {scaling}"));
    }
}

#[test]
fn f16_and_bf16_checkpoints_match_candle() {
    let Some(ctx) = gpu() else { return };
    for dtype in [DType::F16, DType::BF16] {
        let (dir, t) = tiny(TinyModel { seed: 9, dtype, ..TinyModel::new(TinyArch::Llama) });
        let mut pair = load_pair(ctx, dir.path());
        let prompt = random_ids(30, t.vocab, 5);
        let a = compare(&mut pair, &prompt, 6, None, &[], 64);
        a.assert_close(&format!("tiny llama {dtype:?}"));
    }
}

/// Logits of every step of a prefill and `steps` greedy decode steps (all heads' argmax positions too).
fn trace(gpu: &mut GpuModel, prompt: &[u32], steps: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
    gpu.set_mask(None).unwrap();
    gpu.reserve(prompt.len() + steps + 1).unwrap();
    let (&last, context) = prompt.split_last().unwrap();
    block_on(gpu.prefill(context)).unwrap();
    let mut input = last;
    (0..steps)
        .map(|_| {
            let out = block_on(gpu.step(input, &Probe::default())).unwrap();
            input = out.greedy_token();
            (out.logits, out.argmax_position)
        })
        .collect()
}

#[test]
fn weights_stay_16_bit_and_split_tables_equal_whole_ones() {
    // 16-bit checkpoints keep their type on the GPU (half the memory), read exactly as their f32
    // widening; an embedding table and LM head split into blocks (as a browser splits a large model's)
    // give bit-identical logits and argmaxes, with Llama's own LM head and with Qwen2's tied one.
    for ctx in contexts() {
        for (arch, dtype, format) in [
            (TinyArch::Llama, DType::F16, WeightFormat::F16),
            (TinyArch::Llama, DType::BF16, WeightFormat::Bf16),
            (TinyArch::Llama, DType::F32, WeightFormat::F32),
            (TinyArch::Qwen2, DType::BF16, WeightFormat::Bf16),
        ] {
            let (dir, t) = tiny(TinyModel { seed: 12, dtype, ..TinyModel::new(arch) });
            let what = format!("tiny {arch:?} {dtype:?}, {:?} kernels", ctx.kernel_set());
            let mut pair = load_pair(ctx, dir.path());
            assert_eq!((pair.gpu.weight_format(), pair.gpu.weight_blocks()), (format, (1, 1)), "{what}");
            let prompt = random_ids(40, t.vocab, 8);
            compare(&mut pair, &prompt, 6, None, &[], 64).assert_close(&what);
            let whole = trace(&mut pair.gpu, &prompt, 6);
            let small = ctx.clone().with_weight_block(4096);
            let mut split = load_pair(&small, dir.path()).gpu;
            let (embed_blocks, head_blocks) = split.weight_blocks();
            assert!(embed_blocks > 2 && head_blocks > 2, "{what}: {embed_blocks} and {head_blocks} blocks");
            assert!(whole == trace(&mut split, &prompt, 6), "{what}: the split model's logits differ");
        }
    }
}

#[test]
fn long_prompts_use_several_prefill_chunks_and_grow_the_cache() {
    for ctx in contexts() {
        long_prompts_on(ctx);
    }
}

fn long_prompts_on(ctx: &GpuContext) {
    // Wide heads (head_dim 64 >= the workgroup) exercise the other value-sum path; a long prompt
    // needs several prefill chunks and, with a small reservation, cache growth mid-run.
    let (dir, t) = tiny(TinyModel { seed: 11, heads: 4, kv_heads: 1, head_dim: 64, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(ctx, dir.path());
    let prompt = random_ids(300, t.vocab, 6);
    // Reserve only 8 positions: the prefill grows the cache, the steps grow it again.
    pair.cpu.model.reserve(8).unwrap();
    pair.gpu.reserve(8).unwrap();
    let (&last, context) = prompt.split_last().unwrap();
    pair.cpu.model.prefill(context).unwrap();
    block_on(pair.gpu.prefill(context)).unwrap();
    assert!(pair.gpu.capacity() >= 299);
    let mut input = last;
    let mut a = Agreement::default();
    for _ in 0..5 {
        let c = pair.cpu.model.step(input, &Probe::default()).unwrap();
        let g = block_on(pair.gpu.step(input, &Probe::default())).unwrap();
        let cl = c.logits.to_vec1::<f32>().unwrap();
        let scale = cl.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.worst_logit_gap = a.worst_logit_gap.max(cl.iter().zip(&g.logits).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale);
        a.greedy_mismatches += usize::from(g.greedy_token() != argmax(&cl) as u32);
        a.argmax_total += c.argmax_position.len();
        a.argmax_agree += c.argmax_position.iter().zip(&g.argmax_position).filter(|(x, y)| x == y).count();
        a.steps += 1;
        input = argmax(&cl) as u32;
    }
    a.assert_close("300-token prompt, head_dim 64, grown cache");

    // Chunks of 200 rows (not a multiple of any kernel's tile) cut the prompt in four: the result must
    // not change.
    let (dir2, t2) = tiny(TinyModel { seed: 12, ..TinyModel::new(TinyArch::Llama) });
    let mut pair2 = load_pair(&ctx.clone().with_prefill_chunk(200), dir2.path());
    let prompt2 = random_ids(700, t2.vocab, 7);
    let a2 = compare(&mut pair2, &prompt2, 4, None, &[HeadId::new(1, 1)], 710);
    assert_eq!(pair2.gpu.prefill_chunk(), 200, "the prompt spans four chunks");
    a2.assert_close("700-token prompt in chunks");

    // Heads 128 wide (Llama-2's and Mistral's): the parallel prefill's key splits merge their
    // accumulators through the tile memory in two chunks a row.
    let (dir3, t3) = tiny(TinyModel { seed: 13, heads: 2, kv_heads: 1, head_dim: 128, ..TinyModel::new(TinyArch::Llama) });
    let mut pair3 = load_pair(ctx, dir3.path());
    let a3 = compare(&mut pair3, &random_ids(150, t3.vocab, 8), 4, None, &[HeadId::new(0, 1)], 160);
    a3.assert_close("150-token prompt, head_dim 128");

    // A 1000-wide MLP: the parallel set splits the down projection's inputs in three (the last part
    // shorter than the others, not a multiple of the 16-input step) and adds the parts in a second
    // pass, in each of the four chunks (the last one 99 rows).
    let (dir4, t4) = tiny(TinyModel { seed: 14, intermediate: 1000, ..TinyModel::new(TinyArch::Qwen2) });
    let mut pair4 = load_pair(&ctx.clone().with_prefill_chunk(200), dir4.path());
    let a4 = compare(&mut pair4, &random_ids(700, t4.vocab, 9), 4, None, &[HeadId::new(1, 0)], 710);
    a4.assert_close("700-token prompt, 1000-wide MLP");
}

/// The parallel set's 128-row prefill product tile (`GemmTile::Rows128`), unsplit and split, with
/// partial row tiles: held to candle like the default tile.
#[test]
fn the_128_row_prefill_tile_matches_candle() {
    let Some(base) = gpu() else { return };
    let ctx = base.clone().with_kernel_set(KernelSet::Parallel).with_gemm_tile(GemmTile::Rows128);
    let (dir, t) = tiny(TinyModel { seed: 15, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(&ctx, dir.path());
    compare(&mut pair, &random_ids(300, t.vocab, 10), 4, None, &[HeadId::new(0, 1)], 310).assert_close("300 rows, 128-row tile");
    let (dir2, t2) = tiny(TinyModel { seed: 16, intermediate: 1000, ..TinyModel::new(TinyArch::Qwen2) });
    let mut pair2 = load_pair(&ctx.clone().with_prefill_chunk(200), dir2.path());
    compare(&mut pair2, &random_ids(500, t2.vocab, 11), 4, None, &[HeadId::new(1, 0)], 510)
        .assert_close("500 rows in chunks of 200, 1000-wide MLP split, 128-row tile");
}

#[test]
fn prefill_then_decode_equals_stepping_every_token() {
    let Some(ctx) = gpu() else { return };
    let (dir, t) = tiny(TinyModel { seed: 13, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(ctx, dir.path());
    let prompt = random_ids(80, t.vocab, 8);
    let probe = Probe { rows: vec![HeadId::new(1, 1)], ..Probe::default() };
    let gpu = &mut pair.gpu;
    gpu.reserve(128).unwrap();
    block_on(gpu.prefill(&prompt[..79])).unwrap();
    let chunked = block_on(gpu.step(prompt[79], &probe)).unwrap();
    gpu.reset();
    let mut stepped = None;
    for &id in &prompt {
        stepped = Some(block_on(gpu.step(id, &probe)).unwrap());
    }
    let stepped = stepped.unwrap();
    let scale = chunked.logits.iter().fold(1f32, |m, v| m.max(v.abs()));
    let gap = chunked.logits.iter().zip(&stepped.logits).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
    say(&format!("prefill+step vs step-by-step: logit gap {gap:.2e}"));
    assert!(gap <= LOGIT_TOLERANCE);
    assert_eq!(chunked.argmax_position, stepped.argmax_position);
    assert_eq!(chunked.greedy_token(), stepped.greedy_token());
    let row_gap =
        chunked.attention_rows[0].weights.iter().zip(&stepped.attention_rows[0].weights).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(row_gap <= 1e-4);
}

/// Prefix reuse on the GPU, as on candle: a prompt prefilled after one that shares its first positions
/// decodes as after a fresh prefill, decode-scope masks share a prompt's whole prefill, and a mask of
/// scope `all` (which changes the prefill) shares nothing.
#[test]
fn prefill_reusing_a_shared_prefix_decodes_as_a_fresh_prefill() {
    let Some(ctx) = gpu() else { return };
    let (dir, t) = tiny(TinyModel { seed: 16, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(ctx, dir.path());
    let shared = random_ids(40, t.vocab, 21);
    let a = [shared.clone(), random_ids(9, t.vocab, 22)].concat();
    let b = [shared, random_ids(7, t.vocab, 23)].concat();
    let (&b_last, b_context) = b.split_last().unwrap();
    let probe = Probe { rows: vec![HeadId::new(1, 0)], ..Probe::default() };
    let gpu = &mut pair.gpu;
    gpu.reserve(64).unwrap();
    block_on(gpu.prefill(b_context)).unwrap();
    let want = block_on(gpu.step(b_last, &probe)).unwrap();
    gpu.reset();
    assert_eq!(block_on(Engine::prefill_reusing(gpu, &a[..a.len() - 1])).unwrap(), 0, "nothing is known after a reset");
    block_on(gpu.step(a[a.len() - 1], &probe)).unwrap();
    assert_eq!(block_on(Engine::prefill_reusing(gpu, b_context)).unwrap(), 40);
    let got = block_on(gpu.step(b_last, &probe)).unwrap();
    let scale = want.logits.iter().fold(1f32, |m, v| m.max(v.abs()));
    let gap = want.logits.iter().zip(&got.logits).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
    assert!(gap <= LOGIT_TOLERANCE, "logits differ by {gap}");
    assert_eq!((got.greedy_token(), &got.argmax_position), (want.greedy_token(), &want.argmax_position));
    let heads = vec![HeadId::new(0, 1), HeadId::new(1, 2)];
    gpu.set_mask(Some(HeadMask { heads: heads.clone(), mode: MaskMode::Uniform, scope: MaskScope::Decode })).unwrap();
    assert_eq!(
        block_on(Engine::prefill_reusing(gpu, b_context)).unwrap(),
        b_context.len(),
        "a decode-scope mask leaves the prefill as it was"
    );
    gpu.set_mask(Some(HeadMask { heads, mode: MaskMode::Uniform, scope: MaskScope::All })).unwrap();
    assert_eq!(block_on(Engine::prefill_reusing(gpu, b_context)).unwrap(), 0, "a mask of scope all computes other keys");
    assert_eq!(block_on(Engine::prefill_reusing(gpu, b_context)).unwrap(), b_context.len(), "and then shares with itself");
}

#[test]
fn greedy_decode_matches_the_candle_loop() {
    let Some(ctx) = gpu() else { return };
    let (dir, t) = tiny(TinyModel { seed: 14, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(ctx, dir.path());
    let prompt = random_ids(40, t.vocab, 9);
    let probe = Probe { rows: vec![HeadId::new(0, 2)], ..Probe::default() };
    let c = headscope_model::greedy_decode(&mut pair.cpu.model, &prompt, 10, &[], &probe, |_| true).unwrap();
    let g = block_on(greedy_decode(&mut pair.gpu, &prompt, 10, &[], &probe, |_| true)).unwrap();
    assert_eq!(c.tokens, g.tokens);
    let agree: usize = c.argmax_position.iter().zip(&g.argmax_position).map(|(x, y)| x.iter().zip(y).filter(|(a, b)| a == b).count()).sum();
    let total: usize = c.argmax_position.iter().map(Vec::len).sum();
    assert!(agree as f64 / total as f64 >= ARGMAX_AGREEMENT);
    assert_eq!(g.attention_rows.len(), g.tokens.len());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let Some(ctx) = gpu() else { return };
    let (dir, t) = tiny(TinyModel { seed: 15, max_positions: 64, ..TinyModel::new(TinyArch::Llama) });
    let mut pair = load_pair(ctx, dir.path());
    let gpu = &mut pair.gpu;
    assert!(matches!(block_on(gpu.step(t.vocab as u32, &Probe::default())), Err(GpuError::Invalid(_))));
    assert!(matches!(block_on(gpu.step(3, &Probe { rows: vec![HeadId::new(9, 0)], ..Probe::default() })), Err(GpuError::Invalid(_))));
    let bad_mask = HeadMask { heads: vec![HeadId::new(0, 99)], mode: MaskMode::Zero, scope: MaskScope::All };
    assert!(matches!(gpu.set_mask(Some(bad_mask)), Err(GpuError::Invalid(_))));
    assert!(matches!(gpu.reserve(65), Err(GpuError::TooLong(_))));
    assert!(matches!(block_on(gpu.prefill(&random_ids(70, t.vocab, 1))), Err(GpuError::TooLong(_))));
    assert!(matches!(block_on(greedy_decode(gpu, &[], 3, &[], &Probe::default(), |_| true)), Err(GpuError::Invalid(_))));

    // Weights that do not fit the spec, and architectures the GPU path refuses, are named.
    let spec = gpu.spec().clone();
    let err = block_on(GpuModel::load(ctx, &spec, &[b"not safetensors".as_slice()])).err().unwrap();
    assert!(matches!(err, GpuError::Weights(_)), "{err}");
    let mut wider = spec.clone();
    wider.hidden_size += 4;
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let err = block_on(GpuModel::load(ctx, &wider, &[&bytes])).err().unwrap();
    assert!(err.to_string().contains("model.embed_tokens.weight"), "{err}");
    let (mdir, _) = tiny(TinyModel::new(TinyArch::Mixtral));
    let mspec = ModelSpec::from_config_file(&mdir.path().join("config.json")).unwrap();
    let mbytes = std::fs::read(mdir.path().join("model.safetensors")).unwrap();
    let err = block_on(GpuModel::load(ctx, &mspec, &[&mbytes])).err().unwrap();
    assert!(matches!(err, GpuError::Unsupported(_)) && err.to_string().contains("Mixtral"), "{err}");
}

/// The bundled lab model (Llama, 8 layers x 12 query heads over 4 KV heads), if this checkout has it.
fn lab_dir() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/models/lab");
    if dir.join("config.json").exists() {
        Some(dir)
    } else {
        say(&format!("SKIPPING the lab model comparison: {} has no model", dir.display()));
        None
    }
}

#[test]
fn lab_model_matches_candle_with_and_without_masks() {
    for ctx in contexts() {
        lab_model_on(ctx);
    }
}

fn lab_model_on(ctx: &GpuContext) {
    let Some(dir) = lab_dir() else { return };
    let mut pair = load_pair(ctx, &dir);
    let text = include_str!("../../../public/haystacks/kjv-john.txt");
    let start = text.len() / 3;
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap();
    let mut prompt = pair.cpu.tokenizer.encode(&text[start..], true).unwrap().ids;
    prompt.truncate(400);
    let spec = pair.gpu.spec().clone();
    let rows = vec![HeadId::new(2, 3), HeadId::new(5, 7)];
    // Masks over a third of the heads, spread over layers.
    let masked: Vec<HeadId> = all_heads(&spec).into_iter().filter(|h| (h.layer + h.head) % 3 == 0).collect();
    let mut overall = Agreement::default();
    for (what, mask) in masks(masked) {
        let a = compare(&mut pair, &prompt, 16, mask, &rows, 512);
        a.assert_close(&format!("lab model, {what}"));
        overall.argmax_agree += a.argmax_agree;
        overall.argmax_total += a.argmax_total;
    }
    say(&format!(
        "lab model overall argmax agreement ({:?} kernels): {}/{} ({:.3}%)",
        ctx.kernel_set(),
        overall.argmax_agree,
        overall.argmax_total,
        100.0 * overall.share()
    ));
}

#[test]
fn profiled_forwards_give_the_same_results_and_time_every_dispatch() {
    // While profiling, each dispatch runs in a pass of its own between timestamps: the logits and
    // argmaxes must be bit-identical to a plain forward's, and the profile must name every kind of
    // dispatch of a decode step and of a prefill chunk, with the counts the model's shape implies.
    for ctx in contexts() {
        if !ctx.can_profile() {
            say(&format!("SKIPPING the profile test on {}: no timestamp queries", ctx.adapter().describe()));
            return;
        }
        let (dir, t) = tiny(TinyModel { seed: 14, ..TinyModel::new(TinyArch::Qwen3) });
        let what = format!("tiny Qwen3, {:?} kernels", ctx.kernel_set());
        let mut gpu = load_pair(ctx, dir.path()).gpu;
        let prompt = random_ids(30, t.vocab, 6);
        assert!(gpu.take_profile().is_none(), "{what}: a profile before profiling started");
        let plain = trace(&mut gpu, &prompt, 4);
        gpu.start_profile().unwrap();
        let profiled = trace(&mut gpu, &prompt, 4);
        assert!(plain == profiled, "{what}: profiled forwards changed the results");
        let profile = gpu.take_profile().unwrap();
        let layers = gpu.spec().layers;
        let count =
            |phase: &headscope_gpu::PhaseProfile, name: &str| phase.dispatches.iter().find(|d| d.what == name).map_or(0, |d| d.per_run);
        let (decode, prefill) = (&profile.decode, &profile.prefill);
        assert_eq!((decode.runs, decode.tokens), (4, 4), "{what}");
        assert_eq!((prefill.runs, prefill.tokens), (1, prompt.len() - 1), "{what}: one chunk of the prompt less its last token");
        // The parallel set folds a decode step's norms into the products that read them (`gemv_norm`).
        let fused = ctx.kernel_set() == KernelSet::Parallel;
        assert_eq!((count(decode, "norm"), count(prefill, "norm")), (if fused { 0 } else { 2 * layers }, 2 * layers), "{what}");
        for name in ["qkv", "head_norm", "rope", "o", "gate_up", "down"] {
            assert_eq!((count(decode, name), count(prefill, name)), (layers, layers), "{what}: {name} dispatches per run");
        }
        for name in ["scores", "softmax", "values"] {
            assert_eq!((count(decode, name), count(prefill, name)), (layers, 0), "{what}: {name}");
        }
        assert_eq!(count(prefill, "attention_prefill"), layers, "{what}");
        assert_eq!(count(decode, "values_sum"), if ctx.kernel_set() == KernelSet::Parallel { layers } else { 0 }, "{what}");
        assert_eq!((count(decode, "embed"), count(decode, "final_norm"), count(decode, "lm_head")), (1, usize::from(!fused), 1), "{what}");
        assert_eq!((count(prefill, "embed"), count(prefill, "final_norm"), count(prefill, "lm_head")), (1, 0, 0), "{what}");
        for phase in [decode, prefill] {
            assert!(phase.dispatches.iter().all(|d| d.seconds_per_run >= 0.0) && phase.seconds_per_run() > 0.0, "{what}: {phase:?}");
        }
        say(&format!(
            "{what}: profiled decode step {:.1} us, prefill of {} tokens {:.1} us on the GPU",
            decode.seconds_per_run() * 1e6,
            prefill.tokens,
            prefill.seconds_per_run() * 1e6
        ));
        // Taking the profile starts the next one afresh; stopping returns to plain forwards.
        let next = gpu.take_profile().unwrap();
        assert_eq!((next.decode.runs, next.prefill.runs), (0, 0), "{what}");
        gpu.stop_profile();
        assert!(gpu.take_profile().is_none(), "{what}");
        assert!(plain == trace(&mut gpu, &prompt, 4), "{what}: plain forwards after profiling differ");
    }
}
