#include "tools/kvfault/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
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

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

}  // namespace

std::string Node::log_path() const { return log_path(starts); }
std::string Node::log_path(int start) const {
  return absl::StrCat(dir_, "/", name_, "-", start, ".log");
}

absl::StatusOr<v1::StatusResponse> FetchStatus(const std::shared_ptr<grpc::Channel>& channel,
                                               absl::Duration timeout) {
  auto stub = v1::Admin::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::StatusResponse response;
  grpc::Status s = stub->Status(&context, v1::StatusRequest(), &response);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("Admin.Status: ", Describe(s)));
  return response;
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  for (int i = 0; i <= options_.replicas; ++i) {
    const std::string name = absl::StrCat(options_.node_prefix, "n", i);
    nodes_.push_back(std::make_unique<Node>(name, absl::StrCat(options_.run_dir, "/nodes/", name)));
    nodes_.back()->binary = i == 0 ? "kv-shard" : "kv-replica";
  }
  for (int i = 1; i <= options_.replicas; ++i) {
    nodes_[0]->followers.push_back(absl::StrCat(options_.node_prefix, "n", i));
  }
  if (options_.etcd) {
    // Every node starts as a follower; the election picks the leader.
    nodes_[0]->binary = "kv-replica";
    nodes_[0]->followers.clear();
  }
}

Cluster::~Cluster() {
  stop_watch_.store(true);
  if (watcher_.joinable()) watcher_.join();
  for (auto& node : nodes_) {
    if (node->state == NodeState::kDown || node->pid <= 0) continue;
    kill(node->pid, SIGKILL);
    (void)WaitExit(node->pid, absl::Now() + absl::Seconds(10));
  }
  if (etcd_pid_ > 0) {
    // etcd last, and gently: SIGTERM, SIGKILL after 5 s. Its data is under
    // the run directory, removed with it.
    kill(etcd_pid_, SIGTERM);
    if (!WaitExit(etcd_pid_, absl::Now() + absl::Seconds(5)).ok()) {
      kill(etcd_pid_, SIGKILL);
      (void)WaitExit(etcd_pid_, absl::Now() + absl::Seconds(10));
    }
    ForgetPid(etcd_pid_);
  }
}

namespace {

// Binds a TCP socket to 127.0.0.1:port (0: any) and returns the bound port,
// closing the socket again; 0 when the port is taken.
int TryBind(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(addr);
  int bound = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    bound = ntohs(addr.sin_port);
  }
  close(fd);
  return bound;
}

// A port on 127.0.0.1 nobody listened on a moment ago (0 on failure), for a
// process that binds it a little later (etcd takes its ports as flags). Taken
// below the kernel's ephemeral range when it can be: a port bind(0) hands out
// is one the kernel may give the next outgoing connection meanwhile, which is
// how etcd once found its port taken (a soak run that never started).
int PickFreePort() {
  int ephemeral_low = 32768;
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  range >> ephemeral_low;
  if (ephemeral_low > 12000) {
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(10000, ephemeral_low - 1);
    for (int attempt = 0; attempt < 64; ++attempt) {
      if (const int port = TryBind(pick(rng)); port != 0) return port;
    }
  }
  return TryBind(0);
}

}  // namespace

absl::Status Cluster::StartEtcd() {
  const std::string dir = options_.run_dir + "/etcd";
  std::filesystem::create_directories(dir);
  const int client = PickFreePort();
  int peer = PickFreePort();
  while (peer == client) peer = PickFreePort();
  if (client == 0 || peer == 0) return absl::UnavailableError("no free port for etcd");
  const std::string client_url = absl::StrCat("http://127.0.0.1:", client);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
  const std::vector<std::string> argv = {options_.etcd_binary,
                                         "--name=kvfault",
                                         absl::StrCat("--data-dir=", dir, "/data"),
                                         absl::StrCat("--listen-client-urls=", client_url),
                                         absl::StrCat("--advertise-client-urls=", client_url),
                                         absl::StrCat("--listen-peer-urls=", peer_url),
                                         absl::StrCat("--initial-advertise-peer-urls=", peer_url),
                                         absl::StrCat("--initial-cluster=kvfault=", peer_url),
                                         "--initial-cluster-state=new",
                                         "--logger=zap",
                                         "--log-outputs=stderr",
                                         "--log-level=warn"};
  std::ofstream(dir + "/command") << ShellQuote(argv) << "\n";
  absl::StatusOr<pid_t> pid = Spawn(argv, dir + "/etcd.log");
  if (!pid.ok()) return pid.status();
  RememberPid(*pid);
  etcd_pid_ = *pid;
  etcd_endpoint_ = absl::StrCat("127.0.0.1:", client);
  // Whether it answers is polled by InitEtcdCluster, which also notices an
  // etcd that exited (a port taken meanwhile: the run is a set-up error).
  return absl::OkStatus();
}

