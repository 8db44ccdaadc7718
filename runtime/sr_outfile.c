/* sr_outfile: appending outputs' writes, with how far a failing one got. */
#include "sr_outfile.h"
#include "sr_error.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int sr_outfile_open(const char *path, int64_t *size)
{
    struct stat st;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return SR_EIO;
    if (fstat(fd, &st) < 0) goto fail;
    *size = S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return SR_EIO;
}

int sr_outfile_write(int fd, const char *p, size_t n, size_t *written)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            *written = done;
            return SR_EIO;
        }
        done += (size_t)w;
    }
    *written = done;
    return SR_OK;
}

int sr_outfile_cut(int fd, int64_t size)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return SR_EIO;
    if (!S_ISREG(st.st_mode) || (int64_t)st.st_size <= size) return SR_OK;
    while (ftruncate(fd, (off_t)size) < 0) {
        if (errno != EINTR) return SR_EIO;
    }
    return SR_OK;
}

int sr_outfile_close(int fd)
{
    return close(fd) < 0 && errno != EINTR ? SR_EIO : SR_OK;
}
