// x[r, :] = table[ids[r], :]. Token ids are checked on the host, so no bounds test on `ids[r]` here.
struct Op {
    hidden: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.y;
    let i = gid.x;
    if (r >= run.rows || i >= op.hidden) {
        return;
    }
    x[r * op.hidden + i] = table[ids[r] * op.hidden + i];
}
