{{/* Names and labels shared by every template. */}}

{{- define "vram-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's object name prefix: the chart name unless the release is named after it. */}}
{{- define "vram-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vram-operator.agentName" -}}
{{- printf "%s-agent" (include "vram-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vram-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vram-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vram-operator
{{- end -}}

{{/* Selector labels: a subset of labels + app.kubernetes.io/component. A pod template carries
     labels and its component only, never labels and a selector (a key repeated in one mapping is
     refused by kustomize, kubectl and strict YAML parsers). */}}
{{- define "vram-operator.operatorSelector" -}}
app.kubernetes.io/name: {{ include "vram-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "vram-operator.agentSelector" -}}
app.kubernetes.io/name: {{ include "vram-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "vram-operator.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}

{{/* Container hardening shared by the operator and the agent. */}}
{{- define "vram-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A ValidatingAdmissionPolicyBinding that denies, cluster-wide, what its policy refuses.
     Call with (dict "root" $ "policy" NAME "component" COMPONENT). */}}
{{- define "vram-operator.denyBinding" -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .policy }}
  labels:
    {{- include "vram-operator.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  policyName: {{ .policy }}
  validationActions: [Deny]
{{- end -}}
