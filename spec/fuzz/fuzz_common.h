/* fuzz_common: what the fuzz targets share: a private temp directory (made
 * once per process, removed at exit), writing an input there as a file, and
 * a LuaJIT state with the runtime's C modules, to run the Lua-facing
 * decoders (ckpt.load, cwal.read) the way the runtime does. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "sr_state_lua.h"
#include "sr_window_lua.h"

static char fz_dir[4096];

/* Stops the run with a message: libFuzzer reports it as a crash and keeps
 * the input as an artifact. */
#define FZ_CHECK(cond, ...)                                         \
    do {                                                            \
        if (!(cond)) {                                              \
            fprintf(stderr, "fuzz check failed: %s: ", #cond);      \
            fprintf(stderr, __VA_ARGS__);                           \
            fputc('\n', stderr);                                    \
            abort();                                                \
        }                                                           \
    } while (0)

static int fz__rm(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st; (void)type; (void)ftw;
    return remove(path);
}

static void fz__cleanup(void)
{
    if (fz_dir[0]) nftw(fz_dir, fz__rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes fz_dir, $TMPDIR/sr_fuzz_<what>.<pid> (or under /tmp). A run that
 * found something dies without atexit, so the directories of processes no
 * longer alive are removed first. */
static void fz_init_dir(const char *what)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char prefix[256];
    int plen = snprintf(prefix, sizeof(prefix), "sr_fuzz_%s.", what);
    DIR *d = opendir(base);
    for (struct dirent *de; d && (de = readdir(d));) {
        if (strncmp(de->d_name, prefix, (size_t)plen) != 0) continue;
        char *end;
        long pid = strtol(de->d_name + plen, &end, 10);
        if (*end || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        snprintf(fz_dir, sizeof(fz_dir), "%s/%s", base, de->d_name);
        nftw(fz_dir, fz__rm, 16, FTW_DEPTH | FTW_PHYS);
    }
    if (d) closedir(d);
    snprintf(fz_dir, sizeof(fz_dir), "%s/%s%ld", base, prefix, (long)getpid());
    if (mkdir(fz_dir, 0700) < 0 && errno != EEXIST) {
        perror(fz_dir);
        exit(1);
    }
    atexit(fz__cleanup);
}

/* Writes n bytes to path as a new file. Removing it first matters: a file
 * truncated and rewritten in place is flushed on close by ext4
 * (auto_da_alloc), which costs more than the decoding. */
static void fz_write(const char *path, const void *p, size_t n)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror(path);
            exit(1);
        }
        c += w;
        n -= (size_t)w;
    }
    close(fd);
}

/* A Lua state with the state and window handle types registered and the
 * function `name` of the module opened by open in the registry (its
 * reference in *ref). */
static lua_State *fz_lua(lua_CFunction open, const char *name, int *ref)
{
    lua_State *L = luaL_newstate();
    if (!L) exit(1);
    lua_pushcfunction(L, luaopen_streamrun_cstate);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, luaopen_streamrun_cwindow);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);
    lua_getfield(L, -1, name);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return L;
}

/* Drops the results of a call and collects them, so the C memory behind
 * handles is freed before the input ends (libFuzzer counts mallocs and
 * frees per input to look for leaks). */
static void fz_lua_reset(lua_State *L)
{
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
}

/* The CRC-32C trailer of a checkpoint: little-endian. */
static void fz_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t fz_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
