/* rnnlm's C fast path for float32 recurrences on a CPU: see rnnlm/fused.py, which builds this file, loads it and
 * calls it only through typed wrappers (one per entry point below).
 *
 * Each cell's equations are written here once, as a pointwise function on vectors of 8 hidden units
 * (`lstm_pointwise`, `gru_pointwise`, `rnn_pointwise` forward; `lstm_back_cell8`, `gru_back_cell8`, `rnn_back_cell8`
 * backward), and the
 * loops around them do each step's recurrent product too, so that a step's gates go from the product to the
 * activations in registers. Entry points:
 *
 *   rnnlm_lstm_sequence, rnnlm_gru_sequence, rnnlm_rnn_sequence    a layer's forward pass over a whole sequence
 *   rnnlm_lstm_backward_sequence, rnnlm_gru_backward_sequence,
 *   rnnlm_rnn_backward_sequence                                     the same layers' backward pass through time
 *   rnnlm_step                                                      one step of a whole stack, for sampling
 *   rnnlm_pack                                                      W_hh in the sequence loops' layouts
 *   rnnlm_activations                                               the vector sigmoid and tanh alone, for checks
 *   rnnlm_native_bf16                                               whether bf16 products use AVX-512 BF16
 *
 * Every signature puts its outputs first and its sizes last; shapes are in the comment above it. All arrays are
 * float32, row-major and dense, except packed weights with `bf16` set: bfloat16 pairs ("bfloat16 products"). Gates
 * are in torch's order: i, f, g, o for the LSTM, r, z, n for the GRU.
 *
 * The activations are computed from one branch-free e^x - 1 so that the loops vectorise without -ffast-math (which
 * would change the floating-point mode of the whole process). They agree with torch's to a few ulp; tests/test_fused.py
 * holds them, and every path, to torch.nn's outputs and gradients.
 */
#include <stdint.h>
#include <string.h>

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
 * set, each through e^a - 1 (a = -x, or
 * -2|x| for tanh): a = n ln2 + r with |r| <= ln2 / 2, e^r - 1 by its Taylor series to r^8 (the first term left out is
 * below 2e-10 relative), then 2^n (p + 1) - 1, which keeps a small relative error near 0. The N are computed stage by stage, so that their
 * dependency chains interleave: one at a time, a chain of ~20 dependent operations leaves the core waiting. */
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

/* y = the activations of n floats x, in blocks of 12 vectors (the last padded), vector i of a block by sigmoid, or by
 * tanh where bit i of tanh_of is set: as the loops below activate them; for tests, and for the check at load time. */
