// Fused causal attention for the prefill on Hopper (sm_90a): the computation, the tensor layouts and
// the rounding of `flash_prefill.cu` (FlashAttention-2's online softmax, no score matrix in memory),
// with the two matrix products on warpgroup tensor-core instructions (wgmma) instead of warp-level
// mma.sync. On the H100 mma.sync kept the prefill's attention near 300 TFLOP/s, which left a
// 32K-token prefill slower than PyTorch's SDPA; wgmma takes its B operand (and here Q) straight from
// shared memory, and a warpgroup's 64 x 128 product is one instruction per 16-wide k step.
//
// Work split. A block of NWG warpgroups (128 threads each) takes 64 x NWG query rows of one head.
// Keys and values stream through shared memory in tiles of 128 rows, STAGES tiles deep, copied with
// cp.async by the whole block; one barrier per tile. Per tile, each warpgroup computes S = Q K^T (64 x
// 128 f32 in registers), its online softmax, and O += P V with P taken from the S registers: the
// accumulator layout of the first product is the register-operand layout of the second (as in
// FlashAttention-2 and -3). Head size 128 only (every model of the paper's table 1).
//
// Measured on the H100 (attention of whole 32K and 64K prefills in 4096-query chunks, Llama-2-7B's 32
// heads; a scratch harness): mma.sync's best shape 298/308 TFLOP/s; two warpgroups 374/377, three 409/408.
// Without the 128-byte swizzle (plain 8 x 16-byte core matrices) the wgmma kernel ran at 256: its
// shared-memory reads conflict. Computing the next tile's scores during this tile's softmax
// (FlashAttention-3's intra-warpgroup overlap, 243 registers) gained nothing measurable, nor did data
// already in L2, while dropping the exponentials gained 12 %: the remaining gap to the tensor-core peak
// is the lockstep of the block's warpgroups at each tile's barrier (FlashAttention-3 removes it with a
// producer warp, TMA copies and barriers per stage).
//
// Shared-memory layout (the 128-byte swizzle, the canonical layout wgmma reads without conflicts): a
// tile of R rows x 128 columns is two halves of 64 columns, each R rows of 128 bytes; 16-byte chunk c
// of row r sits at position c ^ (r % 8) of its row, and tiles start at multiples of 1024 bytes. Q, K
// and V share it. For S = Q K^T both operands are K-major (the head dimension is k): a 16-wide k step
// is 32 bytes further within a half, 8-row groups are 1024 bytes apart (the descriptor's stride byte
// offset). For O += P V the values are an MN-major B operand (keys are k, the head dimension is
// contiguous; the instruction's transpose flag): a 16-key step is two 8-row groups (2048 bytes)
// further, the two 64-column halves are R x 128 bytes apart (the leading byte offset).
//
// Tensors and positions: as flash_prefill.cu (queries are the last q_len of `keys` positions; optional
// sliding window; grouped-query heads; queries and outputs at any strides, keys and values with
// contiguous rows).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace hopper {

constexpr int D = 128;                     // head size
constexpr int BLOCK_N = 128;               // keys per tile
constexpr int TILE_BYTES = BLOCK_N * D * 2; // one key or value tile

#define WGMMA_ACC_REGS "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define WGMMA_ACC(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

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

// A shared-memory matrix descriptor with the 128-byte swizzle: start address, leading and stride byte
// offsets (each stored >> 4), swizzle mode 1.
__device__ __forceinline__ uint64_t descriptor(const void* smem, uint32_t leading, uint32_t stride) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(leading >> 4) << 16) | ((uint64_t)(stride >> 4) << 32) | (1ull << 62);
}

// d (64 x 128 f32, this thread's 64 values) = or += A (64 x 16, shared) x B (16 x 128, shared), both K-major.
template <typename T> __device__ __forceinline__ void wgmma_ss(float d[64], uint64_t a, uint64_t b, int accumulate);
template <> __device__ __forceinline__ void wgmma_ss<__nv_bfloat16>(float d[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WGMMA_ACC_REGS ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WGMMA_ACC(d)
                 : "l"(a), "l"(b), "r"(accumulate));
}
template <> __device__ __forceinline__ void wgmma_ss<__half>(float d[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " WGMMA_ACC_REGS ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WGMMA_ACC(d)
                 : "l"(a), "l"(b), "r"(accumulate));
}

