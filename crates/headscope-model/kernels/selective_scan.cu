// Mamba's selective scan for Jamba's Mamba layers (src/mamba.rs), in f32 as transformers' reference
// path computes it. One thread per (sequence, channel) walks the chunk's tokens in order, keeping the
// channel's state (at most MAX_STATE values) in registers:
//
//   dt    = softplus(dt_raw + dt_bias)                     (transformers: threshold 20)
//   s[j]  = exp(dt * A[j]) * s[j] + dt * B[t][j] * x       for j < n
//   y     = (sum_j s[j] * C[t][j] + D * x) * silu(z)
//
// The tokens of a chunk are sequential, the channels independent: 8192 threads for Jamba-v0.1, and per
// token each reads three coalesced floats and the token's B and C (the same addresses for every thread
// of a warp: one broadcast read).
//
// Layouts (row = sequence * c + t):
//   xdz    [batch, c, 3e]: x, dt_raw and z side by side per row
//   bc     [batch, c, 2n]: B then C per row
//   params [e * n + 2e + batch * e * n]: A (= -exp(A_log)), D, dt_bias, then the state before the chunk
//   out    [batch * c * e + batch * e * n]: y, then the state after the chunk

#define MAX_STATE 64

extern "C" __global__ void selective_scan_f32(const float* __restrict__ xdz, const float* __restrict__ bc,
                                              const float* __restrict__ params, float* __restrict__ out, int batch,
                                              int c, int e, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch * e) return;
    const int b = i / e, ch = i % e;
    const float* A = params;
    const float D = params[(int64_t)e * n + ch];
    const float bias = params[(int64_t)e * n + e + ch];
    const float* state_in = params + (int64_t)e * n + 2 * (int64_t)e;
    float* y = out;
    float* state_out = out + (int64_t)batch * c * e;

    float s[MAX_STATE], a[MAX_STATE];
#pragma unroll
    for (int j = 0; j < MAX_STATE; ++j) {
        s[j] = j < n ? state_in[((int64_t)b * e + ch) * n + j] : 0.0f;
        a[j] = j < n ? A[(int64_t)ch * n + j] : 0.0f;
    }
    for (int t = 0; t < c; ++t) {
        const int64_t row = (int64_t)b * c + t;
        const float x = xdz[row * 3 * e + ch];
        float dt = xdz[row * 3 * e + e + ch] + bias;
        const float z = xdz[row * 3 * e + 2 * e + ch];
        dt = dt > 20.0f ? dt : log1pf(expf(dt));
        const float* Bt = bc + row * 2 * n;
        const float* Ct = Bt + n;
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < MAX_STATE; ++j) {
            if (j < n) {
                s[j] = expf(dt * a[j]) * s[j] + dt * Bt[j] * x;
                acc += s[j] * Ct[j];
            }
        }
        y[row * e + ch] = (acc + D * x) * (z / (1.0f + expf(-z)));
    }
#pragma unroll
    for (int j = 0; j < MAX_STATE; ++j) {
        if (j < n) state_out[((int64_t)b * e + ch) * n + j] = s[j];
    }
}
