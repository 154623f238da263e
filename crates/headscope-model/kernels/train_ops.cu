// Fused kernels for training (src/train_ops.rs): the cross-entropy of a row of logits and its
// gradient, and the two halves of an AdamW update. Each replaces a chain of candle ops whose launches,
// not their arithmetic, dominated a step of the small lab model.
//
// All tensors are contiguous f32 (token ids u32). One block per row of logits; a grid-stride loop over
// elements for the optimiser.

#define THREADS 256

// Reduces `v` over the block; every thread gets the result. `shared` holds THREADS / 32 floats.
template <bool IS_MAX>
__device__ float block_reduce(float v, float* shared) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other = __shfl_xor_sync(0xffffffff, v, offset);
        v = IS_MAX ? fmaxf(v, other) : v + other;
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = shared[lane < THREADS / 32 ? lane : 0];
    if (lane >= THREADS / 32) v = IS_MAX ? -INFINITY : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other = __shfl_xor_sync(0xffffffff, v, offset);
        v = IS_MAX ? fmaxf(v, other) : v + other;
    }
    __syncthreads();  // `shared` is reused by the next reduction
    return v;
}

// Per row of `logits` ([rows, vocab]): out[row] = (logsumexp, logsumexp - logits[target]).
extern "C" __global__ void cross_entropy_forward(const float* logits, const unsigned int* targets, float* out, int vocab) {
    __shared__ float shared[THREADS / 32];
    const float* x = logits + (size_t)blockIdx.x * vocab;
    float max = -INFINITY;
    for (int j = threadIdx.x; j < vocab; j += THREADS) max = fmaxf(max, x[j]);
    max = block_reduce<true>(max, shared);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += THREADS) sum += expf(x[j] - max);
    sum = block_reduce<false>(sum, shared);
    if (threadIdx.x == 0) {
        float lse = max + logf(sum);
        unsigned int target = targets[blockIdx.x];
        out[2 * blockIdx.x] = lse;
        // A target outside the vocabulary makes the loss NaN (which the trainer reports), not a stray read.
        out[2 * blockIdx.x + 1] = target < (unsigned int)vocab ? lse - x[target] : NAN;
    }
}

// The gradient of the rows' negative log-likelihoods: grad[row, j] = g[row] * (softmax_j - [j == target]),
// with `lse_and_grad` = (logsumexp, g) per row.
extern "C" __global__ void cross_entropy_backward(const float* logits, const unsigned int* targets, const float* lse_and_grad,
                                                  float* grad, int vocab) {
    size_t base = (size_t)blockIdx.x * vocab;
    float lse = lse_and_grad[2 * blockIdx.x], g = lse_and_grad[2 * blockIdx.x + 1];
    unsigned int target = targets[blockIdx.x];
    for (int j = threadIdx.x; j < vocab; j += THREADS) {
        float p = expf(logits[base + j] - lse);
        grad[base + j] = g * (p - (j == (int)target ? 1.0f : 0.0f));
    }
}

// AdamW, first half: the moments, interleaved (m, v) per element, from the gradient times `scale`
// (gradient-norm clipping).
extern "C" __global__ void adamw_moments(float* moments, const float* grad, int n, float scale, float beta1, float beta2) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float g = grad[i] * scale;
        moments[2 * i] = beta1 * moments[2 * i] + (1.0f - beta1) * g;
        moments[2 * i + 1] = beta2 * moments[2 * i + 1] + (1.0f - beta2) * g * g;
    }
}

// AdamW, second half: w = w * keep - lr * (m / bc1) / (sqrt(v / bc2) + eps), where keep = 1 - lr * decay.
extern "C" __global__ void adamw_weights(float* w, const float* moments, int n, float lr, float keep, float bc1, float bc2, float eps) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float update = (moments[2 * i] / bc1) / (sqrtf(moments[2 * i + 1] / bc2) + eps);
        w[i] = w[i] * keep - lr * update;
    }
}
