/* The exact network's hot loops (compiled.py builds and checks them; exact_network.py says
   what each computes):

   intconv      integer tap products of the quantization-aware layers,
                out[r][n] = sum over taps t and input channels c of in[base[r] + offset[t]][c] * w[t][c][n]
   floatconv    the same sum in float64 for the layers that are not quantization-aware
   to_int16     a layer's input read as 16-bit integers on its grid
   norm_silu    the channel norm, FiLM and SiLU lookup; silu: the lookup alone
   to_grid      the rounding to the activation grid (of a sum)
   fourier      the stem's input: z on its grid and its Fourier features, unshuffled

   intconv: in are 16-bit integers (rows x cin, cin even), w 16-bit integers packed in pairs
   along c, (taps, cin / 2, n_pad, 2) with n_pad a multiple of 16; out: float64, rows x n_pad.
   Every product and partial sum is an integer: the caller passes ``chunk``, how many pairs of
   products stay below 2^31 in 32 bits (for |in| < 2^15 and 8-bit weights, 258; an
   upsampler's merged taps are larger), after which they move to 64-bit sums, written
   exactly as float64 (below 2^53). Sums that are exact do not depend on their order, and
   every other operation is one correctly rounded IEEE operation in the torch code's order
   (in a vector lane or a scalar one), so each vector path (AVX2, SSE2, NEON) and its plain C
   path give the same numbers, on every machine and with any number of threads (tests/kernels/cross_check.c
   checks an ARM build against this machine's under an emulator). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The norm's IEEE operations must round one by one, in double: no fused multiply-adds, no
   fast-math reassociation, no x87 extended precision (the build fails, and the codec runs
   its torch code instead, where any of these is in force). */
#pragma STDC FP_CONTRACT OFF
#if defined(__FAST_MATH__) || (defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0)
#error "compiled.c needs strict IEEE double arithmetic"
#endif

#define ROWS 4    /* output rows per tile */
#define COLS 16   /* output columns per tile */

/* a sum, exact as float64, times the channel's factor, plus its bias: two IEEE roundings in
   this order (built with -ffp-contract=off, so never one fused multiply-add) */
static inline double scaled(int64_t sum, const double *factor, const double *bias, int64_t n) {
    return factor ? (double)sum * factor[n] + bias[n] : (double)sum;
}

/* the tiles' shared ends: 32-bit partial sums moved into the 64-bit ones, and a row of n
   finished sums written (scaled) from column col on */
static inline void add_partial(int64_t *acc, const int32_t *part, int n) {
    for (int s = 0; s < n; ++s) acc[s] += part[s];
}

static inline void write_sums(double *out, const int64_t *acc, const int32_t *part, int n, const double *factor,
                              const double *bias, int64_t col) {
    for (int s = 0; s < n; ++s) out[s] = scaled(acc[s] + part[s], factor, bias, col + s);
}

static void tile_plain(const int16_t *in, const int64_t *base, int64_t r0, int rows, const int64_t *offset,
                       int taps, const int16_t *w, int cin, int64_t n_pad, int64_t j, double *out, int chunk,
                       const double *factor, const double *bias) {
    /* the AVX2 tile's sums in portable C: 32-bit sums of pairs of products (which compilers
       vectorise, SSE2's pmaddwd or NEON), moved into 64-bit ones every `chunk` pairs */
    int64_t acc[ROWS][COLS];
    int32_t part[ROWS][COLS];
    memset(acc, 0, sizeof acc);
    memset(part, 0, sizeof part);
    int pairs = cin / 2, counted = 0;
    for (int t = 0; t < taps; ++t) {
        const int16_t *a[ROWS];
        for (int r = 0; r < ROWS; ++r) /* a short tile repeats its first row, whose sums are dropped */
            a[r] = in + (base[r0 + (r < rows ? r : 0)] + offset[t]) * cin;
        const int16_t *wt = w + (int64_t)t * pairs * n_pad * 2 + j * 2;
        for (int p = 0; p < pairs; ++p) {
            const int16_t *wp = wt + (int64_t)p * n_pad * 2;
            for (int r = 0; r < ROWS; ++r) {
                int32_t x0 = a[r][2 * p], x1 = a[r][2 * p + 1];
                for (int s = 0; s < COLS; ++s) part[r][s] += x0 * wp[2 * s] + x1 * wp[2 * s + 1];
            }
            if (++counted == chunk) {
                for (int r = 0; r < ROWS; ++r) add_partial(acc[r], part[r], COLS);
                memset(part, 0, sizeof part);
                counted = 0;
            }
        }
    }
    for (int r = 0; r < rows; ++r) write_sums(out + (r0 + r) * n_pad + j, acc[r], part[r], COLS, factor, bias, j);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
__attribute__((target("avx2"))) static void tile_avx2(const int16_t *in, const int64_t *base, int64_t r0, int rows,
                                                      const int64_t *offset, int taps, const int16_t *w, int cin,
                                                      int64_t n_pad, int64_t j, double *out, int chunk,
                                                      const double *factor, const double *bias) {
    int64_t acc[ROWS][COLS];
    memset(acc, 0, sizeof acc);
    __m256i sum[ROWS][2];
    for (int r = 0; r < ROWS; ++r) sum[r][0] = sum[r][1] = _mm256_setzero_si256();
    int pairs = cin / 2, counted = 0;
    int32_t spill[COLS];
    for (int t = 0; t < taps; ++t) {
        const int32_t *a[ROWS];
        for (int r = 0; r < ROWS; ++r) /* a short tile repeats its first row, whose sums are dropped */
            a[r] = (const int32_t *)(in + (base[r0 + (r < rows ? r : 0)] + offset[t]) * cin);
        const int16_t *wt = w + (int64_t)t * pairs * n_pad * 2 + j * 2;
        for (int p = 0; p < pairs; ++p) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(wt + (int64_t)p * n_pad * 2));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(wt + (int64_t)p * n_pad * 2 + 16));
            for (int r = 0; r < ROWS; ++r) {
                int32_t pair;
                memcpy(&pair, a[r] + p, sizeof pair);
                __m256i v = _mm256_set1_epi32(pair);
                sum[r][0] = _mm256_add_epi32(sum[r][0], _mm256_madd_epi16(v, w0));
                sum[r][1] = _mm256_add_epi32(sum[r][1], _mm256_madd_epi16(v, w1));
            }
            if (++counted == chunk) {
                for (int r = 0; r < ROWS; ++r) {
                    _mm256_storeu_si256((__m256i *)spill, sum[r][0]);
                    _mm256_storeu_si256((__m256i *)(spill + 8), sum[r][1]);
                    add_partial(acc[r], spill, COLS);
                    sum[r][0] = sum[r][1] = _mm256_setzero_si256();
                }
                counted = 0;
            }
        }
    }
    for (int r = 0; r < rows; ++r) {
        _mm256_storeu_si256((__m256i *)spill, sum[r][0]);
        _mm256_storeu_si256((__m256i *)(spill + 8), sum[r][1]);
        write_sums(out + (r0 + r) * n_pad + j, acc[r], spill, COLS, factor, bias, j);
    }
}
#endif

