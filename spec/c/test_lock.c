/* test_lock: one process per checkpoint directory. The lock is taken once
 * per process (again is a no-op), another process is refused with the
 * holder's pid, and the lock goes when its holder releases it or dies. */
#include "sr_test.h"

#include "sr_error.h"
#include "sr_lock.h"

#include <signal.h>
#include <sys/wait.h>

/* Runs sr_lock_acquire(dir) in a child process: its exit status is 0 when
 * it got the lock, 1 when refused as busy with want_holder's pid, else 2. */
static int sr__try_in_child(const char *dir, long want_holder)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long holder;
        char err[256];
        int rc = sr_lock_acquire(dir, &holder, err, sizeof(err));
        _exit(rc == SR_OK ? 0 : rc == SR_EBUSY && holder == want_holder ? 1 : 2);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_second_process_is_refused_with_the_holders_pid(void **state)
{
    (void)state;
    char dir[256], other[256], err[256], path[300], buf[64];
    long holder = -1;
    sr_test_tmpdir(dir, sizeof(dir));
    sr_test_tmpdir(other, sizeof(other));
    assert_int_equal(sr_lock_acquire(dir, &holder, err, sizeof(err)), SR_OK);
    assert_int_equal(holder, 0);
    /* Again in this process (a reload's new VM): still ours. */
    assert_int_equal(sr_lock_acquire(dir, &holder, err, sizeof(err)), SR_OK);
    /* One directory per process. */
    assert_int_equal(sr_lock_acquire(other, &holder, err, sizeof(err)), SR_EINVAL);
    snprintf(path, sizeof(path), "%s/lock", dir);
    assert_true(sr_test_read(path, buf, sizeof(buf)) > 0);
    assert_int_equal(strtol(buf, NULL, 10), (long)getpid());
    assert_int_equal(sr__try_in_child(dir, (long)getpid()), 1);
    sr_lock_release();
    assert_int_equal(sr__try_in_child(dir, 0), 0);
    sr_test_rmtree(dir);
    sr_test_rmtree(other);
}

static void test_a_killed_holder_releases_it(void **state)
{
    (void)state;
    char dir[256], err[256];
    sr_test_tmpdir(dir, sizeof(dir));
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long holder;
        char e[256];
        if (sr_lock_acquire(dir, &holder, e, sizeof(e)) != SR_OK) _exit(2);
        ssize_t w = write(ready[1], "x", 1);
        (void)w;
        for (;;) pause();
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    long holder = 0;
    assert_int_equal(sr_lock_acquire(dir, &holder, err, sizeof(err)), SR_EBUSY);
    assert_int_equal(holder, (long)pid);
    assert_non_null(strstr(err, "/lock"));
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(sr_lock_acquire(dir, &holder, err, sizeof(err)), SR_OK);
    sr_lock_release();
    sr_test_rmtree(dir);
}

static void test_missing_directory_is_an_error(void **state)
{
    (void)state;
    char err[256];
    long holder;
    assert_int_equal(sr_lock_acquire("/nonexistent/streamrun", &holder, err, sizeof(err)), SR_EIO);
    assert_non_null(strstr(err, "cannot open /nonexistent/streamrun/lock"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_process_is_refused_with_the_holders_pid),
        cmocka_unit_test(test_a_killed_holder_releases_it),
        cmocka_unit_test(test_missing_directory_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
