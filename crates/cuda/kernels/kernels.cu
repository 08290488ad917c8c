// Kernels of the regression transformer, Adam, SGLD and data generation for the CUDA backend.
//
// NVRTC compiles this file for the GPU at start-up; build.rs compiles the same file for the host
// (kernels/host.h supplies blockIdx, __umulhi and the rounding intrinsics) so that the emulator
// runs these very kernels in the CPU-only tests. Every kernel is one independent piece of work
// per thread (no shared memory, no barriers, no atomics), so running the threads one after
// another on the host computes exactly what the GPU computes, up to floating-point rounding.
//
// Layouts (row-major): Q weight sets ("chains"; 1 for training) of P parameters each, B
// sequences per chain, T tokens, C residual width, H heads of hs = C/H, N = B*T rows per chain.
// Activations are [Q, N, width]; a chain's parameter `off + i` is params[q*P + off + i].

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __longlong_as_double(0x7ff8000000000000ULL)
#endif

#define THREAD_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)

// Index arithmetic of the per-element kernels: a 32-bit division when both operands fit (a few
// instructions on the GPU), the 64-bit one (a long software routine there) only past 2^32.
__device__ __forceinline__ long long idiv(long long a, long long b) {
    return ((unsigned long long)(a | b) >> 32) == 0 ? (long long)((unsigned int)a / (unsigned int)b)
                                                     : a / b;
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 and the stream contract of stagewise_engine::rng (must match bit for bit).

struct Philox4 {
    unsigned int v[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(unsigned int c0, unsigned int c1, unsigned int c2,
                                                 unsigned int c3, unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        unsigned int n0 = hi1 ^ c1 ^ k0;
        unsigned int n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    Philox4 r;
    r.v[0] = c0;
    r.v[1] = c1;
    r.v[2] = c2;
    r.v[3] = c3;
    return r;
}

// Block `i` of stream (seed, tag, a, b): counter [i, b, a, tag], key [seed lo, seed hi].
__device__ __forceinline__ Philox4 stream_block(unsigned long long seed, unsigned int tag,
                                                unsigned int a, unsigned int b, unsigned int i) {
    return philox4x32_10(i, b, a, tag, (unsigned int)seed, (unsigned int)(seed >> 32));
}

__device__ __forceinline__ double unit_open(unsigned int x) {
    return ((double)x + 0.5) * (1.0 / 4294967296.0);
}

// Element `e` of the stream's standard normals (Box-Muller on word pairs (0,1) and (2,3)).
__device__ __forceinline__ double stream_normal(unsigned long long seed, unsigned int tag,
                                                unsigned int a, unsigned int b, unsigned int e) {
    Philox4 w = stream_block(seed, tag, a, b, e / 4);
    unsigned int j = e % 4;
    unsigned int x0 = j < 2 ? w.v[0] : w.v[2];
    unsigned int x1 = j < 2 ? w.v[1] : w.v[3];
    double r = sqrt(-2.0 * log(unit_open(x0)));
    double theta = 6.283185307179586 * unit_open(x1);
    return (j % 2 == 0) ? r * cos(theta) : r * sin(theta);
}

// Uniform integer in [0, n) for stream element i (multiply-shift).
__device__ __forceinline__ unsigned long long stream_below(unsigned long long seed, unsigned int tag,
                                                           unsigned int a, unsigned int b,
                                                           unsigned int i, unsigned long long n) {
    Philox4 w = stream_block(seed, tag, a, b, i / 4);
    return ((unsigned long long)w.v[i % 4] * n) >> 32;
}

// ---------------------------------------------------------------------------------------------
// Data: in-context regression sequences (stagewise_train::data::SequenceDistribution).
//
// Thread (q, s, e) writes example e of sequence s of chain q: its two token rows of
// toks[q, s, 2K, D+1] and ys[q, s, e] (each thread draws the sequence's task again: D normals,
// against the 2K(D+1) values of the whole sequence, so that a batch of a few hundred sequences
// still fills the GPU). The sequence's index in the data set is `index_base + s`, or, when pick_tag != 0, element s of the minibatch stream
// (pick_seed, pick_tag, pick_a, chain) drawn uniformly from [0, pick_n) (chain = pick_chain0 +
// q % pick_chains, or 0 when pick_shared: Q = checkpoints x chains). step_ptr, when given (the
// step counter of a captured graph), replaces `a` (ranges) or `pick_a` (minibatches).
// Task kinds: 0 Gaussian,
// 1 discrete (table tasks[M, D]), 2 singleton (tasks[0, D]).

#define MAX_TASK_SIZE 64
#define TASK_INDEX_ELEMENT 0xFFFFFFFCu

extern "C" __global__ void gen_regression(float* toks, float* ys, const double* tasks,
                                          int task_kind, unsigned long long num_tasks, int d, int k,
                                          double noise_std, unsigned long long seed,
                                          unsigned int tag, unsigned int a,
                                          unsigned int index_base, unsigned int pick_tag,
                                          unsigned long long pick_seed, unsigned int pick_a,
                                          const unsigned int* step_ptr,
                                          unsigned int pick_chain0, int pick_chains,
                                          int pick_shared, unsigned long long pick_n, int nseq,
                                          long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long qs = idiv(i, k);  // q * nseq + s
    int e = (int)(i - qs * k);
    int q = (int)idiv(qs, nseq), s = (int)(qs - (long long)q * nseq);
    unsigned int index = index_base + (unsigned int)s;
    if (step_ptr) {
        if (pick_tag != 0) {
            pick_a = *step_ptr;
        } else {
            a = *step_ptr;
        }
    }
    if (pick_tag != 0) {
        unsigned int chain = pick_shared ? 0u : pick_chain0 + (unsigned int)(q % pick_chains);
        index = (unsigned int)stream_below(pick_seed, pick_tag, pick_a, chain, (unsigned int)s,
                                           pick_n);
    }
    double w[MAX_TASK_SIZE];
    if (task_kind == 0) {
        for (int j = 0; j < d; ++j) w[j] = stream_normal(seed, tag, a, index, (unsigned int)j);
    } else {
        unsigned long long m = 0;
        if (task_kind == 1) m = stream_below(seed, tag, a, index, TASK_INDEX_ELEMENT, num_tasks);
        for (int j = 0; j < d; ++j) w[j] = tasks[m * d + j];
    }
    int d1 = d + 1;
    double dot = 0.0;
    float* xrow = toks + (qs * 2 * k + 2 * e) * d1;
    xrow[0] = 0.0f;
    for (int j = 0; j < d; ++j) {
        double x = stream_normal(seed, tag, a, index, (unsigned int)(d + e * d + j));
        xrow[1 + j] = (float)x;
        dot = __dadd_rn(dot, __dmul_rn(x, w[j]));
    }
    double z = stream_normal(seed, tag, a, index, (unsigned int)(d + k * d + e));
    float yv = (float)__dadd_rn(dot, __dmul_rn(noise_std, z));
    float* yrow = xrow + d1;
    yrow[0] = yv;
    for (int j = 1; j < d1; ++j) yrow[j] = 0.0f;
    ys[qs * k + e] = yv;
}

// ---------------------------------------------------------------------------------------------
// Elementwise helpers.

extern "C" __global__ void fill_f32(float* x, float value, long long n) {
    long long i = THREAD_INDEX;
    if (i < n) x[i] = value;
}

extern "C" __global__ void copy_f32(float* dst, const float* src, long long n) {
    long long i = THREAD_INDEX;
    if (i < n) dst[i] = src[i];
}

// dst[q, i] = src[i] for Q copies of an n-vector (chains start at the same point).
extern "C" __global__ void broadcast_f32(float* dst, const float* src, long long n, long long total) {
    long long i = THREAD_INDEX;
    if (i < total) dst[i] = src[i - idiv(i, n) * n];
}

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
    r[i] = v > 0.0f ? v : 0.0f;
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

// ---------------------------------------------------------------------------------------------
// Backward.

// dlnf[row, j] = dpred_row[row] * Wu[0, j].
extern "C" __global__ void readout_backward(float* dlnf, const float* dpred_row, const float* params,
                                            long long p, long long off_uw, int c,
                                            long long rows_per_chain, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long row = idiv(i, c);
    dlnf[i] = dpred_row[row] * params[idiv(row, rows_per_chain) * p + off_uw + (i - row * c)];
}

template <int C>
__device__ __forceinline__ void layernorm_backward_row(float* o, float* dyxhat, const float* dyr,
                                                       const float* xr, float m, float rs,
                                                       const float* w, int mode, const float* dxn,
                                                       float* dattn) {
    float xh[C], dy[C];
    load_row<C>(xh, xr);
    load_row<C>(dy, dyr);
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int j = 0; j < C; ++j) {
        xh[j] = (xh[j] - m) * rs;
        float dxh = dy[j] * w[j];
        s1 += dxh;
        s2 += dxh * xh[j];
    }
#pragma unroll
    for (int j = 0; j < C; j += 4) {
        store4(dyxhat + j, dy[j] * xh[j], dy[j + 1] * xh[j + 1], dy[j + 2] * xh[j + 2],
               dy[j + 3] * xh[j + 3]);
    }
    s1 /= (float)C;
    s2 /= (float)C;
#pragma unroll
    for (int j = 0; j < C; j += 4) {
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] = rs * (dy[j + e] * w[j + e] - s1 - xh[j + e] * s2);
        if (mode == 0) {
            store4(o + j, v[0], v[1], v[2], v[3]);
        } else if (mode == 1) {
            float4 a = load4(o + j);
            store4(o + j, a.x + v[0], a.y + v[1], a.z + v[2], a.w + v[3]);
        } else {
            float4 d = load4(dxn + j);
            store4(dattn + j, d.x + v[0], d.y + v[1], d.z + v[2], d.w + v[3]);
            store4(o + j, d.x + d.x + v[0], d.y + d.y + v[1], d.z + d.z + v[2],
                   d.w + d.w + v[3]);
        }
    }
}

// One row per thread: v = LN'(dy), and dyxhat = dy * xhat for the weight gradient (the column
// sums over rows run as GEMMs with a ones vector). mode 0: dx = v; 1: dx += v; 2 (the MLP's
// LayerNorm, through x_next = 2x + attn + mlp with h = x + attn): dattn = dxn + v and
// dx = 2 dxn + v.
extern "C" __global__ void layernorm_backward(float* dx, float* dyxhat, const float* dy,
                                              const float* x, const float* mean, const float* rstd,
                                              const float* params, long long p, long long off_w,
                                              int c, int mode, const float* dxn, float* dattn,
                                              long long rows_per_chain, long long rows) {
    long long r = THREAD_INDEX;
    if (r >= rows) return;
    const float* w = params + idiv(r, rows_per_chain) * p + off_w;
    const float* dyr = dy + r * c;
    const float* xr = x + r * c;
    float m = mean[r], rs = rstd[r];
    float* o = dx + r * c;
    float* dh = dyxhat + r * c;
    if (register_width(c) && aligned16(dyr) && aligned16(xr) && aligned16(o) && aligned16(dh) &&
        (mode != 2 || (aligned16(dxn + r * c) && aligned16(dattn + r * c)))) {
        const float* dn = mode == 2 ? dxn + r * c : dxn;
        float* da = mode == 2 ? dattn + r * c : dattn;
        switch (c) {
            case 8: return layernorm_backward_row<8>(o, dh, dyr, xr, m, rs, w, mode, dn, da);
            case 16: return layernorm_backward_row<16>(o, dh, dyr, xr, m, rs, w, mode, dn, da);
            case 32: return layernorm_backward_row<32>(o, dh, dyr, xr, m, rs, w, mode, dn, da);
            default: return layernorm_backward_row<64>(o, dh, dyr, xr, m, rs, w, mode, dn, da);
        }
    }
    float s1 = 0.0f, s2 = 0.0f;
    for (int j = 0; j < c; ++j) {
        float xh = (xr[j] - m) * rs;
        float dxh = dyr[j] * w[j];
        s1 += dxh;
        s2 += dxh * xh;
        dh[j] = dyr[j] * xh;
    }
    s1 /= (float)c;
    s2 /= (float)c;
    for (int j = 0; j < c; ++j) {
        float xh = (xr[j] - m) * rs;
        float v = rs * (dyr[j] * w[j] - s1 - xh * s2);
        if (mode == 0) {
            o[j] = v;
        } else if (mode == 1) {
            o[j] += v;
        } else {
            float d = dxn[r * c + j];
            dattn[r * c + j] = d + v;
            o[j] = d + d + v;
        }
    }
}

// df = dr where the ReLU's output r was positive.
extern "C" __global__ void relu_backward(float* df, const float* dr, const float* r, long long n) {
    long long i = THREAD_INDEX;
    if (i < n) df[i] = r[i] > 0.0f ? dr[i] : 0.0f;
}

// Through x_next = 2x + attn + mlp with h = x + attn: dattn = dxn + dh, dx = 2 dxn + dh.
extern "C" __global__ void residual_backward(float* dattn, float* dx, const float* dxn,
                                             const float* dh, long long n) {
    long long i = THREAD_INDEX;
    if (i >= n) return;
    dattn[i] = dxn[i] + dh[i];
    dx[i] = dxn[i] + dxn[i] + dh[i];
}

// Attention backward, query side: one (chain, sequence, head, query i) per thread (dout and out
// have rows for the active queries only, as the forward wrote them). With
// p_ij = exp(s_ij - lse_i), dp_ij = dout_i . v_j and D_i = dout_i . out_i (= sum_j p_ij dp_ij),
// ds_ij = p_ij (dp_ij - D_i) and dq_i = scale sum_j ds_ij k_j. Keeps D_i for the key side.
template <int HS>
__device__ __forceinline__ void attention_backward_q_impl(float* dqkv, float* dsum,
                                                          const float* dout, const float* out,
                                                          const float* qkv, const float* lse,
                                                          int t, int stride, int heads,
                                                          float scale, long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    long long sh, seq;
    int i, h;
    split_thread(g, t, heads, sh, i, seq, h);
    int c = heads * HS;
    const float* base = qkv + seq * t * 3 * c + h * 3 * HS;
    if (i % stride != 0) {  // an inactive query: no gradient
        float* dqr = dqkv + (seq * t + i) * 3 * c + h * 3 * HS;
#pragma unroll
        for (int e = 0; e < HS; ++e) dqr[e] = 0.0f;
        return;
    }
    long long row = (seq * (t / stride) + i / stride) * c + h * HS;
    float q[HS], d[HS], dq[HS];
    load_row<HS>(q, base + (long long)i * 3 * c);
    load_row<HS>(d, dout + row);
    float di = dot_row<HS>(0.0f, d, out + row);
#pragma unroll
    for (int e = 0; e < HS; ++e) {
        q[e] = q[e] * scale;
        dq[e] = 0.0f;
    }
    float li = lse[g];
    for (int j = 0; j <= i; ++j) {
        const float* kv = base + (long long)j * 3 * c + HS;
        float s = dot_row<HS>(0.0f, q, kv);
        float dp = dot_row<HS>(0.0f, d, kv + HS);
        float ds = expf(s - li) * (dp - di);
        add_row<HS>(dq, ds, kv);
    }
    float* dqr = dqkv + (seq * t + i) * 3 * c + h * 3 * HS;
    store_row<HS>(dqr, scale, dq);
    dsum[g] = di;
}

// Attention backward, key side: one (chain, sequence, head, key j) per thread, after the query
// side: dk_j = scale sum_{i>=j} ds_ij q_i and dv_j = sum_{i>=j} p_ij dout_i.
template <int HS>
__device__ __forceinline__ void attention_backward_kv_impl(float* dqkv, const float* dsum,
                                                           const float* dout, const float* qkv,
                                                           const float* lse, int t, int stride,
                                                           int heads, float scale,
                                                           long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    long long sh, seq;
    int j, h;
    split_thread(g, t, heads, sh, j, seq, h);
    int c = heads * HS;
    const float* base = qkv + seq * t * 3 * c + h * 3 * HS;
    float k[HS], v[HS], dk[HS], dv[HS];
    load_row<HS>(k, base + (long long)j * 3 * c + HS);
    load_row<HS>(v, base + (long long)j * 3 * c + 2 * HS);
#pragma unroll
    for (int e = 0; e < HS; ++e) {
        k[e] = k[e] * scale;
        dk[e] = 0.0f;
        dv[e] = 0.0f;
    }
    // Every thread walks the same queries (skipping those before its key), so at each step a
    // warp's threads (the keys of one sequence and head) read the same query row: one broadcast
    // load instead of 32 rows. The warp runs t / stride steps either way.
    for (int i = 0; i < t; i += stride) {
        if (i < j) continue;
        const float* qi = base + (long long)i * 3 * c;
        const float* di = dout + (seq * (t / stride) + i / stride) * c + h * HS;
        float s = dot_row<HS>(0.0f, k, qi);
        float dp = dot_row<HS>(0.0f, v, di);
        long long gi = sh * t + i;
        float pij = expf(s - lse[gi]);
        float ds = pij * (dp - dsum[gi]);
        add_row<HS>(dk, ds, qi);
        add_row<HS>(dv, pij, di);
    }
    float* dkr = dqkv + (seq * t + j) * 3 * c + h * 3 * HS + HS;
    store_row<HS>(dkr, scale, dk);
    store_row<HS>(dkr + HS, 1.0f, dv);
}

#define ATTENTION_BACKWARD(HS)                                                                   \
    extern "C" __global__ void attention_backward_q_hs##HS(                                      \
        float* dqkv, float* dsum, const float* dout, const float* out, const float* qkv,         \
        const float* lse, int t, int stride, int heads, float scale, long long total) {          \
        attention_backward_q_impl<HS>(dqkv, dsum, dout, out, qkv, lse, t, stride, heads, scale,  \
                                      total);                                                    \
    }                                                                                            \
    extern "C" __global__ void attention_backward_kv_hs##HS(                                     \
        float* dqkv, const float* dsum, const float* dout, const float* qkv, const float* lse,   \
        int t, int stride, int heads, float scale, long long total) {                            \
        attention_backward_kv_impl<HS>(dqkv, dsum, dout, qkv, lse, t, stride, heads, scale,      \
                                       total);                                                   \
    }
