/* The pointwise half of one recurrent step, fused into one pass over memory: see rnnlm/fused.py.
 *
 * Each function does, for one time step of a batch of B rows, the elementwise work that follows (forward) or precedes
 * (backward) the step's matrix product, which stays in PyTorch (MKL / oneDNN). Unfused, that work is 5-12 PyTorch ops
 * per step, each a kernel launch and a trip through memory; here it is one loop that the compiler vectorises.
 *
 * All arrays are float32 and row-major with unit stride inside a row; rows are `4H` (LSTM gates), `3H` (GRU gates)
 * or `H` wide. Gates are in torch's order: i, f, g, o for the LSTM, r, z, n for the GRU.
 *
 * The activations are computed from one branch-free e^x - 1 so that the loops vectorise without -ffast-math (which
 * would change the floating-point mode of the whole process). They agree with torch's to a few ulp; tests/test_fused.py
 * holds them, and every step, to torch.nn's outputs and gradients.
 */
#include <stdint.h>
#include <string.h>

/* Rows are independent: with OpenMP (the same runtime as torch's, which loads libgomp first) a large step is split
 * over the threads torch uses; below 4K elements a fork costs more than it saves. */
#ifdef _OPENMP
#define PARALLEL_ROWS _Pragma("omp parallel for if (B * H >= 4096) schedule(static)")
#else
#define PARALLEL_ROWS
#endif

/* e^x - 1 with a small relative error, also near 0 where e^x - 1 would cancel. x = n ln2 + r with |r| <= ln2 / 2,
 * e^r - 1 by its Taylor series to r^8 (the first term left out is below 2e-10 relative), then 2^n (p + 1) - 1. */
static inline float expm1f_(float x) {
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    const float round_shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to the nearest integer */
    float n = (x * 1.44269504088896341f + round_shift) - round_shift;
    float r = x - n * 0.693145751953125f; /* ln 2 in two parts; the first is exact in float */
    r = r - n * 1.42860682030941723e-06f;
    float p = r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720
              + r * (1.0f / 5040 + r * (1.0f / 40320))))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale * p + (scale - 1.0f);
}

static inline float sigmoidf_(float x) { return 1.0f / (2.0f + expm1f_(-x)); } /* 1 / (1 + e^-x) */

static inline float tanhf_(float x) { /* sign(x) (1 - e^-2|x|) / (1 + e^-2|x|) */
    float m = expm1f_(-2.0f * (x < 0.0f ? -x : x));
    float t = -m / (2.0f + m);
    return x < 0.0f ? -t : t;
}

/* Elementwise activations, for tests and for anyone checking these against torch. */
void rnnlm_sigmoid(int64_t n, const float *x, float *y) {
    for (int64_t k = 0; k < n; k++) y[k] = sigmoidf_(x[k]);
}

void rnnlm_tanh(int64_t n, const float *x, float *y) {
    for (int64_t k = 0; k < n; k++) y[k] = tanhf_(x[k]);
}

/* LSTM forward: x (B, 4H) holds W_ih x_t + b_ih + b_hh and hw (B, 4H) holds W_hh h_{t-1}, gates in the order
 * i, f, g, o; gates (B, 4H) receives the activated gates (it may be hw itself); c = f * c_prev + i * g,
 * tanh_c = tanh(c), h = o * tanh_c (each (B, H)); c may be c_prev itself. */
void rnnlm_lstm_forward(int64_t B, int64_t H, const float *x, const float *hw, float *gates, const float *c_prev,
                        float *c, float *tanh_c, float *h) {
    PARALLEL_ROWS
    for (int64_t b = 0; b < B; b++) {
        const float *xi = x + b * 4 * H, *xf = xi + H, *xg = xf + H, *xo = xg + H;
        const float *wi = hw + b * 4 * H, *wf = wi + H, *wg = wf + H, *wo = wg + H, *cp = c_prev + b * H;
        float *i = gates + b * 4 * H, *f = i + H, *g = f + H, *o = g + H;
        float *cb = c + b * H, *tb = tanh_c + b * H, *hb = h + b * H;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; j++) {
            float oj = sigmoidf_(xo[j] + wo[j]), ij = sigmoidf_(xi[j] + wi[j]), fj = sigmoidf_(xf[j] + wf[j]);
            float gj = tanhf_(xg[j] + wg[j]);
            float cj = fj * cp[j] + ij * gj, tj = tanhf_(cj);
            o[j] = oj, i[j] = ij, f[j] = fj, g[j] = gj;
            cb[j] = cj, tb[j] = tj, hb[j] = oj * tj;
        }
    }
}

/* LSTM backward through one step. In: the step's activated gates (B, 4H), c_prev and tanh_c (B, H); the gradient
 * reaching h_t as the sum grad_h + grad_h_rec (B, H each: from above, and through W_hh from step t+1); dc (B, H), the
 * gradient reaching c_t from step t+1. Out: d_gates (B, 4H), the gradient of the gates' pre-activations; dc becomes
 * the gradient reaching c_{t-1}. */