#ifdef HAVE_AVX2_PATH
/* the AVX2 tile's sums with SSE2's 128-bit vpmaddwd, which every x86-64 CPU has: 8 columns
   at a time (the 16 registers hold 4 rows x 8 sums, not 16) */
static void tile_sse2(const int16_t *in, const int64_t *base, int64_t r0, int rows, const int64_t *offset, int taps,
                      const int16_t *w, int cin, int64_t n_pad, int64_t j, double *out, int chunk,
                      const double *factor, const double *bias) {
    int pairs = cin / 2;
    int32_t spill[8];
    for (int64_t h = j; h < j + COLS; h += 8) {
        int64_t acc[ROWS][8];
        memset(acc, 0, sizeof acc);
        __m128i sum[ROWS][2];
        for (int r = 0; r < ROWS; ++r) sum[r][0] = sum[r][1] = _mm_setzero_si128();
        int counted = 0;
        for (int t = 0; t < taps; ++t) {
            const int16_t *a[ROWS];
            for (int r = 0; r < ROWS; ++r) /* a short tile repeats its first row, whose sums are dropped */
                a[r] = in + (base[r0 + (r < rows ? r : 0)] + offset[t]) * cin;
            const int16_t *wt = w + (int64_t)t * pairs * n_pad * 2 + h * 2;
            for (int p = 0; p < pairs; ++p) {
                __m128i w0 = _mm_loadu_si128((const __m128i *)(wt + (int64_t)p * n_pad * 2));
                __m128i w1 = _mm_loadu_si128((const __m128i *)(wt + (int64_t)p * n_pad * 2 + 8));
                for (int r = 0; r < ROWS; ++r) {
                    int32_t pair;
                    memcpy(&pair, a[r] + 2 * p, sizeof pair);
                    __m128i v = _mm_set1_epi32(pair);
                    sum[r][0] = _mm_add_epi32(sum[r][0], _mm_madd_epi16(v, w0));
                    sum[r][1] = _mm_add_epi32(sum[r][1], _mm_madd_epi16(v, w1));
                }
                if (++counted == chunk) {
                    for (int r = 0; r < ROWS; ++r) {
                        _mm_storeu_si128((__m128i *)spill, sum[r][0]);
                        _mm_storeu_si128((__m128i *)(spill + 4), sum[r][1]);
                        add_partial(acc[r], spill, 8);
                        sum[r][0] = sum[r][1] = _mm_setzero_si128();
                    }
                    counted = 0;
                }
            }
        }
        for (int r = 0; r < rows; ++r) {
            _mm_storeu_si128((__m128i *)spill, sum[r][0]);
            _mm_storeu_si128((__m128i *)(spill + 4), sum[r][1]);
            write_sums(out + (r0 + r) * n_pad + h, acc[r], spill, 8, factor, bias, h);
        }
    }
}
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define HAVE_NEON_PATH 1
/* the AVX2 tile's sums on 64-bit ARM (where NEON is always there): each pair of weights
   loaded apart (vld2q), the two products added to 32-bit sums one by one (vmlal), moved into
   64-bit ones every `chunk` pairs as there; the same exact integers */
static void tile_neon(const int16_t *in, const int64_t *base, int64_t r0, int rows, const int64_t *offset,
                      int taps, const int16_t *w, int cin, int64_t n_pad, int64_t j, double *out, int chunk,
                      const double *factor, const double *bias) {
    int64_t acc[ROWS][COLS];
    memset(acc, 0, sizeof acc);
    int32x4_t sum[ROWS][4];
    for (int r = 0; r < ROWS; ++r) sum[r][0] = sum[r][1] = sum[r][2] = sum[r][3] = vdupq_n_s32(0);
    int pairs = cin / 2, counted = 0;
    int32_t spill[COLS];
    for (int t = 0; t < taps; ++t) {
        const int16_t *a[ROWS];
        for (int r = 0; r < ROWS; ++r) /* a short tile repeats its first row, whose sums are dropped */
            a[r] = in + (base[r0 + (r < rows ? r : 0)] + offset[t]) * cin;
        const int16_t *wt = w + (int64_t)t * pairs * n_pad * 2 + j * 2;
        for (int p = 0; p < pairs; ++p) {
            /* columns 0-7 and 8-15: val[0] the weights of channel 2p, val[1] those of 2p + 1 */
            int16x8x2_t lo = vld2q_s16(wt + (int64_t)p * n_pad * 2);
            int16x8x2_t hi = vld2q_s16(wt + (int64_t)p * n_pad * 2 + 16);
            for (int r = 0; r < ROWS; ++r) {
                int16_t x0 = a[r][2 * p], x1 = a[r][2 * p + 1];
                sum[r][0] = vmlal_n_s16(vmlal_n_s16(sum[r][0], vget_low_s16(lo.val[0]), x0), vget_low_s16(lo.val[1]), x1);
                sum[r][1] = vmlal_high_n_s16(vmlal_high_n_s16(sum[r][1], lo.val[0], x0), lo.val[1], x1);
                sum[r][2] = vmlal_n_s16(vmlal_n_s16(sum[r][2], vget_low_s16(hi.val[0]), x0), vget_low_s16(hi.val[1]), x1);
                sum[r][3] = vmlal_high_n_s16(vmlal_high_n_s16(sum[r][3], hi.val[0], x0), hi.val[1], x1);
            }
            if (++counted == chunk) {
                for (int r = 0; r < ROWS; ++r) {
                    for (int k = 0; k < 4; ++k) {
                        vst1q_s32(spill + 4 * k, sum[r][k]);
                        sum[r][k] = vdupq_n_s32(0);
                    }
                    add_partial(acc[r], spill, COLS);
                }
                counted = 0;
            }
        }
    }
    for (int r = 0; r < rows; ++r) {
        for (int k = 0; k < 4; ++k) vst1q_s32(spill + 4 * k, sum[r][k]);
        write_sums(out + (r0 + r) * n_pad + j, acc[r], spill, COLS, factor, bias, j);
    }
}
#endif

