-- jobs/kafka_wordcount.lua through the test driver (no Kafka: the driver's
-- pushes are the messages; the repartition topic is left out).
local testing = require "streamrun.testing"

describe("jobs/kafka_wordcount.lua", function()
  it("counts words across batches", function()
    local d = testing.driver("jobs/kafka_wordcount.lua", { params = { repartition = "" } })
    d:push("lines", { "the cat", "the dog" })
    d:tick()
    d:push("lines", { "The cat  sat" })
    d:tick()
    assert.same({ the = 2, The = 1, cat = 2, dog = 1, sat = 1 }, d:state("counts"))
  end)

  it("checks: the repartitioned graph names its topic", function()
    local job = require("streamrun.loader").load("jobs/kafka_wordcount.lua", { params = {} })
    local text = job:describe()
    assert.matches("words%.out%s+to_kafka", text)
    assert.matches("words%s+kafka", text)
  end)
end)
