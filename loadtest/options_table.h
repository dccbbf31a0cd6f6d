/* LT_OPT(name, TYPE, default, help): every flag of danmaku-loadtest, as
 * --name-with-dashes. TYPE is STR, INT, REAL or BOOL. */

/* What to run */
LT_OPT(scenario, STR, "",
       "preset: hot-room, many-rooms, connect-storm, reconnect-storm, slow-viewers, ingest-max")
LT_OPT(duration, REAL, "10", "seconds of measured load")
LT_OPT(warmup, REAL, "3", "seconds of load before measuring (not counted)")
LT_OPT(drain, REAL, "2", "seconds to wait for deliveries after the last send")

/* Targets */
LT_OPT(ws, STR, "127.0.0.1:8081", "broadcast nodes, host:port[,host:port...]")
LT_OPT(ingest, STR, "127.0.0.1:8080", "ingest node host:port (publish=http)")
LT_OPT(publish, STR, "http",
       "publish path: http (through ingest) or kafka (straight into the topic)")
LT_OPT(kafka_brokers, STR, "127.0.0.1:9092", "Kafka bootstrap servers (publish=kafka)")
LT_OPT(kafka_topic, STR, "danmaku.comments", "topic (publish=kafka)")
LT_OPT(kafka_partitions, INT, "32", "partition count of the topic (room hash)")
LT_OPT(kafka_properties_file, STR, "",
       "librdkafka properties for publish=kafka (TLS, SASL), the format of the nodes' "
       "kafka_properties_file")
LT_OPT(jwt_secret, STR, "", "HS256 secret to mint sender tokens (or DANMAKU_JWT_SECRET)")
LT_OPT(jwt_secret_file, STR, "", "file holding the HS256 secret")
LT_OPT(senders, INT, "100", "distinct sender identities (tokens) to spread comments over")

/* Load shape */
LT_OPT(viewers, INT, "100", "WebSocket viewers")
LT_OPT(rooms, INT, "1", "rooms")
LT_OPT(hot_share, REAL, "0", "share of viewers and comments in room 0 (0: uniform)")
LT_OPT(rate, REAL, "100", "comments per second, all rooms together (open loop)")
LT_OPT(message_size, INT, "100", "bytes of comment text (30..1000)")
LT_OPT(connect_rate, REAL, "2000", "new connections per second")
LT_OPT(threads, INT, "1", "viewer threads per process (one event loop each)")
LT_OPT(procs, INT, "1", "viewer processes (past the per-process file descriptor limit)")
LT_OPT(source_addrs, INT, "1",
       "local source addresses 127.0.0.1..N (past 64k connections per target)")
LT_OPT(http_conns, INT, "32", "keep-alive connections to ingest (publish=http)")
LT_OPT(slow_share, REAL, "0", "share of viewers that stop reading after the warm-up")
LT_OPT(reconnect_every, REAL, "0", "each viewer reconnects every ~N seconds and resumes (0: never)")
LT_OPT(room_prefix, STR, "", "room name prefix (default: lt-<random>)")

/* Output and verdict */
LT_OPT(json, STR, "", "write every figure to this JSON file")
LT_OPT(html, STR, "", "write a self-contained HTML report here")
LT_OPT(max_loss, REAL, "0",
       "fail (exit 2) when more than this share of expected deliveries is lost")
LT_OPT(slo_p99, REAL, "0", "fail (exit 2) when p99 latency exceeds this many ms (0: no SLO)")
LT_OPT(quiet, BOOL, "false", "no progress line")
LT_OPT(commit, STR, "", "commit recorded in the report (or DANMAKU_COMMIT)")
LT_OPT(kafka_mode, STR, "external", "recorded in the report: real, embedded or external")
LT_OPT(server_cpus, STR, "", "recorded in the report: CPUs the servers are pinned to")
