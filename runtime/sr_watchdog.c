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
#include "sr_stop.h"

#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <sched.h>
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

/* A watched VM: slot 0 is the loop thread's (sr__progress), the others
 * workers' (their own record). */
typedef struct sr__vm {
    lua_State *volatile L; /* NULL: a free slot (slot 0: no VM yet) */
    sr_progress_t *P;
    pthread_t thread;        /* the thread running L */
    volatile int has_thread;
    volatile int handlers;   /* hook signal handlers at this slot now */
    /* The record the hook is for, and what the hook did (the VM's thread). */
    volatile int armed;
    volatile uint32_t armed_gen;
    volatile int32_t armed_rec;
    volatile int fired;            /* the hook raised for this record */
    volatile uint32_t hook_calls;  /* times the hook found user code to raise in */
    char fired_stage[64];
    /* The watchdog thread's view of the record running. */
    int have_key, fired_seen;
    uint32_t kgen, calls_at_arm;
    int32_t krec;
    int64_t since, armed_at;
    sr_progress_t own;
} sr__vm_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running, quit;
    sr_watchdog_opts_t o;
    char dir[4096];
    char no_restart[128];
    const char *exe;
    char **argv;
    struct sigaction prev_int, prev_term, prev_hook;
    volatile sig_atomic_t stop_sig; /* SIGINT/SIGTERM arrived */
    volatile int nvm;               /* slots in use are below */
    sr__vm_t vm[SR_WATCHDOG_MAX_VMS];
} W = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .nvm = 1,
        .vm = { [0] = { .P = &sr__progress } } };

sr_progress_t *sr_watchdog_progress(void) { return &sr__progress; }

static int64_t sr__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* The slot of VM L, or NULL. */
static sr__vm_t *sr__vm_of(lua_State *L)
{
    if (!L) return NULL;
    int n = W.nvm;
    for (int i = 0; i < n; i++)
        if (W.vm[i].L == L) return &W.vm[i];
    return NULL;
}

/* The count hook (the VM's thread): raises in the user code of the armed
 * record, only inside a stage's function (never in the runtime's own Lua,
 * which does not expect it). When that record is done it removes itself. */
static void sr__hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sr__vm_t *v = sr__vm_of(L);
    sr_progress_t *P = v ? v->P : NULL;
    if (!v || !v->armed || !P->batch_ms || !P->step || P->gen != v->armed_gen || P->rec != v->armed_rec) {
        if (v) v->armed = 0;
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    char stage[64];
    sr__stack_stage(L, stage, sizeof(stage));
    /* Runtime code: the next call will be the user's. A hook that never
     * finds one does not count as running, so tier 2 follows. */
    if (!stage[0]) return;
    __atomic_add_fetch(&v->hook_calls, 1, __ATOMIC_RELAXED);
    sr__copy(v->fired_stage, stage, sizeof(v->fired_stage));
    v->fired = 1;
    v->armed = 0;
    lua_sethook(L, NULL, 0, 0);
    char dur[32];
    sr__format_ms(dur, sizeof(dur), W.o.timeout_ms);
    luaL_error(L, "stage_timeout: stage %s ran longer than %s", stage, dur);
}

/* SIGURG on a VM's thread: sets the hook of the armed VM this thread runs,
 * as lua.c's Ctrl-C handler does. */