void rnnlm_activations(float *y, const float *x, int64_t tanh_of, int64_t n) {
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

/* ---- bfloat16 products, for train.precision bf16 ----
 *
 * W_hh is rounded to bfloat16 once per call and packed in pairs of k (rnnlm/fused.py, `pack_pairs`): one 32-bit lane
 * holds a unit's weights for k (low half) and k + 1 (high half), so the 8 lanes of a vector are a panel's 8 units at
 * two k. The rows it multiplies (h_{t-1} forward, the gate gradients backward) are rounded to bfloat16 as they are
 * read, and the sums are float32: what AVX-512 BF16's vdpbf16ps computes (the product of two bfloat16 is exact in
 * float32; the odd k is added first; denormal inputs count as zero). Where -march=native has that instruction the
 * loops use it; elsewhere the same arithmetic in AVX2, each half widened to float32, which is what the tests run on
 * a CPU without it (and slower than the float32 loops: only train.precision bf16 asks for it there). */
typedef uint32_t v8u __attribute__((vector_size(32)));

static inline v8u load8u(const float *p) {
    v8u v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* f rounded to bfloat16 (to nearest, ties to even; a denormal becomes a signed zero; a NaN stays a NaN), the bits. */
static inline uint32_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0) return (u >> 16) & 0x8000u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#include <immintrin.h>
#define NATIVE_BF16 1

/* v[0] and v[1] (v[1] taken as 0 unless `two`) rounded to bfloat16, the pair in every lane. */
static inline v8u bf16_pair(const float *v, int two) {
    __m128 x = two ? _mm_castpd_ps(_mm_load_sd((const double *)v)) : _mm_set_ss(v[0]);
    return (v8u)_mm256_broadcastd_epi32((__m128i)_mm_cvtneps_pbh(x));
}

/* acc + w's lanes' two products with x's pair. */
static inline v8 dot_pair(v8 acc, v8u w, v8u x) {
    return (v8)_mm256_dpbf16_ps((__m256)acc, (__m256bh)w, (__m256bh)x);
}
#else
#define NATIVE_BF16 0

static inline v8u bf16_pair(const float *v, int two) {
    uint32_t pair = bf16_bits(v[0]) | (two ? bf16_bits(v[1]) << 16 : 0);
    return (v8u){pair, pair, pair, pair, pair, pair, pair, pair};
}

static inline v8 dot_pair(v8 acc, v8u w, v8u x) {
    const v8u high = (v8u){0} + 0xffff0000u;
    acc += (v8)(x & high) * (v8)(w & high);
    return acc + (v8)(x << 16) * (v8)(w << 16);
}
#endif

/* Whether the bfloat16 products run on the CPU's own instruction (1) or in AVX2 (0). */
int64_t rnnlm_native_bf16(void) { return NATIVE_BF16; }

/* How many 32-bit columns a panel's K rows take: K floats, or in bfloat16 ceil(K / 2) pairs. */
static inline int64_t panel_rows_of(int64_t K, int bf16) { return bf16 ? (K + 1) / 2 : K; }

/* ---- Each cell's forward equations, on R rows of 8 units at once (R <= 3 for the LSTM, 4 for the GRU) ---- */

/* LSTM. In: a, the pre-activations W_ih x_t + b_ih + W_hh h_{t-1} + b_hh of R rows (i, f, g, o per row), and c the
 * rows' c_{t-1}. Out: a the activated gates, c = f * c_{t-1} + i * g, tc = tanh(c), h = o * tc. The rows' 4R gates,
 * then their R tanh(c), are activated together (`activations`). */
INLINE void lstm_pointwise(int R, v8 *a, v8 *c, v8 *tc, v8 *h) {
    activations(4 * R, a, 0x444u & ((1u << 4 * R) - 1)); /* each row's g (bit 4r + 2) is a tanh */
    for (int r = 0; r < R; r++) tc[r] = c[r] = a[4 * r + 1] * c[r] + a[4 * r] * a[4 * r + 2];
    activations(R, tc, 0x7);
    for (int r = 0; r < R; r++) h[r] = a[4 * r + 3] * tc[r];
}

/* GRU. In: rz, the pre-activations of r and z of R rows (x + W_hh h_{t-1} + b_hh, two per row); xn, the input's
 * part of n (W_in x_t + b_in); hn = W_hn h_{t-1} + b_hn; hp = h_{t-1}. Out: rz activated, xn = n =
 * tanh(xn + r * hn), h = (1 - z) * n + z * h_{t-1}. */
INLINE void gru_pointwise(int R, v8 *rz, v8 *xn, const v8 *hn, const v8 *hp, v8 *h) {
    activations(2 * R, rz, 0);
    for (int r = 0; r < R; r++) xn[r] += rz[2 * r] * hn[r];
    activations(R, xn, 0xf);
    for (int r = 0; r < R; r++) h[r] = xn[r] + rz[2 * r + 1] * (hp[r] - xn[r]);
}

/* The plain RNN. a: the N pre-activations W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, which become h_t = tanh(a) or
 * relu(a) (relu keeps a nan, as torch's does). */
INLINE void rnn_pointwise(int N, v8 *a, int relu) {
    if (relu)
        for (int i = 0; i < N; i++) a[i] = select8(a[i] < splat(0.0f), splat(0.0f), a[i]);
    else
        activations(N, a, (1u << N) - 1);
}

/* ---- W_hh in the loops' layouts ----
 *
 * Training packs W_hh on every call (it changes every step), which at batch 1 is a sizable share of a step: one
 * threaded pass over W_hh writes either layout, or both, in 8 x 8 tiles. Out: panels (ceil(H / 8), H, G, 8), panel p
 * holding units 8p..8p+7 of every gate, k-major (rnnlm_lstm_sequence's and the others' forward); back (ceil(H / 8),
 * G * H, 8), panel q holding W_hh's columns 8q..8q+7 (the backward passes'). Either may be NULL. Units past H are
 * zero. In: w (G * H, H) W_hh. */
void rnnlm_pack(float *panels, float *back, const float *w, int64_t G, int64_t H) {
    const int64_t n_panels = (H + 7) / 8;
#pragma omp parallel for schedule(static) if (G * H * H >= 65536)
    for (int64_t p = 0; p < n_panels; p++) {
        const int64_t j0 = p * 8;
        const int n = H - j0 < 8 ? (int)(H - j0) : 8;
        float *out = panels + p * H * G * 8;
        for (int64_t g = 0; panels && g < G; g++)
            for (int64_t k0 = 0; k0 < H; k0 += 8) { /* an 8 x 8 tile: units j0.. of gate g, columns k0.. */
                const int m = H - k0 < 8 ? (int)(H - k0) : 8;
                float tile[8][8] = {{0}};
                for (int u = 0; u < n; u++)
                    for (int k = 0; k < m; k++) tile[k][u] = w[(g * H + j0 + u) * H + k0 + k];
                for (int k = 0; k < m; k++) memcpy(out + ((k0 + k) * G + g) * 8, tile[k], sizeof tile[k]);
            }
        if (back) {
            float *b = back + p * G * H * 8;
            for (int64_t r = 0; r < G * H; r++) {
                float row[8] = {0};
                memcpy(row, w + r * H + j0, n * sizeof(float));
                memcpy(b + r * 8, row, sizeof row);
            }
        }
    }
}

/* ---- The LSTM's forward pass through a whole sequence, for training ----
 *
 * Each step's product h_{t-1} W_hh^T and its pointwise half in one pass, panel by panel as in rnnlm_step (W_hh packed
 * the same way, K1 = 0), with rows in threes so that each weight loaded serves three rows (`dot_rows`). One OpenMP
 * region runs the whole sequence; the threads split each step's panels and meet once per step (step t reads all of
 * h_{t-1}). A 1x128 LSTM's step at batch 32 is 2 M multiply-adds: through MKL and a separate pointwise loop it cost
 * ~70 us on the development machine, a fork and a Python call included.
 */
/* acc[r][g] = sum over k < K of v[r][k] * w[k][g][:] for R <= 4 rows of v (row stride `stride`) and the G <= 4 gates
 * of a panel. Inlined with R and G constants, the R * G <= 12 sums stay in registers, and with them either the R
 * rows' broadcasts of a k and one weight vector at a time (R < G: the LSTM's 3 rows x 4 gates) or the G weight
 * vectors and one broadcast at a time (the GRU's 4 rows x 3 gates): 16 AVX registers in all, and each weight read
 * from cache serves R rows. Measured against the alternatives at T = 64, 128-512 units, batch 32 and 64: rows in
 * pairs (4 loads per 8 multiply-adds instead of 7 per 12) 0.83-0.95x; 6 rows x 2 gates at a time 0.90-1.0x; the other
 * loop form for each (17 registers: spills) about 0.5x. */
INLINE void dot_rows_f32(int R, int G, int64_t K, const float *w, const float *v, int64_t stride,
                         v8 acc[4][4]) {
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

/* One k pair (k, and k + 1 if `two`) of dot_rows in bfloat16: sum[r][g] gains the products of row r's pair with
 * gate g's weight pairs w[g]. */
INLINE void pair_rows(int R, int G, int two, const float *w, const float *v, int64_t stride, v8 sum[4][4]) {
    v8u x[4];
    for (int r = 0; r < R; r++) x[r] = bf16_pair(v + r * stride, two);
    for (int g = 0; g < G; g++) {
        v8u wk = load8u(w + 8 * g);
        for (int r = 0; r < R; r++) sum[r][g] = dot_pair(sum[r][g], wk, x[r]);
    }
}

/* dot_rows with W_hh in bfloat16 pairs (`bf16`, see "bfloat16 products"), or in float32. */
INLINE void dot_rows(int R, int G, int bf16, int64_t K, const float *w, const float *v, int64_t stride,
                     v8 acc[4][4]) {
    if (!bf16) {
        dot_rows_f32(R, G, K, w, v, stride, acc);
        return;
    }
    v8 sum[4][4];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) sum[r][g] = (v8){0};
    int64_t k = 0;
    for (; k + 1 < K; k += 2, w += 8 * G) pair_rows(R, G, 1, w, v + k, stride, sum);
    if (k < K) pair_rows(R, G, 0, w, v + k, stride, sum);
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) acc[r][g] = sum[r][g];
}

