/* The surgery contract's two passes over lists of CPU tensors, for any method.
 *
 * Plain C (no Python or torch headers), compiled on first use by torchbloop/functional/_native
 * and called through ctypes with arrays of data pointers, so that one call covers every tensor
 * of every list.
 *
 *   gram:    sums[b][p] = sum over the tensors t of block b of <x_i[t], x_j[t]>, (i, j) = pairs[p]
 *   lincomb: y_o[t] = sum_i c[block(t)][o][i] * x_i[t], for up to 8 inputs and 4 outputs
 *
 * gram reads every list once, in one loop: each step loads one vector of every list that some
 * pair reads and forms every product of them (up to 36 for 8 lists; computing the whole
 * triangle costs less than choosing, and the loop stays bound by memory). Products are summed
 * in vector lanes of the element type over chunks of CHUNK elements, then in double. lincomb
 * loads the inputs of an element, then writes its outputs: an output may be (alias) an input.
 * When the lists are larger than the caches (STREAM_BYTES), an output that is no input is
 * written with non-temporal (streaming) stores where AVX has them: it is not read first
 * (a plain store reads each cache line before writing it) and does not evict the inputs.
 * Inner loops are specialised on the number of lists and on the numbers of inputs and outputs
 * (always-inlined helpers called with constants), so they are unrolled with coefficients and
 * accumulators in registers (spilled to the L1 cache for the largest triangles).
 *
 * Work is split over `nthreads` POSIX threads by ranges of the concatenated elements (aligned to
 * 64 elements); per-thread sums are added in thread order, so results are deterministic for a
 * given thread count. Return codes: 0 ok, -1 out of memory, -2 bad arguments (see `check_*`).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#define CHUNK 4096
#define MAX_THREADS 64
#define MAX_LISTS 8
#define MAX_OUT 4
#define MAX_PAIRS (MAX_LISTS * (MAX_LISTS + 1) / 2)
#define INLINE static inline __attribute__((always_inline))
/* Streaming stores for outputs that are no input once all lists together exceed this size. */
#define STREAM_BYTES ((int64_t)16 << 20)

typedef float vf32 __attribute__((vector_size(32)));
typedef double vf64 __attribute__((vector_size(32)));

typedef struct {
    int64_t count;           /* tensors per list */
    const int64_t *sizes;    /* elements of tensor t */
    const int64_t *block_of; /* block of tensor t; NULL: all in block 0 */
    int nin;                 /* gram: lists; lincomb: inputs */
    void *const *in;         /* [nin][count] data pointers */
    int nout;                /* lincomb */
    void *const *out;        /* lincomb: [nout][count] data pointers */
    const double *coefs;     /* lincomb: [nblocks][nout][nin] */
    int nuniq;               /* gram: products per block (the triangle of the nin lists) */
    int used[MAX_LISTS];     /* gram: the lists some pair reads (nin of them) */
    int stream;              /* lincomb: bit o set: output o is no input, stream it if aligned */
    int64_t lo, hi;          /* range of the concatenated elements this worker owns */
    double *sums;            /* gram: this worker's [nblocks][nuniq] */
} job_t;

/* Calls fn on each piece of a tensor that falls in the worker's range [lo, hi) of the
 * concatenated elements: fn(job, tensor index, offset in the tensor, length). */
static void for_spans(job_t *j, void (*fn)(job_t *, int64_t, int64_t, int64_t)) {
    int64_t base = 0;
    for (int64_t t = 0; t < j->count && base < j->hi; base += j->sizes[t], t++) {
        int64_t lo = j->lo > base ? j->lo - base : 0;
        int64_t up = j->hi - base < j->sizes[t] ? j->hi - base : j->sizes[t];
        if (up > lo) fn(j, t, lo, up - lo);
    }
}

