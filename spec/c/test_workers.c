/* test_workers: the worker pool runs every share once per run on distinct
 * threads (signals blocked but on the caller's) and counts busy time; with
 * a CPU for each worker, each is kept to its own (the caller for the length
 * of a run), else none is; shares cover a batch's records in order
 * with no gap; the word count split over 1, 2, 3 and 8 workers equals the
 * one-pass count, words in order of first appearance; a pool thread's
 * scratch buffers are freed as it exits; a thread waiting for a CPU waits
 * while the workers in a run hold every one, and goes on once one is done. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_batch.h"
#include "sr_json_lua.h"
#include "sr_state_lua.h"
#include "sr_words.h"
#include "sr_workers.h"

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct runs {
    int calls[8];
    pthread_t who[8];
    int sigint_blocked[8];
} runs_t;

static void note(void *arg, int k, int nw)
{
    runs_t *r = arg;
    assert_int_equal(nw, 4);
    r->calls[k]++;
    r->who[k] = pthread_self();
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    r->sigint_blocked[k] = sigismember(&cur, SIGINT);
    struct timespec ts = { 0, 2000000 };
    nanosleep(&ts, NULL);
}

static void test_pool_runs_every_share(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    assert_true(sr_workers_online_cpus() >= 1);
    sr_workers_t *w = sr_workers_new(4);
    assert_non_null(w);
    assert_int_equal(sr_workers_count(w), 4);
    runs_t r;
    memset(&r, 0, sizeof(r));
    for (int i = 0; i < 50; i++) sr_workers_run(w, note, &r);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(r.calls[k], 50);
        assert_true(sr_workers_busy_ms(w, k) >= 50 * 2.0);
        for (int j = 0; j < k; j++) assert_false(pthread_equal(r.who[j], r.who[k]));
        /* signals stay with the loop thread (worker 0) */
        assert_int_equal(r.sigint_blocked[k], k > 0);
    }
    assert_true(pthread_equal(r.who[0], pthread_self()));
    assert_true(sr_workers_busy_ms(w, 4) == 0);
    sr_workers_free(w);
    assert_null(sr_workers_new(0));
    assert_int_equal(sr_alloc_used(), before);
}

/* Each worker's CPUs during a run (checked by the caller: a failed
 * assertion must not jump across threads). */
typedef struct cpus_seen {
    cpu_set_t set[8];
    int rc[8];
} cpus_seen_t;

static void note_cpus(void *arg, int k, int nw)
{
    (void)nw;
    cpus_seen_t *c = arg;
    c->rc[k] = pthread_getaffinity_np(pthread_self(), sizeof(c->set[k]), &c->set[k]);
}

/* The k-th CPU of set (-1: none). */
static int nth_cpu(const cpu_set_t *set, int k)
{
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, set) && k-- == 0) return cpu;
    return -1;
}

/* A pool of n run thrice: each worker's CPUs, and the caller's after. */
static void run_pool(int n, int pinned, const cpu_set_t *mine)
{
    sr_workers_t *w = sr_workers_new(n);
    assert_non_null(w);
    assert_int_equal(sr_workers_pinned(w), pinned);
    cpus_seen_t c;
    cpu_set_t after;
    for (int i = 0; i < 3; i++) {
        sr_workers_run(w, note_cpus, &c);
        for (int k = 0; k < n; k++) {
            assert_int_equal(c.rc[k], 0);
            if (pinned) {
                /* worker k on the k-th CPU alone */
                assert_int_equal(CPU_COUNT(&c.set[k]), 1);
                assert_true(CPU_ISSET(nth_cpu(mine, k), &c.set[k]));
            } else {
                assert_true(CPU_EQUAL(&c.set[k], mine));
            }
        }
        /* the caller back on its CPUs after the run */
        assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(after), &after), 0);
        assert_true(CPU_EQUAL(&after, mine));
    }
    sr_workers_free(w);
}

