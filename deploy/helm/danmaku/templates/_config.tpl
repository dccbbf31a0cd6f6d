{{/*
The configuration keys of the two binaries, from their --help (the table is
common/config_table.h): key -> which binaries read it (I ingest, B broadcast).
The chart's tests check this list against the built binaries.
*/}}
{{- define "danmaku.configKeys" -}}
log_level: IB
node_id: IB
listen_host: IB
drain_timeout_ms: IB
port_file: IB
http_port: I
max_body: I
max_text_chars: I
http_timeout_ms: I
http_request_timeout_ms: I
retry_after_s: I
blocked_words_file: I
blocked_words_action: I
cors_origins: I
jwt_alg: IB
jwt_secret: IB
jwt_key_file: IB
jwt_key_dir: IB
jwt_leeway_s: IB
jwt_issuer: IB
jwt_audience: IB
kafka_brokers: IB
kafka_topic: IB
kafka_partitions: IB
kafka_linger_ms: I
kafka_delivery_timeout_ms: I
kafka_queue_max: I
kafka_properties_file: IB
redis_host: IB
redis_port: IB
redis_user: IB
redis_password_file: IB
redis_prefix: IB
redis_timeout_ms: IB
history_max: I
idempotency_ttl_ms: I
history_ttl_ms: I
membership_ttl_ms: IB
ratelimit_user_rate: I
ratelimit_user_burst: I
ratelimit_room_rate: I
ratelimit_room_burst: I
ratelimit_local_max_keys: I
workers: IB
max_connections: IB
max_connections_per_ip: IB
kafka_fetch_wait_ms: B
partition_grace_ms: B
ws_port: B
recovery_window: B
recovery_age_ms: B
join_backfill: B
density_cap: B
online_interval_ms: B
max_rooms: B
max_message: B
max_header: B
max_client_outbuf: B
slow_viewer_sample: B
heartbeat_ms: B
idle_timeout_ms: B
handshake_timeout_ms: B
allow_anonymous: B
ws_allowed_origins: B
demo_page: B
demo_ingest_url: B
{{- end -}}

{{/* The binaries' defaults of the keys the chart computes with. */}}
{{- define "danmaku.keyDefault" -}}
{{- $defaults := dict "kafka_delivery_timeout_ms" "5000" "drain_timeout_ms" "5000" -}}
{{- index $defaults . -}}
{{- end -}}

{{/* Keys set from structured values; refused in config / <component>.config. */}}
{{- define "danmaku.reservedKeys" -}}
node_id: node_id is the pod's name
port_file: the chart sets the ports
http_port: set ingest.port
ws_port: set broadcast.port
jwt_alg: set jwt.alg
jwt_secret: put keys in a Secret (jwt.keys or jwt.existingSecret), never in a ConfigMap
jwt_key_file: set jwt.defaultKey
jwt_key_dir: the chart mounts the jwt Secret there
jwt_leeway_s: set jwt.leewaySeconds
jwt_issuer: set jwt.issuer
jwt_audience: set jwt.audience
kafka_brokers: set kafka.brokers
kafka_topic: set kafka.topic
kafka_partitions: set kafka.partitions
redis_host: set redis.host
redis_port: set redis.port
redis_prefix: set redis.prefix
redis_user: set redis.user
redis_password_file: set redis.password or redis.existingSecret
kafka_properties_file: set kafka.security.properties or kafka.security.existingSecret
blocked_words_file: set ingest.blockedWords
{{- end -}}

{{/* One configuration value as its string: (list key value). Whole numbers
stay whole (values files hold numbers as floats). */}}
{{- define "danmaku.configValue" -}}
{{- $k := index . 0 -}}
{{- $v := index . 1 -}}
{{- if or (kindIs "map" $v) (kindIs "slice" $v) -}}
{{- fail (printf "configuration key %s: value must be a string, number or boolean" $k) -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else -}}
{{- toString $v -}}
{{- end -}}
{{- end -}}

