{{/* Names. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: the release name, followed by the chart's unless it contains it. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of an object of component .component; call with (dict "root" $ "component" "producer"). */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" .root }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The label of the Services of the admin listeners, which the ServiceMonitor selects. */}}
{{- define "sluice.adminServiceLabel" -}}
sluice/admin-listener: "true"
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The job label of the scraped series of each component. */}}
{{- define "sluice.producerJob" -}}
{{- .Values.monitoring.jobs.producer | default (printf "%s-producer" (include "sluice.fullname" .)) -}}
{{- end -}}
{{- define "sluice.consumerJob" -}}
{{- .Values.monitoring.jobs.consumer | default (printf "%s-consumer" (include "sluice.fullname" .)) -}}
{{- end -}}

{{/* Settings the chart reads back from config, with the binary's defaults. */}}
{{- define "sluice.requestsTopic" -}}
{{- get .Values.config "SLUICE_REQUESTS_TOPIC" | default "chat.requests" -}}
{{- end -}}
{{- define "sluice.bulkTopic" -}}
{{- get .Values.config "SLUICE_BULK_TOPIC" | default "chat.requests.bulk" -}}
{{- end -}}
{{- define "sluice.consumerGroup" -}}
{{- get .Values.config "SLUICE_CONSUMER_GROUP" | default "sluice" -}}
{{- end -}}

{{/* Where the JWT public keys are mounted, and their paths. */}}
{{- define "sluice.jwtKeysDir" -}}/etc/sluice/jwt{{- end -}}
{{- define "sluice.jwtKeyFiles" -}}
{{- $files := list -}}
{{- if .Values.jwtPublicKeys.existingSecret -}}
{{- $files = .Values.jwtPublicKeys.files -}}
{{- else -}}
{{- $files = keys .Values.jwtPublicKeys.keys | sortAlpha -}}
{{- end -}}
{{- $paths := list -}}
{{- range $files -}}
{{- $paths = append $paths (printf "%s/%s" (include "sluice.jwtKeysDir" $) .) -}}
{{- end -}}
{{- join "," $paths -}}
{{- end -}}
{{- define "sluice.jwtKeysSecret" -}}
{{- .Values.jwtPublicKeys.existingSecret | default (printf "%s-jwt-keys" (include "sluice.fullname" .)) -}}
{{- end -}}