/* The pointwise half for the n <= 8 units j0.. of R <= 3 rows, from pre (per row 4 gates x 8 units, W_hh's part),
 * the rows' x and the bias (or NULL); every pointer is at unit j0 of gate i (the bias's) or of the first row's, rows
 * 4H (x, gates) or H apart. */
INLINE void lstm_cells(int R, int n, int64_t H, v8 pre[4][4], const float *x, const float *bias, const float *c_prev,
                       float *gates, float *c, float *tanh_c, float *h) {
    v8 a[12], cs[3], tc[3], hs[3];
    for (int r = 0; r < R; r++) {
        for (int g = 0; g < 4; g++)
            a[4 * r + g] = read8(x + r * 4 * H + g * H, n) + pre[r][g] + (bias ? read8(bias + g * H, n) : splat(0.0f));
        cs[r] = read8(c_prev + r * H, n);
    }
    lstm_pointwise(R, a, cs, tc, hs);
    for (int r = 0; r < R; r++) {
        if (gates) /* kept for the backward pass */
            for (int g = 0; g < 4; g++) write8(gates + r * 4 * H + g * H, a[4 * r + g], n);
        if (tanh_c) write8(tanh_c + r * H, tc[r], n);
        write8(c + r * H, cs[r], n);
        write8(h + r * H, hs[r], n);
    }
}

INLINE void lstm_rows(int R, int bf16, int64_t p, int64_t b, int64_t H, const float *xg, const float *bias,
                      const float *panel, const float *h_prev, const float *c_prev, float *gates, float *c,
                      float *tanh_c, float *h) {
    v8 acc[4][4];
    dot_rows(R, 4, bf16, H, panel, h_prev + b * H, H, acc);
    const int64_t j0 = p * 8, g = b * 4 * H + j0, s = b * H + j0;
    const int n = H - j0 < 8 ? (int)(H - j0) : 8;
    const float *x = xg + g, *br = bias ? bias + j0 : 0, *cp = c_prev + s;
    float *gt = gates ? gates + g : 0, *tt = tanh_c ? tanh_c + s : 0;
    if (n == 8) /* a constant n: whole-vector loads and stores */
        lstm_cells(R, 8, H, acc, x, br, cp, gt, c + s, tt, h + s);
    else
        lstm_cells(R, n, H, acc, x, br, cp, gt, c + s, tt, h + s);
}

/* Out: h (T, B, H); c (T, B, H) the cell states; gates (T, B, 4H) the activated gates; tanh_c (T, B, H). Without
 * autograd gates and tanh_c are NULL and nothing is kept: c is (2, B, H), steps taking turns, and the last step's
 * cell state ends in c[(T - 1) % 2]. In: xg (T, B, 4H) W_ih x_t, with or without biases; bias (4H) the biases xg
 * lacks, or NULL; panels (ceil(H / 8), H, 4, 8) W_hh packed (bf16: its pairs); h0, c0 (B, H). */
void rnnlm_lstm_sequence(float *h, float *c, float *gates, float *tanh_c, const float *xg, const float *bias,
                         const float *panels, const float *h0, const float *c0, int64_t bf16, int64_t T, int64_t B,
                         int64_t H) {
    const int64_t n_panels = (H + 7) / 8, state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = 0; t < T; t++) {
        const int64_t slot = gates ? t : t % 2, prev = gates ? t - 1 : (t - 1) % 2; /* c's place for step t, t - 1 */
        const float *hp = t ? h + (t - 1) * state : h0, *cp = t ? c + prev * state : c0, *x = xg + t * 4 * state;
        float *gt = gates ? gates + t * 4 * state : 0, *tt = tanh_c ? tanh_c + t * state : 0;
        float *ct = c + slot * state, *ht = h + t * state;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; p++) {
            const float *panel = panels + p * panel_rows_of(H, bf16) * 32;
            int64_t b = 0;
            for (; b + 3 <= B; b += 3) lstm_rows(3, bf16, p, b, H, x, bias, panel, hp, cp, gt, ct, tt, ht);
            if (B - b == 2) lstm_rows(2, bf16, p, b, H, x, bias, panel, hp, cp, gt, ct, tt, ht);
            if (B - b == 1) lstm_rows(1, bf16, p, b, H, x, bias, panel, hp, cp, gt, ct, tt, ht);
        }
    }
}

/* ---- The GRU's forward pass through a whole sequence, for training ----
 *
 * As rnnlm_lstm_sequence, with three gates and rows in fours. */
