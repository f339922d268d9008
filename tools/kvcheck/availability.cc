#include "tools/kvcheck/availability.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace kvstore::check {
namespace {

using Json = nlohmann::json;

// What holds a target (a node or a link) in a window: a down node ends at a
// restart or a promotion, a paused one only at its resume, a link at its
// next mode.
enum class Hold { kDown, kPaused, kLink };

struct Building {
  std::string label;  // "kill", "net blackhole", ...
  int step = -1;
  int64_t start_ns = 0;
  int64_t end_ns = kOpenWindow;
  bool instant = false;
  std::vector<std::string> targets;  // In the order they joined.
  std::set<std::string> pending;     // Not ended yet.
};

Building NewWindow(const std::string& label, int step, int64_t start_ns, int64_t end_ns) {
  Building w;
  w.label = label;
  w.step = step;
  w.start_ns = start_ns;
  w.end_ns = end_ns;
  return w;
}

class WindowBuilder {
 public:
  void Start(Hold hold, const std::string& label, int step, int64_t t, const std::string& target) {
    if (active_.count(target)) return;  // Already under a fault.
    int index = -1;
    for (size_t i = 0; i < windows_.size(); ++i) {
      const Building& w = windows_[i];
      if (!w.instant && w.step == step && w.label == label && !w.pending.empty())
        index = static_cast<int>(i);
    }
    if (index < 0) {
      index = static_cast<int>(windows_.size());
      windows_.push_back(NewWindow(label, step, t, kOpenWindow));
    }
    windows_[index].targets.push_back(target);
    windows_[index].pending.insert(target);
    active_[target] = {index, hold};
  }

  void End(const std::string& target, int64_t t) {
    auto it = active_.find(target);
    if (it == active_.end()) return;
    Building& w = windows_[it->second.first];
    active_.erase(it);
    w.pending.erase(target);
    if (w.pending.empty()) w.end_ns = t;
  }

  // Ends every down node's fault; returns how many it ended.
  int EndDown(int64_t t) {
    std::vector<std::string> down;
    for (const auto& [target, held] : active_) {
      if (held.second == Hold::kDown) down.push_back(target);
    }
    for (const std::string& target : down) End(target, t);
    return static_cast<int>(down.size());
  }

  Hold HeldBy(const std::string& target) const {
    auto it = active_.find(target);
    return it == active_.end() ? Hold::kLink : it->second.second;
  }
  bool Holds(const std::string& target) const { return active_.count(target) > 0; }
  bool AnyActive() const { return !active_.empty(); }

  void Instant(const std::string& label, int step, int64_t t, const std::string& target) {
    for (Building& w : windows_) {
      if (w.instant && w.step == step && w.label == label) {
        if (std::find(w.targets.begin(), w.targets.end(), target) == w.targets.end()) {
          w.targets.push_back(target);
        }
        return;
      }
    }
    Building w = NewWindow(label, step, t, t + kInstantFaultNs);
    w.instant = true;
    w.targets.push_back(target);
    windows_.push_back(std::move(w));
  }

  std::vector<FaultWindow> Windows() const {
    std::vector<FaultWindow> out;
    for (const Building& w : windows_) {
      std::string fault = w.label;
      if (!w.targets.empty() && !w.targets.front().empty()) {
        absl::StrAppend(&fault, " ", absl::StrJoin(w.targets, ","));
      }
      out.push_back({fault, w.step, w.start_ns, w.end_ns});
    }
    std::stable_sort(out.begin(), out.end(), [](const FaultWindow& a, const FaultWindow& b) {
      return a.start_ns < b.start_ns;
    });
    return out;
  }

 private:
  std::vector<Building> windows_;
  std::map<std::string, std::pair<int, Hold>> active_;  // target -> (window, hold)
};

// The target of the namespaces' faults, which name no single node or link.
constexpr char kNamespaces[] = "";

absl::Status Bad(int line, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", why));
}

void Add(const Op& op, WriteCounts* c) {
  ++c->writes;
  switch (op.outcome) {
    case Outcome::kOk:
      ++c->ok;
      break;
    case Outcome::kFail:
      ++c->fail;
      if (op.current_version.has_value()) ++c->mismatches;
      break;
    case Outcome::kInfo:
      ++c->info;
      break;
  }
}

std::string Share(const WriteCounts& c) {
  const double share = c.OkShare();
  return share < 0 ? "n/a" : absl::StrFormat("%.1f %%", 100 * share);
}

}  // namespace

