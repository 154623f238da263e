// Helpers shared by the prefill kernels (flash_prefill.cu, flash_hopper.cu): packing two f32 values
// into a half-precision pair, cp.async copies of 16 bytes from global into shared memory, and one
// step of the online softmax over a key tile in the m16n8 accumulator layout both kernels use.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Two f32 values rounded to the half type T, packed as one 32-bit operand.
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

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `N` of this thread's committed copy groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Scores of 16 query rows over a tile of KEYS keys starting at k0, in the m16n8 accumulator layout
// (mma.sync's per warp, wgmma's per warp of a warpgroup): this thread holds rows qa and qa + 8 (as key
// indices) and, per 8-key block i, scores sc[4 i], sc[4 i + 1] of row qa and sc[4 i + 2], sc[4 i + 3]
// of row qa + 8 at keys k0 + 8 i + col, col + 1. Hides (-inf) keys past a row's own position, outside
// its window, or past the filled keys; only tiles at an edge need it.
template <int KEYS>
__device__ __forceinline__ void mask_scores(float* sc, int qa, int col, int k0, int keys, int window) {
#pragma unroll
    for (int i = 0; i < KEYS / 8; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = k0 + i * 8 + col + (e & 1);
            const int qi = e < 2 ? qa : qa + 8;
            const bool visible = key <= qi && key < keys && (window <= 0 || qi - key < window);
            if (!visible) sc[4 * i + e] = -INFINITY;
        }
    }
}

// One step of the online softmax over such a tile of (masked) scores, the output accumulator o (D
// columns) in the same layout: advances the running maxima m (log2 domain) and this thread's share of
// the row sums l, rescales o, and packs P = exp2(S * scale - max) into the register A operands of the
// 16-key steps: the accumulators of blocks 2t and 2t + 1 are exactly step t's A fragment (the
// FlashAttention-2 trick).
template <typename T, int KEYS, int D>
__device__ __forceinline__ void online_softmax_step(float* sc, float* o, float m[2], float l[2], uint32_t pf[KEYS / 16][4],
                                                    float scale_log2) {
    // New row maxima over the tile (reduced across the 4 lanes sharing a row).
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int i = 0; i < KEYS / 8; ++i) {
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
    // Past the first tiles a row's maximum seldom moves: skip the rescale when no row of the warp's
    // tile needs it (a warp-uniform branch).
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
    for (int t = 0; t < KEYS / 16; ++t) {
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
        pf[t][0] = Pack<T>::two(p[0], p[1]); // row qa, keys 16t + col
        pf[t][1] = Pack<T>::two(p[2], p[3]); // row qa + 8, keys 16t + col
        pf[t][2] = Pack<T>::two(p[4], p[5]); // row qa, keys 16t + 8 + col
        pf[t][3] = Pack<T>::two(p[6], p[7]); // row qa + 8, keys 16t + 8 + col
    }
}
