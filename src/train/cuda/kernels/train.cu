// Fused kernels of the CUDA training backend (CudaOps). Compiled to PTX for sm_90 by build.rs.
//
// Conventions: bf16 tensors are row-major and contiguous; statistics and gradients are f32.
// Element-wise kernels move 16 bytes (8 bf16) per thread access when the row length allows
// (every hidden/intermediate size of Qwen2 is a multiple of 8); reductions run in a fixed order
// so results do not depend on scheduling (no float atomics anywhere).
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

struct __align__(16) bf16x8 {
    __nv_bfloat162 v[4];
};

__device__ __forceinline__ void load8(const bf16 *p, float *f) {
    bf16x8 x = *reinterpret_cast<const bf16x8 *>(p);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(x.v[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

__device__ __forceinline__ void store8(bf16 *p, const float *f) {
    bf16x8 x;
#pragma unroll
    for (int i = 0; i < 4; i++) x.v[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<bf16x8 *>(p) = x;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float bfround(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// ------------------------------------------------------------------------------------ RMSNorm
// One warp per row. y = bf16(bf16(x·rstd) · w) (HF order: normalise in f32, cast, then scale).
extern "C" __global__ void rmsnorm_fwd_bf16(const bf16 *__restrict__ x, const bf16 *__restrict__ w, bf16 *__restrict__ y,
                                            float *__restrict__ rstd, int rows, int h, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const bf16 *xr = x + (size_t)row * h;
    float ss = 0.f;
    for (int c = lane * 8; c < h; c += 256) {
        float f[8];
        load8(xr + c, f);
#pragma unroll
        for (int i = 0; i < 8; i++) ss += f[i] * f[i];
    }
    ss = warp_sum(ss);
    float r = rsqrtf(ss / (float)h + eps);
    if (lane == 0) rstd[row] = r;
    bf16 *yr = y + (size_t)row * h;
    for (int c = lane * 8; c < h; c += 256) {
        float f[8], g[8];
        load8(xr + c, f);
        load8(w + c, g);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = bfround(f[i] * r) * g[i];
        store8(yr + c, f);
    }
}

// dx = rstd · (g − x̂ · mean(g · x̂)), g = dy · w, x̂ = x · rstd (all f32). One warp per row.
extern "C" __global__ void rmsnorm_bwd_dx_bf16(const bf16 *__restrict__ dy, const bf16 *__restrict__ x, const bf16 *__restrict__ w,
                                               const float *__restrict__ rstd, bf16 *__restrict__ dx, int rows, int h) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const bf16 *xr = x + (size_t)row * h;
    const bf16 *dyr = dy + (size_t)row * h;
    float r = rstd[row];
    float dot = 0.f;
    for (int c = lane * 8; c < h; c += 256) {
        float a[8], b[8], g[8];
        load8(xr + c, a);
        load8(dyr + c, b);
        load8(w + c, g);
#pragma unroll
        for (int i = 0; i < 8; i++) dot += b[i] * g[i] * a[i] * r;
    }
    float m = warp_sum(dot) / (float)h;
    bf16 *dxr = dx + (size_t)row * h;
    for (int c = lane * 8; c < h; c += 256) {
        float a[8], b[8], g[8], o[8];
        load8(xr + c, a);
        load8(dyr + c, b);
        load8(w + c, g);
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] = (b[i] * g[i] - a[i] * r * m) * r;
        store8(dxr + c, o);
    }
}

// Column sums over row chunks, in a fixed order: partial[chunk][col] = Σ_{rows of chunk} v(row, col)
// with v = dy (mode 0, bias gradients) or dy · x · rstd[row] (mode 1, RMSNorm weight gradient).
// grid = (ceil(cols / (2·blockDim)), chunks); each thread owns two adjacent columns.
extern "C" __global__ void colsum_partial_bf16(const bf16 *__restrict__ dy, const bf16 *__restrict__ x, const float *__restrict__ rstd,
                                               float *__restrict__ partial, int rows, int cols, int rows_per_chunk, int mode) {
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2;
    if (c >= cols) return;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(rows, r0 + rows_per_chunk);
    float s0 = 0.f, s1 = 0.f;
    for (int r = r0; r < r1; r++) {
        float2 d = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(dy + (size_t)r * cols + c));
        if (mode == 1) {
            float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(x + (size_t)r * cols + c));
            float rs = rstd[r];
            d.x *= a.x * rs;
            d.y *= a.y * rs;
        }
        s0 += d.x;
        s1 += d.y;
    }
    partial[(size_t)blockIdx.y * cols + c] = s0;
    partial[(size_t)blockIdx.y * cols + c + 1] = s1;
}

// out[col] = (accumulate ? out[col] : 0) + Σ_chunk partial[chunk][col], chunks in order.
extern "C" __global__ void colsum_final(const float *__restrict__ partial, float *__restrict__ out, int chunks, int cols, int accumulate) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.f;
    for (int k = 0; k < chunks; k++) s += partial[(size_t)k * cols + c];
    out[c] = accumulate ? out[c] + s : s;
}

// ------------------------------------------------------------------------------------ RoPE
// x (N, heads, D) bf16, cos/sin (N, D/2) f32; half-rotation layout. sign = +1 forward, −1 backward.
// One thread per (token, head, 8 frequency indices).
extern "C" __global__ void rope_bf16(const bf16 *__restrict__ x, const float *__restrict__ cosv, const float *__restrict__ sinv,
                                     bf16 *__restrict__ y, int n, int heads, int d, float sign) {
    int half = d / 2;
    int per_head = half / 8;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)n * heads * per_head;
    if (idx >= total) return;
    int j = (idx % per_head) * 8;
    size_t th = idx / per_head;  // token·heads + head
    size_t tok = th / heads;
    const bf16 *xr = x + th * d;
    float x1[8], x2[8], o1[8], o2[8];
    load8(xr + j, x1);
    load8(xr + half + j, x2);
    const float4 *cp = reinterpret_cast<const float4 *>(cosv + tok * half + j);
    const float4 *sp = reinterpret_cast<const float4 *>(sinv + tok * half + j);
    float4 c0 = cp[0], c1 = cp[1], s0 = sp[0], s1 = sp[1];
    float c[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
    float s[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float si = sign * s[i];
        o1[i] = x1[i] * c[i] - x2[i] * si;
        o2[i] = x2[i] * c[i] + x1[i] * si;
    }
    bf16 *yr = y + th * d;
    store8(yr + j, o1);
    store8(yr + half + j, o2);
}

// ------------------------------------------------------------------------------------ SwiGLU
__device__ __forceinline__ float sigmoidf_(float g) { return 1.f / (1.f + __expf(-g)); }

// m = silu(gate) · up, f32 math. n8 = element count / 8.
extern "C" __global__ void swiglu_fwd_bf16(const bf16 *__restrict__ gate, const bf16 *__restrict__ up, bf16 *__restrict__ out, size_t n8) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float g[8], u[8], o[8];
    load8(gate + i * 8, g);
    load8(up + i * 8, u);
#pragma unroll
    for (int k = 0; k < 8; k++) o[k] = g[k] * sigmoidf_(g[k]) * u[k];
    store8(out + i * 8, o);
}

