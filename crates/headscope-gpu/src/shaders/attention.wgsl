// Causal (optionally sliding-window) grouped-query attention, instrumented as HeadScope needs. Query
// head h reads key/value head h / group. Masks from `control` (per query head; the prefill block first,
// the decode block `total` further on): 1 = uniform (the query is zeroed, so every visible key scores 0
// and the softmax is uniform), 2 = zero (the head's output is zeroed; its attention is still observed).
//
// None of these kernels uses workgroup memory or barriers: on CPU implementations (SwiftShader,
// lavapipe) a barrier turns every group of invocations into a coroutine, which costs more than the
// arithmetic. Head width is specialised at pipeline creation: `D4` (head_dim / 4) and the unrolled
// `{{...}}` blocks are filled in by kernels.rs, so queries and accumulators stay in registers.
//
// Prefill (attention_prefill.wgsl): one invocation per few query rows of a head walks their visible keys
// once with an online softmax. Decode steps observe the weights, so they run in three passes over a score row in `scratch`
// (`capacity` floats per head): `scores`, then `softmax` (normalises, records the argmax, the first
// maximum like candle's, and copies requested rows into `probe`), then `values`.
struct Op {
    layer: u32,
    heads: u32,
    kv_heads: u32,
    dim: u32,
    group: u32,
    capacity: u32,
    window: u32,
    scale: f32,
    total: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const D4: u32 = {{D4}}u;
const NO_SLOT: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;

fn first_visible(p: u32) -> u32 {
    if (op.window > 0u && p + 1u > op.window) {
        return p + 1u - op.window;
    }
    return 0u;
}

fn mask_mode(h: u32) -> u32 {
    var base = 0u;
    if (run.decoding != 0u) {
        base = op.total;
    }
    return control[base + op.layer * op.heads + h];
}
