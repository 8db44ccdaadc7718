/* sr_kafka_sink: to_kafka's producer, librdkafka's idempotent producer
 * (no duplicates or reordering from its own retries), flushed at the end of
 * every batch; delivery reports name the messages that failed so the output
 * can send them again. */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_kafka.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

struct sr_kafka_sink {
    rd_kafka_t *rk;
    rd_kafka_topic_t *topic;
    int64_t *failed;           /* owned: ids of messages whose delivery failed */
    size_t nfailed, cap;
    char first_error[256];     /* the first delivery error since the flush began */
    char last_error[256];      /* the last client error (error callback) */
    int reported;              /* failures were reported by the last flush:
                                  the next send or report starts afresh */
};

static void sr__sink_fresh(sr_kafka_sink_t *k)
{
    if (!k->reported) return;
    k->reported = 0;
    k->nfailed = 0;
    k->first_error[0] = '\0';
}

static void sr__sink_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    sr_kafka_sink_t *k = opaque;
    if (!m->err) return;
    sr__sink_fresh(k);
    if (!k->first_error[0]) snprintf(k->first_error, sizeof(k->first_error), "%s", rd_kafka_err2str(m->err));
    if (k->nfailed == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        int64_t *f = sr_realloc(k->failed, cap * sizeof(*f));
        if (!f) return; /* counted as in flight by nobody: the flush still says it failed */
        k->failed = f;
        k->cap = cap;
    }
    k->failed[k->nfailed++] = (int64_t)(intptr_t)m->_private;
}

static void sr__sink_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    sr_kafka_sink_t *k = opaque;
    char msg[sizeof(k->last_error)];
    snprintf(msg, sizeof(msg), "%.60s: %.180s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    if (strcmp(msg, k->last_error)) fprintf(stderr, "streamrun: to_kafka %s: %s\n", rd_kafka_name(rk), msg);
    snprintf(k->last_error, sizeof(k->last_error), "%s", msg);
}

static void sr__sink_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 2) fprintf(stderr, "streamrun: kafka %s: %s: %s\n", rd_kafka_name(rk), fac, buf);
}

sr_kafka_sink_t *sr_kafka_sink_new(const char *brokers, const char *topic, const char *const *kv, size_t nkv,
                                   char *err, size_t errlen)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    sr_kafka_sink_t *k = sr_calloc(1, sizeof(*k));
    if (!k) {
        snprintf(err, errlen, "%s", sr_strerror(SR_ENOMEM));
        goto fail;
    }
    const char *defaults[] = {"bootstrap.servers", brokers, "enable.idempotence", "true", "client.id", "streamrun",
                              "linger.ms", "5"};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i += 2)
        if (rd_kafka_conf_set(conf, defaults[i], defaults[i + 1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "config %s: %s", defaults[i], errstr);
            goto fail;
        }
    for (size_t i = 0; i < nkv; i++)
        if (rd_kafka_conf_set(conf, kv[2 * i], kv[2 * i + 1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "config %s=%s: %s", kv[2 * i], kv[2 * i + 1], errstr);
            goto fail;
        }
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, sr__sink_on_delivery);
    rd_kafka_conf_set_error_cb(conf, sr__sink_on_error);
    rd_kafka_conf_set_log_cb(conf, sr__sink_on_log);
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!k->rk) {
        snprintf(err, errlen, "%s", errstr);
        goto fail;
    }
    conf = NULL;
    k->topic = rd_kafka_topic_new(k->rk, topic, NULL);
    if (!k->topic) {
        snprintf(err, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    return k;
fail:
    if (conf) rd_kafka_conf_destroy(conf);
    sr_kafka_sink_free(k);
    return NULL;
}

void sr_kafka_sink_free(sr_kafka_sink_t *k)
{
    if (!k) return;
    if (k->rk) rd_kafka_flush(k->rk, 2000); /* what is in flight, briefly */
    if (k->topic) rd_kafka_topic_destroy(k->topic);
    if (k->rk) rd_kafka_destroy(k->rk);
    sr_free(k->failed);
    sr_free(k);
}

int sr_kafka_sink_send(sr_kafka_sink_t *k, const char *key, size_t klen, const char *val, size_t vlen,
                       int64_t id, char *err, size_t errlen)
{
    sr__sink_fresh(k);
    for (int tries = 0;; tries++) {
        if (rd_kafka_produce(k->topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)val, vlen, key, klen,
                             (void *)(intptr_t)id) == 0)
            return SR_OK;
        rd_kafka_resp_err_t e = rd_kafka_last_error();
        /* The local queue is full: deliveries make room. */
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && tries < 600) {
            rd_kafka_poll(k->rk, 100);
            continue;
        }
        snprintf(err, errlen, "%s", rd_kafka_err2str(e));
        return SR_EIO;
    }
}

int sr_kafka_sink_flush(sr_kafka_sink_t *k, int timeout_ms, char *err, size_t errlen)
{
    sr__sink_fresh(k);
    rd_kafka_resp_err_t e = rd_kafka_flush(k->rk, timeout_ms);
    k->reported = 1;
    if (k->nfailed) {
        snprintf(err, errlen, "%zu messages not delivered: %s", k->nfailed, k->first_error);
        return (int)k->nfailed;
    }
    if (e) {
        snprintf(err, errlen, "%d messages still in flight after %d ms%s%s", rd_kafka_outq_len(k->rk), timeout_ms,
                 k->last_error[0] ? "; last error: " : "", k->last_error);
        return SR_EIO;
    }
    k->last_error[0] = '\0';
    return SR_OK;
}

int64_t sr_kafka_sink_failed(const sr_kafka_sink_t *k, size_t i)
{
    return i < k->nfailed ? k->failed[i] : -1;
}

int sr_kafka_sink_in_flight(const sr_kafka_sink_t *k) { return rd_kafka_outq_len(k->rk); }
