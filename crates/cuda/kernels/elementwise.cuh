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