ATTENTION_BACKWARD(4)
ATTENTION_BACKWARD(8)
ATTENTION_BACKWARD(16)
ATTENTION_BACKWARD(32)
ATTENTION_BACKWARD(64)

// grad[q, off_pos + j*max_t + pos] += s[q, pos, j]: the positional table's gradient from the
// per-position sums of dx0 over sequences.
extern "C" __global__ void positions_backward(float* grad, const float* s, long long p,
                                              long long off_pos, int max_t, int t, int c,
                                              long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long q = idiv(i, (long long)t * c);
    int rem = (int)(i - q * t * c);
    int pos = rem / c, j = rem % c;
    grad[q * p + off_pos + (long long)j * max_t + pos] += s[i];
}

// full[seq, i, :] = compact[seq, i / stride, :] where i % stride == 0, else 0: the last block's
// residual gradient back on all T rows.
extern "C" __global__ void scatter_rows(float* full, const float* compact, int t, int stride,
                                        int c, long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    long long row = idiv(g, c);
    long long seq = idiv(row, t);
    int i = (int)(row - seq * t), j = (int)(g - row * c);
    full[g] = i % stride == 0 ? compact[(seq * (t / stride) + i / stride) * c + j] : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Optimisers. Written with explicit rounding intrinsics so that no multiply-add is contracted:
// the update is bitwise the CPU's for the same gradient.

// torch.optim.Adam (L2 weight decay when decay != 0); step_size = lr / bc1. With `consts`
// (a captured graph), step_size and bc2_sqrt are consts[2 s], consts[2 s + 1] for
// s = counter[0] - counter[1] (the step within the window the host filled in).
extern "C" __global__ void adam_step(float* params, const float* grad, float* m, float* v,
                                     float b1, float b2, float one_b1, float one_b2,
                                     float step_size, float bc2_sqrt, const float* consts,
                                     const unsigned int* counter, float eps, float wd, int decay,
                                     long long n) {
    long long i = THREAD_INDEX;
    if (i >= n) return;
    if (consts) {
        unsigned int s = counter[0] - counter[1];
        step_size = consts[2 * s];
        bc2_sqrt = consts[2 * s + 1];
    }
    float p = params[i];
    float g = decay ? __fadd_rn(grad[i], __fmul_rn(wd, p)) : grad[i];
    float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(one_b1, g));
    float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(one_b2, g), g));
    m[i] = mi;
    v[i] = vi;
    float denom = __fadd_rn(__fdiv_rn(sqrtf(vi), bc2_sqrt), eps);
    params[i] = __fsub_rn(p, __fmul_rn(step_size, __fdiv_rn(mi, denom)));
}

