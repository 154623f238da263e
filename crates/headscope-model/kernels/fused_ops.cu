// Element-wise kernels for inference on CUDA (src/fused_ops.rs), each replacing candle ops that made
// extra passes over a chunk's activations: on the H100 the prefill of a 7B model spent about as long in
// such passes (transposing copies, unfused element-wise ops) as in its attention.
//
// - copy_into_cache: a chunk's keys or values, token-major [c, heads, d] as the projections produce
//   them, written straight into the head-major cache [heads, capacity, d] at position `pos` (candle
//   needs a transposing copy first, then a second copy into the cache).
// - silu_mul_*: SwiGLU's silu(gate) * up in one pass, rounded as two ops would round: the silu in
//   f32 (as PyTorch computes it for half types), rounded to the element type, then the product rounded.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Rows are moved in 16-byte units: `units` per (position, head) row. Grid-stride over every unit.
extern "C" __global__ void copy_into_cache(const uint4* __restrict__ src, uint4* __restrict__ cache, int c, int heads,
                                           int units, int64_t cache_head_stride, int64_t pos) {
    const int64_t total = (int64_t)c * heads * units;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t u = i % units;
        const int64_t row = i / units; // t * heads + h
        const int64_t h = row % heads, t = row / heads;
        cache[h * cache_head_stride + (pos + t) * units + u] = src[i];
    }
}

template <typename T> struct Elem;
template <> struct Elem<float> {
    static __device__ __forceinline__ float to(float x) { return x; }
    static __device__ __forceinline__ float from(float x) { return x; }
};
template <> struct Elem<__nv_bfloat16> {
    static __device__ __forceinline__ float to(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from(float x) { return __float2bfloat16(x); }
};
template <> struct Elem<__half> {
    static __device__ __forceinline__ float to(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from(float x) { return __float2half(x); }
};

// out = silu(gate) * up over n elements, 16 bytes at a time (n is a multiple of the vector width;
// the Rust side checks).
template <typename T>
__device__ void silu_mul(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out, int64_t n) {
    constexpr int VEC = 16 / sizeof(T);
    const int64_t vectors = n / VEC;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < vectors; i += (int64_t)gridDim.x * blockDim.x) {
        uint4 g4 = reinterpret_cast<const uint4*>(gate)[i];
        uint4 u4 = reinterpret_cast<const uint4*>(up)[i];
        uint4 o4;
        const T* g = reinterpret_cast<const T*>(&g4);
        const T* u = reinterpret_cast<const T*>(&u4);
        T* o = reinterpret_cast<T*>(&o4);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            const float x = Elem<T>::to(g[j]);
            const T s = Elem<T>::from(x / (1.0f + expf(-x)));
            o[j] = Elem<T>::from(Elem<T>::to(s) * Elem<T>::to(u[j]));
        }
        reinterpret_cast<uint4*>(out)[i] = o4;
    }
}

#define SILU_MUL(NAME, T)                                                                                     \
    extern "C" __global__ void NAME(const T* gate, const T* up, T* out, int64_t n) { silu_mul<T>(gate, up, out, n); }

SILU_MUL(silu_mul_f32, float)
SILU_MUL(silu_mul_bf16, __nv_bfloat16)
SILU_MUL(silu_mul_f16, __half)
