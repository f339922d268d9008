#include "services/node/node_main.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/config/flag_names.h"
#include "common/config/flags_config.h"
#include "common/config/units.h"
#include "common/coord/etcd_client.h"
#include "common/coord/schema.h"
#include "common/failover/failover_agent.h"
#include "common/metrics/coord_metrics.h"
#include "common/metrics/migration_metrics.h"
#include "common/metrics/server_metrics.h"
#include "common/replication/node.h"
#include "common/security/credential_watcher.h"
#include "common/security/credentials.h"
#include "common/security/server_flags.h"
#include "common/server/hangup_listener.h"
#include "common/server/server.h"
#include "common/storage/storage_failpoints.h"
#include "common/storage/store.h"
#include "common/storage/wal.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "services/node/admin_service.h"
#include "services/node/kv_service.h"
#include "services/node/migration_driver.h"
#include "services/node/migration_failpoints.h"
#include "services/node/migration_source.h"
#include "services/node/ownership_gate.h"
#include "services/node/ring_feed.h"
#include "services/replication/grpc_transport.h"
#include "services/replication/replication_service.h"

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

#ifndef KVSTORE_VERSION
#define KVSTORE_VERSION "dev"
#endif

DEFINE_string(listen, "127.0.0.1:50061",
              "Address to serve the gRPC API on (HOST:PORT; port 0 picks a free one)");
DEFINE_string(data_dir, "./data/shard", "Directory for the write-ahead log and snapshots");
DEFINE_string(fsync, "everysec",
              "When the log is fsynced: always (before each acknowledgement, group commit), "
              "everysec (in the background each second), no (left to the OS)");
DEFINE_uint64(max_value_bytes, 1 << 20, "Largest value accepted, in bytes");
DEFINE_uint64(max_batch_items, 10000, "Most keys accepted in one MultiGet or MultiSet");
DEFINE_uint64(max_response_bytes, 64 << 20,
              "Largest MultiGet answer, in bytes: a MultiGet whose answer would be larger fails "
              "with RESOURCE_EXHAUSTED (gathering stops as soon as it is over)");
DEFINE_uint64(segment_bytes, 64ull << 20, "Size at which the log starts a new segment file");
DEFINE_uint64(snapshot_every_writes, 1000000,
              "Take a snapshot after this many writes (0 = never by count)");
DEFINE_int64(snapshot_every_seconds, 3600,
             "Take a snapshot this many seconds after the last one if anything changed "
             "(0 = never by time)");
DEFINE_uint64(snapshots_to_keep, 2,
              "Snapshots kept on disk; the log is kept back to the oldest of them");
DEFINE_string(port_file, "",
              "If set, write the bound HOST:PORT here once serving (for scripts and tests)");
DEFINE_int64(shutdown_grace_ms, 10000,
             "On SIGTERM/SIGINT, how long in-flight requests may take before they are cancelled");
#ifdef KV_FAULT_CONTROLS
DEFINE_bool(unsafe_ack_before_fsync, false,
            "FAULT-SUITE CONTROL, UNSAFE: acknowledge writes (and, on a replica, confirm them "
            "to the leader) before their fsync, so a power cut loses acknowledged writes. Only "
            "in builds configured with -DKV_FAULT_CONTROLS=ON");
DEFINE_string(
    failpoints, "",
    "FAULT-SUITE CONTROL: comma-separated failpoints to enable at start (names in "
    "services/node/migration_failpoints.h and common/storage/storage_failpoints.h; an enabled "
    "one kills the process with SIGKILL when reached, or makes that I/O step fail with EIO). "
    "Also switchable in a live process with "
    "`fiu-ctrl -f DATA_DIR/fiu-ctrl -c 'enable name=NAME' PID`. Only in builds configured with "
    "-DKV_FAULT_CONTROLS=ON");
#endif
DEFINE_bool(repair, false,
            "Repair the log in --data-dir (cut it at the first damaged record, keeping a .broken "
            "copy of what is cut), then exit");
DEFINE_string(followers, "",
              "Comma-separated HOST:PORT of the followers (kv-replica) a leader pushes its log "
              "to; a replica uses it once promoted");
