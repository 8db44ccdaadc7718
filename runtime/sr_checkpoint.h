/* sr_checkpoint: the checkpoint file, format version 1. A checkpoint holds
 * what C owns at a batch boundary: every state table (keys, values, timeout
 * deadlines) and window (slices, with-inverse result), plus a metadata map
 * from Lua (job, script hash, batch, time, source offsets, output progress).
 *
 * Layout: the magic "SRCK", a version byte, then msgpack objects one after
 * another, then "SREN" and the CRC-32C (little-endian) of every byte before
 * it. Objects: {meta, nstates, nwindows}; per state a header {state, count,
 * timeout_ms, now_ms, partitions} and count [key, value, expiry|nil]
 * entries; per window a header {window, nslices, result} and nslices
 * [time_ms, count, bin] slices, then its result as a state block when
 * result is true. A reader walks the objects in constant memory;
 * sr_checkpoint_load (sr_checkpoint_read.c) reads the sections into new
 * states and windows. The forked writer and the directory of checkpoints
 * are sr_checkpoint_writer's. */
#ifndef SR_CHECKPOINT_H
#define SR_CHECKPOINT_H
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "sr_state.h"
#include "sr_window.h"
#include "sr_window_split.h"

#define SR_CKPT_VERSION 1
#define SR_CKPT_SUFFIX ".srck"

typedef struct sr_ckpt_content {
    const char *meta;        /* a msgpack map */
    size_t meta_len;
    sr_state_t **states;     /* borrowed */
    size_t nstates;
    sr_window_t **windows;   /* borrowed */
    sr_state_t **results;    /* per window: its with-inverse result or NULL */
    size_t nwindows;
    /* per state, NULL or its shards (one per worker: SPEC section 15), of
     * which nshards[i]: written as one state, each partition from the
     * shard owning it (states[i] is the first); NULL: no state has any */
    sr_state_t *const *const *shards;
    const int *nshards;
    /* per window, NULL or its parts (a keyed window split among workers:
     * SPEC section 15), written as the one window they split, merged in
     * the writer (windows[i] is the first part's slices); with a result,
     * result_shards[i] holds the parts' results (results[i] the first),
     * written as one state as shards are. NULL: no window is split */
    const sr_window_split_t *const *splits;
    sr_state_t *const *const *result_shards;
} sr_ckpt_content_t;

/* Writes dir/name atomically: dir/name.tmp, fsync, rename, fsync of dir.
 * Returns 0, or -1 with "<operation> <file>: <reason>" in err and the temp
 * file removed (the previous checkpoints are untouched). */
int sr_checkpoint_write(const char *dir, const char *name, const sr_ckpt_content_t *c,
                        char *err, size_t errlen);
typedef struct sr_ckpt_reader {
    char *data;        /* private: the mapped file */
    size_t size;       /* private */
    size_t off;        /* read-only: offset of the next object */
    size_t end;        /* private: where the trailer starts */
    msgpack_zone zone; /* private */
} sr_ckpt_reader_t;

/* Opens and verifies a checkpoint: magic, version, trailer and checksum.
 * Returns 0, or -1 with the fault in err ("bad magic", "format version 7
 * is not supported", "truncated: ...", "checksum mismatch: ..."). */
int sr_checkpoint_open(sr_ckpt_reader_t *r, const char *path, char *err, size_t errlen);
/* The next object, valid until the next call. Returns 1, 0 at the end, or
 * -1 when the bytes at r->off do not decode, announce more elements than
 * the content holds, or nest deeper than SR_MP_MAX_DEPTH + 1. */
int sr_checkpoint_next(sr_ckpt_reader_t *r, msgpack_object *obj);
/* The bytes of content not read yet (before the trailer). */
size_t sr_checkpoint_left(const sr_ckpt_reader_t *r);
void sr_checkpoint_close(sr_ckpt_reader_t *r);

/* -- Sections (sr_checkpoint_read.c) -- */

/* A checkpoint read back: the shape sr_checkpoint_write takes, owned. */
typedef struct sr_ckpt_loaded {
    char *meta;              /* owned: the metadata map, msgpack */
    size_t meta_len;
    sr_state_t **states;     /* owned, in file order */
    size_t nstates;
    sr_window_t **windows;   /* owned, in file order */
    sr_state_t **results;    /* owned: per window its with-inverse result or NULL */
    size_t nwindows;
} sr_ckpt_loaded_t;

/* Reads every section of the checkpoint at path into new states and
 * windows, checking what restore relies on: the metadata is a map with a
 * batch number and a time, counts fit the bytes left, keys are strings,
 * numbers or booleans of at most SR_STATE_MAX_KEY bytes, expiries integers,
 * slices count elements of one or two values, and nothing follows the last
 * section. Allocates in proportion to the file's size. Returns 0 with *out
 * filled (release it with sr_checkpoint_unload), or -1 with out empty and
 * the fault in err: open's reasons, or one naming the offset ("state
 * totals, entry 3 at offset 120: malformed"). */
int sr_checkpoint_load(const char *path, sr_ckpt_loaded_t *out, char *err, size_t errlen);
/* Frees what out still owns (a caller that takes a state or window sets its
 * pointer to NULL first) and empties it. */
void sr_checkpoint_unload(sr_ckpt_loaded_t *out);

#endif
