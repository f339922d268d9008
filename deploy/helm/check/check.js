#!/usr/bin/env node
// Validates one rendering of deploy/helm/kvstore (tools/check-deploy runs it
// once per value set in deploy/helm/check/cases/):
//
//  1. parses the manifests as kubectl does (YAML 1.1, duplicate keys refused);
//  2. validates every object against the Kubernetes schemas of npm's
//     kubernetes-models v4 (`new StatefulSet(obj).validate()`, by apiVersion and
//     kind), and refuses fields the schema does not know (a misspelt field is
//     otherwise dropped silently by the API server);
//  3. asserts what the chart promises: one StatefulSet of 1 + replicasPerShard
//     pods per shard; the topology ConfigMap parses and names every shard, its
//     leader and replicas by their stable DNS names; the node entry point,
//     actually run with /bin/sh and stub binaries for each ordinal, starts
//     kv-shard on the leader ordinal and kv-replica elsewhere, gives each node
//     exactly the other ordinals as --followers and its own name as
//     --advertise, and honours the EPOCH file; selectors, ports, probes,
//     security contexts, PodDisruptionBudgets and the HPA fit together;
//     metrics, TLS and token flags appear exactly when values enable them and
//     name files of the right Secret keys, mounted read-only;
//     In etcd mode (coordination.etcd.deploy=true, or .endpoints): every node
//     and router gets the same --etcd-endpoints and --etcd-prefix (the etcd
//     members' stable names, or coordination.etcd.endpoints), the nodes
//     --lease-ttl and --failover; every ordinal starts kv-replica without
//     --followers whatever its EPOCH says; no leaders ConfigMap, and the
//     routers read no topology file. With deploy, the etcd StatefulSet's
//     --initial-cluster lists exactly coordination.etcd.members.replicas
//     members by names its headless Service resolves,
//     each member advertises its own, its data is on its claim, a client
//     Service and a PodDisruptionBudget exist. The cluster-init Job is a
//     post-install/post-upgrade hook with kvctl's TLS and admin-token files,
//     and its script, run with a stub kvctl, succeeds on exactly kvctl's
//     "initialised already" answer. In static mode none of this is rendered;
//  4. with --flags-dir, every flag a container passes is a flag of the binary
//     it runs (each shard node may run kv-shard or kv-replica, so both; the
//     Job kvctl), so that a renamed or removed flag fails here and not in a
//     crash loop; with --etcd-flags, the etcd member's flags are etcd's.
//
// Usage: node check.js --modules DIR --case-dir DIR [--kvctl PATH]
//                      [--flags-dir DIR] [--etcd-flags FILE] [--expect-invalid TEXT]
// where the case dir holds manifests.yaml, values.json and release.json
// ({name, namespace}), and the flags dir holds <binary>.flags (kv-shard,
// kv-replica, kv-router, kvctl): the binary's flag names, one a line, as its
// --help lists them (FILE: etcd's, as `etcd --help` lists them). Exit 0 when
// everything holds (or, with --expect-invalid, when validation fails with a
// message containing TEXT).
'use strict';

const childProcess = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { createRequire } = require('module');

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) usage();
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args.modules || !args['case-dir']) usage();
  return args;
}

function usage() {
  console.error('usage: check.js --modules DIR --case-dir DIR [--kvctl PATH] [--flags-dir DIR] [--etcd-flags FILE] [--expect-invalid TEXT]');
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const requireDep = createRequire(path.join(path.resolve(args.modules), 'check.js'));
const YAML = requireDep('yaml');
const modelsRoot = path.dirname(requireDep.resolve('kubernetes-models'));

const caseDir = args['case-dir'];
const caseName = path.basename(caseDir);
const values = JSON.parse(fs.readFileSync(path.join(caseDir, 'values.json'), 'utf8'));
const release = JSON.parse(fs.readFileSync(path.join(caseDir, 'release.json'), 'utf8'));
const manifestsFile = path.join(caseDir, 'manifests.yaml');

const problems = [];
let assertions = 0;

function problem(where, message) {
  problems.push(`${where}: ${message}`);
}

function check(condition, where, message) {
  assertions++;
  if (!condition) problem(where, message);
  return condition;
}

// ---- 1. Parse -------------------------------------------------------------

function parseManifests(text) {
  const docs = [];
  const lines = text.split('\n');
  let start = -1;
  const flush = (end) => {
    if (start < 0) return;
    const chunk = lines.slice(start, end).join('\n');
    const m = /^# Source: (.*)$/m.exec(chunk);
    const source = m ? m[1] : '(unknown source)';
    const doc = YAML.parseDocument(chunk, { version: '1.1', uniqueKeys: true, prettyErrors: true });
    const where = `${source} (manifests.yaml line ${start + 1})`;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) problem(where, `YAML: ${e.message}`);
      return;
    }
    const obj = doc.toJS({ maxAliasCount: -1 });
    if (obj === null || obj === undefined) return; // Comments only.
    docs.push({ source, where, obj });
  };
  lines.forEach((line, i) => {
    if (/^---\s*$/.test(line)) {
      flush(i);
      start = i + 1;
    }
  });
  flush(lines.length);
  return docs;
}

const docs = parseManifests(fs.readFileSync(manifestsFile, 'utf8'));

// ---- 2. Schemas -----------------------------------------------------------

function modelFor(apiVersion, kind) {
  let mod;
  try {
    mod = requireDep(`kubernetes-models/${apiVersion}`);
  } catch (e) {
    return null;
  }
  const Model = mod[kind];
  if (typeof Model !== 'function') return null;
  const schemaName = Object.keys(mod).find((k) => k.startsWith('IoK8s') && mod[k] === Model);
  return { Model, schemaName };
}

// Wraps an object so that the schema's validator records which properties it
// looks at: an own property it never reads, in an object it does not
// enumerate (maps such as labels are enumerated), is unknown to the schema.
function fieldTracker() {
  const records = new Map();
  const proxies = new WeakMap();
  function wrap(obj, where) {
    if (obj === null || typeof obj !== 'object') return obj;
    if (proxies.has(obj)) return proxies.get(obj);
    const rec = { where, keys: new Set(), enumerated: false };
    records.set(obj, rec);
    const proxy = new Proxy(obj, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver);
        if (typeof key === 'string' && Object.prototype.hasOwnProperty.call(target, key)) {
          rec.keys.add(key);
          return wrap(v, `${where}/${key}`);
        }
        return v;
      },
      has(target, key) {
        if (typeof key === 'string') rec.keys.add(key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        rec.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(obj, proxy);
    return proxy;
  }
  function unknown() {
    const out = [];
    for (const [obj, rec] of records) {
      if (Array.isArray(obj) || rec.enumerated) continue;
      for (const k of Object.keys(obj)) if (!rec.keys.has(k)) out.push(`${rec.where}/${k}`);
    }
    return out;
  }
  return { wrap, unknown };
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'StorageClass', 'PersistentVolume']);