DEFINE_string(ack, "async",
              "Default acknowledgement of writes: async (after the leader's own log write) or "
              "sync (after --sync-acks followers confirmed the write as durable); a request's "
              "ack field overrides it");
DEFINE_int32(sync_acks, 1, "With --ack=sync: followers that must confirm each write");
DEFINE_int64(sync_timeout_ms, 5000,
             "How long a sync write waits for its followers before DEADLINE_EXCEEDED (the write "
             "stays on the leader)");
DEFINE_uint64(retain_log_bytes, 1ull << 30,
              "Log kept for followers that are behind, beyond what snapshots need; a follower "
              "that needs more gets a full resync (snapshot)");
DEFINE_string(migration_retention_bytes, "4GiB",
              "A resharding source keeps its log from where a migration's copy started for at "
              "most this much (bytes, or a number with B, KiB, MiB or GiB: 512MiB); a catch-up "
              "that needs more is answered LOG_GONE and that source's copy starts again");
DEFINE_string(cluster, "",
              "Name of the cluster this node belongs to; a replica refuses a leader of another "
              "cluster (empty: not checked)");
DEFINE_string(shard, "",
              "Name of the shard this node belongs to (e.g. s0); a replica refuses a leader of "
              "another shard instead of resyncing from it, and the name is kept in the data "
              "directory (empty: learned from the first leader)");
DEFINE_string(node_id, "",
              "This node's id, named as leader in every epoch it leads (default: a random id "
              "made on first start and kept in <data-dir>/NODE_ID)");
DEFINE_int64(start_wait_ms, 3000,
             "A leader that starts waits this long for every follower to answer before it "
             "takes writes; then it leads once enough have (any under --ack=async; under "
             "--ack=sync, followers - sync-acks + 1), never if one of them is ahead of it");
DEFINE_string(advertise, "",
              "This node's address as clients and followers should reach it (default: the "
              "bound --listen address)");
DEFINE_string(etcd_endpoints, "",
              "etcd mode: HOST:PORT[,HOST:PORT...] of etcd. Leadership then comes from the "
              "shard's leader key in etcd (automatic failover, docs/failover.md): kv-shard and "
              "kv-replica both start as followers, and --followers is not used (the other "
              "members come from etcd). Empty: static mode");
DEFINE_string(etcd_prefix, "",
              "etcd mode: the prefix of the cluster's keys (default /kvstore/<--cluster>, "
              "/kvstore/default without --cluster)");
DEFINE_string(lease_ttl, "3s",
              "etcd mode: TTL of this node's lease (whole seconds, at least 2s). A leader "
              "that cannot renew it stops acknowledging writes before it runs out");
DEFINE_string(failover, "auto",
              "etcd mode: auto (the most advanced eligible member campaigns when the leader "
              "key is gone) or manual (no campaign; an operator runs kvctl promote on a node)");
DEFINE_string(election_wait, "500ms",
              "etcd mode: how long a member waits after the leader key is gone before it reads "
              "the members' positions and campaigns");
DEFINE_uint64(max_lag_on_failover, 0,
              "etcd mode, --ack=async: while this node leads, an election after it refuses "
              "every member more than this many log entries behind the position it last "
              "recorded in etcd (those acknowledged writes would be lost; kvctl promote "
              "--force still can). 0: no limit, the most advanced member always runs");
DEFINE_string(isr_timeout, "1s",
              "etcd mode, --ack=sync: a follower silent or behind for this long leaves the "
              "in-sync set (recorded in etcd before any write is acknowledged without it)");

