// Attention of one decode step (one query per head) over the KV cache, in two memory-bound passes
// that read each cached key and value once: `decode_scores` writes every query head's scores, the
// caller takes the softmax (and the per-head argmax the retrieval score needs) over them, and
// `decode_values` sums the values under those weights. Batched matrix products with a single query
// row per head reach a fraction of the memory bandwidth, and this step runs at every decode step of
// every test.
//
// Rounding follows Hugging Face's eager attention in half precision, so that argmax positions agree
// with it tie for tie: the q.k product is rounded to the half type, scaled in the half type, the
// softmax runs in f32 and its weights are rounded to the half type before weighting the values
// (f32 accumulation throughout).
//
// Layout. Queries: contiguous [heads, D] (batch 1). Keys and values: views of the KV cache,
// [kv_heads, keys, D] with any head stride and contiguous rows. Scores and weights: f32 [heads, keys].
// Output: f32 [heads, D], zeroed by the caller (blocks add their share atomically).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define KEYS_PER_BLOCK 128
#define MAX_GROUP 8
#define VALUE_THREADS 128

__device__ __forceinline__ float round_to(float x, const __nv_bfloat16*) { return __bfloat162float(__float2bfloat16(x)); }
__device__ __forceinline__ float round_to(float x, const __half*) { return __half2float(__float2half(x)); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

// Grid (ceil(keys / KEYS_PER_BLOCK), kv_heads), KEYS_PER_BLOCK threads: one key per thread, every query
// head of the key's group.
template <typename T, int D>
__device__ void decode_scores(const T* __restrict__ q, const T* __restrict__ k, float* __restrict__ scores, int heads,
                              int kv_heads, int keys, int64_t kv_head_stride, float scale) {
    __shared__ float qs[MAX_GROUP][D];
    const int group = heads / kv_heads;
    const int kv = blockIdx.y;
    for (int i = threadIdx.x; i < group * D; i += blockDim.x) qs[i / D][i % D] = to_float(q[(int64_t)kv * group * D + i]);
    __syncthreads();
    const int key = blockIdx.x * KEYS_PER_BLOCK + threadIdx.x;
    if (key >= keys) return;
    const T* row = k + kv * kv_head_stride + (int64_t)key * D;
    float acc[MAX_GROUP];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) acc[g] = 0.f;
#pragma unroll 4
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
    const T* tag = nullptr;
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g < group) scores[(int64_t)(kv * group + g) * keys + key] = round_to(round_to(acc[g], tag) * scale, tag);
    }
}

// Grid (ceil(keys / span), kv_heads), VALUE_THREADS threads. Thread t reads 16-byte pieces (8 columns,
// column group t % (D / 8)) of every (VALUE_THREADS / (D / 8))-th key row of the block's span, for
// every query head of the group; the row lanes are then summed through shared memory and added into
// `out`. Wide loads keep enough bytes in flight to stream the value cache at memory speed, and long
// spans keep the atomic additions few.
template <typename T, int D>
__device__ void decode_values(const float* __restrict__ weights, const T* __restrict__ v, float* __restrict__ out, int heads,
                              int kv_heads, int keys, int64_t kv_head_stride, int span) {
    constexpr int GROUPS = D / 8;                 // 16-byte column groups per row
    constexpr int LANES = VALUE_THREADS / GROUPS; // rows read at once
    __shared__ float partial[LANES][MAX_GROUP][D];
    const int group = heads / kv_heads;
    const int kv = blockIdx.y;
    const int cg = threadIdx.x % GROUPS, lane = threadIdx.x / GROUPS;
    const T* tag = nullptr;
    float acc[MAX_GROUP][8];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
    const int begin = blockIdx.x * span, end = min(keys, begin + span);
    const T* base = v + kv * kv_head_stride + cg * 8;
    const float* w = weights + (int64_t)kv * group * keys;
#pragma unroll 4
    for (int j = begin + lane; j < end; j += LANES) {
        uint4 raw = *reinterpret_cast<const uint4*>(base + (int64_t)j * D);
        const T* e = reinterpret_cast<const T*>(&raw);
        float x[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = to_float(e[i]);
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) {
            if (g < group) {
                const float p = round_to(w[(int64_t)g * keys + j], tag);
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[g][i] += p * x[i];
            }
        }
    }
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

// Row reductions for [rows, keys] f32 with few rows and many keys (one row per query head of a decode
// step): one block of ROW_THREADS threads per row. candle's softmax gives each row a single warp, which
// leaves a 32-row, 32K-column decode step latency-bound (milliseconds per step).
#define ROW_THREADS 1024

// The block's maximum and its first position, on every thread.
__device__ void block_max_first(float& best, int& at) {
    __shared__ float values[32];
    __shared__ int positions[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffff, best, o);
        const int p = __shfl_xor_sync(0xffffffff, at, o);
        if (v > best || (v == best && p < at)) {
            best = v;
            at = p;
        }
    }
    if (lane == 0) {
        values[warp] = best;
        positions[warp] = at;
    }
    __syncthreads();
    best = values[0];
    at = positions[0];
    for (int w = 1; w < (int)(blockDim.x / 32); ++w) {
        if (values[w] > best || (values[w] == best && positions[w] < at)) {
            best = values[w];
            at = positions[w];
        }
    }
    __syncthreads(); // the shared slots may be reused
}

