/* sr_source_kafka: kafka, a consumer in a group reading topics through
 * librdkafka, polled from the event loop without blocking it; unbounded. */

/* librdkafka signals its consumer queue's empty -> non-empty transitions
 * on a pipe the loop watches; an idle watcher then drains the queue while
 * the batch has room (a timer serves callbacks in any case). Offsets are
 * streamrun's: auto-commit and offset storing are off, each partition's
 * next offset is kept here and checkpointed by the session, which commits
 * it to the group once the checkpoint is written. A partition the group
 * assigns starts at the offset known here (a checkpoint's, or where reading
 * got to), else at the group's committed offset, else at `start`. Client
 * errors (broker down, unknown topic, authentication) are logged once per
 * change and retried by librdkafka; the job waits. For the lag metrics,
 * each partition's watermarks are librdkafka's cached ones; a partition not
 * read yet stands at its resume offset, else at `start`.
 *
 * A stop is bounded (SR_KAFKA_STOP_MS): the last commits are waited for
 * briefly; the consumer unsubscribes and answers the revocation while it
 * is not closing yet, if that comes soon (librdkafka before 2.4 waits
 * forever in its close for an assignment that arrives meanwhile,
 * librdkafka#4527; a rebalance in progress puts the revocation off), then
 * closes through a queue polled until a deadline, and the handle is torn
 * down by a thread waited for until another. What is not done in time is
 * logged and left to finish on its own (or to the process's exit):
 * offsets are the checkpoints', so nothing is lost, and the group moves
 * the partitions after session.timeout.ms at the latest. */
#include "sr_alloc.h"
#include "sr_deadletter.h"
#include "sr_error.h"
#include "sr_kafka.h"
#include "sr_source.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SR_KAFKA_TICK 0.2      /* seconds between polls when no event comes */
#define SR_KAFKA_PER_PASS 4096 /* messages per idle pass, so signals get a turn */
/* A stop takes at most SR_KAFKA_STOP_MS from its start: the last commits
 * answered by SR_KAFKA_COMMIT_MS, the revocation asked by unsubscribing
 * answered by SR_KAFKA_REVOKE_MS (a rebalance in progress puts it off),
 * the close over by SR_KAFKA_LEAVE_MS, the handle torn down in what
 * remains. */
#define SR_KAFKA_STOP_MS 5000
#define SR_KAFKA_COMMIT_MS 1500
#define SR_KAFKA_REVOKE_MS 2500
#define SR_KAFKA_LEAVE_MS 4500

typedef struct sr__ktp {
    char *topic;       /* owned */
    int32_t partition;
    int64_t next;      /* offset after the last record delivered; -1 none */
    int64_t committed; /* the offset committed to the group (acknowledged); -1 none */
    int assigned;      /* its records are delivered */
    int held;          /* in librdkafka's assignment (assigned by us) */
} sr__ktp_t;

typedef struct sr__kafka {
    sr_source_t *src;        /* the source (librdkafka's opaque is this struct) */
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the consumer queue (everything is forwarded to it) */
    int pipe[2];             /* librdkafka writes to [1] when the queue fills */
    ev_io io;
    ev_idle reader;
    ev_timer tick;
    sr__ktp_t *tps;          /* owned: every partition seen or resumed */
    size_t ntps, cap;
    size_t last;             /* index of the partition of the last message */
    size_t max_line;
    char *scratch;           /* owned: header + key + value of one record */
    size_t scratch_cap;
    char last_error[512];    /* the last error logged, so it is not repeated */
    int commits;             /* offset commits sent and not answered yet */
    int debug;               /* config has librdkafka's `debug`: log it all */
    int defer;               /* tasks: assignments and revocations wait for
                                the session (sr_kafka_source_complete) */
    rd_kafka_topic_partition_list_t *pending; /* owned: what waits */
    int pending_assign;      /* 1: pending is an assignment; 0: a revocation */
    int earliest;            /* start = "earliest" */
    int pending_lost;        /* the revocation is of a lost assignment */
    int sticky;              /* a sticky assignor (cooperative-sticky, sticky) */
    int ever_assigned;       /* an assignment came (even of no partition) */
    pthread_mutex_t mu;      /* the teardown thread's: destroyed, cv */
    pthread_cond_t cv;
    int destroyed;           /* the teardown thread is done with rk */
    int orphan;              /* the stop gave up waiting: the thread frees k */
} sr__kafka_t;

/* -- Partitions -- */

/* The index of topic/partition in the table, added (next = -1) if new;
 * -1 when out of memory. */
