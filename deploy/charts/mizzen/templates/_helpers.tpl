{{/* "-<revision>" for a revisioned install, "" for the default revision. */}}
{{- define "mizzen.suffix" -}}
{{- if .Values.revision }}-{{ .Values.revision }}{{ end -}}
{{- end }}

{{/* The revision's name: "default" when none is set (label istio.io/rev). */}}
{{- define "mizzen.rev" -}}
{{- default "default" .Values.revision -}}
{{- end }}

{{/* Labels every object of the release carries (mizzen uninstall selects on them). */}}
{{- define "mizzen.labels" -}}
app.kubernetes.io/part-of: mizzen
istio.io/rev: {{ include "mizzen.rev" . }}
{{- end }}

{{/* The CA address sidecars and gateways use. */}}
{{- define "mizzen.caAddress" -}}
{{- if .Values.global.caAddress }}{{ .Values.global.caAddress }}{{ else }}citadel{{ include "mizzen.suffix" . }}.{{ .Release.Namespace }}.svc:15012{{ end -}}
{{- end }}

{{/* The discovery (xDS) address sidecars and gateways use. */}}
{{- define "mizzen.discoveryAddress" -}}
pilot{{ include "mizzen.suffix" . }}.{{ .Release.Namespace }}.svc:15010
{{- end }}

{{/* What every injection webhook entry shares. */}}
{{- define "mizzen.injectorWebhook" -}}
clientConfig:
  service:
    name: injector{{ include "mizzen.suffix" . }}
    namespace: {{ .Release.Namespace }}
    path: /inject
    port: 443
rules:
- operations: [CREATE]
  apiGroups: [""]
  apiVersions: [v1]
  resources: [pods]
failurePolicy: Fail
sideEffects: None
admissionReviewVersions: [v1]
reinvocationPolicy: Never
timeoutSeconds: 10
{{- end }}
