/* test_cli: sr_cli_parse: every command, every flag of run, and every rejection with its message. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"

#include "sr_cli.h"

#define MAXARGS 32

typedef struct fixture {
    size_t alloc_before;
    sr_cli_t cli;
    char err[256];
    char *argv[MAXARGS + 1];
    int argc;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->alloc_before = sr_alloc_used();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sr_cli_free(&f->cli);
    assert_null(f->cli.sets);
    size_t leaked = sr_alloc_used() - f->alloc_before;
    free(f);
    assert_int_equal(leaked, 0);
    return 0;
}

/* Parses "streamrun" followed by the given arguments (NULL-terminated). */
static int parse_v(fixture_t *f, const char *first, va_list ap)
{
    f->argc = 0;
    f->argv[f->argc++] = "streamrun";
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        assert_true(f->argc < MAXARGS);
        f->argv[f->argc++] = (char *)a;
    }
    f->argv[f->argc] = NULL;
    sr_cli_free(&f->cli); /* a test may parse more than once */
    strcpy(f->err, "(untouched)");
    return sr_cli_parse(f->argc, f->argv, &f->cli, f->err, sizeof(f->err));
}

/* Expects success. */
static void ok(fixture_t *f, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int rc = parse_v(f, first, ap);
    va_end(ap);
    if (rc != SR_OK) fail_msg("rejected (%d): %s", rc, f->err);
}

/* Expects SR_EUSAGE with exactly msg in err. */
static void rejects(fixture_t *f, const char *msg, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int rc = parse_v(f, first, ap);
    va_end(ap);
    if (rc != SR_EUSAGE) fail_msg("accepted (%d), want \"%s\"", rc, msg);
    assert_string_equal(f->err, msg);
}

/* The defaults: only command (and job) set. */
static void expect_no_flags(const sr_cli_t *c)
{
    assert_null(c->batch);
    assert_null(c->checkpoint);
    assert_null(c->duration);
    assert_int_equal(c->batches, -1);
    assert_int_equal(c->nsets, 0);
    assert_int_equal(c->no_reload, 0);
    assert_int_equal(c->quiet, 0);
    assert_null(c->stats);
}

/* -- Commands -- */

static void test_run_job_only(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "jobs/wordcount.lua", NULL);
    assert_string_equal(f->cli.command, "run");
    assert_string_equal(f->cli.job, "jobs/wordcount.lua");
    assert_ptr_equal(f->cli.job, f->argv[2]); /* borrowed from argv */
    expect_no_flags(&f->cli);
    assert_null(f->cli.rest);
    assert_int_equal(f->cli.nrest, 0);
}

static void test_check(void **state)
{
    fixture_t *f = *state;
    ok(f, "check", "job.lua", NULL);
    assert_string_equal(f->cli.command, "check");
    assert_string_equal(f->cli.job, "job.lua");
    expect_no_flags(&f->cli);
}

static void test_test_with_rest(void **state)
{
    fixture_t *f = *state;
    ok(f, "test", "spec/unit", "--verbose", "-o", "TAP", "x.lua", NULL);
    assert_string_equal(f->cli.command, "test");
    assert_null(f->cli.job);
    assert_int_equal(f->cli.nrest, 5);
    assert_ptr_equal(f->cli.rest, f->argv + 2);
    assert_string_equal(f->cli.rest[0], "spec/unit");
    assert_string_equal(f->cli.rest[1], "--verbose"); /* passed on, not parsed */
    assert_string_equal(f->cli.rest[4], "x.lua");
    expect_no_flags(&f->cli);
}

static void test_test_without_rest(void **state)
{
    fixture_t *f = *state;
    ok(f, "test", NULL);
    assert_string_equal(f->cli.command, "test");
    assert_int_equal(f->cli.nrest, 0);
}

static void test_version(void **state)
{
    fixture_t *f = *state;
    ok(f, "--version", NULL);
    assert_string_equal(f->cli.command, "version");
    ok(f, "version", NULL);
    assert_string_equal(f->cli.command, "version");
    /* Whatever follows is ignored. */
    ok(f, "--version", "--bogus", NULL);
    assert_string_equal(f->cli.command, "version");
    expect_no_flags(&f->cli);
}

static void test_help(void **state)
{
    fixture_t *f = *state;
    const char *forms[] = {"--help", "-h", "help"};
    for (size_t i = 0; i < 3; i++) {
        ok(f, forms[i], NULL);
        assert_string_equal(f->cli.command, "help");
        assert_null(f->cli.job);
    }
}

