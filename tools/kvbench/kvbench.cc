// kvbench: closed-loop load generator for kvstore and its peers (design §6).
// A fixed number of requests stays in flight (--concurrency); each completion
// issues the next. Latency per call goes into a log-linear histogram; the
// summary gives ops/s (one op = one key) and p50/p99/p99.9, and --json adds one
// JSON object as the last line of stdout for scripts (tools/bench/replication,
// tools/bench/compare).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/config/tool_flags.h"
#include "gflags/gflags.h"
#include "tools/kvbench/etcd_target.h"
#include "tools/kvbench/kvstore_target.h"
#include "tools/kvbench/load_target.h"
#include "tools/kvbench/pipeline_target.h"
#include "tools/kvbench/workload.h"
#ifdef KVBENCH_WITH_REDIS
#include "tools/kvbench/redis_target.h"
#endif

#ifndef KVSTORE_VERSION
#define KVSTORE_VERSION "dev"
#endif

DEFINE_string(target, "kvstore://127.0.0.1:50051",
              "What to load: kvstore://HOST:PORT (a kv-router, kv-shard or kv-replica), "
              "redis://HOST:PORT or etcd://HOST:PORT (etcd's v3 gRPC API: Range and Put)");
DEFINE_string(workload, "ycsb-a",
              "ycsb-a (50% reads, 50% updates), ycsb-b (95/5), ycsb-c (reads only) or write-only");
DEFINE_uint64(keyspace, 100000, "Number of keys, named key:0000000000 ... as kv-load names them");
DEFINE_string(distribution, "uniform",
              "Key popularity: uniform, or zipfian (YCSB's scrambled zipfian, constant 0.99)");
DEFINE_uint64(value_size, 100, "Bytes per written value");
DEFINE_double(duration, 10, "Seconds measured (after the warmup)");
DEFINE_double(warmup, 2, "Seconds of load before measuring starts; not counted");
DEFINE_uint64(batch, 1,
              "Keys per call: 1 = unary Get/Set (Redis GET/SET, etcd Range/Put); more = "
              "MultiGet/MultiSet (Redis MGET/MSET; not supported for etcd)");
DEFINE_bool(pipeline, false,
            "kvstore:// only: send the requests over KeyValue/Pipeline streams, one per channel, "
            "instead of a call each (--concurrency requests in flight over them)");
DEFINE_bool(preload, true,
            "Write the whole key space first (batches of 1000); on by default for the read "
            "workloads, off for write-only unless given");
DEFINE_string(ack, "default",
              "kvstore writes: acknowledge after default (the shard's setting), memory, fsync, "
              "replicas (the shard's --sync-acks followers) or replicas:N");
DEFINE_string(read_mode, "leader", "kvstore reads: from the leader, or from any replica (stale)");
DEFINE_uint64(concurrency, 64, "Calls in flight at all times");
DEFINE_uint64(channels, 4,
              "gRPC channels (kvstore, etcd; each its own connection), or Redis connections; "
              "the calls in flight are spread over them");
DEFINE_bool(json, false, "Also print the result as one JSON object, the last line of stdout");
DEFINE_uint64(seed, 1, "Seed of the key and operation choices (per slot: derived from it)");
DEFINE_int64(timeout_ms, 5000, "Deadline of each call, in milliseconds");
DEFINE_int64(connect_timeout_ms, 5000, "How long to wait for the target at start, in milliseconds");
DEFINE_string(tls_ca, "",
              "kvstore:// only: PEM CA to verify the server with (TLS on; see docs/security.md)");
DEFINE_string(tls_cert, "", "kvstore:// only: PEM client certificate (mutual TLS), with --tls-key");
DEFINE_string(tls_key, "", "kvstore:// only: PEM private key of --tls-cert");
DEFINE_string(auth_token_file, "",
              "kvstore:// only: send the token in this file as 'authorization: Bearer <token>'");

namespace kvstore::bench {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // target unreachable, preload failed
constexpr int kExitUsage = 2;

constexpr char kUsage[] = R"(closed-loop load generator for kvstore, Redis and etcd.

Usage: kvbench [flags]

