// Fused causal attention for the prefill on Hopper (sm_90a): the computation, the tensor layouts and
// the rounding of `flash_prefill.cu` (FlashAttention-2's online softmax, no score matrix in memory),
// with the two matrix products on warpgroup tensor-core instructions (wgmma) instead of warp-level
// mma.sync. On the H100 mma.sync kept the prefill's attention near 300 TFLOP/s, which left a
// 32K-token prefill slower than PyTorch's SDPA; wgmma takes its B operand (and here Q) straight from
// shared memory, and a warpgroup's 64 x 128 product is one instruction per 16-wide k step.
//
// Two kernels, both with 128-key tiles and the online softmax of `Rows`:
// - flash_prefill_tma (the default): two warpgroups (128 queries) per block. Thread 0 copies key and
//   value tiles with the tensor memory accelerator (TMA) through tensor maps of the cache, three tiles
//   deep, each tile's arrival and release counted on shared-memory barriers (mbarrier), so a
//   warpgroup waits only for its data, never for the other warpgroup. Each warpgroup computes the
//   next tile's scores while it takes this tile's softmax (FlashAttention-3's intra-warpgroup
//   overlap; two score tiles and an output tile take 255 registers). No producer warp: a ninth warp
//   would leave each of the SM's four register files three warps of at most 168 registers.
// - flash_prefill_wgmma<NWG, STAGES>: NWG warpgroups copy the tiles together with cp.async and meet at
//   one barrier per tile; for layouts a tensor map cannot describe (16-byte alignment).
// Per tile, a warpgroup computes S = Q K^T (64 x 128 f32 in registers), its online softmax, and
// O += P V with P taken from the S registers: the accumulator layout of the first product is the
// register-operand layout of the second (as in FlashAttention-2 and -3). Head size 128 only (every
// model of the paper's table 1).
//
// Measured on the H100 (attention of whole 32K and 64K prefills in 4096-query chunks, Llama-2-7B's
// 32 heads; time_prefill_variants): mma.sync's best shape 281/293 TFLOP/s; wgmma with three
// warpgroups 378/378, two 364/374; the TMA kernel 496/516 (without the overlap 482/511 in a scratch
// harness). Without the 128-byte swizzle the cp.async kernel ran at 256: its shared-memory reads
// conflict. With the lockstep barrier, neither the overlap nor data already in L2 gained anything:
// the barrier, not the copies or the exponentials, was what held the tensor cores idle.
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

#include "half_tiles.cuh"