// One SGLD step for Q weight sets (checkpoints x chains, each with its centre w0[q]), four
// coordinates per thread: one Philox block of the chain's noise stream (seed, SGLD_NOISE, step,
// chain0 + q % chains; step read from step_ptr when given).
// w <- clamp(w - drift (nbeta g + wd w + gamma (w - w0)) + diffusion xi) with drift = half and
// diffusion = noise, or, with rms_v (devinterp's RMSprop-SGLD, in float64 as on the CPU):
// V <- alpha V + (1 - alpha) g^2, pre = 1 / (sqrt(V) + rms_eps), drift = half_d pre,
// diffusion = noise_d sqrt(pre). mask (may be null) freezes coordinates;
// dist2[q, i] = (w - w0)^2 after the step.
extern "C" __global__ void sgld_step(float* w, const float* w0, const float* grad,
                                     const unsigned char* mask, float* dist2, long long p,
                                     unsigned long long seed, unsigned int noise_tag,
                                     unsigned int step, const unsigned int* step_ptr,
                                     unsigned int chain0, int chains, float half,
                                     float noise, float nbeta, float gamma, float wd, float box,
                                     int use_box, float* rms_v, double alpha,
                                     double one_minus_alpha, double rms_eps, double half_d,
                                     double noise_d, long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    if (step_ptr) step = *step_ptr;
    long long blocks = (p + 3) / 4;
    long long q = idiv(g, blocks);
    unsigned int blk = (unsigned int)(g - q * blocks);
    Philox4 r = stream_block(seed, noise_tag, step, chain0 + (unsigned int)(q - idiv(q, chains) * chains), blk);
    double rad0 = sqrt(-2.0 * log(unit_open(r.v[0])));
    double th0 = 6.283185307179586 * unit_open(r.v[1]);
    double rad1 = sqrt(-2.0 * log(unit_open(r.v[2])));
    double th1 = 6.283185307179586 * unit_open(r.v[3]);
    double z[4] = {rad0 * cos(th0), rad0 * sin(th0), rad1 * cos(th1), rad1 * sin(th1)};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        long long i = (long long)blk * 4 + e;
        if (i >= p) continue;
        long long at = q * p + i;
        float wi = w[at], ci = w0[at];
        if (!mask || mask[i]) {
            float drift = half, diffusion = noise;
            if (rms_v) {
                double gd = (double)grad[at];
                double vv = __dadd_rn(__dmul_rn(alpha, (double)rms_v[at]),
                                      __dmul_rn(__dmul_rn(one_minus_alpha, gd), gd));
                rms_v[at] = (float)vv;
                double pre = 1.0 / __dadd_rn(sqrt(vv), rms_eps);
                drift = (float)__dmul_rn(half_d, pre);
                diffusion = (float)__dmul_rn(noise_d, sqrt(pre));
            }
            float f = __fmul_rn(nbeta, grad[at]);
            if (wd != 0.0f) f = __fadd_rn(f, __fmul_rn(wd, wi));
            if (gamma != 0.0f) f = __fadd_rn(f, __fmul_rn(gamma, __fsub_rn(wi, ci)));
            float v = __fadd_rn(__fsub_rn(wi, __fmul_rn(drift, f)),
                                __fmul_rn(diffusion, (float)z[e]));
            if (use_box) {
                float lo = __fsub_rn(ci, box), hi = __fadd_rn(ci, box);
                v = v < lo ? lo : (v > hi ? hi : v);
            }
            wi = v;
            w[at] = v;
        }
        float d = __fsub_rn(wi, ci);
        dist2[at] = __fmul_rn(d, d);
    }
}

