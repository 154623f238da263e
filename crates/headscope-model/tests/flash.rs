//! The fused CUDA prefill kernel against plain attention on the same device, and a whole model's
//! prefill through it against the chunked path; the training kernels (attention's softmax, the
//! cross-entropy, AdamW, and the RMSNorm and RoPE nodes) against their CPU versions (whole training
//! steps are compared in headscope-train's tests). Runs only in a CUDA build on a machine with a GPU
//! (`cargo test -p headscope-model --features cuda --test flash`); other builds compile it to nothing.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, D};
use headscope_model::flash::{decode_attention, prefill_attention, prefill_attention_variant, prefill_variants};
use headscope_model::testkit::{cuda_device, TinyArch, TinyModel};
use headscope_model::{LoadOptions, LoadedModel, Probe};

/// Of decode steps `(logits, argmax positions)` against a reference run's: the share of equal argmax
/// positions and the worst logit error relative to the reference step's largest logit.
fn agreement(reference: &[(Vec<f32>, Vec<u32>)], other: &[(Vec<f32>, Vec<u32>)]) -> (f64, f32) {
    let (mut same, mut total, mut worst) = (0, 0, 0f32);
    for ((la, aa), (lb, ab)) in reference.iter().zip(other) {
        same += aa.iter().zip(ab).filter(|(a, b)| a == b).count();
        total += aa.len();
        let spread = la.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = la.iter().zip(lb).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(err / spread.max(1e-6));
    }
    (same as f64 / total as f64, worst)
}

