// Fused causal attention for the prefill (FlashAttention-2's forward pass): queries attend to keys
// tile by tile with an online softmax, so the T x T score matrix never exists in memory. The prefill
// needs no per-head probe (the paper's score reads the decode steps' attention only), so it can take
// this path; decode steps keep the instrumented kernels on the Rust side.
//
// Layout. Queries and outputs: contiguous [batch, heads, q_len, D]. Keys and values: views of the
// preallocated KV cache, [batch, kv_heads, keys, D] with arbitrary batch and head strides (the cache
// holds more positions than are filled) and rows of D contiguous elements. Query head h reads KV head
// h / (heads / kv_heads) (grouped-query attention, as Hugging Face's repeat_kv).
//
// Positions. The queries are the last q_len of the `keys` positions: query i sits at key index
// i + (keys - q_len). It sees key j when j <= that index and, with a sliding window w > 0, when
// index - j < w.
//
// Work split. One block of WARPS warps takes 16 x WARPS query rows of one head; each warp owns 16 rows.
// Keys and values stream through shared memory BLOCK_K rows at a time, each tile serving all the
// block's rows. Tensor-core mma.sync m16n8k16 (bf16 or f16 in, f32 accumulate) computes S = Q K^T and
// O += P V; the S accumulator's register layout is reused as P's operand layout without a trip through
// shared memory (the FlashAttention-2 trick). Requires sm_80 or newer.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Block shapes are template parameters (WARPS warps of 16 query rows, BLOCK_K keys per tile) so that
// several can be compiled and timed against each other (flash.rs: HEADSCOPE_FLASH_VARIANT). On the
// H100, one 4096-query chunk over 32K keys (32 heads of 128): 4 warps x 128 keys 237 TFLOP/s, 8 x 128
// 233, 8 x 64 219, 4 x 64 210, 8 x 32 188. The 128-key shapes spill a few registers and still win.
// Shared-memory rows are padded by 8 elements (16 bytes): consecutive rows then start 4 banks apart,
// so the 8 rows one fragment load touches hit distinct banks.
#define PAD 8

template <typename T> struct Pack;
template <> struct Pack<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t two(float a, float b) {
        __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};
