/* sr_lock: the checkpoint directory's lock file, DIR/lock, held with
 * flock(2) by one process. */
#include "sr_lock.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static int lock_fd = -1;
static char *lock_dir;  /* owned */
static pid_t lock_pid; /* a forked child shares the fd, not the lock's ownership */

/* The pid written in the lock file of another process, or 0. */
static long sr__holder(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) return 0;
    buf[n] = '\0';
    long pid = strtol(buf, NULL, 10);
    return pid > 0 ? pid : 0;
}

/* Opens DIR/lock, takes its flock without waiting and writes this pid in
 * it. Returns the descriptor (close-on-exec: a forked checkpoint writer
 * closes its copy, so the lock goes with this process alone), or
 * SR_EBUSY with *holder the pid written by the process holding it (0 if
 * unknown), or SR_EIO; err says which file and why. */
static int sr__lock_file(const char *dir, long *holder, char *err, size_t errlen)
{
    *holder = 0;
    char path[4200];
    snprintf(path, sizeof(path), "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return SR_EIO;
    }
    int rc;
    while ((rc = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EINTR) {}
    if (rc < 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            *holder = sr__holder(fd);
            snprintf(err, errlen, "%s is held by another process", path);
        } else {
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
        }
        close(fd);
        return e == EWOULDBLOCK ? SR_EBUSY : SR_EIO;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* The pid only names the holder in another process's message: the
         * lock is held all the same. */
    }
    return fd;
}

int sr_lock_acquire(const char *dir, long *holder, char *err, size_t errlen)
{
    *holder = 0;
    if (lock_fd >= 0 && lock_pid == getpid()) {
        if (strcmp(lock_dir, dir) == 0) return SR_OK;
        snprintf(err, errlen, "this process holds the lock of %s already", lock_dir);
        return SR_EINVAL;
    }
    if (lock_fd >= 0) {
        /* Inherited from the process that forked this one: its lock, not
         * ours (closing this copy leaves it held there). */
        close(lock_fd);
        sr_free(lock_dir);
        lock_fd = -1;
        lock_dir = NULL;
    }
    int fd = sr__lock_file(dir, holder, err, errlen);
    if (fd < 0) return fd;
    lock_dir = sr_strdup(dir);
    if (!lock_dir) {
        close(fd);
        snprintf(err, errlen, "lock %s/lock: %s", dir, sr_strerror(SR_ENOMEM));
        return SR_ENOMEM;
    }
    lock_fd = fd;
    lock_pid = getpid();
    return SR_OK;
}

void sr_lock_release(void)
{
    if (lock_fd < 0 || lock_pid != getpid()) return;
    close(lock_fd);
    lock_fd = -1;
    sr_free(lock_dir);
    lock_dir = NULL;
}

/* -- Task locks (Kafka jobs: one owner per task, many per process) -- */

int sr_lock_task_acquire(const char *dir, long *holder, char *err, size_t errlen)
{
    return sr__lock_file(dir, holder, err, errlen);
}

void sr_lock_task_release(int fd)
{
    if (fd >= 0) close(fd);
}