static void test_usage_text(void **state)
{
    (void)state;
    const char *u = sr_cli_usage();
    const char *words[] = {"usage:", "streamrun run JOB.lua", "--batch", "--checkpoint",
                           "--duration", "--batches", "--set KEY=VALUE", "--no-reload",
                           "--quiet", "--stats", "--http", "streamrun check", "streamrun test",
                           "--version", "--help"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (!strstr(u, words[i])) fail_msg("usage lacks %s", words[i]);
}

/* -- Flags of run -- */

static void test_run_every_flag(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "job.lua", "--batch", "250ms", "--checkpoint", "/tmp/ckpt", "--duration", "2m",
       "--set", "a=1", "--no-reload", "--quiet", "--stats", "stats.json", NULL);
    sr_cli_t *c = &f->cli;
    assert_string_equal(c->command, "run");
    assert_string_equal(c->job, "job.lua");
    assert_string_equal(c->batch, "250ms");
    assert_string_equal(c->checkpoint, "/tmp/ckpt");
    assert_string_equal(c->duration, "2m");
    assert_int_equal(c->batches, -1);
    assert_int_equal(c->nsets, 1);
    assert_string_equal(c->sets[0], "a=1");
    assert_int_equal(c->no_reload, 1);
    assert_int_equal(c->quiet, 1);
    assert_string_equal(c->stats, "stats.json");
}

static void test_run_batch(void **state)
{
    fixture_t *f = *state;
    const char *ok_durations[] = {"250ms", "1s", "1.5s", "2m", "1h", "3"};
    for (size_t i = 0; i < sizeof(ok_durations) / sizeof(ok_durations[0]); i++) {
        ok(f, "run", "j.lua", "--batch", ok_durations[i], NULL);
        assert_string_equal(f->cli.batch, ok_durations[i]);
    }
}

static void test_run_checkpoint(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--checkpoint", "state/dir", NULL);
    assert_string_equal(f->cli.checkpoint, "state/dir");
    assert_null(f->cli.batch);
}

static void test_run_duration(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--duration", "3s", NULL);
    assert_string_equal(f->cli.duration, "3s");
    assert_int_equal(f->cli.batches, -1);
}

static void test_run_batches(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--batches", "1", NULL);
    assert_int_equal(f->cli.batches, 1);
    ok(f, "run", "j.lua", "--batches", "250", NULL);
    assert_int_equal(f->cli.batches, 250);
    assert_null(f->cli.duration);
}

static void test_run_set_many(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "--set", "k1=v1", "j.lua", "--set", "k2=", "--set", "k3=a=b", NULL);
    sr_cli_t *c = &f->cli;
    assert_int_equal(c->nsets, 3);
    assert_string_equal(c->sets[0], "k1=v1");
    assert_string_equal(c->sets[1], "k2=");      /* an empty value is a value */
    assert_string_equal(c->sets[2], "k3=a=b");   /* the first '=' splits */
    assert_ptr_equal(c->sets[0], f->argv[3]);    /* borrowed from argv */
    assert_string_equal(c->job, "j.lua");
}

/* A flag given twice would silently take one of its values: refused. */
static void test_repeated_flags(void **state)
{
    fixture_t *f = *state;
    rejects(f, "--set k1 given twice ('k1=v1' and 'k1=again')", "run", "j.lua", "--set", "k1=v1", "--set",
            "k1=again", NULL);
    rejects(f, "--set k given twice ('k=' and 'k=1')", "check", "j.lua", "--set", "k=", "--set", "k=1", NULL);
    rejects(f, "--batch given twice ('1s' and '2s')", "run", "j.lua", "--batch", "1s", "--batch", "2s", NULL);
    rejects(f, "--checkpoint given twice ('a' and 'a')", "run", "j.lua", "--checkpoint", "a", "--checkpoint", "a",
            NULL);
    rejects(f, "--duration given twice ('1s' and '2s')", "run", "j.lua", "--duration", "1s", "--duration", "2s", NULL);
    rejects(f, "--stats given twice ('a' and 'b')", "run", "j.lua", "--stats", "a", "--stats", "b", NULL);
    rejects(f, "--batches given twice", "run", "j.lua", "--batches", "1", "--batches", "2", NULL);
    rejects(f, "--against given twice ('a' and 'b')", "check", "j.lua", "--against", "a", "--against", "b", NULL);
    /* Keys that differ only past a prefix are different keys. */
    ok(f, "run", "j.lua", "--set", "k=1", "--set", "k2=1", "--set", "kk=1", NULL);
    assert_int_equal(f->cli.nsets, 3);
}

/* COMMAND --help is the usage, as --help alone. */
static void test_command_help(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "--help", NULL);
    assert_string_equal(f->cli.command, "help");
    ok(f, "run", "j.lua", "-h", NULL);
    assert_string_equal(f->cli.command, "help");
    ok(f, "check", "--help", NULL);
    assert_string_equal(f->cli.command, "help");
}

