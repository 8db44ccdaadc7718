/* test_kafka: the Kafka sink and source against librdkafka's mock cluster,
 * in process: messages produced by sr_kafka_sink come back through the kafka
 * source on the real event loop (batches run until they arrive, a bounded
 * number of them), framed with their partition and key; offsets per
 * partition; bad settings refused with a message; a producer whose broker
 * is down reports messages in flight; with tasks=1, every rebalance waits
 * for its completion, an assignment of no partition too; a stop is bounded
 * with the broker gone and in the middle of a rebalance. No allocation is
 * left behind. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_kafka.h"
#include "sr_loop.h"
#include "sr_source.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <time.h>

#define BATCH_MS 50
#define MAX_BATCHES 400 /* 20 s: the mock's group join takes about 3 s */
#define N 60

typedef struct fixture {
    char dir[256], dead[512];
    size_t alloc_before;
    rd_kafka_t *host; /* hosts the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    const char *bootstrap;
    sr_loop_t *l;
    int seen[N];      /* times message i came back */
    int got;
    int64_t offsets;  /* sum of the records' offsets + 1 per partition's last */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->alloc_before = sr_alloc_used();
    sr_test_tmpdir(f->dir, sizeof(f->dir));
    sr_test_path(f->dead, sizeof(f->dead), f->dir, "dead.jsonl");
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "t", 4, 1), 0);
    f->bootstrap = rd_kafka_mock_cluster_bootstraps(f->mc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sr_loop_free(f->l);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    sr_test_rmtree(f->dir);
    size_t leaked = sr_alloc_used() - f->alloc_before;
    free(f);
    assert_int_equal(leaked, 0);
    return 0;
}

static void new_loop(fixture_t *f)
{
    char err[256] = "";
    sr_loop_opts_t o = {.batch_ms = BATCH_MS, .max_batch_records = 1000, .dead_letter_path = f->dead};
    f->l = sr_loop_new(&o, err, sizeof(err));
    if (!f->l) fail_msg("sr_loop_new: %s", err);
}

/* Starts a kafka source with settings kv (pairs, NULL-ended); returns its
 * index, or the error with the message in err. */
static int add_kafka(fixture_t *f, const char **kv, char *err, size_t errlen)
{
    size_t n = 0;
    while (kv[2 * n]) n++;
    sr_source_opts_t o = {.kind = "kafka", .name = "in", .kv = kv, .nkv = n};
    return sr_loop_add_source(f->l, &o, err, errlen);
}

/* Runs one batch; records every message that came back. */
static void step(fixture_t *f, int src)
{
    sr_tick_t t;
    assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
    sr_batch_t *b = sr_loop_batch(f->l, src);
    for (size_t j = 0; j < b->n; j++) {
        const char *p = b->data + b->off[j];
        size_t len = b->off[j + 1] - b->off[j];
        sr_kafka_record_t h;
        assert_true(len >= sizeof(h));
        memcpy(&h, p, sizeof(h));
        const char *topic;
        int32_t part;
        int64_t next;
        int assigned;
        assert_int_equal(sr_kafka_source_partition(sr_loop_source(f->l, src), (size_t)h.partition_index, &topic,
                                                   &part, &next, &assigned), 0);
        assert_string_equal(topic, "t");
        assert_int_equal(h.partition, part);
        assert_true(assigned);
        char key[32] = "", val[32] = "";
        assert_true(h.keylen >= 0 && (size_t)h.keylen < sizeof(key));
        memcpy(key, p + sizeof(h), (size_t)h.keylen);
        size_t vlen = len - sizeof(h) - (size_t)h.keylen;
        assert_true(vlen < sizeof(val));
        memcpy(val, p + sizeof(h) + h.keylen, vlen);
        int i = atoi(val + 1);
        assert_true(i >= 0 && i < N);
        char want[32];
        snprintf(want, sizeof(want), "k%d", i % 7);
        assert_string_equal(key, want);
        f->seen[i]++;
        f->got++;
    }
    sr_loop_release(f->l);
}

static void produce(fixture_t *f, int from, int to)
{
    char err[256] = "";
    sr_kafka_sink_t *k = sr_kafka_sink_new(f->bootstrap, "t", NULL, 0, err, sizeof(err));
    if (!k) fail_msg("sr_kafka_sink_new: %s", err);
    for (int i = from; i < to; i++) {
        char key[16], val[16];
        snprintf(key, sizeof(key), "k%d", i % 7);
        snprintf(val, sizeof(val), "v%d", i);
        assert_int_equal(sr_kafka_sink_send(k, key, strlen(key), val, strlen(val), i, err, sizeof(err)), 0);
    }
    int rc = sr_kafka_sink_flush(k, 10000, err, sizeof(err));
    if (rc != 0) fail_msg("flush: %d: %s", rc, err);
    assert_int_equal(sr_kafka_sink_in_flight(k), 0);
    sr_kafka_sink_free(k);
}

