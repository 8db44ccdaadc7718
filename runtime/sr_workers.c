/* sr_workers: a fixed pool of threads woken once per run. A run bumps a
 * generation number under the pool's mutex and broadcasts; each thread runs
 * its share and counts itself done; the caller (worker 0) runs its own share
 * and waits for the count. Busy time is measured on each worker with the
 * monotonic clock.
 *
 * Where the job has every CPU it may use (its affinity mask holds exactly
 * N: the default, "auto"), worker k is kept to the k-th of them, and the
 * caller to the first for the length of a run. Left to the scheduler, a
 * woken worker often lands on its waker's CPU and runs there first, its
 * share and the caller's one after the other: waking the other worker
 * took 0.3 ms a phase, and each batch of the keyed latency job 2.3 to
 * 2.6 ms (p50) against 1.9 to 2.0 ms kept apart. With more CPUs than
 * workers nobody is held (two jobs would crowd the same CPUs while others
 * idle). Between runs the caller is back on the CPUs it had, and so is
 * what it starts then (readers, the HTTP server, the checkpoint writer).
 *
 * The process's workers in a run are counted (over every pool): a thread
 * that reads ahead waits while they hold every CPU the process may use
 * (sr_workers_wait_for_cpu), so it reads on the CPUs they leave (between
 * runs, and where one worker is done before the others) instead of taking
 * half a CPU from one worker, which the others then wait for: the built-in
 * word count of 200 MB on 2 workers and 2 CPUs took 1.44 to 1.92 s (four
 * runs, median 1.61 s) reading beside the workers, 1.36 to 1.53 s (1.48 s)
 * reading where they leave a CPU. */
#include "sr_workers.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_exchange.h"
#include "sr_json_lua.h"
#include "sr_msgpack_lua.h"
#include "sr_state_lua.h"
#include "sr_window_lua.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define SR__MAX_WORKERS 256

typedef struct sr__worker {
    sr_workers_t *pool;
    int index;
    double busy_ms;
    pthread_t thread;
} sr__worker_t;

struct sr_workers {
    int n, started, stopping;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t generation;
    int pending;
    sr_workers_fn fn;
    void *arg;
    sr__worker_t *w;
    /* Kept to CPUs: worker 0's own, and the caller's CPUs before the run
     * (given back after it). */
    int pinned, held;
    cpu_set_t first, caller;
};

int sr_workers_online_cpus(void)
{
    /* The CPUs this process may run on (a container's cpuset, taskset),
     * else the online ones. */
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > SR__MAX_WORKERS ? SR__MAX_WORKERS : (int)n;
}

/* Workers in a run now (over every pool), and the CPUs the process may
 * use (read as a pool starts). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t freed;
    int running, cpus, waiting;
} sr__cpus = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0 };

static void sr__cpus_take(int n)
{
    pthread_mutex_lock(&sr__cpus.mu);
    sr__cpus.running += n;
    pthread_mutex_unlock(&sr__cpus.mu);
}

static void sr__cpus_give(void)
{
    pthread_mutex_lock(&sr__cpus.mu);
    if (--sr__cpus.running < sr__cpus.cpus) pthread_cond_broadcast(&sr__cpus.freed);
    pthread_mutex_unlock(&sr__cpus.mu);
}

int sr_workers_cpu_free(void)
{
    pthread_mutex_lock(&sr__cpus.mu);
    int free = sr__cpus.running < sr__cpus.cpus || sr__cpus.cpus == 0;
    pthread_mutex_unlock(&sr__cpus.mu);
    return free;
}

void sr_workers_wait_for_cpu(void)
{
    pthread_mutex_lock(&sr__cpus.mu);
    sr__cpus.waiting++;
    while (sr__cpus.cpus && sr__cpus.running >= sr__cpus.cpus) pthread_cond_wait(&sr__cpus.freed, &sr__cpus.mu);
    sr__cpus.waiting--;
    pthread_mutex_unlock(&sr__cpus.mu);
}

int sr_workers_cpu_waiters(void)
{
    pthread_mutex_lock(&sr__cpus.mu);
    int n = sr__cpus.waiting;
    pthread_mutex_unlock(&sr__cpus.mu);
    return n;
}

static double sr__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sr__run_share(sr__worker_t *me, sr_workers_fn fn, void *arg)
{
    double t0 = sr__now_ms();
    fn(arg, me->index, me->pool->n);
    me->busy_ms += sr__now_ms() - t0;
}

static void *sr__thread(void *p)
{
    sr__worker_t *me = p;
    sr_workers_t *w = me->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stopping && w->generation == seen) pthread_cond_wait(&w->go, &w->mu);
        if (w->stopping) break;
        seen = w->generation;
        sr_workers_fn fn = w->fn;
        void *arg = w->arg;
        pthread_mutex_unlock(&w->mu);
        sr__run_share(me, fn, arg);
        sr__cpus_give();
        pthread_mutex_lock(&w->mu);
        if (--w->pending == 0) pthread_cond_signal(&w->done);
    }
    pthread_mutex_unlock(&w->mu);
    /* The scratch buffers its VM's calls grew on this thread go with it. */
    sr_exchange_thread_free();
    sr_json_lua_thread_free();
    sr_mplua_thread_free();
    sr_state_lua_thread_free();
    sr_window_lua_thread_free();
    return NULL;
}

/* Keeps worker k (k >= 1) to the k-th CPU the caller may use when there
 * are exactly n; notes the first for worker 0 (sr_workers_start). */
