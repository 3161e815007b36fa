/* The pointwise half of one recurrent step, fused into one pass over memory: see rnnlm/fused.py.
 *
 * Each of the first functions does, for one time step of a batch of B rows, the elementwise work that follows
 * (forward) or precedes (backward) the step's matrix product, which stays in PyTorch (MKL / oneDNN). Unfused, that
 * work is 5-12 PyTorch ops per step, each a kernel launch and a trip through memory; here it is one loop that the
 * compiler vectorises. The last ones (rnnlm_step and the whole-sequence loops rnnlm_lstm_sequence, rnnlm_gru_sequence,
 * their backward passes, and rnnlm_rnn_sequence) do the product as well.
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

/* Vectors of 8 floats (GCC / Clang vector extensions: AVX on x86-64, two NEON registers on ARM), for loops the
 * compiler would not vectorise itself; `activations` below does on them what the three functions above do. */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

static inline v8 splat(float s) { return (v8){s, s, s, s, s, s, s, s}; }

static inline v8 select8(v8i mask, v8 a, v8 b) { return (v8)((mask & (v8i)a) | (~mask & (v8i)b)); } /* mask ? a : b */

#define INLINE static inline __attribute__((always_inline))

/* The activations of N <= 12 vectors at once: x[i] becomes sigmoid(x[i]), or tanh(x[i]) where bit i of `tanh_of` is
 * set, each by the same operations as the scalar functions above. The N are computed stage by stage, so that their
 * dependency chains interleave: one at a time, a chain of ~20 dependent operations leaves the core waiting (the
 * LSTM's whole-sequence forward, computing a row block's 12 gates together, ran 1.05x-1.10x faster). */
INLINE void activations(int N, v8 *x, unsigned tanh_of) {
    const v8 round_shift = splat(12582912.0f);
    v8i negative[12];
    v8 n[12], r[12];
#pragma GCC unroll 12
    for (int i = 0; i < N; i++) { /* the argument of e^a - 1: -x, or for tanh -2|x| */
        v8 a = -x[i];
        if (tanh_of >> i & 1) {
            negative[i] = x[i] < splat(0.0f);
            a = -2.0f * select8(negative[i], -x[i], x[i]);
        }
        a = select8(a < splat(-87.0f), splat(-87.0f), select8(a > splat(87.0f), splat(87.0f), a));
        n[i] = (a * 1.44269504088896341f + round_shift) - round_shift;
        r[i] = a - n[i] * 0.693145751953125f;
        r[i] = r[i] - n[i] * 1.42860682030941723e-06f;
    }
#pragma GCC unroll 12
    for (int i = 0; i < N; i++) {
        v8 q = r[i];
        v8 p = q * (1.0f + q * (1.0f / 2 + q * (1.0f / 6 + q * (1.0f / 24 + q * (1.0f / 120 + q * (1.0f / 720
               + q * (1.0f / 5040 + q * (1.0f / 40320))))))));
        v8 scale = (v8)((__builtin_convertvector(n[i], v8i) + 127) << 23);
        v8 m = scale * p + (scale - 1.0f); /* e^a - 1 */
        if (tanh_of >> i & 1) {
            v8 t = -m / (2.0f + m);
            x[i] = select8(negative[i], -t, t);
        } else {
            x[i] = 1.0f / (2.0f + m);
        }
    }
}

/* n floats as the sequence loops activate them: in blocks of 12 vectors (the last padded), vector i of a block by
 * sigmoid, or by tanh where bit i of tanh_of is set; for tests, and for anyone checking these against torch. */
void rnnlm_activations(int64_t n, const float *x, float *y, int64_t tanh_of) {
    for (int64_t k = 0; k < n; k += 96) {
        float in[96] = {0};
        v8 v[12];
        int m = n - k < 96 ? (int)(n - k) : 96;
        memcpy(in, x + k, m * sizeof(float));
        for (int i = 0; i < 12; i++) v[i] = load8(in + 8 * i);
        activations(12, v, (unsigned)tanh_of);
        memcpy(in, v, sizeof in);
        memcpy(y + k, in, m * sizeof(float));
    }
}

