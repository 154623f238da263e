// out = x · W (+ bias), with W stored transposed and padded on upload: `wv4(k * n4 + c)` holds output
// columns 4c..4c+4 of input k, so neighbouring invocations read neighbouring memory (coalesced on GPUs,
// plain vector loads on CPU implementations). `x` rows are read as vec4 (the input width is a multiple
// of 4, checked at load).
//
// No workgroup memory and no barriers: each invocation keeps a register tile (`gemm`: 8 rows x 2 column
// groups, `gemv`: one column group over the whole input). On CPU implementations (SwiftShader in
// browsers without a GPU, lavapipe in tests) barriers are coroutine switches and workgroup memory is
// just more memory, so this runs 3-5x faster there than a shared-memory tiling; on real GPUs these
// matrices are small enough for the caches.
//
// Epilogues (`op.mode`): 0 store, 1 add into `out` (the residual stream), 2 SwiGLU: columns come as
// interleaved (gate, up) pairs and pair j writes silu(gate_j) * up_j to out[j].
struct Op {
    k: u32,
    n: u32,
    n4: u32,
    ld: u32,
    mode: u32,
    has_bias: u32,
    // First output column of this product (a block of a matrix split to fit the binding limit).
    col0: u32,
    // `gemm_tiled` only: the input range is split into this many parts, each workgroup column of the
    // grid summing one into `partial`, and `gemm_sum` adds them and writes the epilogue (1: no split).
    splits: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// Binding 3, the weights `w`, and `wv4(i)` (column group i as four f32) come from the prelude of the
// model's weight format (`WeightFormat::matmul_prelude`): f32, or f16 / bf16 pairs packed in u32s.
{{WEIGHTS}}
@group(0) @binding(4) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// `gemm_tiled`'s partial sums when the input is split: `[split][row][column group]`.
@group(0) @binding(6) var<storage, read_write> partial: array<vec4<f32>>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// Writes the four outputs of column group `c4` of row `m`.
fn finish(m: u32, c4: u32, acc: vec4<f32>) {
    var v = acc;
    if (op.has_bias != 0u) {
        v += bias[op.col0 / 4u + c4];
    }
    if (op.mode == 2u) {
        let j = op.col0 / 2u + c4 * 2u;
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
            let o = m * op.ld + op.col0 + col;
            if (op.mode == 1u) {
                out[o] += v[i];
            } else {
                out[o] = v[i];
            }
        }
    }
}

// One row (a decode step): invocation = one column group, the input walked 8 at a time.
@compute @workgroup_size(16)
fn gemv(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x;
    if (c4 >= op.n4) {
        return;
    }
    let k4 = op.k / 4u;
    let n4 = op.n4;
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    var kk = 0u;
    for (; kk + 1u < k4; kk += 2u) {
        let wa = kk * 4u * n4 + c4;
        let xa = x[kk];
        a += xa.x * wv4(wa) + xa.y * wv4(wa + n4) + xa.z * wv4(wa + 2u * n4) + xa.w * wv4(wa + 3u * n4);
        let wb = wa + 4u * n4;
        let xb = x[kk + 1u];
        b += xb.x * wv4(wb) + xb.y * wv4(wb + n4) + xb.z * wv4(wb + 2u * n4) + xb.w * wv4(wb + 3u * n4);
    }
    if (kk < k4) {
        let wa = kk * 4u * n4 + c4;
        let xa = x[kk];
        a += xa.x * wv4(wa) + xa.y * wv4(wa + n4) + xa.z * wv4(wa + 2u * n4) + xa.w * wv4(wa + 3u * n4);
    }
    finish(0u, c4, a + b);
}

