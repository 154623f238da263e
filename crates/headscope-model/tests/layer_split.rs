//! The decoder layers split over several devices (`--device cpu,cpu`): every head's argmax and row,
//! the logits and the greedy tokens are those of the unsplit model, bit for bit on the CPU.

use candle_core::{Device, Tensor};
use headscope_core::HeadId;
use headscope_model::testkit::{cuda_device, TinyArch, TinyModel};
use headscope_model::{greedy_decode, HeadMask, LoadOptions, LoadedModel, MaskMode, MaskScope, Probe, Transformer};

fn write(arch: TinyArch, layers: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 5, layers, ..TinyModel::new(arch) }.write(dir.path()).unwrap();
    dir
}

fn load_on(dir: &tempfile::TempDir, devices: &[Device]) -> LoadedModel {
    let options = LoadOptions { dtype: None, device: devices[0].clone(), later_devices: devices[1..].to_vec() };
    LoadedModel::load(dir.path(), &options).unwrap()
}

fn ids(n: usize) -> Vec<u32> {
    let mut r = headscope_core::rng::SplitMix64::new(11);
    (0..n).map(|_| 3 + r.below(300) as u32).collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

/// Prefills in short chunks, then decodes greedily step by step probing every head's row: returns per
/// step the logits' bits, the argmax positions and the rows' bits.
#[allow(clippy::type_complexity)]
fn trace(model: &mut Transformer, prompt: &[u32], steps: usize) -> Vec<(Vec<u32>, Vec<u32>, Vec<Vec<u32>>)> {
    let rows: Vec<HeadId> = model.spec().head_shape().iter().collect();
    let probe = Probe { rows, ..Probe::default() };
    model.reset();
    model.set_prefill_chunk(5);
    let (&last, context) = prompt.split_last().unwrap();
    model.prefill(context).unwrap();
    let mut token = last;
    let mut out = Vec::new();
    for _ in 0..steps {
        let step = model.step(token, &probe).unwrap();
        assert!(step.logits.device().same_device(model.device()), "logits come back on the model's device");
        let rows = step.attention_rows.iter().map(|r| r.weights.iter().map(|w| w.to_bits()).collect()).collect();
        out.push((bits(&step.logits), step.argmax_position.clone(), rows));
        token = step.greedy_token().unwrap();
    }
    out
}

fn check_same(arch: TinyArch, layers: usize, splits: &[usize]) {
    let dir = write(arch, layers);
    let mut whole = load_on(&dir, &[Device::Cpu]);
    assert_eq!(whole.model.devices().len(), 1);
    let prompt = ids(23);
    let mask = HeadMask { heads: vec![HeadId::new(0, 1), HeadId::new(1, 3)], mode: MaskMode::Uniform, scope: MaskScope::All };
    let expected = trace(&mut whole.model, &prompt, 6);
    let expected_decode = greedy_decode(&mut whole.model, &prompt, 8, &[], &Probe::default(), |_| true).unwrap();
    let batch = Tensor::new(&prompt[..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let expected_sequence = bits(&whole.model.forward_sequence(&batch).unwrap());
    whole.model.set_mask(Some(mask.clone())).unwrap();
    let expected_masked = trace(&mut whole.model, &prompt, 4);
    for &n in splits {
        let mut split = load_on(&dir, &vec![Device::Cpu; n]);
        let blocks = split.model.layer_blocks();
        assert_eq!(blocks.len(), n, "{arch:?} over {n}: {blocks:?}");
        assert_eq!((blocks[0].start, blocks[n - 1].end), (0, layers), "{blocks:?}");
        assert!(blocks.windows(2).all(|w| w[0].end == w[1].start && !w[1].is_empty()), "{blocks:?}");
        assert!(trace(&mut split.model, &prompt, 6) == expected, "{arch:?} over {n} devices: a step differs");
        let decode = greedy_decode(&mut split.model, &prompt, 8, &[], &Probe::default(), |_| true).unwrap();
        assert_eq!(decode.tokens, expected_decode.tokens, "{arch:?} over {n}");
        assert_eq!(decode.argmax_position, expected_decode.argmax_position, "{arch:?} over {n}");
        assert!(bits(&split.model.forward_sequence(&batch).unwrap()) == expected_sequence, "{arch:?} over {n}: forward_sequence");
        split.model.set_mask(Some(mask.clone())).unwrap();
        assert!(trace(&mut split.model, &prompt, 4) == expected_masked, "{arch:?} over {n} devices, masked: a step differs");
    }
}

#[test]
fn llama_split_over_two_and_three_cpus_is_the_unsplit_model() {
    check_same(TinyArch::Llama, 4, &[2, 3, 4]);
}

#[test]
fn tied_and_two_rope_families_split_exactly() {
    // Qwen2: the LM head is the embedding matrix, copied to the last device. Gemma-3: sliding layers
    // with a RoPE of their own, scaled embeddings, sandwich norms.
    check_same(TinyArch::Qwen2, 4, &[2]);
    check_same(TinyArch::Gemma3, 5, &[2, 3]);
}

#[test]
fn hybrid_mamba_states_follow_their_layers() {
    check_same(TinyArch::Jamba, 4, &[2, 3]);
}

#[test]
fn more_devices_than_layers_is_an_error() {
    let dir = write(TinyArch::Llama, 2);
    let options = LoadOptions { dtype: None, device: Device::Cpu, later_devices: vec![Device::Cpu; 2] };
    let error = LoadedModel::load(dir.path(), &options).err().expect("3 devices for 2 layers").to_string();
    assert!(error.contains("3 devices for 2 layers"), "{error}");
}

/// Two handles on one GPU are two devices to candle: the hidden state really moves between them.
#[test]
fn cuda_split_over_two_handles_is_the_unsplit_model() {
    let Some(gpu) = cuda_device() else { return };
    let second = Device::new_cuda(0).unwrap();
    let dir = write(TinyArch::Llama, 4);
    let load = |devices: &[Device]| {
        let options =
            LoadOptions { dtype: Some(candle_core::DType::F32), device: devices[0].clone(), later_devices: devices[1..].to_vec() };
        LoadedModel::load(dir.path(), &options).unwrap()
    };
    let mut whole = load(std::slice::from_ref(&gpu));
    let mut split = load(&[gpu.clone(), second]);
    let prompt = ids(23);
    assert!(trace(&mut split.model, &prompt, 6) == trace(&mut whole.model, &prompt, 6), "a step differs on the GPU");
}
