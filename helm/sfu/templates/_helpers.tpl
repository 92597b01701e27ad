{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "sfu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "sfu.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sfu.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sfu.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sfu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sfu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* The Secret holding sfu.toml (API keys, TURN secret). */}}
{{- define "sfu.secretName" -}}
{{- default (printf "%s-secrets" (include "sfu.fullname" .)) .Values.existingSecret }}
{{- end }}

{{/* StatefulSet (per-pod Services), DaemonSet or Deployment (host network). */}}
{{- define "sfu.workloadKind" -}}
{{- if eq .Values.media.exposure "perPodService" -}}
StatefulSet
{{- else if eq .Values.media.exposure "hostNetwork" -}}
{{- if not (has .Values.media.hostNetwork.kind (list "DaemonSet" "Deployment")) }}
{{- fail "media.hostNetwork.kind must be DaemonSet or Deployment" }}
{{- end }}
{{- .Values.media.hostNetwork.kind }}
{{- else -}}
{{- fail "media.exposure must be perPodService or hostNetwork" }}
{{- end }}
{{- end }}

{{/* TURN URLs handed to clients: the configured ones, or the bundled coturn's. */}}
{{- define "sfu.turnUrls" -}}
{{- $urls := .Values.turn.urls }}
{{- if .Values.turn.deploy }}
{{- if not .Values.turn.coturn.externalHost }}
{{- fail "turn.deploy needs turn.coturn.externalHost (the address clients reach coturn at)" }}
{{- end }}
{{- $host := .Values.turn.coturn.externalHost }}
{{- $port := .Values.turn.coturn.port }}
{{- $urls = concat $urls (list (printf "turn:%s:%v?transport=udp" $host $port) (printf "turn:%s:%v?transport=tcp" $host $port)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* The Redis URL the pods use: the external one, or the bundled Redis. */}}
{{- define "sfu.redisUrl" -}}
{{- if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else if .Values.redis.deploy -}}
{{- printf "redis://%s-redis:6379/0" (include "sfu.fullname" .) -}}
{{- end -}}
{{- end }}
