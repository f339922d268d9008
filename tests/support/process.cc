#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"

#ifndef KV_SHARD_BIN
#error "KV_SHARD_BIN must name the kv-shard binary (see tests/CMakeLists.txt)"
#endif
#ifndef KVCTL_BIN
#error "KVCTL_BIN must name the kvctl binary (see tests/CMakeLists.txt)"
#endif

namespace kvstore {
namespace testing {
namespace {

// The state of one callback call; shared with the callback, so that it lives
// until gRPC has dropped the callback (gRPC still uses the context after the
// callback has run).
struct GenericCall {
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  grpc::Status status;
  absl::Notification done;
};

// Runs one unary call through the callback API and waits for its answer.
std::shared_ptr<GenericCall> GenericUnaryCall(const std::shared_ptr<grpc::Channel>& channel,
                                              const std::string& method, absl::Time deadline) {
  grpc::GenericStub stub(channel);
  auto call = std::make_shared<GenericCall>();
  call->context.set_deadline(absl::ToChronoTime(deadline));
  // An empty request message encodes to zero bytes (one empty slice: a
  // ByteBuffer without any slice is not a message at all).
  grpc::Slice empty("", 0);
  call->request = grpc::ByteBuffer(&empty, 1);
  stub.UnaryCall(&call->context, method, grpc::StubOptions(), &call->request, &call->response,
                 [call](grpc::Status s) {
                   call->status = std::move(s);
                   call->done.Notify();
                 });
  call->done.WaitForNotification();
  return call;
}

}  // namespace

void KeepCallbackThreadsRunning() {
  static const bool kept = [] {
    // Leaked on purpose: it must outlive every other channel.
    auto* channel = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
    // A call through the callback API (its deadline has passed, so it fails
    // at once) makes the channel hold the callback thread pool.
    (void)GenericUnaryCall(*channel, "/kvstore.testing/KeepCallbackThreadsRunning",
                           absl::InfinitePast());
    return true;
  }();
  (void)kept;
}

uint64_t TestSeed() {
  const char* env = std::getenv("KV_TEST_SEED");
  uint64_t seed = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  return static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
         (static_cast<uint64_t>(::getpid()) << 32);
}

absl::Status CheckHealth(const std::string& address, absl::Duration timeout) {
  KeepCallbackThreadsRunning();
  // HealthCheckRequest{service: ""} is the empty message.
  std::shared_ptr<GenericCall> call =
      GenericUnaryCall(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()),
                       "/grpc.health.v1.Health/Check", absl::Now() + timeout);
  const grpc::Status& status = call->status;
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("health check: ", status.error_code(), " ", status.error_message()));
  }
  grpc::ByteBuffer& response = call->response;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::InternalError("health check: bad response");
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  if (bytes != std::string("\x08\x01", 2)) {
    return absl::UnavailableError("health check: not SERVING");
  }
  return absl::OkStatus();
}

std::string OurBinary(const std::string& built_path) {
  const char* dir = std::getenv("KV_BIN_DIR");
  if (dir == nullptr || *dir == '\0') return built_path;
  return absl::StrCat(dir, "/", std::filesystem::path(built_path).filename().string());
}

void EndAtTeardown(ChildProcess& process, const std::string& what,
                   const std::vector<std::string>& logs) {
  const char* graceful = std::getenv("KV_STOP_GRACEFULLY");
  if (graceful == nullptr || std::string(graceful) != "1") return;  // ~ChildProcess: SIGKILL.
  const std::string last_log = logs.empty() ? "" : logs.back();
  // Exited already (a crash the test provoked, or one it never looked at):
  // reap it and leave the verdict to the test and to the sanitizer reports.
  if (process.running() && !process.WaitExit(absl::InfinitePast()).ok()) {
    (void)process.Kill(SIGCONT);
    if (absl::Status s = process.Kill(SIGTERM); !s.ok()) {
      ADD_FAILURE() << what << ": SIGTERM at teardown: " << s;
    } else if (absl::StatusOr<ExitStatus> exit = process.WaitExit(absl::Now() + absl::Seconds(30));
               !exit.ok()) {
      // ~ChildProcess kills it.
      ADD_FAILURE() << what << " still runs 30 s after SIGTERM at teardown (killed now)"
                    << "\n--- tail of " << last_log << ":\n"
                    << FileTail(last_log);
    } else if (!exit->Clean()) {
      ADD_FAILURE() << what << " did not stop cleanly on SIGTERM at teardown: " << exit->ToString()
                    << " (a leak exits 1: see the sanitizer reports)\n--- tail of " << last_log
                    << ":\n"
                    << FileTail(last_log);
    }
  }
  // The lines kvfault also looks for in a server's log (a UBSan report has
  // no other trace once the server has exited 1).
  for (const std::string& log : logs) {
    for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(log), '\n')) {
      if (absl::StrContains(line, "runtime error:") ||
          absl::StrContains(line, "ERROR: AddressSanitizer") ||
          absl::StrContains(line, "ERROR: LeakSanitizer")) {
        ADD_FAILURE() << what << ": a sanitizer report in " << log << ": " << line
                      << "\n--- tail:\n"
                      << FileTail(log);
        break;
      }
    }
  }
}

