@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cache_v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> control: array<u32>;

// Prefill attention on a real GPU (`KernelSet::Parallel`), flash-attention style: a workgroup takes 64
// consecutive query rows of one head. The keys and values its rows see are staged through workgroup
// memory TILE positions at a time (TILE * D4 vec4s of each, 16 KiB in all: WebGPU's default limit), so
// each one read from the cache serves 64 rows; every row keeps its query, running max, sum and
// accumulators in registers (`q{i}`, `m`, `l`, `a{i}`) and counts only the keys it sees, branch-free.
//
// Each row is shared by SPLITS invocations (invocation t: row t % 64, split t / 64), split s taking the
// keys s, s + SPLITS, ... of every tile with its own online softmax. With one invocation a row, a 2,000-row
// chunk of a 9-head model is 18,000 invocations, a few warps an SM, each walking thousands of keys in one
// dependent chain: the H100 profile had this kernel at 59 % of SmolLM's 4K prefill. At the end the splits
// merge through the tile memory (max, then sums and accumulators rescaled; kernels.rs writes it out).
// The tile loop's bounds are the same for the whole workgroup, so every invocation reaches every barrier.
const TILE: u32 = {{TILE}}u;
const SPLITS: u32 = {{SPLITS}}u;
const KB: u32 = {{KB}}u;
var<workgroup> tile_k: array<vec4<f32>, {{TILE_D4}}>;
var<workgroup> tile_v: array<vec4<f32>, {{TILE_D4}}>;

// The two tiles as one array of 2 * TILE_D4 vec4s, where the splits merge their accumulators.
fn part_store(i: u32, v: vec4<f32>) {
    if (i < {{TILE_D4}}u) {
        tile_k[i] = v;
    } else {
        tile_v[i - {{TILE_D4}}u] = v;
    }
}

fn part_load(i: u32) -> vec4<f32> {
    if (i < {{TILE_D4}}u) {
        return tile_k[i];
    }
    return tile_v[i - {{TILE_D4}}u];
}

@compute @workgroup_size({{WG}})
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.y;
    let first = wid.x * 64u;
    let last = run.rows - 1u;
    let row = t % 64u;
    let split = t / 64u;
    // Rows past the chunk's end repeat the last row and store nothing.
    let r = min(first + row, last);
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
    // Each invocation's share of a tile is read into registers (`pk{s}`, `pv{s}`: slot t + s * WG) one
    // tile ahead, so the cache reads of the next tile are in flight while this one is walked.
    var next = j_start;
{{PREFETCH}}
    for (var t0 = j_start; t0 <= j_end; t0 += TILE) {
{{STAGE}}
        workgroupBarrier();
        next = t0 + TILE;
{{PREFETCH}}
        // Keys in blocks of KB: one rescale of the accumulators and one new max a block, not a key
        // (the rescale is a third of a key's arithmetic). A block walks the whole tile; keys past the
        // last row's (clamped loads) are unseen like any key after a row's own position.
        for (var b = split; b < TILE; b += SPLITS * KB) {
{{BLOCK_STEP}}
        }
        workgroupBarrier();
    }
{{MERGE}}
    var zero = 1.0;
    if (mode == 2u) {
        zero = 0.0;
    }
    if (split == 0u && first + row <= last) {
        let inv = zero / l;
{{STORE}}
    }
}