static void sr__on_hook_signal(int sig)
{
    (void)sig;
    pthread_t self = pthread_self();
    int n = W.nvm;
    for (int i = 0; i < n; i++) {
        sr__vm_t *v = &W.vm[i];
        if (!v->has_thread || !pthread_equal(v->thread, self)) continue;
        __atomic_add_fetch(&v->handlers, 1, __ATOMIC_SEQ_CST);
        lua_State *L = __atomic_load_n(&v->L, __ATOMIC_SEQ_CST);
        if (L && v->armed) lua_sethook(L, sr__hook, LUA_MASKCOUNT, SR__HOOK_COUNT);
        __atomic_sub_fetch(&v->handlers, 1, __ATOMIC_SEQ_CST);
    }
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
    sr_stop_note(sig);
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
    sr_stop_say(msg);
    if (W.no_restart[0]) {
        char why[160];
        snprintf(why, sizeof(why), "; %s: exiting\n", W.no_restart);
        sr_stop_say(why);
        _exit(1);
    }
    if (!W.dir[0] || !W.exe) {
        sr_stop_say(W.dir[0] ? "; cannot restart: exiting\n"
                         : "; without a checkpoint directory there is nothing to resume from: exiting\n");
        _exit(1);
    }
    snprintf(path, sizeof(path), "%s/poison", W.dir);
    /* Records are numbered after those skipped before (skipped of them):
     * the same line again means the skip did not happen. */
    snprintf(line, sizeof(line), "%lld %d %d %d %s\n", (long long)batch_ms, step, rec, skipped, stage);
    if (sr__poison_has(path, batch_ms, step, rec, skipped, stage)) {
        sr_stop_say("; it was skipped once already and is stuck again: exiting\n");
        _exit(1);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) != 0) {
        sr_stop_say("; cannot record it in the checkpoint directory: exiting\n");
        _exit(1);
    }
    close(fd);
    /* A stop signal that came meanwhile is not forgotten by a restart:
     * the next start skips the record. */
    if (W.stop_sig) {
        sr_stop_say("; a stop signal came: exiting, the batch in progress is replayed (the record goes to dead "
                    "letters) at the next start\n");
        _exit(1);
    }
    sr_stop_say("; restarting from the checkpoint, the record goes to dead letters\n");
    /* The new image must not inherit descriptors (the checkpoint lock) or
     * this thread's blocked signals. */
    sr__close_from_3();
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    execv(W.exe, W.argv);
    sr_stop_say("streamrun: restart failed: exiting\n");
    _exit(1);
}

/* One look at VM v (under W.mu): a record running past the timeout gets
 * the hook signalled to its thread; an armed hook that does not run within
 * the grace period is tier 2 (sr__stuck: never returns). */
static void sr__look(sr__vm_t *v, int64_t now)
{
    sr_progress_t *P = v->P;
    int64_t batch = P->batch_ms;
    int32_t step = P->step;
    /* (Worker 0 waiting for the others is not stuck: they are watched.) */
    if (W.o.timeout_ms <= 0 || !batch || !step || P->waiting || !v->L || !v->has_thread) {
        v->have_key = 0;
        return;
    }
    uint32_t gen = P->gen;
    int32_t rec = P->rec;
    if (!v->have_key || gen != v->kgen || rec != v->krec) {
        v->have_key = 1;
        v->kgen = gen;
        v->krec = rec;
        v->since = now;
        v->fired_seen = 0;
        v->armed = 0;
        v->fired = 0;
        v->fired_stage[0] = 0;
        return;
    }
    /* The hook raised and the record goes on (the rest of a flat_map's
     * output, say): a full timeout again before the next interrupt. */
    if (v->fired && !v->armed && !v->fired_seen) {
        v->fired_seen = 1;
        v->since = now;
    }
    if (v->armed) {
        uint32_t calls = __atomic_load_n(&v->hook_calls, __ATOMIC_RELAXED);
        if (calls != v->calls_at_arm) {
            v->calls_at_arm = calls;
            v->armed_at = now;
        } else if (now - v->armed_at >= W.o.grace_ms) {
            char stage[64];
            sr__copy(stage, v->fired_stage[0] ? v->fired_stage : P->stage, sizeof(stage));
            /* A worker's record is numbered within its share of the
             * step's input; the skip numbers the step's whole input. */
            int32_t at = rec > 0 ? rec + P->rec_base : rec;
            sr__stuck(batch, step, at, sr__progress.skipped, stage);
        }
    } else if (now - v->since >= W.o.timeout_ms) {
        v->armed_gen = gen;
        v->armed_rec = rec;
        v->calls_at_arm = __atomic_load_n(&v->hook_calls, __ATOMIC_RELAXED);
        v->armed_at = now;
        __atomic_store_n(&v->armed, 1, __ATOMIC_SEQ_CST);
        pthread_kill(v->thread, SR__HOOK_SIGNAL);
    }
}