/* path 1: AVX2 where the CPU has it, else SSE2 (x86-64) or NEON (64-bit ARM) for the tap
   products; path 0: plain C; path 2: the tap products' 128-bit paths (for the tests) */
static int use_avx2(int path) {
#ifdef HAVE_AVX2_PATH
    return path == 1 && __builtin_cpu_supports("avx2");
#else
    (void)path;
    return 0;
#endif
}

/* the tap products' 128-bit paths: NEON on 64-bit ARM (path 1 or 2), SSE2 on an x86-64 CPU
   without AVX2 (path 1; path 2 takes it even on an AVX2 CPU) */
static int use_neon(int path) {
#ifdef HAVE_NEON_PATH
    return path >= 1;
#else
    (void)path;
    return 0;
#endif
}

static int use_sse2(int path) {
#ifdef HAVE_AVX2_PATH
    return path == 2 || (path == 1 && !use_avx2(path));
#else
    (void)path;
    return 0;
#endif
}

/* path: 0 plain C, 1 the fastest the CPU has (AVX2, else SSE2 on x86-64, NEON on 64-bit ARM);
   returns the path taken: 0, 1 (AVX2) or 2 (a 128-bit path).
   factor, bias: n_pad values each, or both NULL for the bare sums. */
int intconv(const int16_t *in, const int64_t *base, int64_t rows, const int64_t *offset, int taps,
            const int16_t *w, int cin, int64_t n_pad, double *out, int chunk, const double *factor,
            const double *bias, int threads, int path) {
    int avx2 = use_avx2(path), sse2 = use_sse2(path), neon = use_neon(path);
    int64_t tiles = (rows + ROWS - 1) / ROWS;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t i = 0; i < tiles; ++i) {
        int64_t r0 = i * ROWS;
        int count = (int)(rows - r0 < ROWS ? rows - r0 : ROWS);
        for (int64_t j = 0; j < n_pad; j += COLS) {
#ifdef HAVE_AVX2_PATH
            if (avx2) {
                tile_avx2(in, base, r0, count, offset, taps, w, cin, n_pad, j, out, chunk, factor, bias);
                continue;
            }
            if (sse2) {
                tile_sse2(in, base, r0, count, offset, taps, w, cin, n_pad, j, out, chunk, factor, bias);
                continue;
            }
#endif
#ifdef HAVE_NEON_PATH
            if (neon) {
                tile_neon(in, base, r0, count, offset, taps, w, cin, n_pad, j, out, chunk, factor, bias);
                continue;
            }
#endif
            tile_plain(in, base, r0, count, offset, taps, w, cin, n_pad, j, out, chunk, factor, bias);
        }
    }
    (void)sse2, (void)neon;
    return avx2 ? 1 : (sse2 || neon) ? 2 : 0;
}

/* x (h, w, c) float64 on any grid finer than 2^e, times scale = 2^-e (exact), rounded half to
   even (the default rounding mode), clamped to +-(2^15 - 1), into the int16 image out (rows
   of out_w pixels) at row top, column left; the rest of out is left as it is (zeros). */
static inline int16_t int16_of(double v) {
    v = nearbyint(v);
    /* clamped so that even a NaN lands in range (a conversion out of range is undefined) */
    return (int16_t)(v <= 32767.0 ? (v >= -32767.0 ? v : -32767.0) : 32767.0);
}

#ifdef HAVE_AVX2_PATH
/* the same products, roundings and clamps as int16_of, four at a time */
__attribute__((target("avx2"))) static int64_t int16_row_avx2(const double *row, int64_t n, double scale,
                                                              int16_t *dst) {
    const __m256d s = _mm256_set1_pd(scale), high = _mm256_set1_pd(32767.0), low = _mm256_set1_pd(-32767.0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_round_pd(_mm256_mul_pd(_mm256_loadu_pd(row + i), s),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm256_blendv_pd(high, v, _mm256_cmp_pd(v, high, _CMP_LE_OQ)); /* a NaN becomes high */
        v = _mm256_blendv_pd(low, v, _mm256_cmp_pd(v, low, _CMP_GE_OQ));
        __m128i k = _mm256_cvtpd_epi32(v);
        _mm_storel_epi64((__m128i *)(dst + i), _mm_packs_epi32(k, k));
    }
    return i;
}
#endif

/* path as intconv's */
void to_int16(const double *x, int64_t h, int64_t w, int64_t c, double scale, int16_t *out, int64_t out_w,
              int64_t top, int64_t left, int threads, int path) {
    int avx2 = use_avx2(path);
    (void)threads;
    (void)avx2;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t y = 0; y < h; ++y) {
        const double *row = x + y * w * c;
        int16_t *dst = out + ((y + top) * out_w + left) * c;
        int64_t i = 0;
#ifdef HAVE_AVX2_PATH
        if (avx2) i = int16_row_avx2(row, w * c, scale, dst);
#endif
        for (; i < w * c; ++i) dst[i] = int16_of(row[i] * scale);
    }
}