INLINE void gru_cells(int R, int n, int64_t H, v8 pre[4][4], const float *x, const float *b_hh, const float *h_prev,
                      float *hh, float *gates, float *h) {
    v8 rec[4][3], rz[8], xn[4], hn[4], hp[4], hs[4]; /* rec: W_hh h + b_hh */
    for (int r = 0; r < R; r++) {
        for (int g = 0; g < 3; g++) rec[r][g] = pre[r][g] + read8(b_hh + g * H, n);
        for (int g = 0; g < 2; g++) rz[2 * r + g] = read8(x + r * 3 * H + g * H, n) + rec[r][g];
        xn[r] = read8(x + r * 3 * H + 2 * H, n), hn[r] = rec[r][2], hp[r] = read8(h_prev + r * H, n);
    }
    gru_pointwise(R, rz, xn, hn, hp, hs);
    for (int r = 0; r < R; r++) {
        const int64_t g3 = r * 3 * H;
        if (hh)
            for (int g = 0; g < 3; g++) write8(hh + g3 + g * H, rec[r][g], n);
        if (gates) write8(gates + g3, rz[2 * r], n), write8(gates + g3 + H, rz[2 * r + 1], n),
                   write8(gates + g3 + 2 * H, xn[r], n);
        write8(h + r * H, hs[r], n);
    }
}

INLINE void gru_rows(int R, int bf16, int64_t p, int64_t b, int64_t H, const float *xg, const float *b_hh,
                     const float *panel, const float *h_prev, float *hh, float *gates, float *h) {
    v8 acc[4][4];
    dot_rows(R, 3, bf16, H, panel, h_prev + b * H, H, acc);
    const int64_t j0 = p * 8, g3 = b * 3 * H + j0, s = b * H + j0;
    const int n = H - j0 < 8 ? (int)(H - j0) : 8;
    float *hr = hh ? hh + g3 : 0, *gr = gates ? gates + g3 : 0;
    if (n == 8) /* a constant n: whole-vector loads and stores */
        gru_cells(R, 8, H, acc, xg + g3, b_hh + j0, h_prev + s, hr, gr, h + s);
    else
        gru_cells(R, n, H, acc, xg + g3, b_hh + j0, h_prev + s, hr, gr, h + s);
}

/* Out: h (T, B, H); hh (T, B, 3H) = W_hh h_{t-1} + b_hh (its n part is needed for the gradient of r) and gates
 * (T, B, 3H) r, z, n, both NULL without autograd. In: xg (T, B, 3H) W_ih x_t + b_ih; b_hh (3H); panels
 * (ceil(H / 8), H, 3, 8) W_hh packed (bf16: its pairs); h0 (B, H). */
void rnnlm_gru_sequence(float *h, float *hh, float *gates, const float *xg, const float *b_hh, const float *panels,
                        const float *h0, int64_t bf16, int64_t T, int64_t B, int64_t H) {
    const int64_t n_panels = (H + 7) / 8, state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = 0; t < T; t++) {
        const float *hp = t ? h + (t - 1) * state : h0, *x = xg + t * 3 * state;
        float *hht = hh ? hh + t * 3 * state : 0, *gt = gates ? gates + t * 3 * state : 0, *ht = h + t * state;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; p++) {
            const float *panel = panels + p * panel_rows_of(H, bf16) * 24;
            int64_t b = 0;
            for (; b + 4 <= B; b += 4) gru_rows(4, bf16, p, b, H, x, b_hh, panel, hp, hht, gt, ht);
            switch (B - b) { /* a constant R for each */
            case 3: gru_rows(3, bf16, p, b, H, x, b_hh, panel, hp, hht, gt, ht); break;
            case 2: gru_rows(2, bf16, p, b, H, x, b_hh, panel, hp, hht, gt, ht); break;
            case 1: gru_rows(1, bf16, p, b, H, x, b_hh, panel, hp, hht, gt, ht); break;
            }
        }
    }
}

/* ---- Each cell's backward equations, for one row of 8 units ----
 *
 * Step t's gradient reaching h_t through W_hh is (the gate gradients of step t+1) W_hh, a product whose every output
 * unit needs all the gate gradients of step t+1; the pointwise backward of unit j at step t needs only unit j's. So
 * the backward loops below split the output units in panels of 8, each panel computes its units' share of the
 * product and at once their pointwise backward. */

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

/* The GRU's pointwise backward for the n <= 8 units j0.. of one row, likewise. */
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

/* The plain RNN's pointwise backward, likewise: the gradient reaching h_t (from above, and rec through W_hh from step
 * t+1, or at the last step the final state's), times the slope of tanh or relu at h_t, is the pre-activation's. */
INLINE void rnn_back_cell8(int n, v8 rec, const float *grad_hn, const float *grad_h, const float *h, int relu,
                           float *d_pre) {
    v8 hj = read8(grad_h, n) + (grad_hn ? read8(grad_hn, n) : rec), y = read8(h, n);
    v8 slope = relu ? select8(y > splat(0.0f), splat(1.0f), splat(0.0f)) : 1.0f - y * y;
    write8(d_pre, hj * slope, n);
}

/* One k of dot_back_f32: sum[r][m] += v[r][k] * w_m[k][:], v and w at k. */
INLINE void back_k(int R, int N, const float *w, int64_t second, const float *v, int64_t stride, v8 sum[6][2]) {
    v8 w0 = load8(w), w1 = N > 1 ? load8(w + second) : (v8){0};
    for (int r = 0; r < R; r++) {
        v8 x = splat(v[r * stride]);
        sum[r][0] += x * w0;
        if (N > 1) sum[r][1] += x * w1;
    }
}

