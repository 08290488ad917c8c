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
// diffusion = noise_d sqrt(pre). mask `[Q, P]` (may be null) freezes coordinates per weight
// set; dist2[q, i] = (w - w0)^2 after the step.
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
        if (!mask || mask[at]) {
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
// where the box clips); energy[q, i] = m^2 (0 where masked) for the thermostat; mask and dist2
// as in sgld_step. xi_t = thermostat[q].
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
        if (!mask || mask[at]) {
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

// thermostat[q] += esum[q] / count[q] - eps (the mean kinetic energy over the weight set's
// sampled coordinates).
extern "C" __global__ void sgnht_thermostat(double* thermostat, const float* esum,
                                            const double* count, double eps, long long q) {
    long long c = THREAD_INDEX;
    if (c < q && count[c] > 0.0) thermostat[c] += (double)esum[c] / count[c] - eps;
}
