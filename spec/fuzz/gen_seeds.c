/* gen_seeds: writes the fuzz targets' seed corpora with the runtime's own
 * writers, so the seeds follow the format as it is built: checkpoints
 * (no state; keyed state with and without timeouts; windows with and
 * without an inverse result) into CKPT_DIR, and write-ahead log segments,
 * each prefixed with fuzz_wal's control byte, into WAL_DIR.
 * Usage: gen_seeds CKPT_DIR WAL_DIR */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sr_checkpoint.h"
#include "sr_wal.h"

static void die(const char *what, const char *err)
{
    fprintf(stderr, "gen_seeds: %s: %s\n", what, err);
    exit(1);
}

/* -- Checkpoints -- */

/* msgpack bytes of a string, an integer and a small array, as the state
 * tables hold them. */
static size_t pack_str(char *out, const char *s)
{
    size_t n = strlen(s);
    out[0] = (char)(0xa0 | n);
    memcpy(out + 1, s, n);
    return n + 1;
}

static size_t pack_int(char *out, int v)
{
    out[0] = (char)v; /* a positive fixint: v < 128 */
    return 1;
}

static void fill_state(sr_state_t *st, int keys, int with_expiry)
{
    for (int i = 0; i < keys; i++) {
        char k[16], key[32], value[32];
        snprintf(k, sizeof(k), "key%d", i);
        size_t klen = pack_str(key, k);
        size_t vlen;
        if (i % 3 == 2) {
            value[0] = (char)0x92; /* [i, "v"] */
            vlen = 1 + pack_int(value + 1, i);
            vlen += pack_str(value + vlen, "v");
        } else {
            vlen = pack_int(value, i);
        }
        sr_state_entry_t *e;
        if (sr_state_put(st, key, klen, value, vlen, &e) < 0) die("state", "out of memory");
        if (with_expiry && i % 2 == 0) sr_state_arm(st, e, 5000 + 1000 * i);
    }
}

/* A slice of a reducing window: count [key, partial] pairs back to back. */
static void push_slice(sr_window_t *w, int64_t time_ms, int count)
{
    char buf[256];
    size_t len = 0;
    for (int i = 0; i < count; i++) {
        char k[16];
        snprintf(k, sizeof(k), "w%d", i);
        buf[len++] = (char)0x92;
        len += pack_str(buf + len, k);
        len += pack_int(buf + len, i + 1);
    }
    if (sr_window_push(w, time_ms, buf, len, (uint32_t)count) < 0) die("window", "push");
}

static void meta(msgpack_sbuffer *sb, int batch, int64_t time_ms)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "format", 6);
    msgpack_pack_int(&pk, SR_CKPT_VERSION);
    msgpack_pack_str_with_body(&pk, "job", 3);
    msgpack_pack_str_with_body(&pk, "seed", 4);
    msgpack_pack_str_with_body(&pk, "batch", 5);
    msgpack_pack_int(&pk, batch);
    msgpack_pack_str_with_body(&pk, "time_ms", 7);
    msgpack_pack_int64(&pk, time_ms);
    msgpack_pack_str_with_body(&pk, "zero_ms", 7);
    msgpack_pack_int64(&pk, 0);
    msgpack_pack_str_with_body(&pk, "sources", 7);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "input", 5);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "kind", 4);
    msgpack_pack_str_with_body(&pk, "text_file", 9);
    msgpack_pack_str_with_body(&pk, "offset", 6);
    msgpack_pack_int64(&pk, 1234);
    msgpack_pack_str_with_body(&pk, "inode", 5);
    msgpack_pack_uint64(&pk, 987654321);
}

static void write_checkpoint(const char *dir, const char *name, int batch, sr_state_t **states, size_t nstates,
                             sr_window_t **windows, sr_state_t **results, size_t nwindows)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    meta(&sb, batch, batch * 1000);
    sr_ckpt_content_t c = {.meta = sb.data, .meta_len = sb.size, .states = states, .nstates = nstates,
                           .windows = windows, .results = results, .nwindows = nwindows};
    char err[1024];
    if (sr_checkpoint_write(dir, name, &c, err, sizeof(err)) < 0) die(name, err);
    msgpack_sbuffer_destroy(&sb);
}