absl::Status Cluster::InitEtcd(const std::vector<Cluster*>& groups, absl::Time deadline) {
  if (etcd_pid_ <= 0) return absl::FailedPreconditionError("InitEtcd: this group runs no etcd");
  // The topology kvctl cluster init reads: each shard and its nodes' addresses.
  const std::string topology = options_.run_dir + "/etcd/topology.yaml";
  {
    std::ofstream out(topology);
    out << "vnodes: 16\nshards:\n";
    for (const Cluster* g : groups) {
      out << "  - name: " << g->options_.shard << "\n    leader: " << g->nodes_[0]->address
          << "\n    replicas: [";
      for (size_t i = 1; i < g->nodes_.size(); ++i) {
        out << (i > 1 ? ", " : "") << g->nodes_[i]->address;
      }
      out << "]\n";
    }
  }
  const std::vector<std::string> argv = {absl::StrCat(options_.bin_dir, "/kvctl"),
                                         absl::StrCat("--etcd=", etcd_endpoint_),
                                         "--timeout_ms=3000",
                                         "cluster",
                                         "init",
                                         absl::StrCat("--config=", topology)};
  std::string last;
  while (true) {
    absl::StatusOr<ExitStatus> exit = WaitExit(etcd_pid_, absl::InfinitePast());
    if (exit.ok()) {
      ForgetPid(etcd_pid_);
      etcd_pid_ = -1;
      return absl::UnavailableError(absl::StrCat("etcd exited at start (", exit->ToString(), "): ",
                                                 Tail(options_.run_dir + "/etcd/etcd.log", 1500)));
    }
    absl::StatusOr<CommandResult> r =
        RunCommand(argv, options_.run_dir + "/etcd/init.log", absl::Seconds(10));
    if (r.ok() && r->status.exited && (r->status.code == 0 || r->status.code == 3)) {
      return absl::OkStatus();
    }
    last = r.ok() ? absl::StrCat(r->status.ToString(), ": ", r->output)
                  : std::string(r.status().message());
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(ShellQuote(argv), ": ", last));
    }
    absl::SleepFor(absl::Milliseconds(200));  // etcd still starting: poll with a deadline.
  }
}

std::string Cluster::FindElectedLeader(const std::map<std::string, std::string>& addresses,
                                       uint64_t* epoch) {
  std::string best;
  *epoch = 0;
  for (const auto& [name, address] : addresses) {
    absl::StatusOr<v1::StatusResponse> st = FetchStatus(Channel(address), absl::Milliseconds(300));
    if (!st.ok() || st->role() != "leader" || !st->ready()) continue;
    if (best.empty() || st->epoch() > *epoch) {
      best = name;
      *epoch = st->epoch();
    }
  }
  return best;
}

void Cluster::WatchLeader(std::map<std::string, std::string> addresses) {
  while (!stop_watch_.load()) {
    uint64_t epoch = 0;
    const std::string name = FindElectedLeader(addresses, &epoch);
    if (!name.empty()) {
      absl::MutexLock l(&mu_);
      if (leader_ != name) {
        leader_ = name;
        leader_address_ = addresses[name];
      }
      if (clock_ != nullptr) epochs_seen_.try_emplace(epoch, EpochSeen{name, clock_->NowNs()});
    }
    absl::SleepFor(absl::Milliseconds(100));  // The poll's period.
  }
}

Node* Cluster::Find(const std::string& name) {
  for (auto& node : nodes_) {
    if (node->name() == name) return node.get();
  }
  return nullptr;
}