/* Elementwise sigmoid and tanh, likewise: the scalar functions, or with `vector` set the vector ones. */
void rnnlm_sigmoid(int64_t n, const float *x, float *y, int64_t vector) {
    if (vector) {
        rnnlm_activations(n, x, y, 0);
        return;
    }
    for (int64_t k = 0; k < n; k++) y[k] = sigmoidf_(x[k]);
}

void rnnlm_tanh(int64_t n, const float *x, float *y, int64_t vector) {
    if (vector) {
        rnnlm_activations(n, x, y, 0xfff);
        return;
    }
    for (int64_t k = 0; k < n; k++) y[k] = tanhf_(x[k]);
}

/* LSTM forward: x (B, 4H) holds W_ih x_t and bias (4H) whatever x lacks of b_ih + b_hh (zeros if it has them), hw
 * (B, 4H) holds W_hh h_{t-1}, gates in the order i, f, g, o; gates (B, 4H) receives the activated gates (it may be hw
 * itself); c = f * c_prev + i * g, tanh_c = tanh(c), h = o * tanh_c (each (B, H)); c may be c_prev itself. */
void rnnlm_lstm_forward(int64_t B, int64_t H, const float *x, const float *bias, const float *hw, float *gates,
                        const float *c_prev, float *c, float *tanh_c, float *h) {
    const float *bi = bias, *bf = bi + H, *bg = bf + H, *bo = bg + H;
    PARALLEL_ROWS
    for (int64_t b = 0; b < B; b++) {
        const float *xi = x + b * 4 * H, *xf = xi + H, *xg = xf + H, *xo = xg + H;
        const float *wi = hw + b * 4 * H, *wf = wi + H, *wg = wf + H, *wo = wg + H, *cp = c_prev + b * H;
        float *i = gates + b * 4 * H, *f = i + H, *g = f + H, *o = g + H;
        float *cb = c + b * H, *tb = tanh_c + b * H, *hb = h + b * H;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; j++) {
            float oj = sigmoidf_(xo[j] + wo[j] + bo[j]), ij = sigmoidf_(xi[j] + wi[j] + bi[j]);
            float fj = sigmoidf_(xf[j] + wf[j] + bf[j]), gj = tanhf_(xg[j] + wg[j] + bg[j]);
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
                hb[j] = kind == 0 ? tanhf_(s) : (s < 0.0f ? 0.0f : s); /* relu keeps a nan, as torch's */
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

/* ---- The LSTM's forward pass through a whole sequence, for training ----
 *
 * Each step's product h_{t-1} W_hh^T and its pointwise half in one pass, panel by panel as in rnnlm_step (W_hh packed
 * the same way, K1 = 0), with rows in threes so that each weight loaded serves three rows (`dot_rows`). One OpenMP
 * region runs the whole sequence; the threads split each step's panels and meet once per step (step t reads all of
 * h_{t-1}). A 1x128 LSTM's step at batch 32 is 2 M multiply-adds: through MKL and a separate pointwise loop it cost
 * ~70 us on the development machine, a fork and a Python call included.
 *
 * xg (T, B, 4H): W_ih x_t, with or without biases, gates i, f, g, o; bias (4H) the biases xg lacks, or NULL;
 * panels (ceil(H / 8), H, 4, 8); h0, c0 (B, H). Out, all row-major: gates (T, B, 4H) the activated gates, c and
 * tanh_c (T, B, H), h (T, B, H). Without autograd (gates and tanh_c NULL) nothing is kept: c is (2, B, H), steps
 * taking turns, and the last step's cell state ends in c[(T - 1) % 2].
 */
/* acc[r][g] = sum over k < K of v[r][k] * w[k][g][:] for R <= 4 rows of v (row stride `stride`) and the G <= 4 gates
 * of a panel. Inlined with R and G constants, the R * G <= 12 sums stay in registers, and with them either the R
 * rows' broadcasts of a k and one weight vector at a time (R < G: the LSTM's 3 rows x 4 gates) or the G weight
 * vectors and one broadcast at a time (the GRU's 4 rows x 3 gates): 16 AVX registers in all, and each weight read
 * from cache serves R rows. Measured against the alternatives at T = 64, 128-512 units, batch 32 and 64: rows in
 * pairs (4 loads per 8 multiply-adds instead of 7 per 12) 0.83-0.95x; 6 rows x 2 gates at a time 0.90-1.0x; the other
 * loop form for each (17 registers: spills) about 0.5x. */
INLINE void dot_rows(int R, int G, int64_t K, const float *w, const float *v, int64_t stride, v8 acc[4][4]) {
    v8 sum[4][4];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) sum[r][g] = (v8){0};
#pragma GCC unroll 4
    for (int64_t k = 0; k < K; k++, w += 8 * G) {
        if (R < G) {
            v8 x[4];
            for (int r = 0; r < R; r++) x[r] = splat(v[r * stride + k]);
            for (int g = 0; g < G; g++) {
                v8 wk = load8(w + 8 * g);
                for (int r = 0; r < R; r++) sum[r][g] += x[r] * wk;
            }
        } else {
            v8 wk[4];
            for (int g = 0; g < G; g++) wk[g] = load8(w + 8 * g);
            for (int r = 0; r < R; r++) {
                v8 x = splat(v[r * stride + k]);
                for (int g = 0; g < G; g++) sum[r][g] += x * wk[g];
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) acc[r][g] = sum[r][g];
}

/* n <= 8 floats; a whole 8 as one vector move (a variable-length memcpy would be a library call). */
static inline v8 read8(const float *src, int n) {
    if (n == 8) return load8(src);
    float padded[8] = {0};
    for (int u = 0; u < n; u++) padded[u] = src[u];
    return load8(padded);
}

static inline void write8(float *dst, v8 v, int n) {
    if (n == 8) {
        memcpy(dst, &v, sizeof v);
        return;
    }
    float all[8];
    memcpy(all, &v, sizeof all);
    for (int u = 0; u < n; u++) dst[u] = all[u];
}

/* The pointwise half for the n <= 8 units j0.. of R <= 3 rows, from pre (per row 4 gates x 8 units, W_hh's part),
 * the rows' x and the bias (or NULL); every pointer is at unit j0 of gate i (the bias's) or of the first row's, rows
 * 4H (x, gates) or H apart. The rows' 12 gates, then their 3 tanh(c), are activated together (`activations`). */
INLINE void lstm_cells(int R, int n, int64_t H, v8 pre[4][4], const float *x, const float *bias, const float *c_prev,
                       float *gates, float *c, float *tanh_c, float *h) {
    v8 a[12], tc[3];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < 4; g++)
            a[4 * r + g] = read8(x + r * 4 * H + g * H, n) + pre[r][g] + (bias ? read8(bias + g * H, n) : splat(0.0f));
    activations(4 * R, a, 0x444u & ((1u << 4 * R) - 1)); /* i, f, g, o: each row's g (bit 4r + 2) is a tanh */
    for (int r = 0; r < R; r++) {
        const v8 *ifgo = a + 4 * r;
        tc[r] = ifgo[1] * read8(c_prev + r * H, n) + ifgo[0] * ifgo[2];
        write8(c + r * H, tc[r], n);
    }
    activations(R, tc, 0x7);
    for (int r = 0; r < R; r++) {
        const v8 *ifgo = a + 4 * r;
        if (gates) /* kept for the backward pass */
            for (int g = 0; g < 4; g++) write8(gates + r * 4 * H + g * H, ifgo[g], n);
        if (tanh_c) write8(tanh_c + r * H, tc[r], n);
        write8(h + r * H, ifgo[3] * tc[r], n);
    }
}

INLINE void lstm_rows(int R, int64_t p, int64_t b, int64_t H, const float *xg, const float *bias,
                      const float *panel, const float *h_prev, const float *c_prev, float *gates, float *c,
                      float *tanh_c, float *h) {
    v8 acc[4][4];
    dot_rows(R, 4, H, panel, h_prev + b * H, H, acc);
    const int64_t j0 = p * 8, g = b * 4 * H + j0, s = b * H + j0;
    const int n = H - j0 < 8 ? (int)(H - j0) : 8;
    const float *x = xg + g, *br = bias ? bias + j0 : 0, *cp = c_prev + s;
    float *gt = gates ? gates + g : 0, *tt = tanh_c ? tanh_c + s : 0;
    if (n == 8) /* a constant n: whole-vector loads and stores */
        lstm_cells(R, 8, H, acc, x, br, cp, gt, c + s, tt, h + s);
    else
        lstm_cells(R, n, H, acc, x, br, cp, gt, c + s, tt, h + s);
}

void rnnlm_lstm_sequence(int64_t T, int64_t B, int64_t H, const float *xg, const float *bias, const float *panels,
                         const float *h0, const float *c0, float *gates, float *c, float *tanh_c, float *h) {
    const int64_t n_panels = (H + 7) / 8, state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = 0; t < T; t++) {
        const int64_t slot = gates ? t : t % 2, prev = gates ? t - 1 : (t - 1) % 2; /* c's place for step t, t - 1 */
        const float *hp = t ? h + (t - 1) * state : h0, *cp = t ? c + prev * state : c0, *x = xg + t * 4 * state;
        float *gt = gates ? gates + t * 4 * state : 0, *tt = tanh_c ? tanh_c + t * state : 0;
        float *ct = c + slot * state, *ht = h + t * state;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; p++) {
            const float *panel = panels + p * H * 32;
            int64_t b = 0;
            for (; b + 3 <= B; b += 3) lstm_rows(3, p, b, H, x, bias, panel, hp, cp, gt, ct, tt, ht);
            if (B - b == 2) lstm_rows(2, p, b, H, x, bias, panel, hp, cp, gt, ct, tt, ht);
            if (B - b == 1) lstm_rows(1, p, b, H, x, bias, panel, hp, cp, gt, ct, tt, ht);
        }
    }
}

