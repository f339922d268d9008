#include "tools/kvbench/redis_target.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace kvstore::bench {

using Clock = std::chrono::steady_clock;

// A request slot and a connection of the Redis loops (internal to this file).
struct RedisConn;

struct RedisSlot {
  RedisConn* conn = nullptr;
  std::mt19937_64 rng;
  bool busy = false;
  bool is_read = false;
  Clock::time_point start;
  std::vector<std::string> keys;
  std::vector<const char*> argv;
  std::vector<size_t> argvlen;
  SlotStats stats;
};

struct RedisConn {
  RedisTarget::Loop* loop = nullptr;
  redisAsyncContext* ac = nullptr;  // null while disconnected
  bool connected = false;
  int fd = -1;
  uint32_t wanted = 0;      // events hiredis asked for
  uint32_t registered = 0;  // events epoll has (0 = not registered)
  bool dirty = false;
  Clock::time_point reconnect_at{};
  std::vector<RedisSlot*> slots;
};

namespace {

constexpr auto kReconnectDelay = std::chrono::milliseconds(100);

// An error reply's code: its first word ("ERR", "MISCONF", "LOADING", ...).
std::string RedisErrorCode(const redisReply* reply) {
  std::string text(reply->str != nullptr ? reply->str : "", reply->len);
  text = text.substr(0, text.find(' '));
  return text.empty() ? "REDIS_ERROR" : text;
}

}  // namespace

