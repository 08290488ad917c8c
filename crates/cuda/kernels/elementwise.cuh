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

// dst[r * dst_stride + c] = src[r * src_stride + c] for `total / width` rows of `width` values.
extern "C" __global__ void copy_rows_f32(float* dst, long long dst_stride, const float* src,
                                         long long src_stride, long long width, long long total) {
    long long i = THREAD_INDEX;
    if (i >= total) return;
    long long r = idiv(i, width);
    dst[r * dst_stride + (i - r * width)] = src[r * src_stride + (i - r * width)];
}

// dst[q, i] = src[i] for Q copies of an n-vector (chains start at the same point).
extern "C" __global__ void broadcast_f32(float* dst, const float* src, long long n, long long total) {
    long long i = THREAD_INDEX;
    if (i < total) dst[i] = src[i - idiv(i, n) * n];
}
