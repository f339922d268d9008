// TcpProxy (tools/kvfault/tcp_proxy.h) between a client socket and an echo
// server on 127.0.0.1: each fault does what the header says, and heals.
#include "tools/kvfault/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kvstore::fault {
namespace {

// Echoes every byte back on each connection, one thread per connection.
class EchoServer {
 public:
  EchoServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
    acceptor_ = std::thread([this] {
      while (!stop_.load()) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        echoes_.emplace_back([this, c] {
          char buffer[4096];
          while (!stop_.load()) {
            pollfd q{c, POLLIN, 0};
            if (::poll(&q, 1, 20) <= 0) continue;
            const ssize_t n = ::recv(c, buffer, sizeof(buffer), 0);
            if (n <= 0) break;
            if (::send(c, buffer, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
          }
          ::close(c);
        });
      }
    });
  }
  ~EchoServer() {
    stop_.store(true);
    acceptor_.join();
    for (std::thread& t : echoes_) t.join();
    ::close(fd_);
  }
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> echoes_;  // Only the acceptor adds, before the join.
};

int Connect(const std::string& address) {
  std::vector<std::string> parts = absl::StrSplit(address, ':');
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(parts[1], &port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    sent += static_cast<size_t>(n);
  }
}

// Reads until `size` bytes arrived, the peer closed or reset, or `timeout`.
// *error: errno of a failed recv (ECONNRESET for a reset), 0 otherwise.
std::string Receive(int fd, size_t size, absl::Duration timeout, int* error = nullptr) {
  std::string out;
  const absl::Time deadline = absl::Now() + timeout;
  if (error != nullptr) *error = 0;
  char buffer[4096];
  while (out.size() < size) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = ::recv(fd, buffer, std::min(sizeof(buffer), size - out.size()), 0);
    if (n < 0 && error != nullptr) *error = errno;
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

class TcpProxyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(proxy_.Start().ok()); }
  EchoServer echo_;
  TcpProxy proxy_{echo_.address(), /*seed=*/7};
};

TEST_F(TcpProxyTest, AHealthyLinkRelaysBothWays) {
  const int fd = Connect(proxy_.address());
  SendAll(fd, "hello");
  EXPECT_EQ(Receive(fd, 5, absl::Seconds(5)), "hello");
  EXPECT_EQ(proxy_.stats().accepted, 1u);
  EXPECT_EQ(proxy_.stats().bytes_to_target, 5u);
  ::close(fd);
}

TEST_F(TcpProxyTest, DelayHoldsEachDirectionAtLeastTheDelayAndKeepsTheOrder) {
  LinkFaults f;
  f.delay = absl::Milliseconds(100);
  f.jitter = absl::Milliseconds(90);
  proxy_.Set(f);
  const int fd = Connect(proxy_.address());
  const absl::Time start = absl::Now();
  SendAll(fd, "first");
  EXPECT_EQ(Receive(fd, 5, absl::Seconds(5)), "first");
  // Two delays of at least 10 ms (100 - 90) each.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  std::string sent;
  for (int i = 0; i < 50; ++i) {  // Many small sends: each gets its own jitter draw.
    const std::string piece = absl::StrCat(i, ",");
    SendAll(fd, piece);
    sent += piece;
    absl::SleepFor(absl::Milliseconds(2));  // Pacing the sender, not synchronisation.
  }
  EXPECT_EQ(Receive(fd, sent.size(), absl::Seconds(10)), sent);  // Jitter never reorders.
  proxy_.Set(LinkFaults());
  const absl::Time healed = absl::Now();
  SendAll(fd, "x");
  EXPECT_EQ(Receive(fd, 1, absl::Seconds(5)), "x");
  EXPECT_LT(absl::Now() - healed, absl::Milliseconds(150));
  ::close(fd);
}

TEST_F(TcpProxyTest, AFixedDelayAppliesInEachDirection) {
  LinkFaults f;
  f.delay = absl::Milliseconds(150);
  proxy_.Set(f);
  const int fd = Connect(proxy_.address());
  const absl::Time start = absl::Now();
  SendAll(fd, "ping");
  EXPECT_EQ(Receive(fd, 4, absl::Seconds(5)), "ping");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  ::close(fd);
}

