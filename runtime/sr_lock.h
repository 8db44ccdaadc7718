/* sr_lock: one process per checkpoint directory. The process that runs a
 * job takes DIR/lock (flock, exclusive) for its whole life and writes its
 * pid in it; the kernel releases the lock when the process ends, however it
 * ends. The lock lives in C, outside any Lua VM, so a hot reload keeps it. */
#ifndef SR_LOCK_H
#define SR_LOCK_H
#include <stddef.h>

/* Takes the lock of checkpoint directory dir (which must exist) for this
 * process. Returns 0, also when this process holds it already; SR_EBUSY
 * when another process holds it, with its pid in *holder (0 if it has not
 * written it yet); SR_EINVAL when this process holds another directory's;
 * SR_EIO with the reason in err when the lock file cannot be opened. */
int sr_lock_acquire(const char *dir, long *holder, char *err, size_t errlen);
/* Releases the lock this process holds, if any (the file stays). */
void sr_lock_release(void);

/* The lock of one task's directory (Kafka jobs: processes of one group
 * share the checkpoint directory, each task has one owner). Returns the
 * lock's descriptor (>= 0; release it with sr_lock_task_release), SR_EBUSY
 * with the holder's pid in *holder, or SR_EIO with the reason in err. */
int sr_lock_task_acquire(const char *dir, long *holder, char *err, size_t errlen);
void sr_lock_task_release(int fd);

#endif
