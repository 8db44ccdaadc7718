/* sr_cli: argument parsing and validation for the streamrun command. */
#include "sr_cli.h"
#include "sr_alloc.h"
#include "sr_duration.h"
#include "sr_error.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sr_cli_usage(void)
{
    return "usage:\n"
           "  streamrun run JOB.lua [--batch DUR] [--checkpoint DIR] [--duration DUR | --batches N]\n"
           "                        [--set KEY=VALUE]... [--no-reload] [--quiet] [--stats FILE]\n"
           "                        [--http [ADDR:]PORT] [--workers N|auto]\n"
           "  streamrun check JOB.lua [--against CHECKPOINT] [--batch DUR] [--checkpoint DIR]\n"
           "                        [--set KEY=VALUE]...\n"
           "                              validate a job, print its stage graph; with a\n"
           "                              checkpoint, which stages keep, drop or start state\n"
           "  streamrun inspect PATH [--keys STAGE | --verify]\n"
           "                              a checkpoint (file, or the newest valid one of a\n"
           "                              directory) as JSON; --keys dumps a stage's state\n"
           "                              as JSON lines; --verify checks it (exit 0 or 1)\n"
           "  streamrun test [PATH...]    run Busted specs with the runtime loaded\n"
           "  streamrun kafka-mock [--brokers N] [--topic NAME:PARTITIONS]...\n"
           "                              librdkafka's mock cluster; prints its bootstrap\n"
           "  streamrun --version | --help       (COMMAND --help: the same)\n"
           "a flag given twice is an error; --set KEY twice too\n"
           "durations: 250ms, 1s, 1.5s, 2m, 1h, or a number of seconds\n";
}

static int sr__fail(char *err, size_t errlen, const char *fmt, const char *arg)
{
    snprintf(err, errlen, fmt, arg);
    return SR_EUSAGE;
}

static int sr__check_duration(const char *flag, const char *v, char *err, size_t errlen)
{
    int64_t ms;
    if (sr_duration_parse(v, &ms) < 0 || ms == 0) {
        snprintf(err, errlen, "%s: bad duration '%s' (want e.g. 250ms, 1s, 2m)", flag, v);
        return SR_EUSAGE;
    }
    return SR_OK;
}

int sr_cli_parse(int argc, char **argv, sr_cli_t *cli, char *err, size_t errlen)
{
    memset(cli, 0, sizeof(*cli));
    cli->batches = -1;
    if (argc < 2) return sr__fail(err, errlen, "%s", "missing command");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) { cli->command = "version"; return SR_OK; }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { cli->command = "help"; return SR_OK; }
    if (!strcmp(cmd, "test")) {
        cli->command = "test";
        cli->rest = argv + 2;
        cli->nrest = argc - 2;
        return SR_OK;
    }
    if (!strcmp(cmd, "inspect")) {
        cli->command = cmd;
        for (int i = 2; i < argc; i++) {
            const char *a = argv[i];
            if (!strcmp(a, "--verify")) { cli->verify = 1; continue; }
            if (!strcmp(a, "--keys")) {
                if (i + 1 >= argc) return sr__fail(err, errlen, "%s needs a stage name", a);
                cli->keys = argv[++i];
                continue;
            }
            if (a[0] == '-') return sr__fail(err, errlen, "unknown option '%s'", a);
            if (cli->job) return sr__fail(err, errlen, "unexpected argument '%s'", a);
            cli->job = a;
        }
        if (!cli->job) return sr__fail(err, errlen, "%s", "inspect: missing PATH (a checkpoint file or directory)");
        if (cli->keys && cli->verify) return sr__fail(err, errlen, "%s", "--keys and --verify exclude each other");
        return SR_OK;
    }
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0)
        return sr__fail(err, errlen, "unknown command '%s'", cmd);
    cli->command = cmd;
    int is_run = !strcmp(cmd, "run");
    cli->sets = sr_calloc((size_t)argc, sizeof(*cli->sets));
    if (!cli->sets) return sr__fail(err, errlen, "%s", "out of memory");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { cli->command = "help"; return SR_OK; }
        if (a[0] != '-') {
            if (cli->job) return sr__fail(err, errlen, "unexpected argument '%s'", a);
            cli->job = a;
            continue;
        }
        if (!strcmp(a, "--no-reload") && is_run) { cli->no_reload = 1; continue; }
        if (!strcmp(a, "--quiet") && is_run) { cli->quiet = 1; continue; }
        /* Flags with a value: check takes those that shape the job. */
        const char **slot = NULL;
        int run_only = 1;
        if (!strcmp(a, "--batch")) { slot = &cli->batch; run_only = 0; }
        else if (!strcmp(a, "--checkpoint")) { slot = &cli->checkpoint; run_only = 0; }
        else if (!strcmp(a, "--set")) { run_only = 0; }
        else if (!strcmp(a, "--duration")) slot = &cli->duration;
        else if (!strcmp(a, "--stats")) slot = &cli->stats;
        else if (!strcmp(a, "--http")) slot = &cli->http;
        else if (!strcmp(a, "--workers")) slot = &cli->workers;
        else if (!strcmp(a, "--batches")) run_only = 1;
        else if (!strcmp(a, "--against") && !is_run) { slot = &cli->against; run_only = 0; }
        else return sr__fail(err, errlen, "unknown option '%s'", a);
        if (run_only && !is_run) return sr__fail(err, errlen, "unknown option '%s'", a);
        if (!next) return sr__fail(err, errlen, "%s needs a value", a);
        i++;
        /* A flag given twice would silently take the last value: refused. */
        if (slot && *slot) {
            snprintf(err, errlen, "%s given twice ('%s' and '%s')", a, *slot, next);
            return SR_EUSAGE;
        }
        if (!strcmp(a, "--batches") && cli->batches >= 0)
            return sr__fail(err, errlen, "%s given twice", a);
        if (!strcmp(a, "--batch") || !strcmp(a, "--duration")) {
            if (sr__check_duration(a, next, err, errlen)) return SR_EUSAGE;
        } else if (!strcmp(a, "--batches")) {
            char *end;
            errno = 0;
            long n = strtol(next, &end, 10);
            if (*end || end == next || n <= 0 || errno == ERANGE)
                return sr__fail(err, errlen, "--batches: bad count '%s'", next);
            cli->batches = n;
        } else if (!strcmp(a, "--set")) {
            const char *eq = strchr(next, '=');
            if (!eq || next == eq) return sr__fail(err, errlen, "--set: want KEY=VALUE, got '%s'", next);
            for (int k = 0; k < cli->nsets; k++) {
                if (!strncmp(cli->sets[k], next, (size_t)(eq - next) + 1)) {
                    snprintf(err, errlen, "--set %.*s given twice ('%s' and '%s')", (int)(eq - next), next,
                             cli->sets[k], next);
                    return SR_EUSAGE;
                }
            }
            cli->sets[cli->nsets++] = next;
        }
        if (slot) *slot = next;
    }
    if (!cli->job) return sr__fail(err, errlen, "%s: missing JOB.lua", cmd);
    if (cli->duration && cli->batches >= 0)
        return sr__fail(err, errlen, "%s", "--duration and --batches exclude each other");
    return SR_OK;
}

void sr_cli_free(sr_cli_t *cli)
{
    sr_free(cli->sets);
    cli->sets = NULL;
}
