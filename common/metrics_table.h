/* The one table of metrics (Varnish tbl/, like config_table.h).
 *
 * DM_METRIC(ID, TYPE, family, labels, scope, help)
 *   ID      the name in code: the enum constant DM_M_<ID>
 *   TYPE    COUNTER (only goes up), GAUGE (up and down; the sum of every
 *           shard's part), HISTOGRAM (a duration observed in microseconds,
 *           exported in seconds with the buckets of DM_METRICS_BUCKETS_US)
 *   family  the exported name without the prefix: danmaku_<family>; counters
 *           get _total appended unless it ends so already
 *   labels  "" or this series' label set, escaped as on the wire:
 *           "reason=\"eof\"" (histograms add le themselves)
 *   scope   which binary exports it: I ingest, B broadcast, IB both
 *   help    the family's HELP text
 *
 * A labelled family is one row per label value, so every series has its own
 * id and recording never looks a label up. The rows of a family are adjacent
 * and agree on TYPE, scope and help, with distinct label sets;
 * dm_metrics_new checks this and panics on a malformed table. */

/* Broadcast: viewers */
DM_METRIC(CONNECTIONS, GAUGE, connections, "", B, "Open viewer connections")
DM_METRIC(CONNECTIONS_ACCEPTED, COUNTER, connections_accepted, "", B,
          "Viewer TCP connections accepted")
DM_METRIC(HANDSHAKE_FAILURES, COUNTER, handshake_failures, "", B,
          "WebSocket handshakes refused or malformed")
DM_METRIC(ROOMS, GAUGE, rooms, "", B, "Rooms with at least one viewer on this node")
DM_METRIC(JOINS, COUNTER, joins, "", B, "Room joins")
DM_METRIC(LEAVES, COUNTER, leaves, "", B, "Room leaves, including those of closing connections")
DM_METRIC(DELIVERIES, COUNTER, deliveries, "", B, "Comment frames queued to viewers")
DM_METRIC(DELIVERY_BYTES, COUNTER, delivery_bytes, "", B,
          "Bytes of comment frames queued to viewers")
DM_METRIC(DENSITY_SKIPPED, COUNTER, density_skipped, "", B,
          "Comments not sent to a viewer by density control")
DM_METRIC(BACKFILL_FAILED, COUNTER, backfill_failed, "", B,
          "Fresh-join backfills served without Redis history (Redis did not answer)")
DM_METRIC(SLOW_SAMPLED, COUNTER, slow_viewer_sampled, "", B,
          "Comments dropped for viewers over their output bound (slow_viewer_sample)")
DM_METRIC(WS_WRITES, COUNTER, ws_writes, "", B,
          "writev calls to viewers (frames written / writes = frames per write)")
DM_METRIC(WS_FRAMES_WRITTEN, COUNTER, ws_frames_written, "", B,
          "Queued frames fully written to viewers (one may hold a batch of comments)")
DM_METRIC(CATCHUP_RECOVERED, COUNTER, catchup_recovered, "", B,
          "Resumes served exactly by reading the missed comments back from Kafka")
DM_METRIC(FANOUT_LATENCY, HISTOGRAM, fanout_latency_seconds, "", B,
          "Time from a record's timestamp to its frame queued to a viewer")

/* Broadcast: why viewer connections ended (one row per close reason) */
DM_METRIC(WS_CLOSED_EOF, COUNTER, ws_closed, "reason=\"eof\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_SOCKET_ERROR, COUNTER, ws_closed, "reason=\"socket_error\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_HANDSHAKE_TIMEOUT, COUNTER, ws_closed, "reason=\"handshake_timeout\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_HTTP_DONE, COUNTER, ws_closed, "reason=\"http_done\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_IDLE_TIMEOUT, COUNTER, ws_closed, "reason=\"idle_timeout\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_PEER_CLOSE, COUNTER, ws_closed, "reason=\"peer_close\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_PROTOCOL_ERROR, COUNTER, ws_closed, "reason=\"protocol_error\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_UNSUPPORTED_DATA, COUNTER, ws_closed, "reason=\"unsupported_data\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_INVALID_UTF8, COUNTER, ws_closed, "reason=\"invalid_utf8\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_TOO_BIG, COUNTER, ws_closed, "reason=\"too_big\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_SLOW_CONSUMER, COUNTER, ws_closed, "reason=\"slow_consumer\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_SHUTDOWN, COUNTER, ws_closed, "reason=\"shutdown\"", B,
          "Viewer connections closed, by reason")
