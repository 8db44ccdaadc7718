-- Corrupt checkpoints against ckpt.load: every byte of a small checkpoint
-- flipped, every truncation length, bytes appended, an unknown format
-- version and garbage msgpack under a valid checksum. Each must come back as
-- nil and a reason naming what is wrong (and where), never as an error
-- raised, a crash or part of a state.
local bit = require "bit"
local sr = require "streamrun"
local core = require "streamrun.core"
local testing = require "streamrun.testing"
local proc = require "helpers.proc"

local ckpt, C = core.ckpt, core.C

-- The job of checkpoint_spec: keyed state, a timeout and a window with an
-- inverse function, so the checkpoint has every kind of section.
local function job()
  local j = sr.job { name = "corrupt", batch = "1s" }
  local kv = j:queue({}, { name = "in" }):map(function(w) return w, 1 end)
  kv:update_state_by_key(function(v, s) return (s or 0) + #v end, { name = "totals" })
    :foreach_batch(function() end, { name = "totals_out" })
  kv:map_with_state(sr.state_spec(function(k, v, st)
      if st:is_timing_out() then return k, "gone" end
      st:update((st:exists() and st:get() or 0) + 1)
    end):timeout("5s"):name("idle"))
    :foreach_batch(function() end, { name = "timeouts" })
  kv:reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "3s", "1s", { name = "win" })
    :foreach_batch(function() end, { name = "win_out" })
  return j
end

local HEAD = 5    -- "SRCK" and the version byte
local TRAILER = 8 -- "SREN" and the CRC-32C

local function le32(n)
  local t = {}
  for i = 0, 3 do t[i + 1] = string.char(bit.band(bit.rshift(n, 8 * i), 0xff)) end
  return table.concat(t)
end

