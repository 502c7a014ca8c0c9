{{/* The release's resources are named after it (at most 63 characters). */}}
{{- define "edge.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edge.labels" -}}
{{ include "edge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The node config: values.config, or files/edge.toml; in statefulset mode
followed by the [site] table naming every pod as a peer by its stable DNS
name under the headless Service (a pod's own name, its hostname, is its
node name).
*/}}
{{- define "edge.config" -}}
{{- $name := include "edge.fullname" . -}}
{{- .Values.config | default (.Files.Get "files/edge.toml") }}
{{- if eq .Values.mode "statefulset" }}

# Written by the chart (statefulset mode): the pods of this StatefulSet are
# one site and share one cache.
[site]
name = {{ .Values.site.name | default .Release.Name | quote }}
{{- if .Values.site.shield }}
shield = {{ .Values.site.shield | quote }}
shield_fallback = {{ .Values.site.shieldFallback | quote }}
{{- end }}
peer = [
{{- range $i := until (int .Values.replicaCount) }}
  { name = "{{ $name }}-{{ $i }}", address = "{{ $name }}-{{ $i }}.{{ $name }}-peers.{{ $.Release.Namespace }}.svc.cluster.local:{{ $.Values.ports.http }}", admin = "{{ $name }}-{{ $i }}.{{ $name }}-peers.{{ $.Release.Namespace }}.svc.cluster.local:{{ $.Values.ports.admin }}" },
{{- end }}
]
{{- end }}
{{ end -}}

{{/* The pod template both workloads use. */}}
{{- define "edge.podTemplate" -}}
metadata:
  labels:
    {{- include "edge.selectorLabels" . | nindent 4 }}
  annotations:
    # A changed config rolls the pods (edge reloads by itself on SIGHUP, but
    # a ConfigMap update reaches the pod's file late and silently).
    checksum/config: {{ include "edge.config" . | sha256sum }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.ports.admin | quote }}
    prometheus.io/path: /metrics
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: edge
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run", "--config", "/etc/edge/edge.toml"]
      env:
        - name: EDGE_ADMIN_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ .Values.adminToken.secretName }}
              key: {{ .Values.adminToken.key }}
      ports:
        - name: http
          containerPort: {{ .Values.ports.http }}
        - name: admin
          containerPort: {{ .Values.ports.admin }}
      readinessProbe:
        httpGet:
          path: /ready
          port: admin
        periodSeconds: 2
        failureThreshold: 1
      livenessProbe:
        httpGet:
          path: /live
          port: admin
        periodSeconds: 10
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - name: config
          mountPath: /etc/edge
        - name: cache
          mountPath: /var/cache/edge
  volumes:
    - name: config
      configMap:
        name: {{ include "edge.fullname" . }}
    {{- if ne .Values.mode "statefulset" }}
    - name: cache
      emptyDir:
        sizeLimit: {{ .Values.cache.sizeLimit }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
