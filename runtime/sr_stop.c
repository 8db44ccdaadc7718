/* sr_stop: the stop request of the process (see sr_stop.h). One flag,
 * written from signal handlers (the early ones here, the watchdog's
 * chained one) and read by the loop and the runner; SIGALRM bounds a start
 * that a stop signal came in. */
#include "sr_stop.h"
#include "sr_error.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t sr__stop_sig;
static volatile sig_atomic_t sr__early; /* the early handlers are installed */
static int sr__catching;                /* this process notes its stop signals */
static struct sigaction sr__prev_int, sr__prev_term; /* the loop's handlers */

void sr_stop_say(const char *msg)
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

void sr_stop_note(int sig)
{
    if (!sr__stop_sig) sr__stop_sig = sig;
}

int sr_stop_requested(void) { return sr__stop_sig; }

/* A second stop signal before the loop: the default action, now. */
static void sr__on_early_signal(int sig)
{
    if (sr__stop_sig) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    sr_stop_note(sig);
    alarm(SR_STOP_EARLY_S);
    sr_stop_say("streamrun: stopping once the job has started (a second signal ends it now)\n");
}

/* The start went on too long after a stop signal (stuck in a job script's
 * top-level code, say): nothing ran yet, nothing is lost. */
static void sr__on_alarm(int sig)
{
    (void)sig;
    sr_stop_say("streamrun: stopped while starting (a stop signal came before the job's first batch)\n");
    _exit(1);
}

/* A stop signal once the loop handles them: noted, then the loop's. */
static void sr__on_loop_signal(int sig)
{
    sr_stop_note(sig);
    const struct sigaction *prev = sig == SIGINT ? &sr__prev_int : &sr__prev_term;
    if (prev->sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
    } else if (prev->sa_handler != SIG_IGN) {
        if (prev->sa_flags & SA_SIGINFO) prev->sa_sigaction(sig, NULL, NULL);
        else prev->sa_handler(sig);
    }
}

int sr_stop_catch_early(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = sr__on_alarm;
    if (sigaction(SIGALRM, &sa, NULL) != 0) return SR_EIO;
    sa.sa_handler = sr__on_early_signal;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) return SR_EIO;
    sr__early = 1;
    sr__catching = 1;
    return SR_OK;
}

void sr_stop_loop_started(void)
{
    if (!sr__catching) return;
    if (sr__early) {
        sr__early = 0;
        alarm(0);
        signal(SIGALRM, SIG_DFL);
    }
    /* Noted before the loop's handlers: the start that follows (the plan,
     * the workers) sees the stop before the loop runs. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = sr__on_loop_signal;
    sigaction(SIGINT, &sa, &sr__prev_int);
    sigaction(SIGTERM, &sa, &sr__prev_term);
}
