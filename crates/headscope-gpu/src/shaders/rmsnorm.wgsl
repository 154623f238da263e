// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, one workgroup per row (as candle's rms_norm:
// divide by the root, then scale).
struct Op {
    n: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.x;
    let t = lid.x;
    let base = r * op.n;
    var s = 0.0;
    for (var i = t; i < op.n; i += 64u) {
        let v = x[base + i];
        s += v * v;
    }
    part[t] = s;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
        if (t < k) {
            part[t] += part[t + k];
        }
        workgroupBarrier();
    }
    let root = sqrt(part[0] / f32(op.n) + op.eps);
    for (var i = t; i < op.n; i += 64u) {
        y[base + i] = x[base + i] / root * weight[i];
    }
}
