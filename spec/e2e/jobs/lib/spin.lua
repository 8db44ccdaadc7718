-- Loops that never return, for the stage_timeout jobs: one in interpreted
-- code (a debug hook stops it), one LuaJIT compiles (no hook runs there).
local M = {}

function M.interpreted()
  local x = 0
  while true do x = x + 1 end
end
jit.off(M.interpreted)

function M.compiled()
  local i = 0
  while true do i = i + 1 end
end

return M