static long sr__kafka_tp(sr__kafka_t *k, const char *topic, int32_t partition)
{
    if (k->last < k->ntps && k->tps[k->last].partition == partition && !strcmp(k->tps[k->last].topic, topic))
        return (long)k->last;
    for (size_t i = 0; i < k->ntps; i++)
        if (k->tps[i].partition == partition && !strcmp(k->tps[i].topic, topic)) return (long)(k->last = i);
    if (k->ntps == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        sr__ktp_t *t = sr_realloc(k->tps, cap * sizeof(*t));
        if (!t) return -1;
        k->tps = t;
        k->cap = cap;
    }
    char *name = sr_strdup(topic);
    if (!name) return -1;
    k->tps[k->ntps] = (sr__ktp_t){.topic = name, .partition = partition, .next = -1, .committed = -1};
    return (long)(k->last = k->ntps++);
}

/* Logs a client error unless it is the one logged last. */
static void sr__kafka_error(sr_source_t *s, const char *what, const char *reason)
{
    sr__kafka_t *k = s->impl;
    if (strstr(reason, "identical error(s) suppressed")) return; /* a repeat, said already */
    char msg[sizeof(k->last_error)];
    snprintf(msg, sizeof(msg), "%s: %s", what, reason);
    if (!strcmp(msg, k->last_error)) return;
    snprintf(k->last_error, sizeof(k->last_error), "%s", msg);
    sr__source_log(s, "kafka: %s (%s)", msg,
                   !strncmp(msg, "offset commit", 13) ? "the next checkpoint commits again"
                                                      : "retrying; the job waits for it");
}

/* -- librdkafka callbacks (run on the loop's thread, from the poll) -- */

static void sr__kafka_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    sr_source_t *s = ((sr__kafka_t *)opaque)->src;
    sr__kafka_error(s, rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void sr__kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* From librdkafka's threads; only what is critical (errors come
     * through the error callback), or everything when config asks for
     * librdkafka's debug contexts. */
    const sr__kafka_t *k = rd_kafka_opaque(rk);
    if (level <= (k && k->debug ? 7 : 2)) fprintf(stderr, "streamrun: kafka %s: %s: %s\n", rd_kafka_name(rk), fac, buf);
}

static void sr__kafka_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                                void *opaque)
{
    (void)rk;
    sr__kafka_t *k = opaque;
    sr_source_t *s = k->src;
    if (k->commits > 0) k->commits--;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        sr__kafka_error(s, "offset commit", rd_kafka_err2str(err));
        return;
    }
    for (int i = 0; offsets && i < offsets->cnt; i++)
        if (offsets->elems[i].err) {
            sr__kafka_error(s, "offset commit", rd_kafka_err2str(offsets->elems[i].err));
            return;
        }
    /* Acknowledged: the lag metrics show it. */
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        long t = sr__kafka_tp(k, offsets->elems[i].topic, offsets->elems[i].partition);
        if (t >= 0 && offsets->elems[i].offset >= 0) k->tps[t].committed = offsets->elems[i].offset;
    }
}

static void sr__kafka_list_parts(char *buf, size_t len, const rd_kafka_topic_partition_list_t *parts)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < parts->cnt && used + 1 < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%s[%d]", i ? " " : "", parts->elems[i].topic,
                         (int)parts->elems[i].partition);
        if (n < 0) break;
        used += (size_t)n;
    }
}

/* The group assigns or revokes partitions: assigned ones start at the
 * offset known here (else the committed one, else `start`). */