{{/*
The configuration of one component, as YAML key: "value" (keys in lower
case, without the DANMAKU_ prefix): (list $ "ingest"). Fails on unknown,
reserved or wrong-component keys.
*/}}
{{- define "danmaku.effectiveConfig" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $v := $root.Values -}}
{{- $c := index $v $component -}}
{{- $scope := ternary "I" "B" (eq $component "ingest") -}}
{{- $binary := printf "danmaku-%s" $component -}}
{{- $table := include "danmaku.configKeys" $root | fromYaml -}}
{{- $reserved := include "danmaku.reservedKeys" $root | fromYaml -}}
{{- $out := dict -}}
{{- /* shared keys: each to the binaries that read it */ -}}
{{- range $k, $val := $v.config -}}
{{- if not (hasKey $table $k) -}}
{{- fail (printf "config.%s is not a configuration key of danmaku-ingest or danmaku-broadcast (see their --help)" $k) -}}
{{- end -}}
{{- if hasKey $reserved $k -}}
{{- fail (printf "config.%s is set by the chart: %s" $k (index $reserved $k)) -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $val)) (contains $scope (index $table $k)) -}}
{{- $_ := set $out $k (include "danmaku.configValue" (list $k $val)) -}}
{{- end -}}
{{- end -}}
{{- /* component keys, over the shared ones */ -}}
{{- range $k, $val := $c.config -}}
{{- if not (and (hasKey $table $k) (contains $scope (index $table $k))) -}}
{{- fail (printf "%s.config.%s is not a configuration key of %s (see %s --help)" $component $k $binary $binary) -}}
{{- end -}}
{{- if hasKey $reserved $k -}}
{{- fail (printf "%s.config.%s is set by the chart: %s" $component $k (index $reserved $k)) -}}
{{- end -}}
{{- if not (kindIs "invalid" $val) -}}
{{- $_ := set $out $k (include "danmaku.configValue" (list $k $val)) -}}
{{- end -}}
{{- end -}}
{{- /* keys the chart owns */ -}}
{{- $_ := set $out (ternary "http_port" "ws_port" (eq $component "ingest")) (include "danmaku.configValue" (list "port" $c.port)) -}}
{{- $_ := set $out "kafka_brokers" (toString $v.kafka.brokers) -}}
{{- $_ := set $out "kafka_topic" (toString $v.kafka.topic) -}}
{{- $_ := set $out "kafka_partitions" (include "danmaku.configValue" (list "kafka.partitions" $v.kafka.partitions)) -}}
{{- $_ := set $out "redis_host" (toString $v.redis.host) -}}
{{- $_ := set $out "redis_port" (include "danmaku.configValue" (list "redis.port" $v.redis.port)) -}}
{{- $_ := set $out "redis_prefix" (toString $v.redis.prefix) -}}
{{- with $v.redis.user }}{{ $_ := set $out "redis_user" (toString .) }}{{ end -}}
{{- if include "danmaku.redisSecretName" $root -}}
{{- $_ := set $out "redis_password_file" (printf "%s/%s" (include "danmaku.redisDir" $root) (include "danmaku.redisSecretKey" $root)) -}}
{{- end -}}
{{- if include "danmaku.kafkaSecretName" $root -}}
{{- $_ := set $out "kafka_properties_file" (printf "%s/%s" (include "danmaku.kafkaDir" $root) (include "danmaku.kafkaSecretKey" $root)) -}}
{{- end -}}
{{- $_ := set $out "jwt_alg" (toString $v.jwt.alg) -}}
{{- $_ := set $out "jwt_leeway_s" (include "danmaku.configValue" (list "jwt.leewaySeconds" $v.jwt.leewaySeconds)) -}}
{{- with $v.jwt.issuer }}{{ $_ := set $out "jwt_issuer" (toString .) }}{{ end -}}
{{- with $v.jwt.audience }}{{ $_ := set $out "jwt_audience" (toString .) }}{{ end -}}
{{- $_ := set $out "jwt_key_dir" (include "danmaku.jwtKeyDir" $root) -}}
{{- with include "danmaku.jwtDefaultKey" $root -}}
{{- $_ := set $out "jwt_key_file" (printf "%s/%s" (include "danmaku.jwtKeyDir" $root) .) -}}
{{- end -}}
{{- if and (eq $component "ingest") $c.blockedWords -}}
{{- $_ := set $out "blocked_words_file" (printf "%s/blocked-words.txt" (include "danmaku.blockedWordsDir" $root)) -}}
{{- end -}}
{{- if not (hasKey $out "workers") -}}
{{- $res := $c.resources | default dict -}}
{{- $cpu := "" -}}
{{- if $c.workers -}}
{{- $cpu = include "danmaku.configValue" (list "workers" $c.workers) -}}
{{- else if and $res.limits (get ($res.limits | default dict) "cpu") -}}
{{- $cpu = include "danmaku.ceilCPU" $res.limits.cpu -}}
{{- else if and $res.requests (get ($res.requests | default dict) "cpu") -}}
{{- $cpu = include "danmaku.ceilCPU" $res.requests.cpu -}}
{{- end -}}
{{- if $cpu -}}
{{- $_ := set $out "workers" $cpu -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The Secret item verifying tokens without a kid, or "". */}}
{{- define "danmaku.jwtDefaultKey" -}}
{{- $j := .Values.jwt -}}
{{- if $j.defaultKey -}}
{{- $j.defaultKey -}}
{{- else if and (not $j.existingSecret) (not $j.keys) $j.generate -}}
default.key
{{- end -}}
{{- end -}}