static void test_round_trip(void **state)
{
    fixture_t *f = *state;
    produce(f, 0, N);
    new_loop(f);
    char err[256] = "";
    const char *kv[] = {"brokers", f->bootstrap, "topic", "t", "group", "g", "start", "earliest",
                        "config:log_level", "0", NULL};
    int src = add_kafka(f, kv, err, sizeof(err));
    if (src < 0) fail_msg("kafka source: %s", err);
    for (int b = 0; f->got < N && b < MAX_BATCHES; b++) step(f, src);
    assert_int_equal(f->got, N);
    for (int i = 0; i < N; i++) assert_int_equal(f->seen[i], 1);
    /* Where each partition stands adds up to every message. */
    int64_t sum = 0;
    const char *topic;
    int32_t part;
    int64_t next;
    int assigned;
    const char *topics[8];
    int32_t parts[8];
    int64_t offs[8];
    size_t n = 0;
    for (size_t i = 0; sr_kafka_source_partition(sr_loop_source(f->l, src), i, &topic, &part, &next, &assigned) == 0;
         i++) {
        if (next > 0) sum += next;
        topics[n] = topic, parts[n] = part, offs[n] = next > 0 ? next : 0, n++;
    }
    assert_int_equal(sum, N);
    assert_int_equal(sr_kafka_source_commit(sr_loop_source(f->l, src), topics, parts, offs, n), 0);
    step(f, src); /* the commit is answered */
}

static void test_resumes_at_offsets(void **state)
{
    fixture_t *f = *state;
    produce(f, 0, N);
    new_loop(f);
    char err[256] = "";
    /* Every partition resumes past what it holds (a topic made anew): */
    const char *kv[] = {"brokers", f->bootstrap, "topic", "t", "group", "g2", "config:log_level", "0",
                        "offset:t:0", "1000", "offset:t:1", "1000", "offset:t:2", "1000", "offset:t:3", "1000",
                        NULL};
    int src = add_kafka(f, kv, err, sizeof(err));
    assert_true(src >= 0);
    /* out of range, the partitions start at `start` (earliest): all N
     * come back, each once. */
    for (int b = 0; f->got < N && b < MAX_BATCHES; b++) step(f, src);
    assert_int_equal(f->got, N);
    for (int i = 0; i < N; i++) assert_int_equal(f->seen[i], 1);
}

static void test_bad_settings(void **state)
{
    fixture_t *f = *state;
    new_loop(f);
    char err[256] = "";
    const char *none[] = {"topic", "t", NULL};
    assert_int_equal(add_kafka(f, none, err, sizeof(err)), SR_EINVAL);
    assert_non_null(strstr(err, "needs brokers"));
    const char *bad[] = {"brokers", f->bootstrap, "topic", "t", "group", "g", "config:no.such.property", "1", NULL};
    assert_int_equal(add_kafka(f, bad, err, sizeof(err)), SR_EINVAL);
    assert_non_null(strstr(err, "no.such.property"));
    const char *start[] = {"brokers", f->bootstrap, "topic", "t", "group", "g", "start", "middle", NULL};
    assert_int_equal(add_kafka(f, start, err, sizeof(err)), SR_EINVAL);
    assert_non_null(strstr(err, "start"));
    char serr[256] = "";
    const char *kv[] = {"no.such.property", "1"};
    assert_null(sr_kafka_sink_new(f->bootstrap, "t", kv, 1, serr, sizeof(serr)));
    assert_non_null(strstr(serr, "no.such.property"));
}

static void test_sink_broker_down(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), 0);
    char err[256] = "";
    sr_kafka_sink_t *k = sr_kafka_sink_new(f->bootstrap, "t", NULL, 0, err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(sr_kafka_sink_send(k, "a", 1, "b", 1, 7, err, sizeof(err)), 0);
    assert_int_equal(sr_kafka_sink_flush(k, 300, err, sizeof(err)), SR_EIO);
    assert_non_null(strstr(err, "in flight"));
    assert_int_equal(sr_kafka_sink_in_flight(k), 1);
    /* Back up: the same message is delivered by the next flush. */
    assert_int_equal(rd_kafka_mock_broker_set_up(f->mc, 1), 0);
    assert_int_equal(sr_kafka_sink_flush(k, 15000, err, sizeof(err)), 0);
    assert_int_equal(sr_kafka_sink_in_flight(k), 0);
    assert_int_equal(sr_kafka_sink_failed(k, 0), -1);
    sr_kafka_sink_free(k);
}

