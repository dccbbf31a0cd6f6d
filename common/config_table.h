/* The one table of configuration keys (Redis config table, Varnish params).
 *
 * DM_CONF(name, TYPE, default, min, max, scope, help)
 *   TYPE   STR (string), INT (integer), SIZE (bytes, k/m/g suffixes), BOOL
 *   min/max bound INT and SIZE values (ignored for STR and BOOL)
 *   scope  which binaries read the key: I ingest, B broadcast, IB both
 *
 * Each key is settable as --name-with-dashes=VALUE, as the environment
 * variable DANMAKU_NAME, or as `name = value` in the file given by --config.
 * Precedence: default < file < environment < command line. */

/* Process */
DM_CONF(log_level, STR, "info", 0, 0, IB, "log level: debug, info, warn, error")
DM_CONF(node_id, STR, "", 0, 0, IB, "node name in logs and Redis (default: <hostname>-<pid>)")
DM_CONF(listen_host, STR, "0.0.0.0", 0, 0, IB, "address to listen on")
DM_CONF(drain_timeout_ms, INT, "5000", 100, 600000, IB,
        "on SIGTERM, longest wait for in-flight work before exiting: broadcast viewers taking "
        "their reconnect; ingest answers to accepted comments (at least "
        "kafka_delivery_timeout_ms + 1 s)")
DM_CONF(port_file, STR, "", 0, 0, IB, "write the bound port to this file (for port 0)")

/* Ingest HTTP */
DM_CONF(http_port, INT, "8080", 0, 65535, I, "ingest HTTP port (0: pick a free one)")
DM_CONF(max_body, SIZE, "4k", 256, 1048576, I, "largest accepted request body")
DM_CONF(max_text_chars, INT, "100", 1, 1000, I, "longest comment text in code points")
DM_CONF(http_timeout_ms, INT, "10000", 100, 600000, I, "HTTP read/write idle timeout")
DM_CONF(http_request_timeout_ms, INT, "5000", 100, 600000, I,
        "a request (head and body) must arrive in full within this long of the connection "
        "opening or of its first byte; slower clients are answered 408 and closed (slowloris)")
DM_CONF(retry_after_s, INT, "1", 1, 3600, I, "Retry-After seconds sent with 503")
DM_CONF(blocked_words_file, STR, "", 0, 0, I,
        "blocked words or phrases, one per line, # comments (empty: no filter)")
DM_CONF(blocked_words_action, STR, "reject", 0, 0, I,
        "a comment with a blocked word: reject (400 blocked) or mask (with *)")
DM_CONF(cors_origins, STR, "*", 0, 0, I, "origins allowed to post from browsers: * or a comma list")

/* JWT */
DM_CONF(jwt_alg, STR, "HS256", 0, 0, IB, "pinned JWT algorithm: HS256, HS384, HS512, RS256, ES256")
DM_CONF(jwt_secret, STR, "", 0, 0, IB, "HS* shared secret (prefer jwt_key_file)")
DM_CONF(jwt_key_file, STR, "", 0, 0, IB, "file holding the HS* secret or the PEM public key")
DM_CONF(jwt_key_dir, STR, "", 0, 0, IB,
        "directory of <kid>.pem/<kid>.key files: keys for tokens with that kid (rotation)")
DM_CONF(jwt_leeway_s, INT, "30", 0, 600, IB, "clock leeway for exp/nbf/iat, seconds")
DM_CONF(jwt_issuer, STR, "", 0, 0, IB, "required iss claim (empty: not checked)")
DM_CONF(jwt_audience, STR, "", 0, 0, IB, "required aud claim (empty: not checked)")

/* Kafka */
DM_CONF(kafka_brokers, STR, "127.0.0.1:9092", 0, 0, IB, "Kafka bootstrap servers")
DM_CONF(kafka_topic, STR, "danmaku.comments", 0, 0, IB, "comment topic")
DM_CONF(kafka_partitions, INT, "32", 1, 100000, IB, "partition count P of the topic (room hash)")
DM_CONF(kafka_linger_ms, INT, "2", 0, 1000, I, "producer linger.ms")
DM_CONF(kafka_delivery_timeout_ms, INT, "5000", 100, 300000, I,
        "give up on a record (answer 503) after this long")
DM_CONF(kafka_queue_max, INT, "100000", 100, 10000000, I, "records in flight before 503")
DM_CONF(kafka_properties_file, STR, "", 0, 0, IB,
        "librdkafka properties (`name = value` lines, # comments) applied to every Kafka "
        "client, e.g. security.protocol, ssl.ca.location, sasl.mechanisms, sasl.username, "
        "sasl.password: TLS and SASL. Keep it in a secret; its values are never logged")
DM_CONF(kafka_fetch_wait_ms, INT, "5", 1, 1000, B, "consumer fetch.wait.max.ms")
DM_CONF(partition_grace_ms, INT, "30000", 0, 3600000, B,
        "release a partition this long after its last local viewer left")