// dgate = dy · up · σ(g)(1 + g(1 − σ(g))), dup = dy · silu(g).
extern "C" __global__ void swiglu_bwd_bf16(const bf16 *__restrict__ dy, const bf16 *__restrict__ gate, const bf16 *__restrict__ up,
                                           bf16 *__restrict__ dgate, bf16 *__restrict__ dup, size_t n8) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float d[8], g[8], u[8], dg[8], du[8];
    load8(dy + i * 8, d);
    load8(gate + i * 8, g);
    load8(up + i * 8, u);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float s = sigmoidf_(g[k]);
        dg[k] = d[k] * u[k] * s * (1.f + g[k] * (1.f - s));
        du[k] = d[k] * g[k] * s;
    }
    store8(dgate + i * 8, dg);
    store8(dup + i * 8, du);
}

// ------------------------------------------------------------------------------------ residual
// out = a + b (bf16, f32 math); the residual adds of the layer.
extern "C" __global__ void add_bf16(const bf16 *__restrict__ a, const bf16 *__restrict__ b, bf16 *__restrict__ out, size_t n8) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float x[8], y[8];
    load8(a + i * 8, x);
    load8(b + i * 8, y);
#pragma unroll
    for (int k = 0; k < 8; k++) x[k] += y[k];
    store8(out + i * 8, x);
}

