/* sr_checkpoint_lua: Lua binding of sr_checkpoint. A forked child writes
 * the copy-on-write snapshot of every handle's memory and reports on a pipe:
 * "OK", or "ERR <operation> <file>: <reason>". */
#include "sr_checkpoint_lua.h"
#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_mpcheck.h"
#include "sr_msgpack_lua.h"
#include "sr_state_lua.h"
#include "sr_window_lua.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define SR_CKPT_MAX_PARTITIONS 65536 /* as the job DSL allows */

static sr_mpbuf_t meta_buf, reencode_buf;

typedef struct sr__refs {
    sr_ckpt_content_t c;
    sr_state_t *states[256];
    sr_window_t *windows[256];
    sr_state_t *results[256];
} sr__refs_t;

/* Reads the content arguments: meta (2), states array (3), windows array
 * of {slices = handle, result = handle|nil} (4). */
static void sr__content(lua_State *L, int base, sr__refs_t *refs)
{
    memset(&refs->c, 0, sizeof(refs->c));
    msgpack_packer pk;
    sr_mpbuf_packer(&meta_buf, &pk);
    const char *err = sr_mplua_pack(L, base, &pk, 0);
    if (err) luaL_error(L, "checkpoint metadata: cannot store %s", err);
    refs->c.meta = meta_buf.data;
    refs->c.meta_len = meta_buf.len;
    luaL_checktype(L, base + 1, LUA_TTABLE);
    luaL_checktype(L, base + 2, LUA_TTABLE);
    size_t ns = lua_objlen(L, base + 1), nw = lua_objlen(L, base + 2);
    if (ns > 256 || nw > 256) luaL_error(L, "checkpoint: more than 256 stateful stages or windows");
    for (size_t i = 0; i < ns; i++) {
        lua_rawgeti(L, base + 1, (int)i + 1);
        refs->states[i] = sr_state_lua_get(L, -1);
        if (!refs->states[i]) luaL_error(L, "checkpoint: states[%d] is not a state handle", (int)i + 1);
        lua_pop(L, 1);
    }
    for (size_t i = 0; i < nw; i++) {
        lua_rawgeti(L, base + 2, (int)i + 1);
        lua_getfield(L, -1, "slices");
        refs->windows[i] = sr_window_lua_get(L, -1);
        if (!refs->windows[i]) luaL_error(L, "checkpoint: windows[%d].slices is not a window handle", (int)i + 1);
        lua_getfield(L, -2, "result");
        refs->results[i] = lua_isnil(L, -1) ? NULL : sr_state_lua_get(L, -1);
        lua_pop(L, 3);
    }
    refs->c.states = refs->states;
    refs->c.nstates = ns;
    refs->c.windows = refs->windows;
    refs->c.results = refs->results;
    refs->c.nwindows = nw;
}

/* ckpt.write(dir, name, meta, states, windows [, keep]) -> true, or nil and
 * why. Written here, in this process (the test driver, inspect). */
