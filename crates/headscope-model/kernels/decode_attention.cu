// Attention of one decode step (one query per head) over the KV cache, in two memory-bound passes
// that read each cached key and value once: `decode_scores` writes every query head's scores and, per
// block of keys, the statistics a softmax needs (largest score, its first position, the sum of the
// exponentials under it); `decode_values` combines those into each row's maximum, normaliser and
// argmax, then weights and sums the values. Batched matrix products with a single query row per head
// reach a fraction of the memory bandwidth, and this step runs at every decode step of every test.
// Separate softmax and argmax passes over the [heads, keys] scores, even with a block per row, had
// only `heads` blocks: latency-bound, a large share of a long-context step.
//
// Rounding follows Hugging Face's eager attention in half precision, so that argmax positions agree
// with it tie for tie: the q.k product is rounded to the half type, scaled in the half type, the
// softmax runs in f32 and its weights are rounded to the half type before weighting the values
// (f32 accumulation throughout). The softmax's sum is taken per block of keys, then over the blocks,
// so it is not bitwise the sum candle's softmax takes (nor was it with a block per row): weights can
// differ from candle's in the last bits. The argmax is taken over the scores, the first position of
// the largest (torch.argmax's choice): the first position of the largest weight, unless exp rounds two
// scores that differ to the same f32 weight.
//
// Layout. Queries: contiguous [heads, D] (batch 1). Keys and values: views of the KV cache,
// [kv_heads, keys, D] with any head stride and contiguous rows. Scores and weights: f32 [heads, keys].
// Block statistics: [heads, ceil(keys / KEYS_PER_BLOCK)] (largest score and exponential sum as a
// float2, first position of the largest as an int). Output: f32 [heads, D], zeroed by the caller
// (blocks add their share atomically, so runs may differ in the last bits).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define KEYS_PER_BLOCK 128
#define MAX_GROUP 8
#define VALUE_THREADS 128
#define VALUE_TILE_KEYS 1024
#define NO_POSITION 0x7fffffff

__device__ __forceinline__ float round_to(float x, const __nv_bfloat16*) { return __bfloat162float(__float2bfloat16(x)); }
__device__ __forceinline__ float round_to(float x, const __half*) { return __half2float(__float2half(x)); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

// The warp's largest value and its first position (smallest position among equals), on every lane.
// Values are never NaN here.
__device__ __forceinline__ void warp_max_first(float& best, int& at) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffff, best, o);
        const int p = __shfl_xor_sync(0xffffffff, at, o);
        if (v > best || (v == best && p < at)) {
            best = v;
            at = p;
        }
    }
}

// The warp's sum, the same on every lane.
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffff, x, o);
    return x;
}

