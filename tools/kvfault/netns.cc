#include "tools/kvfault/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kvstore::fault {
namespace {

constexpr char kSwitch[] = "sw";
constexpr int kClientHost = 250;

std::string Quoted(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (const std::string& a : argv) {
    out.push_back(a.find_first_of(" ;{}<>\"'") == std::string::npos ? a
                                                                    : absl::StrCat("'", a, "'"));
  }
  return absl::StrJoin(out, " ");
}

}  // namespace

std::string NetnsFaults::ToString() const {
  if (healthy()) return "healthy";
  std::vector<std::string> parts;
  std::vector<std::string> cut;
  for (const auto& [from, to] : blocked) cut.push_back(absl::StrCat(from, "->", to));
  if (!cut.empty()) parts.push_back(absl::StrCat("blocked ", absl::StrJoin(cut, ", ")));
  for (const auto& [node, p] : loss_percent)
    parts.push_back(absl::StrCat("loss ", node, " ", p, "%"));
  return absl::StrJoin(parts, "; ");
}

std::string Netns::NamespaceName(int run, const std::string& member) {
  return absl::StrCat("kvf", run, "-", member == kNetnsClient ? "cl" : member);
}

Netns::Netns(int run, std::vector<std::string> nodes, Runner runner, std::string ip,
             std::string nft)
    : run_(run),
      nodes_(std::move(nodes)),
      runner_(std::move(runner)),
      ip_(std::move(ip)),
      nft_(std::move(nft)) {}

Netns::~Netns() { (void)Teardown(); }

std::vector<NetnsCommand> Netns::SetupCommands(int run, const std::vector<std::string>& nodes,
                                               const std::string& ip) {
  const std::string sw = NamespaceName(run, kSwitch);
  std::vector<NetnsCommand> out;
  auto add = [&](const std::string& member, std::vector<std::string> argv) {
    out.push_back(NetnsCommand{"setup", member, std::move(argv), absl::OkStatus()});
  };
  add(kSwitch, {ip, "netns", "add", sw});
  add(kSwitch, {ip, "-n", sw, "link", "add", "br0", "type", "bridge"});
  add(kSwitch, {ip, "-n", sw, "link", "set", "br0", "up"});
  std::vector<std::pair<std::string, int>> members;
  for (size_t k = 0; k < nodes.size(); ++k) members.emplace_back(nodes[k], static_cast<int>(k) + 1);
  members.emplace_back(kNetnsClient, kClientHost);
  for (const auto& [member, host] : members) {
    const std::string ns = NamespaceName(run, member);
    const std::string veth = absl::StrCat("v-", member);
    add(member, {ip, "netns", "add", ns});
    add(member,
        {ip, "-n", sw, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns});
    add(member, {ip, "-n", sw, "link", "set", veth, "master", "br0"});
    add(member, {ip, "-n", sw, "link", "set", veth, "up"});
    // 127/8 off lo is martian unless route_localnet (connect: EINVAL).
    add(member, {ip, "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"});
    add(member, {ip, "-n", ns, "link", "set", "lo", "up"});
    // Else all of 127/8 is local here and the other nodes unreachable.
    add(member,
        {ip, "-n", ns, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"});
    add(member, {ip, "-n", ns, "addr", "add", absl::StrCat("127.100.", run, ".", host, "/16"),
                 "dev", "eth0"});
    add(member, {ip, "-n", ns, "link", "set", "eth0", "up"});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Netns>> Netns::Create(const std::vector<std::string>& nodes,
                                                     uint64_t hint, Runner runner, std::string ip,
                                                     std::string nft) {
  if (nodes.empty() || nodes.size() >= kClientHost) {
    return absl::InvalidArgumentError("a namespace network needs 1 to 249 nodes");
  }
  for (int attempt = 0; attempt < 254; ++attempt) {
    const int run = static_cast<int>((hint + attempt) % 254) + 1;
    std::vector<NetnsCommand> commands = SetupCommands(run, nodes, ip);
    // The switch's `ip netns add` claims the run number.
    absl::StatusOr<std::string> claim = runner(commands[0].argv);
    commands[0].status = claim.status();
    if (!claim.ok()) {
      if (absl::StrContains(claim.status().message(), "exists")) continue;
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create a network namespace (needs root and `ip netns`): ",
                       Quoted(commands[0].argv), ": ", claim.status().message()));
    }
    std::unique_ptr<Netns> net(new Netns(run, nodes, std::move(runner), ip, nft));
    net->made_.push_back(commands[0].argv[3]);
    net->history_.push_back(commands[0]);
    for (size_t i = 1; i < commands.size(); ++i) {
      const bool adds_namespace = commands[i].argv.size() == 4 && commands[i].argv[1] == "netns" &&
                                  commands[i].argv[2] == "add";
      if (absl::Status s = net->Run(commands[i], nullptr); !s.ok()) {
        return s;  // The destructor deletes what was made.
      }
      if (adds_namespace) net->made_.push_back(commands[i].argv[3]);
    }
    return net;
  }
  return absl::ResourceExhaustedError("every run number 1..254 is taken (kvfault cleanup?)");
}

absl::Status Netns::Run(NetnsCommand command, std::vector<NetnsCommand>* ran) {
  absl::StatusOr<std::string> r = runner_(command.argv);
  command.status = r.status();
  history_.push_back(command);
  if (ran != nullptr) ran->push_back(command);
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat(Quoted(command.argv), ": ", r.status().message()));
  }
  return absl::OkStatus();
}