// One epoll loop and the connections it serves, all touched by its thread only
// (the hiredis contexts are not thread-safe).
class RedisTarget::Loop {
 public:
  Loop(const BenchConfig& config, const KeyChooser& keys, const std::string& value,
       RunControl* control)
      : config_(config), keys_(keys), value_(value), control_(control) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  }
  ~Loop() {
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  RedisConn* AddConnection() {
    conns_.push_back(std::make_unique<RedisConn>());
    conns_.back()->loop = this;
    return conns_.back().get();
  }
  void AddSlot(std::unique_ptr<RedisSlot> slot) { slots_.push_back(std::move(slot)); }

  // Runs until the phase is kStop and every slot is idle, or the stop is
  // call_timeout + 1 s old; then closes the connections.
  void Run() {
    epoll_event events[64];
    Clock::time_point stop_seen{};
    const auto grace = absl::ToChronoMicroseconds(config_.call_timeout + absl::Seconds(1));
    while (true) {
      const Clock::time_point now = Clock::now();
      if (Stopping()) {
        if (stop_seen == Clock::time_point{}) stop_seen = now;
        if (AllIdle() || now - stop_seen > grace) break;
      } else {
        for (auto& conn : conns_) {
          if (conn->ac == nullptr && now >= conn->reconnect_at) Connect(conn.get());
        }
      }
      FlushDirty();
      const int n = epoll_wait(epoll_fd_, events, 64, 10);
      for (int i = 0; i < n; ++i) {
        RedisConn* conn = static_cast<RedisConn*>(events[i].data.ptr);
        if (conn->ac != nullptr && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
          redisAsyncHandleRead(conn->ac);
        }
        if (conn->ac != nullptr && (events[i].events & EPOLLOUT)) redisAsyncHandleWrite(conn->ac);
      }
    }
    drained_ = AllIdle();
    for (auto& conn : conns_) {
      if (conn->ac != nullptr) redisAsyncFree(conn->ac);  // answers pending callbacks with null
    }
  }

  bool drained() const { return drained_; }
  void CollectInto(SlotStats* total) const {
    for (const auto& slot : slots_) total->Merge(slot->stats);
  }

 private:
  bool Stopping() const { return control_->phase.load(std::memory_order_acquire) == Phase::kStop; }
  bool Measuring() const {
    return control_->phase.load(std::memory_order_acquire) == Phase::kMeasure;
  }
  bool AllIdle() const {
    return std::none_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->busy; });
  }

  void Connect(RedisConn* conn) {
    conn->reconnect_at = Clock::now() + kReconnectDelay;
    redisAsyncContext* ac = redisAsyncConnect(config_.host.c_str(), config_.port);
    if (ac == nullptr) return;
    if (ac->err != 0) {
      if (Measuring()) conn->slots.front()->stats.AddError("CONNECT_FAILED", 1);
      redisAsyncFree(ac);
      return;
    }
    conn->ac = ac;
    conn->fd = ac->c.fd;
    conn->connected = false;
    conn->wanted = conn->registered = 0;
    ac->data = conn;
    ac->ev.data = conn;
    ac->ev.addRead = [](void* p) { Want(p, EPOLLIN, true); };
    ac->ev.delRead = [](void* p) { Want(p, EPOLLIN, false); };
    ac->ev.addWrite = [](void* p) { Want(p, EPOLLOUT, true); };
    ac->ev.delWrite = [](void* p) { Want(p, EPOLLOUT, false); };
    ac->ev.cleanup = [](void* p) {
      static_cast<RedisConn*>(p)->loop->Gone(static_cast<RedisConn*>(p));
    };
    redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* c, int status) {
      RedisConn* conn = static_cast<RedisConn*>(c->data);
      conn->loop->Connected(conn, status == REDIS_OK);
    });
    redisAsyncSetDisconnectCallback(ac, [](const redisAsyncContext* c, int) {
      static_cast<RedisConn*>(c->data)->connected = false;
    });
  }

  static void Want(void* p, uint32_t event, bool on) {
    RedisConn* conn = static_cast<RedisConn*>(p);
    const uint32_t wanted = on ? (conn->wanted | event) : (conn->wanted & ~event);
    if (wanted == conn->wanted) return;
    conn->wanted = wanted;
    if (!conn->dirty) {
      conn->dirty = true;
      conn->loop->dirty_.push_back(conn);
    }
  }

  // Before waiting: a connection with something to send sends it now (most
  // often every byte goes and hiredis drops its write interest, so epoll never
  // hears of it); then epoll learns the interests that changed.
  void FlushDirty() {
    for (size_t i = 0; i < dirty_.size(); ++i) {  // may grow while we flush
      RedisConn* conn = dirty_[i];
      if (conn->ac != nullptr && conn->connected && (conn->wanted & EPOLLOUT)) {
        redisAsyncHandleWrite(conn->ac);
      }
    }
    for (RedisConn* conn : dirty_) {
      conn->dirty = false;
      if (conn->ac == nullptr || conn->wanted == conn->registered) continue;
      epoll_event ev{};
      ev.events = conn->wanted;
      ev.data.ptr = conn;
      const int op = conn->wanted == 0       ? EPOLL_CTL_DEL
                     : conn->registered == 0 ? EPOLL_CTL_ADD
                                             : EPOLL_CTL_MOD;
      epoll_ctl(epoll_fd_, op, conn->fd, &ev);
      conn->registered = conn->wanted;
    }
    dirty_.clear();
  }

  // hiredis is about to free the context (error, peer closed, or our free).
  void Gone(RedisConn* conn) {
    if (conn->registered != 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    conn->ac = nullptr;
    conn->connected = false;
    conn->fd = -1;
    conn->wanted = conn->registered = 0;
    conn->reconnect_at = Clock::now() + kReconnectDelay;
  }

  void Connected(RedisConn* conn, bool ok) {
    if (!ok) {
      if (Measuring()) conn->slots.front()->stats.AddError("CONNECT_FAILED", 1);
      return;  // hiredis frees the context; Gone() schedules the retry
    }
    conn->connected = true;
    for (RedisSlot* slot : conn->slots) {
      if (!slot->busy && !Stopping()) Issue(slot);
    }
  }

  void Issue(RedisSlot* slot) {
    RedisConn* conn = slot->conn;
    slot->is_read = NextIsRead(config_.workload, slot->rng);
    const uint64_t batch = config_.batch;
    slot->argv.clear();
    slot->argvlen.clear();
    auto arg = [slot](const char* data, size_t size) {
      slot->argv.push_back(data);
      slot->argvlen.push_back(size);
    };
    if (slot->is_read) {
      arg(batch == 1 ? "GET" : "MGET", batch == 1 ? 3 : 4);
    } else {
      arg(batch == 1 ? "SET" : "MSET", batch == 1 ? 3 : 4);
    }
    slot->keys.resize(batch);
    for (std::string& key : slot->keys) {
      FormatKey(keys_.Next(slot->rng), &key);
      arg(key.data(), key.size());
      if (!slot->is_read) arg(value_.data(), value_.size());
    }
    slot->start = Clock::now();
    slot->busy = true;
    if (redisAsyncCommandArgv(conn->ac, &Loop::OnReply, slot, static_cast<int>(slot->argv.size()),
                              slot->argv.data(), slot->argvlen.data()) != REDIS_OK) {
      slot->busy = false;  // the context is going away; the slot restarts on reconnect
      if (Measuring()) slot->stats.AddError("CONNECTION_LOST", batch);
    }
  }

  static void OnReply(redisAsyncContext*, void* r, void* privdata) {
    RedisSlot* slot = static_cast<RedisSlot*>(privdata);
    slot->conn->loop->Complete(slot, static_cast<redisReply*>(r));
  }

  void Complete(RedisSlot* slot, const redisReply* reply) {
    const auto elapsed = Clock::now() - slot->start;
    slot->busy = false;
    const bool measuring = Measuring();
    const uint64_t batch = config_.batch;
    if (reply == nullptr) {  // connection gone; the slot restarts on reconnect
      if (measuring) {
        ++slot->stats.calls;
        slot->stats.AddError("CONNECTION_LOST", batch);
      }
      return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      if (measuring) {
        ++slot->stats.calls;
        slot->stats.AddError(RedisErrorCode(reply), batch);
      }
    } else {
      control_->completed_ops.fetch_add(batch, std::memory_order_relaxed);
      if (measuring) {
        ++slot->stats.calls;
        slot->stats.ops += batch;
        slot->stats.latency.Record(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()));
      }
    }
    if (!Stopping() && slot->conn->ac != nullptr && slot->conn->connected) Issue(slot);
  }

  const BenchConfig& config_;
  const KeyChooser& keys_;
  const std::string& value_;
  RunControl* const control_;
  int epoll_fd_ = -1;
  std::vector<std::unique_ptr<RedisConn>> conns_;
  std::vector<std::unique_ptr<RedisSlot>> slots_;
  std::vector<RedisConn*> dirty_;
  bool drained_ = true;
};

