@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cache_v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> control: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let h = gid.y;
    if (r >= run.rows) {
        return;
    }
    let p = run.pos + r;
    let mode = mask_mode(h);
    var keep = 1.0;
    if (mode == 1u) {
        keep = 0.0;
    }
    let qb = (r * op.heads + h) * D4;
{{LOAD_Q}}
{{ZERO_ACC}}
    var m = bitcast<f32>(0xff7fffffu);
    var l = 0.0;
    let stride = op.kv_heads * D4;
    let lo = first_visible(p);
    var kp = lo * stride + (h / op.group) * D4;
    for (var j = lo; j <= p; j++) {
        let s = ({{DOT}}) * op.scale;
        if (s > m) {
            let c = exp(m - s);
            l *= c;
{{RESCALE_ACC}}
            m = s;
        }
        let e = exp(s - m);
        l += e;
{{ADD_V}}
        kp += stride;
    }
    var inv = 1.0 / l;
    if (mode == 2u) {
        inv = 0.0;
    }
{{STORE_OUT}}
}
