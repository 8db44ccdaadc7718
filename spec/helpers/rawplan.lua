-- helpers.rawplan: for the specs of chains that read a text source's C
-- batch where it lies (event_raw_spec, words_raw_spec): a sealed C batch
-- of lines, and a job's plan whose dead letters are listed as text.
local compile = require "streamrun.compile"
local core = require "streamrun.core"

local C, ffi = core.C, core.ffi

local M = {}

-- A sealed C batch of the lines, line i at offset base + 10 * i.
function M.c_batch(lines, base)
  local b = ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
  for i, r in ipairs(lines) do assert(C.sr_batch_append(b, r, #r, base + 10 * i) == 0) end
  return b
end

-- The plan of job, and the list its dead letters go to, each as
-- "source@offset reason | record" (reason: its first line, with
-- first_line). event: the plan's event-time data (optional).
function M.compile(job, event, first_line)
  local dead = {}
  local plan = compile.compile(job, {
    on_error = "dead_letter",
    dead_letter = function(source, offset, reason, record)
      if first_line then reason = reason:match("^[^\n]*") end
      dead[#dead + 1] = ("%s@%s %s | %s"):format(tostring(source), tostring(offset), reason, tostring(record))
    end,
    sink = { stdout = io.stdout, quiet_print = true },
    event = event,
  })
  return plan, dead
end

return M
