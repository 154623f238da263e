// The softmax of causal self-attention for training, forward and backward, each one pass over a row.
// candle's autograd builds the masked softmax from elementary ops (mask add, max, subtract, exp, sum,
// divide) and each of them, and each of their gradients, is a full pass over the f32 score matrix,
// which at a few thousand tokens is most of a training step. Here the forward reads the scores once
// and writes the weights once; the backward reads the weights and their gradient once and writes the
// scores' gradient once.
//
// Layout: f32 rows of `t` keys, contiguous; row r is query r % t of its sequence (the rows of a
// [batch, kv_heads, group * t, t] block of grouped queries). Query i sees keys j <= i, and with a
// sliding window (`window` > 0) only j > i - window. Hidden keys get weight 0.

#include <math_constants.h>
#include <stdint.h>

#define THREADS 256

// The block's sum (op = 0) or maximum (op = 1) of one value per thread, returned to every thread.
template <int OP>
__device__ __forceinline__ float block_reduce(float x, float* shared) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const float other = __shfl_xor_sync(0xffffffff, x, offset);
        x = OP == 0 ? x + other : fmaxf(x, other);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // `shared` may still be read by the previous reduction
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    x = lane < THREADS / 32 ? shared[lane] : (OP == 0 ? 0.f : -CUDART_INF_F);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const float other = __shfl_xor_sync(0xffffffff, x, offset);
        x = OP == 0 ? x + other : fmaxf(x, other);
    }
    return x;
}

// Grid (rows), THREADS threads. y = softmax(scale * s) over the visible keys of the row, 0 elsewhere.
extern "C" __global__ void causal_softmax_forward(const float* __restrict__ s, float* __restrict__ y, int t, int window,
                                                  float scale) {
    __shared__ float shared[THREADS / 32];
    const int64_t row = blockIdx.x;
    const int i = (int)(row % t);
    const int first = window > 0 ? max(0, i - window + 1) : 0;
    const float* in = s + row * t;
    float* out = y + row * t;
    float m = -CUDART_INF_F;
    for (int j = first + threadIdx.x; j <= i; j += THREADS) m = fmaxf(m, in[j]);
    m = block_reduce<1>(m, shared);
    float sum = 0.f;
    for (int j = first + threadIdx.x; j <= i; j += THREADS) sum += __expf(scale * (in[j] - m));
    const float inv = 1.f / block_reduce<0>(sum, shared);
    for (int j = threadIdx.x; j < t; j += THREADS) out[j] = (j >= first && j <= i) ? __expf(scale * (in[j] - m)) * inv : 0.f;
}

// Grid (rows), THREADS threads. The gradient of the scores from the weights y and their gradient dy:
// ds = scale * y * (dy - sum(y * dy)); hidden keys have y = 0 and get 0.
extern "C" __global__ void causal_softmax_backward(const float* __restrict__ y, const float* __restrict__ dy,
                                                   float* __restrict__ ds, int t, int window, float scale) {
    __shared__ float shared[THREADS / 32];
    const int64_t row = blockIdx.x;
    const int i = (int)(row % t);
    const int first = window > 0 ? max(0, i - window + 1) : 0;
    const float* w = y + row * t;
    const float* g = dy + row * t;
    float* out = ds + row * t;
    float dot = 0.f;
    for (int j = first + threadIdx.x; j <= i; j += THREADS) dot += w[j] * g[j];
    dot = block_reduce<0>(dot, shared);
    for (int j = threadIdx.x; j < t; j += THREADS) out[j] = (j >= first && j <= i) ? scale * w[j] * (g[j] - dot) : 0.f;
}