static void test_pool_keeps_workers_to_cpus(void **state)
{
    (void)state;
    cpu_set_t mine;
    assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(mine), &mine), 0);
    int cpus = CPU_COUNT(&mine);
    assert_int_equal(sr_workers_online_cpus(), cpus);
    /* A worker per CPU: each kept to its own. More workers than CPUs, or
     * fewer: nobody is held. */
    if (cpus >= 2 && cpus <= 8) run_pool(cpus, 1, &mine);
    if (cpus + 1 <= 8) run_pool(cpus + 1, 0, &mine);
    if (cpus > 2) run_pool(2, 0, &mine);
    /* The caller on one CPU: a pool of 2 is not held either, and gives
     * the caller back the one CPU it had. */
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(nth_cpu(&mine, 0), &one);
    assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);
    run_pool(2, 0, &one);
    assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof(mine), &mine), 0);
}

/* A VM's calls on a pool thread, growing that thread's scratch buffers
 * (json.encode's output, cstate's value buffer, the unpacking zone). */
static void use_buffers(void *arg, int k, int nw)
{
    (void)arg;
    (void)nw;
    if (k == 0) return;
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    char big[20000];
    memset(big, 'x', sizeof(big));
    lua_pushlstring(L, big, sizeof(big));
    int value = lua_gettop(L);
    luaopen_streamrun_json(L);
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, value);
    assert_int_equal(lua_pcall(L, 1, 1, 0), 0);
    assert_true(lua_objlen(L, -1) == sizeof(big) + 2);
    luaopen_streamrun_cstate(L);
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, value);
    assert_int_equal(lua_pcall(L, 1, 1, 0), 0);
    lua_getfield(L, -2, "decode");
    lua_insert(L, -2);
    assert_int_equal(lua_pcall(L, 1, 1, 0), 0);
    assert_true(lua_objlen(L, -1) == sizeof(big));
    lua_close(L);
}

/* A pool thread's scratch buffers go with it: sr_alloc's count is back
 * where it was once the pool is freed. */
static void test_pool_threads_free_their_buffers(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_workers_t *w = sr_workers_new(3);
    assert_non_null(w);
    sr_workers_run(w, use_buffers, NULL);
    assert_true(sr_alloc_used() > before);
    sr_workers_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

/* Workers 1 .. n - 1 held in their share until the test lets them go. */
typedef struct held {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;
    int freed_when_let_go; /* the reader's view: 1 when it went on after */
    int reader_done;
} held_t;

static void hold(void *arg, int k, int nw)
{
    (void)nw;
    held_t *h = arg;
    if (k == 0) return;
    pthread_mutex_lock(&h->mu);
    while (!h->go) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void *reader(void *arg)
{
    held_t *h = arg;
    sr_workers_wait_for_cpu();
    pthread_mutex_lock(&h->mu);
    h->freed_when_let_go = h->go;
    h->reader_done = 1;
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void test_reader_waits_for_a_free_cpu(void **state)
{
    (void)state;
    int cpus = sr_workers_online_cpus();
    if (cpus > 16) return; /* (a pool as large as the machine) */
    int n = cpus < 2 ? 2 : cpus;
    sr_workers_t *w = sr_workers_new(n);
    assert_non_null(w);
    assert_int_equal(sr_workers_cpu_free(), 1);
    for (int round = 0; round < 3; round++) {
        held_t h = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1, 0 };
        /* In a run, worker 0's share (this thread) included: none free. */
        sr_workers_start(w, hold, &h);
        assert_int_equal(sr_workers_cpu_free(), 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, reader, &h), 0);
        /* The reader waits (or, were there no wait, is done: failed below);
         * up to 10 s. */
        for (int i = 0; i < 100000 && sr_workers_cpu_waiters() == 0; i++) {
            pthread_mutex_lock(&h.mu);
            int done = h.reader_done;
            pthread_mutex_unlock(&h.mu);
            if (done) break;
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&h.mu);
        h.go = 1;
        pthread_cond_broadcast(&h.cv);
        pthread_mutex_unlock(&h.mu);
        sr_workers_wait(w);
        assert_int_equal(pthread_join(t, NULL), 0);
        /* (it went on only once the workers were let go) */
        assert_int_equal(h.freed_when_let_go, 1);
        assert_int_equal(sr_workers_cpu_free(), 1);
    }
    /* A run of a pool of fewer workers than CPUs leaves one free. */
    if (cpus >= 3) {
        sr_workers_t *two = sr_workers_new(2);
        held_t h = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 1, -1, 0 };
        sr_workers_start(two, hold, &h);
        assert_int_equal(sr_workers_cpu_free(), 1);
        sr_workers_wait(two);
        sr_workers_free(two);
    }
    sr_workers_free(w);
}

