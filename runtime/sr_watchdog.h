/* sr_watchdog: a thread that stops user code that runs too long and makes
 * SIGINT/SIGTERM end the job even while a user function never returns.
 * The batch loop marks its progress in sr_progress_t with plain stores
 * (one integer per record); the thread looks at it a few times a second.
 * Each worker's VM (SPEC section 15) has a progress record of its own and
 * is interrupted on the thread that runs it.
 * A record that runs longer than the timeout is interrupted with a Lua
 * debug hook (tier 1); when the hook does not run (a compiled loop, a
 * blocking C call), the record is written to DIR/poison and the process
 * restarts itself from its checkpoint, which then skips it (tier 2). */
#ifndef SR_WATCHDOG_H
#define SR_WATCHDOG_H
#include <lua.h>
#include <stdint.h>

/* Written by Lua (through the FFI), read by the thread. */
typedef struct sr_progress {
    volatile int64_t batch_ms; /* time of the batch being run; 0 between batches */
    volatile int32_t step;     /* the step running user code (1-based); 0: none */
    volatile int32_t rec;      /* record index within the step; 0: the whole step */
    volatile uint32_t gen;     /* +1 at every step entry */
    volatile int32_t skipped;  /* records of the step a restart skipped */
    volatile int32_t rec_base; /* a worker's: records of the step's input before its share */
    volatile int32_t waiting;  /* worker 0 waits for the other workers (not watched) */
    char stage[64];            /* the step's stage name(s) */
} sr_progress_t;

typedef struct sr_watchdog_opts {
    int64_t timeout_ms; /* a record running longer is interrupted; 0: never */
    int64_t grace_ms;   /* how long the hook may take before the restart */
    int64_t stop_ms;    /* after SIGINT/SIGTERM, a batch still running ends the process */
    int64_t poll_ms;    /* how often the thread looks */
    const char *dir;    /* checkpoint directory (copied), or NULL: no restart */
    const char *no_restart; /* why a stuck record never restarts (copied; the test
                             * driver's), or NULL */
} sr_watchdog_opts_t;

/* The one progress record of the process (static storage). */
sr_progress_t *sr_watchdog_progress(void);

/* Starts the thread (or changes its options when it runs) for the VM L,
 * from the thread that runs L. Chains its SIGINT/SIGTERM handler before
 * the ones installed now (libev's). Returns 0, or SR_EIO when the thread
 * cannot start. */
int sr_watchdog_start(lua_State *L, const sr_watchdog_opts_t *o);
/* Stops and joins the thread; restores the signal handlers it chained. */
void sr_watchdog_stop(void);
/* L is being closed: the hook is never set on it again, and a worker's
 * progress record (sr_watchdog_attach) is gone. Waits for a hook signal
 * handler still at L to return. */
void sr_watchdog_forget(lua_State *L);
/* A worker's VM L is watched from now on, with the progress record this
 * returns (owned by the watchdog until sr_watchdog_forget(L)); NULL when
 * every slot is taken (SR_WATCHDOG_MAX_VMS). The thread that runs L says
 * so with sr_watchdog_enter_thread. */
#define SR_WATCHDOG_MAX_VMS 1024
sr_progress_t *sr_watchdog_attach(lua_State *L);
/* The calling thread runs L (attached) from now on: stage_timeout's
 * interrupt of L is signalled to it (its mask lets the signal through). */
void sr_watchdog_enter_thread(lua_State *L);
/* The program and argument vector a restart executes (borrowed: they must
 * outlive the process; argv NULL-terminated). Default: none (no restart). */
void sr_watchdog_set_exec(const char *path, char **argv);

/* The Lua module streamrun.cwatchdog: start(timeout_ms, dir|nil),
 * progress() (the record attached to the calling VM, a light userdata,
 * or nil). */
int luaopen_streamrun_cwatchdog(lua_State *L);

#endif