/* ---- The GRU's forward pass through a whole sequence, for training ----
 *
 * As rnnlm_lstm_sequence, with three gates: W_hh packed (ceil(H / 8), H, 3, 8). xg (T, B, 3H) holds W_ih x_t + b_ih;
 * b_hh (3H). Out, all row-major: hh (T, B, 3H) = W_hh h_{t-1} + b_hh (its n part is needed for the gradient of r),
 * gates (T, B, 3H) r, z, n, h (T, B, H). Without autograd hh and gates are NULL: only h is kept.
 */
INLINE void gru_cells(int R, int n, int64_t H, v8 pre[4][4], const float *x, const float *b_hh, const float *h_prev,
                       float *hh, float *gates, float *h) {
    v8 rec[4][3], rz[8], nn[4]; /* rec: W_hh h + b_hh */
    for (int r = 0; r < R; r++)
        for (int g = 0; g < 3; g++) rec[r][g] = pre[r][g] + read8(b_hh + g * H, n);
    for (int r = 0; r < R; r++)
        for (int g = 0; g < 2; g++) rz[2 * r + g] = read8(x + r * 3 * H + g * H, n) + rec[r][g];
    activations(2 * R, rz, 0);
    for (int r = 0; r < R; r++) nn[r] = read8(x + r * 3 * H + 2 * H, n) + rz[2 * r] * rec[r][2];
    activations(R, nn, 0xf);
    for (int r = 0; r < R; r++) {
        const int64_t g3 = r * 3 * H;
        if (hh)
            for (int g = 0; g < 3; g++) write8(hh + g3 + g * H, rec[r][g], n);
        if (gates) write8(gates + g3, rz[2 * r], n), write8(gates + g3 + H, rz[2 * r + 1], n),
                   write8(gates + g3 + 2 * H, nn[r], n);
        write8(h + r * H, nn[r] + rz[2 * r + 1] * (read8(h_prev + r * H, n) - nn[r]), n);
    }
}

