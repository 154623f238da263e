// Causal (optionally sliding-window) grouped-query attention of one query row and one query head per
// workgroup, instrumented as HeadScope needs:
//  - head masks from `control`: 1 = uniform (the query is zeroed, so every visible key scores 0 and the
//    softmax is uniform), 2 = zero (the head's output is zeroed; its attention is still observed);
//  - at decode steps, the argmax over the softmax weights (first maximum, like candle's argmax) goes to
//    `probe[layer * heads + head]` as an absolute position, and heads given a row slot in `control`
//    copy their weights to `probe[total + slot * capacity + position]`.
// Scores live in `scratch` (one `capacity`-long row per query row and head) between the passes.
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

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cache_v: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(7) var<storage, read> control: array<u32>;
@group(0) @binding(8) var<storage, read_write> probe: array<u32>;

const WG: u32 = 64u;
const NO_SLOT: u32 = 0xffffffffu;

var<workgroup> qs: array<vec4<f32>, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> red_i: array<u32, 64>;
var<workgroup> parts: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let r = wid.y;
    let t = lid.x;
    let qpos = run.pos + r;
    var lo = 0u;
    if (op.window > 0u && qpos + 1u > op.window) {
        lo = qpos + 1u - op.window;
    }
    let n = qpos + 1u - lo;
    let slot = op.layer * op.heads + h;
    var mask_base = 0u;
    if (run.decoding != 0u) {
        mask_base = op.total;
    }
    let mode = control[mask_base + slot];
    let kvh = h / op.group;
    let d4 = op.dim / 4u;
    let kw4 = op.kv_heads * d4;
    for (var i = t; i < d4; i += WG) {
        var v = q[(r * op.heads + h) * d4 + i];
        if (mode == 1u) {
            v = vec4<f32>(0.0);
        }
        qs[i] = v;
    }
    workgroupBarrier();

    // Pass 1: scores and their maximum.
    let sbase = (r * op.heads + h) * op.capacity;
    var mx = bitcast<f32>(0xff7fffffu);
    for (var j = t; j < n; j += WG) {
        let kp = (lo + j) * kw4 + kvh * d4;
        var s = vec4<f32>(0.0);
        for (var i = 0u; i < d4; i++) {
            s += qs[i] * cache_k[kp + i];
        }
        let score = (s.x + s.y + s.z + s.w) * op.scale;
        scratch[sbase + j] = score;
        mx = max(mx, score);
    }
    red[t] = mx;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (t < k) {
            red[t] = max(red[t], red[t + k]);
        }
        workgroupBarrier();
    }
    let gmax = red[0];
    workgroupBarrier();

    // Pass 2: exponentials and their sum (each invocation touches only its own keys).
    var sum = 0.0;
    for (var j = t; j < n; j += WG) {
        let e = exp(scratch[sbase + j] - gmax);
        scratch[sbase + j] = e;
        sum += e;
    }
    red[t] = sum;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (t < k) {
            red[t] += red[t + k];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();

    // Pass 3: weights, each invocation's first maximum.
    var best = -1.0;
    var best_j = 0xffffffffu;
    for (var j = t; j < n; j += WG) {
        let p = scratch[sbase + j] / total;
        scratch[sbase + j] = p;
        if (p > best) {
            best = p;
            best_j = j;
        }
    }
    red[t] = best;
    red_i[t] = best_j;
    // Every weight must be visible to every invocation before the weighted sum below.
    storageBarrier();
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (t < k) {
            let b = red[t + k];
            let bj = red_i[t + k];
            if (b > red[t] || (b == red[t] && bj < red_i[t])) {
                red[t] = b;
                red_i[t] = bj;
            }
        }
        workgroupBarrier();
    }

    if (run.decoding != 0u) {
        if (t == 0u) {
            probe[slot] = lo + red_i[0];
        }
        let row_slot = control[2u * op.total + slot];
        if (row_slot != NO_SLOT) {
            let base = op.total + row_slot * op.capacity + lo;
            for (var j = t; j < n; j += WG) {
                probe[base + j] = bitcast<u32>(scratch[sbase + j]);
            }
        }
    }

    // Pass 4: weighted sum of values. Heads narrower than the workgroup split the keys into slices
    // (one invocation per dimension and slice) and sum the slices through workgroup memory.
    let ob = (r * op.heads + h) * op.dim;
    let vb = kvh * op.dim;
    let vw = op.kv_heads * op.dim;
    if (op.dim >= WG) {
        for (var i = t; i < op.dim; i += WG) {
            var a = 0.0;
            for (var j = 0u; j < n; j++) {
                a += scratch[sbase + j] * cache_v[(lo + j) * vw + vb + i];
            }
            if (mode == 2u) {
                a = 0.0;
            }
            out[ob + i] = a;
        }
    } else {
        let slices = WG / op.dim;
        let i = t % op.dim;
        let slice = t / op.dim;
        var a = 0.0;
        if (slice < slices) {
            for (var j = slice; j < n; j += slices) {
                a += scratch[sbase + j] * cache_v[(lo + j) * vw + vb + i];
            }
        }
        parts[t] = a;
        workgroupBarrier();
        if (t < op.dim) {
            var s = 0.0;
            for (var k = 0u; k < slices; k++) {
                s += parts[k * op.dim + t];
            }
            if (mode == 2u) {
                s = 0.0;
            }
            out[ob + t] = s;
        }
    }
}
