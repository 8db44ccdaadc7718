/* sr_kafka: what the Kafka source and sink offer beyond the source
 * interface: the partitions a kafka source reads and where each stands
 * (streamrun's checkpoints hold them) and its lag, committing offsets to the group, and
 * the idempotent producer of to_kafka. Both are built on librdkafka. */
#ifndef SR_KAFKA_H
#define SR_KAFKA_H
#include <stddef.h>
#include <stdint.h>

#include "sr_source.h"

/* A kafka source's record in its batch: this header, then the key (keylen
 * bytes; none when keylen is -1), then the value. Record positions (pos)
 * are the messages' offsets within their partitions. */
typedef struct sr_kafka_record {
    int32_t partition_index; /* the source's partition table index (sr_kafka_source_partition) */
    int32_t partition;       /* the partition's number in its topic (dead letters name it) */
    int32_t keylen;          /* -1: the message has no key */
} sr_kafka_record_t;

/* The i-th partition (from 0) a kafka source knows of: its topic (borrowed,
 * valid until the source stops), number, the offset after the last record
 * delivered in a batch (-1: none yet), and whether the group assigns it to
 * this process now. Returns 0, or SR_ENOENT past the last and SR_EINVAL for
 * another kind of source. */
int sr_kafka_source_partition(sr_source_t *s, size_t i, const char **topic, int32_t *partition,
                              int64_t *next, int *assigned);

/* Where a partition stands against its log, for the lag metrics. Offsets
 * are -1 when not known (yet). */
typedef struct sr_kafka_lag {
    int64_t position;  /* the next offset the job reads (after its last record delivered) */
    int64_t committed; /* the last offset committed to the group by this process */
    int64_t low, high; /* the partition's watermarks as librdkafka last saw them */
    int64_t lag;       /* high - position (0 for an empty partition) */
} sr_kafka_lag_t;

/* Fills out for the i-th partition of a kafka source (as
 * sr_kafka_source_partition numbers them) from what librdkafka caches: it
 * never waits on a broker. Returns 0, SR_ENOENT past the last, SR_EINVAL
 * for another kind of source. */
int sr_kafka_source_lag(sr_source_t *s, size_t i, sr_kafka_lag_t *out);

/* Commits offsets (the next record to read) of n partitions to the
 * source's consumer group, asynchronously; a failure is logged. Returns 0,
 * SR_EINVAL for another kind of source, or SR_ENOMEM. */
int sr_kafka_source_commit(sr_source_t *s, const char *const *topics, const int32_t *partitions,
                           const int64_t *offsets, size_t n);

/* With the setting tasks=1, the group's assignments and revocations wait
 * for the session: the i-th partition of the one waiting. Returns 1 (to
 * assign), 2 (to revoke) or 3 (lost: the group dropped this member, the
 * partitions have other owners already and nothing of theirs may be
 * committed) whenever one waits, with the i-th partition's
 * topic (borrowed until completed) and number, or *topic NULL when i is
 * past the last (a cooperative rebalance may assign none, and still waits
 * for its completion); 0 when none waits, SR_EINVAL for another kind of
 * source. */
int sr_kafka_source_pending(sr_source_t *s, size_t i, const char **topic, int32_t *partition);

/* Completes the assignment or revocation waiting: an assigned partition i
 * starts at offsets[i] (< 0: the group's committed offset, else `start`;
 * SR_KAFKA_LATER: not read until sr_kafka_source_assign_late).
 * Returns 0 (also when none waits), SR_EINVAL for another kind of source,
 * or SR_EIO when librdkafka refuses it (logged). */
int sr_kafka_source_complete(sr_source_t *s, const int64_t *offsets, size_t n);

#define SR_KAFKA_LATER (-2) /* an offset for sr_kafka_source_complete */

/* Starts reading a partition the group assigned and the session put off
 * (its task was locked by its previous owner), at offset (< 0: the
 * group's committed one). Returns 0, SR_EBUSY while a rebalance waits
 * (try again after it), SR_EINVAL, SR_ENOMEM or SR_EIO (logged). */
int sr_kafka_source_assign_late(sr_source_t *s, const char *topic, int32_t partition, int64_t offset);

/* -- The sink (to_kafka) -- */

typedef struct sr_kafka_sink sr_kafka_sink_t;

/* A producer to topic with the idempotent producer on; kv holds nkv pairs
 * of librdkafka properties (kv[2i] = kv[2i+1]) applied after streamrun's
 * defaults. Returns it (free with sr_kafka_sink_free), or NULL with a
 * message in err. */
sr_kafka_sink_t *sr_kafka_sink_new(const char *brokers, const char *topic, const char *const *kv, size_t nkv,
                                   char *err, size_t errlen);
void sr_kafka_sink_free(sr_kafka_sink_t *k);

/* Queues one message (key NULL: none), numbered id for the delivery
 * report; waits while the producer's queue is full. Returns 0, or SR_EIO
 * with a message in err (the message was not queued). */
int sr_kafka_sink_send(sr_kafka_sink_t *k, const char *key, size_t klen, const char *val, size_t vlen,
                       int64_t id, char *err, size_t errlen);

/* Waits up to timeout_ms for every queued message's delivery. Returns 0
 * when all were delivered, the number of messages whose delivery failed
 * (their ids: sr_kafka_sink_failed), or SR_EIO when some are still in
 * flight at the timeout; err says what went wrong. Failures are forgotten
 * by the next flush. */
int sr_kafka_sink_flush(sr_kafka_sink_t *k, int timeout_ms, char *err, size_t errlen);

/* The id of the i-th message whose delivery failed since the last flush
 * began, or -1 past the last. */
int64_t sr_kafka_sink_failed(const sr_kafka_sink_t *k, size_t i);

/* Messages queued and not yet delivered or failed. */
int sr_kafka_sink_in_flight(const sr_kafka_sink_t *k);

#endif
