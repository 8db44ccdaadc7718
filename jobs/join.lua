-- join: two streams joined per batch by order id: orders and their payments.
-- Orders look like {"order":17,"user":"ann"}, payments like {"order":17,"paid":12.5}.
--   streamrun run jobs/join.lua                          built-in generators
--   streamrun run jobs/join.lua --set source=listen      orders on :7071, payments on :7072
local sr = require "streamrun"

local job = sr.job { name = "join", batch = sr.param("batch", "1s") }

local orders, payments
if sr.param("source", "generator") == "listen" then
  local host = sr.param("host", "127.0.0.1")
  orders = job:listen_text(host, sr.param("orders_port", 7071), { name = "orders", format = "json" })
  payments = job:listen_text(host, sr.param("payments_port", 7072), { name = "payments", format = "json" })
else
  local users = { "ann", "bob", "cid", "dee" }
  orders = job:generator(function(i) return { order = i, user = users[i % #users + 1] } end,
                         { name = "orders", rate = 4 })
  -- Every other order is paid, in the same batch.
  payments = job:generator(function(i) return { order = i * 2, paid = i * 2 * 1.5 } end,
                           { name = "payments", rate = 2 })
end

local by_order = function(e) return e.order end

orders:key_by(by_order)
      :join(payments:key_by(by_order), { name = "paid_orders" })
      :map(function(order_id, pair)
        local order, payment = pair[1], pair[2]
        return order.user, payment.paid
      end)
      :reduce_by_key(sr.add)
      :print({ name = "paid_by_user" })

return job
