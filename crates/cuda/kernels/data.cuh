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