/* The exact network's ChannelNorm, then (film) times mul plus add, then SiLU by its table, for
   each of the rows pixels of x (rows, c), every value on the grid 2^-12 (so the sums of x and
   x^2 are exact in any order): the IEEE operations of exact_network._Norm and
   ExactNetwork.silu, one by one, in their order. table: SiLU at index = round(y 2^12) +
   offset, the index clamped to +-limit first; NULL: y itself (for the check that these
   operations round as torch's do, before a lookup can hide a last-bit difference). */
static inline int64_t lookup_index(double y, int64_t offset, double limit) {
    double k = y * 4096.0;
    k = k <= limit ? (k >= -limit ? k : -limit) : limit; /* a NaN reads the table's end, not past it */
    return (int64_t)nearbyint(k) + offset;
}

static inline double lookup(double y, const double *table, int64_t offset, double limit) {
    return table[lookup_index(y, offset, limit)];
}

static inline double normed(double v, double mean, double deviation, const double *weight, const double *bias,
                            const double *mul, const double *add, const double *table, int64_t offset,
                            double limit, int64_t i) {
    double y = (v - mean) / deviation;
    y = y * weight[i] + bias[i];
    if (mul) y = y * mul[i] + add[i];
    return table ? lookup(y, table, offset, limit) : y;
}

#ifdef HAVE_AVX2_PATH
/* lookup_index() of four values, and lookup() */
__attribute__((target("avx2"))) static inline __m128i lookup_index_avx2(__m256d y, int64_t offset, double limit) {
    const __m256d high = _mm256_set1_pd(limit), low = _mm256_set1_pd(-limit);
    __m256d k = _mm256_mul_pd(y, _mm256_set1_pd(4096.0));
    k = _mm256_blendv_pd(high, k, _mm256_cmp_pd(k, high, _CMP_LE_OQ)); /* a NaN becomes high */
    k = _mm256_blendv_pd(low, k, _mm256_cmp_pd(k, low, _CMP_GE_OQ));
    k = _mm256_round_pd(k, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm_add_epi32(_mm256_cvtpd_epi32(k), _mm_set1_epi32((int)offset));
}

__attribute__((target("avx2"))) static inline __m256d lookup_avx2(__m256d y, const double *table, int64_t offset,
                                                                  double limit) {
    return _mm256_i32gather_pd(table, lookup_index_avx2(y, offset, limit), 8);
}

/* one pixel's sums (exact, so in any order) and then normed() four channels at a time: the
   same IEEE operations, each correctly rounded in a vector lane as in a scalar one */
__attribute__((target("avx2"))) static void norm_pixel_avx2(const double *v, int64_t c, const double *weight,
                                                            const double *bias, const double *mul, const double *add,
                                                            const double *table, int64_t offset, double limit,
                                                            double *out, const int16_t *table16, int16_t *out16) {
    __m256d sum4 = _mm256_setzero_pd(), squares4 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 4 <= c; i += 4) {
        __m256d x = _mm256_loadu_pd(v + i);
        sum4 = _mm256_add_pd(sum4, x);
        squares4 = _mm256_add_pd(squares4, _mm256_mul_pd(x, x));
    }
    double lanes[4], lanes2[4];
    _mm256_storeu_pd(lanes, sum4);
    _mm256_storeu_pd(lanes2, squares4);
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    double squares = (lanes2[0] + lanes2[1]) + (lanes2[2] + lanes2[3]);
    for (int64_t j = i; j < c; ++j) {
        sum += v[j];
        squares += v[j] * v[j];
    }
    double mean = sum / (double)c;
    double variance = squares / (double)c - mean * mean;
    double deviation = sqrt((variance < 0.0 ? 0.0 : variance) + 1e-6);
    const __m256d m4 = _mm256_set1_pd(mean), d4 = _mm256_set1_pd(deviation);
    for (i = 0; i + 4 <= c; i += 4) {
        __m256d y = _mm256_div_pd(_mm256_sub_pd(_mm256_loadu_pd(v + i), m4), d4);
        y = _mm256_add_pd(_mm256_mul_pd(y, _mm256_loadu_pd(weight + i)), _mm256_loadu_pd(bias + i));
        if (mul) y = _mm256_add_pd(_mm256_mul_pd(y, _mm256_loadu_pd(mul + i)), _mm256_loadu_pd(add + i));
        if (out16) {
            int32_t index[4];
            _mm_storeu_si128((__m128i *)index, lookup_index_avx2(y, offset, limit));
            for (int j = 0; j < 4; ++j) out16[i + j] = table16[index[j]];
        } else {
            _mm256_storeu_pd(out + i, table ? lookup_avx2(y, table, offset, limit) : y);
        }
    }
    for (; i < c; ++i) {
        if (out16)
            out16[i] = table16[lookup_index(normed(v[i], mean, deviation, weight, bias, mul, add, NULL, 0, 0.0, i),
                                            offset, limit)];
        else
            out[i] = normed(v[i], mean, deviation, weight, bias, mul, add, table, offset, limit, i);
    }
}
#endif

/* one pixel's norm (and FiLM and lookup) into out, or, with out16, its SiLU looked up in
   table16 (the same table as a layer's 16-bit integers) into out16 */
