// x[r, :] = table[ids[r], :] for the ids in this block of the table (rows row0 .. row0 + rows): a table
// larger than the device binds in one buffer is split by rows, one dispatch per block. Token ids are
// checked on the host, so no bounds test on `ids[r]` beyond the block's.
struct Op {
    hidden: u32,
    row0: u32,
    rows: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> run: Run;
@group(0) @binding(1) var<uniform> op: Op;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
// Binding 3, the table, and `table_at(i)` (its i-th value as f32) come from the prelude of the model's
// weight format (`WeightFormat::embed_prelude`).
{{TABLE}}
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.y;
    let i = gid.x;
    if (r >= run.rows || i >= op.hidden) {
        return;
    }
    let id = ids[r];
    if (id < op.row0 || id - op.row0 >= op.rows) {
        return;
    }
    x[r * op.hidden + i] = table_at((id - op.row0) * op.hidden + i);
}
