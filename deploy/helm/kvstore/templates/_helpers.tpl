{{/*
Named templates shared by the kvstore chart. Numbers from values are float64
(Helm reads values as JSON), so every number printed into a flag or a field
goes through int64.
*/}}

{{- define "kvstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object's name. */}}
{{- define "kvstore.fullname" -}}
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

{{- define "kvstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "kvstore.labels" -}}
helm.sh/chart: {{ include "kvstore.chart" . }}
app.kubernetes.io/name: {{ include "kvstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kvstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kvstore.routerName" -}}
{{- printf "%s-router" (include "kvstore.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "kvstore.routerSelectorLabels" -}}
{{ include "kvstore.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "kvstore.topologyConfigMapName" -}}
{{- printf "%s-topology" (include "kvstore.fullname" .) -}}
{{- end -}}

{{- define "kvstore.leadersConfigMapName" -}}
{{- printf "%s-leaders" (include "kvstore.fullname" .) -}}
{{- end -}}

{{- define "kvstore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
How the cluster coordinates (coordination.etcd): "deploy" (the chart's own
etcd, coordination.etcd.deploy=true), "external" (coordination.etcd.endpoints)
or empty (static mode). kvstore.validateEtcdValues refuses both at once.
*/}}
{{- define "kvstore.etcdMode" -}}
{{- $e := .Values.coordination.etcd -}}
{{- if and (kindIs "bool" $e.deploy) $e.deploy -}}deploy{{- else if $e.endpoints -}}external{{- end -}}
{{- end -}}

{{/* etcd mode (the chart's own etcd or an external one): "true", else empty. */}}
{{- define "kvstore.etcdEnabled" -}}
{{- if include "kvstore.etcdMode" . -}}true{{- end -}}
{{- end -}}

{{/* The etcd StatefulSet (coordination.etcd.deploy) and its client Service. */}}
{{- define "kvstore.etcdName" -}}
{{- printf "%s-etcd" (include "kvstore.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}

{{/* The etcd members' governing (headless) Service: their peer names. */}}
{{- define "kvstore.etcdHeadlessName" -}}
{{- printf "%s-headless" (include "kvstore.etcdName" .) -}}
{{- end -}}

{{- define "kvstore.etcdSelectorLabels" -}}
{{ include "kvstore.selectorLabels" . }}
app.kubernetes.io/component: etcd
{{- end -}}

{{- define "kvstore.etcdImage" -}}
{{- $i := .Values.coordination.etcd.members.image -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}

{{/* Stable DNS name of etcd member N: (dict "root" $ "ordinal" N). */}}
{{- define "kvstore.etcdMemberHost" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "kvstore.etcdName" .root) (int64 .ordinal) (include "kvstore.etcdHeadlessName" .root) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/*
--etcd-endpoints of the nodes, routers and kvctl: every member's stable name
(coordination.etcd.deploy; the client fails over from one to the next), or
coordination.etcd.endpoints.
*/}}
{{- define "kvstore.etcdEndpoints" -}}
{{- $root := . -}}
{{- $e := .Values.coordination.etcd -}}
{{- if eq (include "kvstore.etcdMode" .) "deploy" -}}
{{- $members := list -}}
{{- range $ordinal := until (int $e.members.replicas) -}}
{{- $members = append $members (printf "%s:%d" (include "kvstore.etcdMemberHost" (dict "root" $root "ordinal" $ordinal)) (int64 $e.members.clientPort)) -}}
{{- end -}}
{{- join "," $members -}}
{{- else -}}
{{- join "," $e.endpoints -}}
{{- end -}}
{{- end -}}

{{/* --etcd-prefix: coordination.etcd.prefix, default /kvstore/<release>. */}}
{{- define "kvstore.etcdPrefix" -}}
{{- default (printf "/kvstore/%s" .Release.Name) .Values.coordination.etcd.prefix -}}
{{- end -}}

{{/*
etcd-mode flags as YAML list items (nothing in static mode): (dict "root" $
"node" bool); the nodes also get the lease TTL and the failover mode.
*/}}
{{- define "kvstore.etcdFlags" -}}
{{- if include "kvstore.etcdEnabled" .root }}
- {{ printf "--etcd-endpoints=%s" (include "kvstore.etcdEndpoints" .root) | quote }}
- {{ printf "--etcd-prefix=%s" (include "kvstore.etcdPrefix" .root) | quote }}
{{- if .node }}
- {{ printf "--lease-ttl=%s" .root.Values.coordination.etcd.leaseTtl | quote }}
- {{ printf "--failover=%s" .root.Values.coordination.etcd.failover | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
Shard helpers take (dict "root" $ "index" N).
*/}}

{{/* The shard's name in the topology file: shard-N. */}}
{{- define "kvstore.shardName" -}}
{{- printf "%s-%d" .root.Values.shards.namePrefix (int64 .index) -}}
{{- end -}}

{{/* Name of the shard group's StatefulSet and of its headless Service. */}}
{{- define "kvstore.shardGroupName" -}}
{{- printf "%s-shard-%d" (include "kvstore.fullname" .root | trunc 40 | trimSuffix "-") (int64 .index) -}}
{{- end -}}

{{- define "kvstore.shardSelectorLabels" -}}
{{ include "kvstore.selectorLabels" .root }}
app.kubernetes.io/component: shard
kvstore.io/shard: {{ include "kvstore.shardName" . }}
{{- end -}}

{{/* Pods per shard group. */}}
{{- define "kvstore.shardPods" -}}
{{- add 1 (int64 .Values.shards.replicasPerShard) -}}
{{- end -}}

{{/* The ordinal that leads the shard when its data directory is new. */}}
{{- define "kvstore.shardLeaderOrdinal" -}}
{{- $name := include "kvstore.shardName" . -}}
{{- $overrides := .root.Values.shards.leaderOrdinalOverrides | default dict -}}
{{- if hasKey $overrides $name -}}
{{- int64 (get $overrides $name) -}}
{{- else -}}
{{- int64 .root.Values.shards.leaderOrdinal -}}
{{- end -}}
{{- end -}}

{{/* Stable address of one pod of a shard group: (dict "root" $ "index" N "ordinal" M). */}}
{{- define "kvstore.shardMemberAddress" -}}
{{- $group := include "kvstore.shardGroupName" . -}}
{{- printf "%s-%d.%s.%s.svc.%s:%d" $group (int64 .ordinal) $group .root.Release.Namespace .root.Values.clusterDomain (int64 .root.Values.shards.port) -}}
{{- end -}}

{{/* Every pod address of a shard group, in ordinal order, as a YAML list. */}}
{{- define "kvstore.shardMembers" -}}
{{- $ctx := . -}}
{{- range $ordinal := until (int (include "kvstore.shardPods" .root)) }}
- {{ include "kvstore.shardMemberAddress" (dict "root" $ctx.root "index" $ctx.index "ordinal" $ordinal) }}
{{- end -}}
{{- end -}}

{{/*
Fails the rendering on values the binaries would refuse at start-up, so that a
bad configuration is an error at install time and not a crash loop.
*/}}
{{- define "kvstore.validateValues" -}}
{{- include "kvstore.validateEtcdValues" . -}}
{{- $s := .Values.shards -}}
{{- if lt (int64 $s.count) 1 -}}
{{- fail "shards.count must be at least 1" -}}
{{- end -}}
{{- if lt (int64 $s.replicasPerShard) 0 -}}
{{- fail "shards.replicasPerShard must not be negative" -}}
{{- end -}}
{{- if not (has $s.fsync (list "always" "everysec" "no")) -}}
{{- fail (printf "shards.fsync must be always, everysec or no (got %v)" $s.fsync) -}}
{{- end -}}
{{- if not (has $s.ack (list "async" "sync")) -}}
{{- fail (printf "shards.ack must be async or sync (got %v)" $s.ack) -}}
{{- end -}}
{{- if eq $s.ack "sync" -}}
{{- if lt (int64 $s.syncAcks) 1 -}}
{{- fail "shards.syncAcks must be at least 1 with shards.ack=sync" -}}
{{- end -}}
{{- if gt (int64 $s.syncAcks) (int64 $s.replicasPerShard) -}}
{{- fail (printf "shards.syncAcks (%d) must not exceed shards.replicasPerShard (%d): kv-shard refuses to start with fewer followers than --sync-acks" (int64 $s.syncAcks) (int64 $s.replicasPerShard)) -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]+$" (toString $s.namePrefix)) -}}
{{- fail (printf "shards.namePrefix %q may hold only letters, digits, '.', '_' and '-'" (toString $s.namePrefix)) -}}
{{- end -}}
{{- $pods := int64 (include "kvstore.shardPods" .) -}}
{{- range $i := until (int $s.count) -}}
{{- $ordinal := int64 (include "kvstore.shardLeaderOrdinal" (dict "root" $ "index" $i)) -}}
{{- if or (lt $ordinal 0) (ge $ordinal $pods) -}}
{{- fail (printf "the leader ordinal of %s is %d, but the group has ordinals 0..%d (shards.leaderOrdinal / leaderOrdinalOverrides)" (include "kvstore.shardName" (dict "root" $ "index" $i)) $ordinal (sub $pods 1)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $_ := $s.leaderOrdinalOverrides -}}
{{- $known := false -}}
{{- range $i := until (int $s.count) -}}
{{- if eq $name (include "kvstore.shardName" (dict "root" $ "index" $i)) -}}
{{- $known = true -}}
{{- end -}}
{{- end -}}
{{- if not $known -}}
{{- fail (printf "shards.leaderOrdinalOverrides names %q, which is not a shard of this release" $name) -}}
{{- end -}}
{{- end -}}
{{- if gt (int64 $s.shutdownGraceMs) (mul (int64 $s.terminationGracePeriodSeconds) 1000) -}}
{{- fail "shards.shutdownGraceMs must not exceed shards.terminationGracePeriodSeconds" -}}
{{- end -}}
{{- if gt (int64 .Values.router.shutdownGraceMs) (mul (int64 .Values.router.terminationGracePeriodSeconds) 1000) -}}
{{- fail "router.shutdownGraceMs must not exceed router.terminationGracePeriodSeconds" -}}
{{- end -}}
{{- $etcdFlags := ternary (list "etcd-endpoints" "etcd-prefix" "lease-ttl" "failover") (list "etcd-endpoints") (include "kvstore.etcdEnabled" . | empty | not) -}}
{{- range $flag, $_ := $s.extraFlags -}}
{{- if has (replace "_" "-" $flag) (concat (list "listen" "advertise" "data-dir" "followers" "config") (include "kvstore.managedFlags" $ | fromYamlArray)) -}}
{{- fail (printf "shards.extraFlags may not set %q: the chart sets it" $flag) -}}
{{- end -}}
{{- if has (replace "_" "-" $flag) $etcdFlags -}}
{{- fail (printf "shards.extraFlags may not set %q: the chart sets it from coordination.etcd.* (coordination.etcd.endpoints for an etcd of your own)" $flag) -}}
{{- end -}}
{{- end -}}
{{- range $flag, $_ := .Values.router.extraFlags -}}
{{- if has (replace "_" "-" $flag) (concat (list "listen" "topology" "config") (include "kvstore.managedFlags" $ | fromYamlArray)) -}}
{{- fail (printf "router.extraFlags may not set %q: the chart sets it" $flag) -}}
{{- end -}}
{{- if has (replace "_" "-" $flag) $etcdFlags -}}
{{- fail (printf "router.extraFlags may not set %q: the chart sets it from coordination.etcd.* (coordination.etcd.endpoints for an etcd of your own)" $flag) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.router.autoscaling.enabled (gt (int64 .Values.router.autoscaling.minReplicas) (int64 .Values.router.autoscaling.maxReplicas)) -}}
{{- fail "router.autoscaling.minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName: a Secret with tls.crt, tls.key and ca.crt" -}}
{{- end -}}
{{- $auth := .Values.auth -}}
{{- if and $auth.tokenSecretName (not $auth.adminTokenSecretName) (not .Values.tls.enabled) -}}
{{- fail "auth.tokenSecretName needs auth.adminTokenSecretName or tls.enabled: the servers refuse a public token unless Admin and Replication have their own token or client certificates" -}}
{{- end -}}
{{- if and $auth.adminTokenSecretName (eq $auth.adminTokenSecretName $auth.tokenSecretName) (eq $auth.adminTokenKey $auth.tokenKey) -}}
{{- fail "auth.adminTokenSecretName/adminTokenKey must name another token than tokenSecretName/tokenKey: the servers refuse the same token for both" -}}
{{- end -}}
{{- end -}}

{{/*
The coordination.etcd.* values (part of kvstore.validateValues; first, so that
a leftover etcd: block is named before anything else fails on it).
*/}}
{{- define "kvstore.validateEtcdValues" -}}
{{- if hasKey .Values "etcd" -}}
{{- fail "the top-level etcd: values block is gone: use coordination.etcd (coordination.etcd.deploy=true for the chart's own etcd, its settings under coordination.etcd.members; coordination.etcd.endpoints for an etcd of your own; prefix, leaseTtl, failover and clusterInit moved as they were)" -}}
{{- end -}}
{{- $e := .Values.coordination.etcd -}}
{{- if not (kindIs "bool" $e.deploy) -}}
{{- fail (printf "coordination.etcd.deploy must be a boolean, true or false (got the %s %q: unquoted in a values file; --set, not --set-string)" (kindOf $e.deploy) (toString $e.deploy)) -}}
{{- end -}}
{{- if not (kindIs "slice" $e.endpoints) -}}
{{- fail (printf "coordination.etcd.endpoints must be a list of HOST:PORT (got %v; with --set write {a:2379,b:2379})" $e.endpoints) -}}
{{- end -}}
{{- if and $e.deploy $e.endpoints -}}
{{- fail "coordination.etcd.deploy=true and coordination.etcd.endpoints are both set: choose one, the chart's own etcd (deploy) or yours (endpoints)" -}}
{{- end -}}
{{- range $e.endpoints -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]+:[0-9]+$" (toString .)) -}}
{{- fail (printf "coordination.etcd.endpoints: %q is not HOST:PORT (no scheme: the servers speak plaintext to etcd and refuse https://)" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- if $e.deploy -}}
{{- if lt (int64 $e.members.replicas) 1 -}}
{{- fail "coordination.etcd.members.replicas must be at least 1" -}}
{{- end -}}
{{- end -}}
{{- if and $e.prefix (not (hasPrefix "/" (toString $e.prefix))) -}}
{{- fail (printf "coordination.etcd.prefix %q must start with /" (toString $e.prefix)) -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]+s$" (toString $e.leaseTtl)) -}}
{{- fail (printf "coordination.etcd.leaseTtl must be whole seconds such as 3s (got %v)" $e.leaseTtl) -}}
{{- end -}}
{{- if lt (int64 (trimSuffix "s" (toString $e.leaseTtl))) 2 -}}
{{- fail (printf "coordination.etcd.leaseTtl %v is below 2s: etcd 3.4 grants no shorter lease, and the nodes refuse it" $e.leaseTtl) -}}
{{- end -}}
{{- if not (has $e.failover (list "auto" "manual")) -}}
{{- fail (printf "coordination.etcd.failover must be auto or manual (got %v)" $e.failover) -}}
{{- end -}}
{{- end -}}

{{/* --name=value for each entry of a flags map, as YAML list items. */}}
{{- define "kvstore.extraFlags" -}}
{{- range $flag, $value := . }}
- {{ printf "--%s=%v" $flag (ternary (int64 $value) $value (kindIs "float64" $value)) | quote }}
{{- end -}}
{{- end -}}

{{/* Pod annotations for Prometheus (metrics.enabled). */}}
{{- define "kvstore.metricsAnnotations" -}}
{{- if .Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ int64 .Values.metrics.port | quote }}
prometheus.io/path: "/metrics"
{{- end -}}
{{- end -}}

{{/* Flags the chart sets from metrics, tls and auth; extraFlags may not set them. */}}
{{- define "kvstore.managedFlags" -}}
[metrics-listen, tls-cert, tls-key, tls-ca, auth-token-file, admin-token-file]
{{- end -}}

{{/*
Flags of every server (router and shard nodes) for metrics, TLS and tokens,
as YAML list items; nothing when those are off.
*/}}
{{- define "kvstore.serverSecurityFlags" -}}
{{- if .Values.metrics.enabled }}
- {{ printf "--metrics-listen=%s:%d" .Values.listenHost (int64 .Values.metrics.port) | quote }}
{{- end }}
{{- if .Values.tls.enabled }}
- "--tls-cert=/etc/kvstore/tls/tls.crt"
- "--tls-key=/etc/kvstore/tls/tls.key"
- "--tls-ca=/etc/kvstore/tls/ca.crt"
{{- end }}
{{- if .Values.auth.tokenSecretName }}
- "--auth-token-file=/etc/kvstore/auth/token"
{{- end }}
{{- if .Values.auth.adminTokenSecretName }}
- "--admin-token-file=/etc/kvstore/admin-auth/token"
{{- end }}
{{- end -}}

{{/* Volume mounts for TLS and tokens (YAML list items). */}}
{{- define "kvstore.securityVolumeMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/kvstore/tls
  readOnly: true
{{- end }}
{{- if .Values.auth.tokenSecretName }}
- name: auth-token
  mountPath: /etc/kvstore/auth
  readOnly: true
{{- end }}
{{- if .Values.auth.adminTokenSecretName }}
- name: admin-token
  mountPath: /etc/kvstore/admin-auth
  readOnly: true
{{- end }}
{{- end -}}

{{/*
Volumes from the Secrets (YAML list items). Mode 0440: readable by the pods'
group (fsGroup), not by others.
*/}}
{{- define "kvstore.securityVolumes" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName | quote }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if .Values.auth.tokenSecretName }}
- name: auth-token
  secret:
    secretName: {{ .Values.auth.tokenSecretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.tokenKey | quote }}
        path: token
{{- end }}
{{- if .Values.auth.adminTokenSecretName }}
- name: admin-token
  secret:
    secretName: {{ .Values.auth.adminTokenSecretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.adminTokenKey | quote }}
        path: token
{{- end }}
{{- end -}}

{{/*
kvctl's flags for talking to a server of this release from inside a pod
(NOTES.txt, docs): TLS files, and a token for `admin` (status, promote,
snapshot) or the public API.
*/}}
{{- define "kvstore.kvctlFlags" -}}
{{- $v := .root.Values -}}
{{- if $v.tls.enabled }} --tls-cert=/etc/kvstore/tls/tls.crt --tls-key=/etc/kvstore/tls/tls.key --tls-ca=/etc/kvstore/tls/ca.crt{{ end -}}
{{- if and (eq .use "admin") $v.auth.adminTokenSecretName }} --admin-token-file=/etc/kvstore/admin-auth/token{{ end -}}
{{- if and (eq .use "public") $v.auth.tokenSecretName }} --auth-token-file=/etc/kvstore/auth/token{{ end -}}
{{- end -}}

{{- define "kvstore.metricsPort" -}}
{{- if .Values.metrics.enabled }}
- name: metrics
  containerPort: {{ int64 .Values.metrics.port }}
  protocol: TCP
{{- end -}}
{{- end -}}

{{/*
Probes: (dict "port" N "probes" <values probes block> "tls" bool). gRPC health
probes (grpc.health.v1.Health: "" for start-up and liveness, readinessService
for readiness). The kubelet's gRPC probe speaks plaintext only, so with TLS
they are TCP probes (the port accepts connections).
*/}}
{{- define "kvstore.grpcProbes" -}}
{{- $tls := .tls -}}
startupProbe:
  {{- include "kvstore.probeAction" (dict "port" .port "tls" $tls "service" "") | nindent 2 }}
  periodSeconds: {{ int64 .probes.startup.periodSeconds }}
  timeoutSeconds: {{ int64 .probes.startup.timeoutSeconds }}
  failureThreshold: {{ int64 .probes.startup.failureThreshold }}
readinessProbe:
  {{- include "kvstore.probeAction" (dict "port" .port "tls" $tls "service" .probes.readinessService) | nindent 2 }}
  periodSeconds: {{ int64 .probes.readiness.periodSeconds }}
  timeoutSeconds: {{ int64 .probes.readiness.timeoutSeconds }}
  failureThreshold: {{ int64 .probes.readiness.failureThreshold }}
livenessProbe:
  {{- include "kvstore.probeAction" (dict "port" .port "tls" $tls "service" "") | nindent 2 }}
  periodSeconds: {{ int64 .probes.liveness.periodSeconds }}
  timeoutSeconds: {{ int64 .probes.liveness.timeoutSeconds }}
  failureThreshold: {{ int64 .probes.liveness.failureThreshold }}
{{- end -}}

{{- define "kvstore.probeAction" -}}
{{- if .tls -}}
tcpSocket:
  port: {{ int64 .port }}
{{- else -}}
grpc:
  port: {{ int64 .port }}
  {{- with .service }}
  service: {{ . | quote }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
Affinity: the values' own, else pod anti-affinity over nodes by
(dict "mode" soft|hard|none "affinity" {...} "labels" <selector labels YAML>).
*/}}
{{- define "kvstore.affinity" -}}
{{- if .affinity -}}
affinity:
  {{- toYaml .affinity | nindent 2 }}
{{- else if eq .mode "soft" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- .labels | nindent 14 }}
{{- else if eq .mode "hard" -}}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .labels | nindent 12 }}
{{- else if ne .mode "none" -}}
{{- fail (printf "podAntiAffinity must be soft, hard or none (got %v)" .mode) -}}
{{- end -}}
{{- end -}}

{{/*
The shard node's entry point, run by /bin/sh in every pod of a shard group.
It picks the binary, then execs it (so it gets the signals), passing the
chart's flags after its own:

  - a data directory whose EPOCH file names this pod as the leader (it was
    promoted): kv-shard; it leads again;
  - an EPOCH file naming another node: kv-replica. The node has followed, or
    been deposed by, that leader; started as kv-shard it could lead a second
    time in the same epoch;
  - no EPOCH file (a new volume, or a leader that was never replaced): kv-shard
    on the ordinal KV_LEADER_ORDINAL (from the leaders ConfigMap, read at
    container start), kv-replica on the others.

Every pod gets the other pods of its group as --followers: a replica uses them
once promoted (also after a restart), so `kvctl promote` needs no list.

In etcd mode (coordination.etcd.deploy or .endpoints) none of this decides anything:
leadership comes only from the shard's leader key in etcd, every node starts as
a follower and the other members come from etcd (docs/failover.md, section 7).
Every pod runs kv-replica (which behaves as kv-shard there), without
--followers, whatever its EPOCH file says.
*/}}
{{- define "kvstore.nodeScript" -}}
set -eu
if [ "${POD_NAMESPACE}" != "${KV_NAMESPACE}" ]; then
  echo "kvstore-node: this pod runs in namespace ${POD_NAMESPACE} but the chart was rendered for ${KV_NAMESPACE}; render it with --namespace ${POD_NAMESPACE}" >&2
  exit 2
fi
self="${POD_NAME}.${KV_GROUP}.${KV_NAMESPACE}.svc.${KV_CLUSTER_DOMAIN}:${KV_PORT}"
ordinal="${POD_NAME##*-}"
followers=""
is_member=no
for member in ${KV_MEMBERS}; do
  if [ "${member}" = "${self}" ]; then
    is_member=yes
  else
    followers="${followers:+${followers},}${member}"
  fi
done
if [ "${is_member}" != yes ]; then
  echo "kvstore-node: ${self} is not among the group's members (${KV_MEMBERS})" >&2
  exit 2
fi
mkdir -p "${KV_DATA_DIR}"
{{- if include "kvstore.etcdEnabled" . }}
echo "kvstore-node: ${POD_NAME} starts kv-replica: etcd mode, leadership comes from etcd" >&2
exec kv-replica "--listen=${KV_LISTEN}" "--advertise=${self}" "--data-dir=${KV_DATA_DIR}" "$@"
{{- else }}
binary=kv-replica
reason="ordinal ${ordinal} is not the leader ordinal ${KV_LEADER_ORDINAL}"
if [ -f "${KV_DATA_DIR}/EPOCH" ]; then
  epoch=""
  leader=""
  read -r epoch leader < "${KV_DATA_DIR}/EPOCH" || true
  if [ "${leader}" = "${self}" ]; then
    binary=kv-shard
    reason="EPOCH names this node as the leader of epoch ${epoch}"
  else
    reason="EPOCH names ${leader:-no node} as the leader of epoch ${epoch}"
  fi
elif [ "${ordinal}" = "${KV_LEADER_ORDINAL}" ]; then
  binary=kv-shard
  reason="ordinal ${ordinal} is the leader ordinal and the data directory has no EPOCH"
fi
echo "kvstore-node: ${POD_NAME} starts ${binary}: ${reason}" >&2
exec "${binary}" "--listen=${KV_LISTEN}" "--advertise=${self}" "--data-dir=${KV_DATA_DIR}" "--followers=${followers}" "$@"
{{- end }}
{{- end -}}

{{/*
The cluster-init Job's entry point (/bin/sh; the Job's args are kvctl's
flags): `kvctl cluster init`, succeeding also when the cluster was initialised
before (kvctl: exit 3 and this message), and only then.
*/}}
{{- define "kvstore.clusterInitScript" -}}
set -u
already="the cluster is initialised; nothing was written"
code=0
out=$(kvctl "$@" cluster init 2>&1) || code=$?
printf '%s\n' "${out}"
if [ "${code}" -eq 3 ] && printf '%s\n' "${out}" | grep -qF "${already}"; then
  echo "kvstore-cluster-init: initialised before: nothing to do" >&2
  exit 0
fi
exit "${code}"
{{- end -}}