namespace hopper {

constexpr int D = 128;                     // head size
constexpr int BLOCK_N = 128;               // keys per tile
constexpr int TILE_BYTES = BLOCK_N * D * 2; // one key or value tile

#define WGMMA_ACC_REGS "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define WGMMA_ACC(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

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


// Copies rows first..first + ROWS - 1 of a [rows, D] matrix (rows `row_stride` elements apart) into
// the swizzled layout of a tile whose halves are HALF_ROWS rows apart, from row `at` of the tile on;
// rows at or past `rows` are zero-filled (their probabilities are 0, but 0 x garbage could be NaN).
// THREADS threads take part, `thread` being this one's index among them. A warp reads two whole rows;
// the 8 threads of each store phase write one row's 8 chunks of a half, a permutation of 128 bytes:
// no bank conflicts.
template <typename T, int ROWS, int THREADS, int HALF_ROWS = ROWS>
__device__ __forceinline__ void load_rows(unsigned char* tile, int at, const T* base, int64_t row_stride, int first, int rows, int thread) {
#pragma unroll
    for (int p = thread; p < ROWS * (D / 8); p += THREADS) {
        const int r = p >> 4, chunk = p & 15;
        unsigned char* dst = tile + (chunk >> 3) * (HALF_ROWS * 128) + (at + r) * 128 + (((chunk & 7) ^ ((at + r) & 7)) << 4);
        if (first + r < rows) {
            cp_async_16(dst, base + (int64_t)(first + r) * row_stride + chunk * 8);
        } else {
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}

// Operand descriptors over swizzled tiles. Q (a warpgroup's 64 rows from row `at`) and K: k step kk
// is in half kk / 4, 32 bytes further per step within it; 8-row groups are 1024 bytes apart. V: 16 keys
// (two 8-row groups) per step; its two 64-column halves are the n direction.
template <int HALF_ROWS>
__device__ __forceinline__ uint64_t k_major_desc(const unsigned char* tile, int at, int kk) {
    return descriptor(tile + (kk / 4) * (HALF_ROWS * 128) + at * 128 + (kk % 4) * 32, 16, 1024);
}
__device__ __forceinline__ uint64_t v_desc(const unsigned char* v_tile, int t) { return descriptor(v_tile + t * 2 * 1024, BLOCK_N * 128, 1024); }

// The state of a warpgroup's 64 query rows: the output accumulator and the online softmax's running
// maxima and sums. wgmma's accumulator layout: warp w of a warpgroup holds rows 16 w..16 w + 15 of its
// 64, in the m16n8 layout of mma.sync per 8-wide column block i: values 4 i, 4 i + 1 at row lane / 4,
// columns 8 i + col, col + 1; values 4 i + 2, 4 i + 3 at row lane / 4 + 8.
template <typename T>
struct Rows {
    float o[64];
    float m[2], l[2]; // running maxima (log2 domain); this thread's share of the row sums
    int row_a;        // this thread's first row (the second is row_a + 8), as a query index
    int col;          // this thread's first column of each 8-wide block

    __device__ __forceinline__ void init(int first_row) {
#pragma unroll
        for (int i = 0; i < 64; ++i) o[i] = 0.f;
        m[0] = m[1] = -INFINITY;
        l[0] = l[1] = 0.f;
        const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
        row_a = first_row + warp * 16 + lane / 4;
        col = (lane % 4) * 2;
    }

    // Masks the scores of the key tile starting at k0 where it is at an edge (mask_scores), then one
    // online-softmax step over them (online_softmax_step), P into pf.
    __device__ __forceinline__ void softmax(float* sc, int k0, bool edge, int offset, int keys, int window, float scale_log2,
                                            uint32_t pf[BLOCK_N / 16][4]) {
        if (edge) mask_scores<BLOCK_N>(sc, row_a + offset, col, k0, keys, window);
        online_softmax_step<T, BLOCK_N, D>(sc, o, m, l, pf, scale_log2);
    }

    // Finishes the row sums across the 4 lanes of a row, normalises, writes the rows below q_len.
    __device__ __forceinline__ void write(T* out_head, int64_t q_row_stride, int q_len) {
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
};

// The key tiles a block of queries [q0, q0 + block_q) sees, and which of them need masking.
struct KeyRange {
    int first_query, last_query; // as key indices
    int kb_begin, kb_end;        // tiles of BLOCK_N keys

    __device__ __forceinline__ KeyRange(int q0, int block_q, int q_len, int keys, int window) {
        const int offset = keys - q_len;
        first_query = q0 + offset;
        last_query = min(q0 + block_q, q_len) - 1 + offset;
        const int k_end = min(last_query + 1, keys);
        const int k_begin = window > 0 ? max(0, first_query - window + 1) : 0;
        kb_begin = k_begin / BLOCK_N;
        kb_end = (k_end + BLOCK_N - 1) / BLOCK_N;
    }

    __device__ __forceinline__ bool edge(int k0, int keys, int window) const {
        return (k0 + BLOCK_N - 1 > first_query) || (k0 + BLOCK_N > keys) || (window > 0 && k0 <= last_query - window);
    }
};

// S = Q K^T for one key tile (8 steps of 16 head dimensions; the first overwrites the accumulators),
// issued without waiting.
template <typename T, int Q_HALF_ROWS>
__device__ __forceinline__ void issue_scores(float* acc, const unsigned char* q_tile, int q_at, const unsigned char* k_tile) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) wgmma_ss<T>(acc, k_major_desc<Q_HALF_ROWS>(q_tile, q_at, kk), k_major_desc<BLOCK_N>(k_tile, 0, kk), kk > 0);
    wgmma_commit();
}

// O += P V for one value tile: 8 steps of 16 keys, issued without waiting.
template <typename T>
__device__ __forceinline__ void issue_values(float* o, const uint32_t pf[BLOCK_N / 16][4], const unsigned char* v_tile) {
    wgmma_fence();
#pragma unroll
    for (int t = 0; t < BLOCK_N / 16; ++t) wgmma_rs<T>(o, pf[t], v_desc(v_tile, t));
    wgmma_commit();
}

// Swizzled tiles must start at multiples of 1024 bytes (the swizzle pattern's period).
__device__ __forceinline__ unsigned char* aligned_smem(unsigned char* raw) {
    return raw + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(raw)) & 1023)) & 1023);
}

