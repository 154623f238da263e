@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cache_v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> control: array<u32>;

// Prefill attention on a real GPU (`KernelSet::Parallel`), flash-attention style: a workgroup takes 64
// consecutive query rows of one head, an invocation one row. The keys and values its rows see are
// staged through workgroup memory TILE positions at a time (TILE * D4 vec4s of each, 16 KiB in all:
// WebGPU's default limit), so each one read from the cache serves 64 rows instead of the two of
// attention_prefill.wgsl; every row keeps its query, running max, sum and accumulators in registers
// (`q{i}`, `m`, `l`, `a{i}`) and counts only the keys it sees, branch-free. The tile loop's bounds are
// the same for the whole workgroup, so every invocation reaches both barriers.
const TILE: u32 = {{TILE}}u;
var<workgroup> tile_k: array<vec4<f32>, {{TILE_D4}}>;
var<workgroup> tile_v: array<vec4<f32>, {{TILE_D4}}>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.y;
    let first = wid.x * 64u;
    let last = run.rows - 1u;
    // Rows past the chunk's end repeat the last row and store nothing.
    let r = min(first + lid.x, last);
    let p = run.pos + r;
    let lo = first_visible(p);
    let mode = mask_mode(h);
    var keep = 1.0;
    if (mode == 1u) {
        keep = 0.0;
    }
    let neg = bitcast<f32>(0xff7fffffu);
    let qb = (r * op.heads + h) * D4;
{{LOAD_Q}}
    var m = neg;
    var l = 0.0;
    let stride = op.kv_heads * D4;
    let kv = (h / op.group) * D4;
    // The keys some row of the workgroup sees: from the first row's first visible one to the last row.
    let j_start = first_visible(run.pos + first);
    let j_end = run.pos + min(first + 63u, last);
    for (var t0 = j_start; t0 <= j_end; t0 += TILE) {
        for (var slot = lid.x; slot < TILE * D4; slot += 64u) {
            let src = min(t0 + slot / D4, j_end) * stride + kv + slot % D4;
            tile_k[slot] = cache_k[src];
            tile_v[slot] = cache_v[src];
        }
        workgroupBarrier();
        let n = min(TILE, j_end + 1u - t0);
        for (var jj = 0u; jj < n; jj++) {
            let j = t0 + jj;
            let seen = j >= lo && j <= p;
            let kb = jj * D4;
            let s = select(neg, ({{DOT}}) * op.scale, seen);
            let mn = max(m, s);
            let c = exp(m - mn);
            let e = select(0.0, exp(s - mn), seen);
            l = l * c + e;
            m = mn;
{{ACC_STEP}}
        }
        workgroupBarrier();
    }
    var zero = 1.0;
    if (mode == 2u) {
        zero = 0.0;
    }
    if (first + lid.x <= last) {
        let inv = zero / l;
{{STORE}}
    }
}