/* Completes the rebalance src waits for, if any, every assigned partition
 * at the group's offset. Returns how many partitions it listed, -1 when
 * none waited. */
static int serve_later(fixture_t *f, int src, int32_t later);

static int serve(fixture_t *f, int src) { return serve_later(f, src, -1); }

/* Completes what waits on src, putting off partition later (its task
 * locked elsewhere). Returns how many partitions, or -1 when none waits. */
static int serve_later(fixture_t *f, int src, int32_t later)
{
    sr_source_t *s = sr_loop_source(f->l, src);
    const char *topic;
    int32_t part;
    int64_t offs[8];
    int n = 0, w = 0;
    for (;; n++) {
        w = sr_kafka_source_pending(s, (size_t)n, &topic, &part);
        if (w <= 0 || !topic) break;
        assert_true(n < 8);
        offs[n] = w == 1 && part == later ? SR_KAFKA_LATER : -1;
    }
    if (n == 0 && w <= 0) return -1;
    assert_int_equal(sr_kafka_source_complete(s, offs, (size_t)n), 0);
    return n;
}

static int assigned_count(fixture_t *f, int src)
{
    const char *topic;
    int32_t part;
    int64_t next;
    int assigned, n = 0;
    for (size_t i = 0; sr_kafka_source_partition(sr_loop_source(f->l, src), i, &topic, &part, &next, &assigned) == 0;
         i++)
        n += assigned;
    return n;
}

static void test_tasks_rebalance(void **state)
{
    fixture_t *f = *state;
    new_loop(f);
    char err[256] = "";
    /* As a job run as tasks sets it (streamrun.kafka). */
    const char *kv[] = {"brokers", f->bootstrap, "topic", "t", "group", "gt", "tasks", "1",
                        "config:log_level", "0", "config:partition.assignment.strategy", "cooperative-sticky",
                        "config:session.timeout.ms", "6000", "config:heartbeat.interval.ms", "500", NULL};
    sr_source_opts_t o = {.kind = "kafka", .name = "a", .kv = kv, .nkv = 8};
    int a = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (a < 0) fail_msg("kafka source: %s", err);
    sr_tick_t t;
    int b = -1, empty = 0;
    for (int i = 0; i < 2 * MAX_BATCHES; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        if (serve(f, a) == 0) empty++;
        if (b >= 0 && serve(f, b) == 0) empty++;
        if (b < 0 && assigned_count(f, a) == 4) {
            /* A second member: the cooperative rebalance moves two
             * partitions in two rounds, in which members are assigned
             * none. */
            o.name = "b";
            b = sr_loop_add_source(f->l, &o, err, sizeof(err));
            if (b < 0) fail_msg("kafka source: %s", err);
        }
        if (b >= 0 && assigned_count(f, a) == 2 && assigned_count(f, b) == 2) break;
    }
    assert_true(b >= 0);
    assert_int_equal(assigned_count(f, a), 2);
    assert_int_equal(assigned_count(f, b), 2);
    assert_true(empty > 0);
}

/* A partition put off (its task locked by its previous owner) is not
 * read until assigned late; a revocation after it completes. */
