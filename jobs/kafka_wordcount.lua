-- kafka_wordcount: counts the words of the text messages of a Kafka topic.
-- Words go through a repartition topic keyed by the word, so each word's
-- count lives in one task, whichever process and input partition the
-- lines came from. With a checkpoint directory, several processes with the
-- same group split the work (see README, Kafka).
--   streamrun kafka-mock --topic lines:8 --topic wordcount-words:8
--   streamrun run jobs/kafka_wordcount.lua --set brokers=HOST:PORT --checkpoint ckpt/kwc
-- --set repartition= (empty) counts per input partition instead.
local sr = require "streamrun"

local job = sr.job { name = "kafka_wordcount", batch = sr.param("batch", "1s") }

local words = job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("topic", "lines"),
                          group = sr.param("group", "wordcount"), name = "lines" }
   :flat_map(sr.words)
   :map(function(w) return w, 1 end)

local by_word = sr.param("repartition", "wordcount-words")
if by_word ~= "" then words = words:repartition(by_word, { name = "words" }) end

words:update_state_by_key(function(values, total) return (total or 0) + sr.sum(values) end, { name = "counts" })
     :print(sr.param("show", 10), { name = "top" })

return job
