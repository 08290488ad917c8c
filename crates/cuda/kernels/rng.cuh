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