double WriteCounts::OkShare() const {
  const int64_t judged = writes - mismatches;
  return judged <= 0 ? -1 : static_cast<double>(ok) / static_cast<double>(judged);
}

absl::StatusOr<std::vector<FaultWindow>> ParseFaultWindows(absl::string_view nemesis_jsonl) {
  WindowBuilder b;
  // Who leads: n0 until a promotion (kvfault starts n0 as the leader). The
  // old leader back as a replica serves no write: its window waits for the
  // promotion.
  std::string leader = "n0";
  int line = 0;
  for (absl::string_view raw : absl::StrSplit(nemesis_jsonl, '\n')) {
    ++line;
    const absl::string_view s = absl::StripAsciiWhitespace(raw);
    if (s.empty()) continue;
    const Json j = Json::parse(s.begin(), s.end(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return Bad(line, "not a JSON object");
    // kvfault appends the namespaces' teardown after the run, when its clock
    // is gone: no time, and no fault.
    if (!j.contains("t_ns") && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() == -1 && j.contains("action") && j["action"].is_string() &&
        absl::StartsWith(j["action"].get<std::string>(), "netns-")) {
      continue;
    }
    for (const char* name : {"t_ns", "step"}) {
      if (!j.contains(name) || !j[name].is_number_integer()) {
        return Bad(line, absl::StrCat("no integer \"", name, "\""));
      }
    }
    for (const char* name : {"action", "node"}) {
      if (!j.contains(name) || !j[name].is_string())
        return Bad(line, absl::StrCat("no string \"", name, "\""));
    }
    if (j.contains("ok") && j["ok"].is_boolean() && !j["ok"].get<bool>())
      continue;  // Did not happen.
    const int64_t t = j["t_ns"].get<int64_t>();
    const int step = j["step"].get<int>();
    const std::string action = j["action"].get<std::string>();
    const std::string node = j["node"].get<std::string>();
    const std::string command =
        j.contains("command") && j["command"].is_string() ? j["command"].get<std::string>() : "";
    const std::string note =
        j.contains("note") && j["note"].is_string() ? j["note"].get<std::string>() : "";

    if (action == "kill") {
      b.Start(Hold::kDown, absl::StartsWith(note, "power loss") ? "powerloss" : "kill", step, t,
              node);
    } else if (action == "powerloss" || action == "failpoint" || action == "await-exit" ||
               action == "fill-disk") {
      b.Start(Hold::kDown, action, step, t, node);
    } else if (action == "pause") {
      b.Start(Hold::kPaused, action, step, t, node);
    } else if (action == "resume" || action == "heal") {
      b.End(node, t);  // A node's SIGCONT, or a link healed after the load.
    } else if (action == "restart") {
      // A start refused after a bit flip leaves the node down.
      const bool leader_as_replica = node == leader && absl::StrContains(command, "kv-replica");
      if (!absl::StartsWith(note, "refused") && !leader_as_replica &&
          b.HeldBy(node) == Hold::kDown) {
        b.End(node, t);
      }
    } else if (action == "grow-disk") {
      if (b.HeldBy(node) == Hold::kDown) b.End(node, t);
    } else if (action == "promote" || action == "promote-race" || action == "settle") {
      if (!node.empty())
        leader = node;  // promote-race: its last line names the one the clients follow.
      const bool ended = b.EndDown(t) > 0;
      // A leader change while nothing else is wrong is a fault of its own.
      if (!ended && !b.AnyActive() && action != "settle") b.Instant("promote", step, t, node);
    } else if (action == "net") {
      // "proxy n0->n1: <the link's faults now>" (network.h).
      const size_t colon = command.find(": ");
      const std::string what = colon == std::string::npos ? "" : command.substr(colon + 2);
      if (absl::StrContains(what, "blackhole")) {
        b.Start(Hold::kLink, "net blackhole", step, t, node);
      } else if (absl::StartsWith(what, "refuse")) {
        b.Start(Hold::kLink, "net refuse", step, t, node);
      } else if (absl::StartsWith(what, "reset ")) {
        b.Instant("net reset", step, t, node);
      } else {
        b.End(node, t);  // healthy, delay or rate: the link passes traffic again.
      }
    } else if (action == "partition" || action == "loss") {
      // Network namespaces (nft drops): one line per namespace whose rules
      // changed, each noting "<what the step did>: <every fault now>". The
      // faults are the run's, not a link's: one window from the first fault
      // until none is left. A step that changed no rules logs one line whose
      // node says what it did and whose note is the faults alone.
      const size_t colon = note.find(": ");
      const std::string what = colon == std::string::npos ? node : note.substr(0, colon);
      const std::string now = colon == std::string::npos ? note : note.substr(colon + 2);
      if (now == "healthy") {
        b.End(kNamespaces, t);
      } else if (!now.empty()) {
        // "partition isolate n0", "loss n2 10%".
        const std::string label =
            absl::StartsWith(what, action) ? what : absl::StrCat(action, " ", what);
        b.Start(Hold::kLink, label, step, t, kNamespaces);
      }
    } else if (action == "clock") {
      b.Instant("clock", step, t, node);
    }
  }
  return b.Windows();
}

absl::StatusOr<std::vector<FaultWindow>> ReadFaultWindows(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  absl::StatusOr<std::vector<FaultWindow>> w = ParseFaultWindows(text.str());
  if (!w.ok())
    return absl::Status(w.status().code(), absl::StrCat(path, ": ", w.status().message()));
  return w;
}

AvailabilityFigures ComputeAvailability(const History& h, const std::vector<FaultWindow>& windows) {
  int64_t last_t = 0;
  for (const Op& op : h.ops) {
    last_t = std::max({last_t, op.invoke_t_ns, op.complete_pos == kNoEvent ? 0 : op.complete_t_ns});
  }
  AvailabilityFigures a;
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (const FaultWindow& w : windows) {
    WindowFigures f{w, w.end_ns == kOpenWindow ? std::max(last_t + 1, w.start_ns) : w.end_ns, {}};
    spans.emplace_back(w.start_ns, f.end_ns);
    a.windows.push_back(std::move(f));
  }
  // The union of the windows, as disjoint [start, end) spans.
  std::sort(spans.begin(), spans.end());
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (const auto& s : spans) {
    if (!merged.empty() && s.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, s.second);
    } else {
      merged.push_back(s);
    }
  }
  for (const auto& [start, end] : merged) a.seconds += (end - start) / 1e9;

  for (const Op& op : h.ops) {
    if (!op.IsWrite() || op.final_phase) continue;
    const int64_t t = op.invoke_t_ns;
    for (WindowFigures& f : a.windows) {
      if (t >= f.window.start_ns && t < f.end_ns) Add(op, &f.counts);
    }
    auto after = std::upper_bound(merged.begin(), merged.end(), std::make_pair(t, INT64_MAX));
    const bool inside = after != merged.begin() && t < std::prev(after)->second;
    Add(op, inside ? &a.during : &a.outside);
  }
  return a;
}

std::vector<std::string> AvailabilityLines(const AvailabilityFigures& a,
                                           const std::string& indent) {
  if (a.windows.empty())
    return {absl::StrCat(indent, "availability during faults: no fault window")};
  auto judged = [](const WriteCounts& c) { return c.writes - c.mismatches; };
  std::vector<std::string> out;
  out.push_back(
      absl::StrFormat("%savailability during faults: %d of %d writes ok (%s) in %d window(s), "
                      "%.1fs; outside: %d of %d (%s)",
                      indent, a.during.ok, judged(a.during), Share(a.during), a.windows.size(),
                      a.seconds, a.outside.ok, judged(a.outside), Share(a.outside)));
  for (const WindowFigures& f : a.windows) {
    const WriteCounts& c = f.counts;
    out.push_back(
        absl::StrFormat("%s  %s (step %d) at %.2fs for %.2fs%s: %d of %d writes ok (%s), %d info, "
                        "%d fail, %d mismatches left out",
                        indent, f.window.fault, f.window.step, f.window.start_ns / 1e9,
                        (f.end_ns - f.window.start_ns) / 1e9,
                        f.window.end_ns == kOpenWindow ? " (open to the end)" : "", c.ok, judged(c),
                        Share(c), c.info, c.fail - c.mismatches, c.mismatches));
  }
  return out;
}

}  // namespace kvstore::check
