-- streamrun.core: the one place the C runtime's FFI surface is declared, and
-- the handle to it: the running binary's own symbols under `streamrun`, or
-- build/libstreamrun.so when Lua runs outside it (Busted under luajit).
local ffi = require "ffi"

ffi.cdef [[
typedef struct sr_batch {
    char *data; uint32_t *off; int64_t *pos; size_t n; size_t len;
    size_t cap, ncap; size_t rsv, nrsv; size_t max_records, max_bytes;
} sr_batch_t;
typedef struct sr_loop sr_loop_t;
typedef struct sr_source_opts {
    const char *kind; const char *name; const char *host; int port;
    const char *path; size_t max_line; int from_start; int max_connections;
    int64_t start_offset; uint64_t start_inode;
    const char *start_file; const char *const *done_files; size_t ndone;
    const char *const *kv; size_t nkv;
    int read_ahead;
} sr_source_opts_t;
typedef struct sr_loop_opts {
    int64_t batch_ms; size_t max_batch_records; size_t max_batch_bytes;
    const char *dead_letter_path;
    int64_t dead_letter_max_bytes; int dead_letter_keep;
} sr_loop_opts_t;
typedef struct sr_tick { int64_t time_ms; int64_t delay_ms; int last; int reload; } sr_tick_t;
typedef struct sr_source sr_source_t;
typedef struct sr_source_pos { int64_t offset; uint64_t inode; const char *file; } sr_source_pos_t;
typedef struct sr_source_traits {
    int bounded; int stored; int logged; int rereads; int resumes; int file_list;
} sr_source_traits_t;

const char *sr_version(void);
double sr_clock_ms(void);
double sr_unix_ms(void);
const char *sr_strerror(int code);
int sr_duration_parse(const char *s, int64_t *ms);

sr_batch_t *sr_batch_new(size_t max_records, size_t max_bytes);
void sr_batch_free(sr_batch_t *b);
int sr_batch_append(sr_batch_t *b, const char *p, size_t len, int64_t pos);
void sr_batch_clear(sr_batch_t *b);

sr_loop_t *sr_loop_new(const sr_loop_opts_t *o, char *err, size_t errlen);
void sr_loop_free(sr_loop_t *l);
int sr_loop_add_source(sr_loop_t *l, const sr_source_opts_t *o, char *err, size_t errlen);
sr_batch_t *sr_loop_batch(sr_loop_t *l, int index);
void sr_loop_set_lua_active(sr_loop_t *l, int active);
int sr_loop_next(sr_loop_t *l, sr_tick_t *t);
void sr_loop_release(sr_loop_t *l);
void sr_loop_stop(sr_loop_t *l);
int sr_loop_wait(sr_loop_t *l, int64_t ms);
void sr_loop_set_next_time(sr_loop_t *l, int64_t time_ms);
int sr_loop_all_done(const sr_loop_t *l);
void sr_loop_remove_source(sr_loop_t *l, int index);
void sr_loop_set_interval(sr_loop_t *l, int64_t batch_ms);
int sr_loop_watch(sr_loop_t *l, const char *path);
void sr_loop_unwatch(sr_loop_t *l);
void sr_loop_request_reload(sr_loop_t *l);
int sr_loop_set_wal(sr_loop_t *l, const char *dir, char *err, size_t errlen);
uint64_t sr_loop_wal_rotate(sr_loop_t *l);
int sr_loop_wal_failed(const sr_loop_t *l);
int sr_loop_wal_drop_before(sr_loop_t *l, uint64_t seq);
int sr_source_file_read_range(const char *path, uint64_t inode, int64_t start, int64_t end,
                              size_t max_line, sr_batch_t *out, char *err, size_t errlen);
sr_source_t *sr_loop_source(sr_loop_t *l, int index);
int sr_source_position(sr_source_t *s, sr_source_pos_t *pos);
const char *sr_source_done_file(sr_source_t *s, size_t i);
int sr_source_traits(const char *kind, sr_source_traits_t *out);
uint32_t sr_crc32c(uint32_t crc, const void *p, size_t n);
int sr_lock_acquire(const char *dir, long *holder, char *err, size_t errlen);
void sr_lock_release(void);
typedef struct sr_wordcount_word { uint64_t head[2]; uint32_t off; uint32_t len; double count; } sr_wordcount_word_t;
typedef struct sr_wordcount {
    const char *data; sr_wordcount_word_t *word; size_t n; size_t words;
    uint64_t *slots; size_t cap, ncap;
    uint32_t *ids, *rec_end; size_t idcap, reccap;
    struct { char *data; size_t len, cap; } own; int kept;
} sr_wordcount_t;
typedef struct sr_state sr_state_t;
int sr_state_get_number(sr_state_t *st, int ktype, const char *s, size_t len, double num, double *out);
int sr_state_put_number(sr_state_t *st, int ktype, const char *s, size_t len, double num, double value,
                        int64_t now_ms);
int sr_state_touch_key(sr_state_t *st, int ktype, const char *s, size_t len, double num, int64_t now_ms);
int sr_state_put_bytes(sr_state_t *st, int ktype, const char *s, size_t len, double num, const char *value,
                       size_t vlen, int64_t now_ms);
typedef struct sr_state_key { const char *s; size_t len; double num; int type; } sr_state_key_t;
sr_state_key_t *sr_state_keys(sr_state_t *st, size_t n);
int sr_state_find_batch(sr_state_t *st, const sr_state_key_t *keys, size_t n);
int sr_state_found_number(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                          double *out);
int sr_state_found_put_number(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                              double value, int64_t now_ms);
int sr_state_found_touch(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                         int64_t now_ms);
const char *sr_state_found_value(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                                 size_t *vlen, long *hold);
int sr_state_held_put_bytes(sr_state_t *st, long hold, int ktype, const char *s, size_t len, double num,
                            const char *value, size_t vlen, int64_t now_ms);
void sr_state_release(sr_state_t *st);
sr_wordcount_t *sr_wordcount_new(void);
void sr_wordcount_free(sr_wordcount_t *wc);
int sr_wordcount_batch(sr_wordcount_t *wc, const sr_batch_t *b);
int sr_wordcount_range(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi);
int sr_wordcount_ids(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi);
void sr_wordcount_forget(sr_wordcount_t *wc);
typedef struct sr_workers sr_workers_t;
int sr_workers_online_cpus(void);
int sr_stop_requested(void);
sr_workers_t *sr_workers_new(int n);
int sr_workers_pinned(const sr_workers_t *w);
void sr_workers_free(sr_workers_t *w);
int sr_workers_count(const sr_workers_t *w);
double sr_workers_busy_ms(const sr_workers_t *w, int i);
int sr_workers_wordcount(sr_workers_t *w, sr_wordcount_t **wcs, const sr_batch_t *b);
void sr_workers_share(const sr_batch_t *b, int k, int nw, size_t *lo, size_t *hi);
void sr_loop_dead_letter(sr_loop_t *l, const char *source, int32_t partition, int64_t offset,
                         const char *reason, const char *record, size_t len);
uint64_t sr_loop_dead_letters(const sr_loop_t *l);
typedef struct sr_deadletter sr_deadletter_t;
typedef struct sr_dltally_entry {
    char source[64]; char reason[160]; char record[160]; size_t record_len; size_t record_shown;
    int64_t offset; uint64_t seq; double unix_ms;
} sr_dltally_entry_t;
typedef struct sr_dltally {
    sr_dltally_entry_t recent[20]; uint64_t seq; void *counts; size_t ncounts, cap;
} sr_dltally_t;
sr_deadletter_t *sr_loop_deadletter(sr_loop_t *l);
const sr_dltally_t *sr_deadletter_tally(const sr_deadletter_t *dl);
int sr_deadletter_mark(const sr_deadletter_t *dl, int64_t *bytes, uint64_t *ino, uint64_t *tail);
int sr_deadletter_cut_back(sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail);
int64_t sr_deadletter_expect(sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail);
void sr_deadletter_expect_end(sr_deadletter_t *dl);
const char *sr_dltally_source(const sr_dltally_t *t, size_t i, uint64_t *count);
const sr_dltally_entry_t *sr_dltally_recent(const sr_dltally_t *t, size_t i);
typedef struct sr_http sr_http_t;
typedef struct sr_http_stats { uint64_t requests; uint64_t not_found; } sr_http_stats_t;
sr_http_t *sr_http_start(const char *host, int port, char *err, size_t errlen);
void sr_http_stop(sr_http_t *h);
int sr_http_port(const sr_http_t *h);
int sr_http_is_wildcard(const char *host);
int sr_http_publish(sr_http_t *h, const char *path, const char *type, const char *body, size_t len);
void sr_http_stats(sr_http_t *h, sr_http_stats_t *out);

int sr_outfile_open(const char *path, int64_t *size);
int sr_outfile_write(int fd, const char *p, size_t n, size_t *written);
int sr_outfile_cut(int fd, int64_t size);
int sr_outfile_close(int fd);

int mkdir(const char *path, unsigned int mode);
char *strerror(int errnum);
int truncate(const char *path, int64_t length);
]]