-- bytes with its trailer made valid again: "SREN" and the CRC-32C of every
-- byte before the trailer (what sr_checkpoint_write computes).
local function fix_crc(bytes)
  local body = bytes:sub(1, #bytes - TRAILER)
  return body .. "SREN" .. le32(C.sr_crc32c(0, body, #body))
end

-- bytes with the byte at 0-based offset i replaced by v.
local function set_byte(bytes, i, v)
  return bytes:sub(1, i) .. string.char(v) .. bytes:sub(i + 2)
end

local function flip(bytes, i)
  return set_byte(bytes, i, bit.bxor(bytes:byte(i + 1), 0xff))
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

describe("corrupt checkpoints", function()
  local dir, good, probe

  setup(function()
    dir = proc.tmpdir()
    local d = testing.driver(job)
    d:push("in", { "x", "y" })
    d:tick()
    d:push("in", { "x" })
    d:tick()
    good = assert(proc.read_file(d:checkpoint(dir)))
    probe = dir .. "/probe" .. ckpt.suffix
  end)

  teardown(function() proc.cleanup() end)

  -- ckpt.load on the given bytes, protected: { ok = pcall's verdict, n =
  -- how many values it returned, ... the values }.
  local function load(bytes)
    -- A new file each time: rewriting one in place makes ext4 flush it on
    -- close (auto_da_alloc), twenty times slower.
    os.remove(probe)
    proc.write_file(probe, bytes)
    return (function(ok, ...) return { ok = ok, n = select("#", ...), ... } end)(pcall(ckpt.load, probe))
  end

  -- Nil on a proper refusal (nil and a string matching pattern, if given);
  -- else what went wrong.
  local function refusal(r, pattern)
    if not r.ok then return "raised: " .. tostring(r[1]) end
    if r.n ~= 2 or r[1] ~= nil or type(r[2]) ~= "string" then
      return ("returned %d values: %s, %s, %s"):format(r.n, tostring(r[1]), tostring(r[2]), tostring(r[3]))
    end
    if pattern and not r[2]:find(pattern) then return ("reason %q does not match %q"):format(r[2], pattern) end
    return nil
  end

  -- Asserts no case failed, showing the first few that did.
  local function none_failed(failures, total)
    local shown = {}
    for i = 1, math.min(#failures, 10) do shown[i] = failures[i] end
    assert(#failures == 0, ("%d of %d cases failed:\n%s"):format(#failures, total, table.concat(shown, "\n")))
  end

  it("the uncorrupted checkpoint loads with every section (the control)", function()
    assert.is_true(#good > 200 and #good < 2048, "size " .. #good)
    local r = load(good)
    assert.is_true(r.ok, tostring(r[1]))
    assert.equal(3, r.n)
    local meta, states, windows = r[1], r[2], r[3]
    assert.equal("corrupt", meta.job)
    assert.equal(2, meta.batch)
    assert.equal(2, states.totals:count())
    assert.equal(2, states.idle:count())
    assert.is_truthy(windows.win.slices)
    assert.equal(2, windows.win.result:count())
    -- Nothing before or after the trailer but what the format says.
    assert.equal("SRCK", good:sub(1, 4))
    assert.equal(ckpt.version, good:byte(5))
    assert.equal("SREN", good:sub(-8, -5))
    assert.equal(good, fix_crc(good))
  end)

  it("every byte flipped: nil and the reason for the part it hit", function()
    local size, failures = #good, {}
    for i = 0, size - 1 do
      local want
      if i < 4 then
        want = "^bad magic at offset 0"
      elseif i == 4 then
        want = ("^format version %d is not supported"):format(bit.bxor(ckpt.version, 0xff))
      elseif i < size - TRAILER then
        want = ("^checksum mismatch over bytes 0%%.%%.%d: stored %%x+, computed %%x+$"):format(size - TRAILER)
      elseif i < size - 4 then
        want = ("^truncated: no trailer at offset %d"):format(size - TRAILER)
      else
        want = "^checksum mismatch"
      end
      local why = refusal(load(flip(good, i)), want)
      if why then failures[#failures + 1] = ("byte %d flipped: %s"):format(i, why) end
    end
    none_failed(failures, size)
  end)

  it("every truncation length: nil and \"truncated\" with the size or the offset of the missing trailer", function()
    local failures = {}
    for len = 0, #good - 1 do
      local want = len < HEAD + TRAILER and ("^truncated: %d bytes, too short"):format(len)
        or ("^truncated: no trailer at offset %d"):format(len - TRAILER)
      local why = refusal(load(good:sub(1, len)), want)
      if why then failures[#failures + 1] = ("cut to %d bytes: %s"):format(len, why) end
    end
    none_failed(failures, #good)
  end)

  it("bytes appended after the trailer: nil and no trailer where it should be", function()
    local failures = {}
    for n = 1, 16 do
      local why = refusal(load(good .. ("\0"):rep(n)), ("^truncated: no trailer at offset %d"):format(#good + n - TRAILER))
      if why then failures[#failures + 1] = ("%d bytes appended: %s"):format(n, why) end
    end
    none_failed(failures, 16)
  end)

  it("an unknown format version with a valid checksum is refused as that version", function()
    for _, v in ipairs { 0, ckpt.version + 1, 7, 255 } do
      local bytes = fix_crc(set_byte(good, 4, v))
      -- Only the version is wrong: with it put back, the file loads.
      assert.equal(good, fix_crc(set_byte(bytes, 4, ckpt.version)))
      local r = load(bytes)
      assert.is_nil(refusal(r, ("^format version %d is not supported %%(this streamrun reads %d%%)$"):format(v, ckpt.version)))
    end
  end)

  it("an empty or non-msgpack body under a valid checksum is refused at offset 5", function()
    for _, body in ipairs { "", "\193", "\193\193\193\193", "\145" } do
      local bytes = fix_crc("SRCK" .. string.char(ckpt.version) .. body .. ("\0"):rep(TRAILER))
      assert.is_nil(refusal(load(bytes), "^offset 5: malformed header$"), hex(body))
    end
  end)

  -- 0xc1 is the one byte msgpack never uses: put where an object starts, the
  -- object does not decode.
  describe("garbage msgpack under a valid checksum is reported with its offset", function()
    local function at(pattern, from)
      local i = good:find(pattern, from or 1, true)
      assert(i, "no " .. hex(pattern) .. " in the checkpoint")
      return i - 1 -- 0-based
    end

    it("the header", function()
      assert.is_nil(refusal(load(fix_crc(set_byte(good, 5, 0xc1))), "^offset 5: malformed header$"))
    end)

    it("a state header, a state entry, a window header, a slice and a window's result header", function()
      -- The map opening each header is the byte before its first key.
      local idle = at("\165state\164idle") - 1
      local entry = at("\170partitions", idle) + 12 -- after "partitions" and its fixint
      local win = at("\166window\163win") - 1
      local slice = at("\166result\195", win) + 8   -- after "result" and true
      local result = at("\165state\170win#window") - 1
      local cases = {
        { idle, ("^offset %d: malformed state header$"):format(idle) },
        { entry, ("^state idle, entry 0 at offset %d: malformed$"):format(entry) },
        { win, ("^offset %d: malformed window header$"):format(win) },
        { slice, ("^window win, slice 0 at offset %d: malformed$"):format(slice) },
        { result, ("^window win: offset %d: malformed result header$"):format(result) },
      }
      for _, c in ipairs(cases) do
        -- Each position really starts an object of the expected kind.
        assert.is_true(c[1] > HEAD and good:byte(c[1] + 1) >= 0x80 and good:byte(c[1] + 1) <= 0x9f,
          ("offset %d holds %02x"):format(c[1], good:byte(c[1] + 1)))
        assert.is_nil(refusal(load(fix_crc(set_byte(good, c[1], 0xc1))), c[2]))
      end
    end)

    -- A malformed state header is reported at the header's own offset.
    it("a state header without its count is reported at the header's offset", function()
      local idle = at("\165state\164idle") - 1
      local count = at("\165count", idle)
      local r = load(fix_crc(set_byte(good, count + 1, ("x"):byte())))
      assert.is_nil(refusal(r, ("^offset %d: malformed state header$"):format(idle)))
    end)
  end)

  -- Every byte of the body replaced by a few values that change an
  -- object's type or announce more than there is (array32, map32, bin32,
  -- uint64, nil, false), with the checksum made valid so the decoder sees
  -- them: each file loads (a different but well-formed checkpoint) or is
  -- refused with an offset; never an error, a crash or a half-built result.
  it("every body byte rewritten under a valid checksum: a whole load or a refusal with an offset", function()
    local replacements = { "flip", 0xc1, 0xdd, 0xdf, 0xc6, 0xcf, 0xc0, 0xc2 }
    local failures, total, loaded, refused = {}, 0, 0, 0
    for i = HEAD, #good - TRAILER - 1 do
      for _, v in ipairs(replacements) do
        local bytes = v == "flip" and flip(good, i) or set_byte(good, i, v)
        if bytes ~= good then
          total = total + 1
          local r = load(fix_crc(bytes))
          local why
          if not r.ok then
            why = "raised: " .. tostring(r[1])
          elseif r[1] == nil then
            why = refusal(r, "offset %d+")
            if not why then refused = refused + 1 end
          elseif r.n ~= 3 or type(r[2]) ~= "table" or type(r[3]) ~= "table" then
            why = ("returned %d values: %s, %s, %s"):format(r.n, type(r[1]), type(r[2]), type(r[3]))
          else
            loaded = loaded + 1
          end
          if why then failures[#failures + 1] = ("byte %d := %s: %s"):format(i, tostring(v), why) end
        end
      end
    end
    none_failed(failures, total)
    -- Both outcomes happened: the sweep reached the decoder's checks.
    assert.is_true(refused > total / 4, ("%d refused of %d"):format(refused, total))
    assert.is_true(loaded > 0)
  end)

  -- Map keys Lua cannot index by are left out, so such metadata is refused, not raised.
  it("an extension-type or NaN map key in the metadata is refused, not raised", function()
    for _, meta in ipairs { "\129\212\1\0\1", "\129\203\127\248\0\0\0\0\0\0\1" } do
      local body = "\131\164meta" .. meta .. "\167nstates\0\168nwindows\0"
      local bytes = fix_crc("SRCK" .. string.char(ckpt.version) .. body .. ("\0"):rep(TRAILER))
      assert.is_nil(refusal(load(bytes)), hex(meta))
    end
  end)

  -- Metadata must be a map with a batch number and a time.
  it("metadata that is not a map with batch and time_ms is refused", function()
    for _, meta in ipairs { "\5", "\128" } do
      local body = "\131\164meta" .. meta .. "\167nstates\0\168nwindows\0"
      local bytes = fix_crc("SRCK" .. string.char(ckpt.version) .. body .. ("\0"):rep(TRAILER))
      assert.is_nil(refusal(load(bytes), "meta"), hex(meta))
    end
  end)

  -- -- Crafted checkpoints: what restore reads, ckpt.load (and so verify) checks --

  local enc = core.cstate.encode

  -- A checkpoint of the given sections (msgpack bytes after the header).
  local function crafted(nstates, nwindows, sections)
    local head = enc { meta = { job = "crafted", batch = 1, time_ms = 1000 }, nstates = nstates, nwindows = nwindows }
    return fix_crc("SRCK" .. string.char(ckpt.version) .. head .. sections .. ("\0"):rep(TRAILER))
  end

  local function state_block(name, entries, partitions)
    return enc { state = name, count = #entries, timeout_ms = 0, now_ms = 0, partitions = partitions or 1 }
      .. table.concat(entries)
  end

  -- An entry of key "k" whose value is the msgpack bytes v.
  local function entry(v) return "\147" .. enc("k") .. v .. "\192" end

  -- n arrays one inside the other around "x", as msgpack.
  local function nested_bytes(n) return ("\145"):rep(n) .. enc("x") end

  local function nested(n)
    local t = "x"
    for _ = 1, n do t = { t } end
    return t
  end

  it("a value nested 31 tables deep is stored and restored; 32 is refused by both", function()
    local st = core.cstate.new("deep", 1)
    assert.is_true(st:put("k", nested(31)))
    local ok, why = st:put("k2", nested(32))
    assert.is_nil(ok)
    assert.equal("cannot store a table nested deeper than 31 levels (a cycle?) in state", why)
    local d = proc.tmpdir()
    assert.is_true(ckpt.write(d, "c.srck", { batch = 1, time_ms = 1000 }, { st }, {}))
    local meta, states = ckpt.load(d .. "/c.srck")
    assert.truthy(meta, states)
    assert.same(nested(31), states.deep:get("k"))
    assert.equal(1, states.deep:count())
    -- The same bytes crafted: 31 loads, 32 is refused with the entry's offset.
    local r = load(crafted(1, 0, state_block("deep", { entry(nested_bytes(31)) })))
    assert.is_true(r.ok and r[1] ~= nil, tostring(r[2]))
    assert.same(nested(31), r[2].deep:get("k"))
    assert.is_nil(refusal(load(crafted(1, 0, state_block("deep", { entry(nested_bytes(32)) }))),
      "^state deep, entry 0 at offset %d+: malformed$"))
  end)

  it("keys and expiries restore cannot take are refused", function()
    for _, e in ipairs {
      "\147\145\1\1\192",          -- an array as the key
      "\147\192\1\192",            -- nil as the key
      "\147" .. enc("k") .. "\1\161x", -- a string as the expiry
    } do
      assert.is_nil(refusal(load(crafted(1, 0, state_block("s", { e }))), "^state s, entry 0 at offset %d+"), hex(e))
    end
  end)

  -- A window section: header, then slices {time, count, bin}.
  local function window_block(slices)
    local out = { enc { window = "w", nslices = #slices, result = false } }
    for i, sl in ipairs(slices) do
      local data = sl[2]
      out[#out + 1] = "\147" .. enc(1000 * i) .. enc(sl[1]) .. "\196" .. string.char(#data) .. data
    end
    return table.concat(out)
  end

  it("a window slice restore could not read is refused (verify checks what restore reads)", function()
    local good_slice = "\146" .. enc("a") .. "\1" -- the element {a, 1}
    local r = load(crafted(0, 1, window_block { { 1, good_slice }, { 2, good_slice .. "\145\2" } }))
    assert.is_true(r.ok and r[1] ~= nil, tostring(r[2]))
    local a, _, n = r[3].w.slices:read(0, 5000)
    assert.equal(3, n)
    assert.same({ "a", "a", 2 }, a)
    for _, bad in ipairs {
      { 1, "\193" },                       -- a byte msgpack never uses
      { 2, good_slice },                   -- fewer elements than counted
      { 0, good_slice },                   -- more
      { 1, enc("a") },                     -- an element that is not an array
      { 1, "\147\1\2\3" },                 -- an array of three
      { 1, "\146\1" },                     -- cut short
      { 1, "\145" .. nested_bytes(32) },   -- nested deeper than a value may be
      { 1, "\221\127\255\255\255" },       -- 2^31 elements announced in 5 bytes
    } do
      assert.is_nil(refusal(load(crafted(0, 1, window_block { bad })), "^window w, slice 0 at offset %d+: malformed$"),
        hex(bad[2]))
      local code = proc.run({ proc.ROOT .. "/build/streamrun", "inspect", probe, "--verify" })
      assert.equal(1, code, hex(bad[2]))
    end
  end)

  it("a slice at the depth limit restores and reads back", function()
    local r = load(crafted(0, 1, window_block { { 1, "\145" .. nested_bytes(31) } }))
    assert.is_true(r.ok and r[1] ~= nil, tostring(r[2]))
    local a = r[3].w.slices:read(0, 5000)
    assert.same(nested(31), a[1])
  end)

  it("200 states of 65536 partitions without keys load in little memory and time", function()
    local blocks = {}
    for i = 1, 200 do blocks[i] = state_block("s" .. i, {}, 65536) end
    local bytes = crafted(200, 0, table.concat(blocks))
    assert.is_true(#bytes < 16 * 1024, #bytes)
    local t0 = proc.now()
    local r = load(bytes)
    assert.is_true(r.ok and r[1] ~= nil, tostring(r[2]))
    local used = 0
    for _, st in pairs(r[2]) do used = used + st:memory() end
    -- A state without keys holds its header and timing wheel (a few KB), no table.
    assert.is_true(used < 2 * 1024 * 1024, "bytes held: " .. used)
    assert.is_true(proc.now() - t0 < 2, "seconds: " .. (proc.now() - t0))
  end)
end)