function checkLabels(labels, where) {
  for (const [k, v] of Object.entries(labels || {})) {
    const slash = k.lastIndexOf('/');
    const prefix = slash >= 0 ? k.slice(0, slash) : '';
    const name = slash >= 0 ? k.slice(slash + 1) : k;
    check(name.length <= 63 && LABEL_NAME.test(name) && (prefix === '' || (prefix.length <= 253 && DNS1123_SUBDOMAIN.test(prefix))),
      where, `label key ${JSON.stringify(k)} is not a valid qualified name`);
    check(typeof v === 'string' && v.length <= 63 && LABEL_VALUE.test(v), where,
      `label ${k}: value ${JSON.stringify(v)} is not a valid label value (string of at most 63 characters)`);
  }
}

const seen = new Map();
const objects = [];
for (const doc of docs) {
  const { obj } = doc;
  if (typeof obj !== 'object' || Array.isArray(obj)) {
    problem(doc.where, 'a document is not an object');
    continue;
  }
  const kind = obj.kind;
  const name = obj.metadata && obj.metadata.name;
  const where = `${doc.source} (${kind || '?'} ${name || '?'})`;
  if (!check(typeof obj.apiVersion === 'string' && typeof kind === 'string' && typeof name === 'string',
    where, 'apiVersion, kind and metadata.name are required')) continue;
  const found = modelFor(obj.apiVersion, kind);
  if (!check(found !== null, where, `kubernetes-models has no schema for ${obj.apiVersion} ${kind}`)) continue;
  try {
    new found.Model(obj).validate();
    assertions++;
  } catch (e) {
    problem(where, `schema: ${e.message}`);
    continue;
  }
  if (found.schemaName) {
    const { validate } = require(path.join(modelsRoot, '_schemas', `${found.schemaName}.js`));
    const tracker = fieldTracker();
    validate(tracker.wrap(obj, ''));
    for (const field of tracker.unknown()) problem(where, `unknown field ${field}`);
    assertions++;
  }
  check(name.length <= 253 && DNS1123_SUBDOMAIN.test(name), where, `name ${name} is not a DNS-1123 subdomain`);
  if (kind === 'Service') check(name.length <= 63 && DNS1035_LABEL.test(name), where, `Service name ${name} is not a DNS-1035 label`);
  if (!CLUSTER_SCOPED.has(kind)) {
    check(obj.metadata.namespace === release.namespace, where,
      `metadata.namespace is ${obj.metadata.namespace}, expected the release namespace ${release.namespace}`);
  }
  checkLabels(obj.metadata.labels, where);
  const key = `${kind}/${obj.metadata.namespace}/${name}`;
  if (!check(!seen.has(key), where, `${kind} ${name} is rendered twice (also in ${seen.get(key)})`)) continue;
  seen.set(key, doc.source);
  objects.push({ where, obj });
}

// --expect-invalid: the case passes when some problem contains the text. A
// schema problem ends the check here (what follows assumes valid objects).
function expectedProblem(final) {
  const wanted = args['expect-invalid'];
  if (wanted === undefined) return;
  const hit = problems.find((p) => p.includes(wanted));
  if (hit) {
    console.log(`check-deploy: ${caseName}: refused as expected: ${hit}`);
    process.exit(0);
  }
  if (!final && problems.length === 0) return;
  console.error(`check-deploy: ${caseName}: expected a problem containing ${JSON.stringify(wanted)}, got ${problems.length ? problems.join('\n  ') : 'none'}`);
  process.exit(1);
}
expectedProblem(false);

// ---- 3. What the chart promises ---------------------------------------------

const byKind = (kind) => objects.filter((o) => o.obj.kind === kind);
const labelsMatch = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
const componentOf = (obj) => (obj.metadata.labels || {})['app.kubernetes.io/component'];
const workloads = [...byKind('Deployment'), ...byKind('StatefulSet')];
const podTemplates = workloads.map((w) => ({ w, labels: w.obj.spec.template.metadata.labels || {} }));

function flagValue(argv, flag) {
  const prefix = `--${flag}=`;
  const hits = argv.filter((a) => a.startsWith(prefix));
  if (hits.length !== 1) return undefined;
  return hits[0].slice(prefix.length);
}

function int(v) {
  return Math.trunc(Number(v));
}

const V = values;
const shardCount = int(V.shards.count);
const podsPerShard = 1 + int(V.shards.replicasPerShard);
const port = int(V.shards.port);
const leaderOrdinal = (shardName) => {
  const o = V.shards.leaderOrdinalOverrides || {};
  return int(Object.prototype.hasOwnProperty.call(o, shardName) ? o[shardName] : V.shards.leaderOrdinal);
};
const shardName = (i) => `${V.shards.namePrefix}-${i}`;
const memberAddress = (group, ordinal) =>
  `${group}-${ordinal}.${group}.${release.namespace}.svc.${V.clusterDomain}:${port}`;

// Metrics, TLS and tokens of one server container: each flag set exactly when
// values ask for it; file flags name a read-only mount of the right Secret key.
// With admin: kvctl's flags for Admin calls instead (the hook Job): no metrics,
// TLS files and the admin token, not the public one.
function checkServerExtras(c, podSpec, argv, cw, admin = false) {
  const metricsPort = (c.ports || []).find((p) => p.name === 'metrics');
  if (admin) {
    check(flagValue(argv, 'metrics-listen') === undefined && !metricsPort, cw, 'kvctl gets no --metrics-listen and no metrics port');
  } else if (V.metrics.enabled) {
    check(flagValue(argv, 'metrics-listen') === `${V.listenHost}:${int(V.metrics.port)}`, cw,
      `metrics.enabled: --metrics-listen is ${flagValue(argv, 'metrics-listen')}, expected ${V.listenHost}:${int(V.metrics.port)}`);
    check(metricsPort && metricsPort.containerPort === int(V.metrics.port), cw, 'metrics.enabled: no container port "metrics" on metrics.port');
  } else {
    check(flagValue(argv, 'metrics-listen') === undefined && !metricsPort, cw, 'metrics are off: no --metrics-listen and no metrics port');
  }
  const want = {};
  if (V.tls.enabled) {
    want['tls-cert'] = [V.tls.secretName, 'tls.crt'];
    want['tls-key'] = [V.tls.secretName, 'tls.key'];
    want['tls-ca'] = [V.tls.secretName, 'ca.crt'];
  }
  if (V.auth.tokenSecretName && !admin) want['auth-token-file'] = [V.auth.tokenSecretName, V.auth.tokenKey];
  if (V.auth.adminTokenSecretName) want['admin-token-file'] = [V.auth.adminTokenSecretName, V.auth.adminTokenKey];
  let secrets = 0;
  for (const flag of ['tls-cert', 'tls-key', 'tls-ca', 'auth-token-file', 'admin-token-file']) {
    const value = flagValue(argv, flag);
    if (!want[flag]) {
      check(value === undefined, cw, `--${flag} is passed but values do not enable it`);
      continue;
    }
    const [secretName, key] = want[flag];
    if (!check(value !== undefined, cw, `--${flag} expected (Secret ${secretName}, key ${key})`)) continue;
    const mount = (c.volumeMounts || []).find((m) => value.startsWith(`${m.mountPath}/`));
    if (!check(mount, cw, `--${flag}=${value} is not in a mounted volume`)) continue;
    check(mount.readOnly === true, cw, `the volume of --${flag} must be mounted read-only`);
    const volume = (podSpec.volumes || []).find((v) => v.name === mount.name);
    const item = volume && volume.secret && (volume.secret.items || []).find((i) => i.path === value.slice(mount.mountPath.length + 1));
    check(volume && volume.secret && volume.secret.secretName === secretName && item && item.key === key, cw,
      `--${flag}=${value} must be key ${key} of Secret ${secretName}`);
    secrets++;
  }
  if (secrets > 0) {
    check((podSpec.securityContext || {}).fsGroup !== undefined, cw, 'Secrets are mounted 0440: the pod needs an fsGroup to read them');
  }
}