// ---------------------------------------------------------------- ServerProcess

ServerProcess::ServerProcess(std::string dir, std::string binary, std::string log_name)
    : dir_(std::move(dir)), binary_(std::move(binary)), log_name_(std::move(log_name)) {}

ServerProcess::~ServerProcess() {
  std::vector<std::string> logs;
  for (int i = 1; i <= starts_; ++i) {
    logs.push_back(absl::StrCat(dir_, "/", log_name_, "-", i, ".log"));
  }
  EndAtTeardown(process_, absl::StrCat(log_name_, " (", binary_, ", ", dir_, ")"), logs);
}

ShardProcess::ShardProcess(std::string dir)
    : ServerProcess(std::move(dir), KV_SHARD_BIN, "shard") {}

std::string ServerProcess::log_path() const {
  return absl::StrCat(dir_, "/", log_name_, "-", starts_, ".log");
}

std::vector<std::string> ServerProcess::Args(const std::string& listen) const {
  std::vector<std::string> args = {absl::StrCat("--listen=", listen),
                                   absl::StrCat("--port-file=", port_file()),
                                   absl::StrCat("--data-dir=", data_dir())};
  args.insert(args.end(), flags_.begin(), flags_.end());
  return args;
}

absl::Status ServerProcess::Start(const std::vector<std::string>& extra_flags,
                                  absl::Duration timeout) {
  flags_ = extra_flags;
  return Restart(timeout);
}

absl::Status ServerProcess::Restart(absl::Duration timeout) {
  return StartOnce("127.0.0.1:0", absl::Now() + timeout);
}

absl::Status ServerProcess::RestartOnSameAddress(absl::Duration timeout) {
  if (last_address_.empty()) {
    return absl::FailedPreconditionError("never served, so there is no address to reuse");
  }
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status s;
  int attempts = 0;
  WaitFor(
      [&] {
        ++attempts;
        s = StartOnce(last_address_, deadline);
        // Only an exit before serving (typically: the port is taken) is
        // worth another try; a hang until the deadline is not.
        return s.ok() || running() || absl::Now() >= deadline;
      },
      deadline, absl::Milliseconds(200));
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("on ", last_address_, " after ", attempts,
                                               " attempt(s): ", s.message()));
  }
  return s;
}

absl::Status ServerProcess::StartOnce(const std::string& listen, absl::Time deadline) {
  address_.clear();
  ++starts_;
  std::error_code ec;
  std::filesystem::create_directories(data_dir(), ec);
  std::filesystem::remove(port_file(), ec);  // A stale one would name the old port.
  if (absl::Status s = process_.Start(binary_, Args(listen), log_path()); !s.ok()) return s;
  absl::Status s = AwaitServing(deadline);
  if (!s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat(binary_, " (", absl::StrJoin(Args(listen), " "), "): ", s.message(),
                               "\n--- tail of ", log_path(), ":\n", LogTail()));
  }
  last_address_ = address_;
  return s;
}