// d (64 x 128 f32) += A (64 x 16, registers) x B (16 x 128, shared, MN-major: transposed).
template <typename T> __device__ __forceinline__ void wgmma_rs(float d[64], const uint32_t a[4], uint64_t b);
template <> __device__ __forceinline__ void wgmma_rs<__nv_bfloat16>(float d[64], const uint32_t a[4], uint64_t b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WGMMA_ACC_REGS ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
                 : WGMMA_ACC(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
template <> __device__ __forceinline__ void wgmma_rs<__half>(float d[64], const uint32_t a[4], uint64_t b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " WGMMA_ACC_REGS ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
                 : WGMMA_ACC(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// Orders this thread's register writes before the next wgmma reads them (accumulators, A operands).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Makes this thread's shared-memory writes (cp.async and plain stores: the generic proxy) visible to
// wgmma's reads (the async proxy); the barrier that follows publishes them to the other threads.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Copies rows first..first + ROWS - 1 of a [rows, D] matrix (rows `row_stride` elements apart) into
// the swizzled layout; rows at or past `rows` are zero-filled (their probabilities are 0, but 0 x
// garbage could be NaN). A warp reads two whole rows; the 8 threads of each store phase write one
// row's 8 chunks of a half, a permutation of 128 bytes: no bank conflicts.
template <typename T, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows(unsigned char* tile, const T* base, int64_t row_stride, int first, int rows) {
#pragma unroll
    for (int p = threadIdx.x; p < ROWS * (D / 8); p += THREADS) {
        const int r = p >> 4, chunk = p & 15;
        unsigned char* dst = tile + (chunk >> 3) * (ROWS * 128) + r * 128 + (((chunk & 7) ^ (r & 7)) << 4);
        if (first + r < rows) {
            hopper::cp_async_16(dst, base + (int64_t)(first + r) * row_stride + chunk * 8);
        } else {
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}

template <typename T, int NWG, int STAGES>
__device__ void flash_prefill_wgmma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                                    int heads, int kv_heads, int q_len, int keys, int64_t q_batch_stride, int64_t q_head_stride,
                                    int64_t q_row_stride, int64_t kv_batch_stride, int64_t kv_head_stride, int window, float scale) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // Swizzled tiles must start at multiples of 1024 bytes (the swizzle pattern's period).
    unsigned char* smem = smem_raw + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023)) & 1023);
    constexpr int THREADS = NWG * 128;
    constexpr int BLOCK_Q = NWG * 64;
    unsigned char* q_tile = smem;
    unsigned char* k_tiles = q_tile + BLOCK_Q * D * 2;           // STAGES tiles
    unsigned char* v_tiles = k_tiles + STAGES * TILE_BYTES;      // STAGES tiles

    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    // The last query blocks see the most keys: start them first so the grid ends evenly.
    const int q_block = gridDim.x - 1 - blockIdx.x;
    const int head = blockIdx.y, batch = blockIdx.z;
    const int kv_head = head / (heads / kv_heads);
    const int offset = keys - q_len; // key index of query 0

    const T* q_head = q + batch * q_batch_stride + head * q_head_stride;
    T* out_head = out + batch * q_batch_stride + head * q_head_stride;
    const T* k_head = k + batch * kv_batch_stride + kv_head * kv_head_stride;
    const T* v_head = v + batch * kv_batch_stride + kv_head * kv_head_stride;

    // wgmma's accumulator layout: warp w of a warpgroup holds rows 16 w..16 w + 15 of its 64, in the
    // m16n8 layout of mma.sync per 8-wide column block i: values 4 i, 4 i + 1 at row lane / 4, columns
    // 8 i + col, col + 1; values 4 i + 2, 4 i + 3 at row lane / 4 + 8.
    const int row_a = q_block * BLOCK_Q + wg * 64 + warp * 16 + lane / 4;
    const int col = (lane % 4) * 2;

    float o[64], s[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = s[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}; // running maxima (log2 domain); row sums (this thread's share)
    const float scale_log2 = scale * 1.4426950408889634f;

    const int first_query = q_block * BLOCK_Q + offset;
    const int last_query = min(q_block * BLOCK_Q + BLOCK_Q, q_len) - 1 + offset;
    const int k_end = min(last_query + 1, keys);
    const int k_begin = window > 0 ? max(0, first_query - window + 1) : 0;
    const int kb_begin = k_begin / BLOCK_N;
    const int kb_end = (k_end + BLOCK_N - 1) / BLOCK_N;

    // Operand descriptors. Q (this warpgroup's 64 rows) and K: k step kk is in half kk / 4, 32 bytes
    // further per step within it.
    auto q_desc = [&](int kk) { return descriptor(q_tile + (kk / 4) * (BLOCK_Q * 128) + wg * 64 * 128 + (kk % 4) * 32, 16, 1024); };
    auto k_desc = [&](const unsigned char* k_tile, int kk) { return descriptor(k_tile + (kk / 4) * (BLOCK_N * 128) + (kk % 4) * 32, 16, 1024); };
    // V: 16 keys (two 8-row groups) per step; its two 64-column halves are the n direction.
    auto v_desc = [&](const unsigned char* v_tile, int t) { return descriptor(v_tile + t * 2 * 1024, BLOCK_N * 128, 1024); };
    // Tile kb's keys and values travel in one copy group (the first also carries Q) into stage
    // (kb - kb_begin) % STAGES.
    auto load_tile = [&](int kb) {
        const int stage = (kb - kb_begin) % STAGES;
        load_rows<T, BLOCK_N, THREADS>(k_tiles + stage * TILE_BYTES, k_head, D, kb * BLOCK_N, keys);
        load_rows<T, BLOCK_N, THREADS>(v_tiles + stage * TILE_BYTES, v_head, D, kb * BLOCK_N, keys);
        cp_async_commit();
    };
    auto k_tile_of = [&](int kb) { return k_tiles + ((kb - kb_begin) % STAGES) * TILE_BYTES; };
    auto v_tile_of = [&](int kb) { return v_tiles + ((kb - kb_begin) % STAGES) * TILE_BYTES; };

    // Issues S = Q K^T for tile kb (8 steps of 16 head dimensions; the first overwrites the
    // accumulators) without waiting for it.
    auto issue_scores = [&](float* acc, int kb) {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) wgmma_ss<T>(acc, q_desc(kk), k_desc(k_tile_of(kb), kk), kk > 0);
        wgmma_commit();
    };
    // Masks tile kb's scores, advances the online softmax (rescaling O) and packs P into the register
    // A operands of the 16-key steps: column blocks 2t and 2t + 1 of S are exactly step t's fragment.
    auto softmax = [&](float* sc, int kb, uint32_t pf[BLOCK_N / 16][4]) {
        const int k0 = kb * BLOCK_N;
        // Hide keys past a row's own position, outside its window, or past the filled keys. Only
        // tiles at an edge need the check.
        const bool edge = (k0 + BLOCK_N - 1 > first_query) || (k0 + BLOCK_N > keys) || (window > 0 && k0 <= last_query - window);
        if (edge) {
            const int qa = row_a + offset;
#pragma unroll
            for (int i = 0; i < BLOCK_N / 8; ++i) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = k0 + i * 8 + col + (e & 1);
                    const int qi = e < 2 ? qa : qa + 8;
                    const bool visible = key <= qi && key < keys && (window <= 0 || qi - key < window);
                    if (!visible) sc[4 * i + e] = -INFINITY;
                }
            }
        }
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int i = 0; i < BLOCK_N / 8; ++i) {
            mx_a = fmaxf(mx_a, fmaxf(sc[4 * i], sc[4 * i + 1]));
            mx_b = fmaxf(mx_b, fmaxf(sc[4 * i + 2], sc[4 * i + 3]));
        }
