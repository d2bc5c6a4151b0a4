/* The compiled loops on made-up inputs, every path (0 plain C; 1 AVX2 or NEON where built;
   2 the 128-bit paths, SSE2 or NEON), one and three threads: one line per run, "kernel path
   threads hash" (FNV-1a of the output bytes). Built for another CPU and run under an
   emulator (tests/test_kernels_elsewhere.py), its hashes must be this machine's: the loops
   compute the same numbers on every CPU. */
#include <stdio.h>
#include <stdlib.h>
#include "../../diffcodec/model/kernels/compiled.c"

static uint64_t state = 0x9E3779B97F4A7C15ull;

static int64_t draw(int64_t low, int64_t high) { /* uniform integer in [low, high] */
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return low + (int64_t)((state >> 11) % (uint64_t)(high - low + 1));
}

static uint64_t fnv(const void *data, size_t bytes) {
    const unsigned char *b = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; ++i) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void report(const char *name, int path, int threads, const void *data, size_t bytes) {
    printf("%s %d %d %016llx\n", name, path, threads, (unsigned long long)fnv(data, bytes));
}

/* rows output pixels of a 3x3 layer on an h x w image (cin channels), n outputs */
static void convolutions(int cin, int n, int64_t rows, int wmax, int xmax, int chunk) {
    int64_t n_pad = (n + 15) / 16 * 16, w_img = 11, h_img = rows / w_img + 3, taps = 9;
    int16_t *in = calloc((size_t)(h_img * w_img * cin), sizeof *in);
    int16_t *w = calloc((size_t)(taps * cin * n_pad), sizeof *w);
    double *din = calloc((size_t)(h_img * w_img * cin), sizeof *din);
    double *dw = calloc((size_t)(taps * cin * n_pad), sizeof *dw);
    double *out = calloc((size_t)(rows * n_pad), sizeof *out), factor[256], bias[256];
    int64_t *base = calloc((size_t)rows, sizeof *base), offset[9];
    for (int64_t i = 0; i < h_img * w_img * cin; ++i) {
        in[i] = (int16_t)(xmax < 0 ? (i % 2 ? 32767 : -32767) : draw(-xmax, xmax)); /* xmax < 0: the extremes */
        din[i] = (double)draw(-4096, 4096) / 65536.0;
    }
    for (int64_t i = 0; i < taps * cin * n_pad; ++i) {
        w[i] = (int16_t)(xmax < 0 ? (i % 2 ? wmax : -wmax) : draw(-wmax, wmax));
        dw[i] = (double)draw(-127, 127) / 512.0;
    }
    for (int i = 0; i < n_pad; ++i) {
        factor[i] = (double)draw(1, 1 << 20) / 3e9;
        bias[i] = (double)draw(-(1 << 20), 1 << 20) / 7e5;
    }
    for (int64_t r = 0; r < rows; ++r) base[r] = (r / w_img) * w_img + r % w_img;
    for (int t = 0; t < taps; ++t) offset[t] = (t / 3) * w_img + t % 3;
    char name[64];
    for (int path = 0; path < 3; ++path)
        for (int threads = 1; threads <= 3; threads += 2) {
            snprintf(name, sizeof name, "intconv/%d/%d/%lld/%d", cin, n, (long long)rows, chunk);
            intconv(in, base, rows, offset, 9, w, cin, n_pad, out, chunk, NULL, NULL, threads, path);
            report(name, path, threads, out, (size_t)(rows * n_pad) * sizeof *out);
            snprintf(name, sizeof name, "intconv-scaled/%d/%d/%lld/%d", cin, n, (long long)rows, chunk);
            intconv(in, base, rows, offset, 9, w, cin, n_pad, out, chunk, factor, bias, threads, path);
            report(name, path, threads, out, (size_t)(rows * n_pad) * sizeof *out);
            snprintf(name, sizeof name, "floatconv/%d/%d/%lld", cin, n, (long long)rows);
            floatconv(din, base, rows, offset, 9, dw, cin, n_pad, bias, out, threads, path);
            report(name, path, threads, out, (size_t)(rows * n_pad) * sizeof *out);
        }
    free(in), free(w), free(din), free(dw), free(out), free(base);
}