RedisTarget::RedisTarget(const BenchConfig& config)
    : config_(config),
      keys_(config.distribution, config.keyspace),
      value_(config.value_size, 'v') {}

RedisTarget::~RedisTarget() {
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

namespace {

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

absl::StatusOr<ContextPtr> BlockingConnect(const BenchConfig& config) {
  const absl::Duration t = config.connect_timeout;
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(t)),
             static_cast<suseconds_t>(absl::ToInt64Microseconds(t) % 1000000)};
  ContextPtr c(redisConnectWithTimeout(config.host.c_str(), config.port, tv));
  const std::string where = absl::StrCat("redis://", config.host, ":", config.port);
  if (c == nullptr) return absl::ResourceExhaustedError("hiredis: out of memory");
  if (c->err != 0)
    return absl::UnavailableError(absl::StrCat("cannot connect to ", where, ": ", c->errstr));
  // Later replies must not hang forever either.
  const absl::Duration call = config.call_timeout;
  timeval ctv{static_cast<time_t>(absl::ToInt64Seconds(call)),
              static_cast<suseconds_t>(absl::ToInt64Microseconds(call) % 1000000)};
  redisSetTimeout(c.get(), ctv);
  return c;
}

}  // namespace

absl::Status RedisTarget::Connect() {
  absl::StatusOr<ContextPtr> c = BlockingConnect(config_);
  if (!c.ok()) return c.status();
  ReplyPtr reply(static_cast<redisReply*>(redisCommand(c->get(), "PING")));
  if (reply == nullptr) {
    return absl::UnavailableError(absl::StrCat("PING: ", (*c)->errstr));
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    return absl::FailedPreconditionError(
        absl::StrCat("PING: ", std::string(reply->str, reply->len)));
  }
  return absl::OkStatus();
}