#pragma unroll
        for (int sh = 1; sh < 4; sh <<= 1) {
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, sh));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, sh));
        }
        const float new_a = fmaxf(m[0], mx_a * scale_log2);
        const float new_b = fmaxf(m[1], mx_b * scale_log2);
        // A row with nothing visible yet keeps max -inf; subtract 0 then so exp2 gives 0, not NaN.
        const float base_a = new_a == -INFINITY ? 0.f : new_a;
        const float base_b = new_b == -INFINITY ? 0.f : new_b;
        const float corr_a = exp2f(m[0] - base_a);
        const float corr_b = exp2f(m[1] - base_b);
        m[0] = new_a;
        m[1] = new_b;
        l[0] *= corr_a;
        l[1] *= corr_b;
        // Past the first tiles a row's maximum seldom moves: skip the rescale when no row of the
        // warp needs it (a warp-uniform branch).
        if (__any_sync(0xffffffff, corr_a != 1.f || corr_b != 1.f)) {
#pragma unroll
            for (int i = 0; i < D / 8; ++i) {
                o[4 * i] *= corr_a;
                o[4 * i + 1] *= corr_a;
                o[4 * i + 2] *= corr_b;
                o[4 * i + 3] *= corr_b;
            }
        }
#pragma unroll
        for (int t = 0; t < BLOCK_N / 16; ++t) {
            float p[8];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float* sv = sc + 4 * (2 * t + h);
                p[4 * h + 0] = exp2f(fmaf(sv[0], scale_log2, -base_a));
                p[4 * h + 1] = exp2f(fmaf(sv[1], scale_log2, -base_a));
                p[4 * h + 2] = exp2f(fmaf(sv[2], scale_log2, -base_b));
                p[4 * h + 3] = exp2f(fmaf(sv[3], scale_log2, -base_b));
                l[0] += p[4 * h + 0] + p[4 * h + 1];
                l[1] += p[4 * h + 2] + p[4 * h + 3];
            }
            pf[t][0] = Pack<T>::two(p[0], p[1]); // row a, keys 16t + col
            pf[t][1] = Pack<T>::two(p[2], p[3]); // row b, keys 16t + col
            pf[t][2] = Pack<T>::two(p[4], p[5]); // row a, keys 16t + 8 + col
            pf[t][3] = Pack<T>::two(p[6], p[7]); // row b, keys 16t + 8 + col
        }
    };
    // Issues O += P V for tile kb: 8 steps of 16 keys.
    auto issue_values = [&](const uint32_t pf[BLOCK_N / 16][4], int kb) {
        wgmma_fence();
#pragma unroll
        for (int t = 0; t < BLOCK_N / 16; ++t) wgmma_rs<T>(o, pf[t], v_desc(v_tile_of(kb), t));
        wgmma_commit();
    };

    if (kb_begin < kb_end) load_rows<T, BLOCK_Q, THREADS>(q_tile, q_head, q_row_stride, q_block * BLOCK_Q, q_len);