  kvbench --target=kvstore://127.0.0.1:50051 --workload=ycsb-b --distribution=zipfian
  kvbench --target=redis://127.0.0.1:6379 --workload=write-only --json
  kvbench --target=etcd://127.0.0.1:2379 --workload=write-only --json

Prints a progress line on stderr each second, then a summary on stdout: ops/s
(one op = one key; a batch of 16 is 16 ops), latency percentiles per call in
microseconds, and failed ops by gRPC code (Redis: by error prefix). With --json
the last stdout line is one JSON object with the same figures.

Exit codes: 0 the run finished (errors during it are counted, not fatal);
1 the target is unreachable at start or the preload failed; 2 bad flags.
)";

// Only kvbench's own flags are known (not gflags' or glog's).
const ToolFlagRules& FlagRules() {
  static const ToolFlagRules* rules = new ToolFlagRules{{__FILE__}, /*positional=*/false};
  return *rules;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "kvbench: %s\nRun 'kvbench --help' for usage.\n", message.c_str());
  return kExitUsage;
}

enum class TargetKind { kKvStore, kRedis, kEtcd };

struct Settings {
  TargetKind kind = TargetKind::kKvStore;
  BenchConfig config;
  ClientSecurity security;  // kvstore:// only.
  bool preload = false;
  absl::Duration duration;
  absl::Duration warmup;
};

absl::Status ParseTarget(const std::string& target, Settings* settings) {
  const size_t scheme_end = target.find("://");
  if (scheme_end == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target is kvstore://, redis:// or etcd://HOST:PORT, not '", target, "'"));
  }
  const std::string scheme = target.substr(0, scheme_end);
  if (scheme == "kvstore") {
    settings->kind = TargetKind::kKvStore;
  } else if (scheme == "redis") {
    settings->kind = TargetKind::kRedis;
  } else if (scheme == "etcd") {
    settings->kind = TargetKind::kEtcd;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--target: unknown scheme '", scheme,
                                                   "://' (kvstore://, redis:// or etcd://)"));
  }
  std::string address = target.substr(scheme_end + 3);
  if (!address.empty() && address.back() == '/') address.pop_back();
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target: '", target, "' needs HOST:PORT with a port 1-65535"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {  // [::1]
    if (settings->kind == TargetKind::kRedis) host = host.substr(1, host.size() - 2);
  }
  settings->config.host = host;
  settings->config.port = port;
  return absl::OkStatus();
}

