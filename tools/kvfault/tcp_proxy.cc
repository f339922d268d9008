#include "tools/kvfault/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace kvstore::fault {

namespace {

// A pump looks at the faults at least this often, so Set() and a reset take
// effect within it.
constexpr absl::Duration kTick = absl::Milliseconds(10);
// Bytes read but not yet forwarded, per direction: past it the pump stops
// reading, so a delayed or rate-capped link pushes back on its sender.
constexpr size_t kMaxQueued = 1 << 20;
constexpr size_t kChunk = 16384;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

void SetNoDelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes `fd` with a TCP reset rather than a FIN.
void CloseWithReset(int fd) {
  if (fd < 0) return;
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

struct Chunk {
  absl::Time release;
  std::string data;
  size_t sent = 0;
};

// One direction of a connection: bytes read from `from`, held until their
// release time (and the rate cap allow), written to `to`.
struct Direction {
  int from = -1;
  int to = -1;
  std::deque<Chunk> queue;
  size_t queued = 0;
  bool eof = false;   // `from` said EOF.
  bool shut = false;  // ...and everything was forwarded: `to` got SHUT_WR.
  double tokens = 0;  // Rate cap: bytes that may be written now.
  absl::Time refilled = absl::InfinitePast();
  absl::Time last_release = absl::InfinitePast();
};

}  // namespace

bool LinkFaults::healthy() const {
  return delay == absl::ZeroDuration() && jitter == absl::ZeroDuration() && !blackhole && !refuse &&
         rate_bytes_per_s == 0;
}

std::string LinkFaults::ToString() const {
  if (healthy()) return "healthy";
  std::vector<std::string> parts;
  if (blackhole) parts.push_back("blackhole");
  if (refuse) parts.push_back("refuse new connections");
  if (delay > absl::ZeroDuration() || jitter > absl::ZeroDuration()) {
    parts.push_back(
        absl::StrCat("delay ", absl::FormatDuration(delay), " ± ", absl::FormatDuration(jitter)));
  }
  if (rate_bytes_per_s > 0) parts.push_back(absl::StrCat("rate ", rate_bytes_per_s, " B/s"));
  return absl::StrJoin(parts, ", ");
}

struct TcpProxy::Connection {
  int client = -1;
  int upstream = -1;  // Connected once no blackhole holds it back.
  uint64_t generation = 0;
  uint64_t seed = 0;
  bool done = false;  // Guarded by the proxy's mu_; the thread then only exits.
  std::thread thread;
};

TcpProxy::TcpProxy(std::string target, uint64_t seed) : target_(std::move(target)), seed_(seed) {}

TcpProxy::~TcpProxy() {
  stop_.store(true);
  if (wake_[1] >= 0) {
    const char c = 0;
    while (::write(wake_[1], &c, 1) < 0 && errno == EINTR) {
    }
  }
  if (acceptor_.joinable()) acceptor_.join();
  std::list<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock l(&mu_);
    connections = std::move(connections_);
  }
  for (auto& c : connections) c->thread.join();  // Each sees stop_ within a tick.
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

absl::Status TcpProxy::Start() {
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

void TcpProxy::Set(const LinkFaults& faults) {
  absl::MutexLock l(&mu_);
  faults_ = faults;
}

LinkFaults TcpProxy::faults() const {
  absl::MutexLock l(&mu_);
  return faults_;
}

ProxyStats TcpProxy::stats() const {
  absl::MutexLock l(&mu_);
  ProxyStats s = stats_;
  s.open = 0;
  for (const auto& c : connections_) s.open += c->done ? 0 : 1;
  return s;
}

int TcpProxy::ResetConnections() {
  absl::MutexLock l(&mu_);
  const uint64_t generation = ++reset_generation_;
  int count = 0;
  for (const auto& c : connections_) count += c->done ? 0 : 1;
  // The pumps close their sockets (a reset needs the close, which only the
  // thread that polls them may do); wait until they have, a tick or two.
  auto all_closed = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& c : connections_) {
      if (!c->done && c->generation < generation) return false;
    }
    return true;
  };
  mu_.AwaitWithTimeout(absl::Condition(&all_closed), absl::Seconds(2));
  return count;
}

void TcpProxy::Cut() {
  {
    absl::MutexLock l(&mu_);
    faults_.refuse = true;
  }
  ResetConnections();
}

int TcpProxy::ConnectToTarget() const {
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
  SetNoDelay(fd);
  return fd;
}