absl::Status ServerProcess::AwaitServing(absl::Time deadline) {
  absl::StatusOr<ExitStatus> exited = absl::UnknownError("");
  auto has_exited = [&] {
    exited = process_.WaitExit(absl::InfinitePast());  // One non-blocking look.
    return exited.ok();
  };
  // 1. The port file, written atomically once the server is bound.
  std::string address;
  const bool have_port = WaitFor(
      [&] {
        if (has_exited()) return true;
        std::string content = ReadFileOrEmpty(port_file());
        if (content.empty() || content.back() != '\n') return false;
        address = std::string(absl::StripSuffix(content, "\n"));
        return true;
      },
      deadline);
  if (exited.ok()) {
    return absl::UnavailableError(absl::StrCat("exited before serving: ", exited->ToString()));
  }
  if (!have_port) return absl::DeadlineExceededError("no port file before the deadline");
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InternalError(absl::StrCat("port file holds '", address, "', not HOST:PORT"));
  }
  // 2. A health check that answers SERVING.
  absl::Status health = absl::UnavailableError("not asked yet");
  const bool serving = WaitFor(
      [&] {
        if (has_exited()) return true;
        health = CheckHealth(address, absl::Seconds(1));
        return health.ok();
      },
      deadline);
  if (exited.ok()) {
    return absl::UnavailableError(
        absl::StrCat("exited before answering health checks: ", exited->ToString()));
  }
  if (!serving) {
    return absl::DeadlineExceededError(absl::StrCat(
        "bound ", address, " but not serving before the deadline: ", health.message()));
  }
  // 3. A leader with no followers to ask starts its epoch at once: wait for it,
  // so that the test's first request does not race it. (A leader with
  // followers waits for them; its test decides what to wait for.)
  const bool lone_leader =
      absl::EndsWith(binary_, "kv-shard") &&
      std::none_of(flags_.begin(), flags_.end(), [](const std::string& f) {
        return absl::StartsWith(f, "--followers=") && f != "--followers=";
      });
  if (lone_leader) {
    absl::StatusOr<v1::StatusResponse> status = absl::UnknownError("not asked yet");
    const bool leading = WaitFor(
        [&] {
          if (has_exited()) return true;
          KvClient client(address, absl::Seconds(1));
          v1::StatusResponse response;
          const grpc::Status s = client.Status(&response);
          if (!s.ok()) {
            status = absl::UnavailableError(absl::StrCat("gRPC code ", s.error_code(), ": ", s.error_message()));
            // Admin.Status behind a token or TLS this harness lacks: cannot tell.
            return s.error_code() != grpc::StatusCode::UNAVAILABLE &&
                   s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED;
          }
          status = response;
          // A node that starts deposed, or without replication, is settled too.
          return response.ready() || response.role() != "leader";
        },
        deadline);
    if (exited.ok()) {
      return absl::UnavailableError(absl::StrCat("exited before leading: ", exited->ToString()));
    }
    if (!leading) {
      return absl::DeadlineExceededError(
          absl::StrCat("serving on ", address, " but not leading before the deadline: ",
                       status.ok() ? status->ShortDebugString() : status.status().ToString()));
    }
  }
  address_ = address;
  return absl::OkStatus();
}

absl::StatusOr<ExitStatus> ServerProcess::RunExpectingExit(
    const std::vector<std::string>& extra_flags, absl::Duration timeout) {
  flags_ = extra_flags;
  address_.clear();
  ++starts_;
  std::error_code ec;
  std::filesystem::remove(port_file(), ec);
  if (absl::Status s = process_.Start(binary_, Args("127.0.0.1:0"), log_path()); !s.ok()) {
    return s;
  }
  absl::StatusOr<ExitStatus> exit = process_.WaitExit(absl::Now() + timeout);
  if (!exit.ok()) {
    (void)process_.KillHard();
    return absl::DeadlineExceededError(absl::StrCat(binary_, " still ran after ",
                                                    absl::FormatDuration(timeout), "\n--- tail of ",
                                                    log_path(), ":\n", LogTail()));
  }
  return exit;
}

absl::StatusOr<ExitStatus> ServerProcess::Terminate(absl::Duration timeout) {
  if (absl::Status s = process_.Kill(SIGTERM); !s.ok()) return s;
  return process_.WaitExit(absl::Now() + timeout);
}

// ---------------------------------------------------------------- KvClient

KvClient::KvClient(const std::string& address, absl::Duration timeout)
    : timeout_(timeout),
      channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
      kv_(v1::KeyValue::NewStub(channel_)),
      admin_(v1::Admin::NewStub(channel_)) {
  KeepCallbackThreadsRunning();  // Callers use kv()->async().
}

