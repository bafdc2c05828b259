/* Bloop's combination step on CPU gradient lists, in two fused loops.
 *
 * Plain C (no Python or torch headers), compiled on first use by torchbloop/functional/_native
 * and called through ctypes with arrays of data pointers, so that one call covers every tensor.
 *
 *   dots pass:    [code order: e <- lerp(e, m, rho)]; cross = <a, e>, sq = <e, e>
 *   combine pass: out = m + lam * a + ncoef * e; [paper order: e <- lerp(e, m, rho)]
 *
 * ncoef is -lam * <a, e> / <e, e> (computed by the caller). `out` may alias `a` (the usual case:
 * the direction overwrites the auxiliary gradient), so no pointer is declared restrict.
 * Inner products are summed in vector lanes of the element type over chunks of CHUNK elements,
 * then in double. Work is split over `nthreads` POSIX threads by ranges of the concatenated
 * elements; partial sums are added in thread order, so results are deterministic for a given
 * thread count. lerp follows torch.lerp: start + w * (end - start) for w < 0.5, otherwise
 * end - (end - start) * (1 - w).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define CHUNK 4096
#define MAX_THREADS 64

typedef float vf32 __attribute__((vector_size(32)));
typedef double vf64 __attribute__((vector_size(32)));

typedef struct {
    int64_t count;
    const int64_t *sizes;
    void *const *main;
    void *const *aux;
    void *const *ema;
    void *const *out;
    double lam, ncoef, rho;
    int lerp;
    int64_t lo, hi; /* range of the concatenated elements this worker owns */
    double cross, sq;
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

#define DEFINE_KERNELS(T, V, LANES, SUF)                                                     \
    static inline V load_##SUF(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }       \
    static inline void store_##SUF(T *p, V v) { memcpy(p, &v, sizeof v); }                   \
    static inline T lerp1_##SUF(T e, T m, T w, int hi) {                                     \
        return hi ? m - (m - e) * ((T)1 - w) : e + w * (m - e);                              \
    }                                                                                        \
    static inline V lerpv_##SUF(V e, V m, T w, int hi) {                                     \
        return hi ? m - (m - e) * ((T)1 - w) : e + w * (m - e);                              \
    }                                                                                        \
    /* sums of a*e and e*e over n elements (after e <- lerp(e, m) when lerp is set) */      \
    static void dots_span_##SUF(T *a, T *e, const T *m, int64_t n, T w, int lerp, int hi,    \
                                double *cross, double *sq) {                                 \
        double c = 0, s = 0;                                                                 \
        int64_t i = 0;                                                                       \
        while (i + 2 * LANES <= n) {                                                         \
            int64_t end = i + CHUNK < n ? i + CHUNK : n;                                     \
            V c0 = {0}, c1 = {0}, s0 = {0}, s1 = {0};                                        \
            for (; i + 2 * LANES <= end; i += 2 * LANES) {                                   \
                V e0 = load_##SUF(e + i), e1 = load_##SUF(e + i + LANES);                    \
                if (lerp) {                                                                  \
                    e0 = lerpv_##SUF(e0, load_##SUF(m + i), w, hi);                          \
                    e1 = lerpv_##SUF(e1, load_##SUF(m + i + LANES), w, hi);                  \
                    store_##SUF(e + i, e0);                                                  \
                    store_##SUF(e + i + LANES, e1);                                          \
                }                                                                            \
                c0 += load_##SUF(a + i) * e0;                                                \
                c1 += load_##SUF(a + i + LANES) * e1;                                        \
                s0 += e0 * e0;                                                               \
                s1 += e1 * e1;                                                               \
            }                                                                                \
            V cs = c0 + c1, ss = s0 + s1;                                                    \
            for (int k = 0; k < LANES; k++) {                                                \
                c += (double)cs[k];                                                          \
                s += (double)ss[k];                                                          \
            }                                                                                \
        }                                                                                    \
        for (; i < n; i++) {                                                                 \
            T ei = e[i];                                                                     \
            if (lerp) {                                                                      \
                ei = lerp1_##SUF(ei, m[i], w, hi);                                           \
                e[i] = ei;                                                                   \
            }                                                                                \
            c += (double)(a[i] * ei);                                                        \
            s += (double)(ei * ei);                                                          \
        }                                                                                    \
        *cross += c;                                                                         \
        *sq += s;                                                                            \
    }                                                                                        \
    /* out = m + lam * a + ncoef * e, then e <- lerp(e, m) when lerp is set */               \
    static void combine_span_##SUF(const T *m, const T *a, T *e, T *out, int64_t n, T lam,   \
                                   T ncoef, T w, int lerp, int hi) {                          \
        int64_t i = 0;                                                                       \
        for (; i + LANES <= n; i += LANES) {                                                 \
            V mv = load_##SUF(m + i), ev = load_##SUF(e + i);                                \
            V d = mv + lam * load_##SUF(a + i);                                              \
            store_##SUF(out + i, d + ncoef * ev);                                            \
            if (lerp) store_##SUF(e + i, lerpv_##SUF(ev, mv, w, hi));                        \
        }                                                                                    \
        for (; i < n; i++) {                                                                 \
            T mi = m[i], ei = e[i];                                                          \
            T d = mi + lam * a[i];                                                           \
            out[i] = d + ncoef * ei;                                                         \
            if (lerp) e[i] = lerp1_##SUF(ei, mi, w, hi);                                     \
        }                                                                                    \
    }                                                                                        \
    static void dots_piece_##SUF(job_t *j, int64_t t, int64_t lo, int64_t n) {              \
        const T *m = j->main ? (const T *)j->main[t] + lo : 0;                               \
        dots_span_##SUF((T *)j->aux[t] + lo, (T *)j->ema[t] + lo, m, n, (T)j->rho, j->lerp,  \
                        j->rho >= 0.5, &j->cross, &j->sq);                                   \
    }                                                                                        \
    static void combine_piece_##SUF(job_t *j, int64_t t, int64_t lo, int64_t n) {           \
        combine_span_##SUF((const T *)j->main[t] + lo, (const T *)j->aux[t] + lo,            \
                           (T *)j->ema[t] + lo, (T *)j->out[t] + lo, n, (T)j->lam,           \
                           (T)j->ncoef, (T)j->rho, j->lerp, j->rho >= 0.5);                  \
    }                                                                                        \
    static void *dots_job_##SUF(void *arg) {                                                 \
        for_spans((job_t *)arg, dots_piece_##SUF);                                           \
        return 0;                                                                            \
    }                                                                                        \
    static void *combine_job_##SUF(void *arg) {                                              \
        for_spans((job_t *)arg, combine_piece_##SUF);                                        \
        return 0;                                                                            \
    }

