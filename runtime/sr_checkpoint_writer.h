/* sr_checkpoint_writer: the directory of checkpoints a running job keeps.
 * A forked child writes the copy-on-write snapshot of the job's C memory
 * while batches go on, prunes to the newest `keep`, and reports on a pipe;
 * the job polls it between batches. Also listing and pruning the
 * directory, and the same write and prune in this process. */
#ifndef SR_CHECKPOINT_WRITER_H
#define SR_CHECKPOINT_WRITER_H
#include <sys/types.h>

#include "sr_checkpoint.h"

/* A writer running in a child process. */
typedef struct sr_ckpt_writer {
    pid_t pid; /* read-only: the child */
    int fd;    /* read-only: the read end of its report pipe, non-blocking */
} sr_ckpt_writer_t;

/* Writes dir/name from c in this process, then, when keep > 0, removes the
 * oldest checkpoints beyond keep. Returns 0, or -1 with
 * "<operation> <file>: <reason>" in err. */
int sr_checkpoint_save(const char *dir, const char *name, const sr_ckpt_content_t *c, int keep, char *err,
                       size_t errlen);

/* Forks a child that saves c as sr_checkpoint_save does: it holds no
 * descriptor of the job's (not its lock, not a listening socket) and dies
 * with the job. c is read in the child only (its copy of the memory), so
 * the caller may change or free it on return. Returns 0 with w set, or -1
 * with "pipe: <reason>" or "fork: <reason>" in err (nothing to wait for). */
int sr_checkpoint_writer_start(sr_ckpt_writer_t *w, const char *dir, const char *name, const sr_ckpt_content_t *c,
                               int keep, char *err, size_t errlen);
/* Whether the child is done, without blocking. Returns 1 while it writes;
 * else reaps it, closes w->fd and returns 0 when the checkpoint is in
 * place, or -1 with the child's reason in err ("<operation> <file>:
 * <reason>", or that it died before finishing). */
int sr_checkpoint_writer_poll(sr_ckpt_writer_t *w, char *err, size_t errlen);
/* As poll, but blocks until the child is done: returns 0 or -1. */
int sr_checkpoint_writer_wait(sr_ckpt_writer_t *w, char *err, size_t errlen);

/* Removes the oldest checkpoint files of dir beyond keep (names sort by
 * batch), and temp files a killed writer left. Call when no checkpoint is
 * being written. Returns how many checkpoints were removed, or -1. */
int sr_checkpoint_prune(const char *dir, int keep);
/* The checkpoint file names of dir, oldest first, at most max of them, in
 * *names (owned by the caller: sr_free each and the array). Returns their
 * number: 0 also when dir cannot be read, -1 when out of memory. */
int sr_checkpoint_list(const char *dir, char ***names, size_t max);

#endif