DM_METRIC(WS_CLOSED_POLICY, COUNTER, ws_closed, "reason=\"policy\"", B,
          "Viewer connections closed, by reason")

/* Broadcast: Kafka consumer */
DM_METRIC(KAFKA_RECORDS, COUNTER, kafka_records, "", B, "Kafka records consumed")
DM_METRIC(KAFKA_RECORDS_SKIPPED, COUNTER, kafka_records_skipped, "", B,
          "Kafka records consumed but not delivered: undecodable or of no local room")
DM_METRIC(KAFKA_PARTITIONS_ASSIGNED, GAUGE, kafka_partitions_assigned, "", B,
          "Kafka partitions this node consumes")
DM_METRIC(KAFKA_CONSUMER_LAG, GAUGE, kafka_consumer_lag, "", B,
          "Records between the consumer position and the high watermark, all partitions")
DM_METRIC(KAFKA_CONSUMER_ERRORS, COUNTER, kafka_consumer_errors, "", B,
          "Kafka consumer errors reported by librdkafka")
DM_METRIC(KAFKA_PARTITION_RESETS, COUNTER, kafka_partition_resets, "", B,
          "Partitions whose offset was out of range and was reset")

/* Ingest: HTTP (one row per answered status) */
DM_METRIC(HTTP_REQUESTS_200, COUNTER, http_requests, "code=\"200\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_201, COUNTER, http_requests, "code=\"201\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_204, COUNTER, http_requests, "code=\"204\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_400, COUNTER, http_requests, "code=\"400\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_401, COUNTER, http_requests, "code=\"401\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_403, COUNTER, http_requests, "code=\"403\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_404, COUNTER, http_requests, "code=\"404\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_405, COUNTER, http_requests, "code=\"405\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_409, COUNTER, http_requests, "code=\"409\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_413, COUNTER, http_requests, "code=\"413\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_415, COUNTER, http_requests, "code=\"415\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_422, COUNTER, http_requests, "code=\"422\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_429, COUNTER, http_requests, "code=\"429\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_503, COUNTER, http_requests, "code=\"503\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_REQUESTS_OTHER, COUNTER, http_requests, "code=\"other\"", I,
          "Ingest HTTP requests, by status code")
DM_METRIC(HTTP_ROUTE_POST, COUNTER, http_requests_by_route, "route=\"post\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_RETRACT, COUNTER, http_requests_by_route, "route=\"retract\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_HISTORY, COUNTER, http_requests_by_route, "route=\"history\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_ROOM, COUNTER, http_requests_by_route, "route=\"room\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_MUTES, COUNTER, http_requests_by_route, "route=\"mutes\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_MODES, COUNTER, http_requests_by_route, "route=\"modes\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_HEALTH, COUNTER, http_requests_by_route, "route=\"health\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_METRICS, COUNTER, http_requests_by_route, "route=\"metrics\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_ROUTE_OTHER, COUNTER, http_requests_by_route, "route=\"other\"", I,
          "Ingest HTTP requests answered, by route")
DM_METRIC(HTTP_CONNECTIONS, GAUGE, http_connections, "", I, "Open ingest HTTP connections")
DM_METRIC(HTTP_REQUEST_TIMEOUTS, COUNTER, http_request_timeouts, "", I,
          "HTTP connections closed because a request did not arrive within "
          "http_request_timeout_ms")
DM_METRIC(HTTP_REQUEST_LATENCY, HISTOGRAM, http_request_duration_seconds, "", I,
          "Time from an HTTP request's arrival to its answer")