static void norm_pixel(const double *v, int64_t c, const double *weight, const double *bias, const double *mul,
                       const double *add, const double *table, int64_t offset, double limit, double *out,
                       const int16_t *table16, int16_t *out16, int avx2) {
#ifdef HAVE_AVX2_PATH
    if (avx2) {
        norm_pixel_avx2(v, c, weight, bias, mul, add, table, offset, limit, out, table16, out16);
        return;
    }
#endif
    (void)avx2;
    double sum = 0.0, squares = 0.0;
    for (int64_t i = 0; i < c; ++i) {
        sum += v[i];
        squares += v[i] * v[i];
    }
    double mean = sum / (double)c;
    double variance = squares / (double)c - mean * mean;
    double deviation = sqrt((variance < 0.0 ? 0.0 : variance) + 1e-6);
    for (int64_t i = 0; i < c; ++i) {
        if (out16)
            out16[i] = table16[lookup_index(normed(v[i], mean, deviation, weight, bias, mul, add, NULL, 0, 0.0, i),
                                            offset, limit)];
        else
            out[i] = normed(v[i], mean, deviation, weight, bias, mul, add, table, offset, limit, i);
    }
}

/* path as intconv's; the AVX2 path needs offset < 2^30 (its indices, up to 2 offset, are int32;
   the default grid's offset is 2^20) */
void norm_silu(const double *x, int64_t rows, int64_t c, const double *weight, const double *bias,
               const double *mul, const double *add, const double *table, int64_t offset, double limit,
               double *out, int threads, int path) {
    int avx2 = use_avx2(path) && offset < (1LL << 30);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t p = 0; p < rows; ++p)
        norm_pixel(x + p * c, c, weight, bias, mul, add, table, offset, limit, out + p * c, NULL, NULL, avx2);
}

#ifdef HAVE_AVX2_PATH
/* lookup() of x[i..end) four at a time; returns where the scalar tail starts */
__attribute__((target("avx2"))) static int64_t silu_avx2(const double *x, int64_t i, int64_t end, const double *table,
                                                         int64_t offset, double limit, double *out) {
    for (; i + 4 <= end; i += 4) _mm256_storeu_pd(out + i, lookup_avx2(_mm256_loadu_pd(x + i), table, offset, limit));
    return i;
}
#endif

/* SiLU by its table (as in norm_silu) of n values; path as intconv's */
void silu(const double *x, int64_t n, const double *table, int64_t offset, double limit, double *out, int threads,
          int path) {
    int avx2 = use_avx2(path) && offset < (1LL << 30);
    int64_t blocks = (n + 4095) / 4096;
    (void)threads;
    (void)avx2;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t i = b * 4096, end = i + 4096 < n ? i + 4096 : n;
#ifdef HAVE_AVX2_PATH
        if (avx2) i = silu_avx2(x, i, end, table, offset, limit, out);
#endif
        for (; i < end; ++i) out[i] = lookup(x[i], table, offset, limit);
    }
}

/* x (+ y) onto the grid of exact_network.quantize: clamped to +-limit (a NaN stays NaN), then
   plus and minus magic (two IEEE additions round to the grid, half to even). rows of n
   values, row r of x at x + r * x_stride (y alike, or NULL); out is (rows, n). */
static inline double grid_value(double v, double limit, double magic) {
    v = v > limit ? limit : (v < -limit ? -limit : v);
    return (v + magic) - magic;
}

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static int64_t grid_row_avx2(const double *x, const double *y, int64_t n, double limit,
                                                             double magic, double *out) {
    const __m256d high = _mm256_set1_pd(limit), low = _mm256_set1_pd(-limit), m = _mm256_set1_pd(magic);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_loadu_pd(x + i);
        if (y) v = _mm256_add_pd(v, _mm256_loadu_pd(y + i));
        v = _mm256_blendv_pd(v, high, _mm256_cmp_pd(v, high, _CMP_GT_OQ)); /* a NaN stays */
        v = _mm256_blendv_pd(v, low, _mm256_cmp_pd(v, low, _CMP_LT_OQ));
        _mm256_storeu_pd(out + i, _mm256_sub_pd(_mm256_add_pd(v, m), m));
    }
    return i;
}
#endif

/* path as intconv's */
void to_grid(const double *x, int64_t x_stride, const double *y, int64_t y_stride, int64_t rows, int64_t n,
             double limit, double magic, double *out, int threads, int path) {
    int avx2 = use_avx2(path);
    (void)threads;
    (void)avx2;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t r = 0; r < rows; ++r) {
        const double *a = x + r * x_stride, *b = y ? y + r * y_stride : NULL;
        double *o = out + r * n;
        int64_t i = 0;
#ifdef HAVE_AVX2_PATH
        if (avx2) i = grid_row_avx2(a, b, n, limit, magic, o);
#endif
        for (; i < n; ++i) o[i] = grid_value(b ? a[i] + b[i] : a[i], limit, magic);
    }
}

/* norm_silu of x (h, w, c) looked up in table16 (the SiLU table as a quantization-aware layer
   reads it: its 16-bit integers), written as to_int16 writes: into the int16 image out (rows
   of out_w pixels) at row top, column left, the rest left as it is (zeros). Row y of x starts
   at x + y x_row c. magic != 0: each value is first put on the grid (to_grid's clamp to
   +-grid_limit and two additions), as the norm's input must be. */
void norm_silu_int16(const double *x, int64_t h, int64_t w, int64_t c, int64_t x_row, double grid_limit,
                     double magic, const double *weight, const double *bias, const double *mul, const double *add,
                     const int16_t *table16, int64_t offset, double limit, int16_t *out, int64_t out_w, int64_t top,
                     int64_t left, int threads, int path) {
    int avx2 = use_avx2(path) && offset < (1LL << 30);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t p = 0; p < h * w; ++p) {
        const double *v = x + ((p / w) * x_row + p % w) * c;
        double rounded[c];
        if (magic != 0.0) {
            int64_t i = 0;
#ifdef HAVE_AVX2_PATH
            if (avx2) i = grid_row_avx2(v, NULL, c, grid_limit, magic, rounded);
#endif
            for (; i < c; ++i) rounded[i] = grid_value(v[i], grid_limit, magic);
            v = rounded;
        }
        norm_pixel(v, c, weight, bias, mul, add, NULL, offset, limit, NULL, table16,
                   out + ((p / w + top) * out_w + left + p % w) * c, avx2);
    }
}

