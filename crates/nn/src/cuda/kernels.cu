// The project's own CUDA kernels for `deeprecog-nn`'s ops (f32, NCHW, contiguous operands).
// Compiled to PTX by the crate's build script when the `cuda` feature is on; each kernel
// mirrors a CPU kernel of the crate and is tested against it on random shapes.
//
// Activation codes: 0 identity, 1 ReLU, 2 ReLU6. A clip mask keeps a gradient where
// 0 < y < ceiling (PyTorch's threshold_backward / hardtanh_backward).

#include <stdint.h>

#define GRID_STRIDE(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (size_t)blockDim.x * gridDim.x)

__device__ __forceinline__ float act_apply(float v, int act) {
  if (act == 1) return fmaxf(v, 0.0f);
  if (act == 2) return fminf(fmaxf(v, 0.0f), 6.0f);
  return v;
}

__device__ __forceinline__ float act_pass(float g, float y, int act) {
  if (act == 0) return g;
  float ceiling = act == 2 ? 6.0f : INFINITY;
  return (y > 0.0f && y < ceiling) ? g : 0.0f;
}

// Sums one double per thread over the block (blockDim.x a power of two, <= 1024); the
// result is in shared[0] for every thread afterwards. Fixed pairing: deterministic.
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  double total = shared[0];
  __syncthreads();
  return total;
}

// Element `i` of channel `ch`, counted over its (n, hw) values.
__device__ __forceinline__ size_t channel_at(size_t i, size_t ch, size_t c, size_t hw) {
  return (i / hw) * c * hw + ch * hw + i % hw;
}

// y = act(x + bias[channel]) (bias may be null).
extern "C" __global__ void bias_act_f32(const float* x, float* y, const float* bias, int act,
                                        size_t c, size_t hw, size_t n) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    if (bias) v += bias[(i / hw) % c];
    y[i] = act_apply(v, act);
  }
}

// y = act(y + bias[channel]) in place (bias may be null): a convolution's epilogue.
extern "C" __global__ void bias_act_in_place_f32(float* y, const float* bias, int act,
                                                 size_t c, size_t hw, size_t n) {
  GRID_STRIDE(i, n) {
    float v = y[i];
    if (bias) v += bias[(i / hw) % c];
    y[i] = act_apply(v, act);
  }
}

// out = g where 0 < y < ceiling, else 0.
extern "C" __global__ void clip_mask_f32(const float* g, const float* y, float* out, int act,
                                         size_t n) {
  GRID_STRIDE(i, n) { out[i] = act_pass(g[i], y[i], act); }
}

// out[ch] = sum of channel ch of an (n, c, hw) tensor; one block per channel.
extern "C" __global__ void channel_sum_f32(const float* x, float* out, size_t n, size_t c,
                                           size_t hw) {
  extern __shared__ double shared[];
  size_t ch = blockIdx.x, m = n * hw;
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < m; i += blockDim.x) acc += x[channel_at(i, ch, c, hw)];
  double total = block_sum(acc, shared);
  if (threadIdx.x == 0) out[ch] = (float)total;
}

// stats = [mean (c), biased variance (c)], two passes in double; one block per channel.
extern "C" __global__ void bn_stats_f32(const float* x, float* stats, size_t n, size_t c,
                                        size_t hw) {
  extern __shared__ double shared[];
  size_t ch = blockIdx.x, m = n * hw;
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < m; i += blockDim.x) acc += x[channel_at(i, ch, c, hw)];
  double mean = block_sum(acc, shared) / (double)m;
  float mf = (float)mean;
  acc = 0.0;
  for (size_t i = threadIdx.x; i < m; i += blockDim.x) {
    double d = (double)(x[channel_at(i, ch, c, hw)] - mf);
    acc += d * d;
  }
  double sq = block_sum(acc, shared);
  if (threadIdx.x == 0) {
    stats[ch] = mf;
    stats[c + ch] = (float)(sq / (double)m);
  }
}

