{{- define "cpn.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cpn.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "cpn.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cpn.etcdEndpoints" -}}
{{- if .Values.etcd.external.endpoints -}}
{{- join "," .Values.etcd.external.endpoints -}}
{{- else -}}
{{- $name := include "cpn.fullname" . -}}
{{- range $i, $e := until (int .Values.etcd.bundled.replicas) -}}
{{- if $i }},{{ end }}http://{{ $name }}-etcd-{{ $i }}.{{ $name }}-etcd:2379
{{- end -}}
{{- end -}}
{{- end -}}