/* rec[r][m] = sum over k < K of v[r][k] * w_m[k][:] for R <= 6 rows of v (row stride `stride`) and N <= 2 panels, w_0
 * and w_1 = w_0 + `second`: 12 sums, 2 weights and a broadcast in the 16 AVX registers, each weight loaded serving 6
 * rows (a row block of 8 with one panel, 9 loads per 8 multiply-adds instead of 8 per 12, ran 0.88-0.92x). */
INLINE void dot_back_f32(int R, int N, int64_t K, const float *w, int64_t second, const float *v, int64_t stride,
                         v8 rec[6][2]) {
    /* A sum's next multiply-add waits for its last (several cycles), so a few rows' sums alone leave the FMA units
     * idle: with at most 4 sums, S sets of them take turns over k, and the sets are added at the end. */
    const int S = R * N > 4 ? 1 : R * N > 2 ? 2 : 4;
    v8 sum[4][6][2];
    for (int s = 0; s < S; s++)
        for (int r = 0; r < R; r++) sum[s][r][0] = sum[s][r][1] = (v8){0};
    int64_t k = 0;
#pragma GCC unroll 4
    for (; k + S <= K; k += S)
        for (int s = 0; s < S; s++) back_k(R, N, w + (k + s) * 8, second, v + k + s, stride, sum[s]);
    for (; k < K; k++) back_k(R, N, w + k * 8, second, v + k, stride, sum[0]);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < 2; m++) {
            rec[r][m] = sum[0][r][m];
            for (int s = 1; s < S; s++) rec[r][m] += sum[s][r][m];
        }
}

/* One k pair (k, and k + 1 if `two`) of dot_back in bfloat16: sum[r][m] gains the products of row r's pair with
 * panel m's weight pairs. */
INLINE void pair_back(int R, int N, int two, const float *w, int64_t second, const float *v, int64_t stride,
                      v8 sum[6][2]) {
    v8u w0 = load8u(w), w1 = N > 1 ? load8u(w + second) : (v8u){0};
    for (int r = 0; r < R; r++) {
        v8u x = bf16_pair(v + r * stride, two);
        sum[r][0] = dot_pair(sum[r][0], w0, x);
        if (N > 1) sum[r][1] = dot_pair(sum[r][1], w1, x);
    }
}

/* dot_back with the panels in bfloat16 pairs (`bf16`, see "bfloat16 products"), or in float32. */
INLINE void dot_back(int R, int N, int bf16, int64_t K, const float *w, int64_t second, const float *v,
                     int64_t stride, v8 rec[6][2]) {
    if (!bf16) {
        dot_back_f32(R, N, K, w, second, v, stride, rec);
        return;
    }
    v8 sum[6][2];
    for (int r = 0; r < R; r++) sum[r][0] = sum[r][1] = (v8){0};
    int64_t k = 0;
    for (; k + 1 < K; k += 2, w += 8) pair_back(R, N, 1, w, second, v + k, stride, sum);
    if (k < K) pair_back(R, N, 0, w, second, v + k, stride, sum);
    for (int r = 0; r < R; r++) rec[r][0] = sum[r][0], rec[r][1] = sum[r][1];
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
    const float *x; /* RNN forward: x_t (W_ih x_t and both biases) and h_t */
    float *h;
    const float *out; /* RNN backward: h_t, whose slope the gradient passes through */
    int relu, backward;
    int bf16; /* the panels are bfloat16 pairs */
} PanelStep;

/* The backward passes' pointwise work (G = 4 the LSTM's, G = 3 the GRU's, G = 1 the RNN's; the RNN's forward is
 * `rnn_cells`) for the n <= 8 units j0.. of one row, from `pre`, its share of the product. */
INLINE void panel_cell8(int G, int n, int64_t H, v8 pre, const PanelStep *st, int64_t row, int64_t j0) {
    const int64_t s = row * H + j0, g = row * G * H + j0;
    const float *grad_hn = st->in ? 0 : st->grad_hn + s;
    if (G == 4)
        lstm_back_cell8(n, H, pre, grad_hn, st->grad_h + s, st->gates + g, st->c_prev + s, st->tanh_c + s, st->dc + s,
                        st->d_gates + g);
    else if (G == 3)
        gru_back_cell8(n, H, pre, grad_hn, st->grad_h + s, st->gates + g, st->hh + g, st->h_prev + s,
                       st->grad_h_prev + s, st->d_x + g, st->d_hh + g);
    else
        rnn_back_cell8(n, pre, grad_hn, st->grad_h + s, st->out + s, st->relu, st->d_gates + s);
}

/* The plain RNN's forward for rows b..b+R-1 of the N panels q..: h = tanh (or relu) of x + pre, the R x N together.
 * `whole`: every panel has 8 units (a constant 8 then, for whole-vector loads and stores). */
INLINE void rnn_cells(int R, int N, int whole, int64_t q, int64_t b, int64_t H, v8 pre[6][2], const PanelStep *st) {
    v8 a[12];
    int n[2];
    for (int m = 0; m < N; m++) n[m] = whole || H - (q + m) * 8 >= 8 ? 8 : (int)(H - (q + m) * 8);
    for (int m = 0; m < N; m++)
        for (int r = 0; r < R; r++) a[m * R + r] = read8(st->x + (b + r) * H + (q + m) * 8, n[m]) + pre[r][m];
    rnn_pointwise(R * N, a, st->relu);
    for (int m = 0; m < N; m++)
        for (int r = 0; r < R; r++) write8(st->h + (b + r) * H + (q + m) * 8, a[m * R + r], n[m]);
}