INLINE void gru_rows(int R, int64_t p, int64_t b, int64_t H, const float *xg, const float *b_hh, const float *panel,
                     const float *h_prev, float *hh, float *gates, float *h) {
    v8 acc[4][4];
    dot_rows(R, 3, H, panel, h_prev + b * H, H, acc);
    const int64_t j0 = p * 8, g3 = b * 3 * H + j0, s = b * H + j0;
    const int n = H - j0 < 8 ? (int)(H - j0) : 8;
    float *hr = hh ? hh + g3 : 0, *gr = gates ? gates + g3 : 0;
    if (n == 8) /* a constant n: whole-vector loads and stores */
        gru_cells(R, 8, H, acc, xg + g3, b_hh + j0, h_prev + s, hr, gr, h + s);
    else
        gru_cells(R, n, H, acc, xg + g3, b_hh + j0, h_prev + s, hr, gr, h + s);
}

void rnnlm_gru_sequence(int64_t T, int64_t B, int64_t H, const float *xg, const float *b_hh, const float *panels,
                        const float *h0, float *hh, float *gates, float *h) {
    const int64_t n_panels = (H + 7) / 8, state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = 0; t < T; t++) {
        const float *hp = t ? h + (t - 1) * state : h0, *x = xg + t * 3 * state;
        float *hht = hh ? hh + t * 3 * state : 0, *gt = gates ? gates + t * 3 * state : 0, *ht = h + t * state;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; p++) {
            const float *panel = panels + p * H * 24;
            int64_t b = 0;
            for (; b + 4 <= B; b += 4) gru_rows(4, p, b, H, x, b_hh, panel, hp, hht, gt, ht);
            switch (B - b) { /* a constant R for each */
            case 3: gru_rows(3, p, b, H, x, b_hh, panel, hp, hht, gt, ht); break;
            case 2: gru_rows(2, p, b, H, x, b_hh, panel, hp, hht, gt, ht); break;
            case 1: gru_rows(1, p, b, H, x, b_hh, panel, hp, hht, gt, ht); break;
            }
        }
    }
}