absl::Status Netns::EnterClient() {
  std::error_code ec;
  int threads = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++threads;
  }
  if (threads != 1) {
    return absl::InternalError(absl::StrCat(
        "the driver has ", threads, " threads; it must enter its namespace before starting any"));
  }
  const std::string path = absl::StrCat("/run/netns/", Namespace(kNetnsClient));
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  const int r = setns(fd, CLONE_NEWNET);
  const int saved = errno;
  close(fd);
  if (r != 0) {
    return absl::InternalError(absl::StrCat("setns ", path, ": ", std::strerror(saved)));
  }
  return absl::OkStatus();
}

std::string Netns::Address(const std::string& member) const {
  if (member == kNetnsClient) return absl::StrCat("127.100.", run_, ".", kClientHost);
  for (size_t k = 0; k < nodes_.size(); ++k) {
    if (nodes_[k] == member) return absl::StrCat("127.100.", run_, ".", k + 1);
  }
  return "";
}

std::vector<std::string> Netns::Wrap(const std::string& node,
                                     const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {ip_, "netns", "exec", Namespace(node)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::string Netns::Script(const std::string& member, const NetnsFaults& faults) const {
  std::vector<std::string> rules;
  std::vector<std::string> senders;
  for (const auto& [from, to] : faults.blocked) {
    if (to == member && !Address(from).empty()) senders.push_back(Address(from));
  }
  if (!senders.empty()) {
    rules.push_back(absl::StrCat("ip saddr { ", absl::StrJoin(senders, ", "), " } drop"));
  }
  for (const auto& [node, percent] : faults.loss_percent) {
    if (percent <= 0) continue;
    // Loss on a node's link: what it receives here, what it sends wherever
    // that arrives.
    if (node == member) {
      rules.push_back(absl::StrCat("iifname \"eth0\" numgen random mod 100 < ", percent, " drop"));
    } else if (!Address(node).empty()) {
      rules.push_back(
          absl::StrCat("ip saddr ", Address(node), " numgen random mod 100 < ", percent, " drop"));
    }
  }
  if (rules.empty()) return "";
  const std::string t = absl::StrCat("inet ", TableName(run_));
  // Create-if-absent, delete, make anew: one transaction, so the old rules
  // are replaced atomically.
  std::string script =
      absl::StrCat("table ", t, " ; delete table ", t, " ; add table ", t, " ; add chain ", t,
                   " input { type filter hook input priority 0 ; policy accept ; }");
  for (const std::string& rule : rules)
    absl::StrAppend(&script, " ; add rule ", t, " input ", rule);
  return script;
}

absl::Status Netns::Apply(const NetnsFaults& faults, std::vector<NetnsCommand>* ran) {
  std::vector<std::string> members = nodes_;
  members.push_back(kNetnsClient);
  for (const std::string& member : members) {
    const std::string script = Script(member, faults);
    std::string& now = scripts_[member];
    if (script == now) continue;
    std::vector<std::string> nft = {nft_};
    if (script.empty()) {
      nft.push_back(absl::StrCat("delete table inet ", TableName(run_)));
    } else {
      nft.push_back(script);
    }
    if (absl::Status s = Run(NetnsCommand{"nft", member, Wrap(member, nft), absl::OkStatus()}, ran);
        !s.ok()) {
      return s;
    }
    now = script;
  }
  faults_ = faults;
  return absl::OkStatus();
}

bool Netns::Cut(const std::string& a, const std::string& b) const {
  return faults_.blocked.count({a, b}) > 0 || faults_.blocked.count({b, a}) > 0;
}

absl::Status Netns::Teardown(std::vector<NetnsCommand>* ran) {
  absl::Status first;
  std::vector<std::string> left;
  // Nodes and client first, the switch (made first) last.
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
    absl::Status s =
        Run(NetnsCommand{"teardown", *it, {ip_, "netns", "del", *it}, absl::OkStatus()}, ran);
    if (!s.ok()) {
      left.insert(left.begin(), *it);
      if (first.ok()) first = s;
    }
  }
  made_ = left;
  scripts_.clear();
  return first;
}

std::map<int, std::vector<std::string>> RunNamespaces(const std::string& ip_netns_list) {
  std::map<int, std::vector<std::string>> out;
  for (absl::string_view line : absl::StrSplit(ip_netns_list, '\n', absl::SkipWhitespace())) {
    const std::vector<absl::string_view> words =
        absl::StrSplit(absl::StripAsciiWhitespace(line), ' ');
    absl::string_view name = words[0];
    if (!absl::ConsumePrefix(&name, "kvf")) continue;
    const size_t dash = name.find('-');
    int run = 0;
    if (dash == absl::string_view::npos || dash + 1 == name.size() ||
        !absl::SimpleAtoi(name.substr(0, dash), &run) || run < 1 || run > 254) {
      continue;
    }
    out[run].push_back(std::string(words[0]));
  }
  return out;
}

int CleanupNetns(const Netns::Runner& runner, const std::string& ip, int* failed) {
  absl::StatusOr<std::string> list = runner({ip, "netns", "list"});
  if (!list.ok()) {
    std::printf("%s netns list: %s\n", ip.c_str(), std::string(list.status().message()).c_str());
    ++*failed;
    return 0;
  }
  int removed = 0;
  for (auto& [run, names] : RunNamespaces(*list)) {
    bool alive = false;
    for (const std::string& ns : names) {
      absl::StatusOr<std::string> pids = runner({ip, "netns", "pids", ns});
      alive |= !pids.ok() || !absl::StripAsciiWhitespace(*pids).empty();
    }
    if (alive) {
      std::printf("kvf%d-*: a process still runs in it, left alone\n", run);
      continue;
    }
    // The switch last, as a run's own teardown does.
    // (The name copied first: clang 14 cannot capture a structured binding.)
    const std::string switch_ns = Netns::NamespaceName(run, kSwitch);
    std::stable_partition(names.begin(), names.end(),
                          [&](const std::string& n) { return n != switch_ns; });
    for (const std::string& ns : names) {
      absl::StatusOr<std::string> r = runner({ip, "netns", "del", ns});
      std::printf("%s netns del %s%s\n", ip.c_str(), ns.c_str(),
                  r.ok() ? "" : absl::StrCat(": ", r.status().message()).c_str());
      if (r.ok()) {
        ++removed;
      } else {
        ++*failed;
      }
    }
  }
  return removed;
}

}  // namespace kvstore::fault