// ------------------------------------------------------------------------------------ embedding
// Deterministic embedding backward: ids sorted on the host; segment u covers order[starts[u]..starts[u+1]),
// all with token id uniq[u]. grad[uniq[u]] += Σ dy[order[j]] in order. grid = unique ids.
extern "C" __global__ void embedding_bwd_bf16(const bf16 *__restrict__ dy, const uint32_t *__restrict__ order, const uint32_t *__restrict__ starts,
                                              const uint32_t *__restrict__ uniq, float *__restrict__ grad, int h) {
    int u = blockIdx.x;
    uint32_t a = starts[u], b = starts[u + 1];
    float *g = grad + (size_t)uniq[u] * h;
    for (int c = threadIdx.x * 2; c < h; c += blockDim.x * 2) {
        float s0 = 0.f, s1 = 0.f;
        for (uint32_t j = a; j < b; j++) {
            float2 d = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(dy + (size_t)order[j] * h + c));
            s0 += d.x;
            s1 += d.y;
        }
        g[c] += s0;
        g[c + 1] += s1;
    }
}

// ------------------------------------------------------------------------------------ cross-entropy
// One block per row of a bf16 logits chunk (rows, v). Online max / sum-exp in f32, then
//   loss[row] = lse − logit[target]
//   if grad: logits[row] ← bf16(scale · (softmax − onehot(target)))   (in place)
// The row is read twice (the second read mostly from L2) and written once.
template <int THREADS>
__device__ void ce_row(bf16 *__restrict__ logits, const uint32_t *__restrict__ targets, float *__restrict__ loss, int v, float scale, int grad) {
    __shared__ float sm_m[THREADS / 32], sm_s[THREADS / 32];
    int row = blockIdx.x;
    bf16 *lr = logits + (size_t)row * v;
    int tid = threadIdx.x;
    float m = -INFINITY, s = 0.f;
    int v8 = (v % 8 == 0) ? v / 8 : 0;  // 16-byte loads only when every row stays aligned
    for (int i = tid; i < v8; i += THREADS) {
        float f[8];
        load8(lr + i * 8, f);
        float mx = f[0];
#pragma unroll
        for (int k = 1; k < 8; k++) mx = fmaxf(mx, f[k]);
        if (mx > m) {
            s *= __expf(m - mx);
            m = mx;
        }
#pragma unroll
        for (int k = 0; k < 8; k++) s += __expf(f[k] - m);
    }
    for (int i = v8 * 8 + tid; i < v; i += THREADS) {
        float f = __bfloat162float(lr[i]);
        if (f > m) {
            s *= __expf(m - f);
            m = f;
        }
        s += __expf(f - m);
    }
    // combine (m, s) across the warp, then across warps
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        float mm = fmaxf(m, m2);
        s = (m == -INFINITY ? 0.f : s * __expf(m - mm)) + (m2 == -INFINITY ? 0.f : s2 * __expf(m2 - mm));
        m = mm;
    }
    if (tid % 32 == 0) {
        sm_m[tid / 32] = m;
        sm_s[tid / 32] = s;
    }
    __syncthreads();
    m = sm_m[0];
    s = sm_s[0];
    for (int w = 1; w < THREADS / 32; w++) {
        float m2 = sm_m[w], s2 = sm_s[w];
        float mm = fmaxf(m, m2);
        s = (m == -INFINITY ? 0.f : s * __expf(m - mm)) + (m2 == -INFINITY ? 0.f : s2 * __expf(m2 - mm));
        m = mm;
    }
    float lse = m + logf(s);
    uint32_t t = targets[row];
    float lt = __bfloat162float(lr[t]);
    __syncthreads();  // every thread has read lr[t] before it is overwritten
    if (tid == 0) loss[row] = lse - lt;
    if (!grad) return;
    for (int i = tid; i < v8; i += THREADS) {
        float f[8];
        load8(lr + i * 8, f);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            float p = __expf(f[k] - lse) * scale;
            f[k] = (i * 8 + k == (int)t) ? p - scale : p;
        }
        store8(lr + i * 8, f);
    }
    for (int i = v8 * 8 + tid; i < v; i += THREADS) {
        float p = __expf(__bfloat162float(lr[i]) - lse) * scale;
        lr[i] = __float2bfloat16_rn(i == (int)t ? p - scale : p);
    }
}

extern "C" __global__ void __launch_bounds__(512) ce_fwd_bwd_bf16(bf16 *logits, const uint32_t *targets, float *loss, int v, float scale, int grad) {
    ce_row<512>(logits, targets, loss, v, scale, grad);
}

