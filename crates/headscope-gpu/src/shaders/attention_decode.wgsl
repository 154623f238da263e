@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cache_v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(7) var<storage, read> control: array<u32>;
@group(0) @binding(8) var<storage, read_write> probe: array<u32>;

// Pass 1: invocation (key group g, head h) writes the scaled scores of visible keys 4g..4g+4 (the
// query is loaded once for the four).
@compute @workgroup_size(64)
fn scores(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j0 = gid.x * 4u;
    let h = gid.y;
    let p = run.pos;
    let lo = first_visible(p);
    let n = p + 1u - lo;
    if (j0 >= n) {
        return;
    }
    var keep = 1.0;
    if (mask_mode(h) == 1u) {
        keep = 0.0;
    }
    let qb = h * D4;
{{LOAD_Q}}
    let stride = op.kv_heads * D4;
    let base = (h / op.group) * D4;
    for (var j = j0; j < min(j0 + 4u, n); j++) {
        let kp = (lo + j) * stride + base;
        scratch[h * op.capacity + j] = ({{DOT}}) * op.scale;
    }
}

// Pass 2: invocation h turns its score row into softmax weights (max, exponentials, division, as
// candle's softmax), records the first maximum and copies the row if the head has a slot.
@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h = gid.x;
    if (h >= op.heads) {
        return;
    }
    let p = run.pos;
    let lo = first_visible(p);
    let n = p + 1u - lo;
    let base = h * op.capacity;
    var m = bitcast<f32>(0xff7fffffu);
    for (var j = 0u; j < n; j++) {
        m = max(m, scratch[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = exp(scratch[base + j] - m);
        scratch[base + j] = e;
        sum += e;
    }
    var best = -1.0;
    var best_j = 0u;
    for (var j = 0u; j < n; j++) {
        let w = scratch[base + j] / sum;
        scratch[base + j] = w;
        if (w > best) {
            best = w;
            best_j = j;
        }
    }
    let slot = op.layer * op.heads + h;
    probe[slot] = lo + best_j;
    let row_slot = control[2u * op.total + slot];
    if (row_slot != NO_SLOT) {
        let dst = op.total + row_slot * op.capacity + lo;
        for (var j = 0u; j < n; j++) {
            probe[dst + j] = bitcast<u32>(scratch[base + j]);
        }
    }
}

// Pass 3: invocation (head h, dimension group i) sums the weighted values.
@compute @workgroup_size(64)
fn values(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x;
    if (idx >= op.heads * D4) {
        return;
    }
    let h = idx / D4;
    let i = idx % D4;
    let p = run.pos;
    let lo = first_visible(p);
    let n = p + 1u - lo;
    let base = h * op.capacity;
    let stride = op.kv_heads * D4;
    var vp = lo * stride + (h / op.group) * D4 + i;
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 1u < n; j += 2u) {
        a += scratch[base + j] * cache_v[vp];
        b += scratch[base + j + 1u] * cache_v[vp + stride];
        vp += 2u * stride;
    }
    if (j < n) {
        a += scratch[base + j] * cache_v[vp];
    }
    if (mask_mode(h) == 2u) {
        a = vec4<f32>(0.0);
        b = vec4<f32>(0.0);
    }
    out[idx] = a + b;
}
