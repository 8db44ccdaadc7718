/* sr_stop: the process's stop request (SIGINT/SIGTERM), noted from the
 * moment `streamrun run` starts. Before the event loop exists a stop
 * signal is noted instead of ending the process: the loop made later
 * starts stopping, so the job ends as after any SIGTERM (one last batch,
 * a last checkpoint, exit 0); the job skips starting work it would not
 * use (its other workers). A second signal, or a start that takes longer
 * than SR_STOP_EARLY_S after the first, ends the process at once. */
#ifndef SR_STOP_H
#define SR_STOP_H

#define SR_STOP_EARLY_S 5

/* Notes stop signals until the loop takes them (sr_stop_loop_started).
 * Returns 0, or SR_EIO when a handler cannot be installed. */
int sr_stop_catch_early(void);
/* The event loop now handles SIGINT/SIGTERM (its handlers replaced the
 * early ones): the deadline of the start is off, and (in a process that
 * called sr_stop_catch_early) the loop's stop signals are noted first. */
void sr_stop_loop_started(void);
/* Notes a stop signal (async-signal-safe). */
void sr_stop_note(int sig);
/* The first stop signal noted, or 0. */
int sr_stop_requested(void);
/* Writes msg to stderr whole, retrying EINTR (async-signal-safe: what a
 * signal handler or the watchdog's thread says). */
void sr_stop_say(const char *msg);

#endif