/* Rows b..b+R-1 (R <= 6) of the N <= 2 panels q, q+1: their share of the product, then their pointwise work. */
INLINE void panel_rows(int G, int R, int N, int64_t q, int64_t b, int64_t H, const float *panel, const PanelStep *st) {
    v8 pre[6][2] = {{{0}}};
    if (st->in)
        dot_back(R, N, st->bf16, G * H, panel, panel_rows_of(G * H, st->bf16) * 8, st->in + b * G * H, G * H, pre);
    if (G == 1 && !st->backward) {
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
    const int64_t n_panels = (H + 7) / 8, size = panel_rows_of(G * H, st->bf16) * 8;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < (n_panels + 1) / 2; pair++) {
        const int64_t q = 2 * pair;
        if (q + 1 < n_panels)
            panel_pair(G, 2, q, B, H, panels + q * size, st);
        else
            panel_pair(G, 1, q, B, H, panels + q * size, st);
    }
}

/* ---- The LSTM's backward pass through a whole sequence ----
 *
 * Out: d_gates (T, B, 4H), the gradient of the gates' pre-activations; dc (B, H), in: the gradient reaching c_{T-1},
 * out: the gradient reaching c0. The gradient reaching h0 (d_gates_0 W_hh) is left to the caller. In: back
 * (ceil(H / 8), 4H, 8) W_hh packed by output unit (panel q holds W_hh[:, 8q..8q+7]; bf16: its pairs); gates
 * (T, B, 4H) activated i, f, g, o; c0 (B, H), c and tanh_c (T, B, H); grad_h (T, B, H), the gradient reaching each
 * h_t from above; grad_hn (B, H), the final state's. */
void rnnlm_lstm_backward_sequence(float *d_gates, float *dc, const float *back, const float *gates, const float *c0,
                                  const float *c, const float *tanh_c, const float *grad_h, const float *grad_hn,
                                  int64_t bf16, int64_t T, int64_t B, int64_t H) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = T - 1; t >= 0; t--) {
        const PanelStep st = {.in = t == T - 1 ? 0 : d_gates + (t + 1) * 4 * state, .grad_hn = grad_hn,
                              .gates = gates + t * 4 * state, .grad_h = grad_h + t * state,
                              .c_prev = t ? c + (t - 1) * state : c0, .tanh_c = tanh_c + t * state, .dc = dc,
                              .d_gates = d_gates + t * 4 * state, .bf16 = (int)bf16};
        panel_step(4, B, H, back, &st);
    }
}

/* ---- The GRU's backward pass through a whole sequence ----
 *
 * Out: d_x (T, B, 3H), the gradient of W_ih x_t + b_ih; d_hh (T, B, 3H), of W_hh h_{t-1} + b_hh; grad_h0 (B, H)
 * gains z_0 dh_0 (the caller adds d_hh_0 W_hh); grad_h (T, B, H), in: the gradient reaching each h_t from above; it
 * gains the direct path z_{t+1} dh_{t+1} on the way. In: back (ceil(H / 8), 3H, 8) W_hh packed by output unit
 * (bf16: its pairs); gates r, z, n and hh = W_hh h + b_hh (T, B, 3H) of the forward; h0 (B, H), h (T, B, H); grad_hn
 * (B, H), the final state's gradient. */
void rnnlm_gru_backward_sequence(float *d_x, float *d_hh, float *grad_h0, float *grad_h, const float *back,
                                 const float *gates, const float *hh, const float *h0, const float *h,
                                 const float *grad_hn, int64_t bf16, int64_t T, int64_t B, int64_t H) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = T - 1; t >= 0; t--) {
        const PanelStep st = {.in = t == T - 1 ? 0 : d_hh + (t + 1) * 3 * state, .grad_hn = grad_hn,
                              .gates = gates + t * 3 * state, .grad_h = grad_h + t * state, .hh = hh + t * 3 * state,
                              .h_prev = t ? h + (t - 1) * state : h0,
                              .grad_h_prev = t ? grad_h + (t - 1) * state : grad_h0, .d_x = d_x + t * 3 * state,
                              .d_hh = d_hh + t * 3 * state, .bf16 = (int)bf16};
        panel_step(3, B, H, back, &st);
    }
}

/* ---- The plain RNN's backward pass through a whole sequence ----
 *
 * Out: d_pre (T, B, H), the gradient of each step's pre-activation x_t + W_hh h_{t-1} (the gradient reaching h0,
 * d_pre_0 W_hh, is left to the caller). In: back (ceil(H / 8), H, 8) W_hh packed by output unit (bf16: its pairs);
 * h (T, B, H) the forward's outputs; grad_h (T, B, H) the gradient reaching each h_t from above; grad_hn (B, H), the
 * final state's; relu 0 for tanh, 1 for relu. */
void rnnlm_rnn_backward_sequence(float *d_pre, const float *back, const float *h, const float *grad_h,
                                 const float *grad_hn, int64_t relu, int64_t bf16, int64_t T, int64_t B, int64_t H) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = T - 1; t >= 0; t--) {
        const PanelStep st = {.in = t == T - 1 ? 0 : d_pre + (t + 1) * state, .grad_hn = grad_hn,
                              .grad_h = grad_h + t * state, .out = h + t * state, .d_gates = d_pre + t * state,
                              .relu = (int)relu, .backward = 1, .bf16 = (int)bf16};
        panel_step(1, B, H, back, &st);
    }
}

/* ---- The plain RNN's forward pass through a whole sequence ----
 *
 * h_t = tanh (or relu) of x_t + W_hh h_{t-1}, through the loops above with G = 1. Out: h (T, B, H). In: xg (T, B, H)
 * W_ih x_t + b_ih + b_hh; panels (ceil(H / 8), H, 1, 8) W_hh packed (bf16: its pairs); h0 (B, H); relu 0 for tanh, 1
 * for relu. */
