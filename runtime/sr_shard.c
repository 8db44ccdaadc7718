/* sr_shard: splits a stage's state into per-worker shards by partition and
 * gathers them back, entries copied with their timeouts. */
#include "sr_shard.h"
#include "sr_error.h"

static int sr__copy_part(sr_state_t *dst, sr_state_t *src, int p)
{
    sr_state_iter_t it = { p, 0 };
    for (sr_state_entry_t *e; (e = sr_state_next(src, &it)) && it.part == p;) {
        sr_state_entry_t *ne;
        int rc = sr_state_put(dst, sr_state_entry_key(e), e->klen, sr_state_entry_value(e), sr_state_entry_vlen(e), &ne);
        if (rc < 0) return rc;
        if (sr_wheel_armed(&e->timer)) sr_state_arm(dst, ne, e->timer.expiry);
    }
    return SR_OK;
}

sr_state_t *sr_shard_of(sr_state_t *src, int n, int k)
{
    sr_state_t *st = sr_state_new(src->name, src->nparts, src->timeout_ms, src->wheel.now);
    if (!st) return NULL;
    for (int p = k; p < src->nparts; p += n) {
        if (sr__copy_part(st, src, p) < 0) goto fail;
    }
    return st;
fail:
    sr_state_free(st);
    return NULL;
}

int sr_shard_gather(sr_state_t *dst, sr_state_t *const *shards, int n)
{
    for (int p = 0; p < dst->nparts; p++) {
        int rc = sr__copy_part(dst, shards[p % n], p);
        if (rc < 0) return rc;
    }
    return SR_OK;
}
