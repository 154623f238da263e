// Decode-step attention for real GPUs: the softmax and the weighted sum of values spread over
// workgroups instead of one invocation per head walking the whole context (which left the GPU almost
// idle and made a decode step cost ~0.5 ms per layer at 1K tokens, growing with the context). They use
// workgroup memory and barriers, which cost more than they save on CPU implementations (SwiftShader,
// lavapipe): there the serial passes of attention_decode.wgsl stay (`DecodeKernels`).
//
// `softmax_wg`: one workgroup per head; max, sum of exponentials and the first largest weight by tree
// reductions (the sum is taken in another order than candle's, so weights can differ in the last bits).
// `values_split`: workgroup (chunk c, head h) sums the weighted values of positions c*CHUNK.. in STRIPES
// interleaved stripes per dimension group, reduces them and writes the chunk's partial sum after the
// score rows in `scratch`; `values_sum` adds each head's partials in chunk order. 256 invocations a
// chunk (STRIPES = 256 / D4: 16 for 64-wide heads), so that each walks 16 positions: with 64, each
// walked 64 dependent loads and the kernel was a quarter of the H200's decode step at 4K at ~100 GB/s.

const WG: u32 = 256u;
const CHUNK: u32 = 256u;
const STRIPES: u32 = {{STRIPES}}u;
const LOWEST: f32 = -3.4028234663852886e38;

var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;
var<workgroup> part: array<vec4<f32>, 256>;

fn chunks_per_head() -> u32 {
    return (op.capacity + CHUNK - 1u) / CHUNK;
}

// Scratch offset (in floats) of the partial sums of head h, chunk c, dimension group i.
fn partial_at(h: u32, c: u32, i: u32) -> u32 {
    return op.heads * op.capacity + ((h * chunks_per_head() + c) * D4 + i) * 4u;
}

@compute @workgroup_size(256)
fn softmax_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let p = run.pos;
    let lo = first_visible(p);
    let n = p + 1u - lo;
    let base = h * op.capacity;
    var m = LOWEST;
    for (var j = t; j < n; j += WG) {
        m = max(m, scratch[base + j]);
    }
    red_f[t] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_f[t] = max(red_f[t], red_f[t + s]);
        }
        workgroupBarrier();
    }
    let top = red_f[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = t; j < n; j += WG) {
        let e = exp(scratch[base + j] - top);
        scratch[base + j] = e;
        sum += e;
    }
    red_f[t] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_f[t] += red_f[t + s];
        }
        workgroupBarrier();
    }
    let total = red_f[0];
    workgroupBarrier();
    var best = -1.0;
    var best_j = 0xffffffffu;
    for (var j = t; j < n; j += WG) {
        let w = scratch[base + j] / total;
        scratch[base + j] = w;
        if (w > best) {
            best = w;
            best_j = j;
        }
    }
    red_f[t] = best;
    red_u[t] = best_j;
    workgroupBarrier();
    // The first largest weight: a larger weight wins, a tie goes to the earlier position.
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let w = red_f[t + s];
            let j = red_u[t + s];
            if (w > red_f[t] || (w == red_f[t] && j < red_u[t])) {
                red_f[t] = w;
                red_u[t] = j;
            }
        }
        workgroupBarrier();
    }
    let slot = op.layer * op.heads + h;
    if (t == 0u) {
        probe[slot] = lo + red_u[0];
    }
    let row_slot = control[2u * op.total + slot];
    if (row_slot != NO_SLOT) {
        let dst = op.total + row_slot * op.capacity + lo;
        for (var j = t; j < n; j += WG) {
            probe[dst + j] = bitcast<u32>(scratch[base + j]);
        }
    }
}

@compute @workgroup_size(256)
fn values_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = wid.x;
    let h = wid.y;
    let p = run.pos;
    let lo = first_visible(p);
    let n = p + 1u - lo;
    let i = t % D4;
    let s = t / D4;
    let start = c * CHUNK;
    let end = min(n, start + CHUNK);
    var a = vec4<f32>(0.0);
    if (s < STRIPES) {
        let base = h * op.capacity;
        let stride = op.kv_heads * D4;
        let off = (h / op.group) * D4 + i;
        for (var j = start + s; j < end; j += STRIPES) {
            a += scratch[base + j] * cache_v[(lo + j) * stride + off];
        }
    }
    part[t] = a;
    workgroupBarrier();
    if (t < D4) {
        var total = part[t];
        for (var r = 1u; r < STRIPES; r++) {
            total += part[r * D4 + t];
        }
        let at = partial_at(h, c, t);
        scratch[at] = total.x;
        scratch[at + 1u] = total.y;
        scratch[at + 2u] = total.z;
        scratch[at + 3u] = total.w;
    }
}

@compute @workgroup_size(64)
fn values_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x;
    if (idx >= op.heads * D4) {
        return;
    }
    let h = idx / D4;
    let i = idx % D4;
    let n = run.pos + 1u - first_visible(run.pos);
    var total = vec4<f32>(0.0);
    for (var c = 0u; c * CHUNK < n; c++) {
        let at = partial_at(h, c, i);
        total += vec4<f32>(scratch[at], scratch[at + 1u], scratch[at + 2u], scratch[at + 3u]);
    }
    if (mask_mode(h) == 2u) {
        total = vec4<f32>(0.0);
    }
    out[idx] = total;
}