namespace kvstore {
namespace {

#ifdef KV_FAULT_CONTROLS
// libfiu: the failpoints of --failpoints enabled, and the remote control
// fiu-ctrl speaks to opened: <data-dir>/fiu-ctrl-PID.{in,out}, in the data
// directory rather than /tmp so that a process killed by a failpoint (or
// kill -9) leaves nothing behind outside it. An unknown name is refused, so
// that a typo cannot make a crash test pass vacuously.
absl::Status SetUpFailpoints() {
  if (fiu_init(0) != 0) return absl::InternalError("fiu_init failed");
  const std::string fifo = absl::StrCat(FLAGS_data_dir, "/fiu-ctrl");
  if (fiu_rc_fifo(fifo.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot open the fiu-ctrl fifo ", fifo, "-PID.in"));
  }
  for (absl::string_view name : absl::StrSplit(FLAGS_failpoints, ',', absl::SkipEmpty())) {
    const bool storage =
        std::find(std::begin(storage_failpoints::kAll), std::end(storage_failpoints::kAll), name) !=
        std::end(storage_failpoints::kAll);
    if (!storage && std::find(std::begin(failpoints::kAll), std::end(failpoints::kAll), name) ==
                        std::end(failpoints::kAll)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--failpoints: unknown failpoint '", name,
                       "' (see migration_failpoints.h, common/storage/storage_failpoints.h)"));
    }
    const std::string n(name);
    if (fiu_enable(n.c_str(), 1, nullptr, 0) != 0) {
      return absl::InternalError(absl::StrCat("--failpoints: cannot enable ", n));
    }
    LOG(WARNING) << "--failpoints: " << n
                 << " is enabled: this process kills itself there, or fails that step with EIO";
  }
  return absl::OkStatus();
}
#endif

// The etcd-mode flags, checked before anything is opened.
struct EtcdModeFlags {
  bool enabled = false;
  FailoverOptions failover;
};

absl::StatusOr<EtcdModeFlags> ParseEtcdModeFlags() {
  EtcdModeFlags out;
  out.enabled = !FLAGS_etcd_endpoints.empty();
  absl::Duration ttl;
  if (!absl::ParseDuration(FLAGS_lease_ttl, &ttl)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lease-ttl: '", FLAGS_lease_ttl, "' is not a duration (e.g. 3s)"));
  }
  if (ttl < coord::Lease::kMinTtl) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--lease-ttl: ", FLAGS_lease_ttl,
        " is below the minimum of 2s (etcd 3.4 grants no "
        "shorter lease, so a shorter one would silently last longer than this node believes)"));
  }
  absl::Duration wait;
  if (!absl::ParseDuration(FLAGS_election_wait, &wait) || wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--election-wait: '", FLAGS_election_wait,
                                                   "' is not a non-negative duration"));
  }
  if (FLAGS_failover != "auto" && FLAGS_failover != "manual") {
    return absl::InvalidArgumentError(
        absl::StrCat("--failover: '", FLAGS_failover, "' (expected auto or manual)"));
  }
  if (out.enabled && FLAGS_shard.empty()) {
    return absl::InvalidArgumentError(
        "--etcd-endpoints needs --shard (the shard this node serves)");
  }
  out.failover.prefix =
      FLAGS_etcd_prefix.empty() ? coord::DefaultPrefix(FLAGS_cluster) : FLAGS_etcd_prefix;
  out.failover.shard = FLAGS_shard;
  out.failover.lease_ttl = ttl;
  out.failover.automatic = FLAGS_failover == "auto";
  out.failover.election_wait = wait;
  out.failover.max_lag_on_failover = FLAGS_max_lag_on_failover;
  return out;
}