template <typename T, int NWG, int STAGES>
__device__ void flash_prefill_wgmma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                                    int heads, int kv_heads, int q_len, int keys, int64_t q_batch_stride, int64_t q_head_stride,
                                    int64_t q_row_stride, int64_t kv_batch_stride, int64_t kv_head_stride, int window, float scale) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = aligned_smem(smem_raw);
    constexpr int THREADS = NWG * 128;
    constexpr int BLOCK_Q = NWG * 64;
    unsigned char* q_tile = smem;
    unsigned char* k_tiles = q_tile + BLOCK_Q * D * 2;      // STAGES tiles
    unsigned char* v_tiles = k_tiles + STAGES * TILE_BYTES; // STAGES tiles

    const int wg = threadIdx.x / 128;
    // The last query blocks see the most keys: start them first so the grid ends evenly.
    const int q_block = gridDim.x - 1 - blockIdx.x;
    const int head = blockIdx.y, batch = blockIdx.z;
    const int kv_head = head / (heads / kv_heads);
    const int offset = keys - q_len; // key index of query 0
    const T* q_head = q + batch * q_batch_stride + head * q_head_stride;
    T* out_head = out + batch * q_batch_stride + head * q_head_stride;
    const T* k_head = k + batch * kv_batch_stride + kv_head * kv_head_stride;
    const T* v_head = v + batch * kv_batch_stride + kv_head * kv_head_stride;

    Rows<T> rows;
    rows.init(q_block * BLOCK_Q + wg * 64);
    float s[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) s[i] = 0.f;
    const float scale_log2 = scale * 1.4426950408889634f;
    const KeyRange range(q_block * BLOCK_Q, BLOCK_Q, q_len, keys, window);
    const int kb_begin = range.kb_begin, kb_end = range.kb_end;

    // Tile kb's keys and values travel in one copy group (the first also carries Q) into stage
    // (kb - kb_begin) % STAGES.
    auto stage_of = [&](int kb) { return (kb - kb_begin) % STAGES; };
    auto load_tile = [&](int kb) {
        const int stage = stage_of(kb);
        load_rows<T, BLOCK_N, THREADS>(k_tiles + stage * TILE_BYTES, 0, k_head, D, kb * BLOCK_N, keys, threadIdx.x);
        load_rows<T, BLOCK_N, THREADS>(v_tiles + stage * TILE_BYTES, 0, v_head, D, kb * BLOCK_N, keys, threadIdx.x);
        cp_async_commit();
    };
    if (kb_begin < kb_end) load_rows<T, BLOCK_Q, THREADS>(q_tile, 0, q_head, q_row_stride, q_block * BLOCK_Q, q_len, threadIdx.x);
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
        const int stage = stage_of(kb);
        issue_scores<T, BLOCK_Q>(s, q_tile, wg * 64, k_tiles + stage * TILE_BYTES);
        wgmma_wait_all();
        uint32_t pf[BLOCK_N / 16][4];
        rows.softmax(s, kb * BLOCK_N, range.edge(kb * BLOCK_N, keys, window), offset, keys, window, scale_log2, pf);
        issue_values<T>(rows.o, pf, v_tiles + stage * TILE_BYTES);
        wgmma_wait_all();
    }
    rows.write(out_head, q_row_stride, q_len);
}