template <> struct Pack<__half> {
    static __device__ __forceinline__ uint32_t two(float a, float b) {
        __half2 v = __floats2half2_rn(a, b);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};

// d += a * b for one m16n8k16 tile.
template <typename T>
__device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma<__nv_bfloat16>(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma<__half>(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four transposed 8x8 b16 matrices from shared memory: the B operands of two adjacent n8 tiles.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
    uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `N` of this thread's committed copy groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Four 8x8 b16 matrices from shared memory (not transposed): the B operands of two k16 steps.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
    uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Copies `BLOCK_K` rows of D elements starting at key `k0` into shared memory (padded rows). Rows past
// `keys` are zero-filled: their probabilities are 0, but 0 * garbage could still be NaN.
template <typename T, int D, int WARPS, int BLOCK_K>
__device__ __forceinline__ void load_tile(T* tile, const T* base, int64_t row_stride, int k0, int keys) {
    constexpr int CHUNKS = D / 8; // 16-byte chunks per row
    for (int c = threadIdx.x; c < BLOCK_K * CHUNKS; c += WARPS * 32) {
        int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        T* dst = tile + r * (D + PAD) + col;
        if (k0 + r < keys) {
            cp_async_16(dst, base + (int64_t)(k0 + r) * row_stride + col);
        } else {
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}

template <typename T, int D, int WARPS, int BLOCK_K>
__device__ void flash_prefill(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                              T* __restrict__ out, int heads, int kv_heads, int q_len, int keys,
                              int64_t kv_batch_stride, int64_t kv_head_stride, int window, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* k_tile = reinterpret_cast<T*>(smem_raw);
    T* v_tile = k_tile + BLOCK_K * (D + PAD);
    constexpr int BLOCK_Q = 16 * WARPS;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // The last query blocks see the most keys: start them first so the grid ends evenly.
    const int q_block = gridDim.x - 1 - blockIdx.x;
    const int head = blockIdx.y, batch = blockIdx.z;
    const int kv_head = head / (heads / kv_heads);
    const int offset = keys - q_len; // key index of query 0

    const T* q_head = q + ((int64_t)batch * heads + head) * q_len * D;
    T* out_head = out + ((int64_t)batch * heads + head) * q_len * D;
    const T* k_head = k + batch * kv_batch_stride + kv_head * kv_head_stride;
    const T* v_head = v + batch * kv_batch_stride + kv_head * kv_head_stride;

    // This thread's two rows of the warp's 16 (fragment layout of m16n8k16) and its column pair.
    const int row_a = q_block * BLOCK_Q + warp * 16 + lane / 4;
    const int row_b = row_a + 8;
    const int col = (lane % 4) * 2;

    // Q fragments, held in registers for the whole key loop.
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const int c0 = kk * 16 + col;
        auto ld = [&](int row, int c) -> uint32_t {
            return row < q_len ? *reinterpret_cast<const uint32_t*>(q_head + (int64_t)row * D + c) : 0u;
        };
        qf[kk][0] = ld(row_a, c0);
        qf[kk][1] = ld(row_b, c0);
        qf[kk][2] = ld(row_a, c0 + 8);
        qf[kk][3] = ld(row_b, c0 + 8);
    }

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY; // running row maxima (log2 domain)
    float l_a = 0.f, l_b = 0.f;             // this thread's share of the running row sums
    const float scale_log2 = scale * 1.4426950408889634f;

    // Keys this block can see: up to its last query's index; from its first query's window start.
    const int first_query = q_block * BLOCK_Q + offset;
    const int last_query = min(q_block * BLOCK_Q + BLOCK_Q, q_len) - 1 + offset;
    const int k_end = min(last_query + 1, keys);
    const int k_begin = window > 0 ? max(0, first_query - window + 1) : 0;
    const int kb_begin = k_begin / BLOCK_K;
    const int kb_end = (k_end + BLOCK_K - 1) / BLOCK_K;
    const int qa = row_a + offset, qb = row_b + offset; // this thread's rows as key indices

    // Software pipeline (as FlashAttention-2): the next key tile streams in while this tile's P V runs,
    // and this tile's values stream in while its Q K^T runs. Copy groups complete in commit order.
    if (kb_begin < kb_end) {
        load_tile<T, D, WARPS, BLOCK_K>(k_tile, k_head, D, kb_begin * BLOCK_K, keys);
        cp_async_commit();
        load_tile<T, D, WARPS, BLOCK_K>(v_tile, v_head, D, kb_begin * BLOCK_K, keys);
        cp_async_commit();
    }
    const int mtx = lane / 8, mrow = lane % 8;
    for (int kb = kb_begin; kb < kb_end; ++kb) {
        const int k0 = kb * BLOCK_K;
        const bool more = kb + 1 < kb_end;
        cp_async_wait<1>(); // this tile's keys (its values may still be in flight)
        __syncthreads();

        // S = Q K^T for this warp's 16 rows x 64 keys: 8 n-tiles of 8 keys. One ldmatrix gives the B
        // operands of two k16 steps: matrix mtx holds keys nt*8.., dims kk*16 + mtx*8...
        float s[BLOCK_K / 8][4];
#pragma unroll
        for (int nt = 0; nt < BLOCK_K / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const T* krow = k_tile + (nt * 8 + mrow) * (D + PAD) + mtx * 8;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, krow + kk * 16);
                mma<T>(s[nt], qf[kk], b[0], b[1]);
                mma<T>(s[nt], qf[kk + 1], b[2], b[3]);
            }
        }
        __syncthreads(); // every warp is done with the key tile: refill it
        if (more) {
            load_tile<T, D, WARPS, BLOCK_K>(k_tile, k_head, D, k0 + BLOCK_K, keys);
            cp_async_commit();
        }

        // Hide keys past a row's own position, outside its window, or past the filled keys. Only tiles
        // at an edge need the check.
        const bool edge = (k0 + BLOCK_K - 1 > first_query) || (k0 + BLOCK_K > keys) ||
                          (window > 0 && k0 <= last_query - window);
        if (edge) {
#pragma unroll
            for (int nt = 0; nt < BLOCK_K / 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = k0 + nt * 8 + col + (e & 1);
                    const int qi = (e < 2) ? qa : qb;
                    bool visible = key <= qi && key < keys && (window <= 0 || qi - key < window);
                    if (!visible) s[nt][e] = -INFINITY;
                }
            }
        }

        // Online softmax: new row maxima over the tile (reduced across the 4 lanes sharing a row).
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < BLOCK_K / 8; ++nt) {
            mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
            mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
        }
#pragma unroll
        for (int sh = 1; sh < 4; sh <<= 1) {
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, sh));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, sh));
        }
        const float new_a = fmaxf(m_a, mx_a * scale_log2);
        const float new_b = fmaxf(m_b, mx_b * scale_log2);
        // A row with nothing visible yet keeps max -inf; subtract 0 then so exp2 gives 0, not NaN.
        const float base_a = new_a == -INFINITY ? 0.f : new_a;
        const float base_b = new_b == -INFINITY ? 0.f : new_b;
        const float corr_a = exp2f(m_a - base_a);
        const float corr_b = exp2f(m_b - base_b);
        m_a = new_a;
        m_b = new_b;
        l_a *= corr_a;
        l_b *= corr_b;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
            o[i][0] *= corr_a;
            o[i][1] *= corr_a;
            o[i][2] *= corr_b;
            o[i][3] *= corr_b;
        }

        // P = exp2(S * scale - max), packed straight into mma A operands: the accumulators of n-tiles
        // 2t and 2t+1 are exactly the A fragment of the 16-key step t.
        uint32_t pf[BLOCK_K / 16][4];
