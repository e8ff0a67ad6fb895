{{/* The base of every name: "canarium" for a release whose name contains it, else
"<release>-canarium", so that two releases never share a cluster-scoped name. */}}
{{- define "canarium.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "repository@digest" when a digest is set, else "repository:tag" (tag defaults to the
chart's appVersion). Called with (list image-values root). */}}
{{- define "canarium.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. part-of is the kustomize install's own. */}}
{{- define "canarium.labels" -}}
app.kubernetes.io/part-of: canarium
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator pod's selector: its name and the release. */}}
{{- define "canarium.selectorLabels" -}}
app.kubernetes.io/name: canarium-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The monitoring objects' labels: their own over monitoring.labels over the common ones
(one map, so that a key given twice is not written twice). Called with (list root own-labels). */}}
{{- define "canarium.monitoringLabels" -}}
{{- $root := index . 0 -}}
{{- $common := include "canarium.labels" $root | fromYaml -}}
{{- merge (deepCopy (index . 1)) (deepCopy $root.Values.monitoring.labels) $common | toYaml -}}
{{- end -}}

{{/* The leader Lease's name: canarium-operator for the default release, as the kustomize
install's. */}}
{{- define "canarium.leaseName" -}}
{{- printf "%s-operator" (include "canarium.fullname" .) -}}
{{- end -}}
