/* sr_kafka_mock: `streamrun kafka-mock`, librdkafka's mock cluster in the
 * foreground, for tests and for trying Kafka jobs with no cluster. Prints
 * `bootstrap: HOST:PORT,...` first, then takes commands on stdin (one a
 * line, each answered on stdout): `down ID`, `up ID` (a broker, from 1),
 * `topic NAME PARTITIONS`, `quit`. Ends on SIGINT/SIGTERM or `quit`. */
#include "sr_kafka_mock.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t sr__mock_stop;

static void sr__mock_on_signal(int sig)
{
    (void)sig;
    sr__mock_stop = 1;
}

static int sr__mock_usage(void)
{
    fprintf(stderr, "usage: streamrun kafka-mock [--brokers N] [--topic NAME:PARTITIONS]...\n"
                    "commands on stdin: down ID | up ID | topic NAME PARTITIONS | quit\n");
    return 2;
}

/* Creates topic spec "NAME:PARTITIONS" (or "NAME" with one partition).
 * Returns 0, or -1 after saying why. */
static int sr__mock_topic(rd_kafka_mock_cluster_t *mc, const char *spec, int replicas)
{
    char name[256];
    const char *colon = strrchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    long parts = colon ? strtol(colon + 1, NULL, 10) : 1;
    if (len == 0 || len >= sizeof(name) || parts < 1 || parts > 10000) {
        fprintf(stderr, "streamrun kafka-mock: bad topic '%s' (want NAME:PARTITIONS)\n", spec);
        return -1;
    }
    memcpy(name, spec, len);
    name[len] = '\0';
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name, (int)parts, replicas);
    if (e) {
        fprintf(stderr, "streamrun kafka-mock: topic %s: %s\n", name, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

/* Runs one stdin command; answers on stdout. Returns 1 on quit. */
static int sr__mock_command(rd_kafka_mock_cluster_t *mc, char *line, int brokers)
{
    char what[16], arg[256];
    long n = 0;
    int k = sscanf(line, "%15s %255s %ld", what, arg, &n);
    if (k < 1) return 0;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!strcmp(what, "quit")) return 1;
    if ((!strcmp(what, "down") || !strcmp(what, "up")) && k >= 2) {
        long id = strtol(arg, NULL, 10);
        if (id < 1 || id > brokers) {
            printf("error: no broker %s (1 to %d)\n", arg, brokers);
        } else {
            e = what[0] == 'd' ? rd_kafka_mock_broker_set_down(mc, (int32_t)id)
                               : rd_kafka_mock_broker_set_up(mc, (int32_t)id);
            if (e) printf("error: %s\n", rd_kafka_err2str(e));
            else printf("ok %s %ld\n", what, id);
        }
    } else if (!strcmp(what, "topic") && k == 3) {
        e = rd_kafka_mock_topic_create(mc, arg, (int)n, brokers < 3 ? brokers : 3);
        if (e) printf("error: %s\n", rd_kafka_err2str(e));
        else printf("ok topic %s %ld\n", arg, n);
    } else {
        printf("error: unknown command (down ID | up ID | topic NAME PARTITIONS | quit)\n");
    }
    fflush(stdout);
    return 0;
}

int sr_kafka_mock_main(int argc, char **argv)
{
    int brokers = 1, code = 1;
    char errstr[512];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
            brokers = atoi(argv[++i]);
            if (brokers < 1 || brokers > 64) return sr__mock_usage();
        } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
            i++;
        } else {
            return sr__mock_usage();
        }
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The handle only hosts the cluster: it connects to nothing. */
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "streamrun kafka-mock: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "streamrun kafka-mock: cannot start the mock cluster\n");
        goto fail;
    }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--topic") && sr__mock_topic(mc, argv[++i], brokers < 3 ? brokers : 3) < 0)
            goto fail;
    printf("bootstrap: %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sr__mock_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    char line[512];
    size_t used = 0;
    int reading = 1;
    while (!sr__mock_stop) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int r = poll(&p, reading ? 1 : 0, 250);
        if (r <= 0) continue;
        ssize_t got = read(0, line + used, sizeof(line) - 1 - used);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) continue;
            reading = 0; /* no more commands: runs until a signal */
            continue;
        }
        used += (size_t)got;
        line[used] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            if (sr__mock_command(mc, line, brokers)) sr__mock_stop = 1;
            used -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, used + 1);
        }
        if (used == sizeof(line) - 1) used = 0; /* an overlong line: dropped */
    }
    code = 0;
fail:
    if (mc) rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return code;
}
