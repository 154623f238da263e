// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, one invocation per row (as candle's
// rms_norm: divide by the root, then scale). Rows are read as vec4 (hidden_size is a multiple of 4).
// No barriers: see matmul.wgsl for why that matters on CPU implementations.
struct Op {
    n: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= run.rows) {
        return;
    }
    let n4 = op.n / 4u;
    let base = r * n4;
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < n4; i++) {
        let v = x[base + i];
        s += v * v;
    }
    let root = sqrt((s.x + s.y + s.z + s.w) / f32(op.n) + op.eps);
    for (var i = 0u; i < n4; i++) {
        y[base + i] = x[base + i] / root * weight[i];
    }
}

// The parallel set's form: a workgroup per row, its 64 invocations summing strided vec4s and reducing
// in workgroup memory. A decode step normalises one row, which the form above leaves to a single
// invocation walking the whole hidden vector twice (hundreds of dependent loads, twice a layer).
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x;
    if (r >= run.rows) {
        return;
    }
    let n4 = op.n / 4u;
    let base = r * n4;
    var s = vec4<f32>(0.0);
    for (var i = lid; i < n4; i += 64u) {
        let v = x[base + i];
        s += v * v;
    }
    partial[lid] = s.x + s.y + s.z + s.w;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let root = sqrt(partial[0] / f32(op.n) + op.eps);
    for (var i = lid; i < n4; i += 64u) {
        y[base + i] = x[base + i] / root * weight[i];
    }
}