// Grid (ceil(keys / KEYS_PER_BLOCK), kv_heads), KEYS_PER_BLOCK threads: one key per thread, every query
// head of the key's group. For each head the block also leaves its keys' statistics, so the values
// pass needs no pass over the scores to normalise them: a NaN score never counts as the largest (as
// with fmaxf) but makes the sum NaN, as it makes candle's softmax NaN; keys scored -inf add nothing.
template <typename T, int D>
__device__ void decode_scores(const T* __restrict__ q, const T* __restrict__ k, float* __restrict__ scores,
                              float2* __restrict__ block_stats, int* __restrict__ block_first, int heads, int kv_heads,
                              int keys, int64_t kv_head_stride, float scale) {
    constexpr int WARPS = KEYS_PER_BLOCK / 32;
    __shared__ float qs[MAX_GROUP][D];
    __shared__ float warp_best[MAX_GROUP][WARPS], warp_total[MAX_GROUP][WARPS];
    __shared__ int warp_at[MAX_GROUP][WARPS];
    const int group = heads / kv_heads;
    const int kv = blockIdx.y;
    for (int i = threadIdx.x; i < group * D; i += blockDim.x) qs[i / D][i % D] = to_float(q[(int64_t)kv * group * D + i]);
    __syncthreads();
    const int key = blockIdx.x * KEYS_PER_BLOCK + threadIdx.x;
    const bool valid = key < keys;
    const T* tag = nullptr;
    float score[MAX_GROUP];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) score[g] = -INFINITY;
    if (valid) {
        const T* row = k + kv * kv_head_stride + (int64_t)key * D;
        float acc[MAX_GROUP];
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) acc[g] = 0.f;
#pragma unroll 2 // 4 makes ptxas spill
        for (int c = 0; c < D; c += 8) {
            uint4 raw = *reinterpret_cast<const uint4*>(row + c);
            const T* e = reinterpret_cast<const T*>(&raw);
            float kf[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) kf[i] = to_float(e[i]);
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) {
                if (g < group) {
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[g] += qs[g][c + i] * kf[i];
                }
            }
        }
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) {
            if (g < group) {
                score[g] = round_to(round_to(acc[g], tag) * scale, tag);
                scores[(int64_t)(kv * group + g) * keys + key] = score[g];
            }
        }
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g < group) {
            float best = score[g] >= -INFINITY ? score[g] : -INFINITY; // NaN is not the largest
            int at = valid ? key : NO_POSITION;
            warp_max_first(best, at);
            if (lane == 0) {
                warp_best[g][warp] = best;
                warp_at[g][warp] = at;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g < group) {
            float best = warp_best[g][0];
#pragma unroll
            for (int w = 1; w < WARPS; ++w) best = fmaxf(best, warp_best[g][w]);
            const float e = warp_sum(valid && score[g] != -INFINITY ? expf(score[g] - best) : 0.f);
            if (lane == 0) warp_total[g][warp] = e;
        }
    }
    __syncthreads();
    if (threadIdx.x < group) {
        const int g = threadIdx.x;
        float best = warp_best[g][0], total = warp_total[g][0];
        int at = warp_at[g][0];
#pragma unroll
        for (int w = 1; w < WARPS; ++w) {
            if (warp_best[g][w] > best) { // earlier warps hold earlier positions
                best = warp_best[g][w];
                at = warp_at[g][w];
            }
            total += warp_total[g][w];
        }
        const int64_t slot = (int64_t)(kv * group + g) * gridDim.x + blockIdx.x;
        block_stats[slot] = make_float2(best, total);
        block_first[slot] = at;
    }
}