void rnnlm_lstm_backward(int64_t B, int64_t H, const float *gates, const float *c_prev, const float *tanh_c,
                         const float *grad_h, const float *grad_h_rec, float *dc, float *d_gates) {
    PARALLEL_ROWS
    for (int64_t b = 0; b < B; b++) {
        const float *i = gates + b * 4 * H, *f = i + H, *g = f + H, *o = g + H;
        const float *cp = c_prev + b * H, *tc = tanh_c + b * H, *gh = grad_h + b * H, *gr = grad_h_rec + b * H;
        float *dcb = dc + b * H, *d_i = d_gates + b * 4 * H, *d_f = d_i + H, *d_g = d_f + H, *d_o = d_g + H;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; j++) {
            float oj = o[j], ij = i[j], fj = f[j], gj = g[j], tj = tc[j], hj = gh[j] + gr[j];
            float d = dcb[j] + hj * oj * (1.0f - tj * tj); /* dc_t in full */
            d_o[j] = hj * tj * oj * (1.0f - oj);
            d_i[j] = d * gj * ij * (1.0f - ij);
            d_f[j] = d * cp[j] * fj * (1.0f - fj);
            d_g[j] = d * ij * (1.0f - gj * gj);
            dcb[j] = d * fj;
        }
    }
}

/* GRU forward: x (B, 3H) holds W_ih x_t + b_ih, hw (B, 3H) holds W_hh h_{t-1}, b_hh (3H); hh (B, 3H) receives
 * hw + b_hh (it may be hw itself), gates (B, 3H) r, z, n with r, z = sigmoid(x + hh) and n = tanh(x_n + r * hh_n);
 * h = n + z * (h_prev - n). */
void rnnlm_gru_forward(int64_t B, int64_t H, const float *x, const float *hw, const float *b_hh, float *hh,
                       const float *h_prev, float *gates, float *h) {
    const float *br = b_hh, *bz = br + H, *bn = bz + H;
    PARALLEL_ROWS
    for (int64_t b = 0; b < B; b++) {
        const float *xr = x + b * 3 * H, *xz = xr + H, *xn = xz + H;
        const float *wr = hw + b * 3 * H, *wz = wr + H, *wn = wz + H, *hp = h_prev + b * H;
        float *hr = hh + b * 3 * H, *hz = hr + H, *hn = hz + H;
        float *r = gates + b * 3 * H, *z = r + H, *n = z + H, *hb = h + b * H;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; j++) {
            float hrj = wr[j] + br[j], hzj = wz[j] + bz[j], hnj = wn[j] + bn[j];
            float rj = sigmoidf_(xr[j] + hrj), zj = sigmoidf_(xz[j] + hzj);
            float nj = tanhf_(xn[j] + rj * hnj);
            hr[j] = hrj, hz[j] = hzj, hn[j] = hnj;
            r[j] = rj, z[j] = zj, n[j] = nj;
            hb[j] = nj + zj * (hp[j] - nj);
        }
    }
}

/* GRU backward through one step. In: gates r, z, n (B, 3H), hh (B, 3H) of the forward step, h_prev (B, H), and the
 * gradient reaching h_t as grad_h + grad_h_rec (B, H each). Out: d_x (B, 3H), the gradient of W_ih x_t + b_ih; d_hh
 * (B, 3H), the gradient of W_hh h_{t-1} + b_hh; and grad_h_prev (B, H) += z * grad_h, the direct path (W_hh's share
 * reaches step t-1 as its grad_h_rec). */
void rnnlm_gru_backward(int64_t B, int64_t H, const float *gates, const float *hh, const float *h_prev,
                        const float *grad_h, const float *grad_h_rec, float *d_x, float *d_hh, float *grad_h_prev) {
    PARALLEL_ROWS
    for (int64_t b = 0; b < B; b++) {
        const float *r = gates + b * 3 * H, *z = r + H, *n = z + H, *hn = hh + b * 3 * H + 2 * H;
        const float *hp = h_prev + b * H, *gh = grad_h + b * H, *gr = grad_h_rec + b * H;
        float *dxr = d_x + b * 3 * H, *dxz = dxr + H, *dxn = dxz + H;
        float *dhr = d_hh + b * 3 * H, *dhz = dhr + H, *dhn = dhz + H, *ghp = grad_h_prev + b * H;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; j++) {
            float rj = r[j], zj = z[j], nj = n[j], hj = gh[j] + gr[j];
            float dn = hj * (1.0f - zj) * (1.0f - nj * nj);
            float dr = dn * hn[j] * rj * (1.0f - rj);
            float dz = hj * (hp[j] - nj) * zj * (1.0f - zj);
            dxr[j] = dr, dxz[j] = dz, dxn[j] = dn;
            dhr[j] = dr, dhz[j] = dz, dhn[j] = dn * rj;
            ghp[j] += zj * hj;
        }
    }
}
