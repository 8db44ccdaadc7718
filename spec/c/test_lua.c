/* test_lua: the LuaJIT VM host: package.path and preloads of sr_lua_new, sr_lua_call's tracebacks and stack balance, sr_lua_dir. */
#include "sr_test.h"

#include <lauxlib.h>
#include <libgen.h>

#include "sr_lua.h"

typedef struct fixture {
    char dir[256];
    lua_State *L;
    char *saved_env;      /* $STREAMRUN_LUA_DIR before the test, or NULL */
    int saved_stderr;     /* -1 unless stderr is being captured */
    char captured[512];   /* the file stderr goes to */
    char out[16384];      /* what was captured */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    sr_test_tmpdir(f->dir, sizeof(f->dir));
    const char *env = getenv("STREAMRUN_LUA_DIR");
    f->saved_env = env ? strdup(env) : NULL;
    f->saved_stderr = -1;
    sr_test_path(f->captured, sizeof(f->captured), f->dir, "stderr.txt");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->saved_stderr >= 0) {
        dup2(f->saved_stderr, STDERR_FILENO);
        close(f->saved_stderr);
    }
    sr_lua_free(f->L);
    if (f->saved_env) setenv("STREAMRUN_LUA_DIR", f->saved_env, 1);
    else unsetenv("STREAMRUN_LUA_DIR");
    free(f->saved_env);
    sr_test_rmtree(f->dir);
    free(f);
    return 0;
}

static void new_vm(fixture_t *f)
{
    f->L = sr_lua_new(f->dir);
    assert_non_null(f->L);
    assert_int_equal(lua_gettop(f->L), 0);
}

/* Sends stderr to a file until capture_end, which reads it into f->out.
 * Nothing may be asserted in between: cmocka reports on stderr. */