{{/*
The environment of each component's ConfigMap: what the chart sets, then
config, then the component's config.
*/}}
{{- define "sluice.commonConfig" -}}
{{- $c := dict "SLUICE_ADMIN_ADDR" (printf ":%d" (int .Values.ports.admin)) "SLUICE_TOPIC_PARTITIONS" (printf "%d" (int .Values.topics.partitions)) -}}
{{- if .Values.topics.job.enabled -}}
{{- $_ := set $c "SLUICE_CREATE_TOPICS" "false" -}}
{{- end -}}
{{- range $k, $v := .Values.config -}}
{{- $_ := set $c $k $v -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{- define "sluice.producerConfig" -}}
{{- $c := include "sluice.commonConfig" . | fromYaml -}}
{{- range $k, $v := .Values.producer.config -}}
{{- $_ := set $c $k $v -}}
{{- end -}}
{{- $_ := set $c "SLUICE_HTTP_ADDR" (printf ":%d" (int .Values.ports.http)) -}}
{{- $_ := set $c "SLUICE_DRAIN_DELAY" (printf "%ds" (int .Values.producer.drainDelaySeconds)) -}}
{{- $_ := set $c "SLUICE_SHUTDOWN_TIMEOUT" (printf "%ds" (int .Values.producer.shutdownTimeoutSeconds)) -}}
{{- with include "sluice.jwtKeyFiles" . -}}
{{- $_ := set $c "SLUICE_JWT_PUBLIC_KEYS" . -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{- define "sluice.consumerConfig" -}}
{{- $c := include "sluice.commonConfig" . | fromYaml -}}
{{- range $k, $v := .Values.consumer.config -}}
{{- $_ := set $c $k $v -}}
{{- end -}}
{{- $_ := set $c "SLUICE_DRAIN_TIMEOUT" (printf "%ds" (int .Values.consumer.drainTimeoutSeconds)) -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The secret settings each component reads. */}}
{{- define "sluice.producerSecretKeys" -}}
{{- list "SLUICE_JWT_SECRET" "SLUICE_POLL_SECRET" "SLUICE_CALLBACK_SECRET" "SLUICE_REDIS_PASSWORD" | toJson -}}
{{- end -}}
{{- define "sluice.consumerSecretKeys" -}}
{{- list "SLUICE_LLM_API_KEY" "SLUICE_LLM_FALLBACK_API_KEY" "SLUICE_CALLBACK_SECRET" "SLUICE_REDIS_PASSWORD" | toJson -}}
{{- end -}}

{{- define "sluice.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "sluice.fullname" .) -}}
{{- end -}}

{{/* The data of the Secret the chart creates: the non-empty values. */}}
{{- define "sluice.secretData" -}}
{{- $d := dict -}}
{{- range $k, $v := .Values.secrets.values -}}
{{- if $v -}}
{{- $_ := set $d $k ($v | b64enc) -}}
{{- end -}}
{{- end -}}
{{- toYaml $d -}}
{{- end -}}

{{/*
env entries of the secret settings in .keys (a JSON list): every key of an
existing Secret, optional; of the chart's Secret, those it holds.
*/}}
{{- define "sluice.secretEnv" -}}
{{- $root := .root -}}
{{- $name := include "sluice.secretName" $root -}}
{{- range .keys | fromJsonArray -}}
{{- if or $root.Values.secrets.existingSecret (get $root.Values.secrets.values .) }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ . }}
      {{- if $root.Values.secrets.existingSecret }}
      optional: true
      {{- end }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The GOMAXPROCS env entry of container .container whose resources are
.resources: its CPU request rounded up, when goMaxProcsFromCPURequest is on
and the request is set; nothing otherwise.
*/}}
{{- define "sluice.goMaxProcs" -}}
{{- if and .root.Values.goMaxProcsFromCPURequest (dig "requests" "cpu" "" .resources) }}
- name: GOMAXPROCS
  valueFrom:
    resourceFieldRef:
      containerName: {{ .container }}
      resource: requests.cpu
      divisor: "1"
{{- end -}}
{{- end -}}

{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* topologySpreadConstraints of .constraints, each selecting the pods of .component. */}}
{{- define "sluice.topologySpread" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- range .constraints }}
- {{ toYaml . | indent 2 | trim }}
  labelSelector:
    matchLabels:
      {{- include "sluice.selectorLabels" (dict "root" $root "component" $component) | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
{{- end -}}
{{- end -}}

{{/* Probes of the admin listener. */}}
{{- define "sluice.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* The consumers' scaling behaviour (HPA behavior). */}}
{{- define "sluice.consumerBehavior" -}}
{{- with .Values.consumer.autoscaling.behavior -}}
scaleUp:
  stabilizationWindowSeconds: {{ int .scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Percent
      value: {{ int .scaleUp.percent }}
      periodSeconds: {{ int .scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ int .scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Percent
      value: {{ int .scaleDown.percent }}
      periodSeconds: {{ int .scaleDown.periodSeconds }}
{{- end -}}
{{- end -}}

{{/*
Prometheus Adapter rules serving the consumer signals as external metrics,
namespaced: an HPA sees the series of its own namespace, selected further by
its metric selector (job, topic). Every consumer pod exports the group's lag
and oldest unfinished age, hence max; the in-flight ratio is per pod, hence
avg. <<...>> is the adapter's template syntax.
*/}}
{{- define "sluice.adapterRules" -}}
externalRules:
  - seriesQuery: 'sluice_consumer_group_lag{namespace!="",job!="",topic!=""}'
    resources:
      overrides:
        namespace: {resource: namespace}
    name:
      as: sluice_consumer_group_lag
    metricsQuery: 'max(<<.Series>>{<<.LabelMatchers>>})'
  - seriesQuery: 'sluice_consumer_oldest_unfinished_age_seconds{namespace!="",job!="",topic!=""}'
    resources:
      overrides:
        namespace: {resource: namespace}
    name:
      as: sluice_consumer_oldest_unfinished_age_seconds
    metricsQuery: 'max(<<.Series>>{<<.LabelMatchers>>})'
  - seriesQuery: 'sluice_consumer_in_flight_ratio{namespace!="",job!=""}'
    resources:
      overrides:
        namespace: {resource: namespace}
    name:
      as: sluice_consumer_in_flight_ratio
    metricsQuery: 'avg(<<.Series>>{<<.LabelMatchers>>})'
  # The group lag averaged over 10 minutes: the bulk lane's slow signal.
  - seriesQuery: 'sluice_consumer_group_lag{namespace!="",job!="",topic!=""}'
    resources:
      overrides:
        namespace: {resource: namespace}
    name:
      as: sluice_consumer_group_lag_avg10m
    metricsQuery: 'max(avg_over_time(<<.Series>>{<<.LabelMatchers>>}[10m]))'
{{- end -}}

{{/* Refuses values that would install a Sluice that cannot work. */}}
{{- define "sluice.validate" -}}
{{- if not (get .Values.config "SLUICE_KAFKA_BROKERS") -}}
{{- fail "config.SLUICE_KAFKA_BROKERS is required: the Kafka bootstrap brokers, comma-separated host:port" -}}
{{- end -}}
{{- if not (get .Values.config "SLUICE_REDIS_ADDR") -}}
{{- fail "config.SLUICE_REDIS_ADDR is required: Redis host:port (a comma list means Redis Cluster)" -}}
{{- end -}}
{{- if not (get .Values.consumer.config "SLUICE_LLM_BASE_URL") -}}
{{- fail "consumer.config.SLUICE_LLM_BASE_URL is required: the OpenAI-compatible base URL including /v1" -}}
{{- end -}}
{{- if not (get .Values.consumer.config "SLUICE_LLM_MODEL") -}}
{{- fail "consumer.config.SLUICE_LLM_MODEL is required" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secrets.values.SLUICE_JWT_SECRET) (not (include "sluice.jwtKeyFiles" .)) -}}
{{- fail "the producer needs a token key: secrets.values.SLUICE_JWT_SECRET, secrets.existingSecret, or jwtPublicKeys" -}}
{{- end -}}
{{- if and .Values.jwtPublicKeys.existingSecret (not .Values.jwtPublicKeys.files) -}}
{{- fail "jwtPublicKeys.files must name the keys of jwtPublicKeys.existingSecret to use" -}}
{{- end -}}
{{- if and .Values.jwtPublicKeys.files (not .Values.jwtPublicKeys.existingSecret) -}}
{{- fail "jwtPublicKeys.files names keys of jwtPublicKeys.existingSecret, which is empty" -}}
{{- end -}}
{{- $p := .Values.producer -}}
{{- $pneed := add (int $p.drainDelaySeconds) (int $p.shutdownTimeoutSeconds) 5 -}}
{{- if lt (int $p.terminationGracePeriodSeconds) (int $pneed) -}}
{{- fail (printf "producer.terminationGracePeriodSeconds %d is shorter than the preStop drain delay, the shutdown timeout after SIGTERM and 5 s (%d + %d + 5 = %d)" (int $p.terminationGracePeriodSeconds) (int $p.drainDelaySeconds) (int $p.shutdownTimeoutSeconds) (int $pneed)) -}}
{{- end -}}
{{- $c := .Values.consumer -}}
{{- $cneed := add (int $c.drainTimeoutSeconds) 15 -}}
{{- if lt (int $c.terminationGracePeriodSeconds) (int $cneed) -}}
{{- fail (printf "consumer.terminationGracePeriodSeconds %d is shorter than the drain, the final commit and leaving the group (10 s) and 5 s (%d + 10 + 5 = %d)" (int $c.terminationGracePeriodSeconds) (int $c.drainTimeoutSeconds) (int $cneed)) -}}
{{- end -}}
{{- $a := $c.autoscaling -}}
{{- if ne $a.mode "off" -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "consumer.autoscaling.minReplicas %d exceeds maxReplicas %d" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if gt (int $a.maxReplicas) (int .Values.topics.partitions) -}}
{{- fail (printf "consumer.autoscaling.maxReplicas %d exceeds topics.partitions %d: consumers beyond the partitions of the requests topic get none and idle" (int $a.maxReplicas) (int .Values.topics.partitions)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $a.mode "hpa") (not (or $a.hpa.inFlightRatio $a.hpa.lagPerPod $a.hpa.oldestUnfinishedAgeSeconds)) -}}
{{- fail "consumer.autoscaling.mode hpa needs a target in consumer.autoscaling.hpa" -}}
{{- end -}}
{{- if eq $a.mode "keda" -}}
{{- $prom := $a.keda.prometheus -}}
{{- $promOn := and $prom.enabled (or $prom.inFlightRatio $prom.oldestUnfinishedAgeSeconds) -}}
{{- if not (or $a.keda.kafka.enabled $promOn) -}}
{{- fail "consumer.autoscaling.mode keda needs a trigger: keda.kafka.enabled, or keda.prometheus.enabled with a target" -}}
{{- end -}}
{{- if and $prom.enabled (not $prom.serverAddress) -}}
{{- fail "consumer.autoscaling.keda.prometheus.serverAddress is required when keda.prometheus.enabled" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.producer.autoscaling.enabled (gt (int .Values.producer.autoscaling.minReplicas) (int .Values.producer.autoscaling.maxReplicas)) -}}
{{- fail "producer.autoscaling.minReplicas exceeds maxReplicas" -}}
{{- end -}}
{{- end -}}
