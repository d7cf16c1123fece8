/* The network plan's kernels for the Cython executor (``fastconv.kernels.cython.plan``).
 *
 * The twins of ``fastconv.kernels.numba.nhwc``, on the same NHWC buffers, index tables and
 * packed weights (``fastconv.kernels.plan_tiles``), and of ``numba.microkernel``'s register
 * tiles, written with GCC's vector extensions so that a tile's accumulators stay in vector
 * registers. Each kernel is a task function: ``run(args, task, tasks)`` does task ``task`` of
 * ``tasks`` of one plan step. ``fc_run`` runs every step of a call on the plan's own worker
 * threads (an OpenMP parallel region when another call has them), each thread taking tasks
 * ``tid, tid + threads, ...`` of a step, with a spinning barrier between steps (OpenMP's own
 * would sleep under the passive wait policy fastconv loads OpenMP with, and wake at every
 * step).
 *
 * Every array is reached through a pointer and offsets the Python side checked against the
 * arrays' sizes before it dropped the GIL.
 */
#ifndef FASTCONV_PLAN_KERNELS_H
#define FASTCONV_PLAN_KERNELS_H

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* the largest tile any entry of tuning.GEMM_TILE / GEMM_TILE_WIDE asks for */
#define FC_MAX_MR 16
#define FC_MAX_NV 4

/* the activations of an epilogue: fastconv.kernels.epilogue's numbers (a test holds the two
 * together) */
enum {
    FC_ACT_NONE = 0,         /* y */
    FC_ACT_CLAMP = 1,        /* min(max(y, lo), hi) */
    FC_ACT_LEAKY = 2,        /* y if y >= 0 else alpha y */
    FC_ACT_HARDSIGMOID = 3,  /* min(max(alpha y + beta, 0), 1) */
    FC_ACT_HARDSWISH = 4,    /* y min(max(y / 6 + 1/2, 0), 1) */
    FC_ACT_SIGMOID = 5,      /* 1 / (1 + exp(-y)) */
    FC_ACT_SILU = 6,         /* y / (1 + exp(-y)) */
    FC_ACT_TANH = 7,         /* tanh(y) */
    FC_ACT_MISH = 8,         /* y tanh(log(1 + exp(y))) */
    FC_ACT_GELU = 9,         /* y (1 + erf(y / sqrt 2)) / 2 */
    FC_ACT_GELU_TANH = 10,   /* y (1 + tanh(sqrt(2 / pi) (y + 0.044715 y^3))) / 2 */
    FC_ACT_EXP = 11          /* exp(y) */
};

/* the operations of the element-wise step of two operands: fastconv.kernels.epilogue's
 * BINARY_OPS (a test holds the two together) */
enum {
    FC_BINARY_ADD = 0,       /* a + b */
    FC_BINARY_MUL = 1,       /* a * b */
    FC_BINARY_SUB = 2,       /* a - b */
    FC_BINARY_DIV = 3,       /* a / b */
    FC_BINARY_SUB_FROM = 4,  /* b - a */
    FC_BINARY_DIV_INTO = 5,  /* b / a */
    FC_BINARY_PRELU = 6      /* a >= 0 ? a : a * b */
};

/* The float exponential's bounds (see FC(exp)), declared as ``lo`` and ``hi`` and made opaque
 * to the optimiser: an empty asm "changes" them in memory. */
#define FC_EXP_BOUNDS(lo, hi)                \
    float lo = -87.33654f, hi = 88.72284f;   \
    __asm__("" : "+m"(lo), "+m"(hi))

/* an epilogue's activation */
typedef struct {
    i64 kind;
    double lo, hi, alpha, beta;
} fc_epi;

/* a buffer's geometry for zeroing its border: (N, Hb, Wb, C, top, bottom, left, right) */
typedef struct {
    i64 n, rows, cols, channels, top, bottom, left, right;
} fc_border;