TEST_F(TcpProxyTest, ABlackholeHoldsTheBytesAndKeepsTheConnectionUntilHealed) {
  const int fd = Connect(proxy_.address());
  SendAll(fd, "before");
  ASSERT_EQ(Receive(fd, 6, absl::Seconds(5)), "before");
  LinkFaults f;
  f.blackhole = true;
  proxy_.Set(f);
  absl::SleepFor(absl::Milliseconds(30));  // Longer than a pump's tick: it saw the fault.
  SendAll(fd, "during");
  int error = 0;
  EXPECT_EQ(Receive(fd, 6, absl::Milliseconds(400), &error), "");
  EXPECT_EQ(error, 0);  // Not closed, not reset: silent.
  // A new connection is accepted but not connected on.
  const int late = Connect(proxy_.address());
  SendAll(late, "late");
  EXPECT_EQ(Receive(late, 4, absl::Milliseconds(200)), "");
  EXPECT_EQ(proxy_.stats().open, 2u);
  proxy_.Set(LinkFaults());
  EXPECT_EQ(Receive(fd, 6, absl::Seconds(5)), "during");
  EXPECT_EQ(Receive(late, 4, absl::Seconds(5)), "late");
  ::close(fd);
  ::close(late);
}

TEST_F(TcpProxyTest, AResetClosesEveryOpenConnectionWithAReset) {
  const int a = Connect(proxy_.address());
  const int b = Connect(proxy_.address());
  SendAll(a, "a");
  SendAll(b, "b");
  ASSERT_EQ(Receive(a, 1, absl::Seconds(5)), "a");
  ASSERT_EQ(Receive(b, 1, absl::Seconds(5)), "b");
  EXPECT_EQ(proxy_.ResetConnections(), 2);
  int error = 0;
  EXPECT_EQ(Receive(a, 1, absl::Seconds(5), &error), "");
  EXPECT_EQ(error, ECONNRESET);
  EXPECT_EQ(proxy_.stats().reset, 2u);
  // The link itself stays up: a new connection is relayed.
  const int c = Connect(proxy_.address());
  SendAll(c, "c");
  EXPECT_EQ(Receive(c, 1, absl::Seconds(5)), "c");
  for (int fd : {a, b, c}) ::close(fd);
}

TEST_F(TcpProxyTest, ACutRefusesNewConnectionsUntilRestored) {
  proxy_.Cut();
  const int fd = Connect(proxy_.address());  // The kernel accepts; the proxy resets it.
  int error = 0;
  EXPECT_EQ(Receive(fd, 1, absl::Seconds(5), &error), "");
  EXPECT_EQ(error, ECONNRESET);
  EXPECT_EQ(proxy_.refused(), 1u);
  ::close(fd);
  proxy_.Restore();
  const int again = Connect(proxy_.address());
  SendAll(again, "ok");
  EXPECT_EQ(Receive(again, 2, absl::Seconds(5)), "ok");
  ::close(again);
}

TEST_F(TcpProxyTest, ARateCapSlowsABulkTransferToAboutTheRate) {
  LinkFaults f;
  f.rate_bytes_per_s = 64 * 1024;
  proxy_.Set(f);
  const int fd = Connect(proxy_.address());
  const std::string data(96 * 1024, 'z');
  const absl::Time start = absl::Now();
  std::thread sender([&] { SendAll(fd, data); });
  EXPECT_EQ(Receive(fd, data.size(), absl::Seconds(20)).size(), data.size());
  sender.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  // Each direction is capped: 96 KiB at 64 KiB/s after a 16 KiB burst is at
  // least 1.25 s one way (the echo's way overlaps it); uncapped, milliseconds.
  EXPECT_GE(seconds, 1.1);
  EXPECT_LE(seconds, 6.0);
  ::close(fd);
}

}  // namespace
}  // namespace kvstore::fault