#define DEFINE_KERNELS(T, V, LANES, SUF)                                                        \
    INLINE V load_##SUF(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }                 \
    INLINE void store_##SUF(T *p, V v) { memcpy(p, &v, sizeof v); }                            \
    INLINE void stream_##SUF(T *p, V v) { STREAM_##SUF(p, v); }                                 \
    /* every product x_a * x_b (a <= b < NL) over n elements in one loop; NL a constant */      \
    INLINE void tri_##SUF(const T *const *x, int64_t n, double *sums, const int NL) {         \
        enum { NT = MAX_LISTS * (MAX_LISTS + 1) / 2 };                                          \
        const T *p[MAX_LISTS];                                                                  \
        _Pragma("GCC unroll 8") for (int a = 0; a < NL; a++) p[a] = x[a];                      \
        int64_t nv = n - n % LANES, i = 0;                                                      \
        while (i < nv) {                                                                        \
            int64_t end = i + CHUNK < nv ? i + CHUNK : nv;                                      \
            V l0[NT], l1[NT];                                                                   \
            _Pragma("GCC unroll 16") for (int u = 0; u < NL * (NL + 1) / 2; u++) {              \
                l0[u] = (V){0};                                                                 \
                l1[u] = (V){0};                                                                 \
            }                                                                                   \
            if (NL <= 2) {                                                                      \
                for (; i + 2 * LANES <= end; i += 2 * LANES) {                                  \
                    V v0[MAX_LISTS], v1[MAX_LISTS];                                             \
                    _Pragma("GCC unroll 8") for (int a = 0; a < NL; a++) {                      \
                        v0[a] = load_##SUF(p[a] + i);                                           \
                        v1[a] = load_##SUF(p[a] + i + LANES);                                   \
                    }                                                                           \
                    int u = 0;                                                                  \
                    _Pragma("GCC unroll 8") for (int a = 0; a < NL; a++)                        \
                        _Pragma("GCC unroll 8") for (int b = a; b < NL; b++, u++) {             \
                            l0[u] += v0[a] * v0[b];                                             \
                            l1[u] += v1[a] * v1[b];                                             \
                        }                                                                       \
                }                                                                               \
            }                                                                                   \
            for (; i < end; i += LANES) {                                                       \
                V v0[MAX_LISTS];                                                                \
                _Pragma("GCC unroll 8") for (int a = 0; a < NL; a++) v0[a] = load_##SUF(p[a] + i); \
                int u = 0;                                                                      \
                _Pragma("GCC unroll 8") for (int a = 0; a < NL; a++)                            \
                    _Pragma("GCC unroll 8") for (int b = a; b < NL; b++, u++)                   \
                        l0[u] += v0[a] * v0[b];                                                 \
            }                                                                                   \
            _Pragma("GCC unroll 16") for (int u = 0; u < NL * (NL + 1) / 2; u++) {              \
                V lv = l0[u] + l1[u];                                                           \
                double c = 0;                                                                   \
                for (int k = 0; k < LANES; k++) c += (double)lv[k];                             \
                sums[u] += c;                                                                   \
            }                                                                                   \
        }                                                                                       \
        for (; i < n; i++) {                                                                    \
            int u = 0;                                                                          \
            for (int a = 0; a < NL; a++)                                                        \
                for (int b = a; b < NL; b++, u++) sums[u] += (double)(p[a][i] * p[b][i]);       \
        }                                                                                       \
    }                                                                                           \
    static void gram_piece_##SUF(job_t *j, int64_t t, int64_t lo, int64_t n) {                 \
        const T *x[MAX_LISTS];                                                                  \
        for (int l = 0; l < j->nin; l++) x[l] = (const T *)j->in[j->used[l] * j->count + t] + lo; \
        int64_t blk = j->block_of ? j->block_of[t] : 0;                                         \
        double *sums = j->sums + blk * j->nuniq;                                                \
        switch (j->nin) {                                                                       \
        case 1: tri_##SUF(x, n, sums, 1); break;                                                \
        case 2: tri_##SUF(x, n, sums, 2); break;                                                \
        case 3: tri_##SUF(x, n, sums, 3); break;                                                \
        case 4: tri_##SUF(x, n, sums, 4); break;                                                \
        case 5: tri_##SUF(x, n, sums, 5); break;                                                \
        case 6: tri_##SUF(x, n, sums, 6); break;                                                \
        case 7: tri_##SUF(x, n, sums, 7); break;                                                \
        default: tri_##SUF(x, n, sums, 8); break;                                               \
        }                                                                                       \
    }                                                                                           \
    static void *gram_job_##SUF(void *arg) {                                                    \
        for_spans((job_t *)arg, gram_piece_##SUF);                                              \
        return 0;                                                                               \
    }                                                                                           \
    /* y_o = sum_i c[o * NIN + i] * x_i over n elements; NIN, NOUT constants after inlining.    \
     * All inputs of a vector are loaded before its outputs are stored (outputs may alias). */  \
    INLINE void lin_##SUF(const T *const *x, T *const *y, const T *c, int64_t n, int stream,     \
                          const int NIN, const int NOUT) {                                      \
        const T *xp[MAX_LISTS];                                                                 \
        T *yp[MAX_OUT];                                                                         \
        T cc[MAX_OUT][MAX_LISTS];                                                               \
        _Pragma("GCC unroll 8") for (int k = 0; k < NIN; k++) xp[k] = x[k];                     \
        _Pragma("GCC unroll 4") for (int o = 0; o < NOUT; o++) {                                \
            yp[o] = y[o];                                                                       \
            _Pragma("GCC unroll 8") for (int k = 0; k < NIN; k++) cc[o][k] = c[o * NIN + k];    \
        }                                                                                       \
        int64_t i = 0;                                                                          \
        for (; i + LANES <= n; i += LANES) {                                                    \
            V v[MAX_LISTS], r[MAX_OUT];                                                         \
            _Pragma("GCC unroll 8") for (int k = 0; k < NIN; k++) v[k] = load_##SUF(xp[k] + i); \
            _Pragma("GCC unroll 4") for (int o = 0; o < NOUT; o++) {                            \
                r[o] = cc[o][0] * v[0];                                                         \
                _Pragma("GCC unroll 8") for (int k = 1; k < NIN; k++) r[o] += cc[o][k] * v[k];  \
            }                                                                                   \
            _Pragma("GCC unroll 4") for (int o = 0; o < NOUT; o++) {                            \
                if (stream & (1 << o))                                                          \
                    stream_##SUF(yp[o] + i, r[o]);                                              \
                else                                                                            \
                    store_##SUF(yp[o] + i, r[o]);                                               \
            }                                                                                   \
        }                                                                                       \
        if (stream) FENCE();                                                                    \
        for (; i < n; i++) {                                                                    \
            T v[MAX_LISTS], r[MAX_OUT];                                                         \
            for (int k = 0; k < NIN; k++) v[k] = xp[k][i];                                      \
            for (int o = 0; o < NOUT; o++) {                                                    \
                r[o] = cc[o][0] * v[0];                                                         \
                for (int k = 1; k < NIN; k++) r[o] += cc[o][k] * v[k];                          \
            }                                                                                   \
            for (int o = 0; o < NOUT; o++) yp[o][i] = r[o];                                     \
        }                                                                                       \
    }                                                                                           \
    static void lin_piece_##SUF(job_t *j, int64_t t, int64_t lo, int64_t n) {                  \
        const T *x[MAX_LISTS];                                                                  \
        T *y[MAX_OUT];                                                                          \
        T c[MAX_OUT * MAX_LISTS];                                                               \
        int nin = j->nin, nout = j->nout;                                                       \
        int64_t blk = j->block_of ? j->block_of[t] : 0;                                         \
        const double *cb = j->coefs + blk * nout * nin;                                         \
        for (int k = 0; k < nin; k++) x[k] = (const T *)j->in[k * j->count + t] + lo;           \
        for (int o = 0; o < nout; o++) y[o] = (T *)j->out[o * j->count + t] + lo;               \
        for (int q = 0; q < nout * nin; q++) c[q] = (T)cb[q];                                   \
        int stream = 0; /* only outputs that start on a vector boundary (so stay on one) */    \
        for (int o = 0; o < nout; o++)                                                          \
            if ((j->stream >> o & 1) && (uintptr_t)y[o] % sizeof(V) == 0) stream |= 1 << o;     \
        switch (nin * 8 + nout) {                                                               \
            LIN_CASES(SUF, 1) LIN_CASES(SUF, 2) LIN_CASES(SUF, 3) LIN_CASES(SUF, 4)             \
            LIN_CASES(SUF, 5) LIN_CASES(SUF, 6) LIN_CASES(SUF, 7) LIN_CASES(SUF, 8)             \
        }                                                                                       \
    }                                                                                           \
    static void *lin_job_##SUF(void *arg) {                                                     \
        for_spans((job_t *)arg, lin_piece_##SUF);                                               \
        return 0;                                                                               \
    }