/* ---- The LSTM's backward pass through a whole sequence ----
 *
 * Step t's gradient reaching h_t through W_hh is d_gates_{t+1} W_hh, a product whose every output unit needs all 4H
 * gate gradients of step t+1; the pointwise backward of unit j at step t needs only unit j's. So the threads split the
 * output units in panels of 8, each panel computes its units' share of the product and at once their pointwise
 * backward, and the threads meet once per step. W_hh is packed by output unit: back (ceil(H / 8), 4H, 8), panel q
 * holding W_hh[:, 8q..8q+7]. Each thread takes panels in pairs and rows in blocks of 6 (`dot_back`).
 *
 * In: gates (T, B, 4H) activated i, f, g, o; c0 (B, H), c and tanh_c (T, B, H); grad_h (T, B, H), the gradient
 * reaching each h_t from above; grad_hn (B, H), the final state's; dc (B, H) the gradient reaching c_{T-1}. Out:
 * d_gates (T, B, 4H), the gradient of the gates' pre-activations; dc becomes the gradient reaching c0. The gradient
 * reaching h0 (d_gates_0 W_hh) is left to the caller.
 */

/* rec[r][m] = sum over k < K of v[r][k] * w_m[k][:] for R <= 6 rows of v (row stride `stride`) and N <= 2 panels, w_0
 * and w_1 = w_0 + `second`: 12 sums, 2 weights and a broadcast in the 16 AVX registers, each weight loaded serving 6
 * rows (a row block of 8 with one panel, 9 loads per 8 multiply-adds instead of 8 per 12, ran 0.88-0.92x). */