// dst[rows[j]] = src[j] for j < m (rows unique), h a multiple of 8; dst pre-zeroed.
extern "C" __global__ void scatter_rows_bf16(const bf16 *__restrict__ src, const uint32_t *__restrict__ rows, bf16 *__restrict__ dst, int m, int h) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int h8 = h / 8;
    if (i >= (size_t)m * h8) return;
    size_t j = i / h8;
    int c = (i % h8) * 8;
    *reinterpret_cast<bf16x8 *>(dst + (size_t)rows[j] * h + c) = *reinterpret_cast<const bf16x8 *>(src + j * h + c);
}

// ------------------------------------------------------------------------------------ optimizer
// One multi-tensor launch over every parameter. Block b handles elements
// [blk_off[b], blk_off[b] + chunk) of tensor blk_tensor[b] (clipped to its length).
struct AdamTensor {
    float *master;
    float *m;
    float *v;
    const float *grad;
    void *param;  // bf16 or f32 copy of the master weight
    long long n;
    int decay;
    int param_f32;
};

extern "C" __global__ void adamw_multi(const AdamTensor *__restrict__ ts, const int *__restrict__ blk_tensor, const long long *__restrict__ blk_off,
                                       int chunk, float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2_sqrt,
                                       float grad_scale) {
    const AdamTensor t = ts[blk_tensor[blockIdx.x]];
    long long start = blk_off[blockIdx.x];
    long long end = min(t.n, start + chunk);
    float decay = t.decay ? (1.f - lr * wd) : 1.f;
    float step = lr / bc1;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        float g = t.grad[i] * grad_scale;
        float w = t.master[i] * decay;
        float m = t.m[i] * beta1 + g * (1.f - beta1);
        float v = t.v[i] * beta2 + g * g * (1.f - beta2);
        float denom = sqrtf(v) / bc2_sqrt + eps;
        w = w - step * (m / denom);
        t.master[i] = w;
        t.m[i] = m;
        t.v[i] = v;
        if (t.param_f32)
            reinterpret_cast<float *>(t.param)[i] = w;
        else
            reinterpret_cast<bf16 *>(t.param)[i] = __float2bfloat16_rn(w);
    }
}

// Σ x² of every tensor, per block, in f64 (same block table as adamw_multi; `grad` is read).
extern "C" __global__ void sumsq_multi(const AdamTensor *__restrict__ ts, const int *__restrict__ blk_tensor, const long long *__restrict__ blk_off,
                                       int chunk, double *__restrict__ partial) {
    __shared__ double sm[32];
    const AdamTensor t = ts[blk_tensor[blockIdx.x]];
    long long start = blk_off[blockIdx.x];
    long long end = min(t.n, start + chunk);
    double s = 0.0;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        double g = t.grad[i];
        s += g * g;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) sm[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0.0;
        for (int w = 0; w < (int)(blockDim.x / 32); w++) tot += sm[w];
        partial[blockIdx.x] = tot;
    }
}

// out[0] = Σ partial, in order (one thread: a few thousand values once per step).
extern "C" __global__ void sum_f64_serial(const double *__restrict__ partial, int n, double *__restrict__ out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += partial[i];
    out[0] = s;
}

// ------------------------------------------------------------------------------------ attention glue
// From cu_seqlens (u32, b+1) build cuDNN's ragged inputs: seq_len (b) and element offsets for
// q/o (·hq·d), k/v (·hkv·d) and the token-major stats (·hq).
extern "C" __global__ void sdpa_ragged_offsets(const uint32_t *__restrict__ cu, int b, int hq, int hkv, int d, int *__restrict__ seq_len,
                                               int *__restrict__ off_q, int *__restrict__ off_kv, int *__restrict__ off_st) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i > b) return;
    int c = (int)cu[i];
    off_q[i] = c * hq * d;
    off_kv[i] = c * hkv * d;
    off_st[i] = c * hq;
    if (i < b) seq_len[i] = (int)(cu[i + 1] - cu[i]);
}

// Stats layout change between token-major (N, hq) and (B, hq, T): dir 0 thd→bht, 1 bht→thd.
extern "C" __global__ void lse_relayout(const float *__restrict__ src, float *__restrict__ dst, int bsz, int hq, int t, int dir) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t n = (size_t)bsz * hq * t;
    if (i >= n) return;
    // i indexes (token n = row·t + pos, head)
    size_t tok = i / hq;
    int h = i % hq;
    size_t row = tok / t, pos = tok % t;
    size_t j = (row * hq + h) * t + pos;
    if (dir == 0)
        dst[j] = src[i];
    else
        dst[i] = src[j];
}