// y = act((x - mean) * inv_std * weight + bias); stats (2, c), affine = [weight, bias] (2, c).
extern "C" __global__ void bn_normalize_f32(const float* x, const float* stats,
                                            const float* affine, float* y, double eps, int act,
                                            size_t c, size_t hw, size_t n) {
  GRID_STRIDE(i, n) {
    size_t ch = (i / hw) % c;
    double inv = 1.0 / sqrt((double)stats[c + ch] + eps);
    float scale = (float)(inv * (double)affine[ch]);
    float shift = affine[c + ch] - stats[ch] * scale;
    y[i] = act_apply(x[i] * scale + shift, act);
  }
}

// The BatchNorm backward kernels without host-side constants: the gradient g is already
// through the activation, stats = [mean, biased var] (2, c) as the forward pass left them.
__device__ __forceinline__ float bn_inv_std(const float* stats, size_t ch, size_t c, double eps) {
  return (float)(1.0 / sqrt((double)stats[c + ch] + eps));
}

// sums = [sum(g * xhat) (c), sum(g) (c)]; one block per channel.
extern "C" __global__ void bn_grad_sums_dev_f32(const float* x, const float* g,
                                                const float* stats, float* sums, double eps,
                                                size_t n, size_t c, size_t hw) {
  extern __shared__ double shared[];
  size_t ch = blockIdx.x, m = n * hw;
  float mean = stats[ch];
  double sg = 0.0, sgx = 0.0;
  for (size_t i = threadIdx.x; i < m; i += blockDim.x) {
    size_t at = channel_at(i, ch, c, hw);
    float gv = g[at];
    sg += gv;
    sgx += (double)(gv * (x[at] - mean));
  }
  double total_g = block_sum(sg, shared);
  double total_gx = block_sum(sgx, shared);
  if (threadIdx.x == 0) {
    sums[ch] = (float)(total_gx * (double)bn_inv_std(stats, ch, c, eps));
    sums[c + ch] = (float)total_g;
  }
}

// dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat)); consts (6, c) = [mean, var,
// weight, bias, sum(g * xhat), sum(g)], m values per channel.
extern "C" __global__ void bn_grad_input_dev_f32(const float* x, const float* g,
                                                 const float* consts, float* dx, double eps,
                                                 float m, size_t c, size_t hw, size_t n) {
  GRID_STRIDE(i, n) {
    size_t ch = (i / hw) % c;
    float inv = bn_inv_std(consts, ch, c, eps);
    float xhat = (x[i] - consts[ch]) * inv;
    float scale = consts[2 * c + ch] * inv;
    float mean_g = consts[5 * c + ch] / m, mean_gx = consts[4 * c + ch] / m;
    dx[i] = scale * (g[i] - mean_g - xhat * mean_gx);
  }
}

// y = act(x * scale[channel] + shift[channel]).
extern "C" __global__ void channel_affine_f32(const float* x, const float* scale,
                                              const float* shift, float* y, int act, size_t c,
                                              size_t hw, size_t n) {
  GRID_STRIDE(i, n) {
    size_t ch = (i / hw) % c;
    y[i] = act_apply(x[i] * scale[ch] + shift[ch], act);
  }
}

