/* test_checkpoint: the checkpoint file read back object by object and
 * section by section (sr_checkpoint_load, no Lua), CRC-32C against known
 * vectors, pruning and listing, the forked writer, corruption, and every
 * system call of the writer failing through sr_io (once and persistently),
 * plus a real ENOSPC on a small tmpfs when one can be mounted. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_checkpoint_writer.h"
#include "sr_crc32c.h"
#include "sr_io.h"

#include <dirent.h>
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <sys/mount.h>

/* -- Content to write -- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* A state of n keys "<prefix><i>" with values [i, "<filler>"]; with a
 * timeout, every other key is armed (at a different deadline each). */
static sr_state_t *make_state(const char *name, int parts, int64_t timeout_ms, int64_t now_ms, int n,
                              const char *prefix, size_t filler)
{
    sr_state_t *st = sr_state_new(name, parts, timeout_ms, now_ms);
    assert_non_null(st);
    char fill[512];
    assert_true(filler < sizeof(fill));
    memset(fill, 'f', filler);
    fill[filler] = '\0';
    for (int i = 0; i < n; i++) {
        msgpack_sbuffer kb, vb;
        msgpack_sbuffer_init(&kb);
        msgpack_sbuffer_init(&vb);
        msgpack_packer pk;
        char key[64];
        snprintf(key, sizeof(key), "%s%d", prefix, i);
        msgpack_packer_init(&pk, &kb, msgpack_sbuffer_write);
        pack_str(&pk, key);
        msgpack_packer_init(&pk, &vb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int(&pk, i);
        pack_str(&pk, fill);
        sr_state_entry_t *e;
        assert_int_equal(sr_state_put(st, kb.data, kb.size, vb.data, vb.size, &e), 0);
        if (timeout_ms && i % 2 == 0) sr_state_touch(st, e, now_ms + i);
        msgpack_sbuffer_destroy(&kb);
        msgpack_sbuffer_destroy(&vb);
    }
    return st;
}

typedef struct content {
    sr_state_t *states[2];
    sr_window_t *windows[3];
    sr_state_t *results[3];
    msgpack_sbuffer meta;
    sr_ckpt_content_t c;
} content_t;

/* Two states (one with armed timeouts, one without a timeout), and three
 * windows: with a result state, without, and empty. keys and filler set
 * its size; tag tells two contents apart. */
static content_t *make_content(int keys, size_t filler, int tag)
{
    content_t *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    msgpack_sbuffer_init(&x->meta);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &x->meta, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "job");
    pack_str(&pk, "test");
    pack_str(&pk, "batch");
    msgpack_pack_int(&pk, tag);
    x->states[0] = make_state("sessions", 4, 30000, 1000, keys, tag == 1 ? "s" : "S", filler);
    x->states[1] = make_state("totals", 1, 0, 0, keys / 2 + 1, tag == 1 ? "t" : "T", filler / 2);
    x->windows[0] = sr_window_new("counts");
    x->windows[1] = sr_window_new("raw");
    x->windows[2] = sr_window_new("empty");
    for (int i = 0; i < 3; i++) assert_non_null(x->windows[i]);
    for (int i = 1; i <= 3; i++) {
        char data[64];
        memset(data, 'a' + i + tag, sizeof(data));
        assert_int_equal(sr_window_push(x->windows[0], i * 1000, data, (size_t)(10 * i), (uint32_t)i), 0);
    }
    assert_int_equal(sr_window_push(x->windows[1], 5000, "\x01\x02\x03", 3, 3), 0);
    /* A slice with no bytes (a batch that brought nothing). */
    assert_int_equal(sr_window_push(x->windows[1], 6000, NULL, 0, 0), 0);
    x->results[0] = make_state("counts.result", 2, 0, 0, 5, "r", 4);
    x->c.meta = x->meta.data;
    x->c.meta_len = x->meta.size;
    x->c.states = x->states;
    x->c.nstates = 2;
    x->c.windows = x->windows;
    x->c.results = x->results;
    x->c.nwindows = 3;
    return x;
}

static void free_content(content_t *x)
{
    for (int i = 0; i < 2; i++) sr_state_free(x->states[i]);
    for (int i = 0; i < 3; i++) {
        sr_window_free(x->windows[i]);
        sr_state_free(x->results[i]);
    }
    msgpack_sbuffer_destroy(&x->meta);
    free(x);
}

/* -- Reading back -- */

static const msgpack_object *field(const msgpack_object *map, const char *key)
{
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    fail_msg("no field %s", key);
    return NULL;
}

static void assert_str(const msgpack_object *o, const char *want)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, strlen(want));
    assert_memory_equal(o->via.str.ptr, want, strlen(want));
}

static void assert_uint(const msgpack_object *o, uint64_t want)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(o->via.u64, want);
}

/* Packs a decoded object again (its original bytes: the fixtures use the
 * shortest encodings, as msgpack-c writes them). */
static void repack(const msgpack_object *o, msgpack_sbuffer *sb)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
}

/* Reads one state block (header and entries) and checks it against st:
 * every key once, its value, and its deadline when armed. */
