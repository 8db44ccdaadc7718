-- A module beside a job (spec/e2e/jobs/os_exit.lua) that ends the process.
local M = {}

function M.quit(code)
  os.exit(code)
end

return M