// Flags each binary knows (--flags-dir): a flag the chart passes that the
// binary does not know makes it exit at start-up.
const binaryFlags = {};
if (args['flags-dir']) {
  for (const binary of ['kv-shard', 'kv-replica', 'kv-router', 'kvctl']) {
    const text = fs.readFileSync(path.join(args['flags-dir'], `${binary}.flags`), 'utf8');
    binaryFlags[binary] = new Set(text.split('\n').filter((l) => l !== ''));
    const known = binary === 'kvctl' ? 'etcd_prefix' : 'listen';
    check(binaryFlags[binary].has(known), `${binary} --help`, `lists no --${known}: the flag list was not read correctly`);
  }
}
function checkFlagsKnown(argv, binaries, where) {
  if (!args['flags-dir']) return;
  for (const a of argv) {
    const m = /^--([A-Za-z0-9_-]+)(=|$)/.exec(a);
    if (!check(m, where, `argument ${JSON.stringify(a)} is not a --flag`)) continue;
    const name = m[1].replace(/-/g, '_');
    for (const b of binaries) {
      check(binaryFlags[b].has(name), where, `--${m[1]} is not a flag of ${b} (see ${b} --help)`);
    }
  }
}

// Every pod: security, probes, resources (the hook Job's too).
const jobs = byKind('Job');
for (const { w } of [...podTemplates, ...jobs.map((j) => ({ w: j }))]) {
  const spec = w.obj.spec.template.spec;
  const psc = spec.securityContext || {};
  check(psc.runAsNonRoot === true, w.where, 'pod securityContext.runAsNonRoot must be true');
  check(spec.automountServiceAccountToken === false, w.where, 'automountServiceAccountToken must be false (the pods use no API)');
  for (const c of spec.containers) {
    const cw = `${w.where} container ${c.name}`;
    const sc = c.securityContext || {};
    check(sc.allowPrivilegeEscalation === false, cw, 'allowPrivilegeEscalation must be false');
    check(sc.readOnlyRootFilesystem === true, cw, 'readOnlyRootFilesystem must be true');
    check(((sc.capabilities || {}).drop || []).includes('ALL'), cw, 'capabilities must drop ALL');
    check(c.resources && c.resources.requests && c.resources.requests.cpu && c.resources.requests.memory,
      cw, 'resources.requests.cpu and .memory are required');
    check((c.volumeMounts || []).some((m) => m.mountPath === '/tmp'), cw, '/tmp must be a writable volume');
    // etcd members and the Job are checked below.
    if (['etcd', 'cluster-init'].includes(componentOf(w.obj))) continue;
    const grpcPort = (c.ports || []).find((p) => p.name === 'grpc');
    if (!check(grpcPort, cw, 'no container port named grpc')) continue;
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      if (V.tls.enabled) {
        // The kubelet's gRPC probe cannot speak TLS.
        check(c[probe] && c[probe].tcpSocket && c[probe].tcpSocket.port === grpcPort.containerPort && !c[probe].grpc, cw,
          `tls.enabled: ${probe} must be a TCP probe on the grpc port ${grpcPort.containerPort}`);
      } else {
        check(c[probe] && c[probe].grpc && c[probe].grpc.port === grpcPort.containerPort, cw,
          `${probe} must be a gRPC health probe on the grpc port ${grpcPort.containerPort}`);
      }
    }
    if (!V.tls.enabled && c.readinessProbe && c.readinessProbe.grpc) {
      const component = (w.obj.metadata.labels || {})['app.kubernetes.io/component'];
      const want = (component === 'router' ? V.router : V.shards).probes.readinessService;
      check((c.readinessProbe.grpc.service || '') === want, cw,
        `readinessProbe asks about service ${JSON.stringify(c.readinessProbe.grpc.service || '')}, values say ${JSON.stringify(want)}`);
      for (const probe of ['startupProbe', 'livenessProbe']) {
        check(c[probe] && !c[probe].grpc.service, cw, `${probe} must ask about "" (the process), not a service`);
      }
    }
    checkServerExtras(c, spec, [...(c.command || []), ...(c.args || [])], cw);
    const ann = w.obj.spec.template.metadata.annotations || {};
    if (V.metrics.enabled) {
      check(ann['prometheus.io/scrape'] === 'true' && ann['prometheus.io/port'] === String(int(V.metrics.port)) &&
        ann['prometheus.io/path'] === '/metrics',
        cw, 'metrics.enabled: prometheus.io/scrape, /port and /path (/metrics) annotations expected');
    } else {
      check(!('prometheus.io/scrape' in ann), cw, 'metrics.enabled is false: no prometheus.io/scrape annotation');
    }
  }
}

// Services select a workload that has the target port.
for (const { where, obj } of byKind('Service')) {
  const matches = podTemplates.filter((t) => labelsMatch(obj.spec.selector, t.labels));
  if (!check(obj.spec.selector && matches.length === 1, where, `the selector matches ${matches.length} workloads, expected 1`)) continue;
  const containers = matches[0].w.obj.spec.template.spec.containers;
  for (const p of obj.spec.ports) {
    check(containers.some((c) => (c.ports || []).some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort)),
      where, `targetPort ${p.targetPort} is not a port of ${matches[0].w.obj.metadata.name}`);
  }
}

// Workload selectors match their own pods; PDBs match exactly one workload.
for (const { w, labels } of podTemplates) {
  check(labelsMatch(w.obj.spec.selector.matchLabels, labels), w.where, 'spec.selector does not match the pod template labels');
  const others = podTemplates.filter((t) => t.w !== w && labelsMatch(w.obj.spec.selector.matchLabels, t.labels));
  check(others.length === 0, w.where, `spec.selector also matches ${others.map((t) => t.w.obj.metadata.name).join(', ')}`);
}
for (const { where, obj } of byKind('PodDisruptionBudget')) {
  const matches = podTemplates.filter((t) => labelsMatch(obj.spec.selector.matchLabels, t.labels));
  check(matches.length === 1, where, `the selector matches ${matches.length} workloads, expected 1`);
}

// ConfigMaps referenced by the pods exist with the keys they name.
const configMaps = new Map(byKind('ConfigMap').map((o) => [o.obj.metadata.name, o.obj]));
function configMapKey(ref, where) {
  const cm = configMaps.get(ref.name);
  if (!check(cm, where, `configMapKeyRef names ConfigMap ${ref.name}, which is not rendered`)) return undefined;
  if (!check(cm.data && ref.key in cm.data, where, `ConfigMap ${ref.name} has no key ${ref.key}`)) return undefined;
  return cm.data[ref.key];
}