DEFINE_KERNELS(float, vf32, 8, f32)
DEFINE_KERNELS(double, vf64, 4, f64)

/* Runs fn over [0, total) split into nthreads ranges (aligned to 64 elements). Returns 0 on
 * success; if a thread cannot be started its range runs on the calling thread. */
static int run_jobs(void *(*fn)(void *), job_t *proto, int64_t total, int nthreads,
                    double *cross, double *sq) {
    job_t jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    int64_t step = (total + nthreads - 1) / nthreads;
    step = (step + 63) / 64 * 64;
    for (int k = 0; k < nthreads; k++) {
        jobs[k] = *proto;
        jobs[k].lo = k * step < total ? k * step : total;
        jobs[k].hi = (k + 1) * step < total ? (k + 1) * step : total;
        jobs[k].cross = 0;
        jobs[k].sq = 0;
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
    double c = 0, s = 0;
    for (int k = 0; k < nthreads; k++) {
        c += jobs[k].cross;
        s += jobs[k].sq;
    }
    if (cross) *cross = c;
    if (sq) *sq = s;
    return 0;
}

static int64_t total_of(int64_t count, const int64_t *sizes) {
    int64_t total = 0;
    for (int64_t t = 0; t < count; t++) total += sizes[t];
    return total;
}

/* dtype: 0 = float32, 1 = float64. main may be NULL when lerp is 0. result[0] = <a, e>,
 * result[1] = <e, e>. */
int torchbloop_dots(int dtype, int64_t count, const int64_t *sizes, void *const *aux,
                    void *const *ema, void *const *main, double rho, int lerp, int nthreads,
                    double *result) {
    job_t proto = {count, sizes, main, aux, ema, 0, 0, 0, rho, lerp, 0, 0, 0, 0};
    return run_jobs(dtype ? dots_job_f64 : dots_job_f32, &proto, total_of(count, sizes),
                    nthreads, &result[0], &result[1]);
}

int torchbloop_combine(int dtype, int64_t count, const int64_t *sizes, void *const *main,
                       void *const *aux, void *const *ema, void *const *out, double lam,
                       double ncoef, double rho, int lerp, int nthreads) {
    job_t proto = {count, sizes, main, aux, ema, out, lam, ncoef, rho, lerp, 0, 0, 0, 0};
    return run_jobs(dtype ? combine_job_f64 : combine_job_f32, &proto, total_of(count, sizes),
                    nthreads, 0, 0);
}