// One row on a real GPU (`KernelSet::Parallel`): `gemv` gives a 576-wide model's q/k/v product 240
// invocations, each walking all 576 inputs, too few to hide memory latency. Here a workgroup of 16 x 16
// takes 16 column groups (as `gemv`'s does) and splits the inputs 16 ways: invocation (c, s) sums inputs
// s, s + 16, ... of column group c, and row 0 adds the 16 partial sums from workgroup memory.
var<workgroup> gemv_partial: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn gemv_split(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n4 = op.n4;
    let c4 = wid.x * 16u + lid.x;
    // Out-of-range column groups read the last valid one and store nothing (every invocation must
    // reach the barrier).
    let cc = min(c4, n4 - 1u);
    let k4 = op.k / 4u;
    var a = vec4<f32>(0.0);
    for (var kk = lid.y; kk < k4; kk += 16u) {
        let wa = kk * 4u * n4 + cc;
        let xa = x[kk];
        a += xa.x * wv4(wa) + xa.y * wv4(wa + n4) + xa.z * wv4(wa + 2u * n4) + xa.w * wv4(wa + 3u * n4);
    }
    gemv_partial[lid.y * 16u + lid.x] = a;
    workgroupBarrier();
    if (lid.y == 0u && c4 < n4) {
        var sum = vec4<f32>(0.0);
        for (var s = 0u; s < 16u; s++) {
            sum += gemv_partial[s * 16u + lid.x];
        }
        finish(0u, c4, sum);
    }
}

// `gemv_split` with the layer's RMSNorm folded in (decode steps in the parallel set): `x` is the raw
// residual stream and the product is of norm(x) = x / root * norm_weight, root = sqrt(mean(x^2) + eps).
// Since the root is one number per row, sum_k (x_k / root * g_k) W_kn = (sum_k x_k g_k W_kn) / root: each
// invocation multiplies its inputs by the norm's weights and also sums their squares; invocations of
// column 0 leave those sums in workgroup memory beside the partial products, and row 0 reads them after
// the barrier that `gemv_split` already has. One dispatch, not two, for each norm of a decode step
// (twice a layer and before the LM head): on a real GPU a step's time goes on dispatches, not on
// arithmetic.
@group(0) @binding(7) var<storage, read> norm_weight: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> norm_op: NormOp;
var<workgroup> norm_partial: array<f32, 16>;

struct NormOp {
    n: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
}

@compute @workgroup_size(16, 16)
fn gemv_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n4 = op.n4;
    let c4 = wid.x * 16u + lid.x;
    let cc = min(c4, n4 - 1u);
    let k4 = op.k / 4u;
    var a = vec4<f32>(0.0);
    var squares = vec4<f32>(0.0);
    for (var kk = lid.y; kk < k4; kk += 16u) {
        let raw = x[kk];
        squares += raw * raw;
        let xa = raw * norm_weight[kk];
        let wa = kk * 4u * n4 + cc;
        a += xa.x * wv4(wa) + xa.y * wv4(wa + n4) + xa.z * wv4(wa + 2u * n4) + xa.w * wv4(wa + 3u * n4);
    }
    gemv_partial[lid.y * 16u + lid.x] = a;
    if (lid.x == 0u) {
        norm_partial[lid.y] = squares.x + squares.y + squares.z + squares.w;
    }
    workgroupBarrier();
    if (lid.y == 0u && c4 < n4) {
        var sum = vec4<f32>(0.0);
        var total = 0.0;
        for (var s = 0u; s < 16u; s++) {
            sum += gemv_partial[s * 16u + lid.x];
            total += norm_partial[s];
        }
        let root = sqrt(total / f32(norm_op.n) + norm_op.eps);
        finish(0u, c4, sum / root);
    }
}