absl::Status RedisTarget::Preload() {
  constexpr uint64_t kPreloadBatch = 1000;
  constexpr uint64_t kPipelined = 16;
  absl::StatusOr<ContextPtr> c = BlockingConnect(config_);
  if (!c.ok()) return c.status();
  const uint64_t batches = (config_.keyspace + kPreloadBatch - 1) / kPreloadBatch;
  std::vector<std::string> keys;
  std::vector<const char*> argv;
  std::vector<size_t> argvlen;
  uint64_t pending = 0;
  auto read_reply = [&]() -> absl::Status {
    void* r = nullptr;
    if (redisGetReply(c->get(), &r) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("MSET: ", (*c)->errstr));
    }
    ReplyPtr reply(static_cast<redisReply*>(r));
    --pending;
    if (reply->type == REDIS_REPLY_ERROR) {
      return absl::InternalError(absl::StrCat("MSET: ", std::string(reply->str, reply->len)));
    }
    return absl::OkStatus();
  };
  for (uint64_t b = 0; b < batches; ++b) {
    const uint64_t end = std::min(config_.keyspace, (b + 1) * kPreloadBatch);
    keys.clear();
    for (uint64_t i = b * kPreloadBatch; i < end; ++i) keys.push_back(KeyName(i));
    argv.assign(1, "MSET");
    argvlen.assign(1, 4);
    for (const std::string& k : keys) {
      argv.push_back(k.data());
      argvlen.push_back(k.size());
      argv.push_back(value_.data());
      argvlen.push_back(value_.size());
    }
    // Formats (copies) the command into the context's output buffer.
    if (redisAppendCommandArgv(c->get(), static_cast<int>(argv.size()), argv.data(),
                               argvlen.data()) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("MSET: ", (*c)->errstr));
    }
    if (++pending == kPipelined) {
      if (absl::Status s = read_reply(); !s.ok()) return s;
    }
  }
  while (pending > 0) {
    if (absl::Status s = read_reply(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void RedisTarget::Start(RunControl* control) {
  const uint64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t loops = std::min<uint64_t>(config_.channels, cores);
  for (uint64_t i = 0; i < loops; ++i) {
    loops_.push_back(std::make_unique<Loop>(config_, keys_, value_, control));
  }
  std::vector<RedisConn*> conns;
  for (uint64_t i = 0; i < config_.channels; ++i) {
    conns.push_back(loops_[i % loops]->AddConnection());
  }
  for (uint64_t i = 0; i < config_.concurrency; ++i) {
    auto slot = std::make_unique<RedisSlot>();
    slot->rng.seed(config_.seed * 1'000'003 + i);
    slot->conn = conns[i % conns.size()];
    slot->conn->slots.push_back(slot.get());
    loops_[(i % conns.size()) % loops]->AddSlot(std::move(slot));
  }
  for (auto& loop : loops_) threads_.emplace_back([l = loop.get()] { l->Run(); });
}

bool RedisTarget::Drain(absl::Duration) {
  // Each loop bounds its own drain (call_timeout + 1 s) once it sees kStop.
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  return std::all_of(loops_.begin(), loops_.end(), [](const auto& l) { return l->drained(); });
}

SlotStats RedisTarget::Collect() {
  SlotStats total;
  for (const auto& loop : loops_) loop->CollectInto(&total);
  return total;
}

}  // namespace kvstore::bench