// Grid (ceil(keys / span), kv_heads), VALUE_THREADS threads. First every block reduces the scores
// pass's block statistics of its query heads to each row's maximum and normaliser, a warp per head
// (keys / KEYS_PER_BLOCK entries, read from L2: cheaper than another launch between the passes; every
// block of a row sums them in the same order, so all get the same normaliser), and the first block of
// each KV head writes its rows' argmax. Then, VALUE_TILE_KEYS keys at a time, the block turns its
// span's scores into weights, each once (written out, and kept rounded in shared memory: not
// recomputed by the D / 8 threads that share a row), and weights the values: thread t reads
// 16-byte pieces (8 columns, column group t % (D / 8)) of every (VALUE_THREADS / (D / 8))-th key row,
// for every query head of the group; the row lanes are then summed through shared memory and added
// into `out`. Wide loads keep enough bytes in flight to stream the value cache at memory speed, and
// long spans keep the atomic additions few.
template <typename T, int D>
__device__ void decode_values(const float* __restrict__ scores, const float2* __restrict__ block_stats,
                              const int* __restrict__ block_first, const T* __restrict__ v, float* __restrict__ weights,
                              float* __restrict__ out, uint32_t* __restrict__ argmax, int heads, int kv_heads, int keys,
                              int64_t kv_head_stride, int span) {
    constexpr int GROUPS = D / 8;                 // 16-byte column groups per row
    constexpr int LANES = VALUE_THREADS / GROUPS; // rows read at once
    static_assert(LANES * D == VALUE_TILE_KEYS, "the lanes' sums and a tile of weights share the shared memory");
    // A tile's rounded weights [MAX_GROUP][VALUE_TILE_KEYS], then the row lanes' sums [LANES][MAX_GROUP][D].
    __shared__ float shared[MAX_GROUP * VALUE_TILE_KEYS];
    __shared__ float row_max[MAX_GROUP], row_inv[MAX_GROUP];
    const int group = heads / kv_heads;
    const int kv = blockIdx.y;
    const T* tag = nullptr;

    const int key_blocks = (keys + KEYS_PER_BLOCK - 1) / KEYS_PER_BLOCK;
    for (int g = threadIdx.x / 32; g < group; g += VALUE_THREADS / 32) {
        const int warp_lane = threadIdx.x % 32;
        const int64_t row = (int64_t)(kv * group + g) * key_blocks;
        float best = -INFINITY;
        int at = NO_POSITION; // the first block holding the largest score
        for (int b = warp_lane; b < key_blocks; b += 32) {
            const float x = block_stats[row + b].x;
            if (x > best) {
                best = x;
                at = b;
            }
        }
        warp_max_first(best, at);
        float total = 0.f;
        for (int b = warp_lane; b < key_blocks; b += 32) {
            const float2 x = block_stats[row + b];
            total += x.y * expf(x.x - best);
        }
        total = warp_sum(total);
        if (warp_lane == 0) {
            row_max[g] = best;
            row_inv[g] = 1.f / total;
            if (blockIdx.x == 0) argmax[kv * group + g] = at == NO_POSITION ? 0u : (uint32_t)block_first[row + at];
        }
    }

    const int cg = threadIdx.x % GROUPS, lane = threadIdx.x / GROUPS;
    float acc[MAX_GROUP][8];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
    const int begin = blockIdx.x * span, end = min(keys, begin + span);
    const T* base = v + kv * kv_head_stride + cg * 8;
    for (int first = begin; first < end; first += VALUE_TILE_KEYS) {
        const int n = min(VALUE_TILE_KEYS, end - first);
        __syncthreads(); // the row statistics are in place, the previous tile's weights used
        for (int i = threadIdx.x; i < n; i += VALUE_THREADS) {
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) {
                if (g < group) {
                    const int64_t at = (int64_t)(kv * group + g) * keys + first + i;
                    const float w = expf(scores[at] - row_max[g]) * row_inv[g];
                    weights[at] = w;
                    shared[g * VALUE_TILE_KEYS + i] = round_to(w, tag);
                }
            }
        }
        __syncthreads();
#pragma unroll 4
        for (int i = lane; i < n; i += LANES) {
            uint4 raw = *reinterpret_cast<const uint4*>(base + (int64_t)(first + i) * D);
            const T* e = reinterpret_cast<const T*>(&raw);
            float x[8];
#pragma unroll
            for (int c = 0; c < 8; ++c) x[c] = to_float(e[c]);
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) {
                if (g < group) {
                    const float p = shared[g * VALUE_TILE_KEYS + i];
#pragma unroll
                    for (int c = 0; c < 8; ++c) acc[g][c] += p * x[c];
                }
            }
        }
    }
    __syncthreads(); // the last tile's weights used
    float (*partial)[MAX_GROUP][D] = reinterpret_cast<float (*)[MAX_GROUP][D]>(shared);
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g < group) {
#pragma unroll
            for (int i = 0; i < 8; ++i) partial[lane][g][cg * 8 + i] = acc[g][i];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < group * D; i += VALUE_THREADS) {
        const int g = i / D, c = i % D;
        float sum = 0.f;
#pragma unroll
        for (int l = 0; l < LANES; ++l) sum += partial[l][g][c];
        atomicAdd(&out[(kv * group + g) * D + c], sum);
    }
}

#define DECODE(T, TN, D)                                                                                               \
    extern "C" __global__ void __launch_bounds__(KEYS_PER_BLOCK) decode_scores_##TN##_d##D(                            \
        const T* q, const T* k, float* scores, float2* block_stats, int* block_first, int heads, int kv_heads,         \
        int keys, int64_t kv_head_stride, float scale) {                                                               \
        decode_scores<T, D>(q, k, scores, block_stats, block_first, heads, kv_heads, keys, kv_head_stride, scale);     \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(VALUE_THREADS) decode_values_##TN##_d##D(                             \
        const float* scores, const float2* block_stats, const int* block_first, const T* v, float* weights,            \
        float* out, uint32_t* argmax, int heads, int kv_heads, int keys, int64_t kv_head_stride, int span) {           \
        decode_values<T, D>(scores, block_stats, block_first, v, weights, out, argmax, heads, kv_heads, keys,          \
                            kv_head_stride, span);                                                                     \
    }

DECODE(__nv_bfloat16, bf16, 64)
DECODE(__nv_bfloat16, bf16, 128)
DECODE(__half, f16, 64)
DECODE(__half, f16, 128)