// The topology ConfigMap.
const topologyConfigMaps = byKind('ConfigMap').filter((o) => o.obj.data && 'topology.yaml' in o.obj.data);
let topology = null;
let topologyText = null;
if (check(topologyConfigMaps.length === 1, 'ConfigMaps', `expected one ConfigMap with topology.yaml, found ${topologyConfigMaps.length}`)) {
  const tw = topologyConfigMaps[0].where;
  topologyText = topologyConfigMaps[0].obj.data['topology.yaml'];
  const doc = YAML.parseDocument(topologyText, { uniqueKeys: true });
  if (check(doc.errors.length === 0, tw, `topology.yaml does not parse: ${doc.errors.map((e) => e.message).join('; ')}`)) {
    topology = doc.toJS();
    check(topology.vnodes === int(V.topology.vnodes), tw, `vnodes is ${topology.vnodes}, values say ${V.topology.vnodes}`);
    check(Array.isArray(topology.shards) && topology.shards.length === shardCount, tw,
      `topology lists ${(topology.shards || []).length} shards, values say ${shardCount}`);
    const keys = new Set((topology.shards || []).flatMap((s) => Object.keys(s)));
    check([...keys].every((k) => ['name', 'leader', 'replicas'].includes(k)), tw, `unknown shard keys: ${[...keys]}`);
  }
}


// ---- etcd mode ---------------------------------------------------------------

// coordination.etcd: deploy (the chart's own etcd), endpoints (an external
// one) or neither (static mode); the chart refuses both.
const E = V.coordination.etcd;
const etcdKind = E.deploy === true ? 'deploy' : (E.endpoints || []).length > 0 ? 'external' : 'none';
const etcdMode = etcdKind !== 'none';
const etcdPrefix = E.prefix || `/kvstore/${release.name}`;
let etcdEndpoints = etcdKind === 'external' ? E.endpoints.join(',') : undefined;
const etcdSeen = new Set(); // "endpoints prefix" of every node, router and the Job.

const etcdFlagNames = args['etcd-flags']
  ? new Set(fs.readFileSync(args['etcd-flags'], 'utf8').split('\n').filter((l) => l !== ''))
  : null;
if (etcdFlagNames) check(etcdFlagNames.has('initial-cluster'), 'etcd --help', 'lists no --initial-cluster: the flag list was not read correctly');

