// kv-router: the stateless front door. Flags → topology → ring → gRPC service;
// SIGHUP reloads the topology, SIGTERM/SIGINT stop it cleanly.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config/flag_names.h"
#include "common/config/flags_config.h"
#include "common/coord/etcd_client.h"
#include "common/coord/lease.h"
#include "common/coord/monotonic_clock.h"
#include "common/metrics/coord_metrics.h"
#include "common/metrics/server_metrics.h"
#include "common/security/credential_watcher.h"
#include "common/security/credentials.h"
#include "common/security/server_flags.h"
#include "common/server/server.h"
#include "common/topology/topology.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "services/router/etcd_topology.h"
#include "services/router/router_admin_service.h"
#include "services/router/router_registration.h"
#include "services/router/router_service.h"
#include "services/router/routing_table.h"

DEFINE_string(listen, "127.0.0.1:50051",
              "Address to serve the gRPC API on (HOST:PORT; port 0 picks a free one)");
DEFINE_string(topology, "",
              "YAML file naming the shards and their leaders and replicas (required; see "
              "deploy/local/topology.yaml). SIGHUP reloads it, and so does a change of the file");
DEFINE_string(etcd_endpoints, "",
              "etcd mode: HOST:PORT[,HOST:PORT...] of etcd. The topology (shards, leaders, "
              "replicas, vnodes) then comes from the cluster's keys in etcd and follows every "
              "leadership change without a restart; --topology is not used");
DEFINE_string(etcd_prefix, "/kvstore/default",
              "etcd mode: the prefix of the cluster's keys (as the nodes' --etcd-prefix)");
DEFINE_string(router_id, "",
              "etcd mode: this router's id, under which it registers as <prefix>/routers/<id> "
              "with the ring version it routes by (default: its HOST:PORT, the machine's host "
              "name for a wildcard listen address)");
DEFINE_string(lease_ttl, "3s",
              "etcd mode: TTL of the lease the router's registration is kept on (whole "
              "seconds, at least 2s, as the nodes' --lease-ttl): a router that stops for longer "
              "drops out of <prefix>/routers/ and a migration's cleanup no longer waits for it");
DEFINE_int64(etcd_start_timeout_ms, 30000,
             "etcd mode: how long to wait at start for a topology from etcd");
DEFINE_int64(watch_topology_ms, 1000,
             "How often to check --topology for changes and reload it (0 = only on SIGHUP)");
DEFINE_string(port_file, "",
              "If set, write the bound HOST:PORT here once serving (for scripts and tests)");
DEFINE_int64(shutdown_grace_ms, 10000,
             "On SIGTERM/SIGINT, how long in-flight requests may take before they are cancelled");
DEFINE_int64(forward_timeout_ms, 5000,
             "Deadline of a forwarded request when the client set none, in milliseconds");
DEFINE_uint64(max_replica_lag, 0,
              "Replica reads (read_mode=ANY_REPLICA) skip replicas that report being more than "
              "this many log entries behind the leader (0 = no limit)");
DEFINE_int64(probe_interval_ms, 500,
             "How often every backend (leaders and replicas) is probed with Admin.Status, in "
             "milliseconds: a node that fails its probe gets no replica reads, and a node that "
             "reports leading a newer epoch gets the shard's writes (0 = no probes)");
DEFINE_int64(probe_timeout_ms, 400,
             "Deadline of each probe, in milliseconds; no answer in time fails the probe");
DEFINE_uint64(max_value_bytes, 1 << 20,
              "Largest value accepted, in bytes (checked before forwarding; match the shards)");
DEFINE_uint64(max_batch_items, 10000,
              "Most keys accepted in one MultiGet or MultiSet (match the shards)");
DEFINE_uint64(max_response_bytes, 64 << 20,
              "Largest MultiGet answer gathered from the shards, in bytes: a MultiGet whose "
              "answer would be larger fails with RESOURCE_EXHAUSTED (match the shards)");
DEFINE_string(backend_token_file, "",
              "File holding the bearer token sent on KeyValue calls to the shards (default: the "
              "--auth-token-file token; set it when the shards require a different one)");
DEFINE_int32(coalesce_in_flight, 2,
             "Per backend node and kind of request: how many forwarded Get (Set) calls may be out "
             "before further ones wait and go together as one MultiGet (MultiSet) when one "
             "returns; 0 forwards every request on its own (see docs/router.md)");