#define LIN_CASE(SUF, I, O) \
    case (I) * 8 + (O): lin_##SUF(x, y, c, n, stream, I, O); break;
#define LIN_CASES(SUF, I) \
    LIN_CASE(SUF, I, 1) LIN_CASE(SUF, I, 2) LIN_CASE(SUF, I, 3) LIN_CASE(SUF, I, 4)

#ifdef __AVX__
#define STREAM_f32(p, v) _mm256_stream_ps((p), (__m256)(v))
#define STREAM_f64(p, v) _mm256_stream_pd((p), (__m256d)(v))
#define FENCE() _mm_sfence()
#define CAN_STREAM 1
#else
#define STREAM_f32(p, v) store_f32((p), (v))
#define STREAM_f64(p, v) store_f64((p), (v))
#define FENCE() ((void)0)
#define CAN_STREAM 0
#endif

DEFINE_KERNELS(float, vf32, 8, f32)
DEFINE_KERNELS(double, vf64, 4, f64)

/* Runs fn over [0, total) split into nthreads ranges (aligned to 64 elements). If a thread
 * cannot be started its range runs on the calling thread. */
static void run_jobs(void *(*fn)(void *), job_t *jobs, int64_t total, int nthreads,
                     size_t per) {
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    int64_t step = (total + nthreads - 1) / nthreads;
    step = (step + 63) / 64 * 64;
    for (int k = 0; k < nthreads; k++) {
        if (k) jobs[k] = jobs[0];
        if (k && jobs[0].sums) jobs[k].sums = jobs[0].sums + (size_t)k * per;
        jobs[k].lo = k * step < total ? k * step : total;
        jobs[k].hi = (k + 1) * step < total ? (k + 1) * step : total;
        started[k] = 0;
    }
    for (int k = 1; k < nthreads; k++) {
        if (jobs[k].lo < jobs[k].hi)
            started[k] = pthread_create(&threads[k], 0, fn, &jobs[k]) == 0;
    }
    fn(&jobs[0]);
    for (int k = 1; k < nthreads; k++) {
        if (started[k])
            pthread_join(threads[k], 0);
        else if (jobs[k].lo < jobs[k].hi)
            fn(&jobs[k]);
    }
}

