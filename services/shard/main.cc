// kv-shard: a shard leader. Flags → config → store → gRPC services.
#include <cstdio>
#include <memory>
#include <string>

#include "common/config/flag_names.h"
#include "common/config/flags_config.h"
#include "common/server/server.h"
#include "common/storage/store.h"
#include "common/storage/wal.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "services/shard/admin_service.h"
#include "services/shard/kv_service.h"

DEFINE_string(listen, "127.0.0.1:50061",
              "Address to serve the gRPC API on (HOST:PORT; port 0 picks a free one)");
DEFINE_string(data_dir, "./data/shard", "Directory for the write-ahead log and snapshots");
DEFINE_string(fsync, "everysec",
              "When the log is fsynced: always (before each acknowledgement, group commit), "
              "everysec (in the background each second), no (left to the OS)");
DEFINE_uint64(max_value_bytes, 1 << 20, "Largest value accepted, in bytes");
DEFINE_uint64(max_batch_items, 10000, "Most keys accepted in one MultiGet or MultiSet");
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
DEFINE_bool(repair, false,
            "Repair the log in --data-dir (cut it at the first damaged record, keeping a .broken "
            "copy of what is cut), then exit");

namespace kvstore {
namespace {

int Run() {
  absl::StatusOr<FsyncPolicy> fsync = ParseFsyncPolicy(FLAGS_fsync);
  if (!fsync.ok()) {
    std::fprintf(stderr, "kv-shard: --fsync: %s\n", std::string(fsync.status().message()).c_str());
    return 2;
  }
  if (FLAGS_repair) {
    absl::StatusOr<std::string> report = Wal::Repair(PosixFileSystem(), FLAGS_data_dir);
    if (!report.ok()) {
      std::fprintf(stderr, "kv-shard: repair failed: %s\n", report.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", report->c_str());
    return 0;
  }

  StoreOptions options;
  options.dir = FLAGS_data_dir;
  options.fsync = *fsync;
  options.segment_bytes = FLAGS_segment_bytes;
  options.snapshot_every_writes = FLAGS_snapshot_every_writes;
  options.snapshot_every_seconds = FLAGS_snapshot_every_seconds;
  options.snapshots_to_keep = FLAGS_snapshots_to_keep;
  // Never acknowledge after a failed log write: crash, and let recovery decide.
  options.on_fatal_error = [](const absl::Status& s) {
    LOG(FATAL) << "Cannot write the log, stopping so that restart recovers: " << s;
  };
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  if (!store.ok()) {
    LOG(ERROR) << "Cannot open the store in " << FLAGS_data_dir << ": " << store.status();
    return 1;
  }

  RequestLimits limits;
  limits.max_value_bytes = FLAGS_max_value_bytes;
  limits.max_batch_items = FLAGS_max_batch_items;
  auto kv = std::make_unique<KvService>(store->get(), limits);
  auto admin = std::make_unique<AdminService>(store->get(), "leader", FLAGS_data_dir);

  ServerOptions server_options;
  server_options.listen = FLAGS_listen;
  server_options.services = {kv.get(), admin.get()};
  server_options.shutdown_grace_ms = FLAGS_shutdown_grace_ms;
  server_options.port_file = FLAGS_port_file;
  server_options.max_message_bytes =
      static_cast<int>(std::min<uint64_t>(FLAGS_max_value_bytes * 2 + (4 << 20), INT32_MAX));
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(server_options);
  if (!server.ok()) {
    LOG(ERROR) << "Cannot serve: " << server.status();
    return 1;
  }
  LOG(INFO) << "kv-shard serving on " << (*server)->address() << ", data in " << FLAGS_data_dir
            << ", fsync " << FLAGS_fsync;

  const int signal = (*server)->WaitForTerminationSignal();
  LOG(INFO) << "Signal " << signal << ": finishing in-flight requests, then syncing the log";
  (*server)->Shutdown();
  if (absl::Status s = (*store)->Close(); !s.ok()) {
    LOG(ERROR) << "Closing the store: " << s;
    return 1;
  }
  LOG(INFO) << "kv-shard stopped cleanly";
  return 0;
}

}  // namespace
}  // namespace kvstore

int main(int argc, char** argv) {
  kvstore::BlockTerminationSignals();  // Before any thread starts.
  // Logs go to stderr by default (the flag and YAML can still turn it off);
  // glog would otherwise write files under /tmp.
  gflags::SetCommandLineOptionWithMode("logtostderr", "true", gflags::SET_FLAGS_DEFAULT);
  gflags::SetUsageMessage(
      "a kvstore shard leader.\n"
      "Usage: kv-shard --listen=HOST:PORT --data-dir=DIR [--fsync=always|everysec|no] "
      "[--config=FILE] ...\nFlags may be spelled with dashes or underscores; a flag on the "
      "command line overrides the same key in --config.");
  gflags::SetVersionString(KVSTORE_VERSION);
  kvstore::NormalizeFlagSpelling(argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  if (argc > 1) {
    std::fprintf(stderr, "kv-shard: unexpected argument '%s' (see --help)\n", argv[1]);
    return 2;
  }
  if (absl::Status s = kvstore::LoadConfigFromFlag(); !s.ok()) {
    std::fprintf(stderr, "kv-shard: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return kvstore::Run();
}