static void sr__kafka_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                   rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    sr__kafka_t *k = opaque;
    sr_source_t *s = k->src;
    int cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    int assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    if (assign) k->ever_assigned = 1;
    for (int i = 0; i < parts->cnt; i++) {
        long t = sr__kafka_tp(k, parts->elems[i].topic, parts->elems[i].partition);
        if (t < 0) continue;
        k->tps[t].assigned = assign;
        if (assign && k->tps[t].next >= 0) parts->elems[i].offset = k->tps[t].next;
    }
    char list[512];
    sr__kafka_list_parts(list, sizeof(list), parts);
    sr__source_log(s, "kafka: %s %d partitions: %s", assign ? "assigned" : "revoked", parts->cnt, list);
    if (k->defer) {
        /* The session restores (or checkpoints) the partitions' tasks at
         * the batch boundary, then completes this; the group waits. A
         * revoked partition's records are not delivered meanwhile. */
        if (k->pending) rd_kafka_topic_partition_list_destroy(k->pending);
        k->pending = rd_kafka_topic_partition_list_copy(parts);
        k->pending_assign = assign;
        /* Lost (the group dropped this member: session timeout, fenced
         * generation): the partitions are someone else's already. */
        k->pending_lost = !assign && rd_kafka_assignment_lost(rk);
        if (k->pending_lost)
            for (int i = 0; i < parts->cnt; i++) {
                long t = sr__kafka_tp(k, parts->elems[i].topic, parts->elems[i].partition);
                if (t >= 0) k->tps[t].assigned = 0;
            }
        if (assign)
            for (int i = 0; i < parts->cnt; i++) {
                long t = sr__kafka_tp(k, parts->elems[i].topic, parts->elems[i].partition);
                if (t >= 0) k->tps[t].assigned = 0;
            }
        return;
    }
    /* Only what librdkafka holds is unassigned: a partition a task put off
     * (held 0: its previous owner still locked it when a stop came) is in
     * no assignment, and one such makes librdkafka refuse the whole list. */
    rd_kafka_topic_partition_list_t *told = parts;
    if (cooperative && !assign && (told = rd_kafka_topic_partition_list_new(parts->cnt > 0 ? parts->cnt : 1)))
        for (int i = 0; i < parts->cnt; i++) {
            long t = sr__kafka_tp(k, parts->elems[i].topic, parts->elems[i].partition);
            if (t < 0 || k->tps[t].held)
                rd_kafka_topic_partition_list_add(told, parts->elems[i].topic, parts->elems[i].partition);
        }
    if (!told) told = parts;
    for (int i = 0; i < parts->cnt; i++) {
        long t = sr__kafka_tp(k, parts->elems[i].topic, parts->elems[i].partition);
        if (t >= 0) k->tps[t].held = assign;
    }
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t r = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (cooperative) e = assign ? rd_kafka_incremental_assign(rk, told) : rd_kafka_incremental_unassign(rk, told);
    else r = rd_kafka_assign(rk, assign ? parts : NULL);
    if (told != parts) rd_kafka_topic_partition_list_destroy(told);
    if (e) {
        sr__kafka_error(s, "assignment", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (r) {
        sr__kafka_error(s, "assignment", rd_kafka_err2str(r));
    }
    k->last_error[0] = '\0';
}

/* -- Reading -- */

/* Sends message m to the dead letters, naming its partition. */
static void sr__kafka_dead(sr_source_t *s, const rd_kafka_message_t *m, const char *reason)
{
    s->dead_letters++;
    sr_deadletter_write_at(s->ingest->dead, s->name, m->partition, m->offset, reason, m->payload, m->len);
}

/* Appends one message to the batch (a dead letter when too long). */
static void sr__kafka_deliver(sr_source_t *s, rd_kafka_message_t *m)
{
    sr__kafka_t *k = s->impl;
    const char *topic = rd_kafka_topic_name(m->rkt);
    long t = sr__kafka_tp(k, topic, m->partition);
    if (t < 0) {
        sr__kafka_dead(s, m, sr_strerror(SR_ENOMEM));
        return;
    }
    sr__ktp_t *tp = &k->tps[t];
    if (k->defer && !tp->assigned) return; /* revoked: its next owner reads it */
    /* Behind where it stood: the offset it resumed at was out of range
     * (the log was truncated or the topic made anew) and `start` applied. */
    if (tp->next >= 0 && m->offset < tp->next)
        sr__source_log(s, "kafka: %s[%d] resumes at offset %lld, not %lld (out of range: `start` applies)", topic,
                       (int)m->partition, (long long)m->offset, (long long)tp->next);
    tp->next = m->offset + 1;
    if (k->last_error[0]) {
        sr__source_log(s, "kafka: reading again");
        k->last_error[0] = '\0';
    }
    if (m->len > k->max_line) {
        sr__kafka_dead(s, m, sr_strerror(SR_ETOOLONG));
        return;
    }
    size_t klen = m->key ? m->key_len : 0;
    size_t need = sizeof(sr_kafka_record_t) + klen + m->len;
    if (need > k->scratch_cap) {
        char *p = sr_realloc(k->scratch, need);
        if (!p) {
            sr__kafka_dead(s, m, sr_strerror(SR_ENOMEM));
            return;
        }
        k->scratch = p;
        k->scratch_cap = need;
    }
    sr_kafka_record_t h = {.partition_index = (int32_t)t, .partition = m->partition,
                           .keylen = m->key ? (int32_t)m->key_len : -1};
    memcpy(k->scratch, &h, sizeof(h));
    if (klen) memcpy(k->scratch + sizeof(h), m->key, klen);
    if (m->len) memcpy(k->scratch + sizeof(h) + klen, m->payload, m->len);
    sr__source_line(s, k->scratch, need, m->offset, 0);
}

static void sr__kafka_drain_pipe(sr__kafka_t *k)
{
    char buf[256];
    while (read(k->pipe[0], buf, sizeof(buf)) > 0) {}
}

static void sr__kafka_on_idle(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__kafka_t *k = s->impl;
    for (int i = 0; i < SR_KAFKA_PER_PASS; i++) {
        if (sr__source_waits(s)) return; /* until the batch is released, or the hold ends */
        if (i == 0) sr__kafka_drain_pipe(k);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, 0);
        if (!m) {
            ev_idle_stop(ev, w);
            return;
        }
        if (!m->err) {
            sr__kafka_deliver(s, m);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            char what[300];
            snprintf(what, sizeof(what), "%s%s", m->rkt ? "topic " : "consumer",
                     m->rkt ? rd_kafka_topic_name(m->rkt) : "");
            sr__kafka_error(s, what, rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
}

static void sr__kafka_on_io(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__kafka_t *k = s->impl;
    sr__kafka_drain_pipe(k);
    ev_idle_start(ev, &k->reader);
}

static void sr__kafka_on_tick(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__kafka_t *k = s->impl;
    ev_idle_start(ev, &k->reader);
}

/* -- Registration -- */

static int sr__kafka_set(rd_kafka_conf_t *conf, sr_source_t *s, const char *name, const char *value)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK) return 0;
    snprintf(s->err, sizeof(s->err), "kafka config %.60s=%.60s: %.110s", name, value, errstr);
    return -1;
}

/* Frees what k owns, not k itself (see sr__kafka_start). */
static void sr__kafka_release(sr__kafka_t *k)
{
    if (k->pending) rd_kafka_topic_partition_list_destroy(k->pending);
    k->pending = NULL;
    for (size_t i = 0; i < k->ntps; i++) sr_free(k->tps[i].topic);
    sr_free(k->tps);
    k->tps = NULL;
    k->ntps = k->cap = 0;
    sr_free(k->scratch);
    k->scratch = NULL;
    if (k->pipe[0] >= 0) close(k->pipe[0]);
    if (k->pipe[1] >= 0) close(k->pipe[1]);
    k->pipe[0] = k->pipe[1] = -1;
}

/* Settings (kv): brokers, topic (one pair per topic), group, start
 * ("earliest" | "latest"), config:<property> (passed through),
 * offset:<topic>:<partition> (a checkpoint's offset to resume at). */
static int sr__kafka_start(sr_source_t *s, const sr_source_opts_t *o)
{
    char errstr[512];
    const char *brokers = NULL, *group = NULL, *start = "earliest";
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(4);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = SR_EINVAL;
    /* libc's, not sr_alloc's: a teardown given up on (sr__kafka_stop)
     * frees it from its own thread, possibly after the job's allocations
     * were counted for leaks. */
    sr__kafka_t *k = calloc(1, sizeof(*k));
    if (!k) { rc = SR_ENOMEM; goto fail; }
    k->pipe[0] = k->pipe[1] = -1;
    k->src = s;
    k->max_line = o->max_line ? o->max_line : 1024 * 1024;
    k->last = (size_t)-1;
    s->impl = k;
    for (size_t i = 0; i + 1 < 2 * o->nkv; i += 2) {
        const char *key = o->kv[i], *v = o->kv[i + 1];
        if (!strcmp(key, "brokers")) brokers = v;
        else if (!strcmp(key, "group")) group = v;
        else if (!strcmp(key, "start")) start = v;
        else if (!strcmp(key, "tasks")) k->defer = !strcmp(v, "1");
        else if (!strcmp(key, "topic")) rd_kafka_topic_partition_list_add(topics, v, RD_KAFKA_PARTITION_UA);
        else if (!strncmp(key, "offset:", 7)) {
            const char *colon = strrchr(key + 7, ':');
            if (!colon || colon == key + 7) continue;
            char topic[256];
            size_t len = (size_t)(colon - (key + 7));
            if (len >= sizeof(topic)) continue;
            memcpy(topic, key + 7, len);
            topic[len] = '\0';
            long t = sr__kafka_tp(k, topic, (int32_t)strtol(colon + 1, NULL, 10));
            if (t < 0) { rc = SR_ENOMEM; goto fail; }
            k->tps[t].next = strtoll(v, NULL, 10);
        }
    }
    if (!brokers || !*brokers || topics->cnt == 0 || !group || !*group) {
        snprintf(s->err, sizeof(s->err), "kafka needs brokers, a topic and a group");
        goto fail;
    }
    if (strcmp(start, "earliest") && strcmp(start, "latest")) {
        snprintf(s->err, sizeof(s->err), "kafka: start must be \"earliest\" or \"latest\", got %s", start);
        goto fail;
    }
    k->earliest = !strcmp(start, "earliest");
    if (sr__kafka_set(conf, s, "bootstrap.servers", brokers) || sr__kafka_set(conf, s, "group.id", group) ||
        sr__kafka_set(conf, s, "auto.offset.reset", start) ||
        sr__kafka_set(conf, s, "enable.auto.commit", "false") ||
        sr__kafka_set(conf, s, "enable.auto.offset.store", "false") ||
        sr__kafka_set(conf, s, "client.id", "streamrun"))
        goto fail;
    for (size_t i = 0; i + 1 < 2 * o->nkv; i += 2)
        if (!strncmp(o->kv[i], "config:", 7)) {
            if (sr__kafka_set(conf, s, o->kv[i] + 7, o->kv[i + 1])) goto fail;
            if (!strcmp(o->kv[i] + 7, "debug")) k->debug = 1;
        }
    char strategy[128];
    size_t slen = sizeof(strategy);
    k->sticky = rd_kafka_conf_get(conf, "partition.assignment.strategy", strategy, &slen) == RD_KAFKA_CONF_OK &&
                strstr(strategy, "sticky");
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_error_cb(conf, sr__kafka_on_error);
    rd_kafka_conf_set_log_cb(conf, sr__kafka_on_log);
    rd_kafka_conf_set_rebalance_cb(conf, sr__kafka_on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, sr__kafka_on_commit);
    if (pipe2(k->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(s->err, sizeof(s->err), "kafka: pipe: %s", strerror(errno));
        rc = SR_EIO;
        goto fail;
    }
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!k->rk) {
        snprintf(s->err, sizeof(s->err), "kafka: %.240s", errstr);
        goto fail;
    }
    conf = NULL; /* the handle owns it */
    rd_kafka_poll_set_consumer(k->rk);
    k->queue = rd_kafka_queue_get_consumer(k->rk);
    rd_kafka_queue_io_event_enable(k->queue, k->pipe[1], "1", 1);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(k->rk, topics);
    if (e) {
        snprintf(s->err, sizeof(s->err), "kafka: subscribe: %s", rd_kafka_err2str(e));
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(topics);
    ev_io_init(&k->io, sr__kafka_on_io, k->pipe[0], EV_READ);
    k->io.data = s;
    ev_idle_init(&k->reader, sr__kafka_on_idle);
    k->reader.data = s;
    ev_timer_init(&k->tick, sr__kafka_on_tick, SR_KAFKA_TICK, SR_KAFKA_TICK);
    k->tick.data = s;
    ev_io_start(s->ev, &k->io);
    ev_timer_start(s->ev, &k->tick);
    ev_idle_start(s->ev, &k->reader);
    return SR_OK;
fail:
    rd_kafka_topic_partition_list_destroy(topics);
    if (conf) rd_kafka_conf_destroy(conf);
    if (k) {
        if (k->queue) rd_kafka_queue_destroy(k->queue);
        if (k->rk) rd_kafka_destroy(k->rk);
        sr__kafka_release(k);
        free(k);
    }
    s->impl = NULL;
    return rc;
}

/* -- Stopping, bounded -- */

static int64_t sr__kafka_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline (0 when past it), at most cap. */
static int sr__kafka_left(int64_t deadline, int cap)
{
    int64_t left = deadline - sr__kafka_now_ms();
    return left <= 0 ? 0 : left > cap ? cap : (int)left;
}

/* The number of partitions librdkafka's assignment holds; -1 unknown. */
static int sr__kafka_held(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *held = NULL;
    if (rd_kafka_assignment(rk, &held) || !held) return -1;
    int n = held->cnt;
    rd_kafka_topic_partition_list_destroy(held);
    return n;
}

/* Leaves the group: unsubscribes and answers the revocation until revoked
 * (the consumer queue served with callbacks, k->defer 0), then closes
 * through a queue of its own served until the close is over or deadline.
 * Returns 1 when the consumer is closed; 0 with what it still waited for
 * in why. */
static int sr__kafka_leave(sr__kafka_t *k, int64_t revoked, int64_t deadline, char *why, size_t len)
{
    rd_kafka_resp_err_t e = rd_kafka_unsubscribe(k->rk);
    if (e) snprintf(why, len, "unsubscribe: %s", rd_kafka_err2str(e));
    int held = sr__kafka_held(k->rk);
    for (int ms; held > 0 && (ms = sr__kafka_left(revoked, 50)) > 0; held = sr__kafka_held(k->rk)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, ms);
        if (m) rd_kafka_message_destroy(m);
    }
    rd_kafka_queue_t *cq = rd_kafka_queue_new(k->rk);
    rd_kafka_error_t *err = rd_kafka_consumer_close_queue(k->rk, cq);
    if (err) {
        snprintf(why, len, "close: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        rd_kafka_queue_destroy(cq);
        return 0;
    }
    int closed;
    for (int ms; !(closed = rd_kafka_consumer_closed(k->rk)) && (ms = sr__kafka_left(deadline, 50)) > 0;) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(cq, ms);
        if (!ev) continue;
        /* What the group still revokes (or, closing, assigns: answered
         * as librdkafka asks, it unassigns). */
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
            sr__kafka_on_rebalance(k->rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), k);
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(cq);
    if (!closed) {
        held = sr__kafka_held(k->rk);
        snprintf(why, len, "its close did not finish (%d partitions held%s%s)", held < 0 ? 0 : held,
                 rd_kafka_assignment_lost(k->rk) ? ", the assignment lost" : "",
                 k->commits ? ", commits unanswered" : "");
    }
    return closed;
}

static void *sr__kafka_teardown(void *arg)
{
    sr__kafka_t *k = arg;
    rd_kafka_destroy_flags(k->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    pthread_mutex_lock(&k->mu);
    k->destroyed = 1;
    int orphan = k->orphan;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    if (orphan) { /* the source stopped without it: k is this thread's */
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        free(k);
    }
    return NULL;
}

/* Destroys the handle (its consumer closed or given up on) on a thread
 * waited for until deadline. Returns 1 when done, 0 when the thread still
 * runs: k is then the thread's, which frees it if it ever finishes (the
 * process's exit ends it otherwise). */
static int sr__kafka_destroy(sr__kafka_t *k, int64_t deadline)
{
    pthread_condattr_t ca;
    pthread_t th;
    if (pthread_condattr_init(&ca)) return 0;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int ok = !pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!ok) return 0;
    if (pthread_mutex_init(&k->mu, NULL)) {
        pthread_cond_destroy(&k->cv);
        return 0;
    }
    if (pthread_create(&th, NULL, sr__kafka_teardown, k)) {
        /* No thread: the handle is destroyed here, unbounded (out of
         * threads, the process has worse problems). */
        rd_kafka_destroy_flags(k->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        k->destroyed = 1;
    } else {
        struct timespec until = {.tv_sec = (time_t)(deadline / 1000), .tv_nsec = (long)(deadline % 1000) * 1000000};
        pthread_mutex_lock(&k->mu);
        while (!k->destroyed && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0) {}
        int done = k->destroyed;
        if (!done) k->orphan = 1;
        pthread_mutex_unlock(&k->mu);
        if (!done) {
            pthread_detach(th);
            return 0;
        }
        pthread_join(th, NULL);
    }
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    return 1;
}

static void sr__kafka_stop(sr_source_t *s)
{
    sr__kafka_t *k = s->impl;
    if (!k) return;
    int64_t t0 = sr__kafka_now_ms();
    ev_idle_stop(s->ev, &k->reader);
    ev_timer_stop(s->ev, &k->tick);
    ev_io_stop(s->ev, &k->io);
    rd_kafka_queue_io_event_enable(k->queue, -1, NULL, 0);
    /* The last checkpoint's commit reaches the group before we leave it
     * (what is read meanwhile is in no checkpoint: dropped). */
    for (int ms; k->commits > 0 && (ms = sr__kafka_left(t0 + SR_KAFKA_COMMIT_MS, 100)) > 0;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, ms);
        if (m) rd_kafka_message_destroy(m);
    }
    /* A rebalance still waiting (the job stopped before its batch
     * boundary) is completed first: librdkafka's close waits for the
     * assign or unassign it asked for. Nothing is read any more, and no
     * task was opened for what it assigns. */
    if (k->pending) sr_kafka_source_complete(s, NULL, 0);
    /* Leaves the group now (revocations answered at once: the session
     * checkpointed its tasks), so other members take the partitions over
     * at once. */
    k->defer = 0;
    char why[200] = "";
    int closed = sr__kafka_leave(k, t0 + SR_KAFKA_REVOKE_MS, t0 + SR_KAFKA_LEAVE_MS, why, sizeof(why));
    if (!closed)
        sr__source_log(s, "kafka: not waiting longer than %d ms to leave the group: %s; the partitions move to other "
                          "members after session.timeout.ms, and their offsets are in the checkpoints",
                       SR_KAFKA_LEAVE_MS, why);
    rd_kafka_queue_destroy(k->queue);
    k->queue = NULL;
    k->src = NULL; /* the teardown may outlive the source */
    sr__kafka_release(k); /* no callback comes any more but the log's */
    s->impl = NULL;
    if (k->sticky && !k->ever_assigned) {
        /* librdkafka 2.0's sticky assignor aborts the process when the
         * handle of a member that joined but was never assigned anything
         * is destroyed (its state is NULL, librdkafka#4312): that handle,
         * closed, is left to the process's exit, with k. */
        return;
    }
    if (!sr__kafka_destroy(k, t0 + SR_KAFKA_STOP_MS)) {
        sr__source_log(s, "kafka: the client did not shut down within %d ms of the stop: left to finish on its own",
                       SR_KAFKA_STOP_MS);
        return;
    }
    free(k);
}

const sr_source_type_t sr_source_kafka = {
    .kind = "kafka",
    /* Kafka keeps the records: a restart reads them again from the
     * checkpointed offsets, nothing goes to the write-ahead log. */
    .traits = {.bounded = 0, .stored = 0, .logged = 0, .rereads = 0, .resumes = 1, .file_list = 0},
    .start = sr__kafka_start, .stop = sr__kafka_stop,
};

/* -- Partitions and offsets, for the session -- */

int sr_kafka_source_partition(sr_source_t *s, size_t i, const char **topic, int32_t *partition,
                              int64_t *next, int *assigned)
{
    if (!s || s->type != &sr_source_kafka || !s->impl) return SR_EINVAL;
    sr__kafka_t *k = s->impl;
    if (i >= k->ntps) return SR_ENOENT;
    *topic = k->tps[i].topic;
    *partition = k->tps[i].partition;
    *next = k->tps[i].next;
    *assigned = k->tps[i].assigned;
    return SR_OK;
}

int sr_kafka_source_lag(sr_source_t *s, size_t i, sr_kafka_lag_t *out)
{
    if (!s || s->type != &sr_source_kafka || !s->impl) return SR_EINVAL;
    sr__kafka_t *k = s->impl;
    if (i >= k->ntps) return SR_ENOENT;
    const sr__ktp_t *tp = &k->tps[i];
    int64_t low = -1, high = -1;
    /* librdkafka's cached watermarks (the high one comes with every fetch
     * response): no request to a broker, nothing waits. */
    if (rd_kafka_get_watermark_offsets(k->rk, tp->topic, tp->partition, &low, &high) != RD_KAFKA_RESP_ERR_NO_ERROR)
        low = high = -1;
    if (low < 0) low = -1;
    if (high < 0) high = -1;
    /* Nothing read from it yet: reading starts at the offset committed or
     * resumed at, else at `start`. */
    int64_t at = tp->next;
    if (at < 0 && tp->committed >= 0) at = tp->committed;
    else if (at < 0 && k->earliest) at = low;
    out->position = at;
    out->committed = tp->committed;
    out->low = low;
    out->high = high;
    if (high >= 0 && at >= 0) out->lag = high > at ? high - at : 0;
    else if (high >= 0 && low == high) out->lag = 0; /* nothing in the partition to read */
    else out->lag = -1;
    return SR_OK;
}

int sr_kafka_source_commit(sr_source_t *s, const char *const *topics, const int32_t *partitions,
                           const int64_t *offsets, size_t n)
{
    if (!s || s->type != &sr_source_kafka || !s->impl) return SR_EINVAL;
    sr__kafka_t *k = s->impl;
    /* Not in the middle of a rebalance: a commit with the old generation
     * would make librdkafka drop the whole assignment. The next checkpoint
     * commits again. */
    if (n == 0 || k->pending) return SR_OK;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    if (!list) return SR_ENOMEM;
    /* Only the group's member that owns a partition may commit for it. */
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < k->ntps; t++)
            if (k->tps[t].assigned && k->tps[t].partition == partitions[i] && !strcmp(k->tps[t].topic, topics[i]))
                rd_kafka_topic_partition_list_add(list, topics[i], partitions[i])->offset = offsets[i];
    if (list->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(list);
        return SR_OK;
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, list, 1);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) sr__kafka_error(s, "offset commit", rd_kafka_err2str(e));
    else k->commits++;
    return SR_OK;
}

