{{/* Names, labels and small shared pieces. */}}

{{- define "danmaku.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name when it contains the chart name. */}}
{{- define "danmaku.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: <fullname>-<component> (the full name cut to fit). */}}
{{- define "danmaku.componentName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "danmaku.fullname" $root | trunc (int (sub 62 (len $component))) | trimSuffix "-") $component -}}
{{- end -}}

{{- define "danmaku.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "danmaku.labels" -}}
helm.sh/chart: {{ include "danmaku.chart" . }}
app.kubernetes.io/name: {{ include "danmaku.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: danmaku
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (list $ "ingest"). */}}
{{- define "danmaku.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "danmaku.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component's resources: (list $ "ingest"). */}}
{{- define "danmaku.componentLabels" -}}
{{ include "danmaku.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "danmaku.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion ($img.tag | toString)) -}}
{{- end -}}
{{- end -}}

{{- define "danmaku.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "danmaku.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the JWT keys. */}}
{{- define "danmaku.jwtSecretName" -}}
{{- if .Values.jwt.existingSecret -}}
{{- .Values.jwt.existingSecret -}}
{{- else -}}
{{- printf "%s-jwt" (include "danmaku.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the JWT key Secret is mounted (jwt_key_dir). */}}
{{- define "danmaku.jwtKeyDir" -}}/etc/danmaku/jwt{{- end -}}
{{/* Where the blocked words file is mounted. */}}
{{- define "danmaku.blockedWordsDir" -}}/etc/danmaku/blocked-words{{- end -}}

{{/* Seconds a node may take to drain after SIGTERM, rounded up: (list $ "ingest").
broadcast waits drain_timeout_ms; ingest max(drain_timeout_ms,
kafka_delivery_timeout_ms + 1000), so an accepted comment keeps its answer. */}}
{{- define "danmaku.drainSeconds" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $cfg := include "danmaku.effectiveConfig" (list $root $component) | fromYaml -}}
{{- $ms := int64 (include "danmaku.keyDefault" "drain_timeout_ms") -}}
{{- if hasKey $cfg "drain_timeout_ms" -}}
{{- $ms = int64 (index $cfg "drain_timeout_ms") -}}
{{- end -}}
{{- if eq $component "ingest" -}}
{{- $timeout := int64 (include "danmaku.keyDefault" "kafka_delivery_timeout_ms") -}}
{{- if hasKey $cfg "kafka_delivery_timeout_ms" -}}
{{- $timeout = int64 (index $cfg "kafka_delivery_timeout_ms") -}}
{{- end -}}
{{- $ms = max $ms (add $timeout 1000) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: preStop sleep + drain + margin: (list $ "ingest"). */}}
{{- define "danmaku.gracePeriod" -}}
{{- $root := index . 0 -}}
{{- $c := index $root.Values (index . 1) -}}
{{- add (int64 $c.preStopSleepSeconds) (int64 (include "danmaku.drainSeconds" .)) (int64 $c.terminationMarginSeconds) -}}
{{- end -}}

{{/* A Kubernetes CPU quantity ("500m", "1.5", 2) rounded up to whole CPUs, or "" for none. */}}
{{- define "danmaku.ceilCPU" -}}
{{- $q := toString . -}}
{{- if and . (ne $q "") -}}
{{- if hasSuffix "m" $q -}}
{{- div (add (int64 (trimSuffix "m" $q)) 999) 1000 -}}
{{- else -}}
{{- ceil (float64 $q) | int64 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Kafka client properties (TLS, SASL): the Secret holding the file, or "" for none. */}}
{{- define "danmaku.kafkaSecretName" -}}
{{- $s := .Values.kafka.security -}}
{{- if $s.existingSecret -}}
{{- $s.existingSecret -}}
{{- else if $s.properties -}}
{{- printf "%s-kafka" (include "danmaku.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- define "danmaku.kafkaSecretKey" -}}
{{- if .Values.kafka.security.existingSecret -}}
{{- .Values.kafka.security.existingSecretKey | default "client.properties" -}}
{{- else -}}
client.properties
{{- end -}}
{{- end -}}
{{- define "danmaku.kafkaDir" -}}/etc/danmaku/kafka{{- end -}}
{{- define "danmaku.kafkaTlsDir" -}}/etc/danmaku/kafka-tls{{- end -}}

{{/* Redis password: the Secret holding it, or "" for none. */}}
{{- define "danmaku.redisSecretName" -}}
{{- $r := .Values.redis -}}
{{- if $r.existingSecret -}}
{{- $r.existingSecret -}}
{{- else if $r.password -}}
{{- printf "%s-redis" (include "danmaku.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- define "danmaku.redisSecretKey" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecretKey | default "password" -}}
{{- else -}}
password
{{- end -}}
{{- end -}}
{{- define "danmaku.redisDir" -}}/etc/danmaku/redis{{- end -}}

{{/* "true" when the pods carry the prometheus.io/* scrape annotations, else "".
metrics.podAnnotations: true, false, or auto (on unless the ServiceMonitor is:
both would make one Prometheus scrape every pod twice). */}}
{{- define "danmaku.podScrapeAnnotations" -}}
{{- $m := .Values.metrics -}}
{{- if kindIs "bool" $m.podAnnotations -}}
{{- if $m.podAnnotations }}true{{ end -}}
{{- else if not $m.serviceMonitor.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* An IntOrString value: a number as an integer, a percentage quoted ("50%"). */}}
{{- define "danmaku.intOrPercent" -}}
{{- $s := toString . -}}
{{- if hasSuffix "%" $s -}}
{{- quote $s -}}
{{- else -}}
{{- int64 . -}}
{{- end -}}
{{- end -}}

{{/* One word for a POSIX shell: single-quoted, embedded quotes escaped. */}}
{{- define "danmaku.shq" -}}
'{{ toString . | replace "'" "'\\''" }}'
{{- end -}}