DEFINE_uint64(coalesce_max_items, 256, "Most requests coalesced into one forwarded call");
DEFINE_uint64(pipeline_max_in_flight, 1024,
              "KeyValue/Pipeline: most requests of one stream forwarded and not yet answered; "
              "the stream is not read further until answers go out");

namespace kvstore {
namespace {

// "3 shards, vnodes 1024; shard-0 leader ... replicas [...] owns 33.4%; ...".
std::string Describe(const RoutingTable& table) {
  std::string out = absl::StrCat(table.shard_count(), " shards, vnodes ", table.ring().vnodes());
  if (table.ring_version() > 0) absl::StrAppend(&out, ", ring version ", table.ring_version());
  const std::vector<double> ownership = table.ring().Ownership();
  for (int i = 0; i < table.shard_count(); ++i) {
    const ShardTopology& shard = table.topology().shards[i];
    absl::StrAppend(&out, "; ", shard.name, " leader ", shard.leader, " replicas [",
                    absl::StrJoin(shard.replicas, ","), "] owns ",
                    absl::StrFormat("%.1f%%", ownership[i] * 100));
  }
  return out;
}

// Metrics read at scrape time: each shard's leader in use and what the last
// probe of each of its nodes found.
void WriteRouterStatusMetrics(const RouterService& service, ExpositionWriter* out) {
  const std::shared_ptr<RoutingTable> table = service.table();
  std::vector<ShardLeader> shards;
  std::vector<BackendProbe> probes;
  for (int i = 0; i < table->shard_count(); ++i) {
    const ShardTopology& shard = table->topology().shards[i];
    shards.push_back({shard.name, table->Leader(i)});
    std::vector<std::string> nodes = shard.replicas;
    nodes.insert(nodes.begin(), shard.leader);
    for (const std::string& node : nodes) {
      const NodeHealth h = service.health().Get(node);
      probes.push_back({node, shard.name, h.probe != NodeHealth::Probe::kUnknown, h.ok(), h.role,
                        h.epoch, h.last_index, h.lag_entries});
    }
  }
  WriteRouterBackendMetrics(shards, probes, out);
}

// What identifies a version of the topology file: a change of any of these
// (an edit in place, or a new file renamed over it) triggers a reload.
struct FileStamp {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp& o) const {
    return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
           mtime_ns == o.mtime_ns;
  }
};

FileStamp StampOf(const std::string& path) {
  FileStamp stamp;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.dev = st.st_dev;
  stamp.ino = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return stamp;
}

// Takes SIGHUP: calls `on_hangup` (the credential watcher) and, with a
// topology file, reloads the topology on SIGHUP and when the file changes.
// SIGHUP is blocked in every thread (main blocks it before any thread starts)
// and taken here with sigtimedwait, by this one thread; between signals the
// file is checked every --watch-topology-ms (stat: no inotify, so it also
// works on the files Kubernetes swaps in for an updated ConfigMap).
class TopologyReloader {
 public:
  // `service` is null in etcd mode: no topology file to watch.
  TopologyReloader(RouterService* service, std::function<void()> on_hangup)
      : service_(service),
        on_hangup_(std::move(on_hangup)),
        loaded_(service != nullptr ? StampOf(FLAGS_topology) : FileStamp()) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~TopologyReloader() {
    stopping_.store(true);
    // Wakes the wait (SIGHUP is blocked there, so it is only queued).
    pthread_kill(thread_.native_handle(), SIGHUP);
    thread_.join();
  }

 private:
  void Loop() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    const bool watch = service_ != nullptr && FLAGS_watch_topology_ms > 0;
    const int64_t watch_ms = watch ? FLAGS_watch_topology_ms : 1000;
    const timespec interval = {static_cast<time_t>(watch_ms / 1000),
                               static_cast<long>((watch_ms % 1000) * 1000000)};
    for (;;) {
      const int signal = sigtimedwait(&set, nullptr, &interval);
      if (stopping_.load()) return;
      if (signal == SIGHUP) {
        on_hangup_();
        if (service_ != nullptr) Reload("SIGHUP");
      } else if (watch) {
        const FileStamp now = StampOf(FLAGS_topology);
        if (now.exists && !(now == loaded_)) Reload("the topology file changed");
      }
    }
  }