/// The largest absolute difference between two tensors of one shape, compared in f32.
fn max_abs_difference(a: &Tensor, b: &Tensor) -> f32 {
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    (f32(a) - f32(b)).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Softmax attention in f32 with an explicit mask: the definition the kernel must match.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> Tensor {
    let (_, heads, c, d) = q.dims4().unwrap();
    let (_, kv, s, _) = k.dims4().unwrap();
    let group = heads / kv;
    let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let expand = |t: &Tensor| {
        let (b, n, s, d) = t.dims4().unwrap();
        f(t).unsqueeze(2).unwrap().expand((b, n, group, s, d)).unwrap().reshape((b, n * group, s, d)).unwrap()
    };
    let (k, v) = (expand(k), expand(v));
    let scores = (f(q).matmul(&k.t().unwrap()).unwrap() * (1.0 / (d as f64).sqrt())).unwrap();
    let mut mask = vec![f32::NEG_INFINITY; c * s];
    for i in 0..c {
        let qi = i + s - c;
        for j in 0..s {
            if j <= qi && window.is_none_or(|w| qi - j < w) {
                mask[i * s + j] = 0.0;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (c, s), q.device()).unwrap();
    let w = candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
    w.matmul(&v).unwrap()
}

#[test]
fn fused_prefill_matches_plain_attention() {
    let Some(dev) = cuda_device() else { return };
    // (heads, kv heads, head dim, queries, keys, window, dtype): partial tiles, a cached prefix,
    // grouped queries, sliding windows shorter and longer than a tile, both half types.
    let cases = [
        (8, 2, 128, 300, 300, None, DType::BF16),
        (8, 2, 128, 77, 1000, None, DType::BF16),
        (4, 4, 64, 200, 200, None, DType::F16),
        (8, 1, 64, 130, 700, Some(100), DType::BF16),
        (4, 2, 128, 256, 512, Some(37), DType::F16),
        (32, 8, 128, 1, 64, None, DType::BF16),
    ];
    for (heads, kv, d, c, s, window, dtype) in cases {
        let q = Tensor::randn(0f32, 1.0, (1, heads, c, d), &dev).unwrap().to_dtype(dtype).unwrap();
        // Keys and values as views of a longer cache, as the model passes them.
        let cache =
            |seed: f32| (Tensor::randn(0f32, 1.0, (1, kv, s + 50, d), &dev).unwrap() * seed as f64).unwrap().to_dtype(dtype).unwrap();
        let (kc, vc) = (cache(2.0), cache(1.0));
        let (k, v) = (kc.narrow(2, 0, s).unwrap(), vc.narrow(2, 0, s).unwrap());
        let got = prefill_attention(&q, &k, &v, window).unwrap();
        let want = reference(&q, &k, &v, window);
        let err = max_abs_difference(&got, &want);
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        eprintln!("heads {heads}/{kv} d {d} queries {c} keys {s} window {window:?} {dtype:?}: max error {err:.2e} (max |out| {scale:.2})");
        assert!(err <= 0.02 * scale.max(1.0), "case heads {heads}/{kv} d {d} c {c} s {s} window {window:?}: error {err}");
        // The same queries in token-major memory ([b, c, heads, d] seen as [b, heads, c, d]), as the
        // model passes them: the same result, returned in that memory order.
        let q_token_major = q.transpose(1, 2).unwrap().contiguous().unwrap().transpose(1, 2).unwrap();
        let out = prefill_attention(&q_token_major, &k, &v, window).unwrap();
        assert!(out.transpose(1, 2).unwrap().is_contiguous(), "token-major queries give a token-major output");
        let err_token_major = max_abs_difference(&out, &want);
        assert!(err_token_major <= 0.02 * scale.max(1.0), "token-major queries: error {err_token_major}");
        for variant in prefill_variants(&dev, d) {
            let other = prefill_attention_variant(&q, &k, &v, window, &variant).unwrap();
            let err = max_abs_difference(&other, &want);
            assert!(err <= 0.02 * scale.max(1.0), "variant {variant}, case heads {heads}/{kv} d {d} c {c} s {s}: error {err}");
        }
    }
}

#[test]
fn fused_ops_equal_the_candle_ops_they_replace() {
    let Some(dev) = cuda_device() else { return };
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let gate = (Tensor::randn(0f32, 3.0, (1, 37, 264), &dev).unwrap()).to_dtype(dtype).unwrap();
        let up = Tensor::randn(0f32, 1.0, (1, 37, 264), &dev).unwrap().to_dtype(dtype).unwrap();
        let fused = headscope_model::fused_ops::silu_mul(&gate, &up).unwrap();
        // What the kernel computes, in candle ops: the silu in f32 (as PyTorch computes it for half
        // types; candle's own f16 silu computes in f16), rounded; the product in f32, rounded. The
        // kernel's expf may round a result the other way: one rounding step of the element type.
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let silu = candle_nn::ops::silu(&f(&gate)).unwrap().to_dtype(dtype).unwrap();
        let plain = f(&(f(&silu) * f(&up)).unwrap().to_dtype(dtype).unwrap());
        let fused = f(&fused);
        let ulp = match dtype {
            DType::BF16 => 1.0 / 128.0,
            DType::F16 => 1.0 / 1024.0,
            _ => 1e-6,
        };
        let bound = (plain.abs().unwrap() * ulp).unwrap();
        let excess =
            ((fused - &plain).unwrap().abs().unwrap() - bound).unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(excess <= 1e-30, "silu_mul {dtype:?}: more than one rounding step from the f32 silu, then mul ({excess})");

        // A chunk of 5 token-major positions into a cache of 20, at position 9: the rest untouched.
        let (heads, d) = (4, 64);
        let cache = Tensor::randn(0f32, 1.0, (1, heads, 20, d), &dev).unwrap().to_dtype(dtype).unwrap();
        let want = cache.copy().unwrap();
        let chunk = Tensor::randn(0f32, 1.0, (1, 5, heads, d), &dev).unwrap().to_dtype(dtype).unwrap();
        headscope_model::fused_ops::write_token_major(&cache, &chunk, 9).unwrap();
        want.slice_set(&chunk.transpose(1, 2).unwrap().contiguous().unwrap(), 2, 9).unwrap();
        assert_eq!(max_abs_difference(&cache, &want), 0.0, "write_token_major {dtype:?}");
    }
}

/// Times the prefill kernel's block shapes with Llama-2-7B's attention shape (32 heads of 128): one
/// 4096-query chunk at the end of a 32K context, then the attention of whole 32K and 64K prefills in
/// 4096-query chunks (as `headscope bench` runs them, per layer). Prints TFLOP/s per variant. A
/// benchmark, not a test: `flash-... --ignored --nocapture time_prefill_variants`.
#[test]
#[ignore]
fn time_prefill_variants() {
    let Some(dev) = cuda_device() else { return };
    let (heads, d, c) = (32, 128, 4096);
    let longest = 65536;
    let q = Tensor::randn(0f32, 1.0, (1, heads, c, d), &dev).unwrap().to_dtype(DType::BF16).unwrap();
    let k = Tensor::randn(0f32, 1.0, (1, heads, longest, d), &dev).unwrap().to_dtype(DType::BF16).unwrap();
    let v = Tensor::randn(0f32, 1.0, (1, heads, longest, d), &dev).unwrap().to_dtype(DType::BF16).unwrap();
    // Causal: a chunk's queries see the keys before them and a triangle of their own.
    let chunk_flops = |s: usize| 4.0 * heads as f64 * d as f64 * (c as f64 * (s - c) as f64 + (c * c) as f64 / 2.0);
    let time = |variant: &str, s: usize, reps: usize| {
        let (k, v) = (k.narrow(2, 0, s).unwrap(), v.narrow(2, 0, s).unwrap());
        let run = || prefill_attention_variant(&q, &k, &v, None, variant).unwrap();
        run();
        dev.synchronize().unwrap();
        let started = std::time::Instant::now();
        for _ in 0..reps {
            run();
        }
        dev.synchronize().unwrap();
        started.elapsed().as_secs_f64() / reps as f64
    };
    for variant in prefill_variants(&dev, d) {
        let seconds = time(&variant, 32768, 20);
        print!("prefill variant {variant}: last 32K chunk {:.3} ms, {:.0} TFLOP/s", 1e3 * seconds, chunk_flops(32768) / seconds / 1e12);
        for total in [32768, 65536] {
            let (mut seconds, mut flops) = (0.0, 0.0);
            for s in (c..=total).step_by(c) {
                seconds += time(&variant, s, 3);
                flops += chunk_flops(s);
            }
            print!("; whole {}K prefill {:.1} ms per layer ({:.0} TFLOP/s)", total / 1024, 1e3 * seconds, flops / seconds / 1e12);
        }
        println!();
    }
}

/// Times each operation of one Llama-2-7B layer on a 4096-token prefill chunk (candle's kernels, as
/// `Attention::forward_cached` and `SwiGlu` call them), to see where the prefill's time outside the
/// attention kernel goes. A benchmark, not a test: `flash-... --ignored --nocapture time_prefill_layer_ops`.
#[test]
#[ignore]
fn time_prefill_layer_ops() {
    use candle_nn::Module;
    let Some(dev) = cuda_device() else { return };
    let (c, hidden, inter, heads, d) = (4096, 4096, 11008, 32, 128);
    let bf = |shape: &[usize]| Tensor::randn(0f32, 0.02, shape, &dev).unwrap().to_dtype(DType::BF16).unwrap();
    let x = bf(&[1, c, hidden]);
    let linear = |i: usize, o: usize| candle_nn::Linear::new(bf(&[o, i]), None);
    let (q_proj, gate, down) = (linear(hidden, hidden), linear(hidden, inter), linear(inter, hidden));
    let norm_w = bf(&[hidden]);
    let gated = bf(&[1, c, inter]);
    let heads_view = bf(&[1, c, hidden]);
    let split = heads_view.reshape((1, c, heads, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    let table = bf(&[c, d / 2]);
    let cache = Tensor::zeros((1, heads, 65536, d), DType::BF16, &dev).unwrap();
    let time = |name: &str, per_layer: usize, f: &dyn Fn() -> Tensor| {
        f();
        dev.synchronize().unwrap();
        let reps = 20;
        let started = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        dev.synchronize().unwrap();
        let ms = 1e3 * started.elapsed().as_secs_f64() / reps as f64;
        println!("layer op {name}: {ms:.3} ms x {per_layer} per layer = {:.3} ms", ms * per_layer as f64);
        ms * per_layer as f64
    };
    let mut total = 0.0;
    total += time("linear 4096->4096 (q, k, v, o)", 4, &|| q_proj.forward(&x).unwrap());
    total += time("linear 4096->11008 (gate, up)", 2, &|| gate.forward(&x).unwrap());
    total += time("linear 11008->4096 (down)", 1, &|| down.forward(&gated).unwrap());
    total += time("rms_norm", 2, &|| candle_nn::ops::rms_norm(&x, &norm_w, 1e-5).unwrap());
    total += time("split heads (transpose, contiguous)", 3, &|| {
        heads_view.reshape((1, c, heads, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
    });
    total += time("rope", 2, &|| candle_nn::rotary_emb::rope(&split, &table, &table).unwrap());
    total += time("merge heads (transpose, reshape)", 1, &|| split.transpose(1, 2).unwrap().reshape((1, c, hidden)).unwrap());
    total += time("residual add", 2, &|| (&x + &x).unwrap());
    total += time("silu", 1, &|| candle_nn::ops::silu(&gated).unwrap());
    total += time("gate * up", 1, &|| (&gated * &gated).unwrap());
    // What the model runs now in place of some of the above (headscope_model::fused_ops).
    println!("layer ops, candle's (the model's before fused_ops): {total:.3} ms");
    let token_major = bf(&[1, c, heads, d]);
    time("fused silu_mul (replaces silu and gate * up)", 1, &|| headscope_model::fused_ops::silu_mul(&gated, &gated).unwrap());
    time("rope_thd on token-major keys", 1, &|| candle_nn::rotary_emb::rope_thd(&token_major, &table, &table).unwrap());
    let cache_tm = Tensor::zeros((1, heads, 65536, d), DType::BF16, &dev).unwrap();
    time("write_token_major into the cache (replaces split and slice_set), k and v", 2, &|| {
        headscope_model::fused_ops::write_token_major(&cache_tm, &token_major, 30000).unwrap();
        token_major.clone()
    });
    let mut set = 0.0;
    for _ in 0..2 {
        cache.slice_set(&split, 2, 30000).unwrap();
    }
    dev.synchronize().unwrap();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        cache.slice_set(&split, 2, 30000).unwrap();
    }
    dev.synchronize().unwrap();
    set += 2.0 * 1e3 * started.elapsed().as_secs_f64() / 20.0;
    println!("layer op cache slice_set: {:.3} ms per layer (k and v)", set);
    total += set;
    println!("layer ops outside attention: {total:.3} ms per layer per 4096-token chunk");
}

/// Times one layer's decode attention (`decode_attention`: the scores pass, then the values pass with
/// the softmax and argmax) for Llama-2-7B's (32 KV heads) and Mistral-7B's (8 KV heads) shapes at 4K,
/// 32K and 64K keys, with the bandwidth its K and V reads reach. A benchmark, not a test: `flash-...
/// --ignored --nocapture time_decode_attention`.
#[test]
#[ignore]
fn time_decode_attention() {
    let Some(dev) = cuda_device() else { return };
    for (name, kv) in [("llama-2-7b", 32), ("mistral-7b", 8)] {
        let (heads, d) = (32, 128);
        let q = Tensor::randn(0f32, 1.0, (1, heads, 1, d), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let cache = || Tensor::randn(0f32, 1.0, (1, kv, 65536, d), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let (kc, vc) = (cache(), cache());
        for s in [4096, 32768, 65536] {
            let (k, v) = (kc.narrow(2, 0, s).unwrap(), vc.narrow(2, 0, s).unwrap());
            decode_attention(&q, &k, &v).unwrap();
            dev.synchronize().unwrap();
            let reps = 50;
            let started = std::time::Instant::now();
            for _ in 0..reps {
                decode_attention(&q, &k, &v).unwrap();
            }
            dev.synchronize().unwrap();
            let seconds = started.elapsed().as_secs_f64() / reps as f64;
            let bytes = 2.0 * (kv * s * d * 2) as f64;
            println!(
                "decode attention {name} {s} keys: {:.3} ms per layer ({:.1} ms for 32 layers), K and V read at {:.0} GB/s",
                1e3 * seconds,
                32e3 * seconds,
                bytes / seconds / 1e9
            );
        }
    }
}

#[test]
fn decode_kernels_match_plain_attention_and_its_argmax() {
    let Some(dev) = cuda_device() else { return };
    // (heads, kv heads, head dim, keys, dtype, period): MHA, GQA groups of 4 and 8, spans past one value
    // block, spans of two weight tiles (1024 keys; over 64K keys with 32 KV heads); with a period, the
    // keys repeat, so that every score ties with its copies in other blocks of keys.
    for (heads, kv, d, s, dtype, period) in [
        (32, 32, 128, 3000, DType::BF16, None),
        (32, 8, 128, 5000, DType::BF16, None),
        (16, 2, 64, 700, DType::F16, None),
        (32, 32, 64, 66000, DType::F16, None),
        (8, 2, 128, 3000, DType::BF16, Some(1000)),
    ] {
        let q = Tensor::randn(0f32, 1.0, (1, heads, 1, d), &dev).unwrap().to_dtype(dtype).unwrap();
        let cache =
            |scale: f64, rows: usize| (Tensor::randn(0f32, 1.0, (1, kv, rows, d), &dev).unwrap() * scale).unwrap().to_dtype(dtype).unwrap();
        let kc = match period {
            None => cache(2.0, s + 30),
            Some(p) => Tensor::cat(&vec![cache(2.0, p); (s + 30).div_ceil(p)], 2).unwrap(),
        };
        let vc = cache(1.0, s + 30);
        let (k, v) = (kc.narrow(2, 0, s).unwrap(), vc.narrow(2, 0, s).unwrap());
        let decoded = decode_attention(&q, &k, &v).unwrap();
        let (out, weights) = (decoded.out, decoded.weights);
        assert_eq!(weights.dims(), &[1, kv, heads / kv, 1, s]);
        let want = reference(&q, &k, &v, None);
        let err = max_abs_difference(&out, &want);
        let sums = weights.sum(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(sums.iter().all(|x| (x - 1.0).abs() < 1e-3), "weights sum to {sums:?}");
        // The argmax of the kernel's weights is the argmax of the half-precision scores.
        let scores = {
            let group = heads / kv;
            let k = k.unsqueeze(2).unwrap().expand((1, kv, group, s, d)).unwrap().reshape((1, heads, s, d)).unwrap();
            (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (d as f64).sqrt())).unwrap().to_dtype(DType::F32).unwrap()
        };
        let want_argmax = scores.flatten_all().unwrap().reshape((heads, s)).unwrap().argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
        let got_argmax = decoded.argmax.to_vec1::<u32>().unwrap();
        // The kernel's argmax is the first position of each row's largest score (torch.argmax's choice;
        // candle's reduction may pick another position of a tie, and half-precision scores do tie). Its
        // weight is the largest; it is the first position of the largest weight too unless f32 exp rounds
        // a smaller score to that weight, but of repeated keys (equal scores) it is always the first copy.
        let period = period.unwrap_or(s);
        let rows = weights.reshape((heads, s)).unwrap().to_vec2::<f32>().unwrap();
        for (h, row) in rows.iter().enumerate() {
            let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let got = got_argmax[h] as usize;
            assert_eq!(row[got], best, "head {h}: the weight at the argmax {got} is not the largest");
            assert!(got < period, "head {h}: the argmax {got} is not the first copy of its key (period {period})");
        }
        let same = want_argmax.iter().zip(&got_argmax).filter(|(a, b)| **a as usize % period == **b as usize % period).count();
        eprintln!("decode heads {heads}/{kv} d {d} keys {s} {dtype:?}: max error {err:.2e}, argmax {same}/{heads}");
        assert!(err < 0.02, "decode output error {err}");
        assert!(same + 1 >= heads, "argmax agreement {same}/{heads}");
    }
}

#[test]
fn a_model_prefilled_by_the_fused_kernel_is_as_close_to_f32_as_the_chunked_path() {
    let Some(dev) = cuda_device() else { return };
    for (arch, head_dim) in [(TinyArch::Llama, 64), (TinyArch::Mistral(Some(400)), 128)] {
        let dir = tempfile::tempdir().unwrap();
        let tiny = TinyModel { seed: 5, head_dim, heads: 8, kv_heads: 2, layers: 3, intermediate: 512, ..TinyModel::new(arch) };
        tiny.write(dir.path()).unwrap();
        let mut r = headscope_core::rng::SplitMix64::new(4);
        let prompt: Vec<u32> = (0..1500).map(|_| 3 + r.below(300) as u32).collect();
        // An f32 run (chunked: the fused kernel is half precision only) decodes greedily and is the
        // reference; the two bf16 runs are fed its tokens (teacher forcing), so a near tie that rounds
        // the other way cannot send them down another path. The fused prefill must be no further from
        // the reference than the chunked one.
        let mut fed = vec![prompt[1499]];
        let mut runs: Vec<Vec<(Vec<f32>, Vec<u32>)>> = Vec::new();
        for (dtype, fused) in [(DType::F32, false), (DType::BF16, true), (DType::BF16, false)] {
            let options = LoadOptions::on(dev.clone(), Some(dtype));
            let mut m = LoadedModel::load(dir.path(), &options).unwrap();
            m.model.set_fused_attention(fused);
            assert_eq!(m.model.uses_fused_attention(), fused);
            m.model.prefill(&prompt[..1499]).unwrap();
            let mut steps = Vec::new();
            for i in 0..8 {
                let out = m.model.step(fed[i], &Probe::default()).unwrap();
                if dtype == DType::F32 {
                    fed.push(out.greedy_token().unwrap());
                }
                steps.push((out.logits.to_vec1::<f32>().unwrap(), out.argmax_position));
            }
            runs.push(steps);
        }
        let compare = |other: &Vec<(Vec<f32>, Vec<u32>)>| agreement(&runs[0], other);
        let (fused_agree, fused_err) = compare(&runs[1]);
        let (chunked_agree, chunked_err) = compare(&runs[2]);
        eprintln!(
            "{arch:?} d {head_dim} vs f32: fused bf16 argmax {:.1} %, logit error {fused_err:.3}; chunked bf16 argmax {:.1} %, logit error {chunked_err:.3}",
            100.0 * fused_agree,
            100.0 * chunked_agree
        );
        assert!(fused_err <= 1.5 * chunked_err + 0.01, "fused logit error {fused_err} vs chunked {chunked_err}");
        assert!(fused_agree >= chunked_agree - 0.02, "fused argmax agreement {fused_agree} vs chunked {chunked_agree}");
    }
}

#[test]
fn training_attention_on_the_gpu_matches_the_cpu_with_its_gradients() {
    let Some(gpu) = cuda_device() else { return };
    use candle_core::Var;
    use headscope_model::train_attention::causal_attention;
    for window in [None, Some(50)] {
        let (b, heads, kv, t, d) = (2, 8, 2, 300, 32);
        let host = |shape: (usize, usize, usize, usize)| Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
        let (q, k, v, w) = (host((b, heads, t, d)), host((b, kv, t, d)), host((b, kv, t, d)), host((b, heads, t, d)));
        let run = |dev: &Device| {
            let vars: Vec<Var> = [&q, &k, &v].iter().map(|x| Var::from_tensor(&x.to_device(dev).unwrap()).unwrap()).collect();
            let out = causal_attention(&vars[0], &vars[1], &vars[2], window).unwrap();
            let grads = (&out * w.to_device(dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![out.to_device(&Device::Cpu).unwrap()];
            all.extend(vars.iter().map(|x| grads.get(x).unwrap().to_device(&Device::Cpu).unwrap()));
            all
        };
        for (name, (c, g)) in ["output", "dq", "dk", "dv"].iter().zip(run(&Device::Cpu).iter().zip(run(&gpu).iter())) {
            let diff = max_abs_difference(c, g);
            let scale = c.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-4 * scale.max(1.0), "window {window:?}: {name} differs by {diff} (largest {scale})");
        }
    }
}

/// Largest absolute difference of `a` and `b`, and the largest magnitude in `a`.
fn difference_and_scale(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let b = b.to_device(&Device::Cpu).unwrap();
    let max = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    (max(&(a - b).unwrap()), max(a))
}

#[test]
fn training_ops_on_the_gpu_match_the_cpu_with_their_gradients() {
    let Some(gpu) = cuda_device() else { return };
    use candle_core::Var;
    use headscope_model::train_ops::{adamw_update, cross_entropy, rms_norm, rope, AdamWStep};
    let host = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    // Each case: inputs, and the op as a function of them (on whichever device they are).
    let angles = (host(&[300, 16]) * 3.0).unwrap();
    let targets: Vec<u32> = (0..600u32).map(|i| (i * 7919) % 1000).collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    type Op<'a> = Box<dyn Fn(&[Var]) -> Tensor + 'a>;
    let cases: Vec<(&str, Vec<Tensor>, Op)> = vec![
        ("rms_norm", vec![host(&[2, 300, 256]), host(&[256])], Box::new(|v: &[Var]| rms_norm(&v[0], &v[1], 1e-5).unwrap())),
        (
            "rope",
            vec![host(&[2, 4, 300, 32])],
            Box::new(|v: &[Var]| {
                let dev = v[0].device();
                rope(&v[0], &angles.cos().unwrap().to_device(dev).unwrap(), &angles.sin().unwrap().to_device(dev).unwrap()).unwrap()
            }),
        ),
        (
            "cross_entropy",
            vec![(host(&[600, 1000]) * 4.0).unwrap()],
            Box::new(|v: &[Var]| cross_entropy(&v[0], &targets.to_device(v[0].device()).unwrap()).unwrap()),
        ),
    ];
    for (name, inputs, op) in &cases {
        let run = |dev: &Device| {
            let vars: Vec<Var> = inputs.iter().map(|x| Var::from_tensor(&x.to_device(dev).unwrap()).unwrap()).collect();
            let out = op(&vars);
            // Loss weights that differ per element, alike on both devices.
            let n = out.elem_count();
            let weights = (Tensor::arange(0f32, n as f32, dev).unwrap() * 0.37).unwrap().sin().unwrap().reshape(out.dims()).unwrap();
            let grads = (&out * weights).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![out.to_device(&Device::Cpu).unwrap()];
            all.extend(vars.iter().map(|x| grads.get(x).unwrap().to_device(&Device::Cpu).unwrap()));
            all
        };
        let (on_cpu, on_gpu) = (run(&Device::Cpu), run(&gpu));
        for (i, (c, g)) in on_cpu.iter().zip(&on_gpu).enumerate() {
            let (diff, scale) = difference_and_scale(c, g);
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{name}: {} differs by {diff} (largest {scale})",
                if i == 0 { "output".to_string() } else { format!("gradient {i}") }
            );
        }
    }
    let step = AdamWStep { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, bias_correction: [0.1, 0.05], grad_scale: 0.5, keep: 0.999 };
    let (w, g, m) = (host(&[1000, 37]), host(&[1000, 37]), host(&[74000]).abs().unwrap());
    let updated = |dev: &Device| {
        let (w, m) = (Var::from_tensor(&w.to_device(dev).unwrap()).unwrap(), Var::from_tensor(&m.to_device(dev).unwrap()).unwrap());
        adamw_update(&w, &m, &g.to_device(dev).unwrap(), &step).unwrap();
        [w.as_tensor().to_device(&Device::Cpu).unwrap(), m.as_tensor().to_device(&Device::Cpu).unwrap()]
    };
    for (name, (c, g)) in ["weights", "moments"].iter().zip(updated(&Device::Cpu).iter().zip(updated(&gpu).iter())) {
        let (diff, scale) = difference_and_scale(c, g);
        assert!(diff <= 1e-5 * scale.max(1.0), "adamw: {name} differ by {diff}");
    }
}

/// The new families on CUDA give the CPU's logits and argmax positions: Jamba's Mamba layers through the
/// selective-scan kernel (state carried over prefill chunks and decode steps), Qwen3's and Gemma-3's
/// q/k norms and Gemma-3's other scale through the fused attention kernels (bf16 against the CPU in
/// bf16 would differ by rounding; f32 takes the plain attention path and the scan kernel).
#[test]
fn new_families_on_cuda_match_the_cpu() {
    let Some(dev) = cuda_device() else { return };
    for arch in [TinyArch::Jamba, TinyArch::Qwen3, TinyArch::Phi3, TinyArch::Gemma2, TinyArch::Gemma3] {
        let dir = tempfile::tempdir().unwrap();
        TinyModel { seed: 3, ..TinyModel::new(arch) }.write(dir.path()).unwrap();
        let run = |device: Device| {
            let mut m = LoadedModel::load(dir.path(), &LoadOptions::on(device, Some(DType::F32))).unwrap();
            m.model.set_prefill_chunk(7);
            let ids: Vec<u32> = (0..60).map(|i| 3 + (i * 37 % 300) as u32).collect();
            m.model.prefill(&ids[..59]).unwrap();
            let mut out = Vec::new();
            let mut next = ids[59];
            for _ in 0..5 {
                let step = m.model.step(next, &Probe::default()).unwrap();
                next = step.greedy_token().unwrap();
                out.push((step.logits.to_device(&Device::Cpu).unwrap(), step.argmax_position));
            }
            out
        };
        let (cpu, gpu) = (run(Device::Cpu), run(dev.clone()));
        for (step, ((lc, ac), (lg, ag))) in cpu.iter().zip(&gpu).enumerate() {
            let d = max_abs_difference(lc, lg);
            assert!(d < 1e-3, "{arch:?} step {step}: logits differ by {d}");
            assert_eq!(ac, ag, "{arch:?} step {step}: argmax positions");
        }
    }
}

/// A head-level KV plan on CUDA computes what it computes on the CPU (the split attention takes the
/// plain path; an all-windowed layer holds no whole head at all).
#[test]
fn kv_plans_on_cuda_match_the_cpu() {
    let Some(dev) = cuda_device() else { return };
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 4, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let spec = headscope_model::ModelSpec::from_config_file(&dir.path().join("config.json")).unwrap();
    for plan in [
        headscope_engine::KvPlan::all_windowed(&spec, 2, 9).unwrap(),
        headscope_engine::KvPlan::keeping_heads(&spec, &[headscope_core::HeadId::new(1, 3)], 2, 9).unwrap(),
    ] {
        let run = |device: Device| {
            let mut m = LoadedModel::load(dir.path(), &LoadOptions::on(device, Some(DType::F32))).unwrap();
            m.model.set_kv_plan(Some(plan.clone())).unwrap();
            m.model.set_prefill_chunk(7);
            let ids: Vec<u32> = (0..50).map(|i| 3 + (i * 31 % 300) as u32).collect();
            m.model.prefill(&ids[..49]).unwrap();
            let step = m.model.step(ids[49], &Probe::default()).unwrap();
            (step.logits.to_device(&Device::Cpu).unwrap(), step.argmax_position)
        };
        let ((lc, ac), (lg, ag)) = (run(Device::Cpu), run(dev.clone()));
        assert!(max_abs_difference(&lc, &lg) < 1e-3);
        assert_eq!(ac, ag);
    }
}

/// Decode steps under a KV plan run each part (whole and windowed KV heads) through the fused decode
/// kernels, the windowed part over its visible keys: as close to an f32 run of the same plan as the
/// plain planned path in bf16 is, with the argmax found on the device equal to the one a probed step
/// computes from the weights on the host.
#[test]
fn fused_decode_under_a_kv_plan_is_as_close_to_f32_as_the_plain_planned_path() {
    let Some(dev) = cuda_device() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinyModel { seed: 6, head_dim: 64, heads: 8, kv_heads: 2, layers: 3, intermediate: 512, ..TinyModel::new(TinyArch::Llama) };
    tiny.write(dir.path()).unwrap();
    let spec = headscope_model::ModelSpec::from_config_file(&dir.path().join("config.json")).unwrap();
    let mut r = headscope_core::rng::SplitMix64::new(9);
    let prompt: Vec<u32> = (0..1200).map(|_| 3 + r.below(300) as u32).collect();
    for plan in [
        headscope_engine::KvPlan::keeping_heads(&spec, &[headscope_core::HeadId::new(1, 5)], 4, 100).unwrap(),
        headscope_engine::KvPlan::all_windowed(&spec, 4, 100).unwrap(),
    ] {
        let mut fed = vec![prompt[1199]];
        let mut runs: Vec<Vec<(Vec<f32>, Vec<u32>)>> = Vec::new();
        for (dtype, fused) in [(DType::F32, false), (DType::BF16, true), (DType::BF16, false)] {
            let mut m = LoadedModel::load(dir.path(), &LoadOptions::on(dev.clone(), Some(dtype))).unwrap();
            m.model.set_fused_attention(fused);
            m.model.set_kv_plan(Some(plan.clone())).unwrap();
            m.model.prefill(&prompt[..1199]).unwrap();
            let mut steps = Vec::new();
            for i in 0..8 {
                // One step also asks for two heads' rows: the host path must find the same argmax.
                let probe = if i == 3 {
                    Probe { rows: vec![headscope_core::HeadId::new(1, 5), headscope_core::HeadId::new(2, 0)], ..Probe::default() }
                } else {
                    Probe::default()
                };
                let out = m.model.step(fed[i], &probe).unwrap();
                for row in &out.attention_rows {
                    let h = row.head.layer * 8 + row.head.head;
                    let best = row.weights.iter().enumerate().fold(0, |b, (j, &w)| if w > row.weights[b] { j } else { b });
                    assert_eq!(
                        row.weights[out.argmax_position[h] as usize], row.weights[best],
                        "{:?}: argmax on a largest weight",
                        row.head
                    );
                }
                if dtype == DType::F32 {
                    fed.push(out.greedy_token().unwrap());
                }
                steps.push((out.logits.to_vec1::<f32>().unwrap(), out.argmax_position));
            }
            runs.push(steps);
        }
        let compare = |other: &Vec<(Vec<f32>, Vec<u32>)>| agreement(&runs[0], other);
        let ((fused_agree, fused_err), (plain_agree, plain_err)) = (compare(&runs[1]), compare(&runs[2]));
        eprintln!(
            "plan with {} whole KV heads vs f32: fused bf16 argmax {:.1} %, logit error {fused_err:.3}; plain bf16 argmax {:.1} %, logit error {plain_err:.3}",
            plan.full_heads(),
            100.0 * fused_agree,
            100.0 * plain_agree
        );
        assert!(fused_err <= 1.5 * plain_err + 0.01, "fused logit error {fused_err} vs plain {plain_err}");
        assert!(fused_agree >= plain_agree - 0.02, "fused argmax agreement {fused_agree} vs plain {plain_agree}");
    }
}
