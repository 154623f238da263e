//! Training: the differentiable forward equals the inference forward, loss falls on a learnable task,
//! and a checkpoint resumes to exactly the same trajectory.

use headscope_model::candle_core::{DType, Device, Tensor};
use headscope_model::testkit::{cuda_device, TinyArch, TinyModel};
use headscope_model::ModelSpec;
use headscope_train::trainer::{AdamWConfig, Trainer};
use std::path::Path;

fn spec() -> ModelSpec {
    let c = TinyModel { vocab: 64, ..TinyModel::new(TinyArch::Llama) }.config_json();
    ModelSpec::from_config_json(&c.to_string(), Path::new("config.json")).unwrap()
}

/// Sequences whose second half copies the first: solvable only by attending back (a copying task).
fn batch(seed: u64) -> (Tensor, Tensor, Tensor) {
    let mut r = headscope_core::rng::SplitMix64::new(seed);
    let (b, half) = (8, 12);
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    for _ in 0..b {
        let first: Vec<u32> = (0..half).map(|_| 3 + r.below(60) as u32).collect();
        let seq: Vec<u32> = first.iter().chain(first.iter()).copied().collect();
        inputs.extend_from_slice(&seq[..2 * half - 1]);
        targets.extend_from_slice(&seq[1..]);
        // Only the copied half is predictable.
        weights.extend((1..2 * half).map(|i| if i >= half { 1f32 } else { 0.0 }));
    }
    let t = 2 * half - 1;
    let d = Device::Cpu;
    (
        Tensor::from_vec(inputs, (b, t), &d).unwrap(),
        Tensor::from_vec(targets, (b, t), &d).unwrap(),
        Tensor::from_vec(weights, (b, t), &d).unwrap(),
    )
}

#[test]
fn differentiable_forward_equals_inference_forward() {
    let t = Trainer::new(&spec(), &Device::Cpu, 1, AdamWConfig::default()).unwrap();
    let (x, _, _) = batch(0);
    let a = t.model().forward_sequence(&x).unwrap();
    let b = t.model().forward_sequence_differentiable(&x).unwrap();
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "{d}");
}

#[test]
fn loss_falls_and_checkpoints_resume_exactly() {
    let config = AdamWConfig { weight_decay: 0.0, ..Default::default() };
    let mut t = Trainer::new(&spec(), &Device::Cpu, 7, config).unwrap();
    assert!(t.parameter_count() > 10_000);
    assert_eq!(t.parameter_count() as u64, spec().parameter_count(), "the spec counts the tensors the trainer holds");
    let (x, y, w) = batch(100);
    let initial = t.loss(&x, &y, &w).unwrap().to_scalar::<f32>().unwrap();
    assert!((initial - (64f32).ln()).abs() < 0.5, "initial loss {initial} should be near ln(vocab)");
    for step in 0..60 {
        let (x, y, w) = batch(step);
        let s = t.train_step(&x, &y, &w, 3e-3).unwrap();
        assert!(s.loss.is_finite() && s.grad_norm.is_finite());
    }
    let after = t.loss(&x, &y, &w).unwrap().to_scalar::<f32>().unwrap();
    assert!(after < initial - 0.5, "loss {initial} -> {after}: training does not learn");

    // Save, take two steps; restore into a fresh trainer, take the same two steps: same weights.
    let dir = tempfile::tempdir().unwrap();
    t.save(dir.path()).unwrap();
    for s in [1000, 1001] {
        let (x, y, w) = batch(s);
        t.train_step(&x, &y, &w, 1e-3).unwrap();
    }
    let mut u = Trainer::new(&spec(), &Device::Cpu, 999, config).unwrap();
    u.restore(dir.path()).unwrap();
    assert_eq!(u.step(), 60);
    for s in [1000, 1001] {
        let (x, y, w) = batch(s);
        u.train_step(&x, &y, &w, 1e-3).unwrap();
    }
    let (x, y, w) = batch(5);
    let lt = t.loss(&x, &y, &w).unwrap().to_scalar::<f32>().unwrap();
    let lu = u.loss(&x, &y, &w).unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(lt, lu, "a resumed run must follow the same trajectory");

    // The exported f16 checkpoint, loaded under its Hugging Face tensor names, computes the same logits.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    t.export(&path, DType::F16).unwrap();
    let tensors = headscope_model::candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    assert!(tensors.contains_key("model.layers.1.self_attn.k_proj.weight") && tensors["lm_head.weight"].dtype() == DType::F16);
    let vb = headscope_model::candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let exported = headscope_model::Transformer::new(&spec(), vb).unwrap();
    let d = (exported.forward_sequence(&x).unwrap() - t.model().forward_sequence(&x).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 0.05, "f16 export changes logits by {d}");
}

#[test]
fn training_steps_on_the_gpu_follow_the_cpu() {
    let Some(gpu) = cuda_device() else { return };
    let c = TinyModel { vocab: 300, ..TinyModel::new(TinyArch::Llama) }.config_json();
    let spec = headscope_model::ModelSpec::from_config_json(&c.to_string(), std::path::Path::new("config.json")).unwrap();
    let mut rng = headscope_core::rng::SplitMix64::new(5);
    let (b, t) = (4, 40);
    let ids: Vec<u32> = (0..b * (t + 1)).map(|_| rng.below(300) as u32).collect();
    let rows = |skip: usize| -> Vec<u32> { ids.chunks(t + 1).flat_map(|r| r[skip..skip + t].to_vec()).collect() };
    let weights: Vec<f32> = (0..b * t).map(|i| 1.0 + (i % 3) as f32).collect();
    let losses = |dev: &Device| {
        let mut trainer = Trainer::new(&spec, dev, 11, AdamWConfig::default()).unwrap();
        let inputs = Tensor::from_vec(rows(0), (b, t), dev).unwrap();
        let targets = Tensor::from_vec(rows(1), (b, t), dev).unwrap();
        let w = Tensor::from_vec(weights.clone(), (b, t), dev).unwrap();
        (0..5).map(|_| trainer.train_step(&inputs, &targets, &w, 3e-3).unwrap().loss).collect::<Vec<f32>>()
    };
    let (on_cpu, on_gpu) = (losses(&Device::Cpu), losses(&gpu));
    assert!(on_cpu[4] < on_cpu[0] - 0.05, "the loss falls: {on_cpu:?}");
    for (c, g) in on_cpu.iter().zip(&on_gpu) {
        assert!((c - g).abs() <= 2e-3 * c.abs().max(1.0), "losses on the CPU {on_cpu:?}, on the GPU {on_gpu:?}");
    }
}
