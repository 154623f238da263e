// Fused causal attention for the prefill (FlashAttention-2's forward pass): queries attend to keys
// tile by tile with an online softmax, so the T x T score matrix never exists in memory. The prefill
// needs no per-head probe (the paper's score reads the decode steps' attention only), so it can take
// this path; decode steps keep the instrumented kernels on the Rust side.
//
// Layout. Queries: rows of D contiguous elements at any batch, head and position strides (head-major
// [batch, heads, q_len, D], or token-major [batch, q_len, heads, D] as the projections produce them);
// the output is written with the same strides, densely. Keys and values: views of the
// preallocated KV cache, [batch, kv_heads, keys, D] with arbitrary batch and head strides (the cache
// holds more positions than are filled) and rows of D contiguous elements. Query head h reads KV head
// h / (heads / kv_heads) (grouped-query attention, as Hugging Face's repeat_kv).
//
// Positions. The queries are the last q_len of the `keys` positions: query i sits at key index
// i + (keys - q_len). It sees key j when j <= that index and, with a sliding window w > 0, when
// index - j < w.
//
// Work split. One block of WARPS warps takes 16 x MT x WARPS query rows of one head; each warp owns
// 16 x MT rows (MT m16 tiles). Keys and values stream through shared memory BLOCK_K rows at a time,
// each tile serving all the block's rows. Tensor-core mma.sync m16n8k16 (bf16 or f16 in, f32 accumulate) computes S = Q K^T and
// O += P V; the S accumulator's register layout is reused as P's operand layout without a trip through
// shared memory (the FlashAttention-2 trick). Requires sm_80 or newer.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "half_tiles.cuh"

// Block shapes are template parameters (WARPS warps of 16 x MT query rows, BLOCK_K keys per tile) so
// that several can be compiled and timed against each other (flash.rs: HEADSCOPE_FLASH_VARIANT). On
// the H100, over the 4096-query chunks of a whole 64K prefill (32 heads of 128): 4 warps x 32 rows x 64
// keys 296 TFLOP/s (it spills ~100 bytes of registers and still wins), 4 x 32 x 48 293, 8 x 32 x 64
// 275, 4 x 32 x 32 271, 4 x 16 x 128 232 (bench/results/2026-11-23/kernel/variants.log).
// Shared-memory rows are padded by 8 elements (16 bytes): consecutive rows then start 4 banks apart,
// so the 8 rows one fragment load touches hit distinct banks.
#define PAD 8

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

