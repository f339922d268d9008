#include "tools/kvfault/net_faults.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tools/kvfault/network.h"

namespace kvstore::fault {
namespace {

const std::set<std::string>& Modes() {
  static const std::set<std::string> modes = {"blackhole", "delay", "rate",
                                              "refuse",    "reset", "heal"};
  return modes;
}

// One side of a link pattern: the names it stands for.
absl::StatusOr<std::vector<std::string>> Side(const std::string& side, const std::string& leader,
                                              const std::vector<std::string>& nodes,
                                              bool client_allowed) {
  if (side == "client") {
    if (!client_allowed) return absl::InvalidArgumentError("client can only send");
    return std::vector<std::string>{"client"};
  }
  if (side == "leader") return std::vector<std::string>{leader};
  if (side == "*") return nodes;
  if (side == "followers") {
    std::vector<std::string> out;
    for (const std::string& n : nodes) {
      if (n != leader) out.push_back(n);
    }
    return out;
  }
  if (std::find(nodes.begin(), nodes.end(), side) != nodes.end()) {
    return std::vector<std::string>{side};
  }
  return absl::InvalidArgumentError(absl::StrCat("no node '", side, "' in a link"));
}

}  // namespace

absl::Status CheckNetStep(const NetStep& step) {
  if (!Modes().count(step.mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "net: mode '", step.mode, "' (blackhole, delay, rate, refuse, reset or heal)"));
  }
  if (!absl::StrContains(step.link, "->")) {
    return absl::InvalidArgumentError(absl::StrCat("net: link '", step.link, "' is not A->B"));
  }
  if (step.mode == "delay" && step.delay_ms <= 0 && step.jitter_ms <= 0) {
    return absl::InvalidArgumentError("net: delay needs delay_ms or jitter_ms");
  }
  if (step.mode == "delay" && step.jitter_ms > step.delay_ms) {
    return absl::InvalidArgumentError("net: jitter_ms above delay_ms");
  }
  if (step.mode == "rate" && step.rate_kbps <= 0) {
    return absl::InvalidArgumentError("net: rate needs rate_kbps");
  }
  return absl::OkStatus();
}

LinkFaults FaultsOf(const NetStep& step) {
  LinkFaults f;
  if (step.mode == "blackhole") f.blackhole = true;
  if (step.mode == "refuse") f.refuse = true;
  if (step.mode == "delay") {
    f.delay = absl::Microseconds(static_cast<int64_t>(step.delay_ms * 1000));
    f.jitter = absl::Microseconds(static_cast<int64_t>(step.jitter_ms * 1000));
  }
  if (step.mode == "rate") f.rate_bytes_per_s = static_cast<int64_t>(step.rate_kbps * 1000 / 8);
  return f;
}

absl::StatusOr<std::vector<std::string>> ResolveLinks(const std::string& pattern,
                                                      const std::string& leader,
                                                      const std::vector<std::string>& nodes) {
  const bool both = absl::StrContains(pattern, "<->");
  std::vector<std::string> sides = absl::StrSplit(pattern, both ? "<->" : "->");
  if (sides.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("link '", pattern, "' is not A->B or A<->B"));
  }
  std::vector<std::string> out;
  if (sides[0] == "etcd" || sides[1] == "etcd") {
    // A node's link to etcd carries both directions: "A->etcd", "etcd->A"
    // and "A<->etcd" all name the links "n->etcd" of the nodes A stands for.
    const std::string& other = sides[0] == "etcd" ? sides[1] : sides[0];
    if (other == "etcd") return absl::InvalidArgumentError("etcd has no link to itself");
    absl::StatusOr<std::vector<std::string>> nodes_of = Side(other, leader, nodes, false);
    if (!nodes_of.ok()) return nodes_of.status();
    for (const std::string& n : *nodes_of) out.push_back(Network::LinkName(n, "etcd"));
    return out;
  }
  for (int way = 0; way < (both ? 2 : 1); ++way) {
    const std::string& a = sides[way];
    const std::string& b = sides[1 - way];
    absl::StatusOr<std::vector<std::string>> from = Side(a, leader, nodes, /*client_allowed=*/true);
    if (!from.ok()) return from.status();
    absl::StatusOr<std::vector<std::string>> to = Side(b, leader, nodes, false);
    if (!to.ok()) return to.status();
    for (const std::string& f : *from) {
      for (const std::string& t : *to) {
        if (f == t) continue;
        const std::string link = Network::LinkName(f, t);
        if (std::find(out.begin(), out.end(), link) == out.end()) out.push_back(link);
      }
    }
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("link '", pattern, "' is empty"));
  return out;
}

IsolationFigures ComputeIsolation(const check::History& h, const check::DurabilityFigures& d,
                                  const std::vector<IsolationWindow>& windows, int64_t end_ns) {
  IsolationFigures out;
  const std::set<int> lost(d.lost_ops.begin(), d.lost_ops.end());
  for (const IsolationWindow& w : windows) {
    const int64_t end = w.end_ns < 0 ? end_ns : w.end_ns;
    ++out.windows;
    out.seconds += (end - w.start_ns) / 1e9;
    for (const check::Op& op : h.ops) {
      if (!op.IsWrite() || op.outcome != check::Outcome::kOk || op.final_phase) continue;
      if (op.f == check::Fn::kDelete && !op.deleted) continue;  // Wrote nothing.
      if (op.invoke_t_ns < w.start_ns + kIsolationGraceNs || op.complete_t_ns > end) continue;
      ++out.acked;
      if (lost.count(op.id)) ++out.lost;
      if (out.acked_ops.size() < 5) out.acked_ops.push_back(op.id);
    }
  }
  return out;
}

}  // namespace kvstore::fault