// Several rows (prefill): invocation = 8 rows x column groups `ca` and `ca + 32`; a workgroup covers
// 8 rows x 64 column groups (256 outputs per row). 8 x 2 measured best on SwiftShader and lavapipe:
// fewer loads per multiply-add than smaller tiles, without the register spills of larger ones.
@compute @workgroup_size(32)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n4 = op.n4;
    let ca = wid.x * 64u + lid.x;
    let cb = ca + 32u;
    if (ca >= n4) {
        return;
    }
    // Out-of-range rows and columns read the last valid ones; their results are not written.
    let cbm = min(cb, n4 - 1u);
    let m0 = wid.y * 8u;
    let k4 = op.k / 4u;
    let last = run.rows - 1u;
    let r0 = min(m0 + 0u, last) * k4;
    let r1 = min(m0 + 1u, last) * k4;
    let r2 = min(m0 + 2u, last) * k4;
    let r3 = min(m0 + 3u, last) * k4;
    let r4 = min(m0 + 4u, last) * k4;
    let r5 = min(m0 + 5u, last) * k4;
    let r6 = min(m0 + 6u, last) * k4;
    let r7 = min(m0 + 7u, last) * k4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    for (var kk = 0u; kk < k4; kk++) {
        let base = kk * 4u * n4;
        let x0 = x[r0 + kk];
        let x1 = x[r1 + kk];
        let x2 = x[r2 + kk];
        let x3 = x[r3 + kk];
        let x4 = x[r4 + kk];
        let x5 = x[r5 + kk];
        let x6 = x[r6 + kk];
        let x7 = x[r7 + kk];
        let w0 = wv4(base + ca);
        let w1 = wv4(base + n4 + ca);
        let w2 = wv4(base + 2u * n4 + ca);
        let w3 = wv4(base + 3u * n4 + ca);
        a0 += x0.x * w0 + x0.y * w1 + x0.z * w2 + x0.w * w3;
        a1 += x1.x * w0 + x1.y * w1 + x1.z * w2 + x1.w * w3;
        a2 += x2.x * w0 + x2.y * w1 + x2.z * w2 + x2.w * w3;
        a3 += x3.x * w0 + x3.y * w1 + x3.z * w2 + x3.w * w3;
        a4 += x4.x * w0 + x4.y * w1 + x4.z * w2 + x4.w * w3;
        a5 += x5.x * w0 + x5.y * w1 + x5.z * w2 + x5.w * w3;
        a6 += x6.x * w0 + x6.y * w1 + x6.z * w2 + x6.w * w3;
        a7 += x7.x * w0 + x7.y * w1 + x7.z * w2 + x7.w * w3;
        let v0 = wv4(base + cbm);
        let v1 = wv4(base + n4 + cbm);
        let v2 = wv4(base + 2u * n4 + cbm);
        let v3 = wv4(base + 3u * n4 + cbm);
        b0 += x0.x * v0 + x0.y * v1 + x0.z * v2 + x0.w * v3;
        b1 += x1.x * v0 + x1.y * v1 + x1.z * v2 + x1.w * v3;
        b2 += x2.x * v0 + x2.y * v1 + x2.z * v2 + x2.w * v3;
        b3 += x3.x * v0 + x3.y * v1 + x3.z * v2 + x3.w * v3;
        b4 += x4.x * v0 + x4.y * v1 + x4.z * v2 + x4.w * v3;
        b5 += x5.x * v0 + x5.y * v1 + x5.z * v2 + x5.w * v3;
        b6 += x6.x * v0 + x6.y * v1 + x6.z * v2 + x6.w * v3;
        b7 += x7.x * v0 + x7.y * v1 + x7.z * v2 + x7.w * v3;
    }
    let rows = run.rows;
    if (m0 + 0u < rows) {
        finish(m0 + 0u, ca, a0);
        if (cb < n4) {
            finish(m0 + 0u, cb, b0);
        }
    }
    if (m0 + 1u < rows) {
        finish(m0 + 1u, ca, a1);
        if (cb < n4) {
            finish(m0 + 1u, cb, b1);
        }
    }
    if (m0 + 2u < rows) {
        finish(m0 + 2u, ca, a2);
        if (cb < n4) {
            finish(m0 + 2u, cb, b2);
        }
    }
    if (m0 + 3u < rows) {
        finish(m0 + 3u, ca, a3);
        if (cb < n4) {
            finish(m0 + 3u, cb, b3);
        }
    }
    if (m0 + 4u < rows) {
        finish(m0 + 4u, ca, a4);
        if (cb < n4) {
            finish(m0 + 4u, cb, b4);
        }
    }
    if (m0 + 5u < rows) {
        finish(m0 + 5u, ca, a5);
        if (cb < n4) {
            finish(m0 + 5u, cb, b5);
        }
    }
    if (m0 + 6u < rows) {
        finish(m0 + 6u, ca, a6);
        if (cb < n4) {
            finish(m0 + 6u, cb, b6);
        }
    }
    if (m0 + 7u < rows) {
        finish(m0 + 7u, ca, a7);
        if (cb < n4) {
            finish(m0 + 7u, cb, b7);
        }
    }
}

