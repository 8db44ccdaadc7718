/* sr_workers: the job's worker threads (SPEC section 15). A pool of N
 * workers: the calling thread is worker 0, N - 1 pthreads the others. A
 * batch's work is handed to every worker at once (one lock and one wake-up
 * per worker per batch, never one per record) and the caller returns when
 * all are done. Each worker's busy time is counted for the status line,
 * --stats and /metrics. */
#ifndef SR_WORKERS_H
#define SR_WORKERS_H
#include <stddef.h>

#include "sr_batch.h"
#include "sr_words.h"

typedef struct sr_workers sr_workers_t;

/* One worker's share of a run: fn(arg, worker, nworkers). */
typedef void (*sr_workers_fn)(void *arg, int worker, int nworkers);

/* The CPUs this process may run on (its affinity mask; else the online
 * ones), at least 1. */
int sr_workers_online_cpus(void);

/* A pool of n workers (1 <= n <= 256; n - 1 threads started). Returns the
 * pool (the caller owns it: sr_workers_free) or NULL when out of memory or
 * when a thread cannot start. */
sr_workers_t *sr_workers_new(int n);
/* Stops and joins the threads. NULL is accepted. */
void sr_workers_free(sr_workers_t *w);
/* Workers in the pool. */
int sr_workers_count(const sr_workers_t *w);
/* 1 when each worker is kept to a CPU of its own (the caller could use
 * exactly n >= 2): worker k >= 1 to the k-th always, the caller to the
 * first from sr_workers_start to sr_workers_wait, then given back the
 * CPUs it had. */
int sr_workers_pinned(const sr_workers_t *w);

/* Runs fn on every worker (worker 0 on the calling thread) and returns when
 * all have returned. Not reentrant: one run at a time, from one thread. */
void sr_workers_run(sr_workers_t *w, sr_workers_fn fn, void *arg);

/* Starts fn on workers 1 .. n - 1 and returns at once: worker 0 (the
 * caller) does its own share meanwhile (in its Lua VM) and then calls
 * sr_workers_wait, which returns when the others are done. A pair of these
 * is one run: not reentrant, one at a time, from one thread. */
void sr_workers_start(sr_workers_t *w, sr_workers_fn fn, void *arg);
void sr_workers_wait(sr_workers_t *w);

/* For a thread that works beside the workers (reading ahead): waits while
 * the process's workers in a run (over every pool of 2 or more) are as many
 * as the CPUs it may use; sr_workers_cpu_free says whether one is free now
 * (1) or not (0), sr_workers_cpu_waiters how many threads wait. With no
 * pool started, a CPU is always free. */
void sr_workers_wait_for_cpu(void);
int sr_workers_cpu_free(void);
int sr_workers_cpu_waiters(void);

/* Milliseconds worker i has spent in runs since the pool started (0 for
 * an i out of range). */
double sr_workers_busy_ms(const sr_workers_t *w, int i);

/* Splits records [0, n) of b into the share of worker k of nw: contiguous
 * ranges of about equal bytes, in record order. Sets *lo and *hi. */
void sr_workers_share(const sr_batch_t *b, int k, int nw, size_t *lo, size_t *hi);

/* The built-in word count over b on every worker of w: wcs[k] (one per
 * worker, owned by the caller) counts worker k's share of the records,
 * then the others are merged into wcs[0] in worker order, so wcs[0] holds
 * what sr_wordcount_batch(wcs[0], b) gives: the distinct words in order of
 * first appearance and their counts. Returns 0 or SR_ENOMEM. */
int sr_workers_wordcount(sr_workers_t *w, sr_wordcount_t **wcs, const sr_batch_t *b);

#endif
