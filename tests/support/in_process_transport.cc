#include "tests/support/in_process_transport.h"

#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/replication/follower_session.h"

namespace kvstore::testing {

// Two queues, one each way, closed by either end.
class InProcessTransport::Pipe {
 public:
  explicit Pipe(bool held) : held_(held) {}

  void Close() {
    absl::MutexLock l(&mu_);
    closed_ = true;
  }
  void SetHeld(bool held) {
    absl::MutexLock l(&mu_);
    held_ = held;
  }
  bool closed() const {
    absl::MutexLock l(&mu_);
    return closed_;
  }

  bool SendToFollower(const v1::LeaderMessage& m) {
    absl::MutexLock l(&mu_);
    if (closed_) return false;
    to_follower_.push_back(m);
    return true;
  }
  bool SendToLeader(const v1::FollowerMessage& m) {
    absl::MutexLock l(&mu_);
    if (closed_) return false;
    to_leader_.push_back(m);
    return true;
  }
  bool ReceiveAtFollower(v1::LeaderMessage* m) {
    absl::MutexLock l(&mu_);
    const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || (!held_ && !to_follower_.empty());
    };
    mu_.Await(absl::Condition(&ready));
    if (closed_) return false;
    *m = std::move(to_follower_.front());
    to_follower_.pop_front();
    return true;
  }
  bool ReceiveAtLeader(v1::FollowerMessage* m) {
    absl::MutexLock l(&mu_);
    const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || !to_leader_.empty();
    };
    mu_.Await(absl::Condition(&ready));
    if (!to_leader_.empty()) {  // What was sent before the close is still read.
      *m = std::move(to_leader_.front());
      to_leader_.pop_front();
      return true;
    }
    return false;
  }

 private:
  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool held_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::LeaderMessage> to_follower_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::FollowerMessage> to_leader_ ABSL_GUARDED_BY(mu_);
};

namespace {

class LeaderEnd final : public LeaderStream {
 public:
  LeaderEnd(std::shared_ptr<InProcessTransport::Pipe> pipe, absl::Status broken)
      : pipe_(std::move(pipe)), broken_(std::move(broken)) {}
  bool Write(const v1::LeaderMessage& m) override { return pipe_->SendToFollower(m); }
  bool Read(v1::FollowerMessage* m) override { return pipe_->ReceiveAtLeader(m); }
  void Cancel() override { pipe_->Close(); }
  absl::Status Finish() override {
    pipe_->Close();
    return broken_;
  }

 private:
  std::shared_ptr<InProcessTransport::Pipe> pipe_;
  const absl::Status broken_;
};

class FollowerEnd final : public FollowerStream {
 public:
  explicit FollowerEnd(std::shared_ptr<InProcessTransport::Pipe> pipe) : pipe_(std::move(pipe)) {}
  bool Read(v1::LeaderMessage* m) override { return pipe_->ReceiveAtFollower(m); }
  bool Write(const v1::FollowerMessage& m) override { return pipe_->SendToLeader(m); }
  void Cancel() override { pipe_->Close(); }

 private:
  std::shared_ptr<InProcessTransport::Pipe> pipe_;
};

}  // namespace

InProcessTransport::~InProcessTransport() {
  std::vector<std::thread> sessions;
  {
    absl::MutexLock l(&mu_);
    for (auto& [address, peer] : peers_) {
      for (auto& pipe : peer.pipes) pipe->Close();
      for (auto& t : peer.sessions) sessions.push_back(std::move(t));
    }
    peers_.clear();
  }
  for (std::thread& t : sessions) t.join();
}

void InProcessTransport::Register(const std::string& address, ReplicationNode* node) {
  absl::MutexLock l(&mu_);
  peers_[address].node = node;
}

