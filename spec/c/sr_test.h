/* sr_test: what every C unit test includes: cmocka (its headers in the order
 * it requires) and small helpers for temp directories and files. */
#ifndef SR_TEST_H
#define SR_TEST_H
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path to
 * buf. Fails the test when it cannot. */
static inline void sr_test_tmpdir(char *buf, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/sr_test.XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(buf));
}

static inline int sr__test_rm(const char *path, const struct stat *st, int type,
                              struct FTW *ftw)
{
    (void)st; (void)type; (void)ftw;
    return remove(path);
}

/* Removes a directory tree made by sr_test_tmpdir. */
static inline void sr_test_rmtree(const char *path)
{
    nftw(path, sr__test_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes (mode "w") or appends (mode "a") data to path; fails the test on
 * error. */
static inline void sr_test_write(const char *path, const char *mode, const char *data)
{
    FILE *fp = fopen(path, mode);
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, strlen(data), fp), strlen(data));
    assert_int_equal(fclose(fp), 0);
}

/* Reads a whole (small) file into buf, NUL-terminated; returns its length,
 * or -1 when it cannot be opened. */
static inline long sr_test_read(const char *path, char *buf, size_t len)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    size_t n = fread(buf, 1, len - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return (long)n;
}

/* A whole file's bytes (malloc'd, the caller frees data). */
typedef struct sr_test_blob {
    char *data;
    size_t len;
} sr_test_blob_t;

/* The whole file, or data = NULL when it does not exist. */
static inline sr_test_blob_t sr_test_slurp(const char *path)
{
    sr_test_blob_t b = {NULL, 0};
    FILE *fp = fopen(path, "rb");
    if (!fp) return b;
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    b.data = malloc((size_t)n + 1);
    assert_non_null(b.data);
    assert_int_equal(fread(b.data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    b.len = (size_t)n;
    return b;
}

/* Writes len bytes of data as the whole of path. */
static inline void sr_test_spit(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Joins dir and name into buf. */
static inline const char *sr_test_path(char *buf, size_t len, const char *dir,
                                       const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

#endif
