/* Tests for sr_watchdog: a record that runs too long is interrupted by the
 * hook (interpreted code); a compiled loop is not, and then the process
 * writes DIR/poison and executes the restart program, or exits 1 without a
 * directory; a stop signal ends a batch stuck in user code; a worker's VM
 * on a thread of its own is interrupted there, its stall restarts with
 * the record numbered in the step's input, while the loop thread waiting
 * for it is not taken for stuck. The cases that end the process run in a
 * child. */
#include "sr_test.h"
#include "sr_watchdog.h"

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

static const char *INTERPRETED = "jit.off() local x = 0 while true do x = x + 1 end";
static const char *COMPILED = "local i = 0 while true do i = i + 1 end";

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The record enter_record marks, and the skips before it. */
static int32_t at_rec = 3, at_skipped = 0;

/* A batch at 100 ms runs step 1 (stage "spin"), record at_rec. */
static void enter_record(void)
{
    sr_progress_t *P = sr_watchdog_progress();
    P->batch_ms = 100;
    P->gen++;
    P->step = 1;
    P->rec = at_rec;
    P->skipped = at_skipped;
    snprintf(P->stage, sizeof(P->stage), "spin");
}

/* Loads code as the function of stage "spin", registered as
 * streamrun.watchdog does (the hook raises only inside such a function). */
static int load_stage(lua_State *L, const char *code)
{
    if (luaL_loadstring(L, code) != 0) return -1;
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushstring(L, "spin");
    lua_rawset(L, -3);
    lua_setfield(L, LUA_REGISTRYINDEX, "streamrun.stage_fns");
    return 0;
}

static void leave_batch(void)
{
    sr_progress_t *P = sr_watchdog_progress();
    P->batch_ms = 0;
    P->step = 0;
}

static void test_hook_interrupts_interpreted_loop(void **st)
{
    (void)st;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    sr_watchdog_opts_t o = { .timeout_ms = 100, .grace_ms = 5000, .stop_ms = 4000, .poll_ms = 10 };
    assert_int_equal(0, sr_watchdog_start(L, &o));
    enter_record();
    int64_t t0 = now_ms();
    assert_int_equal(0, load_stage(L, INTERPRETED));
    assert_int_not_equal(0, lua_pcall(L, 0, 0, 0));
    int64_t took = now_ms() - t0;
    const char *msg = lua_tostring(L, -1);
    assert_non_null(strstr(msg, "stage_timeout: stage spin ran longer than 100ms"));
    assert_true(took >= 100);
    assert_true(took < 3000);
    /* The VM goes on: the hook is gone once it fired. */
    leave_batch();
    assert_int_equal(0, luaL_dostring(L, "local s = 0 for i = 1, 1e6 do s = s + i end"));
    sr_watchdog_stop();
    sr_watchdog_forget(L);
    lua_close(L);
}

/* Runs code in a child with the watchdog on; returns its wait status.
 * stop: send SIGTERM once the child's watchdog is on. */
static int run_child(const sr_watchdog_opts_t *o, const char *code, int stop, int as_stage)
{
    int ready[2];
    assert_int_equal(0, pipe(ready));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        lua_State *L = luaL_newstate();
        luaL_openlibs(L);
        if (sr_watchdog_start(L, o) != 0) _exit(90);
        enter_record();
        if (write(ready[1], "r", 1) != 1) _exit(93);
        if ((as_stage ? load_stage(L, code) : luaL_loadstring(L, code)) != 0) _exit(91);
        lua_pcall(L, 0, 0, 0);
        _exit(92); /* the watchdog ends the process before */
    }
    close(ready[1]);
    char c;
    assert_int_equal(1, read(ready[0], &c, 1));
    close(ready[0]);
    if (stop) kill(pid, SIGTERM);
    int status = 0;
    assert_int_equal(pid, waitpid(pid, &status, 0));
    return status;
}

static void test_compiled_loop_without_dir_exits_1(void **st)
{
    (void)st;
    sr_watchdog_opts_t o = { .timeout_ms = 100, .grace_ms = 200, .stop_ms = 4000, .poll_ms = 10 };
    int status = run_child(&o, COMPILED, 0, 1);
    assert_true(WIFEXITED(status));
    assert_int_equal(1, WEXITSTATUS(status));
}