#pragma unroll
        for (int t = 0; t < BLOCK_K / 16; ++t) {
            float p[8];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float* sv = s[2 * t + h];
                p[4 * h + 0] = exp2f(sv[0] * scale_log2 - base_a);
                p[4 * h + 1] = exp2f(sv[1] * scale_log2 - base_a);
                p[4 * h + 2] = exp2f(sv[2] * scale_log2 - base_b);
                p[4 * h + 3] = exp2f(sv[3] * scale_log2 - base_b);
                l_a += p[4 * h + 0] + p[4 * h + 1];
                l_b += p[4 * h + 2] + p[4 * h + 3];
            }
            pf[t][0] = Pack<T>::two(p[0], p[1]); // row a, keys 16t + col
            pf[t][1] = Pack<T>::two(p[2], p[3]); // row b, keys 16t + col
            pf[t][2] = Pack<T>::two(p[4], p[5]); // row a, keys 16t + 8 + col
            pf[t][3] = Pack<T>::two(p[6], p[7]); // row b, keys 16t + 8 + col
        }

        // This tile's values (the next tile's keys may still be in flight).
        if (more) {
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        // O += P V: per pair of 8-wide output column tiles, one transposed ldmatrix per 16-key step.
#pragma unroll
        for (int dt = 0; dt < D / 8; dt += 2) {
#pragma unroll
            for (int t = 0; t < BLOCK_K / 16; ++t) {
                // Matrix mtx: keys 16t + (mtx & 1) * 8 + mrow, columns of tile dt + (mtx >> 1).
                const T* vrow = v_tile + (t * 16 + (mtx & 1) * 8 + mrow) * (D + PAD) + (dt + (mtx >> 1)) * 8;
                uint32_t b[4];
                ldmatrix_x4_trans(b, vrow);
                mma<T>(o[dt], pf[t], b[0], b[1]);
                mma<T>(o[dt + 1], pf[t], b[2], b[3]);
            }
        }
        __syncthreads(); // every warp is done with the value tile: refill it
        if (more) {
            load_tile<T, D, WARPS, BLOCK_K>(v_tile, v_head, D, k0 + BLOCK_K, keys);
            cp_async_commit();
        }
    }

    // Finish the row sums across the 4 lanes of a row, normalise, write.
#pragma unroll
    for (int sh = 1; sh < 4; sh <<= 1) {
        l_a += __shfl_xor_sync(0xffffffff, l_a, sh);
        l_b += __shfl_xor_sync(0xffffffff, l_b, sh);
    }
    const float inv_a = l_a > 0.f ? 1.f / l_a : 0.f;
    const float inv_b = l_b > 0.f ? 1.f / l_b : 0.f;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
        const int c = dt * 8 + col;
        if (row_a < q_len)
            *reinterpret_cast<uint32_t*>(out_head + (int64_t)row_a * D + c) = Pack<T>::two(o[dt][0] * inv_a, o[dt][1] * inv_a);
        if (row_b < q_len)
            *reinterpret_cast<uint32_t*>(out_head + (int64_t)row_b * D + c) = Pack<T>::two(o[dt][2] * inv_b, o[dt][3] * inv_b);
    }
}

#define FLASH_PREFILL(NAME, T, D, W, K)                                                                        \
    extern "C" __global__ void __launch_bounds__(W * 32)                                                       \
        NAME##_w##W##k##K(const T* q, const T* k, const T* v, T* out, int heads, int kv_heads, int q_len,      \
                          int keys, int64_t kv_batch_stride, int64_t kv_head_stride, int window, float scale) { \
        flash_prefill<T, D, W, K>(q, k, v, out, heads, kv_heads, q_len, keys, kv_batch_stride, kv_head_stride,  \
                                  window, scale);                                                              \
    }

#define FLASH_PREFILL_VARIANTS(NAME, T, D)                                                                     \
    FLASH_PREFILL(NAME, T, D, 4, 128)                                                                          \
    FLASH_PREFILL(NAME, T, D, 8, 128)                                                                          \
    FLASH_PREFILL(NAME, T, D, 8, 64)                                                                           \
    FLASH_PREFILL(NAME, T, D, 4, 64)                                                                           \
    FLASH_PREFILL(NAME, T, D, 8, 32)

FLASH_PREFILL_VARIANTS(flash_prefill_bf16_d64, __nv_bfloat16, 64)
FLASH_PREFILL_VARIANTS(flash_prefill_bf16_d128, __nv_bfloat16, 128)
FLASH_PREFILL_VARIANTS(flash_prefill_f16_d64, __half, 64)
FLASH_PREFILL_VARIANTS(flash_prefill_f16_d128, __half, 128)