/* The stem's input, as exact_network's fourier, pixel_unshuffle and channels-last give it:
   z (c, h, w) (h and w multiples of patch) on the grid 2^-16 (clamped to +-limit) and, per
   channel, the features: tables[start[j] + (k mod period[j])] for j < features, k =
   round(clamp(z, +-fourier_limit) 2^16) (a NaN reads index 0, as torch's conversion of
   one does); out is (h / patch, w / patch, (c + c features) patch^2), input channel i of
   sub-pixel (dy, dx) at i patch^2 + dy patch + dx. Periods are powers of two. */
void fourier(const double *z, int64_t c, int64_t h, int64_t w, int64_t patch, const double *tables,
             const int64_t *start, const int64_t *period, int64_t features, double limit, double magic,
             double fourier_limit, double *out, int threads) {
    int64_t oh = h / patch, ow = w / patch, sub = patch * patch, channels = (c + c * features) * sub;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
            double *o = out + (oy * ow + ox) * channels;
            for (int64_t dy = 0; dy < patch; ++dy)
                for (int64_t dx = 0; dx < patch; ++dx) {
                    int64_t s = dy * patch + dx;
                    for (int64_t ch = 0; ch < c; ++ch) {
                        double v = z[(ch * h + oy * patch + dy) * w + ox * patch + dx];
                        o[ch * sub + s] = grid_value(v, limit, magic);
                        double k = v > fourier_limit ? fourier_limit : (v < -fourier_limit ? -fourier_limit : v);
                        k = nearbyint(k * 65536.0);
                        int64_t index = k == k ? (int64_t)k : 0;
                        for (int64_t j = 0; j < features; ++j)
                            o[(c + ch * features + j) * sub + s] = tables[start[j] + (index & (period[j] - 1))];
                    }
                }
        }
}

/* Float64 tap products for the layers that are not quantization-aware (the stem; every
   'same' 3x3 and 1x1 convolution of a model trained without --weight-bits):
   out[r][n] = sum over taps t and channels c of in[base[r] + offset[t]][c] * w[t][c][n], plus
   bias[n]. in: (rows, cin) float64; w: (taps, cin, n_pad) float64, n_pad a multiple of 16.
   The exact network's grids and weight bits make every product and partial sum a multiple
   of one unit below 2^53, so the sum is exact in any order (the same numbers as torch's
   float64 products on every machine); then one rounding, the bias. */
#define DROWS 4