static void capture_start(fixture_t *f)
{
    fflush(stderr);
    f->saved_stderr = dup(STDERR_FILENO);
    assert_true(f->saved_stderr >= 0);
    int fd = open(f->captured, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
}

static void capture_end(fixture_t *f)
{
    fflush(stderr);
    assert_int_equal(dup2(f->saved_stderr, STDERR_FILENO), STDERR_FILENO);
    close(f->saved_stderr);
    f->saved_stderr = -1;
    assert_true(sr_test_read(f->captured, f->out, sizeof(f->out)) >= 0);
}

/* Pushes a chunk compiled from src (named chunkname). */
static void push_chunk(lua_State *L, const char *src, const char *chunkname)
{
    if (luaL_loadbuffer(L, src, strlen(src), chunkname) != 0)
        fail_msg("cannot compile: %s", lua_tostring(L, -1));
}

/* Runs src (no arguments, one result) and returns its result as a string
 * in buf; fails the test on error. */
static const char *eval(fixture_t *f, const char *src, char *buf, size_t len)
{
    push_chunk(f->L, src, "=eval");
    int top = lua_gettop(f->L) - 1;
    capture_start(f);
    int rc = sr_lua_call(f->L, 0, 1);
    capture_end(f);
    if (rc != 0) fail_msg("%s failed: %s", src, f->out);
    assert_int_equal(lua_gettop(f->L), top + 1);
    const char *s = lua_tostring(f->L, -1);
    snprintf(buf, len, "%s", s ? s : "(not a string)");
    lua_pop(f->L, 1);
    return buf;
}

/* -- sr_lua_new -- */

static void test_new_package_path_starts_with_lua_dir(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    char want[600], got[4096];
    snprintf(want, sizeof(want), "%s/?.lua;%s/?/init.lua;", f->dir, f->dir);
    eval(f, "return package.path", got, sizeof(got));
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("package.path is \"%s\", want it to start with \"%s\"", got, want);
    /* The default path is still there after it. */
    assert_true(strlen(got) > strlen(want));
}

static void test_new_requires_from_lua_dir(void **state)
{
    fixture_t *f = *state;
    char path[1024], sub[600], got[256];
    sr_test_write(sr_test_path(path, sizeof(path), f->dir, "sr_test_mod.lua"),
                  "w", "return { name = 'plain module' }\n");
    sr_test_path(sub, sizeof(sub), f->dir, "sr_test_pkg");
    assert_int_equal(mkdir(sub, 0755), 0);
    sr_test_write(sr_test_path(path, sizeof(path), sub, "init.lua"),
                  "w", "return { name = 'package init' }\n");
    new_vm(f);
    assert_string_equal(eval(f, "return require('sr_test_mod').name", got, sizeof(got)),
                        "plain module");
    assert_string_equal(eval(f, "return require('sr_test_pkg').name", got, sizeof(got)),
                        "package init");
}

static void test_new_preloads_cstate(void **state)
{
    fixture_t *f = *state;
    char got[64];
    new_vm(f);
    assert_string_equal(eval(f, "return type(package.preload['streamrun.cstate'])", got,
                             sizeof(got)), "function");
    /* It opens: a table with the constructor. */
    assert_string_equal(eval(f, "return type(require('streamrun.cstate').new)", got,
                             sizeof(got)), "function");
}

static void test_new_opens_standard_libraries(void **state)
{
    fixture_t *f = *state;
    char got[64];
    new_vm(f);
    assert_string_equal(eval(f, "return string.format('%d', math.floor(2.5)) .. type(io) .. "
                                "type(os) .. type(table) .. type(debug) .. type(jit)",
                             got, sizeof(got)),
                        "2tabletabletabletabletable");
}

/* -- sr_lua_call -- */

static void test_call_returns_results(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    lua_pushstring(L, "below"); /* must survive untouched */
    push_chunk(L, "local a, b = ...; return a + b, 'sum'", "=add");
    lua_pushinteger(L, 2);
    lua_pushinteger(L, 40);
    capture_start(f);
    int rc = sr_lua_call(L, 2, 2);
    capture_end(f);
    assert_int_equal(rc, 0);
    assert_string_equal(f->out, ""); /* nothing printed */
    assert_int_equal(lua_gettop(L), 3);
    assert_string_equal(lua_tostring(L, 1), "below");
    assert_int_equal(lua_tointeger(L, 2), 42);
    assert_string_equal(lua_tostring(L, 3), "sum");
}

static void test_call_multret(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    lua_pushboolean(L, 1);
    push_chunk(L, "return 1, 2, 3, 4", "=four");
    assert_int_equal(sr_lua_call(L, 0, LUA_MULTRET), 0);
    assert_int_equal(lua_gettop(L), 5);
    assert_true(lua_toboolean(L, 1));
    assert_int_equal(lua_tointeger(L, 5), 4);
    /* No results wanted: none left. */
    lua_settop(L, 0);
    push_chunk(L, "return 1, 2", "=two");
    assert_int_equal(sr_lua_call(L, 0, 0), 0);
    assert_int_equal(lua_gettop(L), 0);
}

static void test_call_error_prints_traceback(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    lua_pushstring(L, "below");
    push_chunk(L,
               "local function inner_stage(x) error('boom: ' .. x) end\n"
               "local function outer_stage(x) inner_stage(x) end\n"
               "outer_stage(...)\n",
               "@job.lua");
    lua_pushstring(L, "element 7");
    capture_start(f);
    int rc = sr_lua_call(L, 1, 1);
    capture_end(f);
    assert_int_not_equal(rc, 0);
    assert_int_equal(rc, LUA_ERRRUN);
    /* Nothing pushed, nothing below disturbed. */
    assert_int_equal(lua_gettop(L), 1);
    assert_string_equal(lua_tostring(L, 1), "below");
    if (strncmp(f->out, "streamrun: job.lua:1: boom: element 7\n", 38) != 0)
        fail_msg("stderr starts wrong:\n%s", f->out);
    const char *needles[] = {"stack traceback:", "inner_stage", "outer_stage", "job.lua:2"};
    for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
        if (!strstr(f->out, needles[i])) fail_msg("stderr lacks \"%s\":\n%s", needles[i], f->out);
    assert_int_equal(f->out[strlen(f->out) - 1], '\n');
    /* The VM is still usable. */
    char got[32];
    assert_string_equal(eval(f, "return 'alive'", got, sizeof(got)), "alive");
}

static void test_call_error_objects_not_strings(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    static const struct { const char *src, *msg; } cases[] = {
        {"error({})", "streamrun: (error object is not a string)\nstack traceback:"},
        {"error(nil)", "streamrun: (error object is nil)\nstack traceback:"},
        {"error()", "streamrun: (error object is nil)\nstack traceback:"},
        {"error(42, 0)", "streamrun: 42\nstack traceback:"}, /* numbers are strings */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        push_chunk(L, cases[i].src, "=case");
        capture_start(f);
        int rc = sr_lua_call(L, 0, 0);
        capture_end(f);
        assert_int_not_equal(rc, 0);
        assert_int_equal(lua_gettop(L), 0);
        if (strncmp(f->out, cases[i].msg, strlen(cases[i].msg)) != 0)
            fail_msg("%s printed:\n%s", cases[i].src, f->out);
    }
}

/* An error raised by the VM itself (calling nil), not by error(). */
static void test_call_runtime_error(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    push_chunk(L, "local t = nil\nreturn t.field\n", "=index");
    capture_start(f);
    int rc = sr_lua_call(L, 0, 3);
    capture_end(f);
    assert_int_not_equal(rc, 0);
    assert_int_equal(lua_gettop(L), 0);
    assert_non_null(strstr(f->out, "streamrun: index:2: attempt to index"));
    assert_non_null(strstr(f->out, "stack traceback:"));
}

/* A C function that raises, called directly (the function itself is C). */
static int raise_from_c(lua_State *L)
{
    return luaL_error(L, "raised in C with %d", 5);
}

static void test_call_c_function_error(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    lua_pushinteger(L, 1);
    lua_pushinteger(L, 2);
    lua_pushcfunction(L, raise_from_c);
    lua_pushinteger(L, 3);
    capture_start(f);
    int rc = sr_lua_call(L, 1, 0);
    capture_end(f);
    assert_int_not_equal(rc, 0);
    assert_int_equal(lua_gettop(L), 2);
    assert_int_equal(lua_tointeger(L, 2), 2);
    assert_non_null(strstr(f->out, "streamrun: raised in C with 5"));
    assert_non_null(strstr(f->out, "stack traceback:"));
}

/* Many failing calls in a row: the stack does not creep. */
static void test_call_errors_keep_stack_balanced(void **state)
{
    fixture_t *f = *state;
    new_vm(f);
    lua_State *L = f->L;
    capture_start(f);
    int failures = 0;
    for (int i = 0; i < 1000; i++) {
        luaL_loadstring(L, (i & 1) ? "error('odd')" : "return ...");
        lua_pushinteger(L, i);
        if (sr_lua_call(L, 1, 1) != 0) failures++;
        else lua_pop(L, 1);
    }
    capture_end(f);
    assert_int_equal(failures, 500);
    assert_int_equal(lua_gettop(L), 0);
}

/* -- sr_lua_dir -- */

static void test_lua_dir_from_env(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(setenv("STREAMRUN_LUA_DIR", "/opt/streamrun/lua", 1), 0);
    assert_ptr_equal(sr_lua_dir(buf, sizeof(buf)), buf);
    assert_string_equal(buf, "/opt/streamrun/lua");
}

/* Without the variable: ../lua beside the executable (this test binary). */
static void test_lua_dir_beside_executable(void **state)
{
    (void)state;
    char buf[4200], exe[4096], want[4200];
    assert_int_equal(unsetenv("STREAMRUN_LUA_DIR"), 0);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    snprintf(want, sizeof(want), "%s/../lua", dirname(exe));
    assert_ptr_equal(sr_lua_dir(buf, sizeof(buf)), buf);
    assert_string_equal(buf, want);
    size_t len = strlen(buf);
    assert_true(len > 7);
    assert_string_equal(buf + len - 7, "/../lua");
}

/* An empty variable counts as unset. */
static void test_lua_dir_empty_env(void **state)
{
    (void)state;
    char buf[4200];
    assert_int_equal(setenv("STREAMRUN_LUA_DIR", "", 1), 0);
    sr_lua_dir(buf, sizeof(buf));
    size_t len = strlen(buf);
    assert_true(len > 7);
    assert_string_equal(buf + len - 7, "/../lua");
}

static void test_lua_dir_truncates(void **state)
{
    (void)state;
    char buf[8];
    assert_int_equal(setenv("STREAMRUN_LUA_DIR", "/a/long/directory", 1), 0);
    sr_lua_dir(buf, sizeof(buf));
    assert_string_equal(buf, "/a/long");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_new_package_path_starts_with_lua_dir),
        T(test_new_requires_from_lua_dir),
        T(test_new_preloads_cstate),
        T(test_new_opens_standard_libraries),
        T(test_call_returns_results),
        T(test_call_multret),
        T(test_call_error_prints_traceback),
        T(test_call_error_objects_not_strings),
        T(test_call_runtime_error),
        T(test_call_c_function_error),
        T(test_call_errors_keep_stack_balanced),
        T(test_lua_dir_from_env),
        T(test_lua_dir_beside_executable),
        T(test_lua_dir_empty_env),
        T(test_lua_dir_truncates),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