static void check_state_block(sr_ckpt_reader_t *r, sr_state_t *st)
{
    msgpack_object h;
    assert_int_equal(sr_checkpoint_next(r, &h), 1);
    assert_int_equal(h.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(h.via.map.size, 5);
    assert_str(field(&h, "state"), st->name);
    assert_uint(field(&h, "count"), st->count);
    assert_uint(field(&h, "timeout_ms"), (uint64_t)st->timeout_ms);
    assert_uint(field(&h, "now_ms"), (uint64_t)st->wheel.now);
    assert_uint(field(&h, "partitions"), (uint64_t)st->nparts);
    sr_state_t *seen = sr_state_new("seen", 1, 0, 0);
    msgpack_sbuffer kb, vb;
    msgpack_sbuffer_init(&kb);
    msgpack_sbuffer_init(&vb);
    size_t armed = 0;
    for (size_t i = 0; i < st->count; i++) {
        msgpack_object e;
        assert_int_equal(sr_checkpoint_next(r, &e), 1);
        assert_int_equal(e.type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(e.via.array.size, 3);
        repack(&e.via.array.ptr[0], &kb);
        repack(&e.via.array.ptr[1], &vb);
        sr_state_entry_t *want = sr_state_get(st, kb.data, kb.size);
        assert_non_null(want);
        assert_null(sr_state_get(seen, kb.data, kb.size));
        assert_int_equal(sr_state_put(seen, kb.data, kb.size, "", 0, NULL), 0);
        assert_int_equal(vb.size, sr_state_entry_vlen(want));
        assert_memory_equal(vb.data, sr_state_entry_value(want), vb.size);
        const msgpack_object *exp = &e.via.array.ptr[2];
        if (sr_wheel_armed(&want->timer)) {
            assert_uint(exp, (uint64_t)want->timer.expiry);
            armed++;
        } else {
            assert_int_equal(exp->type, MSGPACK_OBJECT_NIL);
        }
    }
    assert_int_equal(armed, st->wheel.count);
    msgpack_sbuffer_destroy(&kb);
    msgpack_sbuffer_destroy(&vb);
    sr_state_free(seen);
}

/* Opens path and checks every object against x, in order, to the end. */
static void check_file(const char *path, const content_t *x)
{
    sr_ckpt_reader_t r;
    char err[512] = "";
    if (sr_checkpoint_open(&r, path, err, sizeof(err)) < 0) fail_msg("open %s: %s", path, err);
    msgpack_object h;
    assert_int_equal(sr_checkpoint_next(&r, &h), 1);
    assert_int_equal(h.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(h.via.map.size, 3);
    const msgpack_object *meta = field(&h, "meta");
    assert_int_equal(meta->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(meta->via.map.size, 2);
    assert_str(field(meta, "job"), "test");
    msgpack_sbuffer mb;
    msgpack_sbuffer_init(&mb);
    repack(meta, &mb);
    assert_int_equal(mb.size, x->meta.size);
    assert_memory_equal(mb.data, x->meta.data, mb.size);
    msgpack_sbuffer_destroy(&mb);
    assert_uint(field(&h, "nstates"), x->c.nstates);
    assert_uint(field(&h, "nwindows"), x->c.nwindows);
    for (size_t i = 0; i < x->c.nstates; i++) check_state_block(&r, x->c.states[i]);
    for (size_t i = 0; i < x->c.nwindows; i++) {
        const sr_window_t *w = x->c.windows[i];
        sr_state_t *res = x->c.results ? x->c.results[i] : NULL;
        assert_int_equal(sr_checkpoint_next(&r, &h), 1);
        assert_int_equal(h.type, MSGPACK_OBJECT_MAP);
        assert_int_equal(h.via.map.size, 3);
        assert_str(field(&h, "window"), w->name);
        assert_uint(field(&h, "nslices"), w->n);
        const msgpack_object *has = field(&h, "result");
        assert_int_equal(has->type, MSGPACK_OBJECT_BOOLEAN);
        assert_int_equal(has->via.boolean, res != NULL);
        for (size_t k = 0; k < w->n; k++) {
            const sr_slice_t *s = sr_window_slice(w, k);
            msgpack_object o;
            assert_int_equal(sr_checkpoint_next(&r, &o), 1);
            assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
            assert_int_equal(o.via.array.size, 3);
            assert_uint(&o.via.array.ptr[0], (uint64_t)s->time_ms);
            assert_uint(&o.via.array.ptr[1], s->count);
            assert_int_equal(o.via.array.ptr[2].type, MSGPACK_OBJECT_BIN);
            assert_int_equal(o.via.array.ptr[2].via.bin.size, s->len);
            if (s->len) assert_memory_equal(o.via.array.ptr[2].via.bin.ptr, s->data, s->len);
        }
        if (res) check_state_block(&r, res);
    }
    assert_int_equal(sr_checkpoint_next(&r, &h), 0);
    assert_int_equal(r.off, r.end);
    sr_checkpoint_close(&r);
}

/* -- Files -- */


static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The names in dir other than . and .., sorted and joined by spaces. */
static void listing(const char *dir, char *buf, size_t len)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
            if (buf[0]) strncat(buf, " ", len - strlen(buf) - 1);
            strncat(buf, names[i]->d_name, len - strlen(buf) - 1);
        }
        free(names[i]);
    }
    free(names);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* -- Fault injection through sr_io -- */

enum { OP_OPEN, OP_WRITE, OP_FSYNC, OP_CLOSE, OP_RENAME, NOPS };
static const char *const op_names[NOPS] = {"open", "write", "fsync", "close", "rename"};
#define MAX_CALLS 256

static struct {
    int op;         /* the kind of call that fails, or -1 */
    int nth;        /* its nth call (from 1) fails */
    int persistent; /* and every one after it */
    int err;        /* with this errno */
    int calls[NOPS];
    char on_dir[NOPS][MAX_CALLS]; /* per call: made on a directory */
    int failed;     /* calls made to fail */
    size_t short_max; /* writes write at most this many bytes (0: all) */
    int zero_write;   /* writes return 0 from this call on (0: never) */
} F;

static void fault_reset(void)
{
    memset(&F, 0, sizeof(F));
    F.op = -1;
}

static int fd_is_dir(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Counts a call; returns 1 when it is to fail (errno set). */
static int fault(int op, int on_dir)
{
    int k = ++F.calls[op];
    if (k <= MAX_CALLS) F.on_dir[op][k - 1] = (char)on_dir;
    if (op != F.op || k < F.nth || (k > F.nth && !F.persistent)) return 0;
    F.failed++;
    errno = F.err;
    return 1;
}

static int fake_open(const char *path, int flags, mode_t mode)
{
    if (fault(OP_OPEN, (flags & O_DIRECTORY) != 0)) return -1;
    return sr_io_real.open(path, flags, mode);
}

static ssize_t fake_write(int fd, const void *p, size_t n)
{
    if (fault(OP_WRITE, 0)) return -1;
    if (F.zero_write && F.calls[OP_WRITE] >= F.zero_write) return 0;
    if (F.short_max && n > F.short_max) n = F.short_max;
    return sr_io_real.write(fd, p, n);
}

static int fake_fsync(int fd)
{
    if (fault(OP_FSYNC, fd_is_dir(fd))) return -1;
    return sr_io_real.fsync(fd);
}

/* Like Linux, a failing close still releases the descriptor. */
static int fake_close(int fd)
{
    int dir = fd_is_dir(fd);
    int rc = sr_io_real.close(fd);
    if (fault(OP_CLOSE, dir)) return -1;
    return rc;
}

static int fake_rename(const char *from, const char *to)
{
    if (fault(OP_RENAME, 0)) return -1;
    return sr_io_real.rename(from, to);
}

static void fake_io(void)
{
    sr_io.open = fake_open;
    sr_io.write = fake_write;
    sr_io.fsync = fake_fsync;
    sr_io.close = fake_close;
    sr_io.rename = fake_rename;
}

/* Every test starts and ends with the real calls and no tmpfs. */
typedef struct fixture {
    char dir[256];
    char mnt[300];
    int mounted;
} fixture_t;

static fixture_t fx;

static int setup(void **state)
{
    (void)state;
    sr_io = sr_io_real;
    fault_reset();
    memset(&fx, 0, sizeof(fx));
    sr_test_tmpdir(fx.dir, sizeof(fx.dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sr_io = sr_io_real;
    sr_alloc_fail_after(-1);
    if (fx.mounted) {
        if (umount2(fx.mnt, 0) < 0) umount2(fx.mnt, MNT_DETACH);
        fx.mounted = 0;
    }
    sr_test_rmtree(fx.dir);
    return 0;
}

/* -- Tests -- */

static void test_crc32c_vectors(void **state)
{
    (void)state;
    /* The check value of CRC-32C, and the iSCSI vectors of RFC 3720 B.4. */
    assert_int_equal(sr_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(sr_crc32c(0, "", 0), 0);
    assert_int_equal(sr_crc32c(0, "a", 1), 0xC1D04330u);
    unsigned char b[32];
    memset(b, 0, sizeof(b));
    assert_int_equal(sr_crc32c(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof(b));
    assert_int_equal(sr_crc32c(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) b[i] = (unsigned char)i;
    assert_int_equal(sr_crc32c(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) b[i] = (unsigned char)(31 - i);
    assert_int_equal(sr_crc32c(0, b, 32), 0x113FDB5Cu);
}

/* Bit at a time, straight from the definition. */
static uint32_t crc_reference(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

static void test_crc32c_slicing_and_continuation(void **state)
{
    (void)state;
    unsigned char buf[300];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    /* Every start alignment and every length around the 8-byte steps. */
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof(buf); n++) {
            uint32_t want = crc_reference(buf + off, n);
            assert_int_equal(sr_crc32c(0, buf + off, n), want);
            /* Continued over any split, the same. */
            size_t cut = n / 3;
            assert_int_equal(sr_crc32c(sr_crc32c(0, buf + off, cut), buf + off + cut, n - cut), want);
        }
    assert_int_equal(sr_crc32c(sr_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void test_round_trip_every_object(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    content_t *x = make_content(40, 8, 1);
    /* The fixture is what it claims: armed keys and unarmed ones. */
    assert_int_equal(x->states[0]->wheel.count, 20);
    assert_int_equal(x->states[1]->wheel.count, 0);
    char err[512] = "", path[512];
    assert_int_equal(sr_checkpoint_write(fx.dir, "checkpoint-000000000007.srck", &x->c, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    check_file(sr_test_path(path, sizeof(path), fx.dir, "checkpoint-000000000007.srck"), x);
    char names[1024];
    listing(fx.dir, names, sizeof(names));
    assert_string_equal(names, "checkpoint-000000000007.srck");
    /* No metadata, no states, no result array: a header with an empty map. */
    sr_ckpt_content_t empty;
    memset(&empty, 0, sizeof(empty));
    assert_int_equal(sr_checkpoint_write(fx.dir, "empty.srck", &empty, err, sizeof(err)), 0);
    sr_ckpt_reader_t r;
    assert_int_equal(sr_checkpoint_open(&r, sr_test_path(path, sizeof(path), fx.dir, "empty.srck"), err, sizeof(err)), 0);
    msgpack_object h;
    assert_int_equal(sr_checkpoint_next(&r, &h), 1);
    assert_int_equal(field(&h, "meta")->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(field(&h, "meta")->via.map.size, 0);
    assert_uint(field(&h, "nstates"), 0);
    assert_uint(field(&h, "nwindows"), 0);
    assert_int_equal(sr_checkpoint_next(&r, &h), 0);
    sr_checkpoint_close(&r);
    free_content(x);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_big_checkpoint_round_trip(void **state)
{
    (void)state;
    /* Several times the writer's 64 KiB buffer. */
    content_t *x = make_content(5000, 100, 1);
    char err[512] = "", path[512];
    assert_int_equal(sr_checkpoint_write(fx.dir, "big.srck", &x->c, err, sizeof(err)), 0);
    sr_test_path(path, sizeof(path), fx.dir, "big.srck");
    sr_test_blob_t b = sr_test_slurp(path);
    assert_true(b.len > 4 * 65536);
    free(b.data);
    check_file(path, x);
    free_content(x);
}

static void test_reader_faults(void **state)
{
    (void)state;
    char err[512], path[512];
    sr_ckpt_reader_t r;
    sr_test_path(path, sizeof(path), fx.dir, "x.srck");
    assert_int_equal(sr_checkpoint_open(&r, path, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot open: No such file or directory");
    /* Valid frame and checksum around bytes that are not msgpack. */
    unsigned char f[5 + 1 + 8] = {'S', 'R', 'C', 'K', SR_CKPT_VERSION, 0xc1, 'S', 'R', 'E', 'N'};
    uint32_t crc = sr_crc32c(0, f, 6);
    for (int i = 0; i < 4; i++) f[10 + i] = (unsigned char)(crc >> (8 * i));
    sr_test_spit(path, f, sizeof(f));
    assert_int_equal(sr_checkpoint_open(&r, path, err, sizeof(err)), 0);
    msgpack_object o;
    assert_int_equal(sr_checkpoint_next(&r, &o), -1);
    sr_checkpoint_close(&r);
    /* An object cut short inside the frame: a map that promises a key. */
    f[5] = 0x81;
    crc = sr_crc32c(0, f, 6);
    for (int i = 0; i < 4; i++) f[10 + i] = (unsigned char)(crc >> (8 * i));
    sr_test_spit(path, f, sizeof(f));
    assert_int_equal(sr_checkpoint_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(sr_checkpoint_next(&r, &o), -1);
    sr_checkpoint_close(&r);
    /* Nothing between the head and the trailer: valid, and empty. */
    unsigned char e[13] = {'S', 'R', 'C', 'K', SR_CKPT_VERSION, 'S', 'R', 'E', 'N'};
    crc = sr_crc32c(0, e, 5);
    for (int i = 0; i < 4; i++) e[9 + i] = (unsigned char)(crc >> (8 * i));
    sr_test_spit(path, e, sizeof(e));
    assert_int_equal(sr_checkpoint_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(sr_checkpoint_next(&r, &o), 0);
    sr_checkpoint_close(&r);
    /* A later format version. */
    e[4] = SR_CKPT_VERSION + 1;
    sr_test_spit(path, e, sizeof(e));
    assert_int_equal(sr_checkpoint_open(&r, path, err, sizeof(err)), -1);
    char want[128];
    snprintf(want, sizeof(want), "format version %d is not supported", SR_CKPT_VERSION + 1);
    assert_non_null(strstr(err, want));
}

static void test_every_flipped_byte_and_truncation_is_refused(void **state)
{
    (void)state;
    content_t *x = make_content(6, 2, 1);
    char err[512], path[512], bad[512];
    assert_int_equal(sr_checkpoint_write(fx.dir, "good.srck", &x->c, err, sizeof(err)), 0);
    sr_test_blob_t b = sr_test_slurp(sr_test_path(path, sizeof(path), fx.dir, "good.srck"));
    assert_non_null(b.data);
    sr_test_path(bad, sizeof(bad), fx.dir, "bad.srck");
    sr_ckpt_reader_t r;
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x5a;
        sr_test_spit(bad, b.data, b.len);
        b.data[i] ^= 0x5a;
        err[0] = '\0';
        if (sr_checkpoint_open(&r, bad, err, sizeof(err)) == 0) fail_msg("byte %zu flipped: accepted", i);
        const char *want = i < 4 ? "bad magic at offset 0" : i == 4 ? "format version" :
                           i >= b.len - 8 && i < b.len - 4 ? "truncated: no trailer" : "checksum mismatch";
        if (!strstr(err, want)) fail_msg("byte %zu flipped: \"%s\", want \"%s\"", i, err, want);
    }
    for (size_t n = 0; n < b.len; n++) {
        sr_test_spit(bad, b.data, n);
        err[0] = '\0';
        if (sr_checkpoint_open(&r, bad, err, sizeof(err)) == 0) fail_msg("cut to %zu bytes: accepted", n);
        assert_true(err[0] != '\0');
    }
    sr_test_spit(bad, b.data, b.len);
    check_file(bad, x);
    free(b.data);
    free_content(x);
}

static void touch(const char *dir, const char *name)
{
    char path[512];
    sr_test_write(sr_test_path(path, sizeof(path), dir, name), "w", name);
}

static void test_prune_keeps_the_newest(void **state)
{
    (void)state;
    /* Written out of order: names, not times, decide. */
    const int order[] = {3, 11, 1, 5, 2};
    char name[512], names[1024];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "checkpoint-%012d.srck", order[i]);
        touch(fx.dir, name);
    }
    touch(fx.dir, "checkpoint-000000000004.srck.tmp");
    touch(fx.dir, "dead_letters.jsonl");
    touch(fx.dir, ".hidden.srck");
    assert_int_equal(mkdir(sr_test_path(name, sizeof(name), fx.dir, "wal"), 0755), 0);
    /* keep 0: nothing removed. */
    assert_int_equal(sr_checkpoint_prune(fx.dir, 0), 0);
    assert_int_equal(sr_checkpoint_prune(fx.dir, 5), 0);
    assert_int_equal(sr_checkpoint_prune(fx.dir, 2), 3);
    listing(fx.dir, names, sizeof(names));
    /* The temp file a killed writer left goes too. */
    assert_string_equal(names, ".hidden.srck checkpoint-000000000005.srck "
                               "checkpoint-000000000011.srck dead_letters.jsonl wal");
    assert_int_equal(sr_checkpoint_prune(fx.dir, 2), 0);
    assert_int_equal(sr_checkpoint_prune(fx.dir, 1), 1);
    listing(fx.dir, names, sizeof(names));
    assert_non_null(strstr(names, " checkpoint-000000000011.srck "));
    assert_null(strstr(names, "checkpoint-000000000005.srck "));
    char missing[512];
    assert_int_equal(sr_checkpoint_prune(sr_test_path(missing, sizeof(missing), fx.dir, "nope"), 1), -1);
}

/* The temp file of a checkpoint whose writer was killed (kill -9 during the
 * write) is removed by the next prune. */
static void test_prune_removes_stale_temp_files(void **state)
{
    (void)state;
    for (int i = 1; i <= 4; i++) {
        char name[64];
        snprintf(name, sizeof(name), "checkpoint-%012d.srck", i);
        touch(fx.dir, name);
    }
    touch(fx.dir, "checkpoint-000000000002.srck.tmp");
    sr_checkpoint_prune(fx.dir, 2);
    char names[1024];
    listing(fx.dir, names, sizeof(names));
    assert_string_equal(names, "checkpoint-000000000003.srck checkpoint-000000000004.srck");
}

/* One faulty write: dir holds prev_name (content a); content b goes to
 * new_name with call kind op failing at its nth call (persistently or
 * not) with errno err. target_dir says whether that call is made on the
 * directory (its fsync after the rename). */
static void run_fault(content_t *a, content_t *b, const char *prev_name, const char *new_name, int op, int nth,
                      int persistent, int err_no, int target_dir)
{
    char err[1024], prev[512], path[512], tmp[600], want[1200];
    sr_test_path(prev, sizeof(prev), fx.dir, prev_name);
    sr_test_path(path, sizeof(path), fx.dir, new_name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* A fresh directory holding only the previous checkpoint. */
    char names[1024];
    sr_test_rmtree(fx.dir);
    assert_int_equal(mkdir(fx.dir, 0700), 0);
    assert_int_equal(sr_checkpoint_write(fx.dir, prev_name, &a->c, err, sizeof(err)), 0);
    sr_test_blob_t before = sr_test_slurp(prev);
    assert_non_null(before.data);
    int fds = open_fds();
    size_t mem = sr_alloc_used();

    fault_reset();
    F.op = op;
    F.nth = nth;
    F.persistent = persistent;
    F.err = err_no;
    fake_io();
    err[0] = '\0';
    int rc = sr_checkpoint_write(fx.dir, new_name, &b->c, err, sizeof(err));
    sr_io = sr_io_real;

    const char *what = op_names[op];
    char label[200];
    snprintf(label, sizeof(label), "%s call %d%s (%s) failing with %s, %s", what, nth,
             persistent ? " and after" : "", target_dir ? "directory" : "file", strerror(err_no),
             strcmp(prev_name, new_name) ? "new name" : "same name");
    if (F.failed < 1) fail_msg("%s: the call was never made", label);
    if (open_fds() != fds) fail_msg("%s: %d descriptors before, %d after", label, fds, open_fds());
    if (sr_alloc_used() != mem) fail_msg("%s: memory leaked", label);
    if (exists(tmp)) fail_msg("%s: temp file left behind", label);
    int same = strcmp(prev_name, new_name) == 0;
    if (op == OP_CLOSE && target_dir) {
        /* Closing the directory after its fsync succeeded: nothing lost,
         * and the write reports success. */
        if (rc != 0) fail_msg("%s: rc %d, %s", label, rc, err);
        check_file(path, b);
    } else if (target_dir) {
        /* Renamed, but the directory entry may not be durable: reported
         * as a failure, the new checkpoint left in place (sr_checkpoint.c
         * says so where it fsyncs the directory). */
        snprintf(want, sizeof(want), "fsync directory %s: %s", fx.dir, strerror(err_no));
        if (rc != -1) fail_msg("%s: rc %d", label, rc);
        if (strcmp(err, want) != 0) fail_msg("%s: err \"%s\", want \"%s\"", label, err, want);
        check_file(path, b);
    } else {
        snprintf(want, sizeof(want), "%s %s: %s", what, tmp, strerror(err_no));
        if (rc != -1) fail_msg("%s: rc %d", label, rc);
        if (strcmp(err, want) != 0) fail_msg("%s: err \"%s\", want \"%s\"", label, err, want);
        if (!same && exists(path)) fail_msg("%s: the new checkpoint exists", label);
        listing(fx.dir, names, sizeof(names));
        if (strcmp(names, prev_name) != 0) fail_msg("%s: directory holds \"%s\"", label, names);
    }
    /* The previous checkpoint is untouched unless the new one replaced it. */
    if (!same || !target_dir) {
        sr_test_blob_t after = sr_test_slurp(prev);
        if (!after.data || after.len != before.len || memcmp(after.data, before.data, before.len) != 0)
            fail_msg("%s: the previous checkpoint changed", label);
        free(after.data);
    }
    free(before.data);
}

static void test_every_call_failing_once_and_persistently(void **state)
{
    (void)state;
    content_t *a = make_content(10, 4, 1);
    /* Over the 64 KiB buffer: two writes at least. */
    content_t *b = make_content(1500, 60, 2);
    /* A clean run through the counting layer: which calls the writer makes. */
    char err[1024];
    fault_reset();
    fake_io();
    assert_int_equal(sr_checkpoint_write(fx.dir, "checkpoint-000000000001.srck", &a->c, err, sizeof(err)), 0);
    fault_reset();
    assert_int_equal(sr_checkpoint_write(fx.dir, "checkpoint-000000000002.srck", &b->c, err, sizeof(err)), 0);
    sr_io = sr_io_real;
    int calls[NOPS];
    char on_dir[NOPS][MAX_CALLS];
    memcpy(calls, F.calls, sizeof(calls));
    memcpy(on_dir, F.on_dir, sizeof(on_dir));
    /* The file and the directory: opened, synced, closed; written; renamed. */
    assert_int_equal(calls[OP_OPEN], 2);
    assert_int_equal(on_dir[OP_OPEN][0], 0);
    assert_int_equal(on_dir[OP_OPEN][1], 1);
    assert_int_equal(calls[OP_FSYNC], 2);
    assert_int_equal(on_dir[OP_FSYNC][0], 0);
    assert_int_equal(on_dir[OP_FSYNC][1], 1);
    assert_int_equal(calls[OP_CLOSE], 2);
    assert_int_equal(on_dir[OP_CLOSE][0], 0);
    assert_int_equal(on_dir[OP_CLOSE][1], 1);
    assert_int_equal(calls[OP_RENAME], 1);
    assert_true(calls[OP_WRITE] >= 2);
    assert_true(calls[OP_WRITE] < MAX_CALLS);
    sr_test_rmtree(fx.dir);
    assert_int_equal(mkdir(fx.dir, 0700), 0);

    const int errs[] = {ENOSPC, EIO, EACCES};
    int runs = 0;
    for (int op = 0; op < NOPS; op++)
        for (int nth = 1; nth <= calls[op]; nth++)
            for (int persistent = 0; persistent <= 1; persistent++)
                for (size_t e = 0; e < sizeof(errs) / sizeof(errs[0]); e++)
                    for (int same = 0; same <= 1; same++) {
                        run_fault(a, b, "checkpoint-000000000001.srck",
                                  same ? "checkpoint-000000000001.srck" : "checkpoint-000000000002.srck", op, nth,
                                  persistent, errs[e], on_dir[op][nth - 1]);
                        runs++;
                    }
    assert_true(runs >= 9 * 2 * 3 * 2);
    free_content(a);
    free_content(b);
}

static void test_short_interrupted_and_empty_writes(void **state)
{
    (void)state;
    content_t *b = make_content(1500, 60, 2);
    char err[1024] = "", path[512], tmp[600];
    sr_test_path(path, sizeof(path), fx.dir, "c.srck");
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* Short writes are carried on. */
    fault_reset();
    F.short_max = 1000;
    fake_io();
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &b->c, err, sizeof(err)), 0);
    assert_true(F.calls[OP_WRITE] > 100);
    check_file(path, b);
    /* An interrupted write is tried again. */
    fault_reset();
    F.op = OP_WRITE;
    F.nth = 1;
    F.err = EINTR;
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &b->c, err, sizeof(err)), 0);
    assert_int_equal(F.failed, 1);
    check_file(path, b);
    /* A write that writes nothing: an I/O error, not a loop. */
    fault_reset();
    F.zero_write = 2;
    sr_test_blob_t before = sr_test_slurp(path);
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &b->c, err, sizeof(err)), -1);
    char want[1200];
    snprintf(want, sizeof(want), "write %s: %s", tmp, strerror(EIO));
    assert_string_equal(err, want);
    assert_false(exists(tmp));
    sr_test_blob_t after = sr_test_slurp(path);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    free(before.data);
    free(after.data);
    sr_io = sr_io_real;
    /* No memory for the write buffer: reported, nothing created. */
    size_t mem = sr_alloc_used();
    sr_alloc_fail_after(0);
    int rc = sr_checkpoint_write(fx.dir, "d.srck", &b->c, err, sizeof(err));
    sr_alloc_fail_after(-1);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "out of memory"));
    assert_non_null(strstr(err, "d.srck.tmp"));
    assert_false(exists(sr_test_path(path, sizeof(path), fx.dir, "d.srck.tmp")));
    assert_int_equal(sr_alloc_used(), mem);
    free_content(b);
}

static void test_real_enospc_on_a_small_tmpfs(void **state)
{
    (void)state;
    snprintf(fx.mnt, sizeof(fx.mnt), "%s/mnt", fx.dir);
    assert_int_equal(mkdir(fx.mnt, 0700), 0);
    if (mount("tmpfs", fx.mnt, "tmpfs", 0, "size=64k") < 0) {
        print_message("cannot mount a 64k tmpfs here (%s): the real ENOSPC case is skipped\n", strerror(errno));
        skip();
    }
    fx.mounted = 1;
    content_t *a = make_content(10, 4, 1);
    content_t *b = make_content(1500, 60, 2); /* over 64k */
    char err[1024] = "", prev[512], path[512], tmp[600], want[1200];
    assert_int_equal(sr_checkpoint_write(fx.mnt, "checkpoint-000000000001.srck", &a->c, err, sizeof(err)), 0);
    sr_test_path(prev, sizeof(prev), fx.mnt, "checkpoint-000000000001.srck");
    sr_test_path(path, sizeof(path), fx.mnt, "checkpoint-000000000002.srck");
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    sr_test_blob_t before = sr_test_slurp(prev);
    assert_int_equal(sr_checkpoint_write(fx.mnt, "checkpoint-000000000002.srck", &b->c, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "write %s: %s", tmp, strerror(ENOSPC));
    assert_string_equal(err, want);
    assert_false(exists(tmp));
    assert_false(exists(path));
    sr_test_blob_t after = sr_test_slurp(prev);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    check_file(prev, a);
    /* The space the failed write took is back: the next one succeeds. */
    assert_int_equal(sr_checkpoint_write(fx.mnt, "checkpoint-000000000003.srck", &a->c, err, sizeof(err)), 0);
    check_file(sr_test_path(path, sizeof(path), fx.mnt, "checkpoint-000000000003.srck"), a);
    free(before.data);
    free(after.data);
    free_content(a);
    free_content(b);
}

/* -- Loading in C (sr_checkpoint_load) and the forked writer -- */

/* Makes x what a restorable checkpoint holds: metadata {job = "test",
 * batch = tag, time_ms = 1000 * tag}, and window slices of count elements,
 * each an array of one or two values. */
static void make_loadable(content_t *x, int tag)
{
    msgpack_sbuffer_clear(&x->meta);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &x->meta, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "job");
    pack_str(&pk, "test");
    pack_str(&pk, "batch");
    msgpack_pack_int(&pk, tag);
    pack_str(&pk, "time_ms");
    msgpack_pack_int(&pk, 1000 * tag);
    x->c.meta = x->meta.data;
    x->c.meta_len = x->meta.size;
    for (int w = 0; w < 2; w++) {
        sr_window_free(x->windows[w]);
        x->windows[w] = sr_window_new(w ? "raw" : "counts");
        assert_non_null(x->windows[w]);
    }
    for (int i = 1; i <= 3; i++) {
        char data[64];
        size_t n = 0;
        for (int k = 0; k < i; k++) {
            data[n++] = (char)0x92; /* [k + tag, "x"] */
            data[n++] = (char)(k + tag);
            data[n++] = (char)0xa1;
            data[n++] = 'x';
        }
        assert_int_equal(sr_window_push(x->windows[0], i * 1000, data, n, (uint32_t)i), 0);
    }
    assert_int_equal(sr_window_push(x->windows[1], 5000, "\x91\x01\x91\x02\x91\x03", 6, 3), 0);
    assert_int_equal(sr_window_push(x->windows[1], 6000, NULL, 0, 0), 0);
    x->c.windows = x->windows;
}

/* got holds what want holds: name, partitions, timeout, clock, every key
 * with its value and deadline. */
static void assert_same_state(const sr_state_t *got, sr_state_t *want)
{
    assert_non_null(got);
    assert_string_equal(got->name, want->name);
    assert_int_equal(got->nparts, want->nparts);
    assert_int_equal(got->timeout_ms, want->timeout_ms);
    assert_int_equal(got->wheel.now, want->wheel.now);
    assert_int_equal(got->count, want->count);
    assert_int_equal(got->wheel.count, want->wheel.count);
    sr_state_iter_t it = {0, 0};
    for (sr_state_entry_t *e; (e = sr_state_next(want, &it));) {
        sr_state_entry_t *g = sr_state_get((sr_state_t *)got, sr_state_entry_key(e), e->klen);
        assert_non_null(g);
        assert_int_equal(sr_state_entry_vlen(g), sr_state_entry_vlen(e));
        assert_memory_equal(sr_state_entry_value(g), sr_state_entry_value(e), sr_state_entry_vlen(e));
        assert_int_equal(sr_wheel_armed(&g->timer), sr_wheel_armed(&e->timer));
        if (sr_wheel_armed(&e->timer)) assert_int_equal(g->timer.expiry, e->timer.expiry);
    }
}

static void assert_same_window(const sr_window_t *got, const sr_window_t *want)
{
    assert_non_null(got);
    assert_string_equal(got->name, want->name);
    assert_int_equal(got->n, want->n);
    for (size_t k = 0; k < want->n; k++) {
        const sr_slice_t *g = sr_window_slice(got, k), *w = sr_window_slice(want, k);
        assert_int_equal(g->time_ms, w->time_ms);
        assert_int_equal(g->count, w->count);
        assert_int_equal(g->len, w->len);
        if (w->len) assert_memory_equal(g->data, w->data, w->len);
    }
}

/* l is x, read back. */
static void assert_loaded(const sr_ckpt_loaded_t *l, const content_t *x)
{
    assert_int_equal(l->meta_len, x->c.meta_len);
    assert_memory_equal(l->meta, x->c.meta, l->meta_len);
    assert_int_equal(l->nstates, x->c.nstates);
    for (size_t i = 0; i < x->c.nstates; i++) assert_same_state(l->states[i], x->c.states[i]);
    assert_int_equal(l->nwindows, x->c.nwindows);
    for (size_t i = 0; i < x->c.nwindows; i++) {
        assert_same_window(l->windows[i], x->c.windows[i]);
        if (x->c.results[i]) assert_same_state(l->results[i], x->c.results[i]);
        else assert_null(l->results[i]);
    }
}

static void test_load_reads_back_every_state_and_window(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    content_t *x = make_content(300, 8, 2);
    make_loadable(x, 2);
    char err[512] = "", path[512];
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &x->c, err, sizeof(err)), 0);
    sr_ckpt_loaded_t l;
    if (sr_checkpoint_load(sr_test_path(path, sizeof(path), fx.dir, "c.srck"), &l, err, sizeof(err)) < 0)
        fail_msg("load: %s", err);
    assert_loaded(&l, x);
    /* What was taken over is the taker's: unload frees the rest. */
    sr_state_t *taken = l.states[0];
    l.states[0] = NULL;
    sr_checkpoint_unload(&l);
    assert_null(l.states);
    assert_int_equal(l.nwindows, 0);
    assert_same_state(taken, x->c.states[0]);
    sr_state_free(taken);
    free_content(x);
    assert_int_equal(sr_alloc_used(), before);
}

/* Appends n bytes before the trailer of path (the checksum made valid). */
static void insert_before_trailer(const char *path, const char *bytes, size_t n)
{
    sr_test_blob_t b = sr_test_slurp(path);
    unsigned char *p = malloc(b.len + n);
    assert_non_null(p);
    memcpy(p, b.data, b.len - 8);
    memcpy(p + b.len - 8, bytes, n);
    size_t len = b.len + n;
    memcpy(p + len - 8, "SREN", 4);
    uint32_t crc = sr_crc32c(0, p, len - 8);
    for (int i = 0; i < 4; i++) p[len - 4 + i] = (unsigned char)(crc >> (8 * i));
    sr_test_spit(path, p, len);
    free(p);
    free(b.data);
}

/* sr_checkpoint_load on path: the reason it refused, after checking that
 * it left out empty and freed everything it made. */
static const char *load_fault(const char *path, char *err, size_t errlen)
{
    size_t before = sr_alloc_used();
    sr_ckpt_loaded_t l;
    err[0] = '\0';
    assert_int_equal(sr_checkpoint_load(path, &l, err, errlen), -1);
    assert_true(err[0] != '\0');
    assert_null(l.states);
    assert_null(l.windows);
    assert_null(l.meta);
    assert_int_equal(l.nstates + l.nwindows, 0);
    assert_int_equal(sr_alloc_used(), before);
    return err;
}

static void test_load_refuses_a_corrupt_checkpoint_with_the_reason(void **state)
{
    (void)state;
    content_t *x = make_content(6, 2, 1);
    char err[512], path[512], why[512];
    sr_test_path(path, sizeof(path), fx.dir, "c.srck");
    assert_string_equal(load_fault(path, why, sizeof(why)), "cannot open: No such file or directory");
    /* The metadata make_content writes has no time. */
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &x->c, err, sizeof(err)), 0);
    assert_string_equal(load_fault(path, why, sizeof(why)),
                        "offset 5: malformed metadata: not a map with a batch number and a time");
    make_loadable(x, 1);
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &x->c, err, sizeof(err)), 0);
    sr_test_blob_t b = sr_test_slurp(path);
    size_t end = b.len - 8;
    /* A byte flipped: the checksum. */
    b.data[b.len / 2] ^= 0x20;
    sr_test_spit(path, b.data, b.len);
    assert_non_null(strstr(load_fault(path, why, sizeof(why)), "checksum mismatch over bytes 0.."));
    /* Bytes after the last section, under a valid checksum. */
    b.data[b.len / 2] ^= 0x20;
    sr_test_spit(path, b.data, b.len);
    insert_before_trailer(path, "\xc0\xc0", 2);
    char want[128];
    snprintf(want, sizeof(want), "offset %zu: 2 bytes after the last section", end);
    assert_string_equal(load_fault(path, why, sizeof(why)), want);
    /* The last window's result block one entry short: the states and
     * windows made so far are freed (load_fault counts the bytes). */
    sr_test_spit(path, b.data, b.len);
    free(b.data);
    x->results[2] = make_state("empty.result", 1, 0, 0, 3, "e", 1);
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &x->c, err, sizeof(err)), 0);
    b = sr_test_slurp(path);
    /* The last entry (["e2", [2, "f"], nil]) removed, the checksum made valid. */
    static const unsigned char last[] = {0x93, 0xa2, 'e', '2', 0x92, 0x02, 0xa1, 'f', 0xc0};
    assert_true(b.len > 8 + sizeof(last));
    unsigned char *at = NULL;
    for (size_t i = 0; i + sizeof(last) <= b.len - 8; i++)
        if (memcmp(b.data + i, last, sizeof(last)) == 0) at = (unsigned char *)b.data + i;
    assert_non_null(at);
    size_t cut = (size_t)(at - (unsigned char *)b.data);
    memmove(at, at + sizeof(last), b.len - cut - sizeof(last));
    size_t len = b.len - sizeof(last);
    uint32_t crc = sr_crc32c(0, b.data, len - 8);
    for (int i = 0; i < 4; i++) b.data[len - 4 + i] = (char)(crc >> (8 * i));
    sr_test_spit(path, b.data, len);
    free(b.data);
    snprintf(want, sizeof(want), "state empty.result, entry 2 at offset %zu: malformed", len - 8);
    assert_string_equal(load_fault(path, why, sizeof(why)), want);
    free_content(x);
}

/* Every allocation of a load failing in turn: a refusal that names the
 * shortage, or the whole checkpoint; nothing leaks either way. */
static void test_load_out_of_memory_at_every_allocation(void **state)
{
    (void)state;
    content_t *x = make_content(20, 4, 1);
    make_loadable(x, 1);
    char err[512], path[512];
    assert_int_equal(sr_checkpoint_write(fx.dir, "c.srck", &x->c, err, sizeof(err)), 0);
    sr_test_path(path, sizeof(path), fx.dir, "c.srck");
    int refused = 0;
    for (long n = 0;; n++) {
        if (n > 100000) fail_msg("no load succeeded with %ld allocations", n);
        size_t before = sr_alloc_used();
        sr_ckpt_loaded_t l;
        sr_alloc_fail_after(n);
        int rc = sr_checkpoint_load(path, &l, err, sizeof(err));
        sr_alloc_fail_after(-1);
        if (rc == 0) {
            assert_loaded(&l, x);
            sr_checkpoint_unload(&l);
            assert_int_equal(sr_alloc_used(), before);
            break;
        }
        if (!strstr(err, "out of memory") && !strstr(err, "malformed")) fail_msg("allocation %ld: \"%s\"", n, err);
        assert_int_equal(sr_alloc_used(), before);
        refused++;
    }
    assert_true(refused > 10);
    free_content(x);
}

/* Waits for the forked writer through poll (1 while it writes, checked
 * on its pipe with a timeout). */
static int poll_until_done(sr_ckpt_writer_t *w, char *err, size_t errlen)
{
    for (int i = 0; i < 1000; i++) {
        int rc = sr_checkpoint_writer_poll(w, err, errlen);
        if (rc != 1) return rc;
        struct pollfd p = {w->fd, POLLIN, 0};
        poll(&p, 1, 100);
    }
    fail_msg("the writer did not finish in 100 s");
    return -1;
}

static void test_forked_writer_writes_prunes_and_reports(void **state)
{
    (void)state;
    content_t *x = make_content(50, 4, 3);
    make_loadable(x, 3);
    char err[512] = "", path[512], names[1024];
    for (int i = 1; i <= 3; i++) {
        char name[64];
        snprintf(name, sizeof(name), "checkpoint-%012d.srck", i);
        touch(fx.dir, name);
    }
    int fds = open_fds();
    sr_ckpt_writer_t w;
    assert_int_equal(sr_checkpoint_writer_start(&w, fx.dir, "checkpoint-000000000004.srck", &x->c, 2, err,
                                                sizeof(err)), 0);
    assert_true(w.pid > 0 && w.fd >= 0);
    assert_int_equal(poll_until_done(&w, err, sizeof(err)), 0);
    assert_int_equal(w.fd, -1);
    assert_int_equal(open_fds(), fds);
    listing(fx.dir, names, sizeof(names));
    assert_string_equal(names, "checkpoint-000000000003.srck checkpoint-000000000004.srck");
    sr_ckpt_loaded_t l;
    if (sr_checkpoint_load(sr_test_path(path, sizeof(path), fx.dir, "checkpoint-000000000004.srck"), &l, err,
                           sizeof(err)) < 0)
        fail_msg("load: %s", err);
    assert_loaded(&l, x);
    sr_checkpoint_unload(&l);
    /* Into a directory that is not there: the child's reason, on wait. */
    char nowhere[512];
    sr_test_path(nowhere, sizeof(nowhere), fx.dir, "nowhere");
    assert_int_equal(sr_checkpoint_writer_start(&w, nowhere, "c.srck", &x->c, 2, err, sizeof(err)), 0);
    assert_int_equal(sr_checkpoint_writer_wait(&w, err, sizeof(err)), -1);
    char want[600];
    snprintf(want, sizeof(want), "open %s/c.srck.tmp: No such file or directory", nowhere);
    assert_string_equal(err, want);
    assert_int_equal(open_fds(), fds);
    free_content(x);
}

static void test_list_names_checkpoints_oldest_first(void **state)
{
    (void)state;
    const int order[] = {3, 11, 1};
    char name[512];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "checkpoint-%012d.srck", order[i]);
        touch(fx.dir, name);
    }
    touch(fx.dir, "checkpoint-000000000004.srck.tmp");
    touch(fx.dir, ".hidden.srck");
    touch(fx.dir, "dead_letters.jsonl");
    char **names;
    assert_int_equal(sr_checkpoint_list(fx.dir, &names, 100), 3);
    assert_string_equal(names[0], "checkpoint-000000000001.srck");
    assert_string_equal(names[1], "checkpoint-000000000003.srck");
    assert_string_equal(names[2], "checkpoint-000000000011.srck");
    for (int i = 0; i < 3; i++) sr_free(names[i]);
    sr_free(names);
    assert_int_equal(sr_checkpoint_list(fx.dir, &names, 2), 2);
    for (int i = 0; i < 2; i++) sr_free(names[i]);
    sr_free(names);
    assert_int_equal(sr_checkpoint_list(sr_test_path(name, sizeof(name), fx.dir, "nope"), &names, 100), 0);
    sr_free(names);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_crc32c_vectors),
        T(test_crc32c_slicing_and_continuation),
        T(test_round_trip_every_object),
        T(test_big_checkpoint_round_trip),
        T(test_reader_faults),
        T(test_every_flipped_byte_and_truncation_is_refused),
        T(test_prune_keeps_the_newest),
        T(test_prune_removes_stale_temp_files),
        T(test_every_call_failing_once_and_persistently),
        T(test_short_interrupted_and_empty_writes),
        T(test_real_enospc_on_a_small_tmpfs),
        T(test_load_reads_back_every_state_and_window),
        T(test_load_refuses_a_corrupt_checkpoint_with_the_reason),
        T(test_load_out_of_memory_at_every_allocation),
        T(test_forked_writer_writes_prunes_and_reports),
        T(test_list_names_checkpoints_oldest_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
