/* sr_main: the streamrun binary. Parses the command line, starts the
 * embedded LuaJIT and hands the command to the Lua runner (streamrun.runner)
 * or to Busted. */
#include "sr_cli.h"
#include "sr_kafka_mock.h"
#include "sr_lua.h"
#include "sr_stop.h"
#include "sr_version.h"
#include "sr_watchdog.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

static void sr__push_cli(lua_State *L, const sr_cli_t *cli)
{
    lua_newtable(L);
#define SR_FIELD_STR(f) if (cli->f) { lua_pushstring(L, cli->f); lua_setfield(L, -2, #f); }
    SR_FIELD_STR(command);
    SR_FIELD_STR(job);
    SR_FIELD_STR(batch);
    SR_FIELD_STR(checkpoint);
    SR_FIELD_STR(duration);
    SR_FIELD_STR(stats);
    SR_FIELD_STR(http);
    SR_FIELD_STR(workers);
    SR_FIELD_STR(keys);
    SR_FIELD_STR(against);
#undef SR_FIELD_STR
    if (cli->batches >= 0) { lua_pushinteger(L, cli->batches); lua_setfield(L, -2, "batches"); }
    lua_pushboolean(L, cli->no_reload);
    lua_setfield(L, -2, "no_reload");
    lua_pushboolean(L, cli->quiet);
    lua_setfield(L, -2, "quiet");
    lua_pushboolean(L, cli->verify);
    lua_setfield(L, -2, "verify");
    lua_newtable(L);
    for (int i = 0; i < cli->nsets; i++) {
        const char *eq = strchr(cli->sets[i], '=');
        lua_pushlstring(L, cli->sets[i], (size_t)(eq - cli->sets[i]));
        lua_pushstring(L, eq + 1);
        lua_settable(L, -3);
    }
    lua_setfield(L, -2, "params");
}

/* streamrun test: Busted in this VM, so specs run with the runtime loaded. */
static int sr__run_busted(lua_State *L, const sr_cli_t *cli, const char *argv0)
{
    lua_newtable(L);
    lua_pushstring(L, argv0);
    lua_rawseti(L, -2, 0);
    lua_pushstring(L, "--ignore-lua");
    lua_rawseti(L, -2, 1);
    for (int i = 0; i < cli->nrest; i++) {
        lua_pushstring(L, cli->rest[i]);
        lua_rawseti(L, -2, i + 2);
    }
    lua_setglobal(L, "arg");
    /* Busted's runner looks at the Lua function that called it: call it from
     * a chunk. It exits the process itself with the specs' status. */
    if (luaL_loadstring(L, "require('busted.runner')({ standalone = false })") != 0) {
        fprintf(stderr, "streamrun: %s\n", lua_tostring(L, -1));
        return 1;
    }
    return sr_lua_call(L, 0, 0) != 0;
}

#define SR_RELOAD 100 /* streamrun.runner's RELOAD */

/* Calls streamrun.runner[fn] (streamrun.inspect.main when fn is NULL) with
 * the command line, or with msg when given. Returns its integer result (a
 * boolean true is 1); for prepare_reload a false result copies its reason
 * into why. A Lua error is reported and gives 1, or -1 for functions that
 * return nothing. */
static int sr__call_runner(lua_State *L, const char *fn, const sr_cli_t *cli, const char *msg, char *why)
{
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, fn ? "streamrun.runner" : "streamrun.inspect");
    if (sr_lua_call(L, 1, 1) != 0) return why ? 0 : 1;
    lua_getfield(L, -1, fn ? fn : "main");
    if (msg) lua_pushstring(L, msg);
    else sr__push_cli(L, cli);
    int code;
    if (sr_lua_call(L, 1, 2) != 0) {
        code = why ? 0 : 1;
    } else if (lua_isboolean(L, -2)) {
        code = lua_toboolean(L, -2);
        if (!code && why) snprintf(why, 1024, "%s", luaL_optstring(L, -1, "invalid job"));
    } else if (lua_isnil(L, -2)) {
        code = -1;
    } else {
        code = (int)luaL_optinteger(L, -2, 1);
    }
    lua_settop(L, top);
    return code;
}

int main(int argc, char **argv)
{
    sr_cli_t cli;
    char err[512];
    if (argc > 1 && !strcmp(argv[1], "kafka-mock")) return sr_kafka_mock_main(argc - 1, argv + 1);
    if (sr_cli_parse(argc, argv, &cli, err, sizeof(err)) != 0) {
        fprintf(stderr, "streamrun: %s\n%s", err, sr_cli_usage());
        sr_cli_free(&cli);
        return 2;
    }
    if (!strcmp(cli.command, "version")) {
        printf("streamrun %s\n", SR_VERSION);
        return 0;
    }
    if (!strcmp(cli.command, "help")) {
        fputs(sr_cli_usage(), stdout);
        return 0;
    }
    /* A stop signal from now on ends the job cleanly, also one that comes
     * before its loop handles signals. */
    if (!strcmp(cli.command, "run") && sr_stop_catch_early() != 0) {
        fprintf(stderr, "streamrun: cannot install the stop signals' handlers\n");
        sr_cli_free(&cli);
        return 1;
    }
    /* A record stuck where no hook runs restarts the job as it was run. */
    sr_watchdog_set_exec("/proc/self/exe", argv);
    char dir[4096];
    lua_State *L = sr_lua_new(sr_lua_dir(dir, sizeof(dir)));
    if (!L) {
        fprintf(stderr, "streamrun: cannot create the Lua VM\n");
        sr_cli_free(&cli);
        return 1;
    }
    int code;
    if (!strcmp(cli.command, "test")) {
        code = sr__run_busted(L, &cli, argv[0]);
    } else {
        code = sr__call_runner(L, strcmp(cli.command, "inspect") ? "main" : NULL, &cli, NULL, NULL);
        /* Hot reload: the new script in a fresh VM; if it is valid the old
         * VM hands its C objects over and is closed, else it goes on. */
        while (code == SR_RELOAD) {
            lua_State *fresh = sr_lua_new(dir);
            char why[1024] = "cannot create a Lua VM";
            int valid = fresh && sr__call_runner(fresh, "prepare_reload", &cli, NULL, why) == 1;
            if (valid && sr__call_runner(L, "handoff", &cli, NULL, why) == 1) {
                sr_lua_free(L);
                L = fresh;
                code = sr__call_runner(L, "resume", &cli, NULL, NULL);
            } else {
                sr_lua_free(fresh);
                code = sr__call_runner(L, "continue", &cli, why, NULL);
            }
        }
    }
    sr_watchdog_stop();
    sr_lua_free(L);
    sr_cli_free(&cli);
    fflush(stdout);
    return code;
}
