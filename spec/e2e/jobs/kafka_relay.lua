-- Reads text values from a Kafka topic and produces each upper-cased, as
-- JSON, to another, keyed by its first letter (--set brokers=HOST:PORT
-- [from= to= group=]).
local sr = require "streamrun"
local job = sr.job { name = "kafka_relay", batch = "100ms" }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("from", "words"),
            group = sr.param("group", "relay"), name = "words" }
   :map(function(w) return { word = w:upper(), length = #w } end)
   :to_kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("to", "upper"),
               key = function(e) return e.word:sub(1, 1) end, name = "out" }
return job