std::vector<Node*> Cluster::nodes() {
  std::vector<Node*> out;
  for (auto& node : nodes_) out.push_back(node.get());
  return out;
}

std::string Cluster::leader() const {
  absl::MutexLock l(&mu_);
  return leader_;
}

std::string Cluster::leader_address() const {
  absl::MutexLock l(&mu_);
  return leader_address_;
}

std::pair<std::string, std::string> Cluster::leader_route() const {
  absl::MutexLock l(&mu_);
  return {leader_, leader_address_};
}

std::map<uint64_t, Cluster::EpochSeen> Cluster::epochs_seen() const {
  absl::MutexLock l(&mu_);
  return epochs_seen_;
}

std::shared_ptr<grpc::Channel> Cluster::Channel(const std::string& address) {
  absl::MutexLock l(&channels_mu_);
  auto& channel = channels_[address];
  if (channel == nullptr) {
    grpc::ChannelArguments args;
    // Reconnect quickly after a restart: the default backoff grows to 120 s.
    // (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is also the connect timeout: left
    // at its default, because a short one cuts handshakes on a busy machine.)
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 300);
    // Own subchannels, so a channel made after a restart (StartNode drops the
    // old one) does not inherit a shared subchannel's backoff.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  return channel;
}

std::vector<std::string> Cluster::CommandLine(const Node& node) const {
  // The first start binds port 0 on the node's host: its namespace address
  // in a netns run (netns.h).
  const std::string first =
      options_.netns != nullptr ? options_.netns->Address(node.name()) + ":0" : "127.0.0.1:0";
  std::vector<std::string> argv = {
      absl::StrCat(options_.bin_dir, "/", node.binary),
      absl::StrCat("--listen=", node.address.empty() ? first : node.address),
      absl::StrCat("--data-dir=", node.data_dir()),
      absl::StrCat("--port-file=", node.port_file()),
      "--logtostderr",
  };
  if (options_.etcd) {
    std::string etcd = etcd_endpoint_;
    if (options_.network != nullptr) {
      absl::StatusOr<std::string> route = options_.network->Route(node.name(), "etcd", etcd);
      if (route.ok()) {
        etcd = *route;
      } else {
        route_error_ = route.status();
      }
    }
    argv.push_back(absl::StrCat("--etcd-endpoints=", etcd));
    argv.push_back(absl::StrCat("--node-id=", node.name()));
    argv.push_back(absl::StrCat("--shard=", options_.shard));
    argv.push_back(absl::StrCat("--lease-ttl=", options_.lease_ttl));
  } else if (node.binary == "kv-shard" && !node.followers.empty()) {
    std::vector<std::string> addresses;
    for (const std::string& f : node.followers) {
      for (const auto& n : nodes_) {
        if (n->name() == f) addresses.push_back(PeerAddress(node.name(), *n));
      }
    }
    argv.push_back(absl::StrCat("--followers=", absl::StrJoin(addresses, ",")));
  }
  argv.insert(argv.end(), options_.server_flags.begin(), options_.server_flags.end());
  argv.insert(argv.end(), node.next_start_flags.begin(), node.next_start_flags.end());
  // In its namespace (netns.h): `ip netns exec` execs the server in place, so
  // the pid and PR_SET_PDEATHSIG are the server's.
  if (options_.netns != nullptr) return options_.netns->Wrap(node.name(), argv);
  return argv;
}

std::string Cluster::PeerAddress(const std::string& from, const Node& to) const {
  // In etcd mode a leader dials the address each member advertises in etcd.
  if (options_.network == nullptr || options_.etcd) return to.address;
  absl::StatusOr<std::string> route = options_.network->Route(from, to.name(), to.address);
  if (!route.ok()) {
    route_error_ = route.status();
    return to.address;
  }
  return *route;
}

absl::StatusOr<std::string> Cluster::ClientAddress(const Node& node) {
  if (options_.network == nullptr || options_.etcd) return node.address;
  return options_.network->Route("client", node.name(), node.address);
}

void Cluster::SetLeader(const Node& node) {
  absl::StatusOr<std::string> address = ClientAddress(node);
  if (!address.ok()) {
    route_error_ = address.status();
    address = node.address;
  }
  absl::MutexLock l(&mu_);
  leader_ = node.name();
  leader_address_ = *address;
}

