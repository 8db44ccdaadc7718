/* sr_io: the real system calls behind the replaceable table. */
#include "sr_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static int sr__open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

const sr_io_t sr_io_real = {
    .open = sr__open, .write = write, .fsync = fsync, .fdatasync = fdatasync,
    .rename = rename, .close = close,
};

sr_io_t sr_io = {
    .open = sr__open, .write = write, .fsync = fsync, .fdatasync = fdatasync,
    .rename = rename, .close = close,
};

int sr_io_write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = sr_io.write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int sr_io_fsync_dir(const char *dir)
{
    int fd = sr_io.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc = sr_io.fsync(fd);
    int saved = errno;
    sr_io.close(fd);
    errno = saved;
    return rc;
}
