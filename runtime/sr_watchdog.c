/* sr_watchdog: the user-code watchdog thread (see sr_watchdog.h). Tier 1
 * sets a count hook from a signal handler on the Lua thread, the way lua.c
 * stops a script on Ctrl-C; the hook raises "stage_timeout" in the user
 * function. LuaJIT's compiled traces never run hooks, so when the hook has
 * not run after the grace period the thread records the stuck record in
 * DIR/poison (fsynced) and executes the program again: recovery from the
 * checkpoint and the write-ahead log is that of a kill -9, and the runner
 * dead-letters the poisoned record instead of running it. */
#include "sr_watchdog.h"
#include "sr_error.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SR__HOOK_SIGNAL SIGURG /* ignored by default; nothing else here uses it */
#define SR__HOOK_COUNT 1000    /* instructions between hook calls */
#define SR__STAGE_FNS "streamrun.stage_fns" /* registry: function -> stage name */

static sr_progress_t sr__progress;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread, main;
    int running, quit;
    sr_watchdog_opts_t o;
    char dir[4096];
    const char *exe;
    char **argv;
    lua_State *volatile L;
    struct sigaction prev_int, prev_term, prev_hook;
    volatile sig_atomic_t stop_sig; /* SIGINT/SIGTERM arrived */
    /* The record the hook is for, and what the hook did (main thread). */
    volatile int armed;
    volatile uint32_t armed_gen;
    volatile int32_t armed_rec;
    volatile int fired;            /* the hook raised for this record */
    volatile uint32_t hook_calls;  /* times the hook found user code to raise in */
    char fired_stage[64];
} W = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

sr_progress_t *sr_watchdog_progress(void) { return &sr__progress; }

static int64_t sr__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sr__say(const char *msg)
{
    size_t len = strlen(msg);
    while (len > 0) {
        ssize_t n = write(2, msg, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        msg += n;
        len -= (size_t)n;
    }
}

/* Copies a stage name, cut to size. */
static void sr__copy(char *dst, const volatile char *src, size_t size)
{
    size_t i = 0;
    for (; i + 1 < size && src[i]; i++) dst[i] = src[i];
    dst[i] = 0;
}

/* The stage whose function is on the Lua stack (innermost), or "". */
static void sr__stack_stage(lua_State *L, char *out, size_t size)
{
    out[0] = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, SR__STAGE_FNS);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
    lua_Debug ar;
    for (int level = 0; level < 200 && lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "f", &ar)) continue;
        lua_rawget(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING) {
            sr__copy(out, lua_tostring(L, -1), size);
            lua_pop(L, 1);
            break;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void sr__format_ms(char *buf, size_t size, int64_t ms)
{
    if (ms % 1000 == 0) snprintf(buf, size, "%llds", (long long)(ms / 1000));
    else snprintf(buf, size, "%lldms", (long long)ms);
}

/* The count hook (Lua thread): raises in the user code of the armed record,
 * only inside a stage's function (never in the runtime's own Lua, which
 * does not expect it). When that record is done it removes itself. */
static void sr__hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sr_progress_t *P = &sr__progress;
    if (!W.armed || !P->batch_ms || !P->step || P->gen != W.armed_gen || P->rec != W.armed_rec) {
        W.armed = 0;
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    char stage[64];
    sr__stack_stage(L, stage, sizeof(stage));
    /* Runtime code: the next call will be the user's. A hook that never
     * finds one does not count as running, so tier 2 follows. */
    if (!stage[0]) return;
    __atomic_add_fetch(&W.hook_calls, 1, __ATOMIC_RELAXED);
    sr__copy(W.fired_stage, stage, sizeof(W.fired_stage));
    W.fired = 1;
    W.armed = 0;
    lua_sethook(L, NULL, 0, 0);
    char dur[32];
    sr__format_ms(dur, sizeof(dur), W.o.timeout_ms);
    luaL_error(L, "stage_timeout: stage %s ran longer than %s", stage, dur);
}

/* SIGURG on the Lua thread: sets the hook, as lua.c's Ctrl-C handler does. */
static void sr__on_hook_signal(int sig)
{
    (void)sig;
    lua_State *L = W.L;
    if (L && W.armed) lua_sethook(L, sr__hook, LUA_MASKCOUNT, SR__HOOK_COUNT);
}

static void sr__chain(const struct sigaction *prev, int sig)
{
    if (prev->sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
    } else if (prev->sa_handler != SIG_IGN) {
        if (prev->sa_flags & SA_SIGINFO) prev->sa_sigaction(sig, NULL, NULL);
        else prev->sa_handler(sig);
    }
}

/* SIGINT/SIGTERM: noted for the thread, then the handler before (libev's). */
static void sr__on_stop_signal(int sig)
{
    W.stop_sig = sig;
    sr__chain(sig == SIGINT ? &W.prev_int : &W.prev_term, sig);
}

/* Whether the poison file already holds this record (it was skipped once
 * and got stuck again: restarting would loop). A record numbered within
 * its step's input (rec > 0) is the same one only with the same count of
 * skips before it; a stall not at an input record (rec <= 0: a step's
 * whole input, a key's state, a source) is the same whatever was skipped. */
static int sr__poison_has(const char *path, int64_t batch_ms, int32_t step, int32_t rec, int32_t skipped,
                          const char *stage)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[512], name[128];
    long long b;
    int st, r, sk, found = 0;
    while (!found && fgets(buf, sizeof(buf), f)) {
        if (sscanf(buf, "%lld %d %d %d %127[^\n]", &b, &st, &r, &sk, name) != 5) continue;
        found = b == batch_ms && st == step && r == rec && (rec <= 0 || sk == skipped) && !strcmp(name, stage);
    }
    fclose(f);
    return found;
}