/* A state with no keys snapshots to empty columns (no sort of a NULL list:
 * UBSan aborts on that). */
static void test_empty_state_snapshot(void **state)
{
    (void)state;
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaopen_streamrun_cstate(L);
    lua_getfield(L, -1, "new");
    lua_pushstring(L, "empty");
    assert_int_equal(lua_pcall(L, 1, 1, 0), 0);
    lua_getfield(L, -1, "snapshot");
    lua_pushvalue(L, -2);
    assert_int_equal(lua_pcall(L, 1, 3, 0), 0);
    assert_int_equal(lua_tointeger(L, -1), 0);
    assert_int_equal(lua_objlen(L, -2), 0);
    assert_int_equal(lua_objlen(L, -3), 0);
    lua_close(L);
}

static sr_batch_t *lines(int n, unsigned seed)
{
    sr_batch_t *b = sr_batch_new(0, 0);
    char line[1024];
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        int words = (int)(seed % 9);
        for (int j = 0; j < words; j++) {
            seed = seed * 1103515245u + 12345u;
            len += (size_t)snprintf(line + len, sizeof(line) - len, "%sw%u%s", j ? " \t" : "", (seed >> 16) % 300,
                                    (seed & 64) ? "-a-long-tail-past-sixteen-bytes" : "");
        }
        seed = seed * 1103515245u + 12345u;
        assert_int_equal(sr_batch_append(b, line, len, i), 0);
    }
    return b;
}

static void test_shares_cover_in_order(void **state)
{
    (void)state;
    sr_batch_t *b = lines(1000, 7);
    for (int nw = 1; nw <= 8; nw++) {
        size_t next = 0;
        for (int k = 0; k < nw; k++) {
            size_t lo, hi;
            sr_workers_share(b, k, nw, &lo, &hi);
            assert_int_equal(lo, next);
            assert_true(hi >= lo);
            next = hi;
        }
        assert_int_equal(next, b->n);
    }
    sr_batch_free(b);
}

static void test_split_word_count_equals_one_pass(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    int sizes[] = { 0, 1, 3, 5000 };
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        sr_batch_t *b = lines(sizes[s], 11 + (unsigned)s);
        sr_wordcount_t *one = sr_wordcount_new();
        assert_int_equal(sr_wordcount_batch(one, b), 0);
        int counts[] = { 1, 2, 3, 8 };
        for (size_t c = 0; c < 4; c++) {
            int nw = counts[c];
            sr_workers_t *w = sr_workers_new(nw);
            sr_wordcount_t *wcs[8];
            for (int k = 0; k < nw; k++) wcs[k] = sr_wordcount_new();
            for (int round = 0; round < 2; round++) { /* tables reused batch after batch */
                assert_int_equal(sr_workers_wordcount(w, wcs, b), 0);
                assert_int_equal(wcs[0]->n, one->n);
                assert_int_equal(wcs[0]->words, one->words);
                for (size_t i = 0; i < one->n; i++) {
                    assert_int_equal(wcs[0]->word[i].len, one->word[i].len);
                    assert_memory_equal(b->data + wcs[0]->word[i].off, b->data + one->word[i].off, one->word[i].len);
                    assert_true(wcs[0]->word[i].count == one->word[i].count);
                }
            }
            for (int k = 0; k < nw; k++) sr_wordcount_free(wcs[k]);
            sr_workers_free(w);
        }
        sr_wordcount_free(one);
        sr_batch_free(b);
    }
    assert_int_equal(sr_alloc_used(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_runs_every_share),
        cmocka_unit_test(test_pool_threads_free_their_buffers),
        cmocka_unit_test(test_pool_keeps_workers_to_cpus),
        cmocka_unit_test(test_reader_waits_for_a_free_cpu),
        cmocka_unit_test(test_shares_cover_in_order),
        cmocka_unit_test(test_empty_state_snapshot),
        cmocka_unit_test(test_split_word_count_equals_one_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
