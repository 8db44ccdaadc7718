-- Lines in, each written out as a JSON string by to_json_lines "out": from
-- stdin, or a text file with --set input=PATH; --set out=PATH (or "-"),
-- on_error=fail, ckpt=DIR (a checkpoint every batch), max=N
-- (max_batch_records), format=json (a line that is not JSON is a dead
-- letter), dl_max=N (the dead-letter file rotates at N bytes, 2 kept).
local sr = require "streamrun"
local ckpt = sr.param("ckpt", "")
local job = sr.job {
  name = "json_out", batch = "100ms",
  max_batch_records = sr.param("max", 1000),
  on_error = sr.param("on_error", "dead_letter"),
  checkpoint = ckpt ~= "" and { dir = ckpt, every = "100ms" } or nil,
  dead_letters = { max_bytes = sr.param("dl_max", 64 * 1024 * 1024), keep = 2 },
}
local input = sr.param("input", "")
local format = sr.param("format", "text")
local lines = input ~= "" and job:text_file(input, { name = "lines", format = format })
  or job:stdin { name = "lines", format = format }
lines:to_json_lines(sr.param("out", "-"), { name = "out" })
return job
