#include "tests/support/etcd_process.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace kvstore::testing {

int PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

EtcdProcess::EtcdProcess(std::string binary) : binary_(std::move(binary)) {}

EtcdProcess::~EtcdProcess() {
  absl::Status s = Stop();
  if (!s.ok()) std::fprintf(stderr, "stopping etcd: %s\n", s.ToString().c_str());
}

std::string EtcdProcess::LogTail(size_t max_bytes) const {
  return FileTail(absl::StrCat(dir_.path(), "/etcd-", starts_, ".log"), max_bytes);
}

absl::Status EtcdProcess::Start(const std::vector<std::string>& extra_flags,
                                absl::Duration timeout) {
  extra_flags_ = extra_flags;
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status s;
  do {
    client_port_ = PickFreePort();
    peer_port_ = PickFreePort();
    if (client_port_ == 0 || peer_port_ == 0 || client_port_ == peer_port_) continue;
    endpoint_ = absl::StrCat("127.0.0.1:", client_port_);
    s = Launch(deadline);
    if (s.ok() || running()) return s;  // Running but not answering: a hang, not a port clash.
  } while (absl::Now() < deadline);
  return s.ok() ? absl::DeadlineExceededError("no free ports for etcd") : s;
}

absl::Status EtcdProcess::Restart(absl::Duration timeout) {
  if (endpoint_.empty()) return absl::FailedPreconditionError("etcd was never started");
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status s;
  WaitFor(
      [&] {
        s = Launch(deadline);
        return s.ok() || running() || absl::Now() >= deadline;
      },
      deadline, absl::Milliseconds(200));
  return s;
}

absl::Status EtcdProcess::Launch(absl::Time deadline) {
  ++starts_;
  const std::string client_url = absl::StrCat("http://127.0.0.1:", client_port_);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  std::vector<std::string> args = {
      "--name=kvtest",
      absl::StrCat("--data-dir=", dir_.path(), "/data"),
      absl::StrCat("--listen-client-urls=", client_url),
      absl::StrCat("--advertise-client-urls=", client_url),
      absl::StrCat("--listen-peer-urls=", peer_url),
      absl::StrCat("--initial-advertise-peer-urls=", peer_url),
      absl::StrCat("--initial-cluster=kvtest=", peer_url),
      "--initial-cluster-state=new",
      "--logger=zap",
      "--log-outputs=stderr",
      "--log-level=warn",
  };
  args.insert(args.end(), extra_flags_.begin(), extra_flags_.end());
  const std::string log = absl::StrCat(dir_.path(), "/etcd-", starts_, ".log");
  if (absl::Status s = process_.Start(binary_, args, log); !s.ok()) return s;
  absl::Status s = AwaitAnswering(deadline);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("etcd on ", endpoint_, ": ", s.message(),
                                               "\n--- tail of ", log, ":\n", LogTail()));
  }
  return s;
}

absl::Status EtcdProcess::AwaitAnswering(absl::Time deadline) {
  auto channel = grpc::CreateChannel(endpoint_, grpc::InsecureChannelCredentials());
  auto stub = etcdserverpb::KV::NewStub(channel);
  grpc::Status last;
  bool exited = false;
  const bool answered = WaitFor(
      [&] {
        absl::StatusOr<ExitStatus> exit = process_.WaitExit(absl::InfinitePast());
        if (exit.ok()) {
          exited = true;
          last = grpc::Status(grpc::StatusCode::UNAVAILABLE, exit->ToString());
          return true;
        }
        grpc::ClientContext context;
        context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
        context.set_wait_for_ready(true);
        etcdserverpb::RangeRequest request;
        request.set_key("kvtest/ready");
        etcdserverpb::RangeResponse response;
        last = stub->Range(&context, request, &response);
        return last.ok();
      },
      deadline, absl::Milliseconds(50));
  if (exited)
    return absl::UnavailableError(absl::StrCat("exited before answering: ", last.error_message()));
  if (!answered) {
    return absl::DeadlineExceededError(
        absl::StrCat("no answer in time; last: ", last.error_code(), " ", last.error_message()));
  }
  return absl::OkStatus();
}

absl::Status EtcdProcess::Stop(absl::Duration grace) {
  if (!process_.running()) return absl::OkStatus();
  if (absl::Status s = process_.Kill(SIGTERM); !s.ok()) return s;
  absl::StatusOr<ExitStatus> exit = process_.WaitExit(absl::Now() + grace);
  if (exit.ok()) return absl::OkStatus();
  std::fprintf(stderr, "etcd (pid %d) ignored SIGTERM for %s; SIGKILL\n", process_.pid(),
               absl::FormatDuration(grace).c_str());
  return process_.KillHard().status();
}

}  // namespace kvstore::testing
