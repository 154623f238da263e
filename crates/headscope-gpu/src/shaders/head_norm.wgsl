// Qwen3's per-head RMSNorm of queries and keys, in place in the fused q|k|v projection of each row,
// before the rotation reads them: one invocation per (row, head) over the `heads` query heads, then the
// `kv_heads` key heads (values untouched). As rmsnorm.wgsl: divide by the root, then scale.
struct Op {
    heads: u32,
    kv_heads: u32,
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> q_weight: array<f32>;
@group(0) @binding(4) var<storage, read> k_weight: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let per_row = op.heads + op.kv_heads;
    let r = gid.x / per_row;
    let head = gid.x % per_row;
    if (r >= run.rows) {
        return;
    }
    let width = (op.heads + 2u * op.kv_heads) * op.dim;
    let base = r * width + head * op.dim;
    var s = 0.0;
    for (var i = 0u; i < op.dim; i++) {
        let v = qkv[base + i];
        s += v * v;
    }
    let root = sqrt(s / f32(op.dim) + op.eps);
    let is_query = head < op.heads;
    for (var i = 0u; i < op.dim; i++) {
        var w = 0.0;
        if (is_query) {
            w = q_weight[i];
        } else {
            w = k_weight[i];
        }
        qkv[base + i] = qkv[base + i] / root * w;
    }
}