/* Closes every descriptor from 3 up (close_range, or one by one where the
 * kernel lacks it). */
static void sr__close_from_3(void)
{
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 65536); fd++) close((int)fd);
}

/* Tier 2: the record is stuck where no hook runs. Never returns. */
static void sr__stuck(int64_t batch_ms, int32_t step, int32_t rec, int32_t skipped, const char *stage)
{
    char dur[32], msg[1024], line[512], path[4200];
    sr__format_ms(dur, sizeof(dur), W.o.timeout_ms);
    snprintf(msg, sizeof(msg),
             "streamrun: stage_timeout: stage %s ran longer than %s and did not stop (a compiled loop or a "
             "blocking call; batch %lld ms, step %d, record %d)", stage, dur, (long long)batch_ms, step, rec);
    sr__say(msg);
    if (!W.dir[0] || !W.exe) {
        sr__say(W.dir[0] ? "; cannot restart: exiting\n"
                         : "; without a checkpoint directory there is nothing to resume from: exiting\n");
        _exit(1);
    }
    snprintf(path, sizeof(path), "%s/poison", W.dir);
    /* Records are numbered after those skipped before (skipped of them):
     * the same line again means the skip did not happen. */
    snprintf(line, sizeof(line), "%lld %d %d %d %s\n", (long long)batch_ms, step, rec, skipped, stage);
    if (sr__poison_has(path, batch_ms, step, rec, skipped, stage)) {
        sr__say("; it was skipped once already and is stuck again: exiting\n");
        _exit(1);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) != 0) {
        sr__say("; cannot record it in the checkpoint directory: exiting\n");
        _exit(1);
    }
    close(fd);
    sr__say("; restarting from the checkpoint, the record goes to dead letters\n");
    /* The new image must not inherit descriptors (the checkpoint lock) or
     * this thread's blocked signals. */
    sr__close_from_3();
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    execv(W.exe, W.argv);
    sr__say("streamrun: restart failed: exiting\n");
    _exit(1);
}

static void *sr__run(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    sr_progress_t *P = &sr__progress;
    int have_key = 0;
    uint32_t kgen = 0;
    int32_t krec = 0;
    int64_t since = 0, armed_at = 0, stop_seen = 0;
    int fired_seen = 0;
    uint32_t calls_at_arm = 0;
    pthread_mutex_lock(&W.mu);
    while (!W.quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (W.o.poll_ms % 1000) * 1000000;
        ts.tv_sec += W.o.poll_ms / 1000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&W.cv, &W.mu, &ts);
        if (W.quit) break;
        int64_t now = sr__now_ms();
        int64_t batch = P->batch_ms;
        if (W.stop_sig) {
            if (!stop_seen) stop_seen = now;
            else if (batch && now - stop_seen >= W.o.stop_ms) {
                char msg[256];
                snprintf(msg, sizeof(msg), "streamrun: stopped while stage %s ran (batch %lld ms, record %d); "
                         "the batch in progress is replayed at the next start\n",
                         P->step ? P->stage : "(runtime)", (long long)batch, P->rec);
                sr__say(msg);
                _exit(1);
            }
        }
        int32_t step = P->step;
        if (W.o.timeout_ms <= 0 || !batch || !step) { have_key = 0; continue; }
        uint32_t gen = P->gen;
        int32_t rec = P->rec;
        if (!have_key || gen != kgen || rec != krec) {
            have_key = 1;
            kgen = gen;
            krec = rec;
            since = now;
            fired_seen = 0;
            W.armed = 0;
            W.fired = 0;
            W.fired_stage[0] = 0;
            continue;
        }
        /* The hook raised and the record goes on (the rest of a flat_map's
         * output, say): a full timeout again before the next interrupt. */
        if (W.fired && !W.armed && !fired_seen) {
            fired_seen = 1;
            since = now;
        }
        if (W.armed) {
            uint32_t calls = __atomic_load_n(&W.hook_calls, __ATOMIC_RELAXED);
            if (calls != calls_at_arm) {
                calls_at_arm = calls;
                armed_at = now;
            } else if (now - armed_at >= W.o.grace_ms) {
                char stage[64];
                sr__copy(stage, W.fired_stage[0] ? W.fired_stage : P->stage, sizeof(stage));
                sr__stuck(batch, step, rec, P->skipped, stage);
            }
        } else if (now - since >= W.o.timeout_ms && W.L) {
            W.armed_gen = gen;
            W.armed_rec = rec;
            calls_at_arm = __atomic_load_n(&W.hook_calls, __ATOMIC_RELAXED);
            armed_at = now;
            __atomic_store_n(&W.armed, 1, __ATOMIC_SEQ_CST);
            pthread_kill(W.main, SR__HOOK_SIGNAL);
        }
    }
    pthread_mutex_unlock(&W.mu);
    return NULL;
}

