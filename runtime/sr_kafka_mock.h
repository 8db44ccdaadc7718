/* sr_kafka_mock: the `streamrun kafka-mock` command (librdkafka's mock
 * cluster in the foreground). */
#ifndef SR_KAFKA_MOCK_H
#define SR_KAFKA_MOCK_H

/* Runs the command with its arguments (argv[0] is "kafka-mock"). Returns
 * the process exit code: 0 after a stop signal or `quit`, 1 when the
 * cluster cannot start, 2 on bad usage. */
int sr_kafka_mock_main(int argc, char **argv);

#endif