absl::StatusOr<Settings> CheckFlags(const ToolArgs& args) {
  Settings s;
  BenchConfig& c = s.config;
  if (absl::Status st = ParseTarget(FLAGS_target, &s); !st.ok()) return st;
  absl::StatusOr<Workload> workload = ParseWorkload(FLAGS_workload);
  if (!workload.ok()) return workload.status();
  c.workload = *workload;
  absl::StatusOr<Distribution> distribution = ParseDistribution(FLAGS_distribution);
  if (!distribution.ok()) return distribution.status();
  c.distribution = *distribution;
  if (FLAGS_keyspace < 1 || FLAGS_keyspace > 10'000'000'000ull) {
    return absl::InvalidArgumentError("--keyspace must be 1 to 10000000000");
  }
  // The zipfian generator sums zeta over the whole key space at start (O(n)).
  if (c.distribution == Distribution::kZipfian && FLAGS_keyspace > 100'000'000) {
    return absl::InvalidArgumentError("--keyspace must be at most 100000000 with zipfian");
  }
  c.keyspace = FLAGS_keyspace;
  if (FLAGS_value_size > (64u << 20)) {
    return absl::InvalidArgumentError("--value_size must be at most 64 MiB");
  }
  c.value_size = FLAGS_value_size;
  if (FLAGS_batch < 1 || FLAGS_batch > 10000) {
    return absl::InvalidArgumentError("--batch must be 1 to 10000");
  }
  c.batch = FLAGS_batch;
  // Each slot keeps its own 20 KiB histogram: 4096 slots are 80 MiB.
  if (FLAGS_concurrency < 1 || FLAGS_concurrency > 4096) {
    return absl::InvalidArgumentError("--concurrency must be 1 to 4096");
  }
  c.concurrency = FLAGS_concurrency;
  if (FLAGS_channels < 1 || FLAGS_channels > FLAGS_concurrency) {
    return absl::InvalidArgumentError(absl::StrCat("--channels must be 1 to --concurrency (",
                                                   FLAGS_concurrency, "), not ", FLAGS_channels));
  }
  c.channels = FLAGS_channels;
  if (!(FLAGS_duration > 0) || FLAGS_duration > 86400) {
    return absl::InvalidArgumentError("--duration must be more than 0 and at most 86400 seconds");
  }
  if (!(FLAGS_warmup >= 0) || FLAGS_warmup > 3600) {
    return absl::InvalidArgumentError("--warmup must be 0 to 3600 seconds");
  }
  s.duration = absl::Seconds(FLAGS_duration);
  s.warmup = absl::Seconds(FLAGS_warmup);
  if (FLAGS_timeout_ms <= 0) return absl::InvalidArgumentError("--timeout_ms must be positive");
  if (FLAGS_connect_timeout_ms <= 0) {
    return absl::InvalidArgumentError("--connect_timeout_ms must be positive");
  }
  c.call_timeout = absl::Milliseconds(FLAGS_timeout_ms);
  c.connect_timeout = absl::Milliseconds(FLAGS_connect_timeout_ms);
  c.seed = FLAGS_seed;

  // Numbers of kvstore.v1.AckMode and ReadMode.
  uint32_t replicas = 0;
  if (FLAGS_ack == "default") {
    c.ack_mode = 0;
  } else if (FLAGS_ack == "memory") {
    c.ack_mode = 1;
  } else if (FLAGS_ack == "fsync") {
    c.ack_mode = 2;
  } else if (FLAGS_ack == "replicas") {
    c.ack_mode = 3;
  } else if (absl::StartsWith(FLAGS_ack, "replicas:") &&
             absl::SimpleAtoi(FLAGS_ack.substr(9), &replicas) && replicas > 0) {
    c.ack_mode = 3;
    c.ack_replicas = replicas;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ack is default, memory, fsync, replicas or replicas:N (N > 0), not '", FLAGS_ack, "'"));
  }
  if (FLAGS_read_mode == "leader") {
    c.read_mode = 0;
  } else if (FLAGS_read_mode == "any") {
    c.read_mode = 1;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--read_mode is leader or any, not '", FLAGS_read_mode, "'"));
  }
  if (s.kind != TargetKind::kKvStore && (FLAGS_ack != "default" || FLAGS_read_mode != "leader")) {
    return absl::InvalidArgumentError(
        "--ack and --read_mode apply to kvstore:// targets only (Redis and etcd have one mode "
        "here)");
  }
  if (FLAGS_pipeline && s.kind != TargetKind::kKvStore) {
    return absl::InvalidArgumentError("--pipeline applies to kvstore:// targets only");
  }
  // etcd has no multi-key Get or Put; a Txn of puts would be the batch, which
  // kvbench does not drive.
  if (s.kind == TargetKind::kEtcd && c.batch > 1) {
    return absl::InvalidArgumentError(
        "--batch > 1 is not supported for etcd:// targets (etcd has no multi-key Range or Put)");
  }
  const TlsFiles tls{FLAGS_tls_cert, FLAGS_tls_key, FLAGS_tls_ca};
  if (tls.tls() || !FLAGS_auth_token_file.empty()) {
    if (s.kind != TargetKind::kKvStore) {
      return absl::InvalidArgumentError(
          "--tls-* and --auth-token-file apply to kvstore:// targets only");
    }
    absl::StatusOr<ClientSecurity> security =
        LoadClientSecurity(tls, FLAGS_auth_token_file, /*admin_token_file=*/"");
    if (!security.ok()) return security.status();
    s.security = *std::move(security);
  }
  s.preload = args.given.count("preload") > 0 ? FLAGS_preload : c.workload.read_fraction > 0;
  return s;
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      absl::StrAppend(&out, "\\", std::string(1, ch));
    } else if (u < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", u));
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
  return out;
}

