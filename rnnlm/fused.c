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

/* ---- One step of a whole stack at a small batch: the products and the pointwise half in one pass over the weights ----
 *
 * At batch 1 (sampling) a step's products are matrix-vector products, and their time is reading the weights: 12 MB
 * per character for a 2x512 LSTM. A general product would also store the 4H pre-activations for a pointwise loop to
 * read back. Here each layer's weights are packed once (cells.py, `_make_step_weights`) into panels of 8 hidden
 * units: panel p holds, for units 8p..8p+7, row k of every gate's weights, k-major: first the K1 columns of W_ih (none
 * when layer 0 is given its input projection x), then the H columns of W_hh, each row G gates x 8 units, contiguous.
 * A panel is read front to back once per row of the batch, its 8 units' gates end in registers, and the pointwise
 * half runs on them there. Panels share nothing, so the threads split each layer's panels and meet once per layer.
 *
 * kind: 0 RNN tanh, 1 RNN relu, 2 LSTM, 3 GRU, with G = 1, 1, 4, 3 gates. Sizes: L layers, B rows, H units, K0 input
 * columns of layer 0 (0 when x is given). weights: for each layer its panels (ceil(H / 8), K1 + H, G, 8) and its bias
 * (ceil(H / 8), S, G, 8): S = 1, the sum of the biases that add (without b_ih when x has it), or for the GRU S = 2,
 * b_ih (or zero) then b_hh. x (B, G*H) layer 0's input projection or NULL; v0 (B, K0) layer 0's input or NULL;
 * h_prev (L, B, H); c (L, B, H) the LSTM's cell state, updated in place (else NULL); h (L, B, H) receives the new
 * state and must not overlap h_prev, which other panels are still reading. Layer l > 0 reads layer l - 1's new h.
 */
typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

/* acc[g] = sum over k < K of v[k] * w[k][g][:], two k at a time into separate sums (so that twice G multiply-adds are
 * in flight). Returns where w's rows end. Inlined with G a constant, the sums stay in registers. */
static inline const float *dot_panel(int G, int64_t K, const float *w, const float *v, v8 *acc) {
    v8 even[4] = {0}, odd[4] = {0};
    int64_t k = 0;
    for (; k + 1 < K; k += 2, w += 16 * G)
        for (int g = 0; g < G; g++) {
            even[g] += v[k] * load8(w + 8 * g);
            odd[g] += v[k + 1] * load8(w + 8 * (G + g));
        }
    if (k < K) {
        for (int g = 0; g < G; g++) even[g] += v[k] * load8(w + 8 * g);
        w += 8 * G;
    }
    for (int g = 0; g < G; g++) acc[g] = even[g] + odd[g];
    return w;
}

/* Panel p of one layer, every row of the batch. */
static inline void step_panel(int kind, int G, int64_t p, int64_t B, int64_t H, int64_t K1, const float *panels,
                              const float *bias, const float *x, const float *v1, const float *h_prev, float *c,
                              float *h) {
    const int S = kind == 3 ? 2 : 1;
    const float *panel = panels + p * (K1 + H) * G * 8, *bx = bias + p * S * G * 8, *bh = bx + (S - 1) * G * 8;
    for (int64_t b = 0; b < B; b++) {
        v8 ax[4] = {0}, ah[4];
        const float *w = panel;
        if (K1 > 0) w = dot_panel(G, K1, w, v1 + b * K1, ax);
        dot_panel(G, H, w, h_prev + b * H, ah);
        float pre_x[4][8], pre_h[4][8]; /* gate g of unit 8p + u: the input's part and W_hh's */
        memcpy(pre_x, ax, sizeof(v8) * G);
        memcpy(pre_h, ah, sizeof(v8) * G);
        const float *xb = x ? x + b * G * H : 0, *hp = h_prev + b * H;
        float *hb = h + b * H, *cb = c ? c + b * H : 0;
        for (int u = 0; u < 8 && p * 8 + u < H; u++) {
            int64_t j = p * 8 + u;
            float in[4], rec[4];
            for (int g = 0; g < G; g++) {
                in[g] = pre_x[g][u] + bx[g * 8 + u] + (xb ? xb[g * H + j] : 0.0f);
                rec[g] = pre_h[g][u] + (S == 2 ? bh[g * 8 + u] : 0.0f);
            }
            if (kind == 2) {
                float ig = sigmoidf_(in[0] + rec[0]), fg = sigmoidf_(in[1] + rec[1]);
                float gg = tanhf_(in[2] + rec[2]), og = sigmoidf_(in[3] + rec[3]);
                float cj = fg * cb[j] + ig * gg;
                cb[j] = cj;
                hb[j] = og * tanhf_(cj);
            } else if (kind == 3) {
                float r = sigmoidf_(in[0] + rec[0]), z = sigmoidf_(in[1] + rec[1]);
                float n = tanhf_(in[2] + r * rec[2]);
                hb[j] = n + z * (hp[j] - n);
            } else {
                float s = in[0] + rec[0];
                hb[j] = kind == 0 ? tanhf_(s) : (s > 0.0f ? s : 0.0f);
            }
        }
    }
}

static void step_panel_of(int64_t kind, int64_t p, int64_t B, int64_t H, int64_t K1, const float *panels,
                          const float *bias, const float *x, const float *v1, const float *h_prev, float *c, float *h) {
    switch (kind) { /* a constant G for each, so that the compiler unrolls the gate loops */
    case 0: step_panel(0, 1, p, B, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    case 1: step_panel(1, 1, p, B, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    case 2: step_panel(2, 4, p, B, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    case 3: step_panel(3, 3, p, B, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    }
}

void rnnlm_step(int64_t kind, int64_t L, int64_t B, int64_t H, int64_t K0, const float *const *weights, const float *x,
                const float *v0, const float *h_prev, float *c, float *h) {
    const int64_t n_panels = (H + 7) / 8, G = kind == 2 ? 4 : (kind == 3 ? 3 : 1);
    const int64_t floats_read = n_panels * G * 8 * B * (K0 + H + (L - 1) * 2 * H);
    (void)floats_read; /* unused without OpenMP; with it, a small step stays on one thread */
#pragma omp parallel if (floats_read >= 65536)
    for (int64_t l = 0; l < L; l++) {
        const int64_t K1 = l == 0 ? K0 : H, state = l * B * H;
        const float *v1 = l == 0 ? v0 : h + state - B * H;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; p++)
            step_panel_of(kind, p, B, H, K1, weights[2 * l], weights[2 * l + 1], l == 0 ? x : 0, v1, h_prev + state,
                          c ? c + state : 0, h + state);
    }
}