void rnnlm_rnn_sequence(float *h, const float *xg, const float *panels, const float *h0, int64_t relu, int64_t bf16,
                        int64_t T, int64_t B, int64_t H) {
    const int64_t state = B * H;
#pragma omp parallel if (B * H * H >= 65536)
    for (int64_t t = 0; t < T; t++) {
        const PanelStep st = {.in = t ? h + (t - 1) * state : h0, .x = xg + t * state, .h = h + t * state,
                              .relu = (int)relu, .bf16 = (int)bf16};
        panel_step(1, B, H, panels, &st);
    }
}

/* ---- One step of a whole stack (sampling): the products and the pointwise half in one pass over the weights ----
 *
 * At batch 1 a step's products are matrix-vector products, and their time is reading the weights: 12 MB per
 * character for a 2x512 LSTM. A general product would also store the 4H pre-activations for a pointwise loop to read
 * back, and at a larger batch one step's product is too small for MKL to run at speed. Here each layer's weights are
 * packed once (rnnlm/fastpath.py, `step_weights`) into panels of 8 hidden units: panel p holds, for units 8p..8p+7,
 * row k of every gate's weights, k-major: first the K1 columns of W_ih (none when layer 0 is given its input
 * projection x), then the H columns of W_hh, each row G gates x 8 units, contiguous. A panel is read front to back
 * once per block of rows, as in the sequence loops (rows in threes for the LSTM, fours for the GRU, sixes beside a
 * pair of panels for the RNN), its units' gates end in registers, and the pointwise half runs on them there. Panels
 * share nothing, so the threads split each layer's panels and meet once per layer.
 */

/* acc[g] = sum over k < K of v[k] * w[k][g][:], two k at a time into separate sums (so that twice G multiply-adds are
 * in flight): a row alone, where dot_rows would keep one set of G sums. Inlined with G a constant, the sums stay in
 * registers. */
INLINE void dot_panel(int G, int64_t K, const float *w, const float *v, v8 *acc) {
    v8 even[4] = {0}, odd[4] = {0};
    int64_t k = 0;
    for (; k + 1 < K; k += 2, w += 16 * G)
        for (int g = 0; g < G; g++) {
            even[g] += v[k] * load8(w + 8 * g);
            odd[g] += v[k + 1] * load8(w + 8 * (G + g));
        }
    if (k < K)
        for (int g = 0; g < G; g++) even[g] += v[k] * load8(w + 8 * g);
    for (int g = 0; g < G; g++) acc[g] = even[g] + odd[g];
}

/* Rows b..b+R-1 of panel p of an LSTM (G = 4, R <= 3) or GRU (G = 3, R <= 4) layer. */
INLINE void step_rows(int G, int R, int64_t p, int64_t b, int64_t H, int64_t K1, const float *panels,
                      const float *bias, const float *x, const float *v1, const float *h_prev, float *c, float *h) {
    const int S = G == 3 ? 2 : 1; /* the GRU keeps b_hh apart: r multiplies it */
    const int64_t j0 = p * 8, s = b * H + j0;
    const int n = H - j0 < 8 ? (int)(H - j0) : 8;
    const float *panel = panels + p * (K1 + H) * G * 8, *bx = bias + p * S * G * 8, *bh = bx + (S - 1) * G * 8;
    v8 in[4][4] = {{{0}}}, rec[4][4], out[4];
    if (R == 1) {
        if (K1 > 0) dot_panel(G, K1, panel, v1 + b * K1, in[0]);
        dot_panel(G, H, panel + K1 * G * 8, h_prev + b * H, rec[0]);
    } else {
        if (K1 > 0) dot_rows_f32(R, G, K1, panel, v1 + b * K1, K1, in);
        dot_rows_f32(R, G, H, panel + K1 * G * 8, h_prev + b * H, H, rec);
    }
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) { /* the input's part of gate g with the biases that add (the LSTM's b_ih + b_hh,
                                       * the GRU's b_ih), and W_hh's part with the GRU's b_hh */
            in[r][g] += load8(bx + g * 8) + (x ? read8(x + (b + r) * G * H + g * H + j0, n) : splat(0.0f));
            if (S == 2) rec[r][g] += load8(bh + g * 8);
        }
    if (G == 4) {
        v8 a[12], cs[3], tc[3];
        for (int r = 0; r < R; r++) {
            for (int g = 0; g < 4; g++) a[4 * r + g] = in[r][g] + rec[r][g];
            cs[r] = read8(c + s + r * H, n);
        }
        lstm_pointwise(R, a, cs, tc, out);
        for (int r = 0; r < R; r++) write8(c + s + r * H, cs[r], n);
    } else {
        v8 rz[8], xn[4], hn[4], hp[4];
        for (int r = 0; r < R; r++) {
            rz[2 * r] = in[r][0] + rec[r][0], rz[2 * r + 1] = in[r][1] + rec[r][1];
            xn[r] = in[r][2], hn[r] = rec[r][2], hp[r] = read8(h_prev + s + r * H, n);
        }
        gru_pointwise(R, rz, xn, hn, hp, out);
    }
    for (int r = 0; r < R; r++) write8(h + s + r * H, out[r], n);
}

/* Rows b..b+R-1 (R <= 6) of the N <= 2 panels q, q+1 of a plain RNN layer (relu or tanh): with one gate a panel, the
 * sums of one panel alone would leave the multiply-adds waiting, so rows take a pair of panels, as in its sequence
 * loop. */