static void test_tasks_assign_late(void **state)
{
    fixture_t *f = *state;
    new_loop(f);
    char err[256] = "";
    const char *kv[] = {"brokers", f->bootstrap, "topic", "t", "group", "gl", "tasks", "1",
                        "config:log_level", "0", "config:partition.assignment.strategy", "cooperative-sticky",
                        "config:session.timeout.ms", "6000", "config:heartbeat.interval.ms", "500", NULL};
    sr_source_opts_t o = {.kind = "kafka", .name = "a", .kv = kv, .nkv = 8};
    int a = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (a < 0) fail_msg("kafka source: %s", err);
    sr_source_t *sa = sr_loop_source(f->l, a);
    sr_tick_t t;
    int i = 0;
    for (; i < 2 * MAX_BATCHES && assigned_count(f, a) < 3; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        serve_later(f, a, 3);
    }
    assert_int_equal(assigned_count(f, a), 3);
    assert_int_equal(sr_kafka_source_assign_late(sa, "t", 3, -1), 0);
    assert_int_equal(assigned_count(f, a), 4);
    o.name = "b";
    int b = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (b < 0) fail_msg("kafka source: %s", err);
    for (i = 0; i < 2 * MAX_BATCHES; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        serve(f, a);
        serve(f, b);
        if (assigned_count(f, a) == 2 && assigned_count(f, b) == 2) break;
    }
    assert_int_equal(assigned_count(f, a), 2);
    assert_int_equal(assigned_count(f, b), 2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Stops every source (sr_loop_free) and returns how long it took. */
static double stop_all(fixture_t *f)
{
    double t0 = now_s();
    sr_loop_free(f->l);
    f->l = NULL;
    return now_s() - t0;
}

/* The stop's bound (SR_KAFKA_STOP_MS per source) and room for a loaded
 * machine's scheduling. */
#define STOP_BOUND_S 5.0
#define SLACK_S 1.5

/* The broker gone (after a commit it has not answered), the consumer does
 * not wait for it longer than the bound. */
static void test_stop_broker_down(void **state)
{
    fixture_t *f = *state;
    produce(f, 0, N);
    new_loop(f);
    char err[256] = "";
    const char *kv[] = {"brokers", f->bootstrap, "topic", "t", "group", "gd", "tasks", "1",
                        "config:log_level", "0", "config:partition.assignment.strategy", "cooperative-sticky",
                        "config:session.timeout.ms", "6000", "config:heartbeat.interval.ms", "500", NULL};
    sr_source_opts_t o = {.kind = "kafka", .name = "a", .kv = kv, .nkv = 8};
    int a = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (a < 0) fail_msg("kafka source: %s", err);
    sr_tick_t t;
    for (int i = 0; i < 2 * MAX_BATCHES && assigned_count(f, a) < 4; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        serve(f, a);
    }
    assert_int_equal(assigned_count(f, a), 4);
    const char *topics[] = {"t", "t", "t", "t"};
    int32_t parts[] = {0, 1, 2, 3};
    int64_t offs[] = {1, 1, 1, 1};
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mc, 1), 0);
    assert_int_equal(sr_kafka_source_commit(sr_loop_source(f->l, a), topics, parts, offs, 4), 0);
    double took = stop_all(f);
    if (took > STOP_BOUND_S + SLACK_S) fail_msg("the stop took %.1f s", took);
}

/* A member stopped while the group moves partitions to a new one (the
 * revocation waiting for its batch boundary): within the bound, and the
 * other member ends up with every partition. */
static void test_stop_mid_rebalance(void **state)
{
    fixture_t *f = *state;
    new_loop(f);
    char err[256] = "";
    const char *kv[] = {"brokers", f->bootstrap, "topic", "t", "group", "gm", "tasks", "1",
                        "config:log_level", "0", "config:partition.assignment.strategy", "cooperative-sticky",
                        "config:session.timeout.ms", "6000", "config:heartbeat.interval.ms", "500", NULL};
    sr_source_opts_t o = {.kind = "kafka", .name = "a", .kv = kv, .nkv = 8};
    int a = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (a < 0) fail_msg("kafka source: %s", err);
    sr_tick_t t;
    for (int i = 0; i < 2 * MAX_BATCHES && assigned_count(f, a) < 4; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        serve(f, a);
    }
    assert_int_equal(assigned_count(f, a), 4);
    o.name = "b";
    int b = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (b < 0) fail_msg("kafka source: %s", err);
    /* Until a's revocation waits (b is served, a not). */
    int waits = 0;
    for (int i = 0; i < 2 * MAX_BATCHES && !waits; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        serve(f, b);
        const char *topic;
        int32_t part;
        waits = sr_kafka_source_pending(sr_loop_source(f->l, a), 0, &topic, &part) == 2;
    }
    assert_true(waits);
    double t0 = now_s();
    sr_loop_remove_source(f->l, a);
    double took = now_s() - t0;
    if (took > STOP_BOUND_S + SLACK_S) fail_msg("the stop took %.1f s", took);
    for (int i = 0; i < 2 * MAX_BATCHES && assigned_count(f, b) < 4; i++) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_loop_release(f->l);
        serve(f, b);
    }
    assert_int_equal(assigned_count(f, b), 4);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_resumes_at_offsets),
        T(test_bad_settings),
        T(test_sink_broker_down),
        T(test_tasks_rebalance),
        T(test_tasks_assign_late),
        T(test_stop_broker_down),
        T(test_stop_mid_rebalance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