// The etcd StatefulSet (coordination.etcd.deploy): its members, their names, their data.
const etcdStatefulSets = byKind('StatefulSet').filter((o) => componentOf(o.obj) === 'etcd');
const etcdObjects = objects.filter((o) => componentOf(o.obj) === 'etcd');
if (etcdKind !== 'deploy') {
  check(etcdObjects.length === 0, 'etcd', `coordination.etcd.deploy is not true, but etcd objects are rendered: ${etcdObjects.map((o) => o.obj.metadata.name)}`);
} else if (check(etcdStatefulSets.length === 1, 'StatefulSets', `coordination.etcd.deploy: expected one etcd StatefulSet, found ${etcdStatefulSets.length}`)) {
  const { where, obj } = etcdStatefulSets[0];
  const D = E.members;
  const sts = obj.metadata.name;
  const replicas = int(D.replicas);
  const spec = obj.spec.template.spec;
  const c = spec.containers[0];
  const cw = `${where} container ${c.name}`;
  check(obj.spec.replicas === replicas, where, `replicas is ${obj.spec.replicas}, coordination.etcd.members.replicas is ${replicas}`);
  check(obj.spec.podManagementPolicy === 'Parallel', where,
    'podManagementPolicy must be Parallel: a new etcd cluster needs a quorum of members started together');
  check(`${sts}-${replicas - 1}`.length <= 63 && DNS1123_LABEL.test(`${sts}-${replicas - 1}`), where, `pod name ${sts}-${replicas - 1} is not a DNS label`);
  const port = (n) => ((c.ports || []).find((p) => p.name === n) || {}).containerPort;
  const clientPort = port('client');
  const peerPort = port('peer');
  check(clientPort === int(D.clientPort) && peerPort === int(D.peerPort), cw,
    `container ports client ${clientPort} / peer ${peerPort}, values say ${D.clientPort} / ${D.peerPort}`);
  const headless = byKind('Service').find((o) => o.obj.metadata.name === obj.spec.serviceName);
  if (check(headless, where, `serviceName ${obj.spec.serviceName} is not a rendered Service`)) {
    check(headless.obj.spec.clusterIP === 'None' && headless.obj.spec.publishNotReadyAddresses === true, headless.where,
      'the members\' Service must be headless and publish not-ready addresses (members resolve each other before they are ready)');
    check(labelsMatch(headless.obj.spec.selector, obj.spec.template.metadata.labels), headless.where, `does not select the pods of ${sts}`);
    check(['client', 'peer'].every((n) => headless.obj.spec.ports.some((p) => p.name === n)), headless.where, 'needs the ports client and peer');
  }
  const clientSvc = byKind('Service').find((o) => o.obj.spec.clusterIP !== 'None' && labelsMatch(o.obj.spec.selector, obj.spec.template.metadata.labels));
  check(clientSvc && clientSvc.obj.spec.ports.some((p) => p.port === int(D.clientPort)), where, 'no client Service on coordination.etcd.members.clientPort');
  const pdb = byKind('PodDisruptionBudget').find((o) => labelsMatch(o.obj.spec.selector.matchLabels, obj.spec.template.metadata.labels));
  check(Boolean(pdb) === Boolean(D.podDisruptionBudget.enabled) && (!pdb || pdb.obj.spec.maxUnavailable === D.podDisruptionBudget.maxUnavailable),
    where, `etcd PodDisruptionBudget ${pdb ? `maxUnavailable ${pdb.obj.spec.maxUnavailable}` : 'absent'}, values say ${D.podDisruptionBudget.enabled ? D.podDisruptionBudget.maxUnavailable : 'none'}`);
  if (!D.affinity || Object.keys(D.affinity).length === 0) {
    check(D.podAntiAffinity === 'none' || (spec.affinity && spec.affinity.podAntiAffinity), where,
      `coordination.etcd.members.podAntiAffinity is ${D.podAntiAffinity} but the pods have no anti-affinity`);
  }
  check((c.env || []).some((e) => e.name === 'POD_NAME' && e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath === 'metadata.name'),
    cw, 'POD_NAME must come from metadata.name ($(POD_NAME) in the flags)');
  const argv = [...(c.command || []), ...(c.args || [])];
  check(argv[0] === 'etcd', cw, `runs ${argv[0]}, expected etcd`);
  const flags = argv.slice(1);
  check(flags.every((f) => /^--[a-z0-9-]+=[^\s]*$/.test(f)), cw, `malformed flags: ${flags}`);
  if (etcdFlagNames) {
    for (const f of flags) {
      const name = f.slice(2).split('=')[0];
      check(etcdFlagNames.has(name), cw, `--${name} is not a flag of etcd (see etcd --help)`);
    }
  }
  // The static bootstrap: exactly the StatefulSet's pods, by the names the
  // headless Service gives them.
  const host = (i) => `${sts}-${i}.${obj.spec.serviceName}.${release.namespace}.svc.${V.clusterDomain}`;
  const initial = new Map((flagValue(flags, 'initial-cluster') || '').split(',').filter((m) => m !== '').map((m) => m.split('=')));
  const wantNames = [...Array(replicas).keys()].map((i) => `${sts}-${i}`);
  check(sameSet([...initial.keys()], wantNames), cw,
    `--initial-cluster names ${[...initial.keys()].join(',') || '(none)'}, expected exactly ${wantNames.join(',')}`);
  check(flagValue(flags, 'initial-cluster-state') === 'new', cw, '--initial-cluster-state must be new');
  const claims = (obj.spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  const dataDir = flagValue(flags, 'data-dir') || '';
  check((c.volumeMounts || []).some((m) => claims.includes(m.name) && dataDir.startsWith(`${m.mountPath}/`)), cw,
    `--data-dir ${dataDir} is not inside a volumeClaimTemplate's mount`);
  for (let i = 0; i < replicas; i++) {
    const expand = (v) => (v || '').replace(/\$\(POD_NAME\)/g, `${sts}-${i}`);
    const ow = `${cw} member ${i}`;
    check(expand(flagValue(flags, 'name')) === `${sts}-${i}`, ow, `--name is ${expand(flagValue(flags, 'name'))}`);
    check(initial.get(`${sts}-${i}`) === `http://${host(i)}:${peerPort}`, ow,
      `--initial-cluster gives ${initial.get(`${sts}-${i}`)}, expected http://${host(i)}:${peerPort}`);
    check(expand(flagValue(flags, 'initial-advertise-peer-urls')) === initial.get(`${sts}-${i}`), ow,
      `--initial-advertise-peer-urls is ${expand(flagValue(flags, 'initial-advertise-peer-urls'))}, not its --initial-cluster entry`);
    check(expand(flagValue(flags, 'advertise-client-urls')) === `http://${host(i)}:${clientPort}`, ow,
      `--advertise-client-urls is ${expand(flagValue(flags, 'advertise-client-urls'))}`);
  }
  check(flagValue(flags, 'listen-client-urls') === `http://${V.listenHost}:${clientPort}` &&
    flagValue(flags, 'listen-peer-urls') === `http://${V.listenHost}:${peerPort}`, cw, 'listen URLs differ from listenHost and the ports');
  const rp = c.readinessProbe && c.readinessProbe.httpGet;
  check(rp && rp.path === '/health' && (rp.port === 'client' || rp.port === clientPort), cw, 'readinessProbe must GET /health on the client port');
  for (const probe of ['startupProbe', 'livenessProbe']) {
    check(c[probe] && !(c[probe].httpGet && c[probe].httpGet.path === '/health'), cw,
      `${probe} must not ask /health (unhealthy without quorum: every member would be restarted)`);
  }
  etcdEndpoints = [...Array(replicas).keys()].map((i) => `${host(i)}:${clientPort}`).join(',');
}

// --etcd-endpoints/--etcd-prefix (and the nodes' lease and failover flags) of
// a node or router container.
function checkEtcdFlags(argv, node, where) {
  if (!etcdMode) {
    check(flagValue(argv, 'etcd-endpoints') === undefined, where, 'static mode (no coordination.etcd): no --etcd-endpoints');
    return;
  }
  const endpoints = flagValue(argv, 'etcd-endpoints');
  const prefix = flagValue(argv, 'etcd-prefix');
  etcdSeen.add(`${endpoints} ${prefix}`);
  check(endpoints !== undefined && endpoints === etcdEndpoints, where, `--etcd-endpoints is ${endpoints}, expected ${etcdEndpoints}`);
  check(prefix === etcdPrefix, where, `--etcd-prefix is ${prefix}, expected ${etcdPrefix}`);
  if (node) {
    check(flagValue(argv, 'lease-ttl') === E.leaseTtl, where, `--lease-ttl is ${flagValue(argv, 'lease-ttl')}, coordination.etcd.leaseTtl is ${E.leaseTtl}`);
    check(flagValue(argv, 'failover') === E.failover, where, `--failover is ${flagValue(argv, 'failover')}, coordination.etcd.failover is ${E.failover}`);
  }
}

// The leaders ConfigMap decides roles in static mode only.
const leadersConfigMaps = byKind('ConfigMap').filter((o) => componentOf(o.obj) === 'leaders');
check(leadersConfigMaps.length === (etcdMode ? 0 : 1), 'ConfigMaps',
  `${leadersConfigMaps.length} leaders ConfigMap(s); expected ${etcdMode ? 'none in etcd mode' : 'one'}`);

// The cluster-init hook Job.
const initJobs = jobs.filter((o) => componentOf(o.obj) === 'cluster-init');
check(jobs.length === initJobs.length, 'Jobs', 'a Job other than cluster-init is rendered');
if (!etcdMode) {
  check(initJobs.length === 0, 'Jobs', 'static mode (no coordination.etcd) but a cluster-init Job is rendered');
} else if (check(initJobs.length === 1, 'Jobs', `etcd mode: expected one cluster-init Job, found ${initJobs.length}`)) {
  const { where, obj } = initJobs[0];
  const ann = obj.metadata.annotations || {};
  const list = (v) => (v || '').split(',').map((x) => x.trim());
  check(['post-install', 'post-upgrade'].every((h) => list(ann['helm.sh/hook']).includes(h)), where,
    `helm.sh/hook is ${ann['helm.sh/hook']}, expected post-install,post-upgrade`);
  check(list(ann['helm.sh/hook-delete-policy']).includes('before-hook-creation'), where,
    'helm.sh/hook-delete-policy must include before-hook-creation (else the next upgrade finds the old Job)');
  check(obj.spec.backoffLimit === int(E.clusterInit.backoffLimit) && obj.spec.activeDeadlineSeconds === int(E.clusterInit.activeDeadlineSeconds),
    where, 'backoffLimit/activeDeadlineSeconds differ from coordination.etcd.clusterInit');
  const spec = obj.spec.template.spec;
  check(spec.restartPolicy === 'Never', where, 'restartPolicy must be Never (the Job retries in a new pod)');
  const c = spec.containers[0];
  const cw = `${where} container ${c.name}`;
  const argv = c.args || [];
  checkEtcdFlagsOfKvctl(argv, cw);
  const config = flagValue(argv, 'config');
  const mount = (c.volumeMounts || []).find((m) => config === `${m.mountPath}/topology.yaml`);
  const vol = mount && (spec.volumes || []).find((v) => v.name === mount.name);
  check(vol && vol.configMap && topologyConfigMaps.length === 1 && vol.configMap.name === topologyConfigMaps[0].obj.metadata.name,
    cw, `--config=${config} is not topology.yaml of the topology ConfigMap`);
  checkServerExtras(c, spec, argv, cw, true);
  if (V.auth.tokenSecretName) {
    check(!(spec.volumes || []).some((v) => v.secret && v.secret.secretName === V.auth.tokenSecretName &&
      (v.secret.items || []).some((i) => i.key === V.auth.tokenKey)), cw, 'the Job mounts the public token, which kvctl cluster init does not use');
  }
  if (binaryFlags.kvctl) {
    for (const a of argv) {
      const m = /^--([A-Za-z0-9_-]+)(=|$)/.exec(a);
      if (check(m, cw, `argument ${JSON.stringify(a)} is not a --flag`)) {
        check(binaryFlags.kvctl.has(m[1].replace(/-/g, '_')), cw, `--${m[1]} is not a flag of kvctl (see kvctl --help)`);
      }
    }
  }
  checkClusterInitScript(c, cw);
}

function checkEtcdFlagsOfKvctl(argv, where) {
  const endpoints = flagValue(argv, 'etcd');
  const prefix = flagValue(argv, 'etcd-prefix');
  etcdSeen.add(`${endpoints} ${prefix}`);
  check(endpoints === etcdEndpoints && prefix === etcdPrefix, where,
    `kvctl gets --etcd=${endpoints} --etcd-prefix=${prefix}, expected ${etcdEndpoints} and ${etcdPrefix}`);
}

// The Job's script, run with a stub kvctl: success, and kvctl's answer for an
// initialised cluster, succeed; every other failure keeps its exit code.
function checkClusterInitScript(c, cw) {
  if (!check(c.command && c.command[0] === '/bin/sh' && c.command[1] === '-c', cw, 'expected a /bin/sh -c entry point')) return;
  const script = c.command[2];
  const m = /^already="([^"]+)"$/m.exec(script);
  if (!check(m, cw, 'the script has no already="..." message')) return;
  const already = m[1];
  // The message must be kvctl's own (tools/kvctl/cluster_commands.cc).
  const source = path.join(__dirname, '..', '..', '..', 'tools', 'kvctl', 'cluster_commands.cc');
  if (fs.existsSync(source)) {
    check(fs.readFileSync(source, 'utf8').includes(already), cw, `kvctl's cluster init no longer says "${already}" (tools/kvctl/cluster_commands.cc)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-check-init-'));
  fs.writeFileSync(path.join(dir, 'kvctl'),
    '#!/bin/sh\nprintf \'%s\\n\' "$@" > "$STUB_ARGS"\nprintf \'%s\\n\' "$STUB_MESSAGE" >&2\nexit "$STUB_CODE"\n');
  fs.chmodSync(path.join(dir, 'kvctl'), 0o755);
  const run = (code, message) => {
    const r = childProcess.spawnSync('/bin/sh', [...c.command.slice(1), ...(c.args || [])], {
      env: { PATH: `${dir}:/usr/bin:/bin`, STUB_ARGS: path.join(dir, 'args'), STUB_CODE: String(code), STUB_MESSAGE: message },
      encoding: 'utf8',
      timeout: 10000,
    });
    const got = fs.existsSync(path.join(dir, 'args')) ? fs.readFileSync(path.join(dir, 'args'), 'utf8').split('\n').filter((l) => l) : [];
    return { status: r.status, got };
  };
  const ok = run(0, 'initialised /kvstore/x: epoch_base=1048576');
  check(ok.status === 0, cw, `kvctl succeeding: the script exits ${ok.status}`);
  check(ok.got.slice(-2).join(' ') === 'cluster init' && (c.args || []).every((a) => ok.got.includes(a)), cw,
    `kvctl was run with ${ok.got.join(' ')}, expected the Job's args and "cluster init"`);
  const again = run(3, `kvctl: FAILED_PRECONDITION: /kvstore/x/cluster exists already ({"format":1}): ${already}`);
  check(again.status === 0, cw, `an initialised cluster (kvctl exit 3, "${already}"): the script exits ${again.status}, expected 0`);
  const ringOnly = run(3, 'kvctl: FAILED_PRECONDITION: /kvstore/x/ring exists already ({}) but /kvstore/x/cluster does not; nothing was written');
  check(ringOnly.status === 3, cw, `another refusal (exit 3): the script exits ${ringOnly.status}, expected 3`);
  const down = run(4, 'kvctl: UNAVAILABLE: etcd Range: failed to connect');
  check(down.status === 4, cw, `etcd unreachable (exit 4): the script exits ${down.status}, expected 4 (the Job retries)`);
  fs.rmSync(dir, { recursive: true, force: true });
}

// Shard groups.
const statefulSets = byKind('StatefulSet').filter((o) => componentOf(o.obj) === 'shard');
check(statefulSets.length === shardCount, 'StatefulSets', `${statefulSets.length} shard StatefulSets, values say ${shardCount} shards`);
const allAddresses = new Set();
const stubDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-check-'));
for (const binary of ['kv-shard', 'kv-replica']) {
  const stub = path.join(stubDir, binary);
  fs.writeFileSync(stub, `#!/bin/sh\nprintf '%s\\n' "${binary}"\nfor a in "$@"; do printf '%s\\n' "$a"; done\n`);
  fs.chmodSync(stub, 0o755);
}

function runEntryPoint(container, env, where) {
  const argv = [...container.command.slice(1), ...(container.args || [])];
  const r = childProcess.spawnSync(container.command[0], argv, {
    env: { PATH: `${stubDir}:/usr/bin:/bin`, ...env },
    encoding: 'utf8',
    timeout: 10000,
  });
  if (r.status !== 0) return { status: r.status, stderr: r.stderr, where };
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  return { status: 0, binary: lines[0], argv: lines.slice(1), stderr: r.stderr };
}

function sameSet(a, b) {
  return a.length === b.length && new Set(a).size === a.length && a.every((x) => b.includes(x));
}

for (let i = 0; i < shardCount; i++) {
  const name = shardName(i);
  const sts = statefulSets.find((o) => (o.obj.metadata.labels || {})['kvstore.io/shard'] === name);
  if (!check(sts, 'StatefulSets', `no StatefulSet labelled kvstore.io/shard=${name}`)) continue;
  const { where, obj } = sts;
  const group = obj.metadata.name;
  check(obj.spec.replicas === podsPerShard, where, `replicas is ${obj.spec.replicas}, expected 1 + replicasPerShard = ${podsPerShard}`);
  check(`${group}-${podsPerShard - 1}`.length <= 63 && DNS1123_LABEL.test(`${group}-${podsPerShard - 1}`), where,
    `pod name ${group}-${podsPerShard - 1} is not a DNS label (at most 63 characters)`);
  const svc = byKind('Service').find((o) => o.obj.metadata.name === obj.spec.serviceName);
  if (check(svc, where, `serviceName ${obj.spec.serviceName} is not a rendered Service`)) {
    check(svc.obj.spec.clusterIP === 'None', svc.where, 'the governing Service must be headless (clusterIP: None)');
    check(svc.obj.spec.publishNotReadyAddresses === true, svc.where, 'publishNotReadyAddresses must be true (nodes reach each other before they are ready)');
    check(labelsMatch(svc.obj.spec.selector, obj.spec.template.metadata.labels), svc.where, `does not select the pods of ${group}`);
  }
  const pdb = byKind('PodDisruptionBudget').find((o) => labelsMatch(o.obj.spec.selector.matchLabels, obj.spec.template.metadata.labels));
  check(Boolean(pdb) === Boolean(V.shards.podDisruptionBudget.enabled), where,
    `PodDisruptionBudget ${pdb ? 'present' : 'absent'}, shards.podDisruptionBudget.enabled is ${V.shards.podDisruptionBudget.enabled}`);

  const spec = obj.spec.template.spec;
  const container = spec.containers[0];
  const cw = `${where} container ${container.name}`;
  // Data volume.
  const claims = (obj.spec.volumeClaimTemplates || []).map((c) => c.metadata.name);
  const dataMount = (container.volumeMounts || []).find((m) => claims.includes(m.name));
  check(dataMount && dataMount.mountPath === V.shards.dataMountPath, cw, `no volumeClaimTemplate mounted at ${V.shards.dataMountPath}`);
  check(V.shards.dataDir.startsWith(`${V.shards.dataMountPath}/`), cw, `dataDir ${V.shards.dataDir} is not inside ${V.shards.dataMountPath}`);
  // Common flags.
  const flags = container.args || [];
  check(flagValue(flags, 'fsync') === V.shards.fsync, cw, `--fsync is ${flagValue(flags, 'fsync')}, values say ${V.shards.fsync}`);
  check(flagValue(flags, 'ack') === V.shards.ack, cw, `--ack is ${flagValue(flags, 'ack')}, values say ${V.shards.ack}`);
  check(V.shards.ack === 'sync' ? flagValue(flags, 'sync-acks') === String(int(V.shards.syncAcks)) : flagValue(flags, 'sync-acks') === undefined,
    cw, `--sync-acks is ${flagValue(flags, 'sync-acks')} with ack ${V.shards.ack}`);
  check(flagValue(flags, 'max-value-bytes') === String(int(V.limits.maxValueBytes)), cw, '--max-value-bytes differs from limits.maxValueBytes');
  check(flags.every((f) => /^--[a-z0-9_-]+=[^\s]*$/.test(f) && !/e\+\d/.test(f)), cw,
    `malformed flags (a number printed as a float?): ${flags.filter((f) => !/^--[a-z0-9_-]+=[^\s]*$/.test(f) || /e\+\d/.test(f))}`);
  check(container.ports.find((p) => p.name === 'grpc').containerPort === port, cw, `grpc containerPort is not shards.port ${port}`);

  // Run the entry point for every ordinal.
  const members = [...Array(podsPerShard).keys()].map((o) => memberAddress(group, o));
  members.forEach((m) => {
    check(!allAddresses.has(m), where, `address ${m} is used twice`);
    allAddresses.add(m);
  });
  const env = {};
  for (const e of container.env || []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom && e.valueFrom.configMapKeyRef) env[e.name] = configMapKey(e.valueFrom.configMapKeyRef, cw);
    else if (e.valueFrom && e.valueFrom.fieldRef) {
      check(['metadata.name', 'metadata.namespace'].includes(e.valueFrom.fieldRef.fieldPath), cw, `unexpected fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
    }
  }
  const expectedLeader = leaderOrdinal(name);
  if (etcdMode) {
    check(env.KV_LEADER_ORDINAL === undefined, cw, 'etcd mode: the leaders ConfigMap must not decide roles (KV_LEADER_ORDINAL is set)');
  } else {
    check(env.KV_LEADER_ORDINAL === String(expectedLeader), cw,
      `the leaders ConfigMap gives ordinal ${env.KV_LEADER_ORDINAL} for ${name}, values say ${expectedLeader}`);
  }
  const dataRoot = fs.mkdtempSync(path.join(stubDir, 'data-'));
  const podEnv = (ordinal, dataDir) => ({
    ...env,
    POD_NAME: `${group}-${ordinal}`,
    POD_NAMESPACE: release.namespace,
    KV_DATA_DIR: dataDir || path.join(dataRoot, String(ordinal)),
  });
  for (let o = 0; o < podsPerShard; o++) {
    const ow = `${cw} ordinal ${o}`;
    const r = runEntryPoint(container, podEnv(o), ow);
    if (!check(r.status === 0, ow, `the entry point failed (exit ${r.status}): ${r.stderr}`)) continue;
    // etcd mode: every node starts as a follower; etcd elects the leader.
    const wantBinary = !etcdMode && o === expectedLeader ? 'kv-shard' : 'kv-replica';
    check(r.binary === wantBinary, ow, `starts ${r.binary}, expected ${wantBinary} (leader ordinal ${expectedLeader})`);
    check(flagValue(r.argv, 'advertise') === members[o], ow, `--advertise is ${flagValue(r.argv, 'advertise')}, expected ${members[o]}`);
    const followers = (flagValue(r.argv, 'followers') || '').split(',').filter((f) => f !== '');
    checkEtcdFlags(r.argv, true, ow);
    if (etcdMode) {
      check(!r.argv.some((a) => a.startsWith('--followers=')), ow, 'etcd mode: --followers is passed (the members come from etcd)');
    } else check(sameSet(followers, members.filter((_, k) => k !== o)), ow,
      `--followers is ${followers.join(',') || '(none)'}, expected exactly the other ordinals ${members.filter((_, k) => k !== o).join(',') || '(none)'}`);
    check(flagValue(r.argv, 'listen') === `${V.listenHost}:${port}`, ow, `--listen is ${flagValue(r.argv, 'listen')}`);
    check(flagValue(r.argv, 'data-dir') === path.join(dataRoot, String(o)), ow, `--data-dir is ${flagValue(r.argv, 'data-dir')}`);
    check(flags.every((f) => r.argv.includes(f)), ow, 'the container args are not all passed on');
    checkFlagsKnown(r.argv, ['kv-shard', 'kv-replica'], ow);
  }
  // EPOCH decides over the ordinal: a promoted node leads again, a node that
  // followed another leader stays a replica.
  // etcd mode: EPOCH decides nothing, every case starts kv-replica.
  const epochCase = (ordinal, content, staticBinary, what) => {
    const wantBinary = etcdMode ? 'kv-replica' : staticBinary;
    const dir = fs.mkdtempSync(path.join(stubDir, 'epoch-'));
    fs.writeFileSync(path.join(dir, 'EPOCH'), content);
    const r = runEntryPoint(container, podEnv(ordinal, dir), `${cw} ordinal ${ordinal}`);
    check(r.status === 0 && r.binary === wantBinary, `${cw} ordinal ${ordinal}`,
      `${what}: starts ${r.binary || `nothing (exit ${r.status}: ${r.stderr})`}, expected ${wantBinary}`);
  };
  if (podsPerShard > 1) {
    const other = expectedLeader === 0 ? 1 : 0;
    epochCase(other, `2 ${members[other]}\n`, 'kv-shard', 'EPOCH names this (promoted) node');
    epochCase(expectedLeader, `2 ${members[other]}\n`, 'kv-replica', 'EPOCH names another leader');
  }
  epochCase(expectedLeader, '3', 'kv-replica', 'EPOCH without a leader (deposed)');
  epochCase(expectedLeader, `1 ${members[expectedLeader]}`, 'kv-shard', 'EPOCH naming itself without a newline');
  // A pod in another namespace than the chart was rendered for refuses to start.
  const wrongNs = runEntryPoint(container, { ...podEnv(0), POD_NAMESPACE: `${release.namespace}-other` }, cw);
  check(wrongNs.status === 2, cw, `a pod in another namespace must exit 2, got ${wrongNs.status}`);

  // The topology entry of this shard.
  if (topology && Array.isArray(topology.shards)) {
    const entry = topology.shards.find((s) => s.name === name);
    if (check(entry, 'topology.yaml', `shard ${name} is missing`)) {
      check(entry.leader === members[expectedLeader], 'topology.yaml', `${name}: leader is ${entry.leader}, expected ${members[expectedLeader]}`);
      check(Array.isArray(entry.replicas) && sameSet(entry.replicas, members.filter((_, k) => k !== expectedLeader)),
        'topology.yaml', `${name}: replicas are ${entry.replicas}, expected the other ordinals`);
    }
  }
}
if (topology && Array.isArray(topology.shards)) {
  const names = topology.shards.map((s) => s.name);
  check(sameSet(names, [...Array(shardCount).keys()].map(shardName)), 'topology.yaml', `shard names ${names}`);
}

// The router.
const routers = byKind('Deployment').filter((o) => (o.obj.metadata.labels || {})['app.kubernetes.io/component'] === 'router');
if (check(routers.length === 1, 'Deployments', `expected one router Deployment, found ${routers.length}`)) {
  const { where, obj } = routers[0];
  const spec = obj.spec.template.spec;
  const c = spec.containers[0];
  const cw = `${where} container ${c.name}`;
  const argv = [...(c.command || []), ...(c.args || [])];
  check(argv[0] === 'kv-router', cw, `runs ${argv[0]}, expected kv-router`);
  const topologyPath = flagValue(argv, 'topology');
  const mount = (c.volumeMounts || []).find((m) => topologyPath && topologyPath === `${m.mountPath}/topology.yaml`);
  checkEtcdFlags(argv, false, cw);
  if (etcdMode) {
    // The router follows etcd; a topology file would be ignored, so none is given.
    check(!argv.some((a) => a.startsWith('--topology=') || a.startsWith('--watch-topology-ms=')), cw,
      'etcd mode: the router must get neither --topology nor --watch-topology-ms');
    check(!(spec.volumes || []).some((v) => v.configMap && topologyConfigMaps.some((t) => t.obj.metadata.name === v.configMap.name)),
      cw, 'etcd mode: the router must not mount the topology ConfigMap');
  } else if (check(mount, cw, `--topology=${topologyPath} is not topology.yaml in a mounted volume`)) {
    check(!mount.subPath, cw, 'the topology must be mounted as a directory (a subPath mount never sees ConfigMap updates)');
    const vol = (spec.volumes || []).find((v) => v.name === mount.name);
    check(vol && vol.configMap && topologyConfigMaps.length === 1 && vol.configMap.name === topologyConfigMaps[0].obj.metadata.name,
      cw, 'the topology volume is not the topology ConfigMap');
  }
  const routerPort = int(V.router.port);
  check(flagValue(argv, 'listen') === `${V.listenHost}:${routerPort}`, cw, `--listen is ${flagValue(argv, 'listen')}`);
  check(flagValue(argv, 'max-value-bytes') === String(int(V.limits.maxValueBytes)), cw, '--max-value-bytes differs from limits.maxValueBytes');
  check(flagValue(argv, 'max-batch-items') === String(int(V.limits.maxBatchItems)), cw, '--max-batch-items differs from limits.maxBatchItems');
  check(argv.slice(1).every((f) => /^--[a-z0-9_-]+=[^\s]*$/.test(f) && !/e\+\d/.test(f)), cw, `malformed flags: ${argv.slice(1)}`);
  checkFlagsKnown(argv.slice(1), ['kv-router'], cw);
  const hpas = byKind('HorizontalPodAutoscaler');
  if (V.router.autoscaling.enabled) {
    check(obj.spec.replicas === undefined, where, 'with autoscaling the Deployment must leave replicas to the HPA');
    check(hpas.length === 1 && hpas[0].obj.spec.scaleTargetRef.kind === 'Deployment' && hpas[0].obj.spec.scaleTargetRef.name === obj.metadata.name,
      'HorizontalPodAutoscaler', 'expected one HPA targeting the router Deployment');
    check(hpas.length === 1 && hpas[0].obj.spec.minReplicas === int(V.router.autoscaling.minReplicas) && hpas[0].obj.spec.maxReplicas === int(V.router.autoscaling.maxReplicas),
      'HorizontalPodAutoscaler', 'min/max replicas differ from values');
  } else {
    check(obj.spec.replicas === int(V.router.replicas), where, `replicas is ${obj.spec.replicas}, values say ${V.router.replicas}`);
    check(hpas.length === 0, 'HorizontalPodAutoscaler', 'autoscaling is off but an HPA is rendered');
  }
  const pdb = byKind('PodDisruptionBudget').find((o) => labelsMatch(o.obj.spec.selector.matchLabels, obj.spec.template.metadata.labels));
  check(Boolean(pdb) === Boolean(V.router.podDisruptionBudget.enabled), where, `router PodDisruptionBudget ${pdb ? 'present' : 'absent'}`);
  const svc = byKind('Service').find((o) => labelsMatch(o.obj.spec.selector, obj.spec.template.metadata.labels));
  check(svc && svc.obj.spec.ports[0].port === int(V.router.service.port) && svc.obj.spec.type === V.router.service.type,
    where, 'the router Service is missing, or its port or type differs from values');
}

// etcd mode: nodes, routers and the Job agree on one etcd and one prefix.
if (etcdMode) {
  check(etcdSeen.size === 1, 'etcd mode', `the containers name ${etcdSeen.size} different etcd endpoints/prefixes: ${[...etcdSeen].join(' | ')}`);
}

// The real topology parser, when the binaries are built: kvctl reads the file
// offline (`kvctl --topology=FILE ring`) with the router's own loader.
let kvctlNote = 'kvctl not built: topology not parsed by the real loader';
if (args.kvctl && topologyText !== null) {
  const file = path.join(stubDir, 'topology.yaml');
  fs.writeFileSync(file, topologyText);
  const r = childProcess.spawnSync(args.kvctl, [`--topology=${file}`, 'ring'], { encoding: 'utf8', timeout: 20000 });
  if (check(r.status === 0, 'topology.yaml', `kvctl --topology=... ring refused it (exit ${r.status}): ${r.stderr}${r.stdout}`)) {
    for (let i = 0; i < shardCount; i++) {
      check(r.stdout.includes(shardName(i)), 'topology.yaml', `kvctl ring does not list ${shardName(i)}`);
    }
    kvctlNote = 'topology accepted by kvctl ring';
  }
}

fs.rmSync(stubDir, { recursive: true, force: true });
expectedProblem(true);

if (problems.length > 0) {
  console.error(`check-deploy: ${caseName}: ${problems.length} problem(s):`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
const flagsNote = args['flags-dir'] ? 'flags known to the binaries' : 'binaries not built: flags not looked up';
console.log(`check-deploy: ${caseName}: ${objects.length} objects valid, ${assertions} checks passed (${kvctlNote}; ${flagsNote})`);
