// Splits the fused q|k|v projection of each row: rotates q into `q`, rotates k into the key cache and
// copies v into the value cache, both at the row's absolute position. Rotation is Hugging Face's
// non-interleaved "rotate half": (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with x1 = x[i],
// x2 = x[i + d/2]. cos/sin come from host-built tables (`rope[p * half + i]` then the sin table at
// `capacity * half`), computed in f64 angles exactly as the candle path does, because GPU cos/sin of
// large angles are not accurate enough.
struct Op {
    heads: u32,
    kv_heads: u32,
    dim: u32,
    capacity: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> rope: array<f32>;
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> cache_k: array<f32>;
@group(0) @binding(6) var<storage, read_write> cache_v: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.y;
    let idx = gid.x;
    let half = op.dim / 2u;
    let nq = op.heads * half;
    let nk = op.kv_heads * half;
    let kvw = op.kv_heads * op.dim;
    let width = op.heads * op.dim + 2u * kvw;
    if (r >= run.rows || idx >= nq + nk + kvw) {
        return;
    }
    let p = run.pos + r;
    let row = r * width;
    if (idx < nq + nk) {
        var head = 0u;
        var src = 0u;
        if (idx < nq) {
            head = idx / half;
            src = row + head * op.dim;
        } else {
            head = (idx - nq) / half;
            src = row + op.heads * op.dim + head * op.dim;
        }
        let i = idx % half;
        let x1 = qkv[src + i];
        let x2 = qkv[src + i + half];
        let c = rope[p * half + i];
        let s = rope[op.capacity * half + p * half + i];
        let y1 = x1 * c - x2 * s;
        let y2 = x2 * c + x1 * s;
        if (idx < nq) {
            let dst = r * op.heads * op.dim + head * op.dim;
            q[dst + i] = y1;
            q[dst + i + half] = y2;
        } else {
            let dst = p * kvw + head * op.dim;
            cache_k[dst + i] = y1;
            cache_k[dst + i + half] = y2;
        }
    } else {
        let j = idx - nq - nk;
        cache_v[p * kvw + j] = qkv[row + op.heads * op.dim + kvw + j];
    }
}