static void dtile_plain(const double *in, const int64_t *base, int64_t r0, int rows, const int64_t *offset, int taps,
                        const double *w, int cin, int64_t n_pad, int64_t j, const double *bias, double *out) {
    for (int r = 0; r < rows; ++r) {
        double acc[COLS];
        memset(acc, 0, sizeof acc);
        for (int t = 0; t < taps; ++t) {
            const double *a = in + (base[r0 + r] + offset[t]) * cin;
            for (int c = 0; c < cin; ++c) {
                const double *wc = w + ((int64_t)t * cin + c) * n_pad + j;
                for (int s = 0; s < COLS; ++s) acc[s] += a[c] * wc[s];
            }
        }
        for (int s = 0; s < COLS; ++s) out[(r0 + r) * n_pad + j + s] = acc[s] + bias[j + s];
    }
}

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static void dtile_avx2(const double *in, const int64_t *base, int64_t r0, int rows,
                                                       const int64_t *offset, int taps, const double *w, int cin,
                                                       int64_t n_pad, int64_t j, const double *bias, double *out) {
    /* 4 rows x 8 columns per pass over the weights, twice for the tile's 16 columns */
    for (int64_t h = j; h < j + COLS; h += 8) {
        __m256d s00 = _mm256_setzero_pd(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
        for (int t = 0; t < taps; ++t) {
            const double *a0 = in + (base[r0] + offset[t]) * cin;
            const double *a1 = in + (base[r0 + (rows > 1 ? 1 : 0)] + offset[t]) * cin;
            const double *a2 = in + (base[r0 + (rows > 2 ? 2 : 0)] + offset[t]) * cin;
            const double *a3 = in + (base[r0 + (rows > 3 ? 3 : 0)] + offset[t]) * cin;
            const double *wt = w + (int64_t)t * cin * n_pad + h;
            for (int c = 0; c < cin; ++c) {
                const double *wc = wt + (int64_t)c * n_pad;
                __m256d v0 = _mm256_loadu_pd(wc), v1 = _mm256_loadu_pd(wc + 4);
                __m256d x = _mm256_broadcast_sd(a0 + c);
                s00 = _mm256_add_pd(s00, _mm256_mul_pd(x, v0));
                s01 = _mm256_add_pd(s01, _mm256_mul_pd(x, v1));
                x = _mm256_broadcast_sd(a1 + c);
                s10 = _mm256_add_pd(s10, _mm256_mul_pd(x, v0));
                s11 = _mm256_add_pd(s11, _mm256_mul_pd(x, v1));
                x = _mm256_broadcast_sd(a2 + c);
                s20 = _mm256_add_pd(s20, _mm256_mul_pd(x, v0));
                s21 = _mm256_add_pd(s21, _mm256_mul_pd(x, v1));
                x = _mm256_broadcast_sd(a3 + c);
                s30 = _mm256_add_pd(s30, _mm256_mul_pd(x, v0));
                s31 = _mm256_add_pd(s31, _mm256_mul_pd(x, v1));
            }
        }
        const __m256d b0 = _mm256_loadu_pd(bias + h), b1 = _mm256_loadu_pd(bias + h + 4);
        __m256d sums[4][2] = {{s00, s01}, {s10, s11}, {s20, s21}, {s30, s31}};
        for (int r = 0; r < rows; ++r) {
            double *o = out + (r0 + r) * n_pad + h;
            _mm256_storeu_pd(o, _mm256_add_pd(sums[r][0], b0));
            _mm256_storeu_pd(o + 4, _mm256_add_pd(sums[r][1], b1));
        }
    }
}
#endif

#ifdef HAVE_NEON_PATH
static void dtile_neon(const double *in, const int64_t *base, int64_t r0, int rows, const int64_t *offset, int taps,
                       const double *w, int cin, int64_t n_pad, int64_t j, const double *bias, double *out) {
    /* 4 rows x 8 columns per pass over the weights, as the AVX2 tile; a product, then a sum
       (never one fused multiply-add, though both are exact here) */
    for (int64_t h = j; h < j + COLS; h += 8) {
        float64x2_t sum[4][4];
        for (int r = 0; r < 4; ++r) sum[r][0] = sum[r][1] = sum[r][2] = sum[r][3] = vdupq_n_f64(0.0);
        for (int t = 0; t < taps; ++t) {
            const double *a[4];
            for (int r = 0; r < 4; ++r) a[r] = in + (base[r0 + (r < rows ? r : 0)] + offset[t]) * cin;
            const double *wt = w + (int64_t)t * cin * n_pad + h;
            for (int c = 0; c < cin; ++c) {
                const double *wc = wt + (int64_t)c * n_pad;
                float64x2_t v0 = vld1q_f64(wc), v1 = vld1q_f64(wc + 2), v2 = vld1q_f64(wc + 4), v3 = vld1q_f64(wc + 6);
                for (int r = 0; r < 4; ++r) {
                    double x = a[r][c];
                    sum[r][0] = vaddq_f64(sum[r][0], vmulq_n_f64(v0, x));
                    sum[r][1] = vaddq_f64(sum[r][1], vmulq_n_f64(v1, x));
                    sum[r][2] = vaddq_f64(sum[r][2], vmulq_n_f64(v2, x));
                    sum[r][3] = vaddq_f64(sum[r][3], vmulq_n_f64(v3, x));
                }
            }
        }
        for (int r = 0; r < rows; ++r)
            for (int k = 0; k < 4; ++k)
                vst1q_f64(out + (r0 + r) * n_pad + h + 2 * k, vaddq_f64(sum[r][k], vld1q_f64(bias + h + 2 * k)));
    }
}
#endif

/* path as intconv's; returns the path taken */
int floatconv(const double *in, const int64_t *base, int64_t rows, const int64_t *offset, int taps, const double *w,
              int cin, int64_t n_pad, const double *bias, double *out, int threads, int path) {
    int avx2 = use_avx2(path), neon = use_neon(path);
    int64_t tiles = (rows + DROWS - 1) / DROWS;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t i = 0; i < tiles; ++i) {
        int64_t r0 = i * DROWS;
        int count = (int)(rows - r0 < DROWS ? rows - r0 : DROWS);
        for (int64_t j = 0; j < n_pad; j += COLS) {
#ifdef HAVE_AVX2_PATH
            if (avx2) {
                dtile_avx2(in, base, r0, count, offset, taps, w, cin, n_pad, j, bias, out);
                continue;
            }
#endif
#ifdef HAVE_NEON_PATH
            if (neon) {
                dtile_neon(in, base, r0, count, offset, taps, w, cin, n_pad, j, bias, out);
                continue;
            }
#endif
            dtile_plain(in, base, r0, count, offset, taps, w, cin, n_pad, j, bias, out);
        }
    }
    (void)neon;
    return avx2 ? 1 : neon ? 2 : 0;
}

/* exact.py's exp and log, element by element: the same IEEE operations in the same order as
   its numpy code (the series' terms and the constants come from exact.py, so they are the very
   same doubles), with exact frexp, ldexp and rint. exp: k[0] = 1 / ln 2, k[1], k[2] = ln 2
   split high and low, k[3], k[4] the clamp. log: k[0] = sqrt(1/2), k[1], k[2] = ln 2 split.
   The AVX2 paths take four at a time where the scaling needs no rounding (exp: 2^q a normal
   double, so p 2^q rounds once, as ldexp does; log: x positive, normal and finite, whose
   frexp is a bit split) and leave every other value to the scalar code. */
static double exp_one(double v, const double *terms, int count, const double *k) {
    if (v < k[3]) v = k[3];
    else if (v > k[4]) v = k[4];
    double q = rint(v * k[0]);
    double r = (v - q * k[1]) - q * k[2];
    double p = terms[count - 1];
    for (int j = count - 2; j >= 0; --j) {
        p = p * r;
        p = p + terms[j];
    }
    return isnan(q) ? p : ldexp(p, (int)q);
}

static double log_one(double v, const double *terms, int count, const double *k) {
    if (!(v > 0)) return v == 0 ? -INFINITY : NAN;
    int e;
    double m = frexp(v, &e);
    if (m < k[0]) {
        m = m * 2.0;
        e -= 1;
    }
    double s = (m - 1.0) / (m + 1.0);
    double s2 = s * s;
    double p = terms[count - 1];
    for (int j = count - 2; j >= 0; --j) {
        p = p * s2;
        p = p + terms[j];
    }
    double series = p * s;
    double f = (double)e;
    return f * k[1] + (f * k[2] + 2.0 * series);
}

