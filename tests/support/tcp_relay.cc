#include "tests/support/tcp_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kvstore::testing {

namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Writes all of `data`; false when the peer is gone.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

TcpRelay::TcpRelay(std::string target) : target_(std::move(target)) {}

TcpRelay::~TcpRelay() {
  stop_.store(true);
  if (wake_[1] >= 0) {
    const char c = 0;
    while (::write(wake_[1], &c, 1) < 0 && errno == EINTR) {
    }
  }
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> pumps;
  {
    absl::MutexLock l(&mu_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    pumps = std::move(pumps_);
  }
  for (std::thread& t : pumps) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

absl::Status TcpRelay::Start() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return Errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno("bind 127.0.0.1:0");
  }
  if (::listen(listen_fd_, 64) != 0) return Errno("listen");
  socklen_t len = sizeof(addr);
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Errno("getsockname");
  }
  if (::pipe2(wake_, O_CLOEXEC) != 0) return Errno("pipe");
  address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  acceptor_ = std::thread([this] { Accept(); });
  return absl::OkStatus();
}

void TcpRelay::Cut() {
  absl::MutexLock l(&mu_);
  cut_ = true;
  // The pumps see the shutdown, stop and close their fds.
  for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
}

void TcpRelay::Restore() {
  absl::MutexLock l(&mu_);
  cut_ = false;
}

int TcpRelay::ConnectToTarget() const {
  std::vector<std::string> parts = absl::StrSplit(target_, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return -1;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

void TcpRelay::Accept() {
  while (!stop_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    const int ready = ::poll(fds, 2, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0 || (fds[1].revents & POLLIN) != 0) return;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    {
      absl::MutexLock l(&mu_);
      if (cut_) {
        ++refused_;
        ::close(client);
        continue;
      }
    }
    const int upstream = ConnectToTarget();
    if (upstream < 0) {
      ::close(client);
      continue;
    }
    const int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ++accepted_;
    absl::MutexLock l(&mu_);
    if (cut_) {  // Cut while connecting.
      ++refused_;
      ::close(client);
      ::close(upstream);
      continue;
    }
    open_.insert(client);
    open_.insert(upstream);
    pumps_.emplace_back([this, client, upstream] { Pump(client, upstream); });
  }
}

void TcpRelay::Pump(int client, int upstream) {
  char buffer[16384];
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  for (;;) {
    const int ready = ::poll(fds, 2, 200);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0 || stop_.load()) break;
    bool done = false;
    for (int i = 0; i < 2 && !done; ++i) {
      if (fds[i].revents == 0) continue;
      const ssize_t n = ::recv(fds[i].fd, buffer, sizeof(buffer), 0);
      if (n <= 0 && !(n < 0 && errno == EINTR)) {
        done = true;
      } else if (n > 0 && !WriteAll(fds[1 - i].fd, buffer, static_cast<size_t>(n))) {
        done = true;
      }
    }
    if (done) break;
  }
  absl::MutexLock l(&mu_);
  open_.erase(client);
  open_.erase(upstream);
  ::close(client);
  ::close(upstream);
}

}  // namespace kvstore::testing