static int clamp_threads(int nthreads) {
    return nthreads < 1 ? 1 : nthreads > MAX_THREADS ? MAX_THREADS : nthreads;
}

/* Sizes non-negative, blocks in [0, nblocks); the total number of elements, or -1. */
static int64_t check_tensors(int64_t count, const int64_t *sizes, const int64_t *block_of,
                             int64_t nblocks) {
    int64_t total = 0;
    for (int64_t t = 0; t < count; t++) {
        if (sizes[t] < 0) return -1;
        if (block_of && (block_of[t] < 0 || block_of[t] >= nblocks)) return -1;
        total += sizes[t];
    }
    return total;
}

/* dtype: 0 = float32, 1 = float64. ptrs: [nlists][count] data pointers; pairs: [npairs][2]
 * list indices; block_of: [count] or NULL; result: [nblocks][npairs], overwritten. */
int torchbloop_gram(int dtype, int64_t count, const int64_t *sizes, int nlists, void *const *ptrs,
                    int npairs, const int32_t *pairs, const int64_t *block_of, int64_t nblocks,
                    int nthreads, double *result) {
    int dest[MAX_PAIRS], remap[MAX_LISTS], used[MAX_LISTS], nused = 0;
    if (nlists < 1 || nlists > MAX_LISTS || npairs < 0 || npairs > MAX_PAIRS || nblocks < 1)
        return -2;
    for (int l = 0; l < MAX_LISTS; l++) remap[l] = -1;
    for (int p = 0; p < 2 * npairs; p++) {
        if (pairs[p] < 0 || pairs[p] >= nlists) return -2;
        remap[pairs[p]] = 0;
    }
    for (int l = 0; l < nlists; l++) /* lists no pair reads are not read at all */
        if (remap[l] == 0) {
            remap[l] = nused;
            used[nused++] = l;
        }
    for (int p = 0; p < npairs; p++) { /* slot of (a, b), a <= b, in the triangle's order */
        int a = remap[pairs[2 * p]], b = remap[pairs[2 * p + 1]];
        if (a > b) { int s = a; a = b; b = s; }
        dest[p] = a * nused - a * (a - 1) / 2 + (b - a);
    }
    int nuniq = nused * (nused + 1) / 2;
    int64_t total = check_tensors(count, sizes, block_of, nblocks);
    if (total < 0) return -2;
    nthreads = clamp_threads(nthreads);
    size_t per = (size_t)nblocks * (size_t)(nuniq ? nuniq : 1);
    double *sums = calloc((size_t)nthreads * per, sizeof(double));
    if (!sums) return -1;
    job_t jobs[MAX_THREADS];
    memset(&jobs[0], 0, sizeof jobs[0]);
    jobs[0].count = count;
    jobs[0].sizes = sizes;
    jobs[0].block_of = block_of;
    jobs[0].nin = nused;
    jobs[0].in = ptrs;
    memcpy(jobs[0].used, used, sizeof used);
    jobs[0].nuniq = nuniq;
    if (nuniq) {
        jobs[0].sums = sums;
        run_jobs(dtype ? gram_job_f64 : gram_job_f32, jobs, total, nthreads, per);
    }
    for (int64_t b = 0; b < nblocks; b++) { /* per-thread sums in thread order */
        for (int p = 0; p < npairs; p++) {
            double v = 0;
            for (int k = 0; k < nthreads; k++) v += sums[(size_t)k * per + b * nuniq + dest[p]];
            result[b * npairs + p] = v;
        }
    }
    free(sums);
    return 0;
}