static void test_run_switches(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--no-reload", NULL);
    assert_int_equal(f->cli.no_reload, 1);
    assert_int_equal(f->cli.quiet, 0);
    ok(f, "run", "j.lua", "--quiet", NULL);
    assert_int_equal(f->cli.quiet, 1);
    assert_int_equal(f->cli.no_reload, 0);
}

static void test_run_stats(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--stats", "-", NULL); /* a value may start with '-' */
    assert_string_equal(f->cli.stats, "-");
}

/* --http: run only, once. */
static void test_run_http(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--http", "127.0.0.1:9090", NULL);
    assert_string_equal(f->cli.http, "127.0.0.1:9090");
    ok(f, "run", "j.lua", NULL);
    assert_null(f->cli.http);
    rejects(f, "--http given twice ('1' and '2')", "run", "j.lua", "--http", "1", "--http", "2", NULL);
    rejects(f, "unknown option '--http'", "check", "j.lua", "--http", "9090", NULL);
    rejects(f, "--http needs a value", "run", "j.lua", "--http", NULL);
}

/* A value that looks like an option is still the flag's value. */
static void test_value_like_option(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "j.lua", "--checkpoint", "--quiet", NULL);
    assert_string_equal(f->cli.checkpoint, "--quiet");
    assert_int_equal(f->cli.quiet, 0);
}

static void test_job_in_any_position(void **state)
{
    fixture_t *f = *state;
    ok(f, "run", "--quiet", "--batch", "1s", "mid.lua", "--stats", "s.json", NULL);
    assert_string_equal(f->cli.job, "mid.lua");
    assert_string_equal(f->cli.batch, "1s");
    assert_string_equal(f->cli.stats, "s.json");
    assert_int_equal(f->cli.quiet, 1);
    ok(f, "run", "--batches", "5", "--no-reload", "last.lua", NULL);
    assert_string_equal(f->cli.job, "last.lua");
    assert_int_equal(f->cli.batches, 5);
    assert_int_equal(f->cli.no_reload, 1);
    ok(f, "run", "first.lua", "--quiet", NULL);
    assert_string_equal(f->cli.job, "first.lua");
}

/* -- Rejections -- */

static void test_missing_command(void **state)
{
    fixture_t *f = *state;
    rejects(f, "missing command", NULL);
}

static void test_unknown_command(void **state)
{
    fixture_t *f = *state;
    rejects(f, "unknown command 'start'", "start", "job.lua", NULL);
    rejects(f, "unknown command 'job.lua'", "job.lua", NULL);
    rejects(f, "unknown command '--quiet'", "--quiet", "run", "job.lua", NULL);
    rejects(f, "unknown command 'RUN'", "RUN", "job.lua", NULL);
}

static void test_unknown_option(void **state)
{
    fixture_t *f = *state;
    rejects(f, "unknown option '--bogus'", "run", "j.lua", "--bogus", NULL);
    rejects(f, "unknown option '-q'", "run", "-q", "j.lua", NULL);
    rejects(f, "unknown option '--batch=1s'", "run", "j.lua", "--batch=1s", NULL);
    rejects(f, "unknown option '-'", "run", "j.lua", "-", NULL);
}

static void test_option_without_value(void **state)
{
    fixture_t *f = *state;
    const char *flags[] = {"--batch", "--checkpoint", "--duration", "--batches", "--set",
                           "--stats"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "%s needs a value", flags[i]);
        rejects(f, want, "run", "j.lua", flags[i], NULL);
    }
}

static void test_bad_duration(void **state)
{
    fixture_t *f = *state;
    rejects(f, "--duration: bad duration '1x' (want e.g. 250ms, 1s, 2m)",
            "run", "j.lua", "--duration", "1x", NULL);
    rejects(f, "--duration: bad duration '0' (want e.g. 250ms, 1s, 2m)",
            "run", "j.lua", "--duration", "0", NULL);
    rejects(f, "--duration: bad duration '-1s' (want e.g. 250ms, 1s, 2m)",
            "run", "j.lua", "--duration", "-1s", NULL);
    rejects(f, "--duration: bad duration '' (want e.g. 250ms, 1s, 2m)",
            "run", "j.lua", "--duration", "", NULL);
    rejects(f, "--batch: bad duration '0ms' (want e.g. 250ms, 1s, 2m)",
            "run", "j.lua", "--batch", "0ms", NULL);
    rejects(f, "--batch: bad duration 'fast' (want e.g. 250ms, 1s, 2m)",
            "run", "j.lua", "--batch", "fast", NULL);
}

static void test_bad_batches(void **state)
{
    fixture_t *f = *state;
    rejects(f, "--batches: bad count '0'", "run", "j.lua", "--batches", "0", NULL);
    rejects(f, "--batches: bad count 'x'", "run", "j.lua", "--batches", "x", NULL);
    rejects(f, "--batches: bad count '-3'", "run", "j.lua", "--batches", "-3", NULL);
    rejects(f, "--batches: bad count '5x'", "run", "j.lua", "--batches", "5x", NULL);
    rejects(f, "--batches: bad count ''", "run", "j.lua", "--batches", "", NULL);
    /* Too big for a long: not silently clamped. */
    rejects(f, "--batches: bad count '99999999999999999999999'", "run", "j.lua", "--batches",
            "99999999999999999999999", NULL);
}