template <typename T, int D, int WARPS, int MT, int BLOCK_K>
__device__ void flash_prefill(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                              T* __restrict__ out, int heads, int kv_heads, int q_len, int keys,
                              int64_t q_batch_stride, int64_t q_head_stride, int64_t q_row_stride,
                              int64_t kv_batch_stride, int64_t kv_head_stride, int window, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    constexpr int ROWS = 16 * MT; // query rows per warp: MT m16 tiles
    constexpr int BLOCK_Q = ROWS * WARPS;
    // With one m16 tile per warp the Q fragments stay in registers for the whole key loop. With two,
    // registers cannot hold them next to twice the accumulators (FlashAttention-2 keeps Q in shared
    // memory for head size 128 too): they are reloaded from a shared Q tile per key tile, and each K
    // and V fragment loaded from shared memory then feeds twice as many mma instructions.
    constexpr bool Q_IN_SMEM = MT > 1;
    T* k_tile = reinterpret_cast<T*>(smem_raw);
    T* v_tile = k_tile + BLOCK_K * (D + PAD);
    T* q_tile = v_tile + BLOCK_K * (D + PAD); // BLOCK_Q rows, only when Q_IN_SMEM

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // The last query blocks see the most keys: start them first so the grid ends evenly.
    const int q_block = gridDim.x - 1 - blockIdx.x;
    const int head = blockIdx.y, batch = blockIdx.z;
    const int kv_head = head / (heads / kv_heads);
    const int offset = keys - q_len; // key index of query 0

    const T* q_head = q + batch * q_batch_stride + head * q_head_stride;
    T* out_head = out + batch * q_batch_stride + head * q_head_stride;
    const T* k_head = k + batch * kv_batch_stride + kv_head * kv_head_stride;
    const T* v_head = v + batch * kv_batch_stride + kv_head * kv_head_stride;

    // This thread's rows in m16 tile mt are row_a + 16 mt and row_a + 16 mt + 8 (fragment layout of
    // m16n8k16); its column pair within each 8-wide tile is col, col + 1.
    const int row_a = q_block * BLOCK_Q + warp * ROWS + lane / 4;
    const int col = (lane % 4) * 2;
    const int mtx = lane / 8, mrow = lane % 8;

    // Q fragments in registers (MT == 1 only), loaded once.
    uint32_t qf[Q_IN_SMEM ? 1 : D / 16][4];
    if constexpr (!Q_IN_SMEM) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            const int c0 = kk * 16 + col;
            auto ld = [&](int row, int c) -> uint32_t {
                return row < q_len ? *reinterpret_cast<const uint32_t*>(q_head + row * q_row_stride + c) : 0u;
            };
            qf[kk][0] = ld(row_a, c0);
            qf[kk][1] = ld(row_a + 8, c0);
            qf[kk][2] = ld(row_a, c0 + 8);
            qf[kk][3] = ld(row_a + 8, c0 + 8);
        }
    }
    // The A operand of m16 tile mt, k16 step kk.
    auto q_fragment = [&](uint32_t a[4], int mt, int kk) {
        if constexpr (Q_IN_SMEM) {
            // Matrix mtx: rows (mtx & 1) * 8 + mrow of the tile, dimensions kk * 16 + (mtx >> 1) * 8..
            ldmatrix_x4(a, q_tile + (warp * ROWS + mt * 16 + (mtx & 1) * 8 + mrow) * (D + PAD) + kk * 16 + (mtx >> 1) * 8);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = qf[kk][i];
        }
    };

    float o[MT][D / 8][4];
    float m[MT][2], l[MT][2]; // running row maxima (log2 domain); this thread's share of the row sums
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }
    const float scale_log2 = scale * 1.4426950408889634f;

    // Keys this block can see: up to its last query's index; from its first query's window start.
    const int first_query = q_block * BLOCK_Q + offset;
    const int last_query = min(q_block * BLOCK_Q + BLOCK_Q, q_len) - 1 + offset;
    const int k_end = min(last_query + 1, keys);
    const int k_begin = window > 0 ? max(0, first_query - window + 1) : 0;
    const int kb_begin = k_begin / BLOCK_K;
    const int kb_end = (k_end + BLOCK_K - 1) / BLOCK_K;

    // Software pipeline (as FlashAttention-2): the next key tile streams in while this tile's P V runs,
    // and this tile's values stream in while its Q K^T runs. Copy groups complete in commit order; the
    // Q tile travels in the first keys' group.
    if (kb_begin < kb_end) {
        if constexpr (Q_IN_SMEM) load_tile<T, D, WARPS, BLOCK_Q>(q_tile, q_head, q_row_stride, q_block * BLOCK_Q, q_len);
        load_tile<T, D, WARPS, BLOCK_K>(k_tile, k_head, D, kb_begin * BLOCK_K, keys);
        cp_async_commit();
        load_tile<T, D, WARPS, BLOCK_K>(v_tile, v_head, D, kb_begin * BLOCK_K, keys);
        cp_async_commit();
    }
    for (int kb = kb_begin; kb < kb_end; ++kb) {
        const int k0 = kb * BLOCK_K;
        const bool more = kb + 1 < kb_end;
        cp_async_wait<1>(); // this tile's keys (its values may still be in flight)
        __syncthreads();

        // S = Q K^T for this warp's rows x BLOCK_K keys, in n-tiles of 8 keys. Per k16 step, one
        // ldmatrix gives the B operands of two n-tiles (matrix mtx: keys (nt + (mtx >> 1)) * 8..,
        // dims kk * 16 + (mtx & 1) * 8..), and every m16 tile uses them.
        float s[MT][BLOCK_K / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < BLOCK_K / 8; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) q_fragment(a[mt], mt, kk);
#pragma unroll
            for (int nt = 0; nt < BLOCK_K / 8; nt += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, k_tile + ((nt + (mtx >> 1)) * 8 + mrow) * (D + PAD) + kk * 16 + (mtx & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma<T>(s[mt][nt], a[mt], b[0], b[1]);
                    mma<T>(s[mt][nt + 1], a[mt], b[2], b[3]);
                }
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
            for (int mt = 0; mt < MT; ++mt) mask_scores<BLOCK_K>(&s[mt][0][0], row_a + 16 * mt + offset, col, k0, keys, window);
        }
        // Online softmax per m16 tile, P packed straight into mma A operands.
        uint32_t pf[MT][BLOCK_K / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) online_softmax_step<T, BLOCK_K, D>(&s[mt][0][0], &o[mt][0][0], m[mt], l[mt], pf[mt], scale_log2);

        // This tile's values (the next tile's keys may still be in flight).
        if (more) {
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        // O += P V: per pair of 8-wide output column tiles, one transposed ldmatrix per 16-key step,
        // used by every m16 tile.
#pragma unroll
        for (int dt = 0; dt < D / 8; dt += 2) {
#pragma unroll
            for (int t = 0; t < BLOCK_K / 16; ++t) {
                // Matrix mtx: keys 16t + (mtx & 1) * 8 + mrow, columns of tile dt + (mtx >> 1).
                const T* vrow = v_tile + (t * 16 + (mtx & 1) * 8 + mrow) * (D + PAD) + (dt + (mtx >> 1)) * 8;
                uint32_t b[4];
                ldmatrix_x4_trans(b, vrow);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma<T>(o[mt][dt], pf[mt][t], b[0], b[1]);
                    mma<T>(o[mt][dt + 1], pf[mt][t], b[2], b[3]);
                }
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
    for (int mt = 0; mt < MT; ++mt) {
        float la = l[mt][0], lb = l[mt][1];
#pragma unroll
        for (int sh = 1; sh < 4; sh <<= 1) {
            la += __shfl_xor_sync(0xffffffff, la, sh);
            lb += __shfl_xor_sync(0xffffffff, lb, sh);
        }
        const float inv_a = la > 0.f ? 1.f / la : 0.f;
        const float inv_b = lb > 0.f ? 1.f / lb : 0.f;
        const int ra = row_a + 16 * mt, rb = ra + 8;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
            const int c = dt * 8 + col;
            if (ra < q_len)
                *reinterpret_cast<uint32_t*>(out_head + ra * q_row_stride + c) = Pack<T>::two(o[mt][dt][0] * inv_a, o[mt][dt][1] * inv_a);
            if (rb < q_len)
                *reinterpret_cast<uint32_t*>(out_head + rb * q_row_stride + c) = Pack<T>::two(o[mt][dt][2] * inv_b, o[mt][dt][3] * inv_b);
        }
    }
}

// Kernel names: NAME_w<warps>k<keys> for 16 query rows per warp, NAME_w<warps>r32k<keys> for 32.
#define FLASH_PREFILL(NAME, SUFFIX, T, D, W, MT, K)                                                            \
    extern "C" __global__ void __launch_bounds__(W * 32)                                                       \
        NAME##SUFFIX(const T* q, const T* k, const T* v, T* out, int heads, int kv_heads, int q_len, int keys, \
                     int64_t q_batch_stride, int64_t q_head_stride, int64_t q_row_stride,                      \
                     int64_t kv_batch_stride, int64_t kv_head_stride, int window, float scale) {               \
        flash_prefill<T, D, W, MT, K>(q, k, v, out, heads, kv_heads, q_len, keys, q_batch_stride,              \
                                      q_head_stride, q_row_stride, kv_batch_stride, kv_head_stride, window,    \
                                      scale);                                                                  \
    }