static void checkpoints(const char *dir)
{
    write_checkpoint(dir, "empty.srck", 0, NULL, 0, NULL, NULL, 0);

    sr_state_t *totals = sr_state_new("totals", 4, 0, 3000);
    fill_state(totals, 5, 0);
    write_checkpoint(dir, "state.srck", 3, &totals, 1, NULL, NULL, 0);

    sr_state_t *idle = sr_state_new("idle", 2, 5000, 3000);
    fill_state(idle, 4, 1);
    sr_state_t *states[] = {idle, totals};
    sr_window_t *win = sr_window_new("win"), *plain = sr_window_new("plain");
    push_slice(win, 1000, 2);
    push_slice(win, 2000, 1);
    push_slice(win, 3000, 3);
    push_slice(plain, 3000, 1);
    sr_state_t *result = sr_state_new("win#window", 1, 0, 3000);
    fill_state(result, 3, 0);
    sr_window_t *windows[] = {win, plain};
    sr_state_t *results[] = {result, NULL};
    write_checkpoint(dir, "everything.srck", 3, states, 2, windows, results, 2);

    /* An empty string as a key and as a value: what a job splitting "a  b"
     * on single spaces keeps. */
    sr_state_t *words = sr_state_new("words", 1, 0, 0);
    if (sr_state_put(words, "\xa0", 1, "\xa0", 1, NULL) < 0) die("state", "out of memory");
    write_checkpoint(dir, "empty-key.srck", 1, &words, 1, NULL, NULL, 0);
    sr_state_free(words);

    sr_state_free(totals);
    sr_state_free(idle);
    sr_state_free(result);
    sr_window_free(win);
    sr_window_free(plain);
}

/* -- Write-ahead log -- */

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path, "cannot open");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)len + 1);
    if (!p || fread(p, 1, (size_t)len, f) != (size_t)len) die(path, "cannot read");
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Writes ctl followed by the n bytes of p to dir/name. */
static void seed(const char *dir, const char *name, unsigned char ctl, const char *p, size_t n)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputc(ctl, f) == EOF || fwrite(p, 1, n, f) != n || fclose(f) != 0) die(path, "cannot write");
}

static void wal(const char *dir, const char *scratch)
{
    char err[1024];
    sr_wal_t *w = sr_wal_open(scratch, err, sizeof(err));
    if (!w) die(scratch, err);
    sr_wal_declare(w, 0, "socket");
    sr_wal_declare(w, 1, "stdin");
    sr_wal_declare(w, 2, "dir");
    sr_wal_file(w, 2, 77, "a.txt");
    sr_wal_file(w, 2, -1, "b.txt");
    sr_wal_record(w, 0, 6, "hello", 5);
    sr_wal_record(w, 1, 3, "ab", 2);
    sr_wal_pos_t pos[2] = {{0, 6, 0}, {1, 3, 42}};
    sr_wal_batch(w, 1000, pos, 2);
    sr_wal_record(w, 0, 12, "world", 5);
    sr_wal_record(w, 0, 13, "", 0);
    sr_wal_batch(w, 2000, pos, 1);
    sr_wal_rotate(w);
    sr_wal_record(w, 1, 7, "after", 5);
    sr_wal_batch(w, 3000, NULL, 0);
    sr_wal_record(w, 1, 9, "pending", 7);
    sr_wal_flush(w);
    sr_wal_free(w);

    char p1[4400], p2[4400];
    snprintf(p1, sizeof(p1), "%s/%020d.wal", scratch, 1);
    snprintf(p2, sizeof(p2), "%s/%020d.wal", scratch, 2);
    size_t n1, n2;
    char *s1 = slurp(p1, &n1), *s2 = slurp(p2, &n2);
    seed(dir, "one-segment", 0, s1, n1);
    seed(dir, "one-segment-fixed", 1, s1, n1);
    char *both = malloc(n1 + n2);
    memcpy(both, s1, n1);
    memcpy(both + n1, s2, n2);
    /* Split at the 128th nearest the first segment's end. */
    unsigned k = (unsigned)((n1 * 128 + (n1 + n2) / 2) / (n1 + n2));
    seed(dir, "two-segments", (unsigned char)(k << 1), both, n1 + n2);
    seed(dir, "torn-tail", 0, s1, n1 - 3);
    remove(p1);
    remove(p2);
    free(s1);
    free(s2);
    free(both);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_seeds CKPT_DIR WAL_DIR\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    mkdir(argv[2], 0755);
    checkpoints(argv[1]);
    char scratch[4096];
    snprintf(scratch, sizeof(scratch), "%s/.log", argv[2]);
    wal(argv[2], scratch);
    rmdir(scratch);
    return 0;
}