INLINE void dot_back(int R, int N, int64_t K, const float *w, int64_t second, const float *v, int64_t stride,
                     v8 rec[6][2]) {
    v8 sum[6][2];
    for (int r = 0; r < R; r++) sum[r][0] = sum[r][1] = (v8){0};
#pragma GCC unroll 4
    for (int64_t k = 0; k < K; k++, w += 8) {
        v8 w0 = load8(w), w1 = N > 1 ? load8(w + second) : (v8){0};
        for (int r = 0; r < R; r++) {
            v8 x = splat(v[r * stride + k]);
            sum[r][0] += x * w0;
            if (N > 1) sum[r][1] += x * w1;
        }
    }
    for (int r = 0; r < R; r++) rec[r][0] = sum[r][0], rec[r][1] = sum[r][1];
}

/* The pointwise backward for the n <= 8 units j0.. of one row: rec is what reached h_t through W_hh, or, if given,
 * grad_hn (pointers at unit j0 of the row, gates' at gate i). */
INLINE void lstm_back_cell8(int n, int64_t H, v8 rec, const float *grad_hn, const float *grad_h, const float *g4,
                            const float *c_prev, const float *tanh_c, float *dc, float *dg) {
    v8 hj = read8(grad_h, n) + (grad_hn ? read8(grad_hn, n) : rec);
    v8 ig = read8(g4, n), fg = read8(g4 + H, n), gg = read8(g4 + 2 * H, n), og = read8(g4 + 3 * H, n);
    v8 tj = read8(tanh_c, n), d = read8(dc, n) + hj * og * (1.0f - tj * tj); /* dc_t in full */
    write8(dg, d * gg * ig * (1.0f - ig), n);
    write8(dg + H, d * read8(c_prev, n) * fg * (1.0f - fg), n);
    write8(dg + 2 * H, d * ig * (1.0f - gg * gg), n);
    write8(dg + 3 * H, hj * tj * og * (1.0f - og), n);
    write8(dc, d * fg, n);
}

/* ---- The GRU's backward pass through a whole sequence ----
 *
 * As rnnlm_lstm_backward_sequence: panel q of `back` (ceil(H / 8), 3H, 8) holds W_hh[:, 8q..8q+7], and each panel
 * computes its units' share of d_hh_{t+1} W_hh, then their pointwise backward. In: gates r, z, n and hh = W_hh h + b_hh
 * (T, B, 3H) of the forward, h0 (B, H), h (T, B, H); grad_h (T, B, H) the gradient reaching each h_t from above,
 * which gains the direct path z_{t+1} dh_{t+1} on the way (so it is overwritten); grad_hn (B, H), the final state's.
 * Out: d_x (T, B, 3H), the gradient of W_ih x_t + b_ih; d_hh (T, B, 3H), of W_hh h_{t-1} + b_hh; grad_h0 (B, H) gains
 * z_0 dh_0 (the caller adds d_hh_0 W_hh).
 */
INLINE void gru_back_cell8(int n, int64_t H, v8 rec, const float *grad_hn, const float *grad_h, const float *g3,
                           const float *hh3, const float *h_prev, float *grad_h_prev, float *dx, float *dhh) {
    v8 hj = read8(grad_h, n) + (grad_hn ? read8(grad_hn, n) : rec);
    v8 r = read8(g3, n), z = read8(g3 + H, n), nn = read8(g3 + 2 * H, n);
    v8 dn = hj * (1.0f - z) * (1.0f - nn * nn);
    v8 dr = dn * read8(hh3 + 2 * H, n) * r * (1.0f - r);
    v8 dz = hj * (read8(h_prev, n) - nn) * z * (1.0f - z);
    write8(dx, dr, n), write8(dx + H, dz, n), write8(dx + 2 * H, dn, n);
    write8(dhh, dr, n), write8(dhh + H, dz, n), write8(dhh + 2 * H, dn * r, n);
    write8(grad_h_prev, read8(grad_h_prev, n) + z * hj, n);
}

/* ---- The loops of both backward passes and of the plain RNN's forward ----
 *
 * Each step is a product by a panel of 8 units' weights, K = G * H long, of rows that have one gate per panel (so
 * too few sums per row to hide a k's loads): the threads take panels in pairs and rows in blocks of 6 (`dot_back`),
 * and each unit's pointwise work follows at once. What step t reads and writes, at step t's rows: the LSTM's backward
 * (G = 4), the GRU's (G = 3), or the RNN's forward (G = 1, the product being W_hh h_{t-1}). */
