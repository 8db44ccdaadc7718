/* sr_outfile: the system calls behind outputs that append (to_json_lines to
 * a file, standard output): whole writes that say how far they got, and the
 * cut back of a torn one, so a batch's output is either all there or not. */
#ifndef SR_OUTFILE_H
#define SR_OUTFILE_H
#include <stddef.h>
#include <stdint.h>

/* Opens path for appending (created 0644). Returns the descriptor, or
 * SR_EIO (errno set); *size gets the file's length (-1 when it is not a
 * regular file: a device, a pipe). The caller closes it with sr_outfile_close. */
int sr_outfile_open(const char *path, int64_t *size);
/* Writes p[0..n) to fd, retrying short writes and EINTR. Returns 0, or
 * SR_EIO (errno set); *written gets the bytes that went either way. */
int sr_outfile_write(int fd, const char *p, size_t n, size_t *written);
/* Cuts the regular file open as fd back to size bytes when it is longer
 * (other files are left alone). Returns 0 or SR_EIO (errno set). */
int sr_outfile_cut(int fd, int64_t size);
/* Closes fd. Returns 0 or SR_EIO (errno set). */
int sr_outfile_close(int fd);

#endif