/* the GEMM tiles' weights and epilogue */
typedef struct {
    const void *w;
    i64 panel, panels, mr, nr;
    i64 prefetch;  /* elements ahead (tuning.GEMM_PREFETCH), 0 for none */
    int wide, has_bias, res_mode;
    const void *bias;
    fc_epi epi;
    const void *res;
    const i64 *res_rows;
} fc_gemm;

typedef struct {
    void *x; i64 sn, sc, sh, sw; i64 n, c, h, w;  /* NCHW, strides in elements */
    void *out; i64 top, left; fc_border border;
} fc_from_nchw_args;

typedef struct {
    const void *src; i64 rows, cols, channels, top, left;  /* the NHWC buffer */
    void *out; i64 n, c, h, w; int flat;  /* NCHW, or (N, C) when flat */
} fc_to_output_args;

typedef struct { void *buf; fc_border border; } fc_zero_border_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left;
    const void *scale, *shift; int has_affine;
    void *out; i64 out_rows, out_cols, out_top, out_left, n, height, width;
    fc_epi epi;
} fc_affine_args;

typedef struct {
    const void *a; i64 a_rows, a_cols, channels, a_top, a_left;
    const void *b; i64 b_rows, b_cols, b_top, b_left; int b_pixels, op;
    void *out; i64 out_rows, out_cols, out_top, out_left, n, height, width;
    fc_epi epi;
} fc_binary_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left, x_c0, count;
    void *out; i64 out_rows, out_cols, total, out_top, out_left, c0, n, height, width, sh, sw;
    i64 phase_step, row_step, col_step;
} fc_copy_args;

typedef struct {
    const void *x; const i64 *rows; i64 c_step;
    void *out; const i64 *out_rows; i64 pixels, channels;
} fc_gather_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left, n;
    void *out; i64 out_rows, out_cols, out_top, out_left, ho, wo;
    const i64 *rows0, *rows1, *cols0, *cols1; const void *row_w, *col_w;
} fc_resize_args;

typedef struct {
    const void *src; i64 rows, cols, channels, top, left, n, height, width;
    void *out;
} fc_flatten_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left, n, height, width;
    void *out; i64 out_rows, out_cols, out_top, out_left, ho, wo;
    i64 kh, kw, sh, sw, ph, pw, dh, dw;  /* max */
    i64 pad_bottom, pad_right, count_include_pad, divisor;  /* average */
    int average;
} fc_pool_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left, n, height, width, maximum;
    void *out; i64 out_rows, out_cols, out_top, out_left;
} fc_gap_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left, n, height, width;
    const void *w1, *b1; i64 squeeze; fc_epi s_epi;  /* the first layer: (S, C) */
    const void *w2, *b2; fc_epi epi;  /* the second, transposed: (S, C) */
    void *out; i64 out_rows, out_cols, out_top, out_left;
    void *scratch; i64 scratch_pitch;  /* per task: 2 C + S */
} fc_se_args;

typedef struct {
    const void *x; i64 rows, cols, c_in, top, left;
    const void *w; i64 kh, kw, multiplier; const void *bias;
    void *out; i64 out_rows, out_cols, channels, out_top, out_left, n, ho, wo;
    i64 sh, sw, dh, dw, block;
    fc_epi epi; fc_border border;
} fc_depthwise_args;

typedef struct {
    const void *x; const i64 *rows; i64 pixels; const i64 *taps; i64 n_taps, c_in, groups;
    fc_gemm g;
    void *out; const i64 *out_rows; i64 out_per_group;
    i64 tile_groups, unit_groups, block, chunk;
    fc_border border;
} fc_conv_args;

typedef struct {
    /* the depthwise half (and the expand layer before it, when ``expanded``) */
    const void *x; i64 rows, cols, channels, top, left, n;
    const void *dw_w; const void *dw_bias; fc_epi dw_epi;
    i64 sh, sw, dh, dw, ho, wo, block;
    /* the expand layer: x's image is height x width from (top, left) */
    int expanded; i64 height, width; const i64 *e_rows; fc_gemm e; i64 e_channels;
    void *slab; i64 slab_pitch; const i64 *slab_rows;
    /* the pointwise half */
    fc_gemm g; void *out; const i64 *out_rows; i64 out_channels;
    void *scratch; i64 scratch_pitch; const i64 *s_rows; i64 rows_per_step;
    fc_border border;
} fc_separable_args;