/* Code of no stage (the runtime's own) is never interrupted by the hook,
 * which it would not expect: the stall goes to tier 2. */
static void test_hook_spares_runtime_code(void **st)
{
    (void)st;
    sr_watchdog_opts_t o = { .timeout_ms = 100, .grace_ms = 200, .stop_ms = 4000, .poll_ms = 10 };
    int status = run_child(&o, INTERPRETED, 0, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(1, WEXITSTATUS(status));
}

static void test_compiled_loop_with_dir_writes_poison_and_restarts(void **st)
{
    (void)st;
    char dir[256], path[300];
    sr_test_tmpdir(dir, sizeof(dir));
    static char *argv[] = { "sh", "-c", "exit 42", NULL };
    sr_watchdog_set_exec("/bin/sh", argv);
    sr_watchdog_opts_t o = { .timeout_ms = 100, .grace_ms = 200, .stop_ms = 4000, .poll_ms = 10, .dir = dir };
    int status = run_child(&o, COMPILED, 0, 1);
    assert_true(WIFEXITED(status));
    assert_int_equal(42, WEXITSTATUS(status)); /* the restart program ran */
    snprintf(path, sizeof(path), "%s/poison", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_string_equal("100 1 3 0 spin\n", line);
    /* The same record stuck again (its skip did not happen): exit 1, no loop. */
    status = run_child(&o, COMPILED, 0, 1);
    assert_true(WIFEXITED(status));
    assert_int_equal(1, WEXITSTATUS(status));
    /* A stall not at an input record (rec 0) stuck again after a restart
     * that skipped a record before it is the same stall: exit 1 too. */
    FILE *w = fopen(path, "w");
    assert_non_null(w);
    fputs("100 1 0 0 spin\n", w);
    fclose(w);
    at_rec = 0;
    at_skipped = 1;
    status = run_child(&o, COMPILED, 0, 1);
    at_rec = 3;
    at_skipped = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(1, WEXITSTATUS(status));
    sr_watchdog_set_exec(NULL, NULL);
    sr_test_rmtree(dir);
}

static void test_stop_signal_ends_stuck_batch(void **st)
{
    (void)st;
    /* No handler before the watchdog's: its chained default would end the
     * child at once; ignore it so only the watchdog can end it. */
    signal(SIGTERM, SIG_IGN);
    sr_watchdog_opts_t o = { .timeout_ms = 0, .grace_ms = 200, .stop_ms = 300, .poll_ms = 10 };
    int64_t t0 = now_ms();
    int status = run_child(&o, COMPILED, 1, 1);
    int64_t took = now_ms() - t0;
    signal(SIGTERM, SIG_DFL);
    assert_true(WIFEXITED(status));
    assert_int_equal(1, WEXITSTATUS(status));
    assert_true(took < 3000);
}

/* A worker: its own VM, attached, run on a thread that starts with every
 * signal blocked (as the pool's do); it runs code as stage "spin" at
 * record rec of its share (rec_base records of the step before it). */
typedef struct worker {
    lua_State *L;
    sr_progress_t *P;
    const char *code;
    int32_t rec, rec_base;
    int rc;
    char err[256];
    int64_t took;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    sr_watchdog_enter_thread(w->L);
    w->P->batch_ms = 100;
    w->P->gen++;
    w->P->step = 1;
    w->P->rec = w->rec;
    w->P->rec_base = w->rec_base;
    snprintf(w->P->stage, sizeof(w->P->stage), "spin");
    int64_t t0 = now_ms();
    w->rc = load_stage(w->L, w->code) != 0 ? -1 : lua_pcall(w->L, 0, 0, 0);
    w->took = now_ms() - t0;
    if (w->rc != 0) snprintf(w->err, sizeof(w->err), "%s", lua_tostring(w->L, -1));
    w->P->batch_ms = 0;
    w->P->step = 0;
    return NULL;
}

static void worker_open(worker_t *w, const char *code, int32_t rec, int32_t rec_base)
{
    memset(w, 0, sizeof(*w));
    w->L = luaL_newstate();
    luaL_openlibs(w->L);
    w->P = sr_watchdog_attach(w->L);
    w->code = code;
    w->rec = rec;
    w->rec_base = rec_base;
}

static pthread_t worker_start(worker_t *w)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    assert_int_equal(0, rc);
    return t;
}

/* The loop thread marks the step as worker 0 does while it waits for the
 * others: a batch, a step, waiting. */
static void enter_waiting(void)
{
    enter_record();
    sr_watchdog_progress()->waiting = 1;
}

static void test_hook_interrupts_worker_vm_on_its_thread(void **st)
{
    (void)st;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    worker_t w;
    worker_open(&w, INTERPRETED, 3, 40);
    assert_non_null(w.P);
    assert_true(w.P != sr_watchdog_progress());
    sr_watchdog_opts_t o = { .timeout_ms = 100, .grace_ms = 5000, .stop_ms = 4000, .poll_ms = 10 };
    assert_int_equal(0, sr_watchdog_start(L, &o));
    enter_waiting();
    pthread_t t = worker_start(&w);
    assert_int_equal(0, pthread_join(t, NULL)); /* the wait: until the worker's function is interrupted */
    leave_batch();
    sr_watchdog_progress()->waiting = 0;
    assert_int_not_equal(0, w.rc);
    assert_non_null(strstr(w.err, "stage_timeout: stage spin ran longer than 100ms"));
    assert_true(w.took >= 100);
    assert_true(w.took < 3000);
    /* Its VM goes on (the hook is gone); the loop thread's was never hooked. */
    assert_int_equal(0, luaL_dostring(w.L, "local s = 0 for i = 1, 1e6 do s = s + i end"));
    assert_null(lua_gethook(L));
    sr_watchdog_stop();
    sr_watchdog_forget(w.L);
    lua_close(w.L);
    sr_watchdog_forget(L);
    lua_close(L);
}

/* A worker stuck where no hook runs: the poison names the record in the
 * step's input (rec_base + rec), not the loop thread's waiting step. */
static void test_stuck_worker_poisons_its_record(void **st)
{
    (void)st;
    char dir[256], path[300];
    sr_test_tmpdir(dir, sizeof(dir));
    static char *argv[] = { "sh", "-c", "exit 42", NULL };
    sr_watchdog_set_exec("/bin/sh", argv);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        lua_State *L = luaL_newstate();
        luaL_openlibs(L);
        worker_t w;
        worker_open(&w, COMPILED, 3, 40);
        sr_watchdog_opts_t o = { .timeout_ms = 100, .grace_ms = 200, .stop_ms = 4000, .poll_ms = 10, .dir = dir };
        if (sr_watchdog_start(L, &o) != 0) _exit(90);
        enter_waiting();
        pthread_t t = worker_start(&w);
        pthread_join(t, NULL);
        _exit(92); /* the watchdog ends the process before */
    }
    int status = 0;
    assert_int_equal(pid, waitpid(pid, &status, 0));
    assert_true(WIFEXITED(status));
    assert_int_equal(42, WEXITSTATUS(status));
    snprintf(path, sizeof(path), "%s/poison", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_string_equal("100 1 43 0 spin\n", line);
    sr_watchdog_set_exec(NULL, NULL);
    sr_test_rmtree(dir);
}

/* Slots are taken and given back: after forget, attach finds one again. */
static void test_attach_forget(void **st)
{
    (void)st;
    lua_State *a = luaL_newstate(), *b = luaL_newstate();
    sr_progress_t *pa = sr_watchdog_attach(a), *pb = sr_watchdog_attach(b);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_true(pa != pb);
    sr_watchdog_forget(a);
    sr_progress_t *pc = sr_watchdog_attach(a);
    assert_true(pc == pa); /* the lowest free slot */
    sr_watchdog_forget(a);
    sr_watchdog_forget(b);
    lua_close(a);
    lua_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_interrupts_interpreted_loop),
        cmocka_unit_test(test_compiled_loop_without_dir_exits_1),
        cmocka_unit_test(test_hook_spares_runtime_code),
        cmocka_unit_test(test_compiled_loop_with_dir_writes_poison_and_restarts),
        cmocka_unit_test(test_stop_signal_ends_stuck_batch),
        cmocka_unit_test(test_hook_interrupts_worker_vm_on_its_thread),
        cmocka_unit_test(test_stuck_worker_poisons_its_record),
        cmocka_unit_test(test_attach_forget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