  void Reload(const char* why) {
    // Remembered before reading, so an edit during the read is seen next time.
    loaded_ = StampOf(FLAGS_topology);
    absl::StatusOr<Topology> topology = LoadTopologyFile(FLAGS_topology);
    absl::StatusOr<std::shared_ptr<RoutingTable>> table =
        topology.ok() ? RoutingTable::Create(*std::move(topology)) : topology.status();
    if (!table.ok()) {
      LOG(ERROR) << why << ": keeping the current topology: " << table.status();
      return;
    }
    std::shared_ptr<RoutingTable> old = service_->table();
    if (old->topology().ShardNames() != (*table)->topology().ShardNames() ||
        old->topology().vnodes != (*table)->topology().vnodes) {
      LOG(WARNING) << why << ": the shards or vnodes changed ("
                   << absl::StrJoin(old->topology().ShardNames(), ",") << " vnodes "
                   << old->topology().vnodes << " -> "
                   << absl::StrJoin((*table)->topology().ShardNames(), ",") << " vnodes "
                   << (*table)->topology().vnodes
                   << "): keys change owner, and nothing moves their data";
    }
    service_->SetTable(*table);
    LOG(INFO) << why << ": topology reloaded from " << FLAGS_topology << ": " << Describe(**table);
  }

  RouterService* const service_;
  const std::function<void()> on_hangup_;
  FileStamp loaded_;  // Only the reloader thread touches it after construction.
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

int Run() {
  const bool etcd_mode = !FLAGS_etcd_endpoints.empty();
  if (FLAGS_topology.empty() && !etcd_mode) {
    std::fprintf(stderr, "kv-router: --topology=FILE (or --etcd-endpoints) is required\n");
    return 2;
  }
  absl::Duration lease_ttl;
  if (!absl::ParseDuration(FLAGS_lease_ttl, &lease_ttl) || lease_ttl < coord::Lease::kMinTtl) {
    std::fprintf(stderr,
                 "kv-router: --lease-ttl: '%s' is not a duration of at least 2s (etcd 3.4 grants "
                 "no shorter lease)\n",
                 FLAGS_lease_ttl.c_str());
    return 2;
  }
  CoordMetrics coord_metrics(coord::SteadyNanos);  // Outlives the client and the metrics.
  std::unique_ptr<coord::EtcdClient> etcd;
  std::unique_ptr<EtcdTopologySource> etcd_topology;
  absl::StatusOr<Topology> topology;
  if (etcd_mode) {
    coord::EtcdClientOptions etcd_options;
    etcd_options.endpoints = FLAGS_etcd_endpoints;
    etcd_options.on_call = [&coord_metrics](absl::string_view method, absl::Duration took,
                                            absl::StatusCode code) {
      coord_metrics.EtcdCall(method, took, code);
    };
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client =
        coord::EtcdClient::Create(etcd_options);
    if (!client.ok()) {
      std::fprintf(stderr, "kv-router: --etcd-endpoints: %s\n",
                   std::string(client.status().message()).c_str());
      return 2;
    }
    etcd = *std::move(client);
    etcd_topology = std::make_unique<EtcdTopologySource>(etcd.get(), FLAGS_etcd_prefix);
    topology = etcd_topology->Start(absl::Milliseconds(FLAGS_etcd_start_timeout_ms));
  } else {
    topology = LoadTopologyFile(FLAGS_topology);
  }
  if (!topology.ok()) {
    std::fprintf(stderr, "kv-router: %s\n", std::string(topology.status().message()).c_str());
    return 2;
  }
  const std::string source = etcd_mode ? absl::StrCat("etcd ", FLAGS_etcd_prefix) : FLAGS_topology;
  absl::StatusOr<std::shared_ptr<RoutingTable>> table = RoutingTable::Create(*std::move(topology));
  if (!table.ok()) {
    std::fprintf(stderr, "kv-router: %s: %s\n", source.c_str(),
                 std::string(table.status().message()).c_str());
    return 2;
  }
  if (FLAGS_forward_timeout_ms <= 0) {
    std::fprintf(stderr, "kv-router: --forward-timeout-ms must be positive\n");
    return 2;
  }
  if (FLAGS_coalesce_in_flight < 0 || FLAGS_coalesce_max_items < 1) {
    std::fprintf(stderr,
                 "kv-router: --coalesce-in-flight must be 0 or more and --coalesce-max-items "
                 "positive\n");
    return 2;
  }
  if (FLAGS_pipeline_max_in_flight < 1 || FLAGS_pipeline_max_in_flight > 1'000'000) {
    std::fprintf(stderr, "kv-router: --pipeline-max-in-flight must be 1 to 1000000\n");
    return 2;
  }
  if (FLAGS_probe_interval_ms < 0 || FLAGS_probe_timeout_ms <= 0) {
    std::fprintf(stderr,
                 "kv-router: --probe-interval-ms must be 0 or more and --probe-timeout-ms "
                 "positive\n");
    return 2;
  }

  // TLS and tokens (docs/security.md): the router checks its clients and
  // calls the shards with its own certificate and the tokens.
  SecurityFlags security_flags = SecurityFlagsFromCommandLine();
  security_flags.backend_token_file = FLAGS_backend_token_file;
  absl::StatusOr<ServerSecurity> security = LoadServerSecurity(security_flags);
  if (!security.ok()) {
    std::fprintf(stderr, "kv-router: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  // Rotated token and TLS files are put in force without a restart
  // (--credentials-reload-interval, SIGHUP); before the metrics, which read it.
  CredentialWatcher credential_watcher(security_flags, &*security);

  // Metrics (--metrics-listen): declared before the service that feeds them.
  ServerMetrics metrics(MetricsFlagsFromCommandLine());
  CounterVec backend_errors({"backend", "code"});

  RouterOptions options;
  if (metrics.enabled()) {
    options.on_backend_error = [&backend_errors](const std::string& backend,
                                                 grpc::StatusCode code) {
      backend_errors.Add({backend, std::string(GrpcCodeName(code))});
    };
  }
  options.access = &security->policy;
  options.backend_security = security->client;
  options.limits.max_value_bytes = FLAGS_max_value_bytes;
  options.limits.max_batch_items = FLAGS_max_batch_items;
  options.limits.max_response_bytes = FLAGS_max_response_bytes;
  options.forward_timeout_ms = FLAGS_forward_timeout_ms;
  options.max_replica_lag = FLAGS_max_replica_lag;
  options.probe_interval_ms = FLAGS_probe_interval_ms;
  options.probe_timeout_ms = FLAGS_probe_timeout_ms;
  options.coalesce_in_flight = FLAGS_coalesce_in_flight;
  options.coalesce_max_items = FLAGS_coalesce_max_items;
  options.pipeline_max_in_flight = FLAGS_pipeline_max_in_flight;
  if (etcd_topology) {
    // After a WRONG_SHARD from a shard that knows a newer ring: read it now.
    options.refresh_ring = [source = etcd_topology.get()](std::function<void()> done) {
      source->Refresh(std::move(done));
    };
  }
  // Room for the largest value and for the largest answer, and then some.
  options.max_message_bytes = static_cast<int>(std::min<uint64_t>(
      std::max(FLAGS_max_value_bytes * 2, FLAGS_max_response_bytes) + (4 << 20), INT32_MAX));
  auto service = std::make_unique<RouterService>(options, *table);
  RouterAdminService admin(KVSTORE_VERSION, &security->policy);
  admin.set_cluster([&service] { return service->table(); }, service->channels());

  ServerOptions server_options;
  server_options.listen = FLAGS_listen;
  server_options.services = {service.get(), &admin};
  server_options.shutdown_grace_ms = FLAGS_shutdown_grace_ms;
  server_options.port_file = FLAGS_port_file;
  server_options.credentials = security->server_credentials;
  server_options.max_message_bytes = options.max_message_bytes;
  metrics.Instrument(&server_options);
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(server_options);
  if (!server.ok()) {
    LOG(ERROR) << "Cannot serve: " << server.status();
    return 1;
  }
  metrics.AddCollector(
      [&credential_watcher](ExpositionWriter* out) { credential_watcher.WriteMetrics(out); });
  metrics.AddCollector([&service, &backend_errors](ExpositionWriter* out) {
    backend_errors.Write(kRouterBackendErrors, kRouterBackendErrorsHelp, out);
    WriteRouterStatusMetrics(*service, out);
  });
  if (etcd_topology) {
    metrics.AddCollector([&coord_metrics, source = etcd_topology.get()](ExpositionWriter* out) {
      coord_metrics.SetTopologyRevision(source->revision());
      coord_metrics.Write(out);
    });
  }
  if (absl::Status s = metrics.Serve(); !s.ok()) {
    LOG(ERROR) << s;
    return 1;
  }
  admin.set_address((*server)->address());
  service->StartProbing();
  LOG(INFO) << "kv-router serving on " << (*server)->address() << ", topology " << source << ": "
            << Describe(**table) << "; security: " << security->summary;
  // etcd mode: registered under <P>/routers/, with the ring it routes by.
  std::unique_ptr<RouterRegistration> registration;
  if (etcd_topology) {
    RouterRegistrationOptions registration_options;
    registration_options.prefix = FLAGS_etcd_prefix;
    registration_options.addr = (*server)->address();
    registration_options.id =
        FLAGS_router_id.empty() ? DefaultRouterId((*server)->address()) : FLAGS_router_id;
    registration_options.lease_ttl = lease_ttl;
    registration =
        std::make_unique<RouterRegistration>(etcd.get(), std::move(registration_options));
    registration->Start(service->table()->ring_version(), etcd_topology->revision());
    etcd_topology->Follow([s = service.get(), source = etcd_topology.get(),
                           r = registration.get()](const Topology& changed) {
      absl::StatusOr<std::shared_ptr<RoutingTable>> next = RoutingTable::Create(changed);
      if (!next.ok()) {
        LOG(ERROR) << "etcd: keeping the current topology: " << next.status();
        return;
      }
      s->SetTable(*next);
      // After the table is in use: the record never claims a ring before
      // the router routes by it.
      r->Update((*next)->ring_version(), source->revision());
      LOG(INFO) << "etcd: topology changed: " << Describe(**next);
    });
  }

  credential_watcher.Start();
  {
    TopologyReloader reloader(etcd_mode ? nullptr : service.get(),
                              [&credential_watcher, &security_flags] {
                                if (security_flags.reload_interval <= absl::ZeroDuration()) {
                                  LOG(INFO) << "SIGHUP: --credentials-reload-interval is 0, no "
                                               "credentials are reloaded";
                                  return;
                                }
                                credential_watcher.RequestCheck();
                              });
    const int signal = (*server)->WaitForTerminationSignal();
    LOG(INFO) << "Signal " << signal << ": finishing in-flight requests";
  }
  credential_watcher.Stop();
  if (registration) registration->Stop();
  if (etcd_topology) etcd_topology->Stop();
  metrics.Stop();
  (*server)->Shutdown();
  LOG(INFO) << "kv-router stopped cleanly";
  return 0;
}

}  // namespace
}  // namespace kvstore

int main(int argc, char** argv) {
  // Before any thread starts: SIGTERM/SIGINT for the server, SIGHUP for the
  // reload thread, each taken with sigwait and never delivered to a handler.
  kvstore::BlockTerminationSignals();
  kvstore::DisableMutexDeadlockDetection();
  sigset_t hangup;
  sigemptyset(&hangup);
  sigaddset(&hangup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hangup, nullptr);

  gflags::SetCommandLineOptionWithMode("logtostderr", "true", gflags::SET_FLAGS_DEFAULT);
  gflags::SetUsageMessage(
      "the kvstore router: forwards each request to the shard that owns its key.\n"
      "Usage: kv-router --topology=FILE [--listen=HOST:PORT] [--config=FILE] ...\n"
      "Flags may be spelled with dashes or underscores; a flag on the command line overrides "
      "the same key in --config. SIGHUP reloads --topology.");
  gflags::SetVersionString(KVSTORE_VERSION);
  kvstore::NormalizeFlagSpelling(argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  if (argc > 1) {
    std::fprintf(stderr, "kv-router: unexpected argument '%s' (see --help)\n", argv[1]);
    return 2;
  }
  if (absl::Status s = kvstore::LoadConfigFromFlag(); !s.ok()) {
    std::fprintf(stderr, "kv-router: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return kvstore::Run();
}
