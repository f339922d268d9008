#include "tools/kvfault/routers.h"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tools/kvfault/child_process.h"

namespace kvstore::fault {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Tail(const std::string& path, size_t bytes) {
  std::string all = ReadFile(path);
  return all.size() <= bytes ? all : all.substr(all.size() - bytes);
}

std::string LogPath(const std::string& dir, const std::string& name) {
  return absl::StrCat(dir, "/", name, "-1.log");
}

}  // namespace

Routers::Routers(RoutersOptions options) : options_(std::move(options)) {
  for (int i = 0; i < options_.count; ++i) {
    Router r;
    r.name = absl::StrCat("r", i);
    r.dir = absl::StrCat(options_.run_dir, "/routers/", r.name);
    r.argv = {absl::StrCat(options_.bin_dir, "/kv-router"),
              "--listen=127.0.0.1:0",
              absl::StrCat("--port-file=", r.dir, "/port"),
              absl::StrCat("--etcd-endpoints=", options_.etcd_endpoint),
              absl::StrCat("--router-id=kvfault-", r.name),
              absl::StrCat("--lease-ttl=", options_.lease_ttl),
              absl::StrCat("--forward-timeout-ms=", options_.forward_timeout_ms),
              "--logtostderr"};
    routers_.push_back(std::move(r));
  }
}

Routers::~Routers() {
  for (Router& r : routers_) {
    if (r.pid <= 0) continue;
    kill(r.pid, SIGKILL);
    (void)WaitExit(r.pid, absl::Now() + absl::Seconds(10));
    ForgetPid(r.pid);
  }
}

std::vector<std::string> Routers::CommandLines() const {
  std::vector<std::string> out;
  for (const Router& r : routers_) out.push_back(ShellQuote(r.argv));
  return out;
}

absl::Status Routers::AwaitRouting(const Router& r, absl::Time deadline, std::string* address) {
  const std::string port_file = absl::StrCat(r.dir, "/port");
  std::string last = "no port file yet";
  while (true) {
    absl::StatusOr<ExitStatus> exit = WaitExit(r.pid, absl::InfinitePast());
    if (exit.ok()) {
      return absl::UnavailableError(absl::StrCat("exited before routing: ", exit->ToString()));
    }
    const std::string content = ReadFile(port_file);
    if (!content.empty() && content.back() == '\n') {
      *address = std::string(absl::StripSuffix(content, "\n"));
      // A leader read of a key nobody writes: the router has a topology from
      // etcd and reaches the shard that owns the key.
      auto stub =
          v1::KeyValue::NewStub(grpc::CreateChannel(*address, grpc::InsecureChannelCredentials()));
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      v1::GetRequest get;
      get.set_key("kvfault-probe");
      v1::GetResponse answer;
      const grpc::Status s = stub->Get(&context, get, &answer);
      if (s.ok()) return absl::OkStatus();
      last = absl::StrCat("probe read: code ", s.error_code(), ": ", s.error_message());
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("not routing in time (", last, ")"));
    }
    absl::SleepFor(absl::Milliseconds(50));  // Polling with a deadline.
  }
}

absl::Status Routers::Start(absl::Time deadline) {
  for (Router& r : routers_) {
    std::filesystem::create_directories(r.dir);
    std::ofstream(r.dir + "/command") << ShellQuote(r.argv) << "\n";
    absl::StatusOr<pid_t> pid = Spawn(r.argv, LogPath(r.dir, r.name));
    if (!pid.ok()) return pid.status();
    RememberPid(*pid);
    r.pid = *pid;
  }
  addresses_.clear();
  for (Router& r : routers_) {
    std::string address;
    if (absl::Status s = AwaitRouting(r, deadline, &address); !s.ok()) {
      if (WaitExit(r.pid, absl::InfinitePast()).ok()) {  // Reaped: forget it.
        ForgetPid(r.pid);
        r.pid = -1;
      }
      return absl::Status(
          s.code(), absl::StrCat("router ", r.name, " (", ShellQuote(r.argv), "): ", s.message(),
                                 "\n--- tail of ", LogPath(r.dir, r.name), ":\n",
                                 Tail(LogPath(r.dir, r.name), 1500)));
    }
    addresses_.push_back(address);
  }
  return absl::OkStatus();
}

absl::Status Routers::StopAll(absl::Time deadline) {
  std::vector<std::string> problems;
  for (Router& r : routers_) {
    if (r.pid > 0 && kill(r.pid, SIGTERM) != 0) {
      problems.push_back(absl::StrCat(r.name, ": kill -TERM ", r.pid, " failed"));
    }
  }
  for (Router& r : routers_) {
    if (r.pid <= 0) continue;
    absl::StatusOr<ExitStatus> exit = WaitExit(r.pid, deadline);
    if (!exit.ok()) {
      problems.push_back(absl::StrCat(r.name, " still ran at the deadline after SIGTERM; SIGKILL"));
      kill(r.pid, SIGKILL);
      (void)WaitExit(r.pid, absl::Now() + absl::Seconds(10));
    } else if (!exit->exited || exit->code != 0) {
      problems.push_back(absl::StrCat(r.name, " did not stop cleanly on SIGTERM: ",
                                      exit->ToString(), " (see ", LogPath(r.dir, r.name), ")"));
    }
    ForgetPid(r.pid);
    r.pid = -1;
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrJoin(problems, "; "));
}

std::string Routers::LogTails(size_t bytes) const {
  std::string out;
  for (const Router& r : routers_) {
    absl::StrAppend(&out, "--- tail of ", LogPath(r.dir, r.name), ":\n",
                    Tail(LogPath(r.dir, r.name), bytes), "\n");
  }
  return out;
}

}  // namespace kvstore::fault
