// ---------------------------------------------------------------------------------------------
// Forward.

// x[q, n, j] += Wp[j, n % T] with Wp = params[q*P + off_pos ...] of shape [C, max_t].
extern "C" __global__ void add_positions(float* x, const float* params, long long p, long long off_pos,
                                         int max_t, int t, int c, long long rows_per_chain,
                                         long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long row = idiv(i, c);
    int j = (int)(i - row * c);
    long long q = idiv(row, rows_per_chain);
    long long in_chain = row - q * rows_per_chain;
    int pos = (int)(in_chain - idiv(in_chain, t) * t);
    x[i] += params[q * p + off_pos + (long long)j * max_t + pos];
}

// Rows in registers: a thread-per-row kernel reads its row with 16-byte loads, once, instead of
// a float at a time in several passes (which relies on L1 keeping 32 rows per warp between
// passes). For widths of 8..64 floats with 16-byte aligned rows; the arithmetic and its order
// are those of the generic loops, so both give the same bits.
__device__ __forceinline__ bool aligned16(const void* p) {
    return ((unsigned long long)p & 15) == 0;
}

__device__ __forceinline__ float4 load4(const float* p) {
    return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ void store4(float* p, float a, float b, float c, float d) {
    float4 f;
    f.x = a;
    f.y = b;
    f.z = c;
    f.w = d;
    *reinterpret_cast<float4*>(p) = f;
}

template <int C>
__device__ __forceinline__ void load_row(float (&v)[C], const float* p) {
#pragma unroll
    for (int j = 0; j < C; j += 4) {
        float4 f = load4(p + j);
        v[j] = f.x;
        v[j + 1] = f.y;
        v[j + 2] = f.z;
        v[j + 3] = f.w;
    }
}

// Whether a row width has a register version (the widths the kernels are instantiated for).
__device__ __forceinline__ bool register_width(int c) {
    return c == 8 || c == 16 || c == 32 || c == 64;
}

template <int C>
__device__ __forceinline__ void layernorm_forward_row(float* o, float* mean, float* rstd,
                                                      const float* xr, const float* w,
                                                      const float* b, float eps) {
    float v[C];
    load_row<C>(v, xr);
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < C; ++j) s += v[j];
    float m = s / (float)C;
    float var = 0.0f;
#pragma unroll
    for (int j = 0; j < C; ++j) {
        float dx = v[j] - m;
        var += dx * dx;
    }
    float rs = 1.0f / sqrtf(var / (float)C + eps);
    *mean = m;
    *rstd = rs;
#pragma unroll
    for (int j = 0; j < C; j += 4) {
        store4(o + j, (v[j] - m) * rs * w[j] + b[j], (v[j + 1] - m) * rs * w[j + 1] + b[j + 1],
               (v[j + 2] - m) * rs * w[j + 2] + b[j + 2],
               (v[j + 3] - m) * rs * w[j + 3] + b[j + 3]);
    }
}