std::unique_ptr<grpc::ClientContext> KvClient::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  return context;
}

grpc::Status KvClient::Get(const v1::GetRequest& request, v1::GetResponse* response) {
  return kv_->Get(NewContext().get(), request, response);
}
grpc::Status KvClient::Set(const v1::SetRequest& request, v1::SetResponse* response) {
  return kv_->Set(NewContext().get(), request, response);
}
grpc::Status KvClient::Delete(const v1::DeleteRequest& request, v1::DeleteResponse* response) {
  return kv_->Delete(NewContext().get(), request, response);
}
grpc::Status KvClient::MultiGet(const v1::MultiGetRequest& request,
                                v1::MultiGetResponse* response) {
  return kv_->MultiGet(NewContext().get(), request, response);
}
grpc::Status KvClient::MultiSet(const v1::MultiSetRequest& request,
                                v1::MultiSetResponse* response) {
  return kv_->MultiSet(NewContext().get(), request, response);
}
grpc::Status KvClient::Pipeline(const std::vector<v1::PipelineRequest>& requests,
                                std::vector<v1::PipelineResponse>* answers) {
  std::unique_ptr<grpc::ClientContext> context = NewContext();
  auto stream = kv_->Pipeline(context.get());
  std::thread writer([&] {
    // Messages of 1, 2, 3, ... requests: both one and many per message.
    for (size_t i = 0, n = 1; i < requests.size(); i += n, ++n) {
      v1::PipelineRequests message;
      for (size_t k = i; k < std::min(requests.size(), i + n); ++k) {
        *message.add_requests() = requests[k];
      }
      if (!stream->Write(message)) return;  // Broken: Finish says why.
    }
    stream->WritesDone();
  });
  v1::PipelineResponses message;
  while (stream->Read(&message)) {
    for (const v1::PipelineResponse& answer : message.responses()) answers->push_back(answer);
  }
  writer.join();
  return stream->Finish();
}
grpc::Status KvClient::Status(v1::StatusResponse* response) {
  return admin_->Status(NewContext().get(), v1::StatusRequest(), response);
}
grpc::Status KvClient::Snapshot(v1::SnapshotResponse* response) {
  return admin_->Snapshot(NewContext().get(), v1::SnapshotRequest(), response);
}

grpc::Status KvClient::Promote(const v1::PromoteRequest& request, v1::PromoteResponse* response) {
  return admin_->Promote(NewContext().get(), request, response);
}

grpc::Status KvClient::Get(const std::string& key, v1::GetResponse* response) {
  v1::GetRequest request;
  request.set_key(key);
  return Get(request, response);
}
grpc::Status KvClient::Set(const std::string& key, const std::string& value,
                           v1::SetResponse* response) {
  v1::SetRequest request;
  request.set_key(key);
  request.set_value(value);
  return Set(request, response);
}
grpc::Status KvClient::Delete(const std::string& key, v1::DeleteResponse* response) {
  v1::DeleteRequest request;
  request.set_key(key);
  return Delete(request, response);
}

// ---------------------------------------------------------------- replication

namespace {

std::string DescribeRpc(const grpc::Status& s) {
  return absl::StrCat("gRPC code ", s.error_code(), ": ", s.error_message());
}

// A value for a failure message: its first bytes, printable.
std::string Excerpt(const std::string& value) {
  constexpr size_t kMax = 40;
  std::string out = absl::CHexEscape(value.substr(0, kMax));
  if (value.size() > kMax) absl::StrAppend(&out, "...(", value.size(), " bytes)");
  return out;
}

std::string DescribeResult(const v1::GetResult& r) {
  if (!r.found()) return "absent";
  return absl::StrCat("version ", r.version(), " '", Excerpt(r.value()), "'");
}

}  // namespace

absl::StatusOr<v1::StatusResponse> FetchStatus(const std::string& address, absl::Duration timeout) {
  KvClient client(address, timeout);
  v1::StatusResponse response;
  grpc::Status s = client.Status(&response);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("Admin.Status on ", address, ": ", DescribeRpc(s)));
  }
  return response;
}