// The four standard normals of block blk of a chain's noise stream (Box-Muller, as the CPU).
__device__ __forceinline__ void noise_block(double z[4], unsigned long long seed, unsigned int tag,
                                            unsigned int step, unsigned int chain,
                                            unsigned int blk) {
    Philox4 r = stream_block(seed, tag, step, chain, blk);
    double rad0 = sqrt(-2.0 * log(unit_open(r.v[0])));
    double th0 = 6.283185307179586 * unit_open(r.v[1]);
    double rad1 = sqrt(-2.0 * log(unit_open(r.v[2])));
    double th1 = 6.283185307179586 * unit_open(r.v[3]);
    z[0] = rad0 * cos(th0);
    z[1] = rad0 * sin(th0);
    z[2] = rad1 * cos(th1);
    z[3] = rad1 * sin(th1);
}

// SGNHT's initial momentum: mom = scale * N(0, 1) from the chain's noise stream at step
// 0xFFFFFFFF (scale = sqrt(eps)), four coordinates per thread.
extern "C" __global__ void sgnht_init(float* mom, long long p, unsigned long long seed,
                                      unsigned int noise_tag, unsigned int chain0, int chains,
                                      float scale, long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    long long blocks = (p + 3) / 4;
    long long q = idiv(g, blocks);
    unsigned int blk = (unsigned int)(g - q * blocks);
    double z[4];
    noise_block(z, seed, noise_tag, 0xFFFFFFFFu, chain0 + (unsigned int)(q - idiv(q, chains) * chains), blk);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        long long i = (long long)blk * 4 + e;
        if (i < p) mom[q * p + i] = __fmul_rn(scale, (float)z[e]);
    }
}

