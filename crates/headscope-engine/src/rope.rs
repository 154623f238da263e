//! Rotary position embeddings as numbers: the inverse frequency of each rotary pair after the
//! checkpoint's scaling, and the factor cos and sin are multiplied by. Every backend builds its tables
//! from these.

use crate::spec::{ModelSpec, RopeScaling, RopeSpec};

/// Inverse frequencies per rotary pair of the model's (global) RoPE, after scaling; LongRoPE's short
/// factors.
pub fn inverse_frequencies(spec: &ModelSpec) -> Vec<f64> {
    inverse_frequencies_of(&spec.global_rope(), spec.rotary_dim, false)
}

/// Inverse frequencies per rotary pair of `rope` over a rotated width of `rotary_dim`; `long` picks
/// LongRoPE's long factors (other scalings ignore it).
pub fn inverse_frequencies_of(rope: &RopeSpec, rotary_dim: usize, long: bool) -> Vec<f64> {
    let d = rotary_dim;
    let base: Vec<f64> = (0..d).step_by(2).map(|i| 1.0 / rope.theta.powf(i as f64 / d as f64)).collect();
    match &rope.scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::LongRope { short_factor, long_factor, .. } => {
            let stretch = if long { long_factor } else { short_factor };
            base.into_iter().zip(stretch).map(|(f, s)| f / s).collect()
        }
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

/// What cos and sin are multiplied by (LongRoPE's attention factor; 1 for every other scaling).
pub fn attention_factor(rope: &RopeSpec) -> f64 {
    match &rope.scaling {
        RopeScaling::LongRope { attention_factor, .. } => *attention_factor,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longrope_divides_each_pair_by_its_short_or_long_factor() {
        let rope = RopeSpec {
            theta: 100.0,
            scaling: RopeScaling::LongRope {
                short_factor: vec![1.0, 2.0],
                long_factor: vec![4.0, 8.0],
                original_max_position_embeddings: 16,
                attention_factor: 1.5,
            },
        };
        // rotary_dim 4: pairs at exponents 0/4 and 2/4 of base 100 -> 1 and 0.1.
        let short = inverse_frequencies_of(&rope, 4, false);
        let long = inverse_frequencies_of(&rope, 4, true);
        assert!((short[0] - 1.0).abs() < 1e-12 && (short[1] - 0.05).abs() < 1e-12, "{short:?}");
        assert!((long[0] - 0.25).abs() < 1e-12 && (long[1] - 0.0125).abs() < 1e-12, "{long:?}");
        assert_eq!(attention_factor(&rope), 1.5);
        assert_eq!(attention_factor(&RopeSpec { theta: 1.0, scaling: RopeScaling::None }), 1.0);
    }
}