int Run(NodeKind kind, const char* program) {
  absl::StatusOr<FsyncPolicy> fsync = ParseFsyncPolicy(FLAGS_fsync);
  if (!fsync.ok()) {
    std::fprintf(stderr, "%s: --fsync: %s\n", program,
                 std::string(fsync.status().message()).c_str());
    return 2;
  }
  if (FLAGS_repair) {
    absl::StatusOr<std::string> report = Wal::Repair(PosixFileSystem(), FLAGS_data_dir);
    if (!report.ok()) {
      std::fprintf(stderr, "%s: repair failed: %s\n", program, report.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", report->c_str());
    return 0;
  }
  absl::StatusOr<EtcdModeFlags> etcd_mode = ParseEtcdModeFlags();
  if (!etcd_mode.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(etcd_mode.status().message()).c_str());
    return 2;
  }
  NodeOptions node_options;
  node_options.coordinated = etcd_mode->enabled;
  node_options.advertise = FLAGS_advertise;
  node_options.cluster = FLAGS_cluster;
  node_options.shard = FLAGS_shard;
  node_options.node_id = FLAGS_node_id;
  if (FLAGS_start_wait_ms < 0) {
    std::fprintf(stderr, "%s: --start-wait-ms must not be negative\n", program);
    return 2;
  }
  node_options.start_wait = absl::Milliseconds(FLAGS_start_wait_ms);
  for (absl::string_view f : absl::StrSplit(FLAGS_followers, ',', absl::SkipWhitespace())) {
    node_options.followers.emplace_back(absl::StripAsciiWhitespace(f));
  }
  if (FLAGS_ack == "sync") {
    if (FLAGS_sync_acks < 1) {
      std::fprintf(stderr, "%s: --sync-acks must be at least 1 with --ack=sync\n", program);
      return 2;
    }
    if (kind == NodeKind::kShard && !etcd_mode->enabled &&
        FLAGS_sync_acks > static_cast<int>(node_options.followers.size())) {
      std::fprintf(stderr,
                   "%s: --ack=sync --sync-acks=%d needs at least that many --followers (%zu "
                   "given)\n",
                   program, FLAGS_sync_acks, node_options.followers.size());
      return 2;
    }
    node_options.sync_acks = FLAGS_sync_acks;
  } else if (FLAGS_ack != "async") {
    std::fprintf(stderr, "%s: --ack: unknown mode '%s' (expected async or sync)\n", program,
                 FLAGS_ack.c_str());
    return 2;
  }
  if (FLAGS_sync_timeout_ms <= 0) {
    std::fprintf(stderr, "%s: --sync-timeout-ms must be positive\n", program);
    return 2;
  }
  node_options.sync_timeout = absl::Milliseconds(FLAGS_sync_timeout_ms);
  if (!absl::ParseDuration(FLAGS_isr_timeout, &node_options.isr_timeout) ||
      node_options.isr_timeout <= absl::ZeroDuration()) {
    std::fprintf(stderr, "%s: --isr-timeout: '%s' is not a positive duration (e.g. 1s)\n", program,
                 FLAGS_isr_timeout.c_str());
    return 2;
  }
  // TLS and tokens (docs/security.md); checked before anything is opened.
  const SecurityFlags security_flags = SecurityFlagsFromCommandLine();
  absl::StatusOr<ServerSecurity> security = LoadServerSecurity(security_flags);
  if (!security.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(security.status().message()).c_str());
    return 2;
  }
  // Rotated token and TLS files are put in force without a restart
  // (--credentials-reload-interval, SIGHUP); before the metrics, which read it.
  CredentialWatcher credential_watcher(security_flags, &*security);
  GrpcReplicationTransport transport(security->client);
  node_options.transport = &transport;

  StoreOptions options;
  options.dir = FLAGS_data_dir;
  options.fsync = *fsync;
  options.segment_bytes = FLAGS_segment_bytes;
  options.snapshot_every_writes = FLAGS_snapshot_every_writes;
  options.snapshot_every_seconds = FLAGS_snapshot_every_seconds;
  options.snapshots_to_keep = FLAGS_snapshots_to_keep;
  options.retain_log_bytes = FLAGS_retain_log_bytes;
  absl::StatusOr<int64_t> migration_retention = ParseByteSize(FLAGS_migration_retention_bytes);
  if (!migration_retention.ok()) {
    std::fprintf(stderr, "%s: --migration-retention-bytes: %s\n", program,
                 std::string(migration_retention.status().message()).c_str());
    return 2;
  }
  options.migration_retain_log_bytes = static_cast<uint64_t>(*migration_retention);
#ifdef KV_FAULT_CONTROLS
  options.unsafe_ack_before_fsync = FLAGS_unsafe_ack_before_fsync;
  if (FLAGS_unsafe_ack_before_fsync) {
    LOG(WARNING) << "--unsafe-ack-before-fsync: writes are acknowledged before their fsync "
                    "(a fault-suite control; a power cut loses acknowledged writes)";
  }
#endif
  // Metrics (--metrics-listen): declared before what they observe, so they
  // outlive it.
  // etcd mode's (the agent's clock); before the metrics, which read it.
  CoordMetrics coord_metrics(coord::SteadyNanos);
  ServerMetrics metrics(MetricsFlagsFromCommandLine());
  metrics.Instrument(&options);
  // Never acknowledge after a failed log write: crash, and let recovery decide.
  options.on_fatal_error = [](const absl::Status& s) {
    LOG(FATAL) << "Cannot write the log, stopping so that restart recovers: " << s;
  };
  // etcd mode: the coordination client, checked before the store is opened.
  std::unique_ptr<coord::EtcdClient> etcd;
  if (etcd_mode->enabled) {
    coord::EtcdClientOptions etcd_options;
    etcd_options.endpoints = FLAGS_etcd_endpoints;
    etcd_options.on_call = [&coord_metrics](absl::string_view method, absl::Duration took,
                                            absl::StatusCode code) {
      coord_metrics.EtcdCall(method, took, code);
    };
    absl::StatusOr<std::unique_ptr<coord::EtcdClient>> client =
        coord::EtcdClient::Create(etcd_options);
    if (!client.ok()) {
      std::fprintf(stderr, "%s: --etcd-endpoints: %s\n", program,
                   std::string(client.status().message()).c_str());
      return 2;
    }
    etcd = *std::move(client);
    if (!node_options.followers.empty()) {
      LOG(WARNING) << "etcd mode: --followers is ignored; the followers are the shard's members "
                      "in etcd";
      node_options.followers.clear();
    }
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  if (!store.ok()) {
    LOG(ERROR) << "Cannot open the store in " << FLAGS_data_dir << ": " << store.status();
    return 1;
  }
#ifdef KV_FAULT_CONTROLS
  // After the store: its directory exists. Before any migration runs.
  if (absl::Status s = SetUpFailpoints(); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(s.message()).c_str());
    return 2;
  }
#endif
  // In etcd mode every node starts following: leadership comes from the key.
  absl::StatusOr<std::unique_ptr<ReplicationNode>> node = ReplicationNode::Create(
      store->get(), node_options,
      kind == NodeKind::kShard && !etcd_mode->enabled ? Role::kLeader : Role::kReplica);
  if (!node.ok()) {
    LOG(ERROR) << "Cannot start replication in " << FLAGS_data_dir << ": " << node.status();
    return 1;
  }

  // etcd mode: which keys this shard serves, by the ring in etcd (fed below
  // by a RingFeed). The resharding migration service holds ranges through
  // it too (OwnershipGate::HoldAndRun), so it outlives every service.
  std::unique_ptr<OwnershipGate> ownership;
  if (etcd_mode->enabled) ownership = std::make_unique<OwnershipGate>(FLAGS_shard);

  RequestLimits limits;
  limits.max_value_bytes = FLAGS_max_value_bytes;
  limits.max_batch_items = FLAGS_max_batch_items;
  limits.max_response_bytes = FLAGS_max_response_bytes;
  auto kv = std::make_unique<KvService>(store->get(), limits, node->get(), &security->policy,
                                        ownership.get());
  auto admin = std::make_unique<AdminService>(store->get(), "", FLAGS_data_dir, node->get(),
                                              &security->policy);
  auto replication = std::make_unique<ReplicationService>(node->get(), &security->policy);
  // Resharding's source side (docs/resharding.md): served on every node; only
  // the leader of this shard answers, and only in etcd mode can it hold ranges.
  MigrationSourceHooks migration_hooks;
  if (ownership) {
    OwnershipGate* gate = ownership.get();
    migration_hooks.hold_and_run = [gate](RangeSet ranges, int64_t until,
                                          const std::function<void()>& fn) {
      gate->HoldAndRun(std::move(ranges), until, fn);
    };
    migration_hooks.release = [gate] { gate->SetHeld(RangeSet(), 0); };
    migration_hooks.ring_version = [gate] { return gate->ring_version(); };
    migration_hooks.owns = [gate](absl::string_view key) { return gate->Owns(key); };
    migration_hooks.owned_fraction = [gate] {
      std::shared_ptr<const HashRing> ring = gate->ring();
      if (ring == nullptr) return 0.0;
      const auto& shards = ring->shards();
      const auto it = std::find(shards.begin(), shards.end(), gate->shard());
      return it == shards.end() ? 0.0 : ring->Ownership()[it - shards.begin()];
    };
  }
  auto migration = std::make_unique<MigrationSourceService>(
      FLAGS_shard, store->get(), node->get(), std::move(migration_hooks), &security->policy);

  ServerOptions server_options;
  server_options.listen = FLAGS_listen;
  server_options.services = {kv.get(), admin.get(), replication.get(), migration.get()};
  server_options.shutdown_grace_ms = FLAGS_shutdown_grace_ms;
  server_options.port_file = FLAGS_port_file;
  server_options.credentials = security->server_credentials;
  // Health: "" is SERVING once the server listens (the process is up);
  // kvstore.v1.KeyValue only once the node is ready (ReplicationNode::ready:
  // a leader, or a replica that has caught up with its leader).
  server_options.not_ready_services = {v1::KeyValue::service_full_name()};
  // Room for the largest value and for the largest answer, and then some.
  server_options.max_message_bytes =
      static_cast<int>(std::min<uint64_t>(std::max<uint64_t>(FLAGS_max_value_bytes * 2 + (64 << 20),
                                                             FLAGS_max_response_bytes + (4 << 20)),
                                          INT32_MAX));
  metrics.Instrument(&server_options);
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(server_options);
  if (!server.ok()) {
    LOG(ERROR) << "Cannot serve: " << server.status();
    return 1;
  }
  metrics.AddCollector([&admin](ExpositionWriter* out) {
    v1::StatusResponse status;
    admin->FillStatus(&status);
    WriteNodeStatusMetrics(status, absl::Now(), out);
  });
  if (etcd_mode->enabled) {
    metrics.AddCollector([&coord_metrics](ExpositionWriter* out) { coord_metrics.Write(out); });
  }
  metrics.AddCollector(
      [&credential_watcher](ExpositionWriter* out) { credential_watcher.WriteMetrics(out); });
  // Resharding's source side, on every node (a replica serves copy pages
  // under --copy-from=replica).
  metrics.AddCollector([m = migration.get()](ExpositionWriter* out) {
    constexpr char kPages[] = "kvstore_migration_copy_pages_served_total";
    out->Family(kPages,
                "Copy pages of a resharding migration this node answered as a source (its "
                "leader, or a replica under --copy-from=replica)",
                MetricType::kCounter);
    out->Sample(kPages, {}, m->copy_pages_served());
  });
  if (absl::Status s = metrics.Serve(); !s.ok()) {
    LOG(ERROR) << s;
    return 1;
  }
  (*node)->SetReadinessCallback([s = server->get()](bool ready) {
    s->SetServiceServing(v1::KeyValue::service_full_name(), ready);
  });
  std::unique_ptr<RingFeed> ring_feed;
  std::unique_ptr<FailoverAgent> agent;
  std::unique_ptr<MigrationDriver> driver;
  if (etcd_mode->enabled) {
    // The ring first, so that the node knows what it owns before it can be
    // elected; a node that cannot reach etcd goes on (nothing is written
    // without etcd) and learns the ring when etcd answers.
    ring_feed = std::make_unique<RingFeed>(etcd.get(), etcd_mode->failover.prefix, ownership.get());
    ring_feed->Start();
    if (!ring_feed->AwaitFirstRead(absl::Seconds(5))) {
      LOG(WARNING) << "etcd did not answer the read of the ring within 5 s; shard " << FLAGS_shard
                   << " checks no ownership until it does";
    }
    FailoverOptions failover = etcd_mode->failover;
    failover.metrics = &coord_metrics;
    failover.advertise = FLAGS_advertise.empty() ? (*server)->address() : FLAGS_advertise;
    absl::StatusOr<std::unique_ptr<FailoverAgent>> created =
        FailoverAgent::Create(etcd.get(), node->get(), failover);
    if (!created.ok()) {
      LOG(ERROR) << created.status();
      return 2;
    }
    agent = *std::move(created);
    (*node)->SetPromoteHandler([a = agent.get()](bool force) { return a->CampaignNow(force); });
    // Resharding's destination side: acts while this node leads a shard that
    // a migration adds.
    MigrationDriverOptions driver_options;
    driver_options.prefix = etcd_mode->failover.prefix;
    driver_options.shard = FLAGS_shard;
    driver_options.channel = [client = security->client](const std::string& address) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(64 << 20);
      return CreateClientChannel(address, client, args);
    };
    driver_options.install_ring = [gate = ownership.get()](std::shared_ptr<const HashRing> ring,
                                                           int64_t version) {
      gate->SetRing(std::move(ring), version);
    };
    driver_options.renew_epoch = [a = agent.get()](const std::string& why) {
      return a->Reelect(why);
    };
    driver = std::make_unique<MigrationDriver>(etcd.get(), store->get(), node->get(),
                                               std::move(driver_options));
    // Added after Serve (the registry allows it); stopped with the others
    // before the driver goes.
    metrics.AddCollector(
        [d = driver.get()](ExpositionWriter* out) { WriteMigrationMetrics(d->metrics(), out); });
  }
  (*node)->Start((*server)->address());
  if (agent) agent->Start();
  if (driver) driver->Start();
  LOG(INFO) << program << " serving on " << (*server)->address() << " as "
            << RoleName((*node)->role()) << " (epoch " << (*node)->epoch() << "), data in "
            << FLAGS_data_dir << ", fsync " << FLAGS_fsync << ", ack " << FLAGS_ack
            << (node_options.followers.empty() ? std::string()
                                               : absl::StrCat(", followers ", FLAGS_followers))
            << "; security: " << security->summary;

  credential_watcher.Start();
  HangupListener hangup([&credential_watcher, &security_flags] {
    if (security_flags.reload_interval <= absl::ZeroDuration()) {
      LOG(INFO) << "SIGHUP: --credentials-reload-interval is 0, nothing is reloaded";
      return;
    }
    credential_watcher.RequestCheck();
  });
  const int signal = (*server)->WaitForTerminationSignal();
  LOG(INFO) << "Signal " << signal << ": finishing in-flight requests, then syncing the log";
  credential_watcher.Stop();
  metrics.Stop();  // Its collector reads the services and the store.
  // A leader resigns first, so the others elect without waiting out the lease.
  if (driver) driver->Stop();
  if (agent) agent->Stop();
  if (ring_feed) ring_feed->Stop();
  // Stop the links first: a leader stream held open would keep the server's
  // shutdown waiting; then drain the clients' requests.
  (*node)->Stop();
  (*server)->Shutdown();
  if (absl::Status s = (*store)->Close(); !s.ok()) {
    LOG(ERROR) << "Closing the store: " << s;
    return 1;
  }
  LOG(INFO) << program << " stopped cleanly";
  return 0;
}

}  // namespace