void PrintSummary(const Settings& s, const SlotStats& stats, double measured_s) {
  const BenchConfig& c = s.config;
  const LatencyHistogram& h = stats.latency;
  const double ops_per_sec = measured_s > 0 ? stats.ops / measured_s : 0;
  const double calls_per_sec = measured_s > 0 ? stats.calls / measured_s : 0;
  std::string errors;
  for (const auto& [code, n] : stats.errors) absl::StrAppend(&errors, " ", code, "=", n);
  std::printf("target      %s\n", FLAGS_target.c_str());
  std::printf(
      "workload    %s, %s keys over %llu, %llu-byte values, batch %llu, %llu in flight on %llu "
      "%s, ack %s, reads from %s\n",
      c.workload.name.c_str(), FLAGS_distribution.c_str(),
      static_cast<unsigned long long>(c.keyspace), static_cast<unsigned long long>(c.value_size),
      static_cast<unsigned long long>(c.batch), static_cast<unsigned long long>(c.concurrency),
      static_cast<unsigned long long>(c.channels),
      s.kind == TargetKind::kRedis ? "connections"
      : FLAGS_pipeline             ? "Pipeline streams"
                                   : "channels",
      FLAGS_ack.c_str(), FLAGS_read_mode.c_str());
  std::printf("measured    %.2f s after %.0f s warmup\n", measured_s,
              absl::ToDoubleSeconds(s.warmup));
  std::printf("throughput  %.0f ops/s (%llu ops in %llu calls, %.0f calls/s)\n", ops_per_sec,
              static_cast<unsigned long long>(stats.ops),
              static_cast<unsigned long long>(stats.calls), calls_per_sec);
  std::printf(
      "latency us  p50 %llu  p90 %llu  p99 %llu  p99.9 %llu  max %llu  mean %.0f (per call)\n",
      static_cast<unsigned long long>(h.Percentile(50)),
      static_cast<unsigned long long>(h.Percentile(90)),
      static_cast<unsigned long long>(h.Percentile(99)),
      static_cast<unsigned long long>(h.Percentile(99.9)), static_cast<unsigned long long>(h.Max()),
      h.Mean());
  std::printf("errors      %s\n", errors.empty() ? "none" : errors.c_str() + 1);
  if (!FLAGS_json) return;
  std::vector<std::string> by_code;
  for (const auto& [code, n] : stats.errors)
    by_code.push_back(absl::StrCat(JsonString(code), ":", n));
  std::printf(
      "{\"target\":%s,\"workload\":%s,\"distribution\":%s,\"keyspace\":%llu,\"concurrency\":%llu,"
      "\"channels\":%llu,\"pipeline\":%s,\"batch\":%llu,\"value_size\":%llu,\"ack\":%s,"
      "\"read_mode\":%s,"
      "\"duration_s\":%g,\"warmup_s\":%g,\"measured_s\":%.3f,\"ops\":%llu,\"calls\":%llu,"
      "\"ops_per_sec\":%.1f,\"calls_per_sec\":%.1f,\"p50_us\":%llu,\"p90_us\":%llu,"
      "\"p99_us\":%llu,\"p999_us\":%llu,\"max_us\":%llu,\"mean_us\":%.1f,\"errors\":%llu,"
      "\"errors_by_code\":{%s}}\n",
      JsonString(FLAGS_target).c_str(), JsonString(c.workload.name).c_str(),
      JsonString(FLAGS_distribution).c_str(), static_cast<unsigned long long>(c.keyspace),
      static_cast<unsigned long long>(c.concurrency), static_cast<unsigned long long>(c.channels),
      FLAGS_pipeline ? "true" : "false", static_cast<unsigned long long>(c.batch),
      static_cast<unsigned long long>(c.value_size), JsonString(FLAGS_ack).c_str(),
      JsonString(FLAGS_read_mode).c_str(), absl::ToDoubleSeconds(s.duration),
      absl::ToDoubleSeconds(s.warmup), measured_s, static_cast<unsigned long long>(stats.ops),
      static_cast<unsigned long long>(stats.calls), ops_per_sec, calls_per_sec,
      static_cast<unsigned long long>(h.Percentile(50)),
      static_cast<unsigned long long>(h.Percentile(90)),
      static_cast<unsigned long long>(h.Percentile(99)),
      static_cast<unsigned long long>(h.Percentile(99.9)), static_cast<unsigned long long>(h.Max()),
      h.Mean(), static_cast<unsigned long long>(stats.ErrorCount()),
      absl::StrJoin(by_code, ",").c_str());
}