const v1::FollowerStatus* FindFollower(const v1::StatusResponse& status,
                                       const std::string& address) {
  for (const v1::FollowerStatus& f : status.followers()) {
    if (f.address() == address) return &f;
  }
  return nullptr;
}

absl::StatusOr<std::vector<v1::GetResult>> ReadAllKeys(const std::string& address,
                                                       const std::vector<std::string>& keys,
                                                       v1::ReadMode mode) {
  KvClient client(address);
  std::vector<v1::GetResult> out;
  out.reserve(keys.size());
  constexpr size_t kBatch = 500;
  for (size_t start = 0; start < keys.size(); start += kBatch) {
    v1::MultiGetRequest request;
    request.set_read_mode(mode);
    for (size_t i = start; i < std::min(keys.size(), start + kBatch); ++i) {
      request.add_keys(keys[i]);
    }
    v1::MultiGetResponse response;
    grpc::Status s = client.MultiGet(request, &response);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat("MultiGet of ", request.keys_size(), " keys on ",
                                                 address, ": ", DescribeRpc(s)));
    }
    if (response.results_size() != request.keys_size()) {
      return absl::InternalError(absl::StrCat("MultiGet of ", request.keys_size(), " keys on ",
                                              address, " returned ", response.results_size(),
                                              " results"));
    }
    for (int i = 0; i < response.results_size(); ++i) {
      const v1::GetResult& r = response.results(i);
      if (r.has_error() && r.error().code() != 0) {
        return absl::InternalError(absl::StrCat("MultiGet on ", address, ", key ",
                                                Excerpt(request.keys(i)), ": code ",
                                                r.error().code(), " ", r.error().message()));
      }
      out.push_back(r);
    }
  }
  return out;
}

std::string ContentDiff::ToString() const {
  if (!error.ok()) return absl::StrCat("could not compare: ", error.message());
  std::string out = absl::StrCat(compared, " keys compared, ", present, " present and equal, ",
                                 different, " different");
  for (const std::string& e : examples) absl::StrAppend(&out, "\n  ", e);
  return out;
}

ContentDiff CompareContents(const std::string& a, const std::string& b,
                            const std::vector<std::string>& keys) {
  ContentDiff diff;
  absl::StatusOr<std::vector<v1::GetResult>> on_a = ReadAllKeys(a, keys);
  if (!on_a.ok()) {
    diff.error = on_a.status();
    return diff;
  }
  absl::StatusOr<std::vector<v1::GetResult>> on_b = ReadAllKeys(b, keys);
  if (!on_b.ok()) {
    diff.error = on_b.status();
    return diff;
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const v1::GetResult& x = (*on_a)[i];
    const v1::GetResult& y = (*on_b)[i];
    ++diff.compared;
    const bool same = x.found() == y.found() &&
                      (!x.found() || (x.value() == y.value() && x.version() == y.version()));
    if (same) {
      if (x.found()) ++diff.present;
      continue;
    }
    if (++diff.different <= 5) {
      diff.examples.push_back(absl::StrCat("key '", Excerpt(keys[i]), "': ", a, " has ",
                                           DescribeResult(x), ", ", b, " has ", DescribeResult(y)));
    }
  }
  return diff;
}

absl::Status AwaitSameLastIndex(const std::string& leader, const std::string& replica,
                                absl::Time deadline) {
  uint64_t leader_index = 0;
  uint64_t replica_index = 0;
  absl::Status error;
  const bool same = WaitFor(
      [&] {
        absl::StatusOr<v1::StatusResponse> l = FetchStatus(leader);
        absl::StatusOr<v1::StatusResponse> r = FetchStatus(replica);
        absl::StatusOr<v1::StatusResponse> l_again = FetchStatus(leader);
        if (!l.ok() || !r.ok() || !l_again.ok()) {
          error = !l.ok() ? l.status() : !r.ok() ? r.status() : l_again.status();
          return false;
        }
        error = absl::OkStatus();
        leader_index = l->last_index();
        replica_index = r->last_index();
        return leader_index == replica_index && l_again->last_index() == leader_index;
      },
      deadline, absl::Milliseconds(50));
  if (same) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      "last_index: ", leader, " at ", leader_index, ", ", replica, " at ", replica_index,
      error.ok() ? "" : absl::StrCat("; last error: ", error.message())));
}