int sr_kafka_source_pending(sr_source_t *s, size_t i, const char **topic, int32_t *partition)
{
    if (!s || s->type != &sr_source_kafka || !s->impl) return SR_EINVAL;
    sr__kafka_t *k = s->impl;
    if (!k->pending) return 0;
    /* An empty list waits too: until it is completed, the group's
     * rebalance is not over and nothing is fetched or committed. */
    if (i >= (size_t)k->pending->cnt) {
        *topic = NULL;
        *partition = -1;
    } else {
        *topic = k->pending->elems[i].topic;
        *partition = k->pending->elems[i].partition;
    }
    return k->pending_assign ? 1 : k->pending_lost ? 3 : 2;
}

/* Tells librdkafka to add (assign) or remove the partitions in told:
 * incrementally under the cooperative protocol, else the whole held
 * assignment anew. Returns 0 or SR_EIO (logged). */
static int sr__kafka_apply(sr_source_t *s, rd_kafka_topic_partition_list_t *told, int assign)
{
    sr__kafka_t *k = s->impl;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t r = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!strcmp(rd_kafka_rebalance_protocol(k->rk), "COOPERATIVE")) {
        e = assign ? rd_kafka_incremental_assign(k->rk, told) : rd_kafka_incremental_unassign(k->rk, told);
    } else {
        rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_new((int)k->ntps + 1);
        if (!all) return SR_ENOMEM;
        for (size_t t = 0; t < k->ntps; t++)
            if (k->tps[t].held)
                rd_kafka_topic_partition_list_add(all, k->tps[t].topic, k->tps[t].partition)->offset =
                    k->tps[t].next >= 0 ? k->tps[t].next : RD_KAFKA_OFFSET_INVALID;
        r = rd_kafka_assign(k->rk, all->cnt ? all : NULL);
        rd_kafka_topic_partition_list_destroy(all);
    }
    if (e) {
        sr__kafka_error(s, "assignment", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return SR_EIO;
    }
    if (r) {
        sr__kafka_error(s, "assignment", rd_kafka_err2str(r));
        return SR_EIO;
    }
    return SR_OK;
}

