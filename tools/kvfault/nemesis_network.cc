// The `net` and `probe-write` actions of the nemesis, the network's heal,
// and the figures of nemesis_network.h.
#include "tools/kvfault/nemesis_network.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tools/kvfault/nemesis.h"
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

absl::Status CheckNetStep(const Step& step) {
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

LinkFaults FaultsOf(const Step& step) {
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

absl::StatusOr<int64_t> FullResyncs(Cluster* cluster, std::string* detail) {
  Node* leader = cluster->Find(cluster->leader());
  absl::StatusOr<v1::StatusResponse> s =
      FetchStatus(cluster->Channel(leader->address), absl::Seconds(2));
  if (!s.ok()) return s.status();
  int64_t total = 0;
  std::vector<std::string> parts;
  for (const v1::FollowerStatus& f : s->followers()) {
    total += static_cast<int64_t>(f.snapshots_sent());
    parts.push_back(absl::StrCat(f.address(), " ", f.snapshots_sent()));
  }
  *detail = absl::StrCat("leader ", leader->name(), ": ", absl::StrJoin(parts, ", "));
  return total;
}

absl::Status Nemesis::Net(int index, const Step& step) {
  Network* network = cluster_->network();
  if (network == nullptr) return absl::FailedPreconditionError("the run has no proxies");
  std::vector<std::string> names;
  for (Node* n : cluster_->nodes()) names.push_back(n->name());
  absl::StatusOr<std::vector<std::string>> links =
      ResolveLinks(step.link, cluster_->leader(), names);
  if (!links.ok()) return links.status();
  done_.back().node = step.link;
  for (const std::string& link : *links) {
    // Make the proxy now if its target is known, so a later leader's
    // stream on it meets the fault from its first byte (Route keeps faults
    // for links it makes later anyway).
    const std::vector<std::string> ends = absl::StrSplit(link, "->");
    Node* to = cluster_->Find(ends[1]);
    if (to != nullptr && !to->address.empty()) {
      absl::StatusOr<std::string> route = network->Route(ends[0], ends[1], to->address);
      if (!route.ok()) return route.status();
    }
    std::string what;
    if (step.mode == "reset") {
      what = absl::StrCat("reset ", network->Reset(link), " open connection(s)");
    } else {
      const LinkFaults faults = FaultsOf(step);
      network->Set(link, faults);
      if (step.mode == "refuse") {
        what = absl::StrCat(faults.ToString(), "; reset ", network->Reset(link), " open");
      } else {
        what = faults.ToString();
      }
    }
    Log(index, "net", link, absl::StrCat("proxy ", link, ": ", what), absl::OkStatus(),
        network->Describe(link));
  }
  return absl::OkStatus();
}

void Nemesis::UpdateIsolation() {
  Network* network = cluster_->network();
  if (network == nullptr) return;
  const std::string leader = cluster_->leader();
  Node* node = cluster_->Find(leader);
  bool isolated = node != nullptr && !node->followers.empty();
  for (size_t i = 0; isolated && i < node->followers.size(); ++i) {
    isolated = network->faults(Network::LinkName(leader, node->followers[i])).blackhole;
  }
  const bool open = !isolation_.empty() && isolation_.back().end_ns < 0;
  if (open && (!isolated || isolation_.back().leader != leader)) {
    isolation_.back().end_ns = clock_->NowNs();
    Log(-1, "isolation-end", isolation_.back().leader, "(leader reaches a follower again)",
        absl::OkStatus(), "");
  }
  if (isolated && (isolation_.empty() || isolation_.back().end_ns >= 0)) {
    isolation_.push_back(IsolationWindow{leader, clock_->NowNs(), -1});
    Log(-1, "isolation-start", leader, "(every link from the leader to its followers blackholed)",
        absl::OkStatus(), "");
  }
}

absl::Status Nemesis::HealNetwork() {
  Network* network = cluster_->network();
  if (network == nullptr) return absl::OkStatus();
  for (const std::string& link : network->links()) {
    if (network->faults(link).healthy()) continue;
    network->Set(link, LinkFaults());
    Log(-1, "heal", link, absl::StrCat("proxy ", link, ": healthy"), absl::OkStatus(),
        network->Describe(link));
  }
  UpdateIsolation();
  return absl::OkStatus();
}

absl::Status Nemesis::ProbeWrite(int index, const Step& step, Node* node) {
  // The leader as its followers know it: its own address (Hello.leader).
  Node* leader = cluster_->Find(cluster_->leader());
  if (node == nullptr) return absl::InvalidArgumentError("probe-write needs a node");
  if (node == leader) return absl::InvalidArgumentError("probe-write on the leader itself");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  auto stub = v1::KeyValue::NewStub(cluster_->Channel(node->address));
  std::string last;
  absl::Status result;
  int attempts = 0;
  while (true) {
    ++attempts;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::SetRequest request;
    request.set_key("kvfault-probe");
    request.set_value(absl::StrCat("probe-", index, "-", attempts));
    v1::SetResponse response;
    grpc::Status s = stub->Set(&context, request, &response);
    last = s.ok() ? absl::StrCat("OK, version ", response.version())
                  : absl::StrCat("code ", s.error_code(), ": ", s.error_message());
    if (s.ok()) {
      result = absl::DataLossError(absl::StrCat(node->name(), " acknowledged a write although ",
                                                leader->name(), " leads: ", last));
      break;
    }
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
        absl::StrContains(s.error_message(), leader->address)) {
      break;
    }
    if (absl::Now() >= deadline) {
      result = absl::DeadlineExceededError(absl::StrCat(node->name(), " never refused naming ",
                                                        leader->name(), " (", leader->address,
                                                        ") within 10 s; last answer: ", last));
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));  // Polling with a deadline.
  }
  Log(index, "probe-write", node->name(),
      absl::StrCat("Set kvfault-probe on ", node->address, " (direct), expect ", step.expect),
      result, absl::StrCat(attempts, " attempt(s); answer: ", last));
  return result;
}

}  // namespace kvstore::fault
