// The `net`, `partition`, `loss` and `probe-write` actions of the nemesis,
// the network's heal and the isolation windows (nemesis.h), and FullResyncs.
#include "tools/kvfault/nemesis_network.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tools/kvfault/child_process.h"
#include "tools/kvfault/nemesis.h"
#include "tools/kvfault/netns.h"
#include "tools/kvfault/network.h"

namespace kvstore::fault {

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
      ResolveLinks(step.net.link, cluster_->leader(), names);
  if (!links.ok()) return links.status();
  done_.back().node = absl::StrCat(step.net.link, " ", step.net.mode);
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
    if (step.net.mode == "reset") {
      what = absl::StrCat("reset ", network->Reset(link), " open connection(s)");
    } else {
      const LinkFaults faults = FaultsOf(step.net);
      network->Set(link, faults);
      if (step.net.mode == "refuse") {
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

void Nemesis::LogNetns(int index, const std::vector<NetnsCommand>& commands,
                       const std::string& action, const std::string& note) {
  for (const NetnsCommand& c : commands) {
    Log(index, action.empty() ? absl::StrCat("netns-", c.what) : action, c.member,
        ShellQuote(c.argv), c.status, note);
  }
}

absl::Status Nemesis::Partition(int index, const Step& step, Node* node) {
  Netns* netns = cluster_->netns();
  if (netns == nullptr) return absl::FailedPreconditionError("the run has no namespaces");
  std::vector<std::string> names;
  for (Node* n : cluster_->nodes()) names.push_back(n->name());
  const std::string leader = cluster_->leader();
  NetnsFaults faults = netns->faults();
  auto cut_both_ways = [&](const std::string& a, const std::string& b) {
    faults.blocked.insert({a, b});
    faults.blocked.insert({b, a});
  };
  const std::string& mode = step.net.mode;
  std::string what;
  if (step.action == "loss") {
    if (node == nullptr) return absl::InvalidArgumentError("loss needs a node");
    if (step.percent == 0) {
      faults.loss_percent.erase(node->name());
    } else {
      faults.loss_percent[node->name()] = step.percent;
    }
    what = absl::StrCat("loss ", node->name(), " ", step.percent, "%");
  } else if (mode == "isolate") {
    if (node == nullptr) return absl::InvalidArgumentError("isolate needs a node");
    for (const std::string& other : names) {
      if (other != node->name()) cut_both_ways(node->name(), other);
    }
    what = absl::StrCat("isolate ", node->name());
  } else if (mode == "split") {
    std::set<std::string> minority;
    for (const std::string& m :
         step.minority.empty() ? std::vector<std::string>{"leader"} : step.minority) {
      const std::string name = m == "leader" ? leader : m;
      if (cluster_->Find(name) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("split: no node ", m));
      }
      minority.insert(name);
    }
    if (2 * minority.size() >= names.size()) {
      return absl::InvalidArgumentError(absl::StrCat("split: ", absl::StrJoin(minority, ", "),
                                                     " is not a minority of ", names.size()));
    }
    for (const std::string& a : minority) {
      for (const std::string& b : names) {
        if (minority.count(b) == 0) cut_both_ways(a, b);
      }
    }
    what = absl::StrCat("split ", absl::StrJoin(minority, ", "), " | the rest");
  } else if (mode == "one-way") {
    absl::StatusOr<std::vector<std::string>> links = ResolveLinks(step.net.link, leader, names);
    if (!links.ok()) return links.status();
    for (const std::string& link : *links) {
      const std::vector<std::string> ends = absl::StrSplit(link, "->");
      if (ends[0] == "client" || ends[1] == "etcd") {
        return absl::InvalidArgumentError(absl::StrCat("one-way ", link, ": nodes only"));
      }
      faults.blocked.insert({ends[0], ends[1]});
    }
    what = absl::StrCat("one-way ", step.net.link);
  } else if (mode == "heal") {
    faults = NetnsFaults();
    what = "heal";
  } else {
    return absl::InvalidArgumentError(absl::StrCat("partition mode '", mode, "'"));
  }
  done_.back().node = what;
  std::vector<NetnsCommand> ran;
  absl::Status s = netns->Apply(faults, &ran);
  LogNetns(index, ran, step.action, absl::StrCat(what, ": ", faults.ToString()));
  if (ran.empty()) Log(index, step.action, what, "(no table changes)", s, faults.ToString());
  return s;
}

void Nemesis::UpdateIsolation() {
  Network* network = cluster_->network();
  Netns* netns = cluster_->netns();
  if (network == nullptr && netns == nullptr) return;
  const std::string leader = cluster_->leader();
  Node* node = cluster_->Find(leader);
  bool isolated = node != nullptr && !node->followers.empty();
  for (size_t i = 0; isolated && i < node->followers.size(); ++i) {
    isolated = netns != nullptr
                   ? netns->Cut(leader, node->followers[i])
                   : network->faults(Network::LinkName(leader, node->followers[i])).blackhole;
  }
  const bool open = !isolation_.empty() && isolation_.back().end_ns < 0;
  if (open && (!isolated || isolation_.back().leader != leader)) {
    isolation_.back().end_ns = clock_->NowNs();
    Log(-1, "isolation-end", isolation_.back().leader, "(leader reaches a follower again)",
        absl::OkStatus(), "");
  }
  if (isolated && (isolation_.empty() || isolation_.back().end_ns >= 0)) {
    isolation_.push_back(IsolationWindow{leader, clock_->NowNs(), -1});
    Log(-1, "isolation-start", leader,
        netns != nullptr ? "(nft drops cut the leader off from every follower)"
                         : "(every link from the leader to its followers blackholed)",
        absl::OkStatus(), "");
  }
}

absl::Status Nemesis::HealNetwork() {
  if (Netns* netns = cluster_->netns(); netns != nullptr && !netns->faults().healthy()) {
    std::vector<NetnsCommand> ran;
    absl::Status s = netns->Apply(NetnsFaults(), &ran);
    LogNetns(-1, ran, "heal", "healthy");
    UpdateIsolation();
    if (!s.ok()) return s;
  }
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