void InProcessTransport::Unregister(const std::string& address) {
  std::vector<std::thread> sessions;
  {
    absl::MutexLock l(&mu_);
    auto it = peers_.find(address);
    if (it == peers_.end()) return;
    for (auto& pipe : it->second.pipes) pipe->Close();
    sessions.swap(it->second.sessions);
    peers_.erase(it);
  }
  for (std::thread& t : sessions) t.join();
}

void InProcessTransport::SetReachable(const std::string& address, bool reachable) {
  absl::MutexLock l(&mu_);
  peers_[address].reachable = reachable;
}

void InProcessTransport::Cut(const std::string& address) {
  absl::MutexLock l(&mu_);
  for (auto& pipe : peers_[address].pipes) pipe->Close();
}

void InProcessTransport::Hold(const std::string& address, bool hold) {
  absl::MutexLock l(&mu_);
  Peer& peer = peers_[address];
  peer.held = hold;
  for (auto& pipe : peer.pipes) pipe->SetHeld(hold);
}

int InProcessTransport::connects(const std::string& address) const {
  absl::MutexLock l(&mu_);
  auto it = peers_.find(address);
  return it == peers_.end() ? 0 : it->second.connects;
}

void InProcessTransport::SetConnectHook(std::function<void(const std::string& address)> hook) {
  absl::MutexLock l(&mu_);
  connect_hook_ = std::move(hook);
}

void InProcessTransport::SetPromiseHook(std::function<void(const std::string& address)> hook) {
  absl::MutexLock l(&mu_);
  promise_hook_ = std::move(hook);
}

std::unique_ptr<LeaderStream> InProcessTransport::Connect(const std::string& address) {
  std::function<void(const std::string&)> hook;
  {
    absl::MutexLock l(&mu_);
    hook = connect_hook_;
  }
  if (hook) hook(address);
  absl::MutexLock l(&mu_);
  Peer& peer = peers_[address];
  auto pipe = std::make_shared<Pipe>(peer.held);
  if (peer.node == nullptr || !peer.reachable) {
    pipe->Close();
    return std::make_unique<LeaderEnd>(
        pipe, absl::UnavailableError(absl::StrCat(address, " is unreachable")));
  }
  ++peer.connects;
  // Forget the streams that ended (their threads are joined later).
  std::vector<std::shared_ptr<Pipe>> open;
  for (auto& p : peer.pipes) {
    if (!p->closed()) open.push_back(p);
  }
  peer.pipes.swap(open);
  peer.pipes.push_back(pipe);
  ReplicationNode* node = peer.node;
  peer.sessions.emplace_back([node, pipe] {
    FollowerEnd end(pipe);
    RunFollowerSession(node, &end).IgnoreError();  // The leader sees the stream end.
    pipe->Close();
  });
  return std::make_unique<LeaderEnd>(pipe, absl::OkStatus());
}

absl::StatusOr<ReplicationNode*> InProcessTransport::ReachableNode(const std::string& address) {
  absl::MutexLock l(&mu_);
  auto it = peers_.find(address);
  if (it == peers_.end() || it->second.node == nullptr || !it->second.reachable) {
    return absl::UnavailableError(absl::StrCat(address, " is unreachable"));
  }
  return it->second.node;
}

absl::StatusOr<v1::Position> InProcessTransport::AskPosition(const std::string& address,
                                                             absl::Duration) {
  absl::StatusOr<ReplicationNode*> node = ReachableNode(address);
  if (!node.ok()) return node.status();
  return LogPosition((*node)->store(), (*node)->epoch());
}

absl::StatusOr<v1::Position> InProcessTransport::Promise(const std::string& address,
                                                         const v1::PromiseRequest& request,
                                                         absl::Duration) {
  std::function<void(const std::string&)> hook;
  {
    absl::MutexLock l(&mu_);
    hook = promise_hook_;
  }
  if (hook) hook(address);
  absl::StatusOr<ReplicationNode*> node = ReachableNode(address);
  if (!node.ok()) return node.status();
  return (*node)->PromiseEpoch(request);
}

}  // namespace kvstore::testing