typedef struct {
    const void *x; i64 rows, cols, channels, top, left, n;
    fc_gemm g;
    void *out; i64 out_rows, out_cols, out_channels, out_top, out_left, ho, wo;
    const void *res; i64 res_rows, res_cols, res_pitch, res_top, res_left, res_channel;
    void *v; void *m; i64 v_pitch, m_pitch; const i64 *v_rows; const i64 *m_rows; i64 block;
    fc_border border;
} fc_winograd_args;

typedef void (*fc_task)(const void *args, i64 task, i64 tasks);

/* Every task function of the plan, by name: each vector width compiles all of them. */
#define FC_KERNELS(X)                                                                        \
    X(conv) X(depthwise_3x3) X(depthwise) X(separable) X(expanded_separable) X(winograd)   \
    X(pool) X(global_average) X(squeeze_excite) X(from_nchw) X(to_output) X(zero_border)   \
    X(affine) X(binary) X(copy_channels) X(gather) X(resize) X(softmax) X(flatten)

/* One vector width's kernels (``_plan_width.h``): float32 (``_f``) and float64 (``_d``). */
typedef struct {
    const char *isa;
    int vector_bits, dw_vectors;
#define FC_FIELDS(k) fc_task k##_f, k##_d;
    FC_KERNELS(FC_FIELDS)
#undef FC_FIELDS
} fc_kernel_table;

static const i64 fc_zero_tap = 0;

/* ------------------------------------------------------------------------------------------ */

static inline void fc_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline double fc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* A sense-reversing barrier: the last thread to arrive flips the sense; the others spin on
 * it, and yield the core after a while (a descheduled thread then gets it back). */
typedef struct {
    int count, sense, threads;
} fc_barrier;

#define FC_SPINS 200000

static inline void fc_barrier_wait(fc_barrier *b, int *local_sense) {
    int sense = !*local_sense;
    *local_sense = sense;
    int threads = __atomic_load_n(&b->threads, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == threads) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, sense, __ATOMIC_RELEASE);
        return;
    }
    long spins = 0;
    while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != sense) {
        if (++spins < FC_SPINS)
            fc_cpu_relax();
        else
            sched_yield();
    }
}

/* One call of a plan: ``n`` steps, step ``s`` being ``runs[s](args[s], task, tasks[s])`` for
 * every task, run by ``team`` threads with a barrier after each step. With ``times``, the
 * first thread records the clock after each step's barrier (``times[0]`` at the start). */
typedef struct {
    const fc_task *runs;
    const void *const *args;
    const i64 *tasks;
    i64 n;
    int team;
    double *times;
    fc_barrier *barrier;
} fc_job;

/* Thread ``tid``'s share of a job: tasks tid, tid + team, ... of each step. */
static void fc_job_share(const fc_job *job, int tid) {
    int sense = 0;
    for (i64 s = 0; s < job->n; s++) {
        for (i64 t = tid; t < job->tasks[s]; t += job->team)
            job->runs[s](job->args[s], t, job->tasks[s]);
        if (job->team > 1) fc_barrier_wait(job->barrier, &sense);
        if (job->times && tid == 0) job->times[s + 1] = fc_now();
    }
}

/* The plan's own worker threads. OpenMP, loaded with the passive wait policy (for the BLAS
 * calls of the per-call API), puts its workers to sleep at the end of every region, so each
 * call would start by waking them. These workers spin for ``spin`` seconds after a call,
 * waiting for the next one, and only then sleep: calls made back to back start at once, and
 * a plan left idle costs no core. One call runs on them at a time (``busy``); a call made
 * while another runs, from another Python thread, takes an OpenMP region instead. */