absl::StatusOr<std::string> Cluster::AwaitBound(Node* node, absl::Time deadline) {
  while (true) {
    absl::StatusOr<ExitStatus> exit = WaitExit(node->pid, absl::InfinitePast());
    if (exit.ok()) {
      node->state = NodeState::kDown;
      return absl::UnavailableError(absl::StrCat("exited before serving: ", exit->ToString()));
    }
    const std::string content = ReadFile(node->port_file());
    if (!content.empty() && content.back() == '\n') {
      std::string address(absl::StripSuffix(content, "\n"));
      // A fresh channel: the shared one may still be in its reconnect backoff.
      absl::StatusOr<v1::StatusResponse> status = FetchStatus(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), absl::Seconds(1));
      if (status.ok()) return address;
    }
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("not serving in time");
    absl::SleepFor(absl::Milliseconds(10));  // Polling with a deadline.
  }
}

absl::StatusOr<std::vector<std::string>> Cluster::Environment(const Node& node) const {
  if (!node.preload) return node.extra_env;
  if (!node.extra_env.empty()) {
    return absl::FailedPreconditionError("a node runs under the preload or libfaketime, not both");
  }
  const std::string lib = options_.bin_dir + "/libkvfault_preload.so";
  if (!std::filesystem::exists(lib)) {
    return absl::FailedPreconditionError(
        absl::StrCat(lib, " is missing (it is built with the tests: --target kvfault_preload)"));
  }
  const char* asan = std::getenv("ASAN_OPTIONS");
  return std::vector<std::string>{
      absl::StrCat("LD_PRELOAD=", lib), absl::StrCat("KVFAULT_PRELOAD_DIR=", node.data_dir()),
      absl::StrCat("KVFAULT_PRELOAD_JOURNAL=", node.journal_path()),
      // An ASan build wants its runtime first; the preload has none.
      absl::StrCat("ASAN_OPTIONS=", asan ? asan : "", asan && *asan ? ":" : "",
                   "verify_asan_link_order=0")};
}

absl::StatusOr<std::string> Cluster::StartRefused(Node* node, std::vector<std::string>* command) {
  if (node->state != NodeState::kDown) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " is not down"));
  }
  std::error_code ec;
  std::filesystem::remove(node->port_file(), ec);
  ++node->starts;
  *command = CommandLine(*node);
  absl::StatusOr<std::vector<std::string>> env = Environment(*node);
  if (!env.ok()) return env.status();
  absl::StatusOr<pid_t> pid = Spawn(*command, node->log_path(), *env);
  if (!pid.ok()) return pid.status();
  node->pid = *pid;
  node->state = NodeState::kRunning;
  absl::StatusOr<std::string> address = AwaitBound(node, absl::Now() + options_.start_timeout);
  if (address.ok()) {
    (void)Signal(node, SIGKILL);
    return absl::FailedPreconditionError(
        absl::StrCat(node->name(), " started and served on ", *address,
                     " although it should have refused; its log: ", node->log_path()));
  }
  if (node->state == NodeState::kRunning) {  // Neither served nor exited.
    (void)Signal(node, SIGKILL);
    return absl::DeadlineExceededError(
        absl::StrCat(node->name(), " neither served nor exited: ", address.status().message()));
  }
  node->pid = -1;
  return ReadFile(node->log_path());
}

absl::StatusOr<std::string> Cluster::Repair(Node* node, std::vector<std::string>* command) {
  if (node->state != NodeState::kDown) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " is not down"));
  }
  *command = {absl::StrCat(options_.bin_dir, "/", node->binary),
              absl::StrCat("--data-dir=", node->data_dir()), "--repair", "--logtostderr"};
  absl::StatusOr<CommandResult> r =
      RunCommand(*command, absl::StrCat(node->dir(), "/repair.log"), absl::Seconds(30));
  if (!r.ok()) return r.status();
  if (!r->status.exited || r->status.code != 0) {
    return absl::InternalError(
        absl::StrCat(ShellQuote(*command), ": ", r->status.ToString(), ": ", r->output));
  }
  return r->output;
}