static void test_bad_set(void **state)
{
    fixture_t *f = *state;
    rejects(f, "--set: want KEY=VALUE, got 'novalue'", "run", "j.lua", "--set", "novalue", NULL);
    rejects(f, "--set: want KEY=VALUE, got '=v'", "run", "j.lua", "--set", "=v", NULL);
    rejects(f, "--set: want KEY=VALUE, got ''", "run", "j.lua", "--set", "", NULL);
    /* One bad among good ones. */
    rejects(f, "--set: want KEY=VALUE, got 'b'", "run", "j.lua", "--set", "a=1", "--set", "b",
            NULL);
}

static void test_duration_with_batches(void **state)
{
    fixture_t *f = *state;
    rejects(f, "--duration and --batches exclude each other",
            "run", "j.lua", "--duration", "1s", "--batches", "3", NULL);
    rejects(f, "--duration and --batches exclude each other",
            "run", "--batches", "3", "--duration", "1s", "j.lua", NULL);
}

static void test_two_jobs(void **state)
{
    fixture_t *f = *state;
    rejects(f, "unexpected argument 'b.lua'", "run", "a.lua", "b.lua", NULL);
    rejects(f, "unexpected argument 'b.lua'", "run", "a.lua", "--quiet", "b.lua", NULL);
    rejects(f, "unexpected argument 'b.lua'", "check", "a.lua", "b.lua", NULL);
}

static void test_missing_job(void **state)
{
    fixture_t *f = *state;
    rejects(f, "run: missing JOB.lua", "run", NULL);
    rejects(f, "run: missing JOB.lua", "run", "--quiet", "--batch", "1s", NULL);
    rejects(f, "check: missing JOB.lua", "check", NULL);
}

static void test_check_flags(void **state)
{
    fixture_t *f = *state;
    const char *flags[] = {"--quiet", "--no-reload", "--duration", "--batches", "--stats"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "unknown option '%s'", flags[i]);
        rejects(f, want, "check", "j.lua", flags[i], "1s", NULL);
        rejects(f, want, "check", flags[i], "j.lua", NULL);
    }
    /* What shapes the job, as run takes it. */
    ok(f, "check", "j.lua", "--batch", "2s", "--checkpoint", "ck", "--set", "a=1", "--against", "ck2", NULL);
    assert_string_equal(f->cli.batch, "2s");
    assert_string_equal(f->cli.checkpoint, "ck");
    assert_string_equal(f->cli.against, "ck2");
    assert_int_equal(f->cli.nsets, 1);
}

static void test_out_of_memory(void **state)
{
    fixture_t *f = *state;
    sr_alloc_fail_after(0);
    int rc;
    {
        char *argv[] = {"streamrun", "run", "j.lua", NULL};
        rc = sr_cli_parse(3, argv, &f->cli, f->err, sizeof(f->err));
    }
    sr_alloc_fail_after(-1);
    assert_int_equal(rc, SR_EUSAGE);
    assert_string_equal(f->err, "out of memory");
    assert_null(f->cli.sets);
}

/* A message longer than err is cut, still terminated. */
static void test_small_err_buffer(void **state)
{
    fixture_t *f = *state;
    char small[8];
    char *argv[] = {"streamrun", "frobnicate", NULL};
    memset(small, 'x', sizeof(small));
    assert_int_equal(sr_cli_parse(2, argv, &f->cli, small, sizeof(small)), SR_EUSAGE);
    assert_string_equal(small, "unknown");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_run_job_only),
        T(test_check),
        T(test_test_with_rest),
        T(test_test_without_rest),
        T(test_version),
        T(test_help),
        T(test_usage_text),
        T(test_run_every_flag),
        T(test_run_batch),
        T(test_run_checkpoint),
        T(test_run_duration),
        T(test_run_batches),
        T(test_run_set_many),
        T(test_repeated_flags),
        T(test_command_help),
        T(test_run_switches),
        T(test_run_stats),
        T(test_run_http),
        T(test_value_like_option),
        T(test_job_in_any_position),
        T(test_missing_command),
        T(test_unknown_command),
        T(test_unknown_option),
        T(test_option_without_value),
        T(test_bad_duration),
        T(test_bad_batches),
        T(test_bad_set),
        T(test_duration_with_batches),
        T(test_two_jobs),
        T(test_missing_job),
        T(test_check_flags),
        T(test_out_of_memory),
        T(test_small_err_buffer),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