static struct {
    pthread_mutex_t busy;
    pthread_mutex_t lock; /* with wake: the sleeping workers */
    pthread_cond_t wake;
    int workers, sleepers, fork_handler;
    unsigned generation;  /* bumped for each job */
    int done;             /* workers through the current job */
    double spin;
    fc_job job;
} fc_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
             0, 0, 0, 0, 0, 0.0, {0}};

static void fc_pool_set_spin(double seconds) { fc_pool.spin = seconds; }

/* A forked child has none of the parent's workers (and maybe a held lock): a new pool. */
static void fc_pool_after_fork(void) {
    pthread_mutex_init(&fc_pool.busy, NULL);
    pthread_mutex_init(&fc_pool.lock, NULL);
    pthread_cond_init(&fc_pool.wake, NULL);
    fc_pool.workers = fc_pool.sleepers = 0;
}

static void *fc_pool_worker(void *arg) {
    const int id = (int)((intptr_t)arg >> 32);
    unsigned seen = (unsigned)((intptr_t)arg & 0xffffffff);
    for (;;) {
        unsigned generation;
        double since = 0.0;
        long spins = 0;
        while ((generation = __atomic_load_n(&fc_pool.generation, __ATOMIC_ACQUIRE)) == seen) {
            fc_cpu_relax();
            if ((++spins & 255) != 0) continue;
            double now = fc_now();
            if (since == 0.0) {
                since = now;
            } else if (now - since > fc_pool.spin) {
                pthread_mutex_lock(&fc_pool.lock);
                fc_pool.sleepers++;
                while (__atomic_load_n(&fc_pool.generation, __ATOMIC_ACQUIRE) == seen)
                    pthread_cond_wait(&fc_pool.wake, &fc_pool.lock);
                fc_pool.sleepers--;
                pthread_mutex_unlock(&fc_pool.lock);
                since = 0.0;
            }
        }
        seen = generation;
        if (id < fc_pool.job.team) fc_job_share(&fc_pool.job, id);
        /* every worker, in the team or not, reports: none is left reading a finished job */
        __atomic_add_fetch(&fc_pool.done, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* ``job`` on the pool (its workers started as needed); 0 if the pool is taken or a worker
 * cannot start, and nothing ran. */
static int fc_pool_run(const fc_job *job) {
    if (pthread_mutex_trylock(&fc_pool.busy) != 0) return 0;
    if (!fc_pool.fork_handler) {
        fc_pool.fork_handler = 1;
        pthread_atfork(NULL, NULL, fc_pool_after_fork);
    }
    const unsigned generation = fc_pool.generation;
    while (fc_pool.workers < job->team - 1) {
        pthread_attr_t attr;
        pthread_t thread;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        intptr_t arg = ((intptr_t)(fc_pool.workers + 1) << 32) | (intptr_t)generation;
        int failed = pthread_create(&thread, &attr, fc_pool_worker, (void *)arg);
        pthread_attr_destroy(&attr);
        if (failed) break;
        fc_pool.workers++;
    }
    if (fc_pool.workers < job->team - 1) {
        pthread_mutex_unlock(&fc_pool.busy);
        return 0;
    }
    const int workers = fc_pool.workers;
    fc_pool.job = *job;
    __atomic_store_n(&fc_pool.done, 0, __ATOMIC_RELAXED);
    pthread_mutex_lock(&fc_pool.lock);
    __atomic_store_n(&fc_pool.generation, generation + 1, __ATOMIC_RELEASE);
    if (fc_pool.sleepers) pthread_cond_broadcast(&fc_pool.wake);
    pthread_mutex_unlock(&fc_pool.lock);
    fc_job_share(&fc_pool.job, 0);
    long spins = 0;
    while (__atomic_load_n(&fc_pool.done, __ATOMIC_ACQUIRE) < workers) {
        if (++spins < FC_SPINS)
            fc_cpu_relax();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&fc_pool.busy);
    return 1;
}

/* Run ``n`` steps on ``threads`` threads (see fc_job): on the plan's pool, else (the pool
 * taken by another call) in one OpenMP parallel region. */
static void fc_run(const fc_task *runs, const void *const *args, const i64 *tasks, i64 n,
                   int threads, double *times) {
    fc_barrier barrier = {0, 0, threads};
    fc_job job = {runs, args, tasks, n, threads, times, &barrier};
    if (times) times[0] = fc_now();
    if (threads <= 1) {
        job.team = 1;
        fc_job_share(&job, 0);
        return;
    }
    if (fc_pool_run(&job)) return;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
#ifdef _OPENMP
        int tid = omp_get_thread_num(), team = omp_get_num_threads();
#else
        int tid = 0, team = 1;
#endif
        /* the team may be smaller than asked (nested, or a thread limit): its own size */
        if (tid == 0) {
            job.team = team;
            __atomic_store_n(&barrier.threads, team, __ATOMIC_RELAXED);
        }
        if (team > 1) {
            /* every thread sees the team's size before anyone counts on it */
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
        fc_job_share(&job, tid);
    }
}

/* Zero task ``task``'s share of the border of a flat (N, Hb, Wb, C) buffer. */
static inline void fc_zero_border_share(void *buf, const fc_border *b, i64 itemsize, i64 task,
                                        i64 tasks) {
    if (b->top + b->bottom + b->left + b->right == 0) return;
    char *base = (char *)buf;
    i64 rows = b->n * b->rows, row_length = b->cols * b->channels;
    for (i64 r = task * rows / tasks; r < (task + 1) * rows / tasks; r++) {
        i64 h = r % b->rows;
        char *at = base + r * row_length * itemsize;
        if (h < b->top || h >= b->rows - b->bottom) {
            memset(at, 0, row_length * itemsize);
        } else {
            memset(at, 0, b->left * b->channels * itemsize);
            memset(at + (row_length - b->right * b->channels) * itemsize, 0,
                   b->right * b->channels * itemsize);
        }
    }
}

#define FC_CAT2(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT2(a, b)
#define FC(name) FC_CAT(fc_##name, FC_SUFFIX)

/* Each vector width's kernels, compiled for that width's instructions whatever the compiler's
 * own target (as a wheel built once must run on any x86-64), and chosen at run time by what
 * the CPU reports (``fc_select_kernels``): a width the CPU lacks is never called. */

/* the generic tile (a shape not compiled for) loops to a run-time MR and NV: GCC cannot see
 * that it reads no more of its arrays than it wrote */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
/* instruction sets, not arch=: GCC inlines no intrinsic into a function of another arch */
#pragma GCC target("avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,f16c,movbe")
#define FC_ISA avx512
#define FC_VBITS 512
#define FC_DW_VECTORS 2  /* tuning.DEPTHWISE_VECTORS */
#include "_plan_width.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c,movbe")
#define FC_ISA avx2
#define FC_VBITS 256
#define FC_DW_VECTORS 1
#include "_plan_width.h"
#pragma GCC pop_options

#define FC_ISA sse2
#define FC_VBITS 128
#define FC_DW_VECTORS 1
#include "_plan_width.h"
#else
#define FC_ISA generic
#define FC_VBITS 128
#define FC_DW_VECTORS 1
#include "_plan_width.h"
#endif

#pragma GCC diagnostic pop

/* The widest kernels this CPU runs, at most ``max_bits`` wide (512, 256 or 128): AVX-512
 * (F, CD, BW, DQ, VL: Skylake-SP's set), AVX2 with FMA (Haswell's), else SSE2. */
static const fc_kernel_table *fc_select_kernels(int max_bits) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (max_bits >= 512 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2"))
        return &fc_kernels_avx512;
    if (max_bits >= 256 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe"))
        return &fc_kernels_avx2;
    return &fc_kernels_sse2;
#else
    (void)max_bits;
    return &fc_kernels_generic;
#endif
}

#endif
