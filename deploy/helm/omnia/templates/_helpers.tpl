{{/*
Names. fullname is the release name when it already contains the chart's name
(release "omnia" gives omnia-operator), else "<release>-omnia".
*/}}
{{- define "omnia.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnia.fullname" -}}
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

{{- define "omnia.operatorName" -}}
{{- printf "%s-operator" (include "omnia.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnia.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "omnia.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "omnia.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "omnia.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnia.labels" -}}
helm.sh/chart: {{ include "omnia.chart" . }}
app.kubernetes.io/name: {{ include "omnia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "omnia.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "omnia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "omnia.operatorLabels" -}}
{{ include "omnia.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "omnia.activatorName" -}}
{{- printf "%s-activator" (include "omnia.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnia.activatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "omnia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: activator
{{- end }}

{{- define "omnia.activatorLabels" -}}
{{ include "omnia.labels" . }}
app.kubernetes.io/component: activator
{{- end }}

{{/*
The operator's rights: exactly the rules of deploy/rbac/cluster_role.yaml,
which names the code that needs each one. tests/packaging/test_chart.py fails
when the two differ.
*/}}
{{- define "omnia.operatorRules" -}}
- apiGroups: [omnia.altairalabs.ai]
  resources: [agentruntimes, promptpacks, providers, toolregistries]
  verbs: [list, watch]
- apiGroups: [omnia.altairalabs.ai]
  resources: [agentruntimes/status, promptpacks/status, providers/status, toolregistries/status]
  verbs: [patch]
- apiGroups: [omnia.altairalabs.ai]
  resources: [promptpacks]
  verbs: [patch]
- apiGroups: [omnia.altairalabs.ai]
  resources: [agentruntimes/finalizers, promptpacks/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services, serviceaccounts]
  verbs: [create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* The four kinds, for the user-facing roles. */}}
{{- define "omnia.kinds" -}}
[agentruntimes, promptpacks, providers, toolregistries]
{{- end }}