int sr_watchdog_start(lua_State *L, const sr_watchdog_opts_t *o)
{
    pthread_mutex_lock(&W.mu);
    W.o = *o;
    if (W.o.poll_ms <= 0) W.o.poll_ms = 20;
    snprintf(W.dir, sizeof(W.dir), "%s", o->dir ? o->dir : "");
    W.o.dir = NULL;
    W.L = L;
    W.main = pthread_self();
    int rc = SR_OK;
    if (!W.running) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sigfillset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sa.sa_handler = sr__on_hook_signal;
        sigaction(SR__HOOK_SIGNAL, &sa, &W.prev_hook);
        sa.sa_handler = sr__on_stop_signal;
        sigaction(SIGINT, &sa, &W.prev_int);
        sigaction(SIGTERM, &sa, &W.prev_term);
        W.quit = 0;
        W.stop_sig = 0;
        if (pthread_create(&W.thread, NULL, sr__run, NULL) != 0) {
            sigaction(SR__HOOK_SIGNAL, &W.prev_hook, NULL);
            sigaction(SIGINT, &W.prev_int, NULL);
            sigaction(SIGTERM, &W.prev_term, NULL);
            rc = SR_EIO;
        } else {
            W.running = 1;
        }
    }
    pthread_mutex_unlock(&W.mu);
    return rc;
}

void sr_watchdog_stop(void)
{
    pthread_mutex_lock(&W.mu);
    if (!W.running) {
        pthread_mutex_unlock(&W.mu);
        return;
    }
    W.quit = 1;
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    pthread_join(W.thread, NULL);
    sigaction(SR__HOOK_SIGNAL, &W.prev_hook, NULL);
    sigaction(SIGINT, &W.prev_int, NULL);
    sigaction(SIGTERM, &W.prev_term, NULL);
    W.running = 0;
    W.L = NULL;
    W.armed = 0;
}

void sr_watchdog_forget(lua_State *L)
{
    if (W.L == L) W.L = NULL;
}

void sr_watchdog_set_exec(const char *path, char **argv)
{
    W.exe = path;
    W.argv = argv;
}

/* The VM closes: the thread stops before the VM (and a library loaded by
 * it, holding this code) goes. */
static int sr__lua_gc(lua_State *L)
{
    sr_watchdog_stop();
    sr_watchdog_forget(L);
    return 0;
}

/* start(timeout_ms, dir|nil, grace_ms, stop_ms) */
static int sr__lua_start(lua_State *L)
{
    sr_watchdog_opts_t o = {
        .timeout_ms = (int64_t)luaL_checknumber(L, 1),
        .dir = luaL_optstring(L, 2, NULL),
        .grace_ms = (int64_t)luaL_optnumber(L, 3, 1000),
        .stop_ms = (int64_t)luaL_optnumber(L, 4, 4000),
    };
    int64_t t = o.timeout_ms > 0 ? o.timeout_ms : 1000;
    o.poll_ms = t / 5 < 50 ? (t / 5 > 5 ? t / 5 : 5) : 50;
    int ok = sr_watchdog_start(L, &o) == 0;
    lua_getfield(L, LUA_REGISTRYINDEX, "streamrun.watchdog_guard");
    if (lua_isnil(L, -1)) {
        lua_newuserdata(L, 1);
        lua_newtable(L);
        lua_pushcfunction(L, sr__lua_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, "streamrun.watchdog_guard");
    }
    lua_pop(L, 1);
    lua_pushboolean(L, ok);
    return 1;
}

int luaopen_streamrun_cwatchdog(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, sr__lua_start);
    lua_setfield(L, -2, "start");
    return 1;
}
