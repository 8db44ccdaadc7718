/* sr_cli: the command line of streamrun (SPEC section 3), parsed. */
#ifndef SR_CLI_H
#define SR_CLI_H
#include <stddef.h>

typedef struct sr_cli {
    const char *command;    /* "run", "check", "inspect", "test", "version", "help" */
    const char *job;        /* run, check: the job script; inspect: the checkpoint */
    const char *batch;      /* --batch DUR */
    const char *checkpoint; /* --checkpoint DIR */
    const char *duration;   /* --duration DUR */
    long batches;           /* --batches N; -1 when absent */
    const char **sets;      /* --set KEY=VALUE, nsets of them (borrowed argv) */
    int nsets;
    int no_reload, quiet;
    const char *stats;      /* --stats FILE */
    const char *http;       /* --http [ADDR:]PORT */
    const char *workers;    /* --workers N|auto (checked by streamrun.workers) */
    const char *keys;       /* inspect --keys STAGE */
    const char *against;    /* check --against CHECKPOINT */
    int verify;             /* inspect --verify */
    char **rest;            /* test: remaining arguments */
    int nrest;
} sr_cli_t;

/* Parses argv. Returns 0, or SR_EUSAGE with a message in err. cli->sets is
 * allocated; release it with sr_cli_free. */
int sr_cli_parse(int argc, char **argv, sr_cli_t *cli, char *err, size_t errlen);
void sr_cli_free(sr_cli_t *cli);
/* The usage text. */
const char *sr_cli_usage(void);

#endif