// --- The warp-specialised kernel: TMA copies, one producer warpgroup, two consumer warpgroups ---

// A CUtensorMap (cuda.h), passed by value as a __grid_constant__ kernel parameter.
struct alignas(64) TensorMap {
    uint64_t opaque[16];
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
// The producer's arrival: the phase completes once `bytes` more have landed (TMA's complete_tx).
__device__ __forceinline__ void mbar_expect_bytes(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
    asm volatile("{\n.reg .pred done;\nWAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT;\n}\n" ::"r"(smem_u32(bar)),
                 "r"(parity)
                 : "memory");
}
// One box of a 4-d tensor map (64 columns x 128 rows x 1 x 1 here) into shared memory, counted on `bar`.
__device__ __forceinline__ void tma_load(void* dst, const TensorMap* map, uint64_t* bar, int c0, int c1, int c2, int c3) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(
                     smem_u32(dst)),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(bar))
                 : "memory");
}

// Queries as flash_prefill_wgmma; keys and values through 4-d tensor maps (head dimension, keys,
// KV heads, batch: the map's key extent is the filled length, so TMA zero-fills rows past it) with
// boxes of 64 columns x 128 keys and the 128-byte swizzle, the layout the descriptors expect.
template <typename T, int STAGES>
__device__ void flash_prefill_tma(const T* __restrict__ q, const TensorMap* k_map, const TensorMap* v_map, T* __restrict__ out,
                                  int heads, int kv_heads, int q_len, int keys, int64_t q_batch_stride, int64_t q_head_stride,
                                  int64_t q_row_stride, int window, float scale) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ uint64_t keys_full[STAGES], values_full[STAGES], stage_free[STAGES];
    unsigned char* smem = aligned_smem(smem_raw);
    constexpr int BLOCK_Q = 128;
    unsigned char* q_tile = smem;
    unsigned char* k_tiles = q_tile + BLOCK_Q * D * 2;
    unsigned char* v_tiles = k_tiles + STAGES * TILE_BYTES;

    const int wg = threadIdx.x / 128;
    const int q_block = gridDim.x - 1 - blockIdx.x;
    const int head = blockIdx.y, batch = blockIdx.z;
    const int kv_head = head / (heads / kv_heads);
    const int offset = keys - q_len;
    const KeyRange range(q_block * BLOCK_Q, BLOCK_Q, q_len, keys, window);
    const int kb_begin = range.kb_begin, kb_end = range.kb_end;

    if (threadIdx.x == 0) {
        for (int i = 0; i < STAGES; ++i) {
            mbar_init(&keys_full[i], 1);
            mbar_init(&values_full[i], 1);
            mbar_init(&stage_free[i], 256); // every thread, when its warpgroup is done with the tile
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    // Thread 0 issues the copies: tile j into stage j % STAGES once both warpgroups have released the
    // tile that stage held. No producer warp: a ninth warp would leave each of the SM's four register
    // files three warps, 168 registers each, too few for two score tiles and an output tile.
    auto issue_tile = [&](int j) {
        const int stage = j % STAGES, round = j / STAGES, kb = kb_begin + j;
        if (round > 0) mbar_wait(&stage_free[stage], (round - 1) & 1);
        unsigned char* kt = k_tiles + stage * TILE_BYTES;
        unsigned char* vt = v_tiles + stage * TILE_BYTES;
        mbar_expect_bytes(&keys_full[stage], TILE_BYTES);
        tma_load(kt, k_map, &keys_full[stage], 0, kb * BLOCK_N, kv_head, batch);
        tma_load(kt + BLOCK_N * 128, k_map, &keys_full[stage], 64, kb * BLOCK_N, kv_head, batch);
        mbar_expect_bytes(&values_full[stage], TILE_BYTES);
        tma_load(vt, v_map, &values_full[stage], 0, kb * BLOCK_N, kv_head, batch);
        tma_load(vt + BLOCK_N * 128, v_map, &values_full[stage], 64, kb * BLOCK_N, kv_head, batch);
    };
    const int tiles = kb_end - kb_begin;
    if (threadIdx.x == 0) {
        for (int j = 0; j < min(STAGES - 1, tiles); ++j) issue_tile(j);
    }
    const int cw = wg; // this warpgroup's query rows: cw * 64..
    const T* q_head = q + batch * q_batch_stride + head * q_head_stride;
    T* out_head = out + batch * q_batch_stride + head * q_head_stride;
    // Each warpgroup copies its own 64 query rows and waits for them alone (a named barrier each).
    load_rows<T, 64, 128, BLOCK_Q>(q_tile, cw * 64, q_head, q_row_stride, q_block * BLOCK_Q + cw * 64, q_len, threadIdx.x % 128);
    cp_async_commit();
    cp_async_wait<0>();
    fence_async_shared();
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");

    Rows<T> rows;
    rows.init(q_block * BLOCK_Q + cw * 64);
    const float scale_log2 = scale * 1.4426950408889634f;
    float s[64], s_next[64];
    // The next tile's scores are computed while this tile's softmax runs (FlashAttention-3's
    // intra-warpgroup overlap): the tensor cores have work during the exponentials.
    if (kb_begin < kb_end) {
        mbar_wait(&keys_full[0], 0);
        issue_scores<T, BLOCK_Q>(s, q_tile, cw * 64, k_tiles);
        wgmma_wait_all();
    }
    for (int kb = kb_begin; kb < kb_end; ++kb) {
        const int i = kb - kb_begin, stage = i % STAGES;
        const bool more = kb + 1 < kb_end;
        if (threadIdx.x == 0 && i + STAGES - 1 < tiles) issue_tile(i + STAGES - 1);
        if (more) {
            const int next = (i + 1) % STAGES;
            mbar_wait(&keys_full[next], ((i + 1) / STAGES) & 1);
            issue_scores<T, BLOCK_Q>(s_next, q_tile, cw * 64, k_tiles + next * TILE_BYTES);
        }
        uint32_t pf[BLOCK_N / 16][4];
        rows.softmax(s, kb * BLOCK_N, range.edge(kb * BLOCK_N, keys, window), offset, keys, window, scale_log2, pf);
        mbar_wait(&values_full[stage], (i / STAGES) & 1);
        issue_values<T>(rows.o, pf, v_tiles + stage * TILE_BYTES);
        wgmma_wait_all();
        mbar_arrive(&stage_free[stage]); // this tile's keys and values are no longer read
        if (more) {
#pragma unroll
            for (int j = 0; j < 64; ++j) s[j] = s_next[j];
        }
    }
    rows.write(out_head, q_row_stride, q_len);
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

#define FLASH_PREFILL_TMA(NAME, T, STAGES)                                                                    \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                               \
        NAME(const T* q, const __grid_constant__ hopper::TensorMap k_map, const __grid_constant__ hopper::TensorMap v_map, \
             T* out, int heads, int kv_heads, int q_len, int keys, int64_t q_batch_stride, int64_t q_head_stride,      \
             int64_t q_row_stride, int window, float scale) {                                                          \
        hopper::flash_prefill_tma<T, STAGES>(q, &k_map, &v_map, out, heads, kv_heads, q_len, keys, q_batch_stride,     \
                                             q_head_stride, q_row_stride, window, scale);                              \
    }

FLASH_PREFILL_TMA(flash_prefill_bf16_d128_tma, __nv_bfloat16, 3)
FLASH_PREFILL_TMA(flash_prefill_f16_d128_tma, __half, 3)
FLASH_PREFILL_WGMMA(flash_prefill_bf16_d128_wg3, __nv_bfloat16, 3, 2)
FLASH_PREFILL_WGMMA(flash_prefill_bf16_d128_wg2, __nv_bfloat16, 2, 3)
FLASH_PREFILL_WGMMA(flash_prefill_f16_d128_wg3, __half, 3, 2)
FLASH_PREFILL_WGMMA(flash_prefill_f16_d128_wg2, __half, 2, 3)