local function here()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/[^/]*$") or "."
end

local LIB_PATH = os.getenv("STREAMRUN_LIB") or (here() .. "/../../build/libstreamrun.so")

local function load_runtime()
  if pcall(function() return ffi.C.sr_version end) then return ffi.C end
  local ok, lib = pcall(ffi.load, LIB_PATH)
  if not ok then
    error("streamrun: cannot load the C runtime (" .. LIB_PATH .. "): run `make` first\n" .. tostring(lib), 0)
  end
  return lib
end

-- A Lua C module of the runtime (state tables, window slices): preloaded by
-- the binary, else opened from the same shared library.
local function load_module(name)
  local preload = package.preload[name]
  if preload then return preload() end
  local open, err = package.loadlib(LIB_PATH, "luaopen_" .. name:gsub("%.", "_"))
  if not open then error("streamrun: cannot open " .. name .. ": " .. tostring(err), 0) end
  return open()
end

local C = load_runtime()

local M = {
  C = C,
  ffi = ffi,
  cstate = load_module("streamrun.cstate"),
  cwindow = load_module("streamrun.cwindow"),
  ckpt = load_module("streamrun.ckpt"),
  cwal = load_module("streamrun.cwal"),
  handoff = load_module("streamrun.handoff"),
  json = load_module("streamrun.json"),
  cwatchdog = load_module("streamrun.cwatchdog"),
  cexchange = load_module("streamrun.cexchange"),
  cworkervm = load_module("streamrun.cworkervm"),
  -- The directory of the streamrun library (each worker's VM loads it),
  -- named as this VM names it: an error in a library function reads the
  -- same on every worker.
  lua_dir = here():match("^(.+)/streamrun$") or (here() .. "/.."),
}

local duration_out = ffi.new("int64_t[1]")

-- Milliseconds in a duration ("250ms", "1.5s", "2m", "1h", or seconds as a
-- number or string); nil and a message when malformed.
function M.duration_ms(d)
  if type(d) == "number" then d = tostring(d) end
  if type(d) ~= "string" then return nil, "duration must be a string like \"1s\"" end
  if C.sr_duration_parse(d, duration_out) ~= 0 then
    return nil, ("bad duration %q (want e.g. 250ms, 1s, 1.5s, 2m, 1h)"):format(d)
  end
  return tonumber(duration_out[0])
end

function M.clock_ms() return C.sr_clock_ms() end
function M.unix_ms() return C.sr_unix_ms() end

-- A short hash of a file's bytes (CRC-32C, hex), nil if it cannot be read.
function M.file_hash(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return ("%08x"):format(C.sr_crc32c(0, data, #data))
end

-- Cuts the file at path to length bytes. Returns true or nil, message.
function M.truncate(path, length)
  if ffi.C.truncate(path, length) ~= 0 then return nil, ("errno %d"):format(ffi.errno()) end
  return true
end

-- Creates dir and its parents (like mkdir -p). Returns true or nil, message.
function M.mkdir_p(dir)
  local path = ""
  for part in dir:gmatch("[^/]+") do
    path = (path == "" and dir:sub(1, 1) ~= "/") and part or (path .. "/" .. part)
    if ffi.C.mkdir(path, 493) ~= 0 and ffi.errno() ~= 17 then
      return nil, ("cannot create %s: errno %d"):format(path, ffi.errno())
    end
  end
  return true
end

return M
