@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cache_v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> control: array<u32>;

// Invocation = ROWS consecutive query rows of one head, walking their keys together: every key and
// value loaded serves all of them (loads, not arithmetic, bound CPU implementations). Row t of the
// block is `r{t}` (past the chunk's end it repeats the last row, and is not stored); its running max,
// sum and accumulators are `m{t}`, `l{t}`, `a{t}_*`. Each row counts only the keys it sees, branch-free.
const ROWS: u32 = {{ROWS}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let first = gid.x * ROWS;
    let h = gid.y;
    if (first >= run.rows) {
        return;
    }
    let last = run.rows - 1u;
    let mode = mask_mode(h);
    var keep = 1.0;
    if (mode == 1u) {
        keep = 0.0;
    }
    let neg = bitcast<f32>(0xff7fffffu);
{{ROW_SETUP}}
    let stride = op.kv_heads * D4;
    let p_end = run.pos + min(first + ROWS - 1u, last);
    let j_start = first_visible(run.pos + first);
    var kp = j_start * stride + (h / op.group) * D4;
    for (var j = j_start; j <= p_end; j++) {
{{LOAD_KV}}
{{ROW_STEP}}
        kp += stride;
    }
    var zero = 1.0;
    if (mode == 2u) {
        zero = 0.0;
    }
{{ROW_STORE}}
}