absl::StatusOr<std::vector<std::string>> Cluster::StartNode(Node* node) {
  if (node->state != NodeState::kDown) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " is not down"));
  }
  const absl::Time deadline = absl::Now() + options_.start_timeout;
  std::filesystem::create_directories(node->data_dir());
  absl::Status last;
  while (true) {
    std::error_code ec;
    std::filesystem::remove(node->port_file(), ec);  // A stale one names the old port.
    ++node->starts;
    const std::vector<std::string> argv = CommandLine(*node);
    absl::StatusOr<std::vector<std::string>> env_or = Environment(*node);
    if (!env_or.ok()) return env_or.status();
    const std::vector<std::string>& env = *env_or;
    absl::StatusOr<pid_t> pid = Spawn(argv, node->log_path(), env);
    if (!pid.ok()) return pid.status();
    node->pid = *pid;
    node->state = NodeState::kRunning;
    absl::StatusOr<std::string> address = AwaitBound(node, deadline);
    std::vector<std::string> logged;
    if (!env.empty()) {
      logged.push_back("env");
      logged.insert(logged.end(), env.begin(), env.end() - 1);  // ASAN_OPTIONS: not needed by hand.
    }
    logged.insert(logged.end(), argv.begin(), argv.end());
    if (address.ok()) {
      node->next_start_flags.clear();
      node->address = *address;
      {
        // The cached channel may sit in a reconnect backoff from the outage.
        absl::MutexLock l(&channels_mu_);
        channels_.erase(node->address);
      }
      if (node->binary == "kv-shard") SetLeader(*node);
      if (!route_error_.ok()) return route_error_;
      return logged;
    }
    last = absl::Status(
        address.status().code(),
        absl::StrCat(ShellQuote(argv), ": ", address.status().message(), "\n--- tail of ",
                     node->log_path(), ":\n", Tail(node->log_path(), 1500)));
    if (node->state == NodeState::kRunning) {  // Hung: give up on it.
      (void)Signal(node, SIGKILL);
      return last;
    }
    // Exited early, typically because the old port is still held: retry.
    if (absl::Now() >= deadline) return last;
    absl::SleepFor(absl::Milliseconds(100));  // Backoff between start attempts.
  }
}

absl::Status Cluster::StartNodes() {
  if (options_.shared_etcd.empty()) {
    if (absl::Status s = StartEtcd(); !s.ok()) return s;
  } else {
    etcd_endpoint_ = options_.shared_etcd;
  }
  for (auto& node : nodes_) {
    absl::StatusOr<std::vector<std::string>> argv = StartNode(node.get());
    if (!argv.ok()) return argv.status();
  }
  return absl::OkStatus();
}

absl::Status Cluster::AwaitElected(absl::Time deadline) {
  std::map<std::string, std::string> addresses;
  for (auto& node : nodes_) addresses[node->name()] = node->address;
  while (true) {
    uint64_t epoch = 0;
    const std::string name = FindElectedLeader(addresses, &epoch);
    if (!name.empty()) {
      absl::MutexLock l(&mu_);
      leader_ = name;
      leader_address_ = addresses[name];
      if (clock_ != nullptr) epochs_seen_.try_emplace(epoch, EpochSeen{name, clock_->NowNs()});
      break;
    }
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("no leader elected in time");
    absl::SleepFor(absl::Milliseconds(100));  // Polling with a deadline.
  }
  watcher_ = std::thread([this, addresses] { WatchLeader(addresses); });
  return AwaitHealed(deadline + absl::Seconds(10));
}

absl::Status Cluster::Start() {
  if (options_.etcd) {
    const absl::Time deadline = absl::Now() + options_.start_timeout;
    if (absl::Status s = StartNodes(); !s.ok()) return s;
    if (absl::Status s = InitEtcd({this}, deadline); !s.ok()) return s;
    return AwaitElected(deadline);
  }
  for (size_t i = 1; i < nodes_.size(); ++i) {
    absl::StatusOr<std::vector<std::string>> argv = StartNode(nodes_[i].get());
    if (!argv.ok()) return argv.status();
  }
  absl::StatusOr<std::vector<std::string>> argv = StartNode(nodes_[0].get());
  if (!argv.ok()) return argv.status();
  // Replication must be streaming before the load, so the first writes do
  // not depend on how fast the first connection is.
  const absl::Time deadline = absl::Now() + options_.start_timeout;
  return AwaitHealed(deadline);
}