#define FLASH_PREFILL_VARIANTS(NAME, T, D)                                                                     \
    FLASH_PREFILL(NAME, _w4k128, T, D, 4, 1, 128)                                                              \
    FLASH_PREFILL(NAME, _w8k128, T, D, 8, 1, 128)                                                              \
    FLASH_PREFILL(NAME, _w8k64, T, D, 8, 1, 64)                                                                \
    FLASH_PREFILL(NAME, _w4k64, T, D, 4, 1, 64)                                                                \
    FLASH_PREFILL(NAME, _w8k32, T, D, 8, 1, 32)                                                                \
    FLASH_PREFILL(NAME, _w4r32k64, T, D, 4, 2, 64)                                                             \
    FLASH_PREFILL(NAME, _w4r32k32, T, D, 4, 2, 32)                                                             \
    FLASH_PREFILL(NAME, _w4r32k48, T, D, 4, 2, 48)                                                             \
    FLASH_PREFILL(NAME, _w8r32k64, T, D, 8, 2, 64)                                                             \
    FLASH_PREFILL(NAME, _w8r32k32, T, D, 8, 2, 32)

FLASH_PREFILL_VARIANTS(flash_prefill_bf16_d64, __nv_bfloat16, 64)
FLASH_PREFILL_VARIANTS(flash_prefill_bf16_d128, __nv_bfloat16, 128)
FLASH_PREFILL_VARIANTS(flash_prefill_f16_d64, __half, 64)
FLASH_PREFILL_VARIANTS(flash_prefill_f16_d128, __half, 128)