// Several rows on a real GPU (`KernelSet::Parallel`): a workgroup of 16 x 16 invocations computes a tile
// of 64 rows x 32 column groups (128 outputs per row), staging 16 inputs of the tile's rows and weights
// in workgroup memory at a time, so that each value fetched from memory serves 32 (a weight) or 128
// (an input) multiply-adds instead of 8 and 2 in `gemm`. Invocation (tx, ty) keeps rows 4ty..4ty+3 x
// column groups tx and tx + 16 in registers: per staged input one vec4 of `tile_x` (its four rows, stored
// transposed) and two of `tile_w` feed 32 multiply-adds. Every invocation reaches every barrier:
// out-of-range rows and columns load zeros and store nothing.
// The tiled products' shared parts. A workgroup's column tile and input range: the grid's x covers the
// column tiles `op.splits` times over, one input range each, a multiple of TILE_K inputs (the last one
// shorter). Returns (split, first column group, first input, end of inputs).
fn tile_range(wx: u32) -> vec4<u32> {
    let tiles_x = (op.n4 + TILE_GROUPS - 1u) / TILE_GROUPS;
    let split = wx / tiles_x;
    let per = (op.k + op.splits * TILE_K - 1u) / (op.splits * TILE_K) * TILE_K;
    let k_begin = split * per;
    return vec4<u32>(split, (wx % tiles_x) * TILE_GROUPS, k_begin, min(op.k, k_begin + per));
}

// One output vec4 of a tiled product: through the epilogue, or into `partial` where the inputs are split.
fn tile_store(split: u32, m: u32, c4: u32, v: vec4<f32>) {
    if (m >= run.rows || c4 >= op.n4) {
        return;
    }
    if (op.splits > 1u) {
        partial[(split * run.rows + m) * op.n4 + c4] = v;
    } else {
        finish(m, c4, v);
    }
}

const TILE_ROWS: u32 = 64u;
const TILE_GROUPS: u32 = 32u;
const TILE_K: u32 = 16u;
// tile_x[k * 16 + r4] = inputs k of rows 4 r4 .. 4 r4 + 3; tile_w[k * 32 + c] = column group c of input k.
var<workgroup> tile_x: array<vec4<f32>, 256>;
var<workgroup> tile_w: array<vec4<f32>, 512>;

// Stages the weights of one step of a tiled product: invocation t loads two vec4s, inputs t / 32 and
// t / 32 + 8 of the step for column group c0 + t % 32 (zeros past the input range or the columns).
fn stage_weights(t: u32, c0: u32, k0: u32, k_end: u32) {
    let c = c0 + t % 32u;
    for (var s = 0u; s < 2u; s++) {
        let kk = t / 32u + s * 8u;
        var wv = vec4<f32>(0.0);
        if (k0 + kk < k_end && c < op.n4) {
            wv = wv4((k0 + kk) * op.n4 + c);
        }
        tile_w[kk * TILE_GROUPS + t % 32u] = wv;
    }
}

@compute @workgroup_size(16, 16)
fn gemm_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = run.rows;
    let m0 = wid.y * TILE_ROWS;
    let range = tile_range(wid.x);
    let split = range.x;
    let c0 = range.y;
    let k_begin = range.z;
    let k_end = range.w;
    let k4 = op.k / 4u;
    let k4_end = k_end / 4u;
    let t = lid.y * 16u + lid.x;
    // What this invocation stages: one vec4 of inputs (row m0 + t / 4, inputs 4 (t % 4) .. + 3 of the
    // step) and two weight vec4s (inputs t / 32 and t / 32 + 8 of the step, column group c0 + t % 32).
    let load_row = m0 + t / 4u;
    let load_q = t % 4u;
    var acc: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        let kq = k0 / 4u + load_q;
        var xv = vec4<f32>(0.0);
        if (load_row < rows && kq < k4_end) {
            xv = x[load_row * k4 + kq];
        }
        let r4 = (t / 4u) / 4u;
        let lane = (t / 4u) % 4u;
        tile_x[(load_q * 4u + 0u) * 16u + r4][lane] = xv.x;
        tile_x[(load_q * 4u + 1u) * 16u + r4][lane] = xv.y;
        tile_x[(load_q * 4u + 2u) * 16u + r4][lane] = xv.z;
        tile_x[(load_q * 4u + 3u) * 16u + r4][lane] = xv.w;
        stage_weights(t, c0, k0, k_end);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let xs = tile_x[kk * 16u + lid.y];
            let wa = tile_w[kk * TILE_GROUPS + lid.x];
            let wb = tile_w[kk * TILE_GROUPS + lid.x + 16u];
            acc[0] += xs.x * wa;
            acc[1] += xs.y * wa;
            acc[2] += xs.z * wa;
            acc[3] += xs.w * wa;
            acc[4] += xs.x * wb;
            acc[5] += xs.y * wb;
            acc[6] += xs.z * wb;
            acc[7] += xs.w * wb;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        tile_store(split, m, c0 + lid.x, acc[i]);
        tile_store(split, m, c0 + lid.x + 16u, acc[4u + i]);
    }
}