void TcpProxy::Accept() {
  while (!stop_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    const int ready = ::poll(fds, 2, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0 || (fds[1].revents & POLLIN) != 0) return;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    SetNoDelay(client);
    absl::MutexLock l(&mu_);
    // Forget the connections that ended (their threads have exited or are
    // about to: done is their last write).
    for (auto it = connections_.begin(); it != connections_.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    if (faults_.refuse) {
      ++stats_.refused;
      CloseWithReset(client);
      continue;
    }
    ++stats_.accepted;
    auto c = std::make_unique<Connection>();
    c->client = client;
    c->generation = reset_generation_;
    c->seed = seed_ + stats_.accepted;
    Connection* raw = c.get();
    connections_.push_back(std::move(c));
    raw->thread = std::thread([this, raw] { Pump(raw); });
  }
}

void TcpProxy::Pump(Connection* c) {
  std::mt19937_64 rng(c->seed);
  Direction dirs[2];  // 0: client -> target, 1: target -> client.
  char buffer[kChunk];
  bool reset = false;
  bool failed = false;
  while (!stop_.load()) {
    LinkFaults faults;
    {
      absl::MutexLock l(&mu_);
      faults = faults_;
      reset = c->generation < reset_generation_;
    }
    if (reset) break;
    if (c->upstream < 0) {
      if (faults.blackhole) {  // The SYN would be lost: hold the client.
        absl::SleepFor(kTick);
        continue;
      }
      c->upstream = ConnectToTarget();
      if (c->upstream < 0) {  // The target is down: so is the link.
        absl::MutexLock l(&mu_);
        ++stats_.refused;
        failed = true;
        break;
      }
      SetNonBlocking(c->client);
      SetNonBlocking(c->upstream);
      dirs[0].from = dirs[1].to = c->client;
      dirs[0].to = dirs[1].from = c->upstream;
    }
    const absl::Time now = absl::Now();
    if (faults.blackhole) {
      // Neither read nor write, and do not watch the sockets either (a
      // closed peer would make poll return at once): the link is dead.
      absl::SleepFor(kTick);
      continue;
    }
    absl::Duration timeout = kTick;
    short events[2] = {0, 0};  // Per socket: client, upstream.
    auto slot = [&](int fd) { return fd == c->client ? 0 : 1; };
    for (Direction& d : dirs) {
      if (faults.rate_bytes_per_s > 0) {
        const double burst = std::max<double>(kChunk, faults.rate_bytes_per_s / 10.0);
        if (d.refilled == absl::InfinitePast()) d.refilled = now;
        d.tokens = std::min(
            burst, d.tokens + faults.rate_bytes_per_s * absl::ToDoubleSeconds(now - d.refilled));
        d.refilled = now;
      }
      if (!d.eof && d.queued < kMaxQueued) events[slot(d.from)] |= POLLIN;
      if (!d.queue.empty()) {
        const absl::Duration wait = d.queue.front().release - now;
        const bool tokens = faults.rate_bytes_per_s == 0 || d.tokens >= 1;
        if (wait <= absl::ZeroDuration() && tokens) {
          events[slot(d.to)] |= POLLOUT;
        } else if (wait > absl::ZeroDuration()) {
          timeout = std::min(timeout, wait);
        }
      }
    }
    pollfd fds[2] = {{c->client, events[0], 0}, {c->upstream, events[1], 0}};
    const int ready =
        ::poll(fds, 2, std::max<int>(1, static_cast<int>(absl::ToInt64Milliseconds(timeout))));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      failed = true;
      break;
    }
    // What arrived meanwhile gets the faults of now, not of before the poll:
    // a heal must not leave a last chunk held for the old delay.
    {
      absl::MutexLock l(&mu_);
      faults = faults_;
      reset = c->generation < reset_generation_;
    }
    if (reset) break;
    if (faults.blackhole) continue;
    const absl::Time after = absl::Now();
    for (Direction& d : dirs) {
      const short from = fds[slot(d.from)].revents;
      if ((from & (POLLIN | POLLHUP | POLLERR)) != 0 && !d.eof) {
        const ssize_t n = ::recv(d.from, buffer, sizeof(buffer), 0);
        if (n > 0) {
          absl::Duration delay = faults.delay;
          if (faults.jitter > absl::ZeroDuration()) {
            const int64_t j = absl::ToInt64Microseconds(faults.jitter);
            delay += absl::Microseconds(std::uniform_int_distribution<int64_t>(-j, j)(rng));
          }
          const absl::Time release =
              std::max(after + std::max(delay, absl::ZeroDuration()), d.last_release);
          d.last_release = release;
          d.queue.push_back(Chunk{release, std::string(buffer, static_cast<size_t>(n))});
          d.queued += static_cast<size_t>(n);
        } else if (n == 0) {
          d.eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          failed = true;
        }
      } else if ((from & (POLLHUP | POLLERR)) != 0 && d.eof) {
        failed = true;  // Closed both ways; nothing more will come.
      }
      // Write whatever is due, within the rate cap.
      while (!failed && !d.queue.empty() && d.queue.front().release <= after) {
        Chunk& chunk = d.queue.front();
        size_t size = chunk.data.size() - chunk.sent;
        if (faults.rate_bytes_per_s > 0) {
          if (d.tokens < 1) break;
          size = std::min(size, static_cast<size_t>(d.tokens));
        }
        const ssize_t n = ::send(d.to, chunk.data.data() + chunk.sent, size, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) failed = true;
          break;
        }
        chunk.sent += static_cast<size_t>(n);
        d.queued -= static_cast<size_t>(n);
        if (faults.rate_bytes_per_s > 0) d.tokens -= static_cast<double>(n);
        {
          absl::MutexLock l(&mu_);
          (&d == &dirs[0] ? stats_.bytes_to_target : stats_.bytes_from_target) +=
              static_cast<uint64_t>(n);
        }
        if (chunk.sent == chunk.data.size()) d.queue.pop_front();
      }
      if (d.eof && d.queue.empty() && !d.shut) {
        ::shutdown(d.to, SHUT_WR);
        d.shut = true;
      }
    }
    if (failed || (dirs[0].shut && dirs[1].shut)) break;
  }
  if (reset || failed) {
    CloseWithReset(c->client);
    CloseWithReset(c->upstream);
  } else {
    ::close(c->client);
    if (c->upstream >= 0) ::close(c->upstream);
  }
  absl::MutexLock l(&mu_);
  if (reset) ++stats_.reset;
  c->done = true;
}

}  // namespace kvstore::fault