typedef struct {
    const float *in;      /* the rows multiplied: the gate gradients of step t+1 (they reach h_t through W_hh; NULL at
                           * a backward pass's last step), or the RNN's h_{t-1} */
    const float *grad_hn; /* the final state's gradient, which reaches h_t instead at the last step */
    const float *gates, *grad_h;
    const float *c_prev, *tanh_c; /* LSTM */
    float *dc, *d_gates;
    const float *hh, *h_prev; /* GRU */
    float *grad_h_prev, *d_x, *d_hh;
    const float *x; /* RNN: x_t (W_ih x_t and both biases) and h_t */
    float *h;
    int relu;
} PanelStep;

/* The backward passes' pointwise work (G = 4 the LSTM's, G = 3 the GRU's; the RNN's forward is `rnn_cells`) for
 * the n <= 8 units j0.. of one row, from `pre`, its share of the product. */
INLINE void panel_cell8(int G, int n, int64_t H, v8 pre, const PanelStep *st, int64_t row, int64_t j0) {
    const int64_t s = row * H + j0, g = row * G * H + j0;
    const float *grad_hn = st->in ? 0 : st->grad_hn + s;
    if (G == 4)
        lstm_back_cell8(n, H, pre, grad_hn, st->grad_h + s, st->gates + g, st->c_prev + s, st->tanh_c + s, st->dc + s,
                        st->d_gates + g);
    else
        gru_back_cell8(n, H, pre, grad_hn, st->grad_h + s, st->gates + g, st->hh + g, st->h_prev + s,
                       st->grad_h_prev + s, st->d_x + g, st->d_hh + g);
}

/* The plain RNN's forward for rows b..b+R-1 of the N panels q..: h = tanh (or relu) of x + pre, the R x N tanh
 * together (`activations`). `whole`: every panel has 8 units (a constant 8 then, for whole-vector loads and stores). */
INLINE void rnn_cells(int R, int N, int whole, int64_t q, int64_t b, int64_t H, v8 pre[6][2], const PanelStep *st) {
    v8 a[12];
    int n[2];
    for (int m = 0; m < N; m++) n[m] = whole || H - (q + m) * 8 >= 8 ? 8 : (int)(H - (q + m) * 8);
    for (int m = 0; m < N; m++)
        for (int r = 0; r < R; r++) a[m * R + r] = read8(st->x + (b + r) * H + (q + m) * 8, n[m]) + pre[r][m];
    if (st->relu)
        for (int i = 0; i < R * N; i++) a[i] = select8(a[i] < splat(0.0f), splat(0.0f), a[i]); /* keeps a nan */
    else
        activations(R * N, a, 0xfff);
    for (int m = 0; m < N; m++)
        for (int r = 0; r < R; r++) write8(st->h + (b + r) * H + (q + m) * 8, a[m * R + r], n[m]);
}

/* Rows b..b+R-1 (R <= 6) of the N <= 2 panels q, q+1: their share of the product, then their pointwise work. */
INLINE void panel_rows(int G, int R, int N, int64_t q, int64_t b, int64_t H, const float *panel, const PanelStep *st) {
    v8 pre[6][2] = {{{0}}};
    if (st->in) dot_back(R, N, G * H, panel, G * H * 8, st->in + b * G * H, G * H, pre);
    if (G == 1) {
        if ((q + N) * 8 <= H)
            rnn_cells(R, N, 1, q, b, H, pre, st);
        else
            rnn_cells(R, N, 0, q, b, H, pre, st);
        return;
    }
    for (int m = 0; m < N; m++) {
        const int64_t j0 = (q + m) * 8;
        const int n = H - j0 < 8 ? (int)(H - j0) : 8;
        for (int r = 0; r < R; r++) {
            if (n == 8) /* a constant n: whole-vector loads and stores */
                panel_cell8(G, 8, H, pre[r][m], st, b + r, j0);
            else
                panel_cell8(G, n, H, pre[r][m], st, b + r, j0);
        }
    }
}