// One SGNHT step (devinterp's legacy update, stagewise_sampling::sgld): for sampled coordinates
// m <- m - lr F; m <- m - xi_t m; m <- m + noise xi; w <- clamp(w + m) (the momentum reflects
// where the box clips); energy[q, i] = m^2 (0 where masked) for the thermostat; dist2 as in
// sgld_step. xi_t = thermostat[q].
extern "C" __global__ void sgnht_step(float* w, const float* w0, const float* grad,
                                      const unsigned char* mask, float* dist2, float* mom,
                                      float* energy, const double* thermostat, long long p,
                                      unsigned long long seed, unsigned int noise_tag,
                                      unsigned int step, const unsigned int* step_ptr,
                                      unsigned int chain0, int chains, float lr, float noise,
                                      float nbeta, float gamma, float wd, float box, int use_box,
                                      long long total) {
    long long g = THREAD_INDEX;
    if (g >= total) return;
    if (step_ptr) step = *step_ptr;
    long long blocks = (p + 3) / 4;
    long long q = idiv(g, blocks);
    unsigned int blk = (unsigned int)(g - q * blocks);
    double z[4];
    noise_block(z, seed, noise_tag, step, chain0 + (unsigned int)(q - idiv(q, chains) * chains), blk);
    float friction = (float)thermostat[q];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        long long i = (long long)blk * 4 + e;
        if (i >= p) continue;
        long long at = q * p + i;
        float wi = w[at], ci = w0[at];
        float en = 0.0f;
        if (!mask || mask[i]) {
            float f = __fmul_rn(nbeta, grad[at]);
            if (wd != 0.0f) f = __fadd_rn(f, __fmul_rn(wd, wi));
            if (gamma != 0.0f) f = __fadd_rn(f, __fmul_rn(gamma, __fsub_rn(wi, ci)));
            float m = mom[at];
            m = __fsub_rn(m, __fmul_rn(lr, f));
            m = __fsub_rn(m, __fmul_rn(friction, m));
            m = __fadd_rn(m, __fmul_rn(noise, (float)z[e]));
            en = (float)((double)m * (double)m);
            float v = __fadd_rn(wi, m);
            int hit = 0;
            if (use_box) {
                float lo = __fsub_rn(ci, box), hi = __fadd_rn(ci, box);
                if (v < lo) {
                    v = lo;
                    hit = 1;
                } else if (v > hi) {
                    v = hi;
                    hit = 1;
                }
            }
            wi = v;
            w[at] = v;
            mom[at] = hit ? -m : m;
        }
        energy[at] = en;
        float d = __fsub_rn(wi, ci);
        dist2[at] = __fmul_rn(d, d);
    }
}