/* Redis */
DM_CONF(redis_host, STR, "127.0.0.1", 0, 0, IB, "Redis host")
DM_CONF(redis_port, INT, "6379", 1, 65535, IB, "Redis port")
DM_CONF(redis_user, STR, "", 0, 0, IB, "Redis ACL user (empty: the default user)")
DM_CONF(redis_password_file, STR, "", 0, 0, IB,
        "file holding the Redis password, sent with AUTH on every connection (empty: no AUTH)")
DM_CONF(redis_prefix, STR, "dm:", 0, 0, IB, "prefix of every Redis key")
DM_CONF(redis_timeout_ms, INT, "250", 10, 60000, IB, "longest wait for any Redis reply")
DM_CONF(history_max, INT, "500", 0, 100000, I,
        "recent comments kept per room in Redis for the history API and backfill (0: none)")
DM_CONF(idempotency_ttl_ms, INT, "300000", 1000, 86400000, I,
        "how long the answer to an Idempotency-Key is kept for retries")
DM_CONF(history_ttl_ms, INT, "600000", 1000, 604800000, I,
        "a room's history in Redis expires this long after its last comment")
DM_CONF(membership_ttl_ms, INT, "15000", 1000, 600000, IB,
        "TTL of a broadcast node's room counts and heartbeat in Redis")
DM_CONF(ratelimit_user_rate, INT, "1", 0, 1000000, I,
        "comments per second one user may post, over all rooms (0: no user limit)")
DM_CONF(ratelimit_user_burst, INT, "5", 1, 1000000, I,
        "comments one user may post at once before ratelimit_user_rate paces them")
DM_CONF(ratelimit_room_rate, INT, "200", 0, 1000000, I,
        "comments per second one room accepts from all its senders (0: no room limit)")
DM_CONF(ratelimit_room_burst, INT, "400", 1, 10000000, I,
        "comments one room accepts at once before ratelimit_room_rate paces them")
DM_CONF(ratelimit_local_max_keys, INT, "65536", 64, 16777216, I,
        "entries (48 bytes each) of the local limiter used while Redis does not answer")

/* Broadcast WebSocket */
DM_CONF(ws_port, INT, "8081", 0, 65535, B, "broadcast WebSocket port (0: pick a free one)")
DM_CONF(recovery_window, INT, "500", 0, 100000, B,
        "recent comments kept per room for exact resume (0: no resume)")
DM_CONF(recovery_age_ms, INT, "600000", 1000, 86400000, B,
        "oldest comment kept for resume; a room lingers this long at most once empty")
DM_CONF(join_backfill, INT, "0", 0, 1000, B,
        "recent comments a fresh join gets before the live stream (window, then Redis history)")
DM_CONF(density_cap, INT, "500", 0, 1000000, B,
        "comments per second one viewer gets from one room before sampling (0: no cap)")
DM_CONF(online_interval_ms, INT, "5000", 0, 600000, B,
        "push each room's online count this often (0: never)")
DM_CONF(workers, INT, "0", 0, 256, IB, "event-loop threads (0: one per CPU this process may use)")
DM_CONF(max_connections, INT, "19000", 1, 10000000, IB,
        "client connections this node holds at once (viewers, or HTTP senders); more are "
        "answered 503 and closed. Keep it below the process's descriptor limit")
DM_CONF(max_connections_per_ip, INT, "0", 0, 10000000, IB,
        "client connections one address may hold at once (IPv6: one /64), more are answered "
        "503 and closed (0: no limit). Leave it 0 behind a load balancer or proxy that does not "
        "pass the client address (no PROXY protocol): every peer is then the balancer")
DM_CONF(max_rooms, INT, "8", 1, 1024, B, "rooms one connection may join")
DM_CONF(max_message, SIZE, "4k", 128, 1048576, B, "largest client message")
DM_CONF(max_header, SIZE, "8k", 1024, 65536, B, "largest handshake request head")
DM_CONF(max_client_outbuf, SIZE, "1m", 4096, 1073741824, B, "pending output per viewer before 4008")
DM_CONF(slow_viewer_sample, BOOL, "false", 0, 0, B,
        "over max_client_outbuf, drop normal comments for that viewer (counted, sent as "
        "skipped) instead of closing it with 4008; closed only at twice the bound")
DM_CONF(heartbeat_ms, INT, "15000", 100, 600000, B, "server ping interval")
DM_CONF(idle_timeout_ms, INT, "45000", 300, 3600000, B, "close a viewer silent this long")
DM_CONF(handshake_timeout_ms, INT, "5000", 100, 600000, B, "time allowed for the handshake")
DM_CONF(allow_anonymous, BOOL, "true", 0, 0, B, "viewers may watch without a token")
DM_CONF(ws_allowed_origins, STR, "", 0, 0, B,
        "Origin values allowed to connect: comma list, empty for any")
DM_CONF(demo_page, BOOL, "true", 0, 0, B,
        "serve the demo viewer page at / (a stage where the room's comments fly, a room "
        "picker and a send box); false answers / with 404")
DM_CONF(demo_ingest_url, STR, "", 0, 0, B,
        "base URL of the ingest API the demo page posts comments to, as browsers reach it, "
        "e.g. https://api.example.com or /ingest behind the same proxy (empty: the page's "
        "own scheme and host name with port 8080); http(s) URLs or absolute paths only. "
        "A #ingest=URL in the page address is taken only with the page's or this URL's origin")