static void *sr__run(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    sr_progress_t *P = &sr__progress;
    int64_t stop_seen = 0;
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
                sr_stop_say(msg);
                _exit(1);
            }
        }
        for (int i = 0; i < W.nvm; i++) sr__look(&W.vm[i], now);
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
    snprintf(W.no_restart, sizeof(W.no_restart), "%s", o->no_restart ? o->no_restart : "");
    W.o.dir = W.o.no_restart = NULL;
    W.vm[0].thread = pthread_self();
    W.vm[0].has_thread = 1;
    W.vm[0].L = L;
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
    W.vm[0].L = NULL;
    W.vm[0].armed = 0;
}

void sr_watchdog_forget(lua_State *L)
{
    if (!L) return;
    pthread_mutex_lock(&W.mu);
    for (int i = 0; i < W.nvm; i++) {
        sr__vm_t *v = &W.vm[i];
        if (v->L != L) continue;
        __atomic_store_n(&v->L, NULL, __ATOMIC_SEQ_CST);
        v->armed = 0;
        v->have_key = 0;
        /* A handler that read L before it went is done with it first. */
        while (__atomic_load_n(&v->handlers, __ATOMIC_SEQ_CST) > 0) sched_yield();
        if (i > 0) v->has_thread = 0;
    }
    while (W.nvm > 1 && !W.vm[W.nvm - 1].L) W.nvm--;
    pthread_mutex_unlock(&W.mu);
}

sr_progress_t *sr_watchdog_attach(lua_State *L)
{
    sr_progress_t *P = NULL;
    pthread_mutex_lock(&W.mu);
    for (int i = 1; i < SR_WATCHDOG_MAX_VMS; i++) {
        sr__vm_t *v = &W.vm[i];
        if (v->L) continue;
        memset(v, 0, sizeof(*v));
        v->P = &v->own;
        v->L = L;
        if (i >= W.nvm) W.nvm = i + 1;
        P = v->P;
        break;
    }
    pthread_mutex_unlock(&W.mu);
    return P;
}

void sr_watchdog_enter_thread(lua_State *L)
{
    pthread_t self = pthread_self();
    pthread_mutex_lock(&W.mu);
    sr__vm_t *v = sr__vm_of(L);
    int moved = v && v != &W.vm[0] && !(v->has_thread && pthread_equal(v->thread, self));
    if (moved) {
        v->has_thread = 0;
        v->thread = self;
        v->has_thread = 1;
    }
    pthread_mutex_unlock(&W.mu);
    if (moved) {
        /* (Worker threads start with every signal blocked.) */
        sigset_t hook;
        sigemptyset(&hook);
        sigaddset(&hook, SR__HOOK_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &hook, NULL);
    }
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

/* start(timeout_ms, dir|nil, grace_ms, stop_ms, no_restart|nil) */
static int sr__lua_start(lua_State *L)
{
    sr_watchdog_opts_t o = {
        .timeout_ms = (int64_t)luaL_checknumber(L, 1),
        .dir = luaL_optstring(L, 2, NULL),
        .grace_ms = (int64_t)luaL_optnumber(L, 3, 1000),
        .stop_ms = (int64_t)luaL_optnumber(L, 4, 4000),
        .no_restart = luaL_optstring(L, 5, NULL),
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

/* progress() -> the progress record attached to the calling VM (a light
 * userdata; call it from the VM's main coroutine), or nil. */
static int sr__lua_progress(lua_State *L)
{
    pthread_mutex_lock(&W.mu);
    sr__vm_t *v = sr__vm_of(L);
    sr_progress_t *P = v && v != &W.vm[0] ? v->P : NULL;
    pthread_mutex_unlock(&W.mu);
    if (P) lua_pushlightuserdata(L, P);
    else lua_pushnil(L);
    return 1;
}

int luaopen_streamrun_cwatchdog(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, sr__lua_start);
    lua_setfield(L, -2, "start");
    lua_pushcfunction(L, sr__lua_progress);
    lua_setfield(L, -2, "progress");
    return 1;
}
