#include "tests/support/router_process.h"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#ifndef KV_ROUTER_BIN
#error "KV_ROUTER_BIN must name the kv-router binary (see tests/CMakeLists.txt)"
#endif

namespace kvstore {
namespace testing {
namespace {

// What kv-router logs after a SIGHUP (services/router/main.cc).
constexpr char kReloaded[] = "SIGHUP: topology reloaded";
constexpr char kReloadFailed[] = "SIGHUP: keeping the current topology";

}  // namespace

absl::Status WriteTopologyFile(const std::string& path, const Topology& topology) {
  std::string yaml = "# Written by tests/support/router_process.cc\n";
  if (topology.vnodes != 0) absl::StrAppend(&yaml, "vnodes: ", topology.vnodes, "\n");
  absl::StrAppend(&yaml, "shards:\n");
  for (const ShardTopology& shard : topology.shards) {
    absl::StrAppend(&yaml, "  - name: ", shard.name, "\n    leader: ", shard.leader,
                    "\n    replicas: [", absl::StrJoin(shard.replicas, ", "), "]\n");
  }
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << yaml;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

RouterProcess::RouterProcess(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
}

RouterProcess::~RouterProcess() {
  std::vector<std::string> logs;
  for (int i = 1; i <= starts_; ++i) logs.push_back(absl::StrCat(dir_, "/router-", i, ".log"));
  EndAtTeardown(process_, absl::StrCat("kv-router (", dir_, ")"), logs);
}

std::string RouterProcess::log_path() const {
  return absl::StrCat(dir_, "/router-", starts_, ".log");
}

std::vector<std::string> RouterProcess::Args(const std::string& topology_file,
                                             const std::vector<std::string>& extra_flags) const {
  std::vector<std::string> args = {"--listen=127.0.0.1:0",
                                   absl::StrCat("--port-file=", dir_, "/port")};
  if (!topology_file.empty()) args.push_back(absl::StrCat("--topology=", topology_file));
  // Reloads only on SIGHUP, so that a test knows which reload it sees; a test
  // of the file watch passes --watch-topology-ms itself (the last flag wins).
  args.push_back("--watch-topology-ms=0");
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  return args;
}

absl::Status RouterProcess::Start(const std::string& topology_file,
                                  const std::vector<std::string>& extra_flags,
                                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  address_.clear();
  reloads_ = 0;
  ++starts_;
  const std::string port_file = absl::StrCat(dir_, "/port");
  std::error_code ec;
  std::filesystem::remove(port_file, ec);
  const std::vector<std::string> args = Args(topology_file, extra_flags);
  if (absl::Status s = process_.Start(KV_ROUTER_BIN, args, log_path()); !s.ok()) return s;
  auto fail = [&](const std::string& what) {
    return absl::UnavailableError(absl::StrCat("kv-router ", absl::StrJoin(args, " "), ": ", what,
                                               "\n--- tail of ", log_path(), ":\n", LogTail()));
  };

  absl::StatusOr<ExitStatus> exited = absl::UnknownError("");
  std::string address;
  absl::Status health = absl::UnavailableError("not asked yet");
  const bool serving = WaitFor(
      [&] {
        exited = process_.WaitExit(absl::InfinitePast());  // One look, no wait.
        if (exited.ok()) return true;
        if (address.empty()) {
          const std::string content = ReadFileOrEmpty(port_file);
          if (content.empty() || content.back() != '\n') return false;
          address = std::string(absl::StripSuffix(content, "\n"));
        }
        health = CheckHealth(address, absl::Seconds(1));
        return health.ok();
      },
      deadline);
  if (exited.ok()) return fail(absl::StrCat("exited before serving: ", exited->ToString()));
  if (!serving) {
    return fail(absl::StrCat("not serving before the deadline (port file: '", address,
                             "', health: ", health.message(), ")"));
  }
  address_ = address;
  return absl::OkStatus();
}

absl::StatusOr<ExitStatus> RouterProcess::RunExpectingExit(
    const std::string& topology_file, const std::vector<std::string>& extra_flags,
    absl::Duration timeout) {
  address_.clear();
  ++starts_;
  if (absl::Status s = process_.Start(KV_ROUTER_BIN, Args(topology_file, extra_flags), log_path());
      !s.ok()) {
    return s;
  }
  absl::StatusOr<ExitStatus> exit = process_.WaitExit(absl::Now() + timeout);
  if (!exit.ok()) {
    (void)process_.KillHard();
    return absl::DeadlineExceededError(absl::StrCat("kv-router still ran after ",
                                                    absl::FormatDuration(timeout), "\n--- tail of ",
                                                    log_path(), ":\n", LogTail()));
  }
  return exit;
}

absl::Status RouterProcess::Reload(absl::Duration timeout) {
  if (absl::Status s = process_.Kill(SIGHUP); !s.ok()) return s;
  const int wanted = reloads_ + 1;
  std::string outcome;
  const bool logged = WaitFor(
      [&] {
        int seen = 0;
        for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(log_path()), '\n')) {
          if (absl::StrContains(line, kReloaded) || absl::StrContains(line, kReloadFailed)) {
            if (++seen == wanted) outcome = std::string(line);
          }
        }
        return seen >= wanted;
      },
      absl::Now() + timeout);
  if (!logged) {
    return absl::DeadlineExceededError(
        absl::StrCat("no reload logged after SIGHUP\n--- tail of ", log_path(), ":\n", LogTail()));
  }
  reloads_ = wanted;
  if (absl::StrContains(outcome, kReloadFailed)) return absl::InvalidArgumentError(outcome);
  return absl::OkStatus();
}

int RouterProcess::CountLogLines(const std::string& needle) const {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(log_path()), '\n')) {
    if (absl::StrContains(line, needle)) ++count;
  }
  return count;
}

absl::Status RouterProcess::AwaitLogLine(const std::string& needle, absl::Duration timeout) const {
  if (WaitFor([&] { return CountLogLines(needle) > 0; }, absl::Now() + timeout)) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(absl::StrCat("no line with '", needle, "' in ", log_path(),
                                                  " within ", absl::FormatDuration(timeout),
                                                  "\n--- tail:\n", LogTail()));
}

absl::StatusOr<ExitStatus> RouterProcess::Terminate(absl::Duration timeout) {
  if (absl::Status s = process_.Kill(SIGTERM); !s.ok()) return s;
  return process_.WaitExit(absl::Now() + timeout);
}

}  // namespace testing
}  // namespace kvstore