/* Ingest: Kafka producer and rate limiting */
DM_METRIC(KAFKA_PRODUCED, COUNTER, kafka_produced, "", I,
          "Kafka records acknowledged by the brokers")
DM_METRIC(KAFKA_DELIVERY_FAILED, COUNTER, kafka_delivery_failed, "", I,
          "Kafka records whose delivery failed or timed out")
DM_METRIC(KAFKA_DELIVERY_LATENCY, HISTOGRAM, kafka_delivery_latency_seconds, "", I,
          "Time from producing a Kafka record to its delivery report")
DM_METRIC(KAFKA_IN_FLIGHT, GAUGE, kafka_in_flight, "", I,
          "Kafka records produced and not yet reported")
DM_METRIC(IDEM_RECOVERY_FOUND, COUNTER, idempotency_recoveries, "result=\"found\"", I,
          "Idempotency-Key claims taken over from a dead attempt, by whether Kafka held its record")
DM_METRIC(IDEM_RECOVERY_ABSENT, COUNTER, idempotency_recoveries, "result=\"absent\"", I,
          "Idempotency-Key claims taken over from a dead attempt, by whether Kafka held its record")
DM_METRIC(IDEM_RECOVERY_FAILED, COUNTER, idempotency_recoveries, "result=\"failed\"", I,
          "Idempotency-Key claims taken over from a dead attempt, by whether Kafka held its record")
DM_METRIC(RATELIMIT_FALLBACK, COUNTER, ratelimit_fallback, "", I,
          "Rate limit decisions taken locally because Redis did not answer")
DM_METRIC(RATELIMIT_ADMIT, COUNTER, ratelimit_decisions, "verdict=\"admit\"", I,
          "Rate limit decisions (Redis or local), by verdict")
DM_METRIC(RATELIMIT_USER_RATE, COUNTER, ratelimit_decisions, "verdict=\"user_rate\"", I,
          "Rate limit decisions (Redis or local), by verdict")
DM_METRIC(RATELIMIT_ROOM_RATE, COUNTER, ratelimit_decisions, "verdict=\"room_rate\"", I,
          "Rate limit decisions (Redis or local), by verdict")
DM_METRIC(RATELIMIT_SLOW_MODE, COUNTER, ratelimit_decisions, "verdict=\"slow_mode\"", I,
          "Rate limit decisions (Redis or local), by verdict")
DM_METRIC(RATELIMIT_DUPLICATE, COUNTER, ratelimit_decisions, "verdict=\"duplicate\"", I,
          "Rate limit decisions (Redis or local), by verdict")
DM_METRIC(RATELIMIT_MUTED, COUNTER, ratelimit_decisions, "verdict=\"muted\"", I,
          "Rate limit decisions (Redis or local), by verdict")
DM_METRIC(COMMENTS_BLOCKED, COUNTER, comments_blocked, "", I,
          "Comments refused for a blocked word (blocked_words_action = reject)")
DM_METRIC(COMMENTS_MASKED, COUNTER, comments_masked, "", I,
          "Comments published with blocked words masked (blocked_words_action = mask)")

/* Both: accepting */
DM_METRIC(CONNECTIONS_REFUSED_MAX, COUNTER, connections_refused, "reason=\"max_connections\"", IB,
          "Client connections refused at accept, by reason")
DM_METRIC(CONNECTIONS_REFUSED_PER_IP, COUNTER, connections_refused,
          "reason=\"max_connections_per_ip\"", IB,
          "Client connections refused at accept, by reason")
DM_METRIC(CONNECTIONS_REFUSED_DRAINING, COUNTER, connections_refused, "reason=\"draining\"", IB,
          "Client connections refused at accept, by reason")
DM_METRIC(ACCEPT_PAUSES, COUNTER, accept_pauses, "", IB,
          "Times accepting stopped for a short pause: out of file descriptors or socket memory")

/* Both */
DM_METRIC(REDIS_ERRORS, COUNTER, redis_errors, "", IB,
          "Redis commands that failed, timed out or lost their connection")