absl::Status Cluster::Signal(Node* node, int sig) {
  if (node->state == NodeState::kDown || node->pid <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " is not running"));
  }
  if (kill(node->pid, sig) != 0) {
    return absl::InternalError(absl::StrCat("kill -", sig, " ", node->pid, " failed"));
  }
  if (sig == SIGKILL) {
    absl::StatusOr<ExitStatus> exit = WaitExit(node->pid, absl::Now() + absl::Seconds(10));
    if (!exit.ok()) return exit.status();
    node->state = NodeState::kDown;
    node->pid = -1;
  } else if (sig == SIGSTOP) {
    node->state = NodeState::kPaused;
  } else if (sig == SIGCONT) {
    node->state = NodeState::kRunning;
  }
  return absl::OkStatus();
}

absl::Status Cluster::WipeData(Node* node) {
  if (node->state != NodeState::kDown) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " still runs"));
  }
  std::error_code ec;
  std::filesystem::remove_all(node->data_dir(), ec);
  if (ec) return absl::InternalError(absl::StrCat("rm -rf ", node->data_dir(), ": ", ec.message()));
  RemoveJournal(node->journal_path());
  return absl::OkStatus();
}

absl::StatusOr<PowerLossReport> Cluster::CutPower(Node* node, Tear tear, uint64_t seed,
                                                  std::vector<std::string>* command) {
  static const char* const kTearNames[] = {"none", "prefix", "zero-sector"};
  *command = {absl::StrCat(options_.bin_dir, "/kvfault"),
              "powerloss",
              node->data_dir(),
              "--journal",
              node->journal_path(),
              absl::StrCat("--tear=", kTearNames[static_cast<int>(tear)]),
              "--seed",
              absl::StrCat(seed)};
  if (!node->preload) {
    return absl::FailedPreconditionError(
        absl::StrCat(node->name(), " does not run under the preload (scenario field preload)"));
  }
  if (node->state != NodeState::kDown) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " still runs"));
  }
  PowerLossOptions o;
  o.dir = node->data_dir();
  o.journal = node->journal_path();
  o.tear = tear;
  o.seed = seed;
  absl::StatusOr<PowerLossReport> r = PowerLoss(o);
  if (r.ok()) {
    // The cut's details, for whoever reads the run directory.
    std::ofstream log(absl::StrCat(node->dir(), "/powerloss.log"), std::ios::app);
    log << ShellQuote(*command) << "\n";
    for (const std::string& a : r->actions) log << "  " << a << "\n";
    log << "  " << r->Summary() << "\n";
    if (!r->unrestorable.empty()) {
      return absl::InternalError(
          absl::StrCat("the cut could not restore ", absl::StrJoin(r->unrestorable, ", ")));
    }
  }
  return r;
}

absl::StatusOr<std::vector<std::string>> Cluster::PromoteCommand(
    Node* node, const std::vector<std::string>& followers, bool force) {
  std::vector<std::string> addresses;
  for (const std::string& f : followers) {
    Node* n = Find(f);
    if (n == nullptr || n->address.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("promote: unknown follower ", f));
    }
    addresses.push_back(PeerAddress(node->name(), *n));
  }
  if (!route_error_.ok()) return route_error_;
  std::vector<std::string> argv = {absl::StrCat(options_.bin_dir, "/kvctl"),
                                   absl::StrCat("--addr=", node->address)};
  if (!addresses.empty())
    argv.push_back(absl::StrCat("--followers=", absl::StrJoin(addresses, ",")));
  if (force) argv.push_back("--force");
  argv.push_back("promote");
  return argv;
}

void Cluster::ApplyPromotion(Node* node, const std::vector<std::string>& followers) {
  node->binary = "kv-shard";  // A restart of it now leads (its data dir says so).
  node->followers = followers;
  for (auto& n : nodes_) {
    if (n.get() != node) {
      if (n->binary == "kv-shard") n->binary = "kv-replica";
      n->followers.clear();
    }
  }
  SetLeader(*node);
}

