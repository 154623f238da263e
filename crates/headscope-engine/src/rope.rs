//! Rotary position embeddings as numbers: the inverse frequency of each rotary pair after the
//! checkpoint's scaling. Every backend builds its tables from these.

use crate::spec::{ModelSpec, RopeScaling};

/// Inverse frequencies per rotary pair, after scaling.
pub fn inverse_frequencies(spec: &ModelSpec) -> Vec<f64> {
    let d = spec.head_dim;
    let base: Vec<f64> = (0..d).step_by(2).map(|i| 1.0 / spec.rope_theta.powf(i as f64 / d as f64)).collect();
    match &spec.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let original = *original_max_position_embeddings as f64;
            let low_wavelen = original / low_freq_factor;
            let high_wavelen = original / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