static void sr__pin(sr_workers_t *w)
{
    cpu_set_t all;
    if (w->n < 2 || pthread_getaffinity_np(pthread_self(), sizeof(all), &all) != 0 || CPU_COUNT(&all) != w->n) return;
    int k = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && k < w->n; cpu++) {
        if (!CPU_ISSET(cpu, &all)) continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (k == 0) {
            w->first = one;
        } else if (pthread_setaffinity_np(w->w[k].thread, sizeof(one), &one) != 0) {
            /* (all or none: the ones kept so far go back) */
            for (int j = 1; j < k; j++) pthread_setaffinity_np(w->w[j].thread, sizeof(all), &all);
            return;
        }
        k++;
    }
    w->pinned = 1;
}

int sr_workers_pinned(const sr_workers_t *w) { return w && w->pinned; }

sr_workers_t *sr_workers_new(int n)
{
    if (n < 1 || n > SR__MAX_WORKERS) return NULL;
    sr_workers_t *w = sr_calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->n = n;
    w->w = sr_calloc((size_t)n, sizeof(*w->w));
    if (!w->w) goto fail;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->go, NULL);
    pthread_cond_init(&w->done, NULL);
    for (int i = 0; i < n; i++) {
        w->w[i].pool = w;
        w->w[i].index = i;
    }
    /* Threads start with every signal blocked: SIGINT, SIGTERM, SIGHUP and
     * the watchdog's signals stay with the loop thread, whose handlers
     * expect to run there. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int ok = 1;
    for (int i = 1; i < n && ok; i++) {
        if (pthread_create(&w->w[i].thread, NULL, sr__thread, &w->w[i]) != 0) ok = 0;
        else w->started = i;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!ok) {
        sr_workers_free(w); /* joins the ones started */
        return NULL;
    }
    sr__pin(w);
    int cpus = sr_workers_online_cpus();
    pthread_mutex_lock(&sr__cpus.mu);
    if (cpus > sr__cpus.cpus) sr__cpus.cpus = cpus;
    pthread_mutex_unlock(&sr__cpus.mu);
    return w;
fail:
    sr_free(w);
    return NULL;
}

void sr_workers_free(sr_workers_t *w)
{
    if (!w) return;
    if (w->w) {
        pthread_mutex_lock(&w->mu);
        w->stopping = 1;
        pthread_cond_broadcast(&w->go);
        pthread_mutex_unlock(&w->mu);
        for (int i = 1; i <= w->started; i++) pthread_join(w->w[i].thread, NULL);
        pthread_cond_destroy(&w->go);
        pthread_cond_destroy(&w->done);
        pthread_mutex_destroy(&w->mu);
        sr_free(w->w);
    }
    sr_free(w);
}

int sr_workers_count(const sr_workers_t *w) { return w ? w->n : 0; }

void sr_workers_start(sr_workers_t *w, sr_workers_fn fn, void *arg)
{
    if (w->n < 2) return;
    /* (first, so the workers woken never find the caller on their CPU) */
    w->held = w->pinned && pthread_getaffinity_np(pthread_self(), sizeof(w->caller), &w->caller) == 0 &&
              pthread_setaffinity_np(pthread_self(), sizeof(w->first), &w->first) == 0;
    sr__cpus_take(w->n);
    pthread_mutex_lock(&w->mu);
    w->fn = fn;
    w->arg = arg;
    w->pending = w->n - 1;
    w->generation++;
    pthread_cond_broadcast(&w->go);
    pthread_mutex_unlock(&w->mu);
}

void sr_workers_wait(sr_workers_t *w)
{
    if (w->n < 2) return;
    sr__cpus_give(); /* (the caller's share is done) */
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0) pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
    if (w->held) pthread_setaffinity_np(pthread_self(), sizeof(w->caller), &w->caller);
    w->held = 0;
}

void sr_workers_run(sr_workers_t *w, sr_workers_fn fn, void *arg)
{
    sr_workers_start(w, fn, arg);
    sr__run_share(&w->w[0], fn, arg);
    sr_workers_wait(w);
}

double sr_workers_busy_ms(const sr_workers_t *w, int i)
{
    if (!w || i < 0 || i >= w->n) return 0;
    return w->w[i].busy_ms;
}

/* The first record whose bytes start at or after target. */
static size_t sr__record_at(const sr_batch_t *b, size_t target)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->off[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void sr_workers_share(const sr_batch_t *b, int k, int nw, size_t *lo, size_t *hi)
{
    if (b->n == 0) {
        *lo = *hi = 0;
        return;
    }
    size_t bytes = b->off[b->n] - b->off[0];
    *lo = k == 0 ? 0 : sr__record_at(b, b->off[0] + bytes * (size_t)k / (size_t)nw);
    *hi = k == nw - 1 ? b->n : sr__record_at(b, b->off[0] + bytes * (size_t)(k + 1) / (size_t)nw);
}

typedef struct sr__wc_run {
    sr_wordcount_t **wcs;
    const sr_batch_t *b;
    int rc[SR__MAX_WORKERS];
} sr__wc_run_t;

static void sr__wc_share(void *arg, int k, int nw)
{
    sr__wc_run_t *r = arg;
    size_t lo, hi;
    sr_workers_share(r->b, k, nw, &lo, &hi);
    r->rc[k] = sr_wordcount_range(r->wcs[k], r->b, lo, hi);
}

int sr_workers_wordcount(sr_workers_t *w, sr_wordcount_t **wcs, const sr_batch_t *b)
{
    sr__wc_run_t r = { .wcs = wcs, .b = b };
    sr_workers_run(w, sr__wc_share, &r);
    int rc = SR_OK;
    for (int k = 0; k < w->n; k++)
        if (r.rc[k] < 0) rc = r.rc[k];
    for (int k = 1; rc == SR_OK && k < w->n; k++) rc = sr_wordcount_merge(wcs[0], wcs[k]);
    return rc;
}
