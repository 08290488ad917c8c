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
    if (i < n) df[i] = r[i] <= 0.0f ? 0.0f : dr[i];  // NaN passes dr, as in PyTorch
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