int sr_kafka_source_complete(sr_source_t *s, const int64_t *offsets, size_t n)
{
    if (!s || s->type != &sr_source_kafka || !s->impl) return SR_EINVAL;
    sr__kafka_t *k = s->impl;
    if (!k->pending) return SR_OK;
    rd_kafka_topic_partition_list_t *parts = k->pending;
    int assign = k->pending_assign;
    k->pending = NULL;
    k->pending_lost = 0;
    /* What librdkafka is told: an assigned partition the session put off
     * (SR_KAFKA_LATER) is assigned later by sr_kafka_source_assign_late,
     * and only what it holds is unassigned. */
    rd_kafka_topic_partition_list_t *told = rd_kafka_topic_partition_list_new(parts->cnt > 0 ? parts->cnt : 1);
    if (!told) {
        rd_kafka_topic_partition_list_destroy(parts);
        return SR_ENOMEM;
    }
    for (int i = 0; i < parts->cnt; i++) {
        long t = sr__kafka_tp(k, parts->elems[i].topic, parts->elems[i].partition);
        if (t < 0) continue;
        if (assign) {
            int64_t off = (size_t)i < n ? offsets[i] : -1;
            if (off == SR_KAFKA_LATER) continue;
            if (off >= 0) k->tps[t].next = off;
            rd_kafka_topic_partition_list_add(told, parts->elems[i].topic, parts->elems[i].partition)->offset =
                off >= 0 ? off : RD_KAFKA_OFFSET_INVALID;
            k->tps[t].assigned = 1;
        } else {
            /* Revoked: where it stood is its next owner's to say. */
            if (k->tps[t].held)
                rd_kafka_topic_partition_list_add(told, parts->elems[i].topic, parts->elems[i].partition);
            k->tps[t].next = -1;
            k->tps[t].assigned = 0;
        }
        k->tps[t].held = assign;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    int rc = sr__kafka_apply(s, told, assign);
    rd_kafka_topic_partition_list_destroy(told);
    return rc;
}

int sr_kafka_source_assign_late(sr_source_t *s, const char *topic, int32_t partition, int64_t offset)
{
    if (!s || s->type != &sr_source_kafka || !s->impl || !topic) return SR_EINVAL;
    sr__kafka_t *k = s->impl;
    if (k->pending) return SR_EBUSY;
    long t = sr__kafka_tp(k, topic, partition);
    if (t < 0) return SR_ENOMEM;
    rd_kafka_topic_partition_list_t *told = rd_kafka_topic_partition_list_new(1);
    if (!told) return SR_ENOMEM;
    rd_kafka_topic_partition_list_add(told, topic, partition)->offset = offset >= 0 ? offset : RD_KAFKA_OFFSET_INVALID;
    if (offset >= 0) k->tps[t].next = offset;
    k->tps[t].assigned = 1;
    k->tps[t].held = 1;
    int rc = sr__kafka_apply(s, told, 1);
    rd_kafka_topic_partition_list_destroy(told);
    return rc;
}