absl::Status AwaitFollowersStreaming(const std::string& leader,
                                     const std::vector<std::string>& followers,
                                     absl::Time deadline) {
  absl::StatusOr<v1::StatusResponse> last = absl::UnknownError("not asked yet");
  const bool streaming = WaitFor(
      [&] {
        last = FetchStatus(leader);
        if (!last.ok()) return false;
        // A leader that (re)started takes writes once its epoch began.
        if (last->role() != "leader" || !last->ready()) return false;
        for (const std::string& follower : followers) {
          const v1::FollowerStatus* f = FindFollower(*last, follower);
          if (f == nullptr || f->state() != "streaming") return false;
        }
        return true;
      },
      deadline, absl::Milliseconds(20));
  if (streaming) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      "the leader ", leader, " does not stream to every one of ", absl::StrJoin(followers, ","),
      "; last Status: ", last.ok() ? last->ShortDebugString() : last.status().ToString()));
}

ShardGroup::ShardGroup(const std::string& dir, const std::string& shard_binary,
                       const std::string& replica_binary, int replicas)
    : leader_(std::make_unique<ServerProcess>(dir + "/leader", shard_binary, "shard")) {
  for (int i = 0; i < replicas; ++i) {
    replicas_.push_back(std::make_unique<ServerProcess>(absl::StrCat(dir, "/replica-", i),
                                                        replica_binary, "replica"));
  }
}

absl::Status ShardGroup::Start(const std::vector<std::string>& leader_flags,
                               const std::vector<std::string>& replica_flags,
                               absl::Duration timeout) {
  follower_addresses_.clear();
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (absl::Status s = replicas_[i]->Start(replica_flags, timeout); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("replica ", i, ": ", s.message()));
    }
    follower_addresses_.push_back(replicas_[i]->address());
  }
  std::vector<std::string> flags = leader_flags;
  if (!follower_addresses_.empty()) flags.push_back(FollowersFlag());
  const absl::Time deadline = absl::Now() + timeout;
  if (absl::Status s = leader_->Start(flags, timeout); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("leader: ", s.message()));
  }
  if (absl::Status s = AwaitFollowersStreaming(leader_->address(), follower_addresses_, deadline);
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), "\n", LogTails()));
  }
  return absl::OkStatus();
}

std::string ShardGroup::FollowersFlag() const {
  return absl::StrCat("--followers=", absl::StrJoin(follower_addresses_, ","));
}

std::string ShardGroup::LogTails(size_t max_bytes) const {
  std::string out = absl::StrCat("--- tail of ", leader_->log_path(), " (leader ",
                                 leader_->last_address(), "):\n", leader_->LogTail(max_bytes));
  for (size_t i = 0; i < replicas_.size(); ++i) {
    absl::StrAppend(&out, "\n--- tail of ", replicas_[i]->log_path(), " (replica ", i, " ",
                    replicas_[i]->last_address(), "):\n", replicas_[i]->LogTail(max_bytes));
  }
  return out;
}

// ---------------------------------------------------------------- kvctl

std::string KvctlResult::ToString() const {
  return absl::StrCat("kvctl ", status.ToString(), "\n--- stdout:\n", out, "\n--- stderr:\n", err);
}

KvctlResult RunKvctl(const std::string& address, const std::vector<std::string>& args,
                     absl::Duration timeout) {
  KvctlResult result;
  TempDir tmp;
  std::vector<std::string> argv;
  if (!address.empty()) argv.push_back(absl::StrCat("--addr=", address));
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child;
  const std::string out_path = tmp.Join("stdout");
  const std::string err_path = tmp.Join("stderr");
  if (absl::Status s = child.Start(KVCTL_BIN, argv, out_path, err_path); !s.ok()) {
    result.err = s.ToString();
    return result;
  }
  absl::StatusOr<ExitStatus> exit = child.WaitExit(absl::Now() + timeout);
  if (!exit.ok()) {
    (void)child.KillHard();
    result.err = absl::StrCat("kvctl did not exit within ", absl::FormatDuration(timeout), "\n");
  } else {
    result.status = *exit;
    if (exit->exited) result.exit_code = exit->code;
  }
  result.out = ReadFileOrEmpty(out_path);
  result.err += ReadFileOrEmpty(err_path);
  return result;
}

}  // namespace testing
}  // namespace kvstore
