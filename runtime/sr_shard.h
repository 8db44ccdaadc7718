/* sr_shard: a stateful stage's state split among workers by partition
 * (SPEC section 15): worker k of n holds the partitions p with p mod n ==
 * k, in a state table of its own (its slab, its timing wheel). */
#ifndef SR_SHARD_H
#define SR_SHARD_H
#include "sr_state.h"

/* A new state with src's name, partitions and timeout holding copies of
 * the entries (with their timeouts) of src's partitions p with p mod n ==
 * k. Returns it (the caller owns it) or NULL when out of memory. */
sr_state_t *sr_shard_of(sr_state_t *src, int n, int k);

/* Moves into dst (a state of the same stage) copies of every entry of
 * the n shards, each shard's own partitions only. Returns 0 or SR_ENOMEM. */
int sr_shard_gather(sr_state_t *dst, sr_state_t *const *shards, int n);

#endif