INLINE void step_rnn_rows(int relu, int R, int N, int64_t q, int64_t b, int64_t H, int64_t K1, const float *panels,
                          const float *bias, const float *x, const float *v1, const float *h_prev, float *h) {
    const float *panel = panels + q * (K1 + H) * 8;
    const int64_t second = (K1 + H) * 8;
    v8 in[6][2] = {{{0}}}, rec[6][2], a[12];
    int n[2];
    if (K1 > 0) dot_back_f32(R, N, K1, panel, second, v1 + b * K1, K1, in);
    dot_back_f32(R, N, H, panel + K1 * 8, second, h_prev + b * H, H, rec);
    for (int m = 0; m < N; m++) {
        const int64_t j0 = (q + m) * 8;
        n[m] = H - j0 < 8 ? (int)(H - j0) : 8;
        for (int r = 0; r < R; r++)
            a[m * R + r] = in[r][m] + rec[r][m] + load8(bias + j0)
                           + (x ? read8(x + (b + r) * H + j0, n[m]) : splat(0.0f));
    }
    rnn_pointwise(R * N, a, relu);
    for (int m = 0; m < N; m++)
        for (int r = 0; r < R; r++) write8(h + (b + r) * H + (q + m) * 8, a[m * R + r], n[m]);
}

/* Every row of one LSTM or GRU layer's panel p, in threes (LSTM) or fours (GRU); R a constant in each call. */
INLINE void step_panel(int G, int64_t p, int64_t B, int64_t H, int64_t K1, const float *panels, const float *bias,
                       const float *x, const float *v1, const float *h_prev, float *c, float *h) {
    const int rows = G == 4 ? 3 : 4;
    int64_t b = 0;
    for (; b + rows <= B; b += rows) step_rows(G, rows, p, b, H, K1, panels, bias, x, v1, h_prev, c, h);
    switch (B - b) { /* fewer than `rows` left (3: the GRU's only) */
    case 3: step_rows(G, 3, p, b, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    case 2: step_rows(G, 2, p, b, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    case 1: step_rows(G, 1, p, b, H, K1, panels, bias, x, v1, h_prev, c, h); break;
    }
}

/* Every row of a plain RNN layer's N panels q.., in sixes; R a constant in each call. */
INLINE void step_rnn_panels(int relu, int N, int64_t q, int64_t B, int64_t H, int64_t K1, const float *panels,
                            const float *bias, const float *x, const float *v1, const float *h_prev, float *h) {
    int64_t b = 0;
    for (; b + 6 <= B; b += 6) step_rnn_rows(relu, 6, N, q, b, H, K1, panels, bias, x, v1, h_prev, h);
    switch (B - b) {
    case 5: step_rnn_rows(relu, 5, N, q, b, H, K1, panels, bias, x, v1, h_prev, h); break;
    case 4: step_rnn_rows(relu, 4, N, q, b, H, K1, panels, bias, x, v1, h_prev, h); break;
    case 3: step_rnn_rows(relu, 3, N, q, b, H, K1, panels, bias, x, v1, h_prev, h); break;
    case 2: step_rnn_rows(relu, 2, N, q, b, H, K1, panels, bias, x, v1, h_prev, h); break;
    case 1: step_rnn_rows(relu, 1, N, q, b, H, K1, panels, bias, x, v1, h_prev, h); break;
    }
}

/* One layer, inside the parallel region: the threads share out its panels (the RNN's in pairs), and the loop's
 * closing barrier lets the next layer read all of this one's h. */
INLINE void step_layer(int kind, int64_t B, int64_t H, int64_t K1, const float *panels, const float *bias,
                       const float *x, const float *v1, const float *h_prev, float *c, float *h) {
    const int64_t n_panels = (H + 7) / 8;
    if (kind < 2) {
#pragma omp for schedule(static)
        for (int64_t pair = 0; pair < (n_panels + 1) / 2; pair++) {
            const int64_t q = 2 * pair;
            if (q + 1 < n_panels)
                step_rnn_panels(kind, 2, q, B, H, K1, panels, bias, x, v1, h_prev, h);
            else
                step_rnn_panels(kind, 1, q, B, H, K1, panels, bias, x, v1, h_prev, h);
        }
        return;
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n_panels; p++) {
        if (kind == 2) /* a constant G for each, so that the compiler unrolls the gate loops */
            step_panel(4, p, B, H, K1, panels, bias, x, v1, h_prev, c, h);
        else
            step_panel(3, p, B, H, K1, panels, bias, x, v1, h_prev, c, h);
    }
}

/* kind: 0 RNN tanh, 1 RNN relu, 2 LSTM, 3 GRU. Sizes: L layers, B rows, H units, K0 input columns of layer 0 (0 when
 * x is given). weights: for each layer its panels (ceil(H / 8), K1 + H, G, 8) and its bias (ceil(H / 8), S, G, 8): S =
 * 1, the sum of the biases that add (without b_ih when x has it), or for the GRU S = 2, b_ih (or zero) then b_hh.
 * Out: h (L, B, H), the new state, which must not overlap h_prev (other panels are still reading it); c (L, B, H), the
 * LSTM's cell state, updated in place (else NULL). In: x (B, G*H) layer 0's input projection, or NULL; v0 (B, K0)
 * layer 0's input, or NULL; h_prev (L, B, H). Layer l > 0 reads layer l - 1's new h. */
void rnnlm_step(float *h, float *c, const float *const *weights, const float *x, const float *v0, const float *h_prev,
                int64_t kind, int64_t L, int64_t B, int64_t H, int64_t K0) {
    const int64_t n_panels = (H + 7) / 8, G = kind == 2 ? 4 : (kind == 3 ? 3 : 1);
    const int64_t madds = n_panels * G * 8 * B * (K0 + H + (L - 1) * 2 * H);
    (void)madds; /* unused without OpenMP; with it, a step of few multiply-adds stays on one thread */
#pragma omp parallel if (madds >= 65536)
    for (int64_t l = 0; l < L; l++) {
        const int64_t K1 = l == 0 ? K0 : H, state = l * B * H;
        step_layer((int)kind, B, H, K1, weights[2 * l], weights[2 * l + 1], l == 0 ? x : 0,
                   l == 0 ? v0 : h + state - B * H, h_prev + state, c ? c + state : 0, h + state);
    }
}
