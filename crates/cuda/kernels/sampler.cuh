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

// drift[q, i] = nbeta g + gamma (w - w0) + wd w (0 where mask[q, i] is 0), in float64 as on the CPU;
// terms[q, i] = ((w - w0)^2, w^2) over the sampled coordinates (p parameters per chain).
extern "C" __global__ void mala_point(float* drift, float* terms, const float* w, const float* w0,
                                      const float* grad, const unsigned char* mask, long long p,
                                      double nbeta, double gamma, double wd, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    if (mask && !mask[i]) {
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