/* Every row of panels q, q+1 (N = 2) or q alone (N = 1). */
INLINE void panel_pair(int G, int N, int64_t q, int64_t B, int64_t H, const float *panel, const PanelStep *st) {
    int64_t b = 0;
    for (; b + 6 <= B; b += 6) panel_rows(G, 6, N, q, b, H, panel, st);
    switch (B - b) { /* a constant R for each */
    case 5: panel_rows(G, 5, N, q, b, H, panel, st); break;
    case 4: panel_rows(G, 4, N, q, b, H, panel, st); break;
    case 3: panel_rows(G, 3, N, q, b, H, panel, st); break;
    case 2: panel_rows(G, 2, N, q, b, H, panel, st); break;
    case 1: panel_rows(G, 1, N, q, b, H, panel, st); break;
    }
}

/* One step, inside the parallel region: the threads share out the panels (ceil(H / 8), G * H, 8) in pairs, and the
 * loop's closing barrier lets the next step read all of this one. */
INLINE void panel_step(int G, int64_t B, int64_t H, const float *panels, const PanelStep *st) {
    const int64_t n_panels = (H + 7) / 8;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < (n_panels + 1) / 2; pair++) {
        const int64_t q = 2 * pair;
        if (q + 1 < n_panels)
            panel_pair(G, 2, q, B, H, panels + q * G * H * 8, st);
        else
            panel_pair(G, 1, q, B, H, panels + q * G * H * 8, st);
    }
}

void rnnlm_lstm_backward_sequence(int64_t T, int64_t B, int64_t H, const float *back, const float *gates,
                                  const float *c0, const float *c, const float *tanh_c, const float *grad_h,
                                  const float *grad_hn, float *dc, float *d_gates) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = T - 1; t >= 0; t--) {
        const PanelStep st = {.in = t == T - 1 ? 0 : d_gates + (t + 1) * 4 * state, .grad_hn = grad_hn,
                              .gates = gates + t * 4 * state, .grad_h = grad_h + t * state,
                              .c_prev = t ? c + (t - 1) * state : c0, .tanh_c = tanh_c + t * state, .dc = dc,
                              .d_gates = d_gates + t * 4 * state};
        panel_step(4, B, H, back, &st);
    }
}

void rnnlm_gru_backward_sequence(int64_t T, int64_t B, int64_t H, const float *back, const float *gates,
                                 const float *hh, const float *h0, const float *h, float *grad_h, const float *grad_hn,
                                 float *grad_h0, float *d_x, float *d_hh) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = T - 1; t >= 0; t--) {
        const PanelStep st = {.in = t == T - 1 ? 0 : d_hh + (t + 1) * 3 * state, .grad_hn = grad_hn,
                              .gates = gates + t * 3 * state, .grad_h = grad_h + t * state, .hh = hh + t * 3 * state,
                              .h_prev = t ? h + (t - 1) * state : h0,
                              .grad_h_prev = t ? grad_h + (t - 1) * state : grad_h0, .d_x = d_x + t * 3 * state,
                              .d_hh = d_hh + t * 3 * state};
        panel_step(3, B, H, back, &st);
    }
}

/* ---- The plain RNN's forward pass through a whole sequence ----
 *
 * h_t = tanh (or relu) of x_t + W_hh h_{t-1}, through the loops above with G = 1: W_hh packed (ceil(H / 8), H, 1, 8).
 * xg (T, B, H) holds W_ih x_t + b_ih + b_hh; relu 0 for tanh, 1 for relu; h (T, B, H).
 */
void rnnlm_rnn_sequence(int64_t T, int64_t B, int64_t H, int64_t relu, const float *xg, const float *panels,
                        const float *h0, float *h) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = 0; t < T; t++) {
        const PanelStep st = {.in = t ? h + (t - 1) * state : h0, .x = xg + t * state, .h = h + t * state,
                              .relu = (int)relu};
        panel_step(1, B, H, panels, &st);
    }
}