struct Pool {
  int h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

// The window of output position o along one axis, clipped to the input: [start, end).
__device__ __forceinline__ void window(int o, int k, int s, int p, int len, int* start,
                                       int* end) {
  int a = o * s - p, b = o * s + k - p;
  *start = a < 0 ? 0 : a;
  *end = b < len ? b : len;
}

// Window maxima (the first maximum; a NaN wins and is kept) and, when idx is not null, the
// flat index within the plane of each maximum.
extern "C" __global__ void max_pool_f32(const float* x, float* y, uint32_t* idx, Pool p,
                                        size_t planes) {
  size_t per = (size_t)p.oh * p.ow;
  GRID_STRIDE(i, planes * per) {
    size_t plane = i / per;
    int oy = (int)((i % per) / p.ow), ox = (int)(i % p.ow);
    int y0, y1, x0, x1;
    window(oy, p.kh, p.sh, p.ph, p.h, &y0, &y1);
    window(ox, p.kw, p.sw, p.pw, p.w, &x0, &x1);
    const float* src = x + plane * p.h * p.w;
    int best_i = y0 * p.w + x0;
    float best = src[best_i];
    for (int yy = y0; yy < y1; ++yy) {
      for (int xx = x0; xx < x1; ++xx) {
        float v = src[yy * p.w + xx];
        if ((v > best || v != v) && best == best) {
          best = v;
          best_i = yy * p.w + xx;
        }
      }
    }
    y[i] = best;
    if (idx) idx[i] = (uint32_t)best_i;
  }
}

// Output windows along one axis that cover input position i: [first, last].
__device__ __forceinline__ void covering(int i, int k, int s, int p, int out, int* first,
                                         int* last) {
  int hi = (i + p) / s;
  int lo_num = i + p - k + 1;
  int lo = lo_num <= 0 ? 0 : (lo_num + s - 1) / s;
  *first = lo;
  *last = hi < out - 1 ? hi : out - 1;
}

// The max-pool gradient: each input position gathers, in output order, the gradients of the
// windows whose maximum it is (the order the CPU scatter adds them in; no atomics).
extern "C" __global__ void max_pool_backward_f32(const float* g, const uint32_t* idx, float* dx,
                                                 Pool p, size_t planes) {
  size_t per = (size_t)p.h * p.w, oper = (size_t)p.oh * p.ow;
  GRID_STRIDE(i, planes * per) {
    size_t plane = i / per;
    int iy = (int)((i % per) / p.w), ix = (int)(i % p.w);
    uint32_t self = (uint32_t)(iy * p.w + ix);
    int oy0, oy1, ox0, ox1;
    covering(iy, p.kh, p.sh, p.ph, p.oh, &oy0, &oy1);
    covering(ix, p.kw, p.sw, p.pw, p.ow, &ox0, &ox1);
    float acc = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy) {
      for (int ox = ox0; ox <= ox1; ++ox) {
        size_t at = plane * oper + (size_t)oy * p.ow + ox;
        if (idx[at] == self) acc += g[at];
      }
    }
    dx[i] = acc;
  }
}

__device__ __forceinline__ double avg_divisor(Pool p, int include_pad, int y0, int y1, int x0,
                                              int x1) {
  if (include_pad) return (double)(p.kh * p.kw);
  int count = (y1 - y0) * (x1 - x0);
  return (double)(count > 1 ? count : 1);
}

// Window means (zero padding; divisor the kernel area with include_pad, else the real
// elements), summed in double as the CPU kernel.
extern "C" __global__ void avg_pool_f32(const float* x, float* y, Pool p, int include_pad,
                                        size_t planes) {
  size_t per = (size_t)p.oh * p.ow;
  GRID_STRIDE(i, planes * per) {
    size_t plane = i / per;
    int oy = (int)((i % per) / p.ow), ox = (int)(i % p.ow);
    int y0, y1, x0, x1;
    window(oy, p.kh, p.sh, p.ph, p.h, &y0, &y1);
    window(ox, p.kw, p.sw, p.pw, p.w, &x0, &x1);
    const float* src = x + plane * p.h * p.w;
    double sum = 0.0;
    for (int yy = y0; yy < y1; ++yy)
      for (int xx = x0; xx < x1; ++xx) sum += src[yy * p.w + xx];
    y[i] = (float)(sum / avg_divisor(p, include_pad, y0, y1, x0, x1));
  }
}