{{/* Checks the JWT values; renders nothing. */}}
{{- define "danmaku.validateJwt" -}}
{{- $j := .Values.jwt -}}
{{- if not (has (toString $j.alg) (list "HS256" "HS384" "HS512" "RS256" "ES256")) -}}
{{- fail (printf "jwt.alg %v: must be HS256, HS384, HS512, RS256 or ES256" $j.alg) -}}
{{- end -}}
{{- if not $j.existingSecret -}}
{{- if $j.keys -}}
{{- if gt (len $j.keys) 16 -}}
{{- fail "jwt.keys: at most 16 keys" -}}
{{- end -}}
{{- range $name, $_ := $j.keys -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]{1,64}\\.(key|pem)$" $name) -}}
{{- fail (printf "jwt.keys: item %q must be named <kid>.key or <kid>.pem (kid: 1..64 of [A-Za-z0-9._-])" $name) -}}
{{- end -}}
{{- if and (hasPrefix "HS" (toString $j.alg)) (lt (len (trimSuffix "\n" (toString (index $j.keys $name)))) 32) -}}
{{- fail (printf "jwt.keys: %s: an HS* secret needs at least 32 bytes" $name) -}}
{{- end -}}
{{- if hasPrefix "." $name -}}
{{- fail (printf "jwt.keys: item %q must not start with a dot" $name) -}}
{{- end -}}
{{- end -}}
{{- if and $j.defaultKey (not (hasKey $j.keys $j.defaultKey)) -}}
{{- fail (printf "jwt.defaultKey %q is not one of jwt.keys" $j.defaultKey) -}}
{{- end -}}
{{- else if $j.generate -}}
{{- if not (hasPrefix "HS" (toString $j.alg)) -}}
{{- fail "jwt.generate makes an HS* secret: with RS256/ES256 give the public keys in jwt.keys or jwt.existingSecret" -}}
{{- end -}}
{{- if and $j.defaultKey (ne $j.defaultKey "default.key") -}}
{{- fail "jwt.defaultKey: the generated key is default.key" -}}
{{- end -}}
{{- else -}}
{{- fail "no JWT key: set jwt.keys, jwt.existingSecret or jwt.generate" -}}
{{- end -}}
{{- end -}}
{{- end -}}