// One row per thread: out = (x - mean) * rstd * w + b; keeps mean and rstd for the backward.
extern "C" __global__ void layernorm_forward(float* out, float* mean, float* rstd, const float* x,
                                             const float* params, long long p, long long off_w,
                                             long long off_b, int c, float eps,
                                             long long rows_per_chain, long long rows) {
    long long r = THREAD_INDEX;
    if (r >= rows) return;
    const float* xr = x + r * c;
    const float* w = params + idiv(r, rows_per_chain) * p + off_w;
    const float* b = params + idiv(r, rows_per_chain) * p + off_b;
    float* o = out + r * c;
    if (register_width(c) && aligned16(xr) && aligned16(o)) {
        switch (c) {
            case 8: return layernorm_forward_row<8>(o, mean + r, rstd + r, xr, w, b, eps);
            case 16: return layernorm_forward_row<16>(o, mean + r, rstd + r, xr, w, b, eps);
            case 32: return layernorm_forward_row<32>(o, mean + r, rstd + r, xr, w, b, eps);
            default: return layernorm_forward_row<64>(o, mean + r, rstd + r, xr, w, b, eps);
        }
    }
    float s = 0.0f;
    for (int j = 0; j < c; ++j) s += xr[j];
    float m = s / (float)c;
    float v = 0.0f;
    for (int j = 0; j < c; ++j) {
        float dx = xr[j] - m;
        v += dx * dx;
    }
    float rs = 1.0f / sqrtf(v / (float)c + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (int j = 0; j < c; ++j) o[j] = (xr[j] - m) * rs * w[j] + b[j];
}

// Head-size rows of the attention kernels, 16 bytes at a time (head rows start at multiples of
// 4 floats: HS and C are multiples of 4 and buffers are 256-byte aligned). Within a warp every
// thread reads the same key or query row, so each load is one broadcast; the sums run in the
// order of a scalar loop over e.

// Thread g of an attention kernel: position `pos` (of `per` per head) of head h of sequence seq;
// sh = seq * heads + h.
__device__ __forceinline__ void split_thread(long long g, int per, int heads, long long& sh,
                                             int& pos, long long& seq, int& h) {
    sh = idiv(g, per);
    pos = (int)(g - sh * per);
    seq = idiv(sh, heads);
    h = (int)(sh - seq * heads);
}

// s + sum_e a[e] p[e]
template <int HS>
__device__ __forceinline__ float dot_row(float s, const float* a, const float* p) {
#pragma unroll
    for (int e = 0; e < HS; e += 4) {
        float4 f = load4(p + e);
        s += a[e] * f.x;
        s += a[e + 1] * f.y;
        s += a[e + 2] * f.z;
        s += a[e + 3] * f.w;
    }
    return s;
}

// acc[e] = acc[e] * keep + w * p[e]
template <int HS>
__device__ __forceinline__ void blend_row(float* acc, float keep, float w, const float* p) {
#pragma unroll
    for (int e = 0; e < HS; e += 4) {
        float4 f = load4(p + e);
        acc[e] = acc[e] * keep + w * f.x;
        acc[e + 1] = acc[e + 1] * keep + w * f.y;
        acc[e + 2] = acc[e + 2] * keep + w * f.z;
        acc[e + 3] = acc[e + 3] * keep + w * f.w;
    }
}

// acc[e] += w * p[e]
template <int HS>
__device__ __forceinline__ void add_row(float* acc, float w, const float* p) {
#pragma unroll
    for (int e = 0; e < HS; e += 4) {
        float4 f = load4(p + e);
        acc[e] += w * f.x;
        acc[e + 1] += w * f.y;
        acc[e + 2] += w * f.z;
        acc[e + 3] += w * f.w;
    }
}

// out[e] = w * v[e]
template <int HS>
__device__ __forceinline__ void store_row(float* out, float w, const float* v) {
#pragma unroll
    for (int e = 0; e < HS; e += 4) {
        store4(out + e, w * v[e], w * v[e + 1], w * v[e + 2], w * v[e + 3]);
    }
}

// Causal attention on the fused QKV layout of the reference (head h: Q at [h*3hs, h*3hs+hs) of
// each 3C-wide row, K next, V next), flash style: one (chain, sequence, head, query i) per
// thread with an online softmax, keeping only lse_i = log sum_j exp(s_ij) (in [.., T] layout)
// for the backward, which recomputes the probabilities instead of storing T x T of them. Only
// queries i = a * stride run (stride 2 in the last block, whose outputs the loss reads at the x
// positions only); out has one row per active query ([.., T / stride, C]). HS (head size) is a
// compile-time constant so that the per-thread vectors live in registers.
template <int HS>
__device__ __forceinline__ void attention_forward_impl(float* out, float* lse, const float* qkv,
                                                       int t, int stride, int heads, float scale,
                                                       long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    int ka = t / stride;  // active queries per sequence
    long long sh, seq;  // sh = (chain * B + sequence) * heads + head
    int a, h;
    split_thread(g, ka, heads, sh, a, seq, h);
    int i = a * stride;
    int c = heads * HS;
    const float* base = qkv + seq * t * 3 * c + h * 3 * HS;
    float q[HS], acc[HS];
    load_row<HS>(q, base + (long long)i * 3 * c);
#pragma unroll
    for (int e = 0; e < HS; ++e) {
        q[e] = q[e] * scale;
        acc[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j <= i; ++j) {
        const float* kv = base + (long long)j * 3 * c + HS;
        float s = dot_row<HS>(0.0f, q, kv);
        float mn = fmaxf(m, s);
        float corr = expf(m - mn), pj = expf(s - mn);
        l = l * corr + pj;
        blend_row<HS>(acc, corr, pj, kv + HS);
        m = mn;
    }
    float inv = 1.0f / l;
    float* o = out + (seq * ka + a) * c + h * HS;
#pragma unroll
    for (int e = 0; e < HS; ++e) acc[e] = acc[e] * inv;
    store_row<HS>(o, 1.0f, acc);
    lse[sh * t + i] = m + logf(l);
}

#define ATTENTION_FORWARD(HS)                                                                  \
    extern "C" __global__ void attention_forward_hs##HS(float* out, float* lse, const float* qkv, \
                                                          int t, int stride, int heads,         \
                                                          float scale, long long total) {       \
        attention_forward_impl<HS>(out, lse, qkv, t, stride, heads, scale, total);             \
    }
ATTENTION_FORWARD(4)
ATTENTION_FORWARD(8)
ATTENTION_FORWARD(16)
ATTENTION_FORWARD(32)
ATTENTION_FORWARD(64)

// out = a + b.
extern "C" __global__ void add_f32(float* out, const float* a, const float* b, long long n) {
    long long i = THREAD_INDEX;
    if (i < n) out[i] = a[i] + b[i];
}

// r = relu(r + b1) in place (per chain): the GEMM wrote the pre-activation into r; the backward
// reads the mask from r > 0 (the same as pre-activation > 0).
extern "C" __global__ void bias_relu(float* r, const float* params, long long p, long long off_b,
                                     int m, long long rows_per_chain, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long row = idiv(i, m);
    float v = r[i] + params[idiv(row, rows_per_chain) * p + off_b + (i - row * m)];
    r[i] = v <= 0.0f ? 0.0f : v;  // NaN stays NaN, as in PyTorch
}

// After the attention projection: h = x + attn (the MLP's input) and, for the reference's double
// residual x_next = x + (x + attn + mlp + b2), its MLP-free part x_next = 2x + attn + b2, which
// the second MLP GEMM then accumulates into (beta = 1). In the last block (stride 2) the rows
// are the x positions only.
extern "C" __global__ void attention_residual(float* h, float* x_next, const float* x,
                                              const float* attn, const float* params, long long p,
                                              long long off_b2, int c, int t, int stride,
                                              long long rows_per_chain, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long row = idiv(i, c);
    int j = (int)(i - row * c);
    // x has all T rows of a sequence; attn, h and x_next the active ones (every stride-th).
    int ka = t / stride;
    long long sq = idiv(row, ka);
    long long xrow = sq * t + (row - sq * ka) * stride;
    float xv = x[xrow * c + j], hv = xv + attn[i];
    h[i] = hv;
    x_next[i] = (hv + xv) + params[idiv(row, rows_per_chain) * p + off_b2 + j];
}

// Readout and loss, one (chain, sequence, example e) per thread, on the last block's rows (the
// x positions, row g): y_hat = lnf[g] . Wu[0] + bu[0]; sq_err = (y_hat - y)^2 and
// dpred[g] = scale (y_hat - y).
extern "C" __global__ void readout_loss(float* pred, float* sq_err, float* dpred,
                                        const float* lnf, const float* ys, const float* params,
                                        long long p, long long off_uw, long long off_ub, int k,
                                        int c, int nseq, float scale, long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    long long q = idiv(idiv(g, k), nseq);
    const float* uw = params + q * p + off_uw;
    const float* x = lnf + g * c;
    float acc = 0.0f;
    if (register_width(c) && aligned16(x)) {
        switch (c) {
            case 8: acc = dot_row<8>(0.0f, uw, x); break;
            case 16: acc = dot_row<16>(0.0f, uw, x); break;
            case 32: acc = dot_row<32>(0.0f, uw, x); break;
            default: acc = dot_row<64>(0.0f, uw, x); break;
        }
    } else {
        for (int j = 0; j < c; ++j) acc += x[j] * uw[j];
    }
    float yh = acc + params[q * p + off_ub];
    pred[g] = yh;
    if (ys) {
        float diff = yh - ys[g];
        sq_err[g] = diff * diff;
        dpred[g] = scale * diff;
    }
}
