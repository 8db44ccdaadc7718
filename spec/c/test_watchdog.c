/* Tests for sr_watchdog: a record that runs too long is interrupted by the
 * hook (interpreted code); a compiled loop is not, and then the process
 * writes DIR/poison and executes the restart program, or exits 1 without a
 * directory; a stop signal ends a batch stuck in user code. The cases that
 * end the process run in a child. */
#include "sr_test.h"
#include "sr_watchdog.h"

#include <lauxlib.h>
#include <lualib.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_interrupts_interpreted_loop),
        cmocka_unit_test(test_compiled_loop_without_dir_exits_1),
        cmocka_unit_test(test_hook_spares_runtime_code),
        cmocka_unit_test(test_compiled_loop_with_dir_writes_poison_and_restarts),
        cmocka_unit_test(test_stop_signal_ends_stuck_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
