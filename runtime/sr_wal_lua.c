/* sr_wal_lua: cwal.read(dir [, since]) -> { batches = { {time_ms, records = {name =
 * {line, ...}}, carried = {name = n}, files = {name = {{name, inode}, ...}},
 * positions = {name = {offset, inode}}}, ... }, pending = {name = {line,
 * ...}}, note = "..." or nil }; each list of lines has their positions in
 * the source as its field pos. A batch's records and files (the ones
 * text_dir took up; inode -1: skipped) are the ones logged since the marker
 * before it; pending records follow the last. carried[name]: how many of
 * the batch's first records were logged by runs killed before a marker
 * (sources that resume at a position read them again, so have them twice;
 * the files such runs took up are left out). Batches at or before time
 * since (those of the checkpoint resumed from) are left out, records and
 * all. */
#include "sr_wal_lua.h"
#include "sr_wal.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

typedef struct sr__reader {
    lua_State *L;
    int batches, pending, files, carried, names; /* stack indices */
    int nbatches;
    double since; /* batches at or before this time are left out */
} sr__reader_t;

/* Pushes list[name of e's source] (created if needed) and that name. */
static void sr__source_list(sr__reader_t *r, const sr_wal_entry_t *e, int list)
{
    lua_State *L = r->L;
    lua_rawgeti(L, r->names, e->index);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushfstring(L, "#%d", e->index);
    }
    lua_pushvalue(L, -1);
    lua_rawget(L, list);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, list);
    }
}

/* Appends the line to pending[source], and its position to
 * pending[source].pos. */
static void sr__add_record(sr__reader_t *r, const sr_wal_entry_t *e)
{
    lua_State *L = r->L;
    sr__source_list(r, e, r->pending);
    int n = (int)lua_objlen(L, -1) + 1;
    lua_pushlstring(L, e->data, e->len);
    lua_rawseti(L, -2, n);
    lua_getfield(L, -1, "pos");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "pos");
    }
    lua_pushnumber(L, (lua_Number)e->pos);
    lua_rawseti(L, -2, n);
    lua_pop(L, 3);
}

/* Appends {name, inode} to files[source]. */
static void sr__add_file(sr__reader_t *r, const sr_wal_entry_t *e)
{
    lua_State *L = r->L;
    sr__source_list(r, e, r->files);
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, e->data, e->len);
    lua_setfield(L, -2, "name");
    lua_pushnumber(L, (lua_Number)e->pos);
    lua_setfield(L, -2, "inode");
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 2);
}

/* Starts the next batch: no records, files or carried records yet. */
static void sr__next_batch(lua_State *L, sr__reader_t *r)
{
    lua_newtable(L);
    lua_replace(L, r->pending);
    lua_newtable(L);
    lua_replace(L, r->files);
    lua_newtable(L);
    lua_replace(L, r->carried);
}

static void sr__on_entry(void *ud, const sr_wal_entry_t *e)
{
    sr__reader_t *r = ud;
    lua_State *L = r->L;
    luaL_checkstack(L, 8, "wal");
    if (e->type == SR_WAL_SOURCE) {
        lua_pushlstring(L, e->data, e->len);
        lua_rawseti(L, r->names, e->index);
    } else if (e->type == SR_WAL_RECORD) {
        sr__add_record(r, e);
    } else if (e->type == SR_WAL_FILE) {
        sr__add_file(r, e);
    } else if (e->type == SR_WAL_OPEN) {
        /* A new run: what the one before logged since the last marker. */
        lua_pushnil(L);
        while (lua_next(L, r->pending)) {
            lua_pushvalue(L, -2);
            lua_pushinteger(L, (lua_Integer)lua_objlen(L, -2));
            lua_rawset(L, r->carried);
            lua_pop(L, 1);
        }
        lua_newtable(L);
        lua_replace(L, r->files);
    } else if (e->type == SR_WAL_BATCH && (double)e->time_ms <= r->since) {
        sr__next_batch(L, r); /* in the checkpoint resumed from already: its records go */
    } else if (e->type == SR_WAL_BATCH) {
        /* The pending records and files become this batch's. */
        lua_createtable(L, 0, 5);
        lua_pushnumber(L, (lua_Number)e->time_ms);
        lua_setfield(L, -2, "time_ms");
        lua_pushvalue(L, r->pending);
        lua_setfield(L, -2, "records");
        lua_pushvalue(L, r->files);
        lua_setfield(L, -2, "files");
        lua_pushvalue(L, r->carried);
        lua_setfield(L, -2, "carried");
        lua_newtable(L);
        for (int i = 0; i < e->npos; i++) {
            lua_rawgeti(L, r->names, e->positions[i].index);
            if (lua_isnil(L, -1)) { lua_pop(L, 1); continue; }
            lua_createtable(L, 0, 2);
            lua_pushnumber(L, (lua_Number)e->positions[i].offset);
            lua_setfield(L, -2, "offset");
            lua_pushnumber(L, (lua_Number)e->positions[i].inode);
            lua_setfield(L, -2, "inode");
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "positions");
        lua_rawseti(L, r->batches, ++r->nbatches);
        sr__next_batch(L, r);
    }
}

static int sr__read(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    double since = luaL_optnumber(L, 2, -HUGE_VAL);
    lua_settop(L, 1);
    lua_newtable(L); /* 2 batches */
    lua_newtable(L); /* 3 pending */
    lua_newtable(L); /* 4 files */
    lua_newtable(L); /* 5 carried */
    lua_newtable(L); /* 6 names by index */
    sr__reader_t r = {L, 2, 3, 4, 5, 6, 0, since};
    char note[1024];
    long n = sr_wal_scan(dir, sr__on_entry, &r, note, sizeof(note));
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "batches");
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "pending");
    lua_pushinteger(L, n < 0 ? 0 : n);
    lua_setfield(L, -2, "entries");
    if (note[0]) {
        lua_pushstring(L, note);
        lua_setfield(L, -2, "note");
    }
    return 1;
}

int luaopen_streamrun_cwal(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, sr__read);
    lua_setfield(L, -2, "read");
    return 1;
}