#pragma unroll
    for (int i = 0; i < STAGES - 1; ++i) {
        if (kb_begin + i < kb_end) load_tile(kb_begin + i);
    }
    for (int kb = kb_begin; kb < kb_end; ++kb) {
        // Wait for this tile's group: the groups committed after it (at most STAGES - 2) may still run.
        if (min(kb_end - 1 - kb, STAGES - 2) == STAGES - 2) {
            cp_async_wait<STAGES - 2>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_shared();
        // One barrier per tile: every thread's copies of this tile are visible, and every warpgroup is
        // done with the tile of the last iteration, whose stage the next copy reuses.
        __syncthreads();
        if (kb + STAGES - 1 < kb_end) load_tile(kb + STAGES - 1);
        issue_scores(s, kb);
        wgmma_wait_all();
        uint32_t pf[BLOCK_N / 16][4];
        softmax(s, kb, pf);
        issue_values(pf, kb);
        wgmma_wait_all();
    }

    // Finish the row sums across the 4 lanes of a row, normalise, write.
    float la = l[0], lb = l[1];
#pragma unroll
    for (int sh = 1; sh < 4; sh <<= 1) {
        la += __shfl_xor_sync(0xffffffff, la, sh);
        lb += __shfl_xor_sync(0xffffffff, lb, sh);
    }
    const float inv_a = la > 0.f ? 1.f / la : 0.f;
    const float inv_b = lb > 0.f ? 1.f / lb : 0.f;
    const int ra = row_a, rb = row_a + 8;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
        const int c = i * 8 + col;
        if (ra < q_len) *reinterpret_cast<uint32_t*>(out_head + ra * q_row_stride + c) = Pack<T>::two(o[4 * i] * inv_a, o[4 * i + 1] * inv_a);
        if (rb < q_len) *reinterpret_cast<uint32_t*>(out_head + rb * q_row_stride + c) = Pack<T>::two(o[4 * i + 2] * inv_b, o[4 * i + 3] * inv_b);
    }
}

} // namespace hopper

// Kernel names: flash_prefill_<type>_d128_wg<NWG>. Two warpgroups (128 queries) keep three tiles in
// flight; three (192 queries: each key tile read from L2 serves 1.5x the work) have room for two.
#define FLASH_PREFILL_WGMMA(NAME, T, NWG, STAGES)                                                                      \
    extern "C" __global__ void __launch_bounds__(NWG * 128, 1)                                                         \
        NAME(const T* q, const T* k, const T* v, T* out, int heads, int kv_heads, int q_len, int keys,                 \
             int64_t q_batch_stride, int64_t q_head_stride, int64_t q_row_stride, int64_t kv_batch_stride,             \
             int64_t kv_head_stride, int window, float scale) {                                                        \
        hopper::flash_prefill_wgmma<T, NWG, STAGES>(q, k, v, out, heads, kv_heads, q_len, keys, q_batch_stride,        \
                                                    q_head_stride, q_row_stride, kv_batch_stride, kv_head_stride,      \
                                                    window, scale);                                                    \
    }

FLASH_PREFILL_WGMMA(flash_prefill_bf16_d128_wg3, __nv_bfloat16, 3, 2)
FLASH_PREFILL_WGMMA(flash_prefill_bf16_d128_wg2, __nv_bfloat16, 2, 3)
FLASH_PREFILL_WGMMA(flash_prefill_f16_d128_wg3, __half, 3, 2)
FLASH_PREFILL_WGMMA(flash_prefill_f16_d128_wg2, __half, 2, 3)