// The adjoint of avg_pool_f32: each input position gathers its windows' shares.
extern "C" __global__ void avg_pool_backward_f32(const float* g, float* dx, Pool p,
                                                 int include_pad, size_t planes) {
  size_t per = (size_t)p.h * p.w, oper = (size_t)p.oh * p.ow;
  GRID_STRIDE(i, planes * per) {
    size_t plane = i / per;
    int iy = (int)((i % per) / p.w), ix = (int)(i % p.w);
    int oy0, oy1, ox0, ox1;
    covering(iy, p.kh, p.sh, p.ph, p.oh, &oy0, &oy1);
    covering(ix, p.kw, p.sw, p.pw, p.ow, &ox0, &ox1);
    double acc = 0.0;
    for (int oy = oy0; oy <= oy1; ++oy) {
      int y0, y1;
      window(oy, p.kh, p.sh, p.ph, p.h, &y0, &y1);
      for (int ox = ox0; ox <= ox1; ++ox) {
        int x0, x1;
        window(ox, p.kw, p.sw, p.pw, p.w, &x0, &x1);
        acc += (double)g[plane * oper + (size_t)oy * p.ow + ox] /
               avg_divisor(p, include_pad, y0, y1, x0, x1);
      }
    }
    dx[i] = (float)acc;
  }
}

// u8 HWC images to normalised f32 CHW: output pixel (oy, ox) of image b reads source pixel
// (top[b] + oy, left[b] + ox), mirrored horizontally within the crop when flip[b] != 0;
// value = (v / 255 - mean[ch]) * inv_std[ch]. Source images are h x w x 3, packed.
extern "C" __global__ void preprocess_u8_f32(const uint8_t* src, float* dst,
                                             const uint32_t* top, const uint32_t* left,
                                             const uint8_t* flip, const float* norm, int h,
                                             int w, int oh, int ow, size_t batch) {
  size_t per = (size_t)3 * oh * ow;
  GRID_STRIDE(i, batch * per) {
    size_t b = i / per;
    int ch = (int)((i % per) / ((size_t)oh * ow));
    int oy = (int)((i % ((size_t)oh * ow)) / ow), ox = (int)(i % ow);
    int sx = flip[b] ? (ow - 1 - ox) : ox;
    size_t at = ((b * h + top[b] + oy) * (size_t)w + left[b] + sx) * 3 + ch;
    dst[i] = ((float)src[at] / 255.0f - norm[ch]) * norm[3 + ch];
  }
}

// One Adam / AdamW step in three in-place passes (first moment, second moment, parameter),
// with the CPU kernel's f32 operations in its order: round-to-nearest intrinsics, so nvcc
// contracts nothing into a fused multiply-add and the bits match.
struct AdamConsts {
  float decay, l2, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_bc2, eps,
      step_size;
  int use_decay, use_l2;
};

__device__ __forceinline__ float adam_grad(float g, float theta, AdamConsts k) {
  return k.use_l2 ? __fadd_rn(g, __fadd_rn(__fmul_rn(theta, k.l2), 0.0f)) : g;
}

// moment = moment * beta + (g' or g'^2) * (1 - beta), g' the gradient with the L2 term.
extern "C" __global__ void adam_moment_f32(float* moment, const float* g, const float* theta,
                                           AdamConsts k, int second, size_t n) {
  GRID_STRIDE(i, n) {
    float gv = adam_grad(g[i], theta[i], k);
    float beta = second ? k.beta2 : k.beta1;
    float rest = second ? k.one_minus_beta2 : k.one_minus_beta1;
    float term = second ? __fmul_rn(gv, gv) : gv;
    moment[i] = __fadd_rn(__fadd_rn(__fmul_rn(moment[i], beta), 0.0f),
                          __fadd_rn(__fmul_rn(term, rest), 0.0f));
  }
}

// theta = decayed theta - m / (sqrt(v) / sqrt(bc2) + eps) * lr / bc1.
extern "C" __global__ void adam_update_f32(float* theta, const float* m, const float* v,
                                           AdamConsts k, size_t n) {
  GRID_STRIDE(i, n) {
    float t = theta[i];
    if (k.use_decay) t = __fadd_rn(__fmul_rn(t, k.decay), 0.0f);
    float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v[i]), k.inv_sqrt_bc2), k.eps);
    theta[i] = __fsub_rn(t, __fadd_rn(__fmul_rn(__fdiv_rn(m[i], denom), k.step_size), 0.0f));
  }
}