// thermostat[q] += esum[q] / count - eps (the mean kinetic energy over the sampled coordinates).
extern "C" __global__ void sgnht_thermostat(double* thermostat, const float* esum, double count,
                                            double eps, long long q) {
    long long c = THREAD_INDEX;
    if (c < q && count > 0.0) thermostat[c] += (double)esum[c] / count - eps;
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping of a sampler step, driven by a step counter in device memory so that one captured
// graph serves every step.

// If step = *counter is a draw (burnin + d * every, d < draws), copies the step's per-token losses
// and distances into row d of the histories.
extern "C" __global__ void record_draw(float* hist_loss, float* hist_dist, const float* tok_loss,
                                       const float* dist, long long n_loss, long long n_dist,
                                       const unsigned int* counter, int burnin, int every,
                                       int draws) {
    long long i = THREAD_INDEX;
    if (i >= n_loss + n_dist) return;
    int step = (int)*counter;
    if (step < burnin || (step - burnin) % every != 0) return;
    long long d = (step - burnin) / every;
    if (d >= draws) return;
    if (i < n_loss) {
        hist_loss[d * n_loss + i] = tok_loss[i];
    } else {
        hist_dist[d * n_dist + (i - n_loss)] = dist[i - n_loss];
    }
}

// ---------------------------------------------------------------------------------------------
// MALA acceptance of the SGLD transitions (stagewise_sampling::mala), per chain: the potential
// U(w) = nbeta L + gamma/2 |w - w0|^2 + wd/2 |w|^2 and drift grad U at each step's point, and
// min(1, exp(U(a) - U(b) + log q(a|b) - log q(b|a))) for the move from the previous point a.

// drift[q, i] = nbeta g + gamma (w - w0) + wd w (0 where masked), in float64 as on the CPU;
// terms[q, i] = ((w - w0)^2, w^2) over the sampled coordinates (p parameters per chain).
extern "C" __global__ void mala_point(float* drift, float* terms, const float* w, const float* w0,
                                      const float* grad, const unsigned char* mask, long long p,
                                      double nbeta, double gamma, double wd, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    if (mask && !mask[i - idiv(i, p) * p]) {
        drift[i] = 0.0f;
        terms[2 * i] = 0.0f;
        terms[2 * i + 1] = 0.0f;
        return;
    }
    double wi = (double)w[i], d = (double)(w[i] - w0[i]);
    drift[i] = (float)(nbeta * (double)grad[i] + gamma * d + wd * wi);
    terms[2 * i] = (float)(d * d);
    terms[2 * i + 1] = (float)(wi * wi);
}

// u[q] = nbeta * mean_k(tok_loss[q, k]) + gamma/2 sums[q, 0] + wd/2 sums[q, 1].
extern "C" __global__ void mala_energy(double* u, const float* sums, const float* tok_loss, int k,
                                       double nbeta, double gamma, double wd, long long q) {
    long long c = THREAD_INDEX;
    if (c >= q) return;
    double loss = 0.0;
    for (int e = 0; e < k; ++e) loss += (double)tok_loss[c * k + e];
    loss /= (double)k;
    u[c] = nbeta * loss + 0.5 * gamma * (double)sums[2 * c] + 0.5 * wd * (double)sums[2 * c + 1];
}

// terms[q, i] = (f^2, r^2) for the move a -> b: step = w_b - w_a, f = step + half drift_a,
// r = -step + half drift_b.
extern "C" __global__ void mala_transition(float* terms, const float* wa, const float* wb,
                                           const float* drift_a, const float* drift_b,
                                           double half, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    double step = (double)(wb[i] - wa[i]);
    double f = step + half * (double)drift_a[i];
    double r = -step + half * (double)drift_b[i];
    terms[2 * i] = (float)(f * f);
    terms[2 * i + 1] = (float)(r * r);
}

// The acceptance of the move into this step's point, recorded at this step's draw (NaN at step
// 0, which has no previous point): min(1, exp(u_a - u_b - back / var2 + fwd / var2)).
extern "C" __global__ void mala_accept(double* hist, const float* sums, const double* u_a,
                                       const double* u_b, double var2,
                                       const unsigned int* counter, int burnin, int every,
                                       int draws, long long q) {
    long long c = THREAD_INDEX;
    if (c >= q) return;
    int step = (int)*counter;
    if (step < burnin || (step - burnin) % every != 0) return;
    long long d = (step - burnin) / every;
    if (d >= draws) return;
    double a = NAN;
    if (step > 0) {
        double lr = u_a[c] - u_b[c] - (double)sums[2 * c + 1] / var2 + (double)sums[2 * c] / var2;
        a = lr != lr ? lr : fmin(exp(lr), 1.0);
    }
    hist[d * q + c] = a;
}

extern "C" __global__ void copy_f64(double* dst, const double* src, long long n) {
    long long i = THREAD_INDEX;
    if (i < n) dst[i] = src[i];
}

// hist[s, :] = src for s = counter[0] - counter[1] (the step within the host's window).
extern "C" __global__ void record_window(float* hist, const float* src, long long n,
                                         const unsigned int* counter) {
    long long i = THREAD_INDEX;
    if (i >= n) return;
    long long s = counter[0] - counter[1];
    hist[s * n + i] = src[i];
}

extern "C" __global__ void advance_counter(unsigned int* counter, long long n) {
    if (THREAD_INDEX < n) counter[THREAD_INDEX] += 1u;
}