static void elementwise(void) {
    enum { N = 4099, C = 24 };
    static double x[N], y[N], out[N], weight[C], bias[C], mul[C], add[C], table[8193];
    static int16_t table16[8193], out16[N + 64];
    for (int i = 0; i < N; ++i) {
        x[i] = (double)draw(-(1 << 24), 1 << 24) / 4096.0 / 97.0;
        y[i] = (double)draw(-(1 << 20), 1 << 20) / 3.0;
    }
    x[7] = NAN, x[8] = INFINITY, x[9] = -INFINITY, x[10] = 0.5 / 4096, x[11] = 1.5 / 4096, x[12] = -2.5 / 4096;
    for (int i = 0; i < C; ++i) {
        weight[i] = (double)draw(1, 1000) / 300.0;
        bias[i] = (double)draw(-1000, 1000) / 700.0;
        mul[i] = (double)draw(-1000, 1000) / 400.0;
        add[i] = (double)draw(-1000, 1000) / 900.0;
    }
    for (int i = 0; i < 8193; ++i) {
        double v = (i - 4096) / 512.0;
        table[i] = v / (1.0 + v * v);
        table16[i] = (int16_t)(i - 4096);
    }
    /* exp: 1/ln 2, ln 2 in two parts, the clamps; log: sqrt(1/2); Taylor-like terms */
    const double k_exp[5] = {1.4426950408889634, 0.6931471803691238, 1.9082149292705877e-10, -745.0, 709.0};
    const double k_log[3] = {0.7071067811865476, 0.6931471803691238, 1.9082149292705877e-10};
    double terms[12];
    for (int j = 0; j < 12; ++j) terms[j] = 1.0 / (double)(j + 1) / (j % 3 + 1.0);
    double grid[N];
    for (int i = 0; i < N; ++i) grid[i] = (double)draw(-(1 << 18), 1 << 18) / 4096.0;
    for (int path = 0; path < 3; ++path)
        for (int threads = 1; threads <= 3; threads += 2) {
            to_grid(x, 0, y, 0, 1, N, 5000.0, 6755399441055744.0 / 4096.0, out, threads, path);
            report("to_grid", path, threads, out, sizeof out);
            to_grid(x, 97, NULL, 0, 42, 97, 3.0, 6755399441055744.0 / 64.0, out, threads, path);
            report("to_grid-rows", path, threads, out, 42 * 97 * sizeof *out);
            memset(out16, 0, sizeof out16);
            to_int16(x, 10, 17, 24, 37.0, out16, 17, 0, 0, threads, path);
            report("to_int16", path, threads, out16, sizeof out16);
            norm_silu(grid, N / C, C, weight, bias, mul, add, table, 4096, 4096.0, out, threads, path);
            report("norm_silu", path, threads, out, (N / C) * C * sizeof *out);
            norm_silu(grid, N / C, C, weight, bias, NULL, NULL, NULL, 4096, 4096.0, out, threads, path);
            report("norm", path, threads, out, (N / C) * C * sizeof *out);
            memset(out16, 0, sizeof out16);
            norm_silu_int16(x, 8, 20, C, 20, 5000.0, 6755399441055744.0 / 4096.0, weight, bias, mul, add, table16,
                            4096, 4096.0, out16, 21, 0, 1, threads, path);
            report("norm_silu_int16", path, threads, out16, sizeof out16);
            silu(x, N, table, 4096, 4096.0, out, threads, path);
            report("silu", path, threads, out, sizeof out);
            exact_math(0, y, N, terms, 12, k_exp, out, threads, path);
            report("exp", path, threads, out, sizeof out);
            exact_math(0, x, N, terms, 12, k_exp, out, threads, path);
            report("exp-small", path, threads, out, sizeof out);
            exact_math(1, y, N, terms, 12, k_log, out, threads, path);
            report("log", path, threads, out, sizeof out);
            int64_t total = fixed_sum(x, N, 20, 1e6, threads);
            report("fixed_sum", path, threads, &total, sizeof total);
            ordered_products(weight, 4, 6, y, 3, 227, out, threads); /* 4x6 times 3 blocks of 6x227 */
            report("ordered_products", path, threads, out, 4 * 3 * 227 * sizeof *out);
        }
}

int main(void) {
    /* which path each loop takes, on stderr (the hashes on stdout are compared between CPUs) */
    int16_t one16[2] = {1, 1};
    double one[2] = {1.0, 1.0}, out[16];
    int64_t zero = 0;
    for (int path = 0; path < 3; ++path) {
        int16_t w16[32] = {0};
        double w64[32] = {0}, bias[16] = {0};
        fprintf(stderr, "took %d %d %d\n", path, intconv(one16, &zero, 1, &zero, 1, w16, 2, 16, out, 1, NULL, NULL, 1, path),
                floatconv(one, &zero, 1, &zero, 1, w64, 2, 16, bias, out, 1, path));
    }
    convolutions(64, 64, 203, 127, 32767, 258);  /* rows not a multiple of the tile's */
    convolutions(6, 40, 37, 127, 32767, 258);    /* few channels, outputs padded */
    convolutions(32, 16, 16, 2000, 32767, 16);   /* an upsampler's larger taps: spills every 16 pairs */
    convolutions(64, 32, 44, 127, -1, 258);      /* the extremes, one sign: 2^31 is near */
    convolutions(8, 16, 6, 32767, -1, 1);        /* 16-bit weights: one pair is 2^31 - 2^17 */
    elementwise();
    return 0;
}