#ifdef HAVE_AVX2_PATH
/* four values of exp_one; 0 where a lane needs the scalar code (2^q not a normal double, NaN) */
__attribute__((target("avx2"))) static int exp_avx2(const double *x, const double *terms, int count,
                                                    const double *k, double *out) {
    __m256d v = _mm256_min_pd(_mm256_set1_pd(k[4]), _mm256_max_pd(_mm256_set1_pd(k[3]), _mm256_loadu_pd(x)));
    __m256d q = _mm256_round_pd(_mm256_mul_pd(v, _mm256_set1_pd(k[0])), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d inside = _mm256_and_pd(_mm256_cmp_pd(q, _mm256_set1_pd(-1022.0), _CMP_GE_OQ),
                                   _mm256_cmp_pd(q, _mm256_set1_pd(1023.0), _CMP_LE_OQ));
    if (_mm256_movemask_pd(inside) != 15) return 0;
    __m256d r = _mm256_sub_pd(_mm256_sub_pd(v, _mm256_mul_pd(q, _mm256_set1_pd(k[1]))),
                              _mm256_mul_pd(q, _mm256_set1_pd(k[2])));
    __m256d p = _mm256_set1_pd(terms[count - 1]);
    for (int j = count - 2; j >= 0; --j) p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(terms[j]));
    __m256i exponent = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(q));  /* exact: q is an integer */
    __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(exponent, _mm256_set1_epi64x(1023)), 52);
    _mm256_storeu_pd(out, _mm256_mul_pd(p, _mm256_castsi256_pd(bits)));
    return 1;
}

/* four values of log_one; 0 where a lane is not a positive, normal, finite double */
__attribute__((target("avx2"))) static int log_avx2(const double *x, const double *terms, int count,
                                                    const double *k, double *out) {
    __m256i bits = _mm256_loadu_si256((const __m256i *)x);
    __m256i biased = _mm256_srli_epi64(bits, 52);  /* sign and exponent: 1..2046 for positive normal values */
    __m256i normal = _mm256_and_si256(_mm256_cmpgt_epi64(biased, _mm256_setzero_si256()),
                                      _mm256_cmpgt_epi64(_mm256_set1_epi64x(2047), biased));
    if (_mm256_movemask_pd(_mm256_castsi256_pd(normal)) != 15) return 0;
    /* frexp: m in [1/2, 1) with the same mantissa, e = biased exponent - 1022 */
    __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFLL)),
                                                    _mm256_set1_epi64x(0x3FE0000000000000LL)));
    const __m256d two52 = _mm256_set1_pd(4503599627370496.0);  /* an integer below 2^52 as a double, exactly */
    __m256d e = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(biased, _mm256_castpd_si256(two52))), two52);
    e = _mm256_sub_pd(e, _mm256_set1_pd(1022.0));
    __m256d low = _mm256_cmp_pd(m, _mm256_set1_pd(k[0]), _CMP_LT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(2.0)), low);
    e = _mm256_sub_pd(e, _mm256_and_pd(low, _mm256_set1_pd(1.0)));
    const __m256d one = _mm256_set1_pd(1.0);
    __m256d s = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
    __m256d s2 = _mm256_mul_pd(s, s);
    __m256d p = _mm256_set1_pd(terms[count - 1]);
    for (int j = count - 2; j >= 0; --j) p = _mm256_add_pd(_mm256_mul_pd(p, s2), _mm256_set1_pd(terms[j]));
    __m256d series = _mm256_mul_pd(p, s);
    __m256d tail = _mm256_add_pd(_mm256_mul_pd(e, _mm256_set1_pd(k[2])), _mm256_mul_pd(_mm256_set1_pd(2.0), series));
    _mm256_storeu_pd(out, _mm256_add_pd(_mm256_mul_pd(e, _mm256_set1_pd(k[1])), tail));
    return 1;
}
#endif

/* exact.py's exp (log: 1) of n values; path as intconv's */
void exact_math(int function, const double *x, int64_t n, const double *terms, int count, const double *k,
                double *out, int threads, int path) {
    int avx2 = use_avx2(path);
    int64_t blocks = (n + 3) / 4;
    (void)threads;
    (void)avx2;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t i = 4 * b, end = i + 4 < n ? i + 4 : n;
#ifdef HAVE_AVX2_PATH
        if (avx2 && end - i == 4 && (function ? log_avx2 : exp_avx2)(x + i, terms, count, k, out + i)) continue;
#endif
        for (; i < end; ++i) out[i] = function ? log_one(x[i], terms, count, k) : exp_one(x[i], terms, count, k);
    }
}

/* exact.py's fixed_sum: the sum of the values rounded to multiples of 2^-bits, as an exact
   integer count of units: NaN counts 0, each term is clamped to +-limit (infinities too), then
   scaled by 2^bits (exact: the limit keeps it below 2^62) and rounded half to even. Integer sums, so any order and any
   number of threads give the same total. */
int64_t fixed_sum(const double *x, int64_t n, int bits, double limit, int threads) {
    int64_t total = 0;
    const double scale = ldexp(1.0, bits);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : total)
#endif
    for (int64_t i = 0; i < n; ++i) {
        double v = x[i];
        if (isnan(v)) continue;
        v = v < -limit ? -limit : (v > limit ? limit : v);
        total += (int64_t)rint(v * scale);
    }
    return total;
}

/* exact.py's ordered_products: out[c][i][r] = sum over j = 0, 1, ... of m[i][j] * x[c][j][r],
   from 0.0, each product and addition rounded on its own, in that order (the numpy code's);
   m is rows x n, x count blocks of n x rest. */
void ordered_products(const double *m, int64_t rows, int64_t n, const double *x, int64_t count, int64_t rest,
                      double *out, int threads) {
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t c = 0; c < count; ++c) {
        for (int64_t i = 0; i < rows; ++i) {
            double *o = out + (c * rows + i) * rest;
            for (int64_t r = 0; r < rest; ++r) o[r] = 0.0;
            for (int64_t j = 0; j < n; ++j) {
                const double w = m[i * n + j], *v = x + (c * n + j) * rest;
                for (int64_t r = 0; r < rest; ++r) o[r] = o[r] + w * v[r];
            }
        }
    }
}