static int sr__write(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
    int keep = (int)luaL_optinteger(L, 6, 0);
    sr__refs_t *refs = lua_newuserdata(L, sizeof(*refs));
    sr__content(L, 3, refs);
    char err[1024];
    if (sr_checkpoint_write(dir, name, &refs->c, err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (keep > 0) sr_checkpoint_prune(dir, keep);
    lua_pushboolean(L, 1);
    return 1;
}

/* ckpt.start(dir, name, meta, states, windows, keep) -> pid, fd: a forked
 * child writes the checkpoint; poll(pid, fd) says when it is done. */
static int sr__start(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
    int keep = (int)luaL_optinteger(L, 6, 0);
    sr__refs_t *refs = lua_newuserdata(L, sizeof(*refs));
    sr__content(L, 3, refs);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) { /* out of descriptors: a failed checkpoint, retried */
        lua_pushnil(L);
        lua_pushfstring(L, "pipe: %s", strerror(errno));
        return 2;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        lua_pushnil(L);
        lua_pushfstring(L, "fork: %s", strerror(e));
        return 2;
    }
    if (pid == 0) {
        /* The child: C memory only, no Lua, no libev; _exit skips atexit.
         * It keeps no descriptor of the job's (a listening socket held here
         * would keep a restarted job from binding its port). */
        char msg[1100], err[1024];
        /* A writer outliving its job (kill -9) could rename its checkpoint in
         * after a restart has resumed from an older one: it dies with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        close(fds[0]);
        if (fds[1] > 3) close_range(3, (unsigned)fds[1] - 1, 0);
        close_range((unsigned)fds[1] + 1, ~0U, 0);
        if (sr_checkpoint_write(dir, name, &refs->c, err, sizeof(err)) < 0) {
            snprintf(msg, sizeof(msg), "ERR %s", err);
        } else {
            if (keep > 0) sr_checkpoint_prune(dir, keep);
            snprintf(msg, sizeof(msg), "OK");
        }
        ssize_t w = write(fds[1], msg, strlen(msg));
        (void)w;
        _exit(0);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    lua_pushinteger(L, pid);
    lua_pushinteger(L, fds[0]);
    return 2;
}

/* Reads the child's report; wait says whether to block. Pushes nil while
 * running, else true or false and the message, and reaps the child. */
static int sr__finish(lua_State *L, int wait)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int fd = (int)luaL_checkinteger(L, 2);
    char msg[1200];
    size_t len = 0;
    for (;;) {
        if (wait) {
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, -1);
        }
        ssize_t n = read(fd, msg + len, sizeof(msg) - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (len == 0 && !wait) return 0; /* still writing */
            if (len == 0) continue;
        }
        break; /* EOF (the child is done) */
    }
    msg[len] = '\0';
    close(fd);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (len >= 2 && strncmp(msg, "OK", 2) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, len > 4 ? msg + 4 : "the checkpoint writer died before finishing");
    return 2;
}

static int sr__poll(lua_State *L) { return sr__finish(L, 0); }
static int sr__wait(lua_State *L) { return sr__finish(L, 1); }

/* -- Loading -- */

static const msgpack_object *sr__field(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int64_t sr__int(const msgpack_object *o, int64_t dflt)
{
    if (!o) return dflt;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return o->via.i64;
    return dflt;
}

static void sr__str(const msgpack_object *o, char *buf, size_t size)
{
    buf[0] = '\0';
    if (o && o->type == MSGPACK_OBJECT_STR) {
        size_t n = o->via.str.size < size - 1 ? o->via.str.size : size - 1;
        memcpy(buf, o->via.str.ptr, n);
        buf[n] = '\0';
    }
}

static int sr__is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static int sr__is_key(const msgpack_object *o)
{
    return sr__is_int(o) || o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BOOLEAN ||
           o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

/* Whether a window slice's bytes are what restore reads back: count
 * elements, each an array of one or two values nested no deeper than
 * stored values may be. */
static int sr__slice_ok(const char *p, size_t n, int64_t count)
{
    int64_t k = 0;
    for (size_t off = 0; off < n; k++) {
        long len = sr_mpcheck(p + off, n - off, SR_MP_MAX_DEPTH + 1);
        unsigned char c = (unsigned char)p[off];
        if (len < 0 || (c != 0x91 && c != 0x92)) return 0;
        off += (size_t)len;
    }
    return k == count;
}

/* Packs a decoded object again into buf (its original bytes: the encoding
 * of keys and values is canonical). */
static void sr__reencode(const msgpack_object *o, sr_mpbuf_t *buf)
{
    msgpack_packer pk;
    sr_mpbuf_packer(buf, &pk);
    msgpack_pack_object(&pk, *o);
}

/* Reads a state block whose header was just read; NULL with err set. */
static sr_state_t *sr__load_state(sr_ckpt_reader_t *r, const msgpack_object *head, size_t head_at,
                                  char *err, size_t errlen)
{
    char name[512];
    sr__str(sr__field(head, "state"), name, sizeof(name));
    int64_t count = sr__int(sr__field(head, "count"), -1);
    int64_t partitions = sr__int(sr__field(head, "partitions"), 16);
    if (!name[0] || count < 0 || partitions < 1 || partitions > SR_CKPT_MAX_PARTITIONS) {
        snprintf(err, errlen, "offset %zu: malformed state header", head_at);
        return NULL;
    }
    /* An entry takes 4 bytes at the least: a count the content cannot hold
     * is a fault, not a size to reserve. */
    if ((uint64_t)count > sr_checkpoint_left(r) / 4) {
        snprintf(err, errlen, "state %s at offset %zu: %lld keys declared, %zu bytes left", name, head_at,
                 (long long)count, sr_checkpoint_left(r));
        return NULL;
    }
    sr_state_t *st = sr_state_new(name, (int)partitions,
                                  sr__int(sr__field(head, "timeout_ms"), 0),
                                  sr__int(sr__field(head, "now_ms"), 0));
    if (!st || sr_state_reserve(st, (size_t)count) < 0) {
        sr_state_free(st);
        snprintf(err, errlen, "state %s: out of memory for %lld keys", name, (long long)count);
        return NULL;
    }
    for (int64_t i = 0; i < count; i++) {
        size_t at = r->off;
        msgpack_object e;
        if (sr_checkpoint_next(r, &e) != 1 || e.type != MSGPACK_OBJECT_ARRAY || e.via.array.size != 3) {
            snprintf(err, errlen, "state %s, entry %lld at offset %zu: malformed", name, (long long)i, at);
            sr_state_free(st);
            return NULL;
        }
        /* What the runtime would have written: a key a string, number or
         * boolean, an expiry an integer or nil. */
        if (!sr__is_key(&e.via.array.ptr[0]) ||
            (e.via.array.ptr[2].type != MSGPACK_OBJECT_NIL && !sr__is_int(&e.via.array.ptr[2]))) {
            snprintf(err, errlen, "state %s, entry %lld at offset %zu: malformed", name, (long long)i, at);
            sr_state_free(st);
            return NULL;
        }
        sr__reencode(&e.via.array.ptr[0], &reencode_buf);
        size_t klen = reencode_buf.len;
        if (klen > SR_STATE_MAX_KEY) {
            snprintf(err, errlen, "state %s, entry %lld at offset %zu: a key of %zu bytes", name, (long long)i, at,
                     klen);
            sr_state_free(st);
            return NULL;
        }
        char *key = sr_malloc(klen ? klen : 1);
        if (!key) { sr_state_free(st); snprintf(err, errlen, "out of memory"); return NULL; }
        memcpy(key, reencode_buf.data, klen);
        sr__reencode(&e.via.array.ptr[1], &reencode_buf);
        sr_state_entry_t *entry;
        int rc = sr_state_put(st, key, klen, reencode_buf.data, reencode_buf.len, &entry);
        sr_free(key);
        if (rc < 0) {
            snprintf(err, errlen, "state %s: out of memory at entry %lld", name, (long long)i);
            sr_state_free(st);
            return NULL;
        }
        const msgpack_object *exp = &e.via.array.ptr[2];
        if (exp->type != MSGPACK_OBJECT_NIL) sr_state_arm(st, entry, sr__int(exp, 0));
    }
    return st;
}

static int sr__load_error(lua_State *L, sr_ckpt_reader_t *r, const char *err)
{
    sr_checkpoint_close(r);
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* ckpt.load(path) -> meta, states {name = handle}, windows {name =
 * {slices = handle, result = handle|nil}}; or nil and why. */
static int sr__load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    sr_ckpt_reader_t r;
    char err[1024];
    if (sr_checkpoint_open(&r, path, err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    msgpack_object head;
    if (sr_checkpoint_next(&r, &head) != 1 || head.type != MSGPACK_OBJECT_MAP)
        return sr__load_error(L, &r, "offset 5: malformed header");
    const msgpack_object *meta = sr__field(&head, "meta");
    int64_t nstates = sr__int(sr__field(&head, "nstates"), -1);
    int64_t nwindows = sr__int(sr__field(&head, "nwindows"), -1);
    if (!meta || nstates < 0 || nwindows < 0) return sr__load_error(L, &r, "offset 5: malformed header");
    if (sr__int(sr__field(meta, "batch"), -1) < 0 || sr__int(sr__field(meta, "time_ms"), -1) < 0)
        return sr__load_error(L, &r, "offset 5: malformed metadata: not a map with a batch number and a time");
    sr_mplua_push_object(L, meta); /* 2 */
    lua_newtable(L);               /* 3: states */
    lua_newtable(L);               /* 4: windows */
    for (int64_t i = 0; i < nstates; i++) {
        msgpack_object sh;
        size_t at = r.off;
        if (sr_checkpoint_next(&r, &sh) != 1) {
            snprintf(err, sizeof(err), "offset %zu: malformed state header", at);
            return sr__load_error(L, &r, err);
        }
        sr_state_t *st = sr__load_state(&r, &sh, at, err, sizeof(err));
        if (!st) return sr__load_error(L, &r, err);
        sr_state_lua_push(L, st);
        lua_setfield(L, 3, st->name);
    }
    for (int64_t i = 0; i < nwindows; i++) {
        msgpack_object wh;
        size_t at = r.off;
        char name[512];
        if (sr_checkpoint_next(&r, &wh) != 1) {
            snprintf(err, sizeof(err), "offset %zu: malformed window header", at);
            return sr__load_error(L, &r, err);
        }
        sr__str(sr__field(&wh, "window"), name, sizeof(name));
        int64_t nslices = sr__int(sr__field(&wh, "nslices"), -1);
        const msgpack_object *has = sr__field(&wh, "result");
        if (!name[0] || nslices < 0 || !has || has->type != MSGPACK_OBJECT_BOOLEAN) {
            snprintf(err, sizeof(err), "offset %zu: malformed window header", at);
            return sr__load_error(L, &r, err);
        }
        int with_result = has->via.boolean;
        sr_window_t *w = sr_window_new(name);
        if (!w) return sr__load_error(L, &r, "out of memory");
        lua_newtable(L);
        sr_window_lua_push(L, w);
        lua_setfield(L, -2, "slices");
        lua_setfield(L, 4, name);
        for (int64_t k = 0; k < nslices; k++) {
            msgpack_object s;
            at = r.off;
            if (sr_checkpoint_next(&r, &s) != 1 || s.type != MSGPACK_OBJECT_ARRAY || s.via.array.size != 3 ||
                !sr__is_int(&s.via.array.ptr[0]) || s.via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                s.via.array.ptr[1].via.u64 > UINT32_MAX || s.via.array.ptr[2].type != MSGPACK_OBJECT_BIN ||
                !sr__slice_ok(s.via.array.ptr[2].via.bin.ptr, s.via.array.ptr[2].via.bin.size,
                              sr__int(&s.via.array.ptr[1], 0)) ||
                sr_window_push(w, sr__int(&s.via.array.ptr[0], 0), s.via.array.ptr[2].via.bin.ptr,
                               s.via.array.ptr[2].via.bin.size, (uint32_t)sr__int(&s.via.array.ptr[1], 0)) < 0) {
                snprintf(err, sizeof(err), "window %s, slice %lld at offset %zu: malformed", name, (long long)k, at);
                return sr__load_error(L, &r, err);
            }
        }
        if (with_result) {
            msgpack_object rh;
            at = r.off;
            if (sr_checkpoint_next(&r, &rh) != 1) {
                snprintf(err, sizeof(err), "window %s: offset %zu: malformed result header", name, at);
                return sr__load_error(L, &r, err);
            }
            sr_state_t *st = sr__load_state(&r, &rh, at, err, sizeof(err));
            if (!st) return sr__load_error(L, &r, err);
            lua_getfield(L, 4, name);
            sr_state_lua_push(L, st);
            lua_setfield(L, -2, "result");
            lua_pop(L, 1);
        }
    }
    if (r.off != r.end) {
        snprintf(err, sizeof(err), "offset %zu: %zu bytes after the last section", r.off, r.end - r.off);
        return sr__load_error(L, &r, err);
    }
    sr_checkpoint_close(&r);
    return 3;
}

/* ckpt.verify(path) -> true, or nil and why (checksum and structure). */
static int sr__verify(lua_State *L)
{
    int n = sr__load(L);
    if (n == 2) return 2;
    lua_pushboolean(L, 1);
    return 1;
}

static int sr__cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ckpt.list(dir) -> the checkpoint file names of dir, oldest first. */
static int sr__list(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    DIR *d = opendir(dir);
    if (!d) return 1;
    char *names[4096];
    int n = 0;
    size_t k = strlen(SR_CKPT_SUFFIX);
    for (struct dirent *de; (de = readdir(d)) && n < 4096;) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] != '.' && len > k && strcmp(de->d_name + len - k, SR_CKPT_SUFFIX) == 0)
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(*names), sr__cmp);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
        free(names[i]);
    }
    return 1;
}

static int sr__prune(lua_State *L)
{
    lua_pushinteger(L, sr_checkpoint_prune(luaL_checkstring(L, 1), (int)luaL_checkinteger(L, 2)));
    return 1;
}

int luaopen_streamrun_ckpt(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"write", sr__write}, {"start", sr__start}, {"poll", sr__poll}, {"wait", sr__wait},
        {"load", sr__load}, {"verify", sr__verify}, {"list", sr__list}, {"prune", sr__prune},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    lua_pushinteger(L, SR_CKPT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, SR_CKPT_SUFFIX);
    lua_setfield(L, -2, "suffix");
    return 1;
}