// `gemm_tiled` with twice the rows a workgroup (`GemmTile::Rows128`): 128 rows x 32 column groups,
// invocation (tx, ty) keeping rows 8ty..8ty+7 x column groups tx and tx + 16, 64 outputs. Per staged
// input two vec4s of `tile_x128` and two of `tile_w` feed 64 multiply-adds (the 64-row tile: three
// for 32), at twice the registers and the workgroup's staged inputs. The same split of the input range
// (`op.splits`, `partial`) and the same epilogue.
const TILE_ROWS_128: u32 = 128u;
// tile_x128[k * 32 + r4] = inputs k of rows 4 r4 .. 4 r4 + 3 of the tile.
var<workgroup> tile_x128: array<vec4<f32>, 512>;

@compute @workgroup_size(16, 16)
fn gemm_tiled128(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = run.rows;
    let m0 = wid.y * TILE_ROWS_128;
    let range = tile_range(wid.x);
    let split = range.x;
    let c0 = range.y;
    let k_begin = range.z;
    let k_end = range.w;
    let k4 = op.k / 4u;
    let k4_end = k_end / 4u;
    let t = lid.y * 16u + lid.x;
    // Staged by this invocation: inputs 4 (t % 4) .. + 3 of the step for rows t / 4 and t / 4 + 64 of the
    // tile, and the weights as in `gemm_tiled`.
    let load_q = t % 4u;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        let kq = k0 / 4u + load_q;
        for (var h = 0u; h < 2u; h++) {
            let r = t / 4u + h * 64u;
            var xv = vec4<f32>(0.0);
            if (m0 + r < rows && kq < k4_end) {
                xv = x[(m0 + r) * k4 + kq];
            }
            let r4 = r / 4u;
            let lane = r % 4u;
            tile_x128[(load_q * 4u + 0u) * 32u + r4][lane] = xv.x;
            tile_x128[(load_q * 4u + 1u) * 32u + r4][lane] = xv.y;
            tile_x128[(load_q * 4u + 2u) * 32u + r4][lane] = xv.z;
            tile_x128[(load_q * 4u + 3u) * 32u + r4][lane] = xv.w;
        }
        stage_weights(t, c0, k0, k_end);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let xa = tile_x128[kk * 32u + 2u * lid.y];
            let xb = tile_x128[kk * 32u + 2u * lid.y + 1u];
            let wa = tile_w[kk * TILE_GROUPS + lid.x];
            let wb = tile_w[kk * TILE_GROUPS + lid.x + 16u];
            acc[0] += xa.x * wa;
            acc[1] += xa.y * wa;
            acc[2] += xa.z * wa;
            acc[3] += xa.w * wa;
            acc[4] += xb.x * wa;
            acc[5] += xb.y * wa;
            acc[6] += xb.z * wa;
            acc[7] += xb.w * wa;
            acc[8] += xa.x * wb;
            acc[9] += xa.y * wb;
            acc[10] += xa.z * wb;
            acc[11] += xa.w * wb;
            acc[12] += xb.x * wb;
            acc[13] += xb.y * wb;
            acc[14] += xb.z * wb;
            acc[15] += xb.w * wb;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + lid.y * 8u + i;
        tile_store(split, m, c0 + lid.x, acc[i]);
        tile_store(split, m, c0 + lid.x + 16u, acc[8u + i]);
    }
}

// Adds the `op.splits` partial sums of a split `gemm_tiled` and writes them through the epilogue:
// invocation = one column group of one row (the grid's y).
@compute @workgroup_size(64)
fn gemm_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x;
    let m = gid.y;
    if (c4 >= op.n4 || m >= run.rows) {
        return;
    }
    var sum = vec4<f32>(0.0);
    for (var s = 0u; s < op.splits; s++) {
        sum += partial[(s * run.rows + m) * op.n4 + c4];
    }
    finish(m, c4, sum);
}
