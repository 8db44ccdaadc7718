-- A checkpointed Kafka job (so: run as tasks) with an output to a file:
-- refused, since its tasks would share the file (--set dir= brokers=).
local sr = require "streamrun"
local job = sr.job { name = "kafka_file_out", checkpoint = { dir = sr.param("dir", "ckpt") } }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = "t", name = "in" }
   :to_json_lines(sr.param("out", "out.jsonl"))
return job
