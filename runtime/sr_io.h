/* sr_io: the file system calls of checkpoints and the write-ahead log, as a
 * table of function pointers that tests replace to make any one of them
 * fail (once or every time). */
#ifndef SR_IO_H
#define SR_IO_H
#include <stddef.h>
#include <sys/types.h>

typedef struct sr_io {
    int (*open)(const char *path, int flags, mode_t mode);
    ssize_t (*write)(int fd, const void *p, size_t n);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*rename)(const char *from, const char *to);
    int (*close)(int fd);
} sr_io_t;

/* The calls in use; the real ones unless a test swapped them. */
extern sr_io_t sr_io;
/* The real calls, for tests to restore. */
extern const sr_io_t sr_io_real;

/* Writes all n bytes, retrying short writes and EINTR. Returns 0 or -1
 * (errno set). */
int sr_io_write_all(int fd, const void *p, size_t n);
/* fsyncs the directory dir. Returns 0 or -1 (errno set). */
int sr_io_fsync_dir(const char *dir);

#endif
