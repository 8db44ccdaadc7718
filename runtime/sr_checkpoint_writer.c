/* sr_checkpoint_writer: the forked writer (fork, report pipe, reaping) and
 * the directory's listing and pruning. */
#include "sr_checkpoint_writer.h"
#include "sr_alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* -- The directory -- */

static int sr__is_checkpoint(const char *name)
{
    size_t n = strlen(name), k = strlen(SR_CKPT_SUFFIX);
    return n > k && strcmp(name + n - k, SR_CKPT_SUFFIX) == 0 && name[0] != '.';
}

static int sr__is_temp(const char *name)
{
    size_t n = strlen(name), k = strlen(SR_CKPT_SUFFIX ".tmp");
    return n > k && strcmp(name + n - k, SR_CKPT_SUFFIX ".tmp") == 0;
}

static int sr__cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The checkpoint names of dir, sorted, at most max; with prune_temp, the
 * temp files found are removed on the way. Returns their number, or -1. */
static int sr__scan(const char *dir, char ***out, size_t max, int prune_temp)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return prune_temp ? -1 : 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *de; n < max && (de = readdir(d));) {
        if (prune_temp && sr__is_temp(de->d_name)) {
            /* Left by a writer that was killed: one writer runs at a time,
             * and prune runs after its own rename. */
            char tmp[4200];
            snprintf(tmp, sizeof(tmp), "%s/%s", dir, de->d_name);
            unlink(tmp);
            continue;
        }
        if (!sr__is_checkpoint(de->d_name)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = sr_realloc(names, cap * sizeof(*nn));
            if (!nn) goto fail;
            names = nn;
        }
        if (!(names[n] = sr_strdup(de->d_name))) goto fail;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof(*names), sr__cmp_names);
    *out = names;
    return (int)n;
fail:
    closedir(d);
    for (size_t i = 0; i < n; i++) sr_free(names[i]);
    sr_free(names);
    return -1;
}

int sr_checkpoint_list(const char *dir, char ***names, size_t max)
{
    return sr__scan(dir, names, max, 0);
}

int sr_checkpoint_prune(const char *dir, int keep)
{
    char **names;
    int n = sr__scan(dir, &names, (size_t)-1, 1);
    if (n < 0) return -1;
    int removed = 0;
    for (int i = 0; i < n; i++) {
        if (keep > 0 && i + keep < n) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            if (unlink(path) == 0) removed++;
        }
        sr_free(names[i]);
    }
    sr_free(names);
    return removed;
}

int sr_checkpoint_save(const char *dir, const char *name, const sr_ckpt_content_t *c, int keep, char *err,
                       size_t errlen)
{
    if (sr_checkpoint_write(dir, name, c, err, errlen) < 0) return -1;
    if (keep > 0) sr_checkpoint_prune(dir, keep);
    return 0;
}

/* -- The forked writer -- */

int sr_checkpoint_writer_start(sr_ckpt_writer_t *w, const char *dir, const char *name, const sr_ckpt_content_t *c,
                               int keep, char *err, size_t errlen)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) { /* out of descriptors: a failed checkpoint, retried */
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        snprintf(err, errlen, "fork: %s", strerror(e));
        return -1;
    }
    if (pid == 0) {
        /* The child: C memory only, no Lua, no libev; _exit skips atexit.
         * It keeps no descriptor of the job's (a listening socket held here
         * would keep a restarted job from binding its port, the lock held
         * here would keep it from starting). */
        char msg[1100], why[1024];
        /* A writer outliving its job (kill -9) could rename its checkpoint in
         * after a restart has resumed from an older one: it dies with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        close(fds[0]);
        if (fds[1] > 3) close_range(3, (unsigned)fds[1] - 1, 0);
        close_range((unsigned)fds[1] + 1, ~0U, 0);
        if (sr_checkpoint_save(dir, name, c, keep, why, sizeof(why)) < 0) snprintf(msg, sizeof(msg), "ERR %s", why);
        else snprintf(msg, sizeof(msg), "OK");
        ssize_t n = write(fds[1], msg, strlen(msg));
        (void)n;
        _exit(0);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    w->pid = pid;
    w->fd = fds[0];
    return 0;
}

/* Reads the child's report ("OK" or "ERR <reason>"); wait says whether to
 * block. Returns 1 while it runs, else reaps it: 0 or -1 with err set. */
static int sr__finish(sr_ckpt_writer_t *w, int wait, char *err, size_t errlen)
{
    char msg[1200];
    size_t len = 0;
    for (;;) {
        if (wait) {
            struct pollfd p = {w->fd, POLLIN, 0};
            poll(&p, 1, -1);
        }
        ssize_t n = read(w->fd, msg + len, sizeof(msg) - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (len == 0 && !wait) return 1; /* still writing */
            if (len == 0) continue;
        }
        break; /* EOF (the child is done) */
    }
    msg[len] = '\0';
    close(w->fd);
    w->fd = -1;
    int status;
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR) {}
    if (len >= 2 && strncmp(msg, "OK", 2) == 0) return 0;
    snprintf(err, errlen, "%s", len > 4 ? msg + 4 : "the checkpoint writer died before finishing");
    return -1;
}

int sr_checkpoint_writer_poll(sr_ckpt_writer_t *w, char *err, size_t errlen) { return sr__finish(w, 0, err, errlen); }
int sr_checkpoint_writer_wait(sr_ckpt_writer_t *w, char *err, size_t errlen) { return sr__finish(w, 1, err, errlen); }
