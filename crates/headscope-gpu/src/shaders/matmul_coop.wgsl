// Prefill products on tensor cores (`GemmTile::Coop`): the same `[rows, k] x [k, n]` product, split of
// the input range and epilogue as `gemm_tiled`, with the multiply-adds done by cooperative matrices
// (Vulkan's VK_KHR_cooperative_matrix through wgpu's experimental `wgpu_cooperative_matrix`): 16 x 16 x
// 16 products of f16 inputs into f32 sums. Appended to matmul.wgsl, whose weights are then f16 four to
// a vec4 (`array<vec4<f16>>`, the model uploads its matrices in f16 for this tile).
//
// A workgroup is one subgroup of 32 invocations (the context enables this tile only where subgroups
// are exactly 32 wide: cooperative matrices belong to a subgroup) and computes 32 rows x 64 columns:
// 2 x 4 accumulator matrices. Per step of 32 inputs it stages its rows' inputs (converted to f16) and
// the step's weights in workgroup memory, zeros past the rows, columns and input range, so that the
// matrix loads never read out of bounds; then 2 x (2 + 4) matrix loads feed 16 matrix products. The
// sums go through workgroup memory to `tile_store`, so bias, residual add, SwiGLU and split partial
// sums are written as the other tiles write them. Row strides are multiples of 16 bytes, as matrix
// loads and stores want.
const CM_ROWS: u32 = 32u;
const CM_GROUPS: u32 = 16u;
const CM_K: u32 = 32u;
// Row strides (elements) of the staged inputs [row][input], weights [input][column] and sums [row][column].
const CM_XS: u32 = 40u;
const CM_WS: u32 = 72u;
const CM_OS: u32 = 68u;
var<workgroup> cm_x: array<f16, 1280>;
var<workgroup> cm_w: array<f16, 2304>;
var<workgroup> cm_out: array<f32, 2176>;

@compute @workgroup_size(32)
fn gemm_coop(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = run.rows;
    let m0 = wid.y * CM_ROWS;
    // The column tile and input range of this workgroup (as `tile_range`, for this tile's sizes).
    let tiles_x = (op.n4 + CM_GROUPS - 1u) / CM_GROUPS;
    let split = wid.x / tiles_x;
    let c0 = (wid.x % tiles_x) * CM_GROUPS;
    let per = (op.k + op.splits * CM_K - 1u) / (op.splits * CM_K) * CM_K;
    let k_begin = split * per;
    let k_end = min(op.k, k_begin + per);
    let k4 = op.k / 4u;

    // The accumulators start from zeros loaded out of the (zeroed) sum tile: WGSL has no constructor
    // for a cooperative matrix.
    for (var i = t; i < 32u * CM_OS; i += 32u) {
        cm_out[i] = 0.0;
    }
    workgroupBarrier();
    var acc00 = coopLoadT<coop_mat16x16<f32, C>>(&cm_out[0], CM_OS);
    var acc01 = acc00;
    var acc02 = acc00;
    var acc03 = acc00;
    var acc10 = acc00;
    var acc11 = acc00;
    var acc12 = acc00;
    var acc13 = acc00;

    for (var k0 = k_begin; k0 < k_end; k0 += CM_K) {
        // Inputs: 32 rows x 8 vec4s, 8 a invocation.
        for (var s = 0u; s < 8u; s++) {
            let i = s * 32u + t;
            let r = i / 8u;
            let q = i % 8u;
            let kk = k0 + q * 4u;
            var v = vec4<f32>(0.0);
            if (m0 + r < rows && kk < k_end) {
                v = x[(m0 + r) * k4 + kk / 4u];
            }
            let h = vec4<f16>(v);
            let o = r * CM_XS + q * 4u;
            cm_x[o] = h.x;
            cm_x[o + 1u] = h.y;
            cm_x[o + 2u] = h.z;
            cm_x[o + 3u] = h.w;
        }
        // Weights: 32 inputs x 16 column groups, 16 a invocation.
        for (var s = 0u; s < 16u; s++) {
            let i = s * 32u + t;
            let kr = i / 16u;
            let g = i % 16u;
            var h = vec4<f16>(0.0);
            if (k0 + kr < k_end && c0 + g < op.n4) {
                h = w[(k0 + kr) * op.n4 + c0 + g];
            }
            let o = kr * CM_WS + g * 4u;
            cm_w[o] = h.x;
            cm_w[o + 1u] = h.y;
            cm_w[o + 2u] = h.z;
            cm_w[o + 3u] = h.w;
        }
        workgroupBarrier();
        for (var kb = 0u; kb < CM_K; kb += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&cm_x[kb], CM_XS);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&cm_x[16u * CM_XS + kb], CM_XS);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&cm_w[kb * CM_WS], CM_WS);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&cm_w[kb * CM_WS + 16u], CM_WS);
            let b2 = coopLoadT<coop_mat16x16<f16, B>>(&cm_w[kb * CM_WS + 32u], CM_WS);
            let b3 = coopLoadT<coop_mat16x16<f16, B>>(&cm_w[kb * CM_WS + 48u], CM_WS);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc02 = coopMultiplyAdd(a0, b2, acc02);
            acc03 = coopMultiplyAdd(a0, b3, acc03);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
            acc12 = coopMultiplyAdd(a1, b2, acc12);
            acc13 = coopMultiplyAdd(a1, b3, acc13);
        }
        workgroupBarrier();
    }

    coopStoreT(acc00, &cm_out[0], CM_OS);
    coopStoreT(acc01, &cm_out[16], CM_OS);
    coopStoreT(acc02, &cm_out[32], CM_OS);
    coopStoreT(acc03, &cm_out[48], CM_OS);
    coopStoreT(acc10, &cm_out[16u * CM_OS], CM_OS);
    coopStoreT(acc11, &cm_out[16u * CM_OS + 16u], CM_OS);
    coopStoreT(acc12, &cm_out[16u * CM_OS + 32u], CM_OS);
    coopStoreT(acc13, &cm_out[16u * CM_OS + 48u], CM_OS);
    workgroupBarrier();
    // 32 rows x 16 column groups through the epilogue, 16 a invocation.
    for (var s = 0u; s < 16u; s++) {
        let i = s * 32u + t;
        let r = i / 16u;
        let g = i % 16u;
        let o = r * CM_OS + g * 4u;
        tile_store(split, m0 + r, c0 + g, vec4<f32>(cm_out[o], cm_out[o + 1u], cm_out[o + 2u], cm_out[o + 3u]));
    }
}
