{{/*
Names: fullname truncated to 50 characters, not 63: the StatefulSet's pods carry a
controller-revision-hash label of <name>-<10 characters> (at most 63), and Services add
-modbus-NN, -api-NN or -headless.
*/}}
{{- define "bess.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bess.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bess.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bess.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bess.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bess.labels" -}}
helm.sh/chart: {{ include "bess.chart" . }}
{{ include "bess.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bess-farm
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pods of this release that may call the farm (helm test, the simulate Job): NetworkPolicy lets them in. */}}
{{- define "bess.clientLabel" -}}
{{ include "bess.fullname" . }}-client: "true"
{{- end }}

{{- define "bess.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bess.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bess.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "bess.collectorImage" -}}
{{- $c := .Values.telemetry.collector.image }}
{{- if $c.digest }}
{{- printf "%s:%s@%s" $c.repository $c.tag $c.digest }}
{{- else }}
{{- printf "%s:%s" $c.repository $c.tag }}
{{- end }}
{{- end }}

{{- define "bess.tokenSecretName" -}}
{{- .Values.api.token.existingSecret | default (printf "%s-api-token" (include "bess.fullname" .)) }}
{{- end }}

{{/*
Prometheus Operator objects (ServiceMonitor, PodMonitor, PrometheusRule): rendered when
monitoring.prometheusOperator is "enabled", or "auto" and the cluster serves monitoring.coreos.com/v1.
*/}}
{{- define "bess.prometheusOperator" -}}
{{- $mode := .Values.monitoring.prometheusOperator }}
{{- if or (eq $mode "enabled") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) }}true{{ end }}
{{- end }}

{{/*
The deployment plan, from the farm config (TOML, parsed here) and the values, as JSON
(use: $plan := include "bess.plan" . | fromJson; numbers come back as floats: pipe through int).

  units          units in the farm
  rows           rows of units_per_row units (a shard owns whole rows)
  shardUnits     units of the largest shard: everything below is sized for it
  modbusPorts    Modbus ports per shard: ceil(shardUnits / units_per_port), at most max_ports
  memoryMi       256 MiB + 2 KiB per unit (measured: 185 MB + 0.86 KB per unit, x2 for checkpoint
                 saves, Modbus register encoding and telemetry collections)
  cpuMilli       250m + 1m per 1,000 units (the tick costs ~0.5 core per million units at 10 Hz;
                 x2 for Modbus, REST and telemetry)
  engineThreads  NUMBA_NUM_THREADS: the CPU request rounded up (the parallel tick runs from 250,000 units)
  storageMi      512 MiB + 1 kB per unit per kept checkpoint plus the one being written
                 (a checkpoint is 562 bytes per unit)
  graceSeconds   SIGTERM to exit: HTTP drain (2 x 5 s at most) + final checkpoint (2 s per million
                 units, x2) + telemetry flush (5 s) + 5 s margin
*/}}
{{- define "bess.plan" -}}
{{- $farm := fromToml (.Values.config.farm | default "") }}
{{- if hasKey $farm "Error" }}{{ fail (printf "config.farm is not valid TOML: %s" $farm.Error) }}{{ end }}
{{- $site := fromToml (.Values.config.site | default "") }}
{{- if hasKey $site "Error" }}{{ fail (printf "config.site is not valid TOML: %s" $site.Error) }}{{ end }}
{{- range $k, $_ := $farm }}
{{- if not (has $k (list "farm" "ambient" "units")) }}{{ fail (printf "config.farm: [%s] belongs in config.site (config.farm holds [farm], [ambient] and [[units]]: what bess simulate reads)" $k) }}{{ end }}
{{- end }}
{{- range $k, $_ := $site }}
{{- if not (has $k (list "modbus" "runtime" "api" "telemetry")) }}{{ fail (printf "config.site: [%s] belongs in config.farm (config.site holds [modbus], [runtime], [api] and [telemetry])" $k) }}{{ end }}
{{- end }}
{{- $modbus := $site.modbus | default dict }}
{{- $runtime := $site.runtime | default dict }}
{{- $api := $site.api | default dict }}
{{- range $k := list "port" "host" }}
{{- if hasKey $modbus $k }}{{ fail (printf "config.site: [modbus] %s is set by the chart: use the value modbus.port (the pod listens on all addresses)" $k) }}{{ end }}
{{- if hasKey $api $k }}{{ fail (printf "config.site: [api] %s is set by the chart: use the value api.port" $k) }}{{ end }}
{{- end }}
{{- if and (hasKey $api "enabled") (not $api.enabled) }}{{ fail "config.site: [api] enabled = false: the chart's probes need the API (/healthz, /readyz)" }}{{ end }}
{{- if hasKey $api "token_file" }}{{ fail "config.site: [api] token_file: the chart passes the token from its Secret (api.token)" }}{{ end }}
{{- range $k := list "state_dir" "checkpoints" "checkpoint_interval_s" }}
{{- if hasKey $runtime $k }}{{ fail (printf "config.site: [runtime] %s is set by the chart: use the values persistence.* and checkpoints.*" $k) }}{{ end }}
{{- end }}
{{- $units := 0 }}
{{- if not (hasKey $farm "units") }}{{ fail "config.farm: no [[units]]: give at least one group (preset, count)" }}{{ end }}
{{- range $farm.units }}{{ $units = add $units (.count | default 1) }}{{ end }}
{{- $upr := 10 }}
{{- if and (hasKey $farm "farm") (hasKey $farm.farm "units_per_row") }}{{ $upr = $farm.farm.units_per_row }}{{ end }}
{{- $rows := div (add $units (sub $upr 1)) $upr }}
{{- $shards := int .Values.shards }}
{{- if gt $shards (int $rows) }}{{ fail (printf "shards: %d shards for %d rows of units: a shard owns whole rows (units_per_row = %d), so at most %d shards" $shards (int $rows) (int $upr) (int $rows)) }}{{ end }}
{{- $shardRows := div (add $rows (sub $shards 1)) $shards }}
{{- $shardUnits := min $units (mul $shardRows $upr) }}
{{- $upp := $modbus.units_per_port | default 247 }}
{{- $maxPorts := $modbus.max_ports | default 64 }}
{{- $ports := min $maxPorts (div (add $shardUnits (sub $upp 1)) $upp) }}
{{- $keep := $runtime.checkpoint_keep | default 2 }}
{{- $cpu := add 250 (div (add $shardUnits 999) 1000) }}
{{- $threads := $runtime.engine_threads | default (div (add $cpu 999) 1000) }}
{{- dict "units" $units "rows" $rows "unitsPerRow" $upr "shardUnits" $shardUnits "modbusPorts" $ports
      "unitsPerPort" $upp "plantDeviceId" ($modbus.plant_device_id | default 255)
      "memoryMi" (add 256 (div (add (mul $shardUnits 2) 1023) 1024))
      "cpuMilli" $cpu "engineThreads" $threads
      "storageMi" (add 512 (div (add (mul $shardUnits (add $keep 1)) 999) 1000))
      "graceSeconds" (add 20 (div (add (mul $shardUnits 4) 999999) 1000000))
      | toJson }}
{{- end }}

{{/* Resources of the bess container: the values' resources, else sized from the plan. */}}
{{- define "bess.resources" -}}
{{- $plan := include "bess.plan" . | fromJson }}
{{- if .Values.resources }}
{{- toYaml .Values.resources }}
{{- else }}
requests:
  cpu: {{ printf "%dm" (int $plan.cpuMilli) }}
  memory: {{ printf "%dMi" (int $plan.memoryMi) }}
limits:
  memory: {{ printf "%dMi" (mul (int $plan.memoryMi) 2) }}
{{- end }}
{{- end }}

{{/*
Shell step that seeds the writable numba cache (an emptyDir: the root filesystem is read-only)
with the kernels compiled into the image at build time (Dockerfile).
*/}}
{{- define "bess.seedCache" -}}
cp -R /opt/bess/numba-cache/. "$NUMBA_CACHE_DIR"/
{{- end }}

{{- define "bess.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "bess.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment shared by every container that runs the engine (bess run, check-config, simulate). */}}
{{- define "bess.engineEnv" -}}
- name: NUMBA_CACHE_DIR
  value: /var/cache/bess/numba
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}