__device__ float block_sum(float x) {
    __shared__ float sums[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffff, x, o);
    if (lane == 0) sums[warp] = x;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < (int)(blockDim.x / 32); ++w) total += sums[w];
    __syncthreads();
    return total;
}

// Grid (rows), ROW_THREADS threads: dst = softmax(src) along each row (f32, as candle's softmax: exp of
// the difference to the row maximum, times the inverse of the sum).
extern "C" __global__ void __launch_bounds__(ROW_THREADS) row_softmax(const float* __restrict__ src, float* __restrict__ dst, int keys) {
    const float* x = src + (int64_t)blockIdx.x * keys;
    float* y = dst + (int64_t)blockIdx.x * keys;
    float best = -INFINITY;
    int at = 0;
    for (int j = threadIdx.x; j < keys; j += blockDim.x) best = fmaxf(best, x[j]);
    block_max_first(best, at);
    float sum = 0.f;
    for (int j = threadIdx.x; j < keys; j += blockDim.x) {
        const float e = expf(x[j] - best);
        y[j] = e;
        sum += e;
    }
    const float inv = 1.f / block_sum(sum);
    for (int j = threadIdx.x; j < keys; j += blockDim.x) y[j] *= inv;
}

// Grid (rows), ROW_THREADS threads: the first position of each row's maximum (torch.argmax's choice).
extern "C" __global__ void __launch_bounds__(ROW_THREADS) row_argmax(const float* __restrict__ src, uint32_t* __restrict__ argmax, int keys) {
    const float* x = src + (int64_t)blockIdx.x * keys;
    float best = -INFINITY;
    int at = 0x7fffffff;
    for (int j = threadIdx.x; j < keys; j += blockDim.x) {
        if (x[j] > best) {
            best = x[j];
            at = j;
        }
    }
    block_max_first(best, at);
    if (threadIdx.x == 0) argmax[blockIdx.x] = at == 0x7fffffff ? 0u : (uint32_t)at;
}

#define DECODE(T, TN, D)                                                                                               \
    extern "C" __global__ void __launch_bounds__(KEYS_PER_BLOCK) decode_scores_##TN##_d##D(                             \
        const T* q, const T* k, float* scores, int heads, int kv_heads, int keys, int64_t kv_head_stride, float scale) { \
        decode_scores<T, D>(q, k, scores, heads, kv_heads, keys, kv_head_stride, scale);                               \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(VALUE_THREADS) decode_values_##TN##_d##D(                             \
        const float* weights, const T* v, float* out, int heads, int kv_heads, int keys, int64_t kv_head_stride,        \
        int span) {                                                                                                    \
        decode_values<T, D>(weights, v, out, heads, kv_heads, keys, kv_head_stride, span);                             \
    }

DECODE(__nv_bfloat16, bf16, 64)
DECODE(__nv_bfloat16, bf16, 128)
DECODE(__half, f16, 64)
DECODE(__half, f16, 128)