absl::StatusOr<std::string> Cluster::Promote(Node* node, const std::vector<std::string>& followers,
                                             bool force, std::vector<std::string>* command) {
  absl::StatusOr<std::vector<std::string>> argv = PromoteCommand(node, followers, force);
  if (!argv.ok()) return argv.status();
  *command = *argv;
  absl::StatusOr<CommandResult> r =
      RunCommand(*argv, absl::StrCat(options_.run_dir, "/kvctl.log"), absl::Seconds(20));
  if (!r.ok()) return r.status();
  if (!r->status.exited || r->status.code != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(ShellQuote(*argv), ": ", r->status.ToString(), ": ", r->output));
  }
  ApplyPromotion(node, followers);
  return r->output;
}

absl::Status Cluster::PromoteAtOnce(std::vector<PromoteAttempt>* attempts, bool force) {
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (size_t i = 0; i < attempts->size(); ++i) {
    PromoteAttempt& a = (*attempts)[i];
    absl::StatusOr<std::vector<std::string>> argv = PromoteCommand(a.node, a.followers, force);
    if (!argv.ok()) return argv.status();
    a.command = *argv;
    logs.push_back(absl::StrCat(options_.run_dir, "/kvctl-race-", a.node->name(), "-",
                                force ? "force" : "plain", ".log"));
    std::error_code ec;
    std::filesystem::remove(logs.back(), ec);
  }
  // Every process is started before any is waited for: the race.
  for (size_t i = 0; i < attempts->size(); ++i) {
    absl::StatusOr<pid_t> pid = Spawn((*attempts)[i].command, logs[i]);
    if (!pid.ok()) {
      for (pid_t p : pids) {
        kill(p, SIGKILL);
        (void)WaitExit(p, absl::Now() + absl::Seconds(10));
      }
      return pid.status();
    }
    pids.push_back(*pid);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (size_t i = 0; i < attempts->size(); ++i) {
    PromoteAttempt& a = (*attempts)[i];
    absl::StatusOr<ExitStatus> exit = WaitExit(pids[i], deadline);
    if (!exit.ok()) {
      kill(pids[i], SIGKILL);
      (void)WaitExit(pids[i], absl::Now() + absl::Seconds(10));
    }
    const std::string output = ReadFile(logs[i]);
    if (!exit.ok() || !exit->exited || exit->code != 0) {
      a.result = absl::FailedPreconditionError(absl::StrCat(
          ShellQuote(a.command), ": ",
          exit.ok() ? exit->ToString() : std::string(exit.status().message()), ": ", output));
      continue;
    }
    a.result = output;
    const size_t at = output.find("epoch=");
    if (at != std::string::npos) {
      size_t end = at + 6;
      while (end < output.size() && std::isdigit(static_cast<unsigned char>(output[end]))) ++end;
      (void)absl::SimpleAtoi(output.substr(at + 6, end - at - 6), &a.epoch);
    }
  }
  PromoteAttempt* chosen = nullptr;
  for (PromoteAttempt& a : *attempts) {
    if (a.result.ok() && (chosen == nullptr || a.epoch > chosen->epoch)) chosen = &a;
  }
  if (chosen != nullptr) ApplyPromotion(chosen->node, chosen->followers);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Cluster::LastIndex(const Node& node) {
  absl::StatusOr<v1::StatusResponse> s = FetchStatus(Channel(node.address), absl::Seconds(2));
  if (!s.ok()) return s.status();
  return s->last_index();
}

absl::Status Cluster::AwaitHealed(absl::Time deadline) {
  std::string why = "not asked yet";
  while (true) {
    why.clear();
    Node* leader = Find(this->leader());
    absl::StatusOr<v1::StatusResponse> ls = FetchStatus(Channel(leader->address), absl::Seconds(2));
    if (!ls.ok()) {
      why = absl::StrCat("leader ", leader->name(), ": ", ls.status().message());
    } else {
      // The leader must answer a leader read (it may still be starting its epoch).
      auto kv = v1::KeyValue::NewStub(Channel(leader->address));
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
      v1::GetRequest get;
      get.set_key("kvfault-probe");
      v1::GetResponse answer;
      grpc::Status g = kv->Get(&context, get, &answer);
      // With several shards the probe key may be another shard's: refusing it
      // by the ring is an answer too (ownership_gate.h).
      const bool other_shard = !options_.node_prefix.empty() &&
                               g.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
                               absl::StrContains(g.error_message(), "wrong shard");
      if (!g.ok() && !other_shard) {
        why = absl::StrCat("leader ", leader->name(), " read: ", Describe(g));
      }
      std::vector<std::string> followers = leader->followers;
      if (options_.etcd) {  // The followers are the shard's other members.
        followers.clear();
        for (auto& n : nodes_) {
          if (n.get() != leader) followers.push_back(n->name());
        }
      }
      for (const std::string& f : followers) {
        if (!why.empty()) break;
        Node* node = Find(f);
        if (node->state != NodeState::kRunning) continue;  // Retired by the scenario.
        const v1::FollowerStatus* fs = nullptr;
        const std::string address = PeerAddress(leader->name(), *node);
        for (const auto& x : ls->followers()) {
          if (x.address() == address) fs = &x;
        }
        if (fs == nullptr || fs->state() != "streaming" || fs->acked_index() < ls->last_index()) {
          why = absl::StrCat("follower ", f, " at ", fs ? fs->acked_index() : 0, " (",
                             fs ? fs->state() : "not listed", "), leader at ", ls->last_index());
          break;
        }
        absl::StatusOr<v1::StatusResponse> rs =
            FetchStatus(Channel(node->address), absl::Seconds(2));
        if (!rs.ok() || rs->last_index() < ls->last_index()) {
          why = absl::StrCat("replica ", f, " not caught up: ",
                             rs.ok() ? absl::StrCat("last_index ", rs->last_index())
                                     : std::string(rs.status().message()));
        }
      }
    }
    if (why.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) return absl::DeadlineExceededError(why);
    absl::SleepFor(absl::Milliseconds(50));  // Polling with a deadline.
  }
}

std::string Cluster::LogTails(size_t bytes) {
  std::string out;
  for (auto& node : nodes_) {
    if (node->starts == 0) continue;
    absl::StrAppend(&out, "--- tail of ", node->log_path(), ":\n", Tail(node->log_path(), bytes),
                    "\n");
  }
  return out;
}

absl::Status Cluster::StopAll(absl::Time deadline) {
  std::vector<std::string> problems;
  std::vector<Node*> stopping;
  for (auto& node : nodes_) {
    if (node->state == NodeState::kDown || node->pid <= 0) continue;
    if (node->state == NodeState::kPaused) kill(node->pid, SIGCONT);
    if (kill(node->pid, SIGTERM) != 0) {
      problems.push_back(absl::StrCat(node->name(), ": kill -TERM ", node->pid, " failed"));
      continue;
    }
    stopping.push_back(node.get());
  }
  for (Node* node : stopping) {
    absl::StatusOr<ExitStatus> exit = WaitExit(node->pid, deadline);
    if (!exit.ok()) {
      problems.push_back(absl::StrCat(node->name(), " still ran at the deadline after SIGTERM (",
                                      exit.status().message(), "); SIGKILL"));
      (void)Signal(node, SIGKILL);
      continue;
    }
    node->state = NodeState::kDown;
    node->pid = -1;
    if (!exit->exited || exit->code != 0) {
      problems.push_back(absl::StrCat(node->name(), " did not stop cleanly on SIGTERM: ",
                                      exit->ToString(), " (see ", node->log_path(), ")"));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrJoin(problems, "; "));
}

std::vector<std::string> Cluster::SanitizerReports() const {
  // The first line of each kind of report; the rest of it follows in the log.
  static constexpr const char* kMarkers[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                             ": runtime error: "};
  std::vector<std::string> reports;
  for (const auto& node : nodes_) {
    for (int start = 1; start <= node->starts; ++start) {
      std::ifstream in(node->log_path(start));
      std::string line;
      while (std::getline(in, line)) {
        for (const char* marker : kMarkers) {
          if (line.find(marker) != std::string::npos) {
            reports.push_back(absl::StrCat(node->log_path(start), ": ", line));
            break;
          }
        }
      }
    }
  }
  return reports;
}

}  // namespace kvstore::fault