int Run(const Settings& s) {
  std::unique_ptr<LoadTarget> target;
  switch (s.kind) {
    case TargetKind::kKvStore:
      if (FLAGS_pipeline) {
        target = std::make_unique<PipelineTarget>(s.config, s.security);
      } else {
        target = std::make_unique<KvStoreTarget>(s.config, s.security);
      }
      break;
    case TargetKind::kRedis:
#ifdef KVBENCH_WITH_REDIS
      target = std::make_unique<RedisTarget>(s.config);
      break;
#else
      return UsageError(
          "redis:// targets need hiredis; this kvbench was built without it (install Debian's "
          "libhiredis-dev and rebuild)");
#endif
    case TargetKind::kEtcd:
      target = std::make_unique<EtcdTarget>(s.config);
      break;
  }
  if (absl::Status st = target->Connect(); !st.ok()) {
    std::fprintf(stderr, "kvbench: %s: %s\n", FLAGS_target.c_str(),
                 std::string(st.message()).c_str());
    return kExitFailed;
  }
  if (s.preload) {
    std::fprintf(stderr, "kvbench: preloading %llu keys...\n",
                 static_cast<unsigned long long>(s.config.keyspace));
    const absl::Time t0 = absl::Now();
    if (absl::Status st = target->Preload(); !st.ok()) {
      std::fprintf(stderr, "kvbench: preload failed: %s\n", st.ToString().c_str());
      return kExitFailed;
    }
    std::fprintf(stderr, "kvbench: preloaded in %.2f s\n", absl::ToDoubleSeconds(absl::Now() - t0));
  }

  using Clock = std::chrono::steady_clock;
  RunControl control;
  const Clock::time_point start = Clock::now();
  const Clock::time_point measure_start = start + absl::ToChronoNanoseconds(s.warmup);
  const Clock::time_point end = measure_start + absl::ToChronoNanoseconds(s.duration);
  bool measuring = s.warmup <= absl::ZeroDuration();
  if (measuring) control.phase.store(Phase::kMeasure);
  target->Start(&control);

  Clock::time_point next_report = start + std::chrono::seconds(1);
  Clock::time_point last_report = start;
  uint64_t last_ops = 0;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const Clock::time_point now = Clock::now();
    if (!measuring && now >= measure_start) {
      control.phase.store(Phase::kMeasure, std::memory_order_release);
      measuring = true;
    }
    if (now >= end) break;
    target->Tick();
    if (now >= next_report) {
      const uint64_t ops = control.completed_ops.load(std::memory_order_relaxed);
      const double rate =
          (ops - last_ops) / std::chrono::duration<double>(now - last_report).count();
      const double left = std::chrono::duration<double>(end - now).count();
      std::fprintf(stderr, "kvbench: %s%.0f ops/s, %.0f s left\n",
                   measuring ? "" : "warmup: ", rate, left);
      last_ops = ops;
      last_report = now;
      next_report += std::chrono::seconds(1);
    }
  }
  control.phase.store(Phase::kStop, std::memory_order_release);
  const Clock::time_point stopped = Clock::now();
  const double measured_s = std::chrono::duration<double>(stopped - measure_start).count();
  if (!target->Drain(s.config.call_timeout + absl::Seconds(1))) {
    std::fprintf(stderr, "kvbench: warning: some calls were still in flight after the run\n");
    const SlotStats stats = target->Collect();
    PrintSummary(s, stats, measured_s);
    std::fflush(stdout);
    std::_Exit(kExitOk);  // their completions may still touch the target: do not destroy it
  }
  PrintSummary(s, target->Collect(), measured_s);
  return kExitOk;
}

int Main(int argc, char** argv) {
  // The load generator shares the cores with what it measures: Debian's
  // Abseil records every lock order for deadlock detection, measured at 3 %
  // of kvbench's CPU at 64 in flight (as in the servers, common/server).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  gflags::SetUsageMessage("closed-loop load generator for kvstore");
  absl::StatusOr<ToolArgs> args = ParseToolFlags(argc, argv, FlagRules());
  if (!args.ok()) return UsageError(std::string(args.status().message()));
  if (args->help) {
    std::printf("kvbench %s: %s\n%s", KVSTORE_VERSION, kUsage, ToolFlagHelp(FlagRules()).c_str());
    return kExitOk;
  }
  if (args->version) {
    std::printf("kvbench %s\n", KVSTORE_VERSION);
    return kExitOk;
  }
  absl::StatusOr<Settings> settings = CheckFlags(*args);
  if (!settings.ok()) return UsageError(std::string(settings.status().message()));
  return Run(*settings);
}

}  // namespace
}  // namespace kvstore::bench

int main(int argc, char** argv) { return kvstore::bench::Main(argc, argv); }
