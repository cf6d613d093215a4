// collapse-lab's own CUDA kernels, for what candle does not fuse. Compiled to PTX by
// build.rs (only with the `cuda` feature) and loaded through candle's CUDA device.
// Every kernel has a CPU reference (the code it replaces) and a test comparing the two.

// θ′ ← τ·θ′ + (1 − τ)·θ for every (target, online) tensor pair in one launch (a
// multi-tensor apply). offsets: n + 1 prefix sums of the tensor lengths. The products and
// the sum are rounded separately (no FMA), as the CPU's candle ops round them.
extern "C" __global__ void ema_multi_tensor(float* const* targets, const float* const* onlines,
                                            const long long* offsets, int n, float tau,
                                            float one_minus_tau) {
    const long long total = offsets[n];
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int lo = 0, hi = n;
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (offsets[mid] <= i) lo = mid; else hi = mid;
        }
        const long long j = i - offsets[lo];
        const float t = targets[lo][j];
        targets[lo][j] = __fadd_rn(__fmul_rn(t, tau), __fmul_rn(onlines[lo][j], one_minus_tau));
    }
}

// Block-wide sum of one double per thread (blockDim.x a power of two, ≤ 1024).
__device__ double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    const double total = shared[0];
    __syncthreads();
    return total;
}

// The per-step collapse diagnostics of one batch, in one block. z0, z1: online projections
// of the two views; t0, t1: target projections; each (b, d) row-major. With rows
// l2-normalised (norm clamped at 1e-12, as `l2_normalize`), writes
//   out[0] = Σᵢ ẑ0ᵢ·t̂1ᵢ      out[1] = (Σᵢ ẑ0ᵢ)·(Σⱼ t̂1ⱼ)   (diagonal and all of ẑ0·t̂1ᵀ)
//   out[2] = Σᵢ ẑ1ᵢ·t̂0ᵢ      out[3] = (Σᵢ ẑ1ᵢ)·(Σⱼ t̂0ⱼ)
//   out[4] = mean over columns of the unbiased std of ẑ0's rows
// inv: scratch for 4·b inverse row norms. shared memory: blockDim.x doubles.
extern "C" __global__ void collapse_diagnostics(const float* z0, const float* z1,
                                                const float* t0, const float* t1, int b, int d,
                                                float* inv, double* out) {
    extern __shared__ double shared[];
    const float* mats[4] = {z0, z1, t0, t1};
    for (int r = threadIdx.x; r < 4 * b; r += blockDim.x) {
        const float* row = mats[r / b] + (long long)(r % b) * d;
        double s = 0.0;
        for (int c = 0; c < d; ++c) s += (double)row[c] * row[c];
        inv[r] = 1.0f / fmaxf(sqrtf((float)s), 1e-12f);
    }
    __syncthreads();
    const float* iz0 = inv;
    const float* iz1 = inv + b;
    const float* it0 = inv + 2 * b;
    const float* it1 = inv + 3 * b;
    double pos01 = 0.0, all01 = 0.0, pos10 = 0.0, all10 = 0.0, stds = 0.0;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        double s_z0 = 0.0, s_z1 = 0.0, s_t0 = 0.0, s_t1 = 0.0, sq_z0 = 0.0;
        for (int i = 0; i < b; ++i) {
            const long long at = (long long)i * d + c;
            const double a0 = (double)z0[at] * iz0[i];
            const double a1 = (double)z1[at] * iz1[i];
            const double b0 = (double)t0[at] * it0[i];
            const double b1 = (double)t1[at] * it1[i];
            s_z0 += a0; s_z1 += a1; s_t0 += b0; s_t1 += b1;
            pos01 += a0 * b1;
            pos10 += a1 * b0;
            sq_z0 += a0 * a0;
        }
        all01 += s_z0 * s_t1;
        all10 += s_z1 * s_t0;
        const double var = (sq_z0 - s_z0 * s_z0 / b) / (b - 1);
        stds += sqrt(var > 0.0 ? var : 0.0);
    }
    pos01 = block_sum(pos01, shared);
    all01 = block_sum(all01, shared);
    pos10 = block_sum(pos10, shared);
    all10 = block_sum(all10, shared);
    stds = block_sum(stds, shared);
    if (threadIdx.x == 0) {
        out[0] = pos01; out[1] = all01; out[2] = pos10; out[3] = all10; out[4] = stds / d;
    }
}

// LARS, fused: one block per parameter, all parameters in one launch. For parameter k
// (length len[k]): u = g + wd·w (wd = 0 where excluded); factor = η‖w‖/‖u‖ (1 where
// excluded or either norm is 0); v ← m·v + factor·u; w ← w − lr·v. v starts at zero,
// so the first step's v is factor·u, as on the CPU.
extern "C" __global__ void lars_multi_tensor(float* const* weights, const float* const* grads,
                                             float* const* velocities, const long long* lens,
                                             const int* excluded, float lr, float momentum,
                                             float weight_decay, float eta) {
    extern __shared__ double shared[];
    const int k = blockIdx.x;
    float* w = weights[k];
    const float* g = grads[k];
    float* v = velocities[k];
    const long long n = lens[k];
    const bool skip = excluded[k] != 0;
    const float wd = skip ? 0.0f : weight_decay;
    double ww = 0.0, uu = 0.0;
    if (!skip) {
        for (long long i = threadIdx.x; i < n; i += blockDim.x) {
            const float u = __fadd_rn(g[i], __fmul_rn(w[i], wd));
            ww += (double)w[i] * w[i];
            uu += (double)u * u;
        }
    }
    ww = block_sum(ww, shared);
    uu = block_sum(uu, shared);
    const double w_norm = sqrt(ww), u_norm = sqrt(uu);
    const float factor = (!skip && w_norm > 0.0 && u_norm > 0.0) ? (float)(eta * w_norm / u_norm) : 1.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const float u = __fmul_rn(__fadd_rn(g[i], __fmul_rn(w[i], wd)), factor);
        const float next = __fadd_rn(__fmul_rn(v[i], momentum), u);
        v[i] = next;
        w[i] = __fsub_rn(w[i], __fmul_rn(next, lr));
    }
}