/* Same-index tensors of an output and of an input (or another output) are the same memory or
 * do not overlap: elementwise read-before-write is only safe for exact aliases. */
static int check_aliases(int64_t count, const int64_t *sizes, int nin, void *const *in, int nout,
                         void *const *out, int64_t width) {
    for (int64_t t = 0; t < count; t++) {
        int64_t bytes = sizes[t] * width;
        if (!bytes) continue;
        for (int o = 0; o < nout; o++) {
            const char *y = out[o * count + t];
            for (int q = 0; q < nin + o; q++) {
                const char *x = q < nin ? in[q * count + t] : out[(q - nin) * count + t];
                if (x == y) {
                    if (q >= nin) return -1; /* the same memory written twice */
                    continue;
                }
                if (x < y + bytes && y < x + bytes) return -1;
            }
        }
    }
    return 0;
}

/* Bit o set when no tensor of output o is a tensor of an input (it is written, never read). */
static int streamable(int64_t count, int nin, void *const *in, int nout, void *const *out) {
    int mask = 0;
    for (int o = 0; o < nout; o++) {
        int alias = 0;
        for (int64_t t = 0; t < count && !alias; t++)
            for (int q = 0; q < nin; q++)
                if (in[q * count + t] == out[o * count + t]) alias = 1;
        if (!alias) mask |= 1 << o;
    }
    return mask;
}

/* dtype: 0 = float32, 1 = float64. in: [nin][count], out: [nout][count] data pointers;
 * coefs: [nblocks][nout][nin] (double, applied in the element type); block_of: [count] or
 * NULL. */
int torchbloop_lincomb(int dtype, int64_t count, const int64_t *sizes, int nin, void *const *in,
                       int nout, void *const *out, const double *coefs, const int64_t *block_of,
                       int64_t nblocks, int nthreads) {
    if (nin < 1 || nin > MAX_LISTS || nout < 1 || nout > MAX_OUT || nblocks < 1) return -2;
    int64_t total = check_tensors(count, sizes, block_of, nblocks);
    if (total < 0) return -2;
    if (check_aliases(count, sizes, nin, in, nout, out, dtype ? 8 : 4)) return -3;
    job_t jobs[MAX_THREADS];
    memset(&jobs[0], 0, sizeof jobs[0]);
    jobs[0].count = count;
    jobs[0].sizes = sizes;
    jobs[0].block_of = block_of;
    jobs[0].nin = nin;
    jobs[0].in = in;
    jobs[0].nout = nout;
    jobs[0].out = out;
    jobs[0].coefs = coefs;
    jobs[0].stream = CAN_STREAM && total * (nin + nout) * (dtype ? 8 : 4) >= STREAM_BYTES
                         ? streamable(count, nin, in, nout, out)
                         : 0;
    run_jobs(dtype ? lin_job_f64 : lin_job_f32, jobs, total, clamp_threads(nthreads), 0);
    return 0;
}
