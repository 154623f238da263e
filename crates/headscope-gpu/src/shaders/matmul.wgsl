// out = x · W (+ bias), with W stored transposed and padded on upload: `w[k * n4 + c]` holds output
// columns 4c..4c+4 of input k, so neighbouring invocations read neighbouring memory (coalesced on GPUs,
// plain vector loads on CPU implementations such as SwiftShader and lavapipe).
//
// Epilogues (`op.mode`): 0 store, 1 add into `out` (the residual stream), 2 SwiGLU: columns come as
// interleaved (gate, up) pairs and column pair j writes silu(gate_j) * up_j to out[j].
//
// `gemv` serves one row (a decode step); `gemm` tiles 64 x 64 outputs over 16-deep slices of K held in
// workgroup memory (prefill chunks).
struct Op {
    k: u32,
    n: u32,
    n4: u32,
    ld: u32,
    mode: u32,
    has_bias: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// Writes the four outputs of column group `c4` of row `m`.
fn finish(m: u32, c4: u32, acc: vec4<f32>) {
    var v = acc;
    if (op.has_bias != 0u) {
        v += bias[c4];
    }
    if (op.mode == 2u) {
        let j = c4 * 2u;
        if (j < op.ld) {
            out[m * op.ld + j] = silu(v.x) * v.y;
        }
        if (j + 1u < op.ld) {
            out[m * op.ld + j + 1u] = silu(v.z) * v.w;
        }
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let col = c4 * 4u + i;
        if (col < op.n) {
            let o = m * op.ld + col;
            if (op.mode == 1u) {
                out[o] += v[i];
            } else {
                out[o] = v[i];
            }
        }
    }
}

// 16 column groups x 4 slices of K per workgroup; the slices are summed through workgroup memory.
var<workgroup> partial: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn gemv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x % 16u;
    let ty = lid.x / 16u;
    let c4 = wid.x * 16u + tx;
    var acc = vec4<f32>(0.0);
    if (c4 < op.n4) {
        var k = ty;
        // Four rows of W per iteration: fewer loop trips, independent loads in flight.
        for (; k + 12u < op.k; k += 16u) {
            acc += x[k] * w[k * op.n4 + c4];
            acc += x[k + 4u] * w[(k + 4u) * op.n4 + c4];
            acc += x[k + 8u] * w[(k + 8u) * op.n4 + c4];
            acc += x[k + 12u] * w[(k + 12u) * op.n4 + c4];
        }
        for (; k < op.k; k += 4u) {
            acc += x[k] * w[k * op.n4 + c4];
        }
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    if (ty == 0u && c4 < op.n4) {
        finish(0u, c4, partial[tx] + partial[tx + 16u] + partial[tx + 32u] + partial[tx + 48u]);
    }
}

const BM: u32 = 64u;
const BK: u32 = 16u;
// A tile stored k-major ([BK][BM]) so the inner loop reads four consecutive rows at once.
var<workgroup> tile_a: array<f32, 1024>;
// W tile: [BK][16 column groups].
var<workgroup> tile_w: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.x;
    let tx = t % 16u;
    let ty = t / 16u;
    let m0 = wid.y * BM;
    let c40 = wid.x * 16u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < op.k; k0 += BK) {
        for (var i = 0u; i < 4u; i++) {
            let idx = t + i * 256u;
            let r = idx / BK;
            let c = idx % BK;
            let m = m0 + r;
            let k = k0 + c;
            var v = 0.0;
            if (m < run.rows && k < op.k) {
                v = x[m * op.k + k];
            }
            tile_a[c * BM + r] = v;
        }
        let wk = k0 + ty;
        let wc = c40 + tx;
        var wv = vec4<f32>(0.0);
        if (wk < op.k && wc < op.n4) {
            wv = w[wk * op.n4 + wc];
        }
        tile_w[ty * 16u + tx] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let b = tile_w[kk * 16u + tx];
            let a = kk * BM + ty * 4u;
            acc0 += tile_a[a] * b;
            acc1 += tile_a[a + 1u] * b;
            acc2 += tile_a[a + 2u] * b;
            acc3 += tile_a[a + 3u] * b;
        }
        workgroupBarrier();
    }
    let c4 = c40 + tx;
    if (c4 >= op.n4) {
        return;
    }
    let m = m0 + ty * 4u;
    if (m < run.rows) {
        finish(m, c4, acc0);
    }
    if (m + 1u < run.rows) {
        finish(m + 1u, c4, acc1);
    }
    if (m + 2u < run.rows) {
        finish(m + 2u, c4, acc2);
    }
    if (m + 3u < run.rows) {
        finish(m + 3u, c4, acc3);
    }
}