int NodeMain(int argc, char** argv, NodeKind kind) {
  BlockTerminationSignals();  // Before any thread starts.
  BlockHangupSignal();        // Taken by the HangupListener: credentials reload.
  DisableMutexDeadlockDetection();
  const char* program = kind == NodeKind::kShard ? "kv-shard" : "kv-replica";
  // Logs go to stderr by default (the flag and YAML can still turn it off);
  // glog would otherwise write files under /tmp.
  gflags::SetCommandLineOptionWithMode("logtostderr", "true", gflags::SET_FLAGS_DEFAULT);
  if (kind == NodeKind::kReplica) {
    gflags::SetCommandLineOptionWithMode("listen", "127.0.0.1:50071", gflags::SET_FLAGS_DEFAULT);
    gflags::SetCommandLineOptionWithMode("data_dir", "./data/replica", gflags::SET_FLAGS_DEFAULT);
  }
  gflags::SetUsageMessage(absl::StrCat(
      kind == NodeKind::kShard ? "a kvstore shard leader." : "a kvstore replica (follower).",
      "\nUsage: ", program,
      " --listen=HOST:PORT --data-dir=DIR [--fsync=always|everysec|no] [--config=FILE] ...\n"
      "Flags may be spelled with dashes or underscores; a flag on the command line overrides "
      "the same key in --config."));
  gflags::SetVersionString(KVSTORE_VERSION);
  NormalizeFlagSpelling(argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  if (argc > 1) {
    std::fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", program, argv[1]);
    return 2;
  }
  if (absl::Status s = LoadConfigFromFlag(); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(s.message()).c_str());
    return 2;
  }
  return Run(kind, program);
}

}  // namespace kvstore
