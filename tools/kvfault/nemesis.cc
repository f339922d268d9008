#include "tools/kvfault/nemesis.h"

#include <signal.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tools/kvfault/acked_cut.h"
#include "tools/kvfault/child_process.h"
#include "tools/kvfault/power_loss.h"

namespace kvstore::fault {

Nemesis::Nemesis(Cluster* cluster, const HistoryRecorder* clock, std::string log_path,
                 uint64_t seed)
    : cluster_(cluster),
      groups_{cluster},
      shard_rng_(seed ^ 0x7368617264ULL),
      clock_(clock),
      rng_(seed ^ 0x6e656d65736973ULL) {
  log_ = std::fopen(log_path.c_str(), "w");
}

Nemesis::~Nemesis() {
  if (log_ != nullptr) std::fclose(log_);
}

void Nemesis::Log(int index, const std::string& action, const std::string& node,
                  const std::string& command, const absl::Status& result, const std::string& note) {
  nlohmann::ordered_json j;
  j["t_ns"] = clock_->NowNs();
  j["step"] = index;
  j["action"] = action;
  j["node"] = node;
  j["command"] = command;
  j["ok"] = result.ok();
  if (!result.ok()) j["error"] = std::string(result.message());
  if (!note.empty()) j["note"] = note;
  if (log_ != nullptr) {
    std::fputs((j.dump() + "\n").c_str(), log_);
    std::fflush(log_);
  }
  const bool show_note = !note.empty() && !absl::StartsWith(note, "pid ");
  std::printf(
      "nemesis: %s %s%s%s%s%s\n", action.c_str(), command.c_str(),
      result.ok() ? "" : "  FAILED: ", result.ok() ? "" : std::string(result.message()).c_str(),
      show_note ? "\n  -> " : "", show_note ? note.c_str() : "");
  std::fflush(stdout);
}

absl::Status Nemesis::Run(const std::vector<Step>& steps, absl::Time load_start,
                          const std::atomic<bool>* cancelled) {
  // Draw every step's jitter first, so the schedule depends on the seed only.
  std::vector<absl::Time> at;
  for (const Step& step : steps) {
    const double jitter =
        step.jitter_s > 0 ? std::uniform_real_distribution<double>(0, step.jitter_s)(rng_) : 0;
    at.push_back(load_start + absl::Milliseconds(1000 * (step.at_s + jitter)));
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    // Wait for the step's time, waking up to see a cancellation.
    while (absl::Now() < at[i]) {
      if (cancelled->load()) return absl::CancelledError("the run was stopped");
      absl::SleepFor(std::min(absl::Milliseconds(20), at[i] - absl::Now()));
    }
    absl::StatusOr<Cluster*> group = GroupFor(steps[i]);
    if (!group.ok()) return group.status();
    cluster_ = *group;
    Step step = steps[i];
    // In a group of several, "n1" is that group's node (s2n1).
    if (groups_.size() > 1 && !step.node.empty() && cluster_->Find(step.node) == nullptr &&
        cluster_->Find(cluster_->shard() + step.node) != nullptr) {
      step.node = cluster_->shard() + step.node;
    }
    absl::Status s = Execute(static_cast<int>(i), step);
    UpdateIsolation();
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("nemesis step ", i, " (", steps[i].action, " ",
                                                 steps[i].node, "): ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Nemesis::PowerLoss(int index, const Step& step) {
  std::vector<Node*> targets;
  if (step.node == "all") {
    targets = cluster_->nodes();
  } else {
    Node* node = cluster_->Find(step.node == "leader" ? cluster_->leader() : step.node);
    if (node == nullptr) return absl::InvalidArgumentError(absl::StrCat("no node ", step.node));
    targets.push_back(node);
  }
  done_.push_back(
      StepRecord{step.action, step.node == "all" ? "all" : targets[0]->name(), clock_->NowNs()});
  absl::StatusOr<Tear> tear = ParseTear(step.tear);
  if (!tear.ok()) return tear.status();
  // Optionally wait until each of them holds bytes not yet durable: a cut
  // between an fsync and the next write loses nothing and proves nothing.
  std::string timing;
  if (step.until_unsynced_s > 0) {
    std::vector<UnsyncedWatcher> watchers;
    for (Node* n : targets) {
      if (n->preload && n->state != NodeState::kDown) {
        watchers.emplace_back(n->data_dir(), n->journal_path());
      }
    }
    const absl::Time start = absl::Now();
    const absl::Time deadline = start + absl::Seconds(step.until_unsynced_s);
    // Bytes pending over all the nodes, or 0 unless every one has some: a
    // shard-wide cut should catch each node with writes in flight.
    auto measure = [&] {
      int64_t bytes = 0;
      for (UnsyncedWatcher& w : watchers) {
        absl::StatusOr<int64_t> n = w.UnsyncedBytes();
        if (!n.ok() || *n == 0) return int64_t{0};
        bytes += *n;
      }
      return bytes;
    };
    int64_t unsynced = 0;
    while (absl::Now() < deadline) {
      unsynced = measure();
      // With a hold: once bytes are pending, wait (at most the hold) for a
      // client to receive an acknowledgement, and cut only if bytes are still
      // pending then. A server that acknowledges before its fsync (the
      // control) has then most likely answered for bytes the cut drops.
      if (unsynced > 0 && step.unsynced_hold_ms > 0) {
        const int64_t acked = clock_->acked_writes();
        const absl::Time hold_end = absl::Now() + absl::Milliseconds(step.unsynced_hold_ms);
        while (clock_->acked_writes() == acked && absl::Now() < hold_end) {
          absl::SleepFor(absl::Microseconds(50));  // Polling with a deadline.
        }
        unsynced = measure();
      }
      if (unsynced > 0) break;
      absl::SleepFor(absl::Microseconds(200));  // Polling with a deadline.
    }
    timing = unsynced > 0 ? absl::StrCat(unsynced, " bytes not yet durable after ",
                                         absl::FormatDuration(absl::Now() - start))
                          : absl::StrCat("no bytes pending within ", step.until_unsynced_s, " s");
    done_.back().t_ns = clock_->NowNs();
  } else if (step.until_acked_unsynced_s > 0) {
    absl::StatusOr<std::string> caught = AwaitAckedUnsynced(step, targets);
    if (!caught.ok()) return caught.status();
    timing = *caught;
    done_.back().t_ns = clock_->NowNs();
  }
  // The power goes at once: every SIGKILL is sent before any is reaped.
  std::vector<std::pair<Node*, pid_t>> killed;
  for (Node* n : targets) {
    if (n->state == NodeState::kDown || n->pid <= 0) continue;
    kill(n->pid, SIGKILL);
    killed.emplace_back(n, n->pid);
  }
  for (const auto& [n, pid] : killed) {
    absl::Status s = cluster_->Signal(n, SIGKILL);  // Reaps it.
    Log(index, "kill", n->name(), absl::StrCat("kill -9 ", pid), s,
        absl::StrCat("power loss", timing.empty() ? "" : ": ", timing));
    if (!s.ok()) return s;
  }
  for (Node* n : targets) {
    std::vector<std::string> command;
    absl::StatusOr<PowerLossReport> r = cluster_->CutPower(n, *tear, rng_(), &command);
    Log(index, "powerloss", n->name(), ShellQuote(command), r.status(), r.ok() ? r->Summary() : "");
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

namespace {

// Whether every thread of `pid` has stopped, after a SIGSTOP: a thread inside
// a system call (an fsync) stops only once the call returns.
bool AllThreadsStopped(pid_t pid) {
  std::error_code ec;
  bool any = false;
  for (const auto& e :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream f(e.path() / "stat");
    std::string stat;
    std::getline(f, stat);
    // "tid (comm) S ...": comm may hold anything, the state follows the last ')'.
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
    const char state = stat[paren + 2];
    if (state != 'T' && state != 't' && state != 'Z' && state != 'X') return false;
    any = true;
  }
  return any && !ec;
}

}  // namespace

absl::StatusOr<std::string> Nemesis::AwaitAckedUnsynced(const Step& step,
                                                        const std::vector<Node*>& targets) {
  std::vector<Node*> watched;
  std::vector<UnsyncedWatcher> watchers;
  for (Node* n : targets) {
    if (n->state == NodeState::kDown) continue;
    if (!n->preload) {
      return absl::FailedPreconditionError(
          absl::StrCat("until_acked_unsynced_s: ", n->name(), " does not run under the preload"));
    }
    watched.push_back(n);
    watchers.emplace_back(n->data_dir(), n->journal_path());
  }
  // Each node's durable lengths, read from its journal now.
  auto durable_now = [&]() -> absl::StatusOr<std::vector<std::map<uint64_t, int64_t>>> {
    std::vector<std::map<uint64_t, int64_t>> durable;
    for (UnsyncedWatcher& w : watchers) {
      if (absl::Status s = w.ReadJournal(); !s.ok()) return s;
      durable.push_back(w.durable());
    }
    return durable;
  };
  auto signal_all = [&](int sig) {
    for (Node* n : watched) (void)cluster_->Signal(n, sig);
  };
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(step.until_acked_unsynced_s);
  AckedCutWatch watch;
  int freezes = 0;
  while (absl::Now() < deadline) {
    // A sample: every node's sizes, then its journal, then the time.
    std::vector<FilesState> sample;
    for (UnsyncedWatcher& w : watchers) {
      absl::StatusOr<std::map<uint64_t, int64_t>> sizes = w.Sizes();
      if (!sizes.ok() || !w.ReadJournal().ok()) break;
      sample.push_back(FilesState{*std::move(sizes), w.durable()});
    }
    if (sample.size() == watchers.size()) watch.AddSample(clock_->NowNs(), std::move(sample));
    // The acknowledgement first, then the journals: an fsync the server
    // finished before answering is in them.
    const HistoryRecorder::AckedWrite acked = clock_->NewestAckedWrite();
    absl::StatusOr<std::vector<std::map<uint64_t, int64_t>>> durable = durable_now();
    if (acked.invoke_t_ns >= 0 && durable.ok() &&
        watch.DurableNowhere(acked.invoke_t_ns, *durable)) {
      // Stop them all and look again, so that no fsync can finish between
      // the proof and the SIGKILL; the cut then drops what the journals say.
      ++freezes;
      signal_all(SIGSTOP);
      const absl::Time stop_deadline = absl::Now() + absl::Seconds(1);
      bool stopped = false;
      while (!(stopped = std::all_of(watched.begin(), watched.end(),
                                     [](Node* n) { return AllThreadsStopped(n->pid); })) &&
             absl::Now() < stop_deadline) {
        absl::SleepFor(absl::Microseconds(50));  // Polling with a deadline.
      }
      durable = durable_now();
      if (stopped && durable.ok() && watch.DurableNowhere(acked.invoke_t_ns, *durable)) {
        std::vector<std::string> names;
        for (Node* n : watched) names.push_back(n->name());
        return absl::StrCat("the acknowledged write of ", acked.key, " (invoked at ",
                            absl::StrFormat("%.6f", acked.invoke_t_ns / 1e9),
                            " s) durable on none of ", absl::StrJoin(names, ", "), " after ",
                            absl::FormatDuration(absl::Now() - start), " (", freezes,
                            freezes == 1 ? " freeze)" : " freezes)");
      }
      signal_all(SIGCONT);
    }
    absl::SleepFor(absl::Microseconds(100));  // Polling with a deadline.
  }
  // None caught (as in a safe cluster): cut anyway, but once every target
  // holds bytes not yet durable (at most a second more), so that the cut
  // still lands on writes in flight, as powerloss-all-sync's does.
  const absl::Time fallback_deadline = absl::Now() + absl::Seconds(1);
  int64_t pending = 0;
  while (absl::Now() < fallback_deadline) {
    pending = 0;
    for (UnsyncedWatcher& w : watchers) {
      absl::StatusOr<int64_t> n = w.UnsyncedBytes();
      if (!n.ok() || *n == 0) {
        pending = 0;
        break;
      }
      pending += *n;
    }
    if (pending > 0) break;
    absl::SleepFor(absl::Microseconds(200));  // Polling with a deadline.
  }
  return absl::StrCat("NO acknowledged write caught durable nowhere within ",
                      step.until_acked_unsynced_s, " s (", freezes, " freezes); cut with ",
                      pending > 0 ? absl::StrCat(pending, " bytes pending on every node")
                                  : "no bytes pending on some node");
}

absl::Status Nemesis::FlipBit(int index, const Step& step, Node* node) {
  if (node->state != NodeState::kDown) {
    return absl::FailedPreconditionError(absl::StrCat(node->name(), " must be down"));
  }
  // The newest file of its kind: names sort by their zero-padded index.
  const std::string prefix = step.file == "wal" ? "wal-" : "snap-";
  const std::string suffix = step.file == "wal" ? ".log" : ".snap";
  std::string newest;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(node->data_dir(), ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, prefix) && absl::EndsWith(name, suffix) && name > newest) {
      newest = name;
    }
  }
  if (newest.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no ", step.file, " file in ", node->data_dir()));
  }
  const std::string file = node->data_dir() + "/" + newest;
  const int64_t size = static_cast<int64_t>(std::filesystem::file_size(file, ec));
  const uint64_t seed = rng_();
  absl::StatusOr<kvstore::fault::BitFlip> flip =
      step.where == "middle"
          ? kvstore::fault::FlipBit(file, std::nullopt, seed, size / 4,
                                    std::max<int64_t>(size / 4 + 1, size * 3 / 4))
          : kvstore::fault::FlipBit(file, std::nullopt, seed);
  const std::string command =
      flip.ok() ? ShellQuote({"kvfault", "bitflip", "--file", file, "--offset",
                              absl::StrCat(flip->offset), "--seed", absl::StrCat(seed)})
                : ShellQuote({"kvfault", "bitflip", "--file", file, "--seed", absl::StrCat(seed)});
  Log(index, "bitflip", node->name(), command, flip.status(),
      flip.ok() ? absl::StrCat(flip->ToString(), " (", size, " bytes)") : "");
  if (!flip.ok()) return flip.status();
  last_flip_ = *flip;
  return absl::OkStatus();
}

absl::Status Nemesis::RestartAfterFlip(int index, const Step& step, Node* node) {
  if (!last_flip_.has_value()) return absl::FailedPreconditionError("no bit flip before");
  const std::string name = std::filesystem::path(last_flip_->file).filename().string();
  if (step.after_bitflip == "detect") {
    absl::StatusOr<std::vector<std::string>> argv = cluster_->StartNode(node);
    absl::Status s = argv.status();
    if (s.ok()) {
      std::ifstream in(node->log_path());
      std::ostringstream log;
      log << in.rdbuf();
      if (log.str().find(name) == std::string::npos) {
        s = absl::DataLossError(
            absl::StrCat(node->name(), " started on a snapshot with a flipped bit and its log (",
                         node->log_path(), ") never names ", name, ": the damage went unnoticed"));
      }
    }
    Log(index, "restart", node->name(),
        argv.ok() ? ShellQuote(*argv) : ShellQuote(cluster_->CommandLine(*node)), s,
        s.ok() ? absl::StrCat("its log names the damaged ", name) : "");
    return s;
  }
  std::vector<std::string> command;
  absl::StatusOr<std::string> log = cluster_->StartRefused(node, &command);
  absl::Status s = log.status();
  std::string note;
  if (s.ok()) {
    // The refusal must name the file and where its damage starts: at or
    // before the flipped byte (the start of the record that holds it).
    const size_t at = log->find(name);
    std::optional<int64_t> named;
    if (at != std::string::npos) {
      for (size_t p = log->find("offset ", at); p != std::string::npos;
           p = log->find("offset ", p + 1)) {
        int64_t n = 0;
        size_t end = p + 7;
        while (end < log->size() && std::isdigit(static_cast<unsigned char>((*log)[end]))) ++end;
        if (end > p + 7 && absl::SimpleAtoi(log->substr(p + 7, end - p - 7), &n)) {
          named = n;
          break;
        }
      }
    }
    if (!named.has_value() || *named > last_flip_->offset) {
      s = absl::DataLossError(absl::StrCat(node->name(), " refused to start, but its log (",
                                           node->log_path(), ") does not name ", name,
                                           " and an offset at or before ", last_flip_->offset));
    } else {
      note = absl::StrCat("refused, naming ", name, " offset ", *named, " (flipped byte at ",
                          last_flip_->offset, ")");
    }
  }
  Log(index, "restart", node->name(), ShellQuote(command), s, note);
  return s;
}

absl::Status Nemesis::Execute(int index, const Step& step) {
  if (step.action == "powerloss") return PowerLoss(index, step);
  if (IsDiskAction(step.action)) {
    Node* node = step.node.empty() || step.node == "all" || step.node == "followers"
                     ? nullptr
                     : cluster_->Find(step.node == "leader" ? cluster_->leader() : step.node);
    return ExecuteDisk(index, step, node);
  }
  if (step.action == "resume" && step.node == "paused") {
    for (Node* n : cluster_->nodes()) {
      if (n->state != NodeState::kPaused) continue;
      Step one = step;
      one.node = n->name();
      if (absl::Status s = Execute(index, one); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (step.action == "restart" && (step.node == "followers" || step.node == "down")) {
    // Several nodes, one step each: "followers" = every node but the one
    // that leads, "down" = every node that is down.
    for (Node* n : cluster_->nodes()) {
      if (step.node == "followers" ? n->name() == cluster_->leader()
                                   : n->state != NodeState::kDown) {
        continue;
      }
      Step one = step;
      one.node = n->name();
      if (absl::Status s = Execute(index, one); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  Node* node = step.node.empty()
                   ? nullptr
                   : cluster_->Find(step.node == "leader" ? cluster_->leader() : step.node);
  if (!step.node.empty() && node == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no node ", step.node));
  }
  done_.push_back(StepRecord{step.action, node ? node->name() : "", clock_->NowNs()});
  if (step.action == "kill" || step.action == "pause" || step.action == "resume") {
    const int sig = step.action == "kill" ? SIGKILL : step.action == "pause" ? SIGSTOP : SIGCONT;
    const std::string command = absl::StrCat("kill -",
                                             step.action == "kill"    ? "9"
                                             : step.action == "pause" ? "STOP"
                                                                      : "CONT",
                                             " ", node->pid);
    absl::Status s = cluster_->Signal(node, sig);
    Log(index, step.action, node->name(), command, s, "");
    return s;
  }
  if (step.action == "wipe") {
    absl::Status s = cluster_->WipeData(node);
    Log(index, step.action, node->name(), ShellQuote({"rm", "-rf", node->data_dir()}), s, "");
    return s;
  }
  if (step.action == "bitflip") {
    return FlipBit(index, step, node);
  }
  if (step.action == "net") return Net(index, step);
  if (step.action == "partition" || step.action == "loss") return Partition(index, step, node);
  if (step.action == "probe-write") return ProbeWrite(index, step, node);
  if (step.action == "repair") {
    std::vector<std::string> command;
    absl::StatusOr<std::string> out = cluster_->Repair(node, &command);
    Log(index, "repair", node->name(), ShellQuote(command), out.status(),
        out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : "");
    return out.status();
  }
  if (step.action == "restart" && !step.after_bitflip.empty()) {
    return RestartAfterFlip(index, step, node);
  }
  if (step.action == "restart") {
    if (step.as == "replica") {
      node->binary = "kv-replica";
      node->followers.clear();
    } else if (!step.as.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("restart as '", step.as, "' (replica or nothing)"));
    }
    node->next_start_flags = step.flags;
    absl::StatusOr<std::vector<std::string>> argv = cluster_->StartNode(node);
    Log(index, step.action, node->name(),
        argv.ok() ? ShellQuote(*argv) : ShellQuote(cluster_->CommandLine(*node)), argv.status(),
        argv.ok() ? absl::StrCat("pid ", node->pid) : "");
    return argv.status();
  }
  if (step.action == "await-healed") {
    absl::Status s = cluster_->AwaitHealed(absl::Now() + absl::Seconds(15));
    Log(index, step.action, "", "(poll Admin.Status until every running follower caught up)", s,
        "");
    return s;
  }
  if (step.action == "promote-race") return PromoteRace(index, step);
  if (step.action == "settle") {
    // After a race: the node that leads with every follower streaming, if
    // one does within wait_s; else the documented way out of two leaders of
    // one epoch (docs/replication.md): promote one node, with a higher epoch.
    const absl::Time deadline = absl::Now() + absl::Seconds(step.wait_s);
    std::string seen;
    while (true) {
      seen.clear();
      // A leader cut off until now may still say it leads, with its old
      // followers' streams "streaming": only a leader of the newest epoch
      // any node knows counts.
      std::vector<std::pair<Node*, v1::StatusResponse>> statuses;
      uint64_t newest = 0;
      for (Node* n : cluster_->nodes()) {
        if (n->state != NodeState::kRunning) continue;
        absl::StatusOr<v1::StatusResponse> st =
            FetchStatus(cluster_->Channel(n->address), absl::Seconds(1));
        if (!st.ok()) continue;
        absl::StrAppend(&seen, seen.empty() ? "" : ", ", n->name(), " ", st->role(), " epoch ",
                        st->epoch());
        newest = std::max({newest, st->epoch(), st->last_epoch()});
        statuses.emplace_back(n, *std::move(st));
      }
      for (auto& [n, status] : statuses) {
        const v1::StatusResponse* st = &status;
        if (st->role() != "leader" || !st->ready() || st->epoch() < newest) continue;
        int streaming = 0;
        for (const auto& f : st->followers()) streaming += f.state() == "streaming";
        if (streaming < static_cast<int>(cluster_->nodes().size()) - 1) continue;
        std::vector<std::string> followers;
        for (Node* o : cluster_->nodes()) {
          if (o != n) followers.push_back(o->name());
        }
        const bool changed = cluster_->leader() != n->name();
        cluster_->ApplyPromotion(n, followers);
        done_.back().node = n->name();
        Log(index, "settle", n->name(), "(poll Admin.Status of every node)", absl::OkStatus(),
            absl::StrCat(n->name(), " leads epoch ", st->epoch(), " with every follower streaming",
                         changed ? " (the clients move to it)" : "", "; ", seen));
        return absl::OkStatus();
      }
      if (absl::Now() >= deadline) break;
      absl::SleepFor(absl::Milliseconds(100));  // Polling with a deadline.
    }
    Log(index, "settle", "", "(poll Admin.Status of every node)", absl::OkStatus(),
        absl::StrCat("no node leads with every follower streaming after ", step.wait_s, " s (",
                     seen, "): promote again, with a higher epoch"));
    Step again = step;
    again.action = "promote";
    if (again.candidates.empty()) again.candidates = {"followers"};
    if (again.followers.empty()) again.followers = {"others"};
    return Execute(index, again);
  }
  if (step.action == "promote") {
    // The most advanced running candidate: promoting a replica that lacks
    // entries another holds is what kvctl promote refuses.
    Node* best = nullptr;
    uint64_t best_index = 0;
    std::string positions;
    std::vector<std::string> candidates = step.candidates;
    if (candidates.size() == 1 && candidates[0] == "followers") {
      // Every node but the one that led: its data dir says it leads, so it
      // cannot be promoted again (kvctl: "already leads").
      candidates.clear();
      for (Node* n : cluster_->nodes()) {
        if (n->name() != cluster_->leader()) candidates.push_back(n->name());
      }
    }
    for (const std::string& c : candidates) {
      Node* n = cluster_->Find(c);
      if (n == nullptr) return absl::InvalidArgumentError(absl::StrCat("no node ", c));
      if (n->state != NodeState::kRunning) continue;
      absl::StatusOr<uint64_t> last = cluster_->LastIndex(*n);
      if (!last.ok()) continue;
      absl::StrAppend(&positions, positions.empty() ? "" : ", ", c, " at ", *last);
      if (best == nullptr || *last > best_index) {
        best = n;
        best_index = *last;
      }
    }
    if (best == nullptr) return absl::UnavailableError("no running candidate to promote");
    done_.back().node = best->name();
    std::vector<std::string> followers;
    if (step.followers.size() == 1 && step.followers[0] == "others") {
      // Every other node, the killed old leader too: it comes back as a
      // replica and must be told who leads (promote tolerates the old
      // leader's silence), else it rejoins nobody.
      for (Node* n : cluster_->nodes()) {
        if (n != best) followers.push_back(n->name());
      }
    } else {
      followers = step.followers;
    }
    std::vector<std::string> command;
    absl::StatusOr<std::string> out = cluster_->Promote(best, followers, false, &command);
    Log(index, "promote", best->name(), ShellQuote(command), out.status(),
        absl::StrCat("candidates: ", positions, out.ok() ? absl::StrCat("; ", *out) : ""));
    if (!out.ok() && out.status().code() == absl::StatusCode::kFailedPrecondition &&
        step.force == "if-refused") {
      out = cluster_->Promote(best, followers, true, &command);
      Log(index, "promote", best->name(), ShellQuote(command), out.status(), out.ok() ? *out : "");
    }
    return out.status();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown action ", step.action));
}

absl::Status Nemesis::PromoteRace(int index, const Step& step) {
  std::vector<std::string> candidates = step.candidates;
  if (candidates.empty() || (candidates.size() == 1 && candidates[0] == "followers")) {
    candidates.clear();
    for (Node* n : cluster_->nodes()) {
      if (n->name() != cluster_->leader()) candidates.push_back(n->name());
    }
  }
  std::vector<Cluster::PromoteAttempt> attempts;
  for (const std::string& c : candidates) {
    Node* n = cluster_->Find(c);
    if (n == nullptr) return absl::InvalidArgumentError(absl::StrCat("no node ", c));
    if (n->state != NodeState::kRunning) continue;
    Cluster::PromoteAttempt a;
    a.node = n;
    // Each pushes to every other node, the old leader too (as `promote`
    // with followers: others).
    for (Node* o : cluster_->nodes()) {
      if (o != n) a.followers.push_back(o->name());
    }
    attempts.push_back(std::move(a));
  }
  if (attempts.size() < 2) {
    return absl::FailedPreconditionError("promote-race needs two running candidates");
  }
  done_.back().node = absl::StrJoin(candidates, "+");
  int promoted = 0;
  for (const bool force : {false, true}) {
    if (force && (promoted > 0 || step.force != "if-refused")) break;
    for (Cluster::PromoteAttempt& a : attempts) a.result = absl::UnknownError("not run");
    if (absl::Status s = cluster_->PromoteAtOnce(&attempts, force); !s.ok()) {
      Log(index, "promote-race", done_.back().node, "", s, "");
      return s;
    }
    for (const Cluster::PromoteAttempt& a : attempts) {
      promoted += a.result.ok();
      Log(index, "promote-race", a.node->name(), ShellQuote(a.command), a.result.status(),
          a.result.ok() ? absl::StrCat("promoted, epoch ", a.epoch) : "refused");
    }
  }
  if (promoted == 0) {
    // Safe, and possible: each candidate may hold a promise the other needs
    // (docs/replication.md, "Promotion"). The documented way out: promote
    // one node, which picks a higher epoch.
    Log(index, "promote-race", done_.back().node, "", absl::OkStatus(),
        "every promotion of the race was refused: promoting one node");
    Step again = step;
    again.action = "promote";
    again.candidates = candidates;
    again.followers = {"others"};
    return Execute(index, again);
  }
  Log(index, "promote-race", cluster_->leader(), "(the clients follow this one)", absl::OkStatus(),
      absl::StrCat(promoted, " of ", attempts.size(), " promotions succeeded"));
  return absl::OkStatus();
}

absl::StatusOr<Cluster*> Nemesis::GroupFor(const Step& step) {
  if (step.shard.empty()) return groups_.front();
  if (step.shard == "same") return cluster_;
  if (step.shard == "random") {
    return groups_[std::uniform_int_distribution<size_t>(0, groups_.size() - 1)(shard_rng_)];
  }
  for (Cluster* g : groups_) {
    if (g->shard() == step.shard) return g;
  }
  return absl::InvalidArgumentError(absl::StrCat("no shard ", step.shard));
}

absl::Status Nemesis::Heal(absl::Time deadline) {
  if (absl::Status s = HealNetwork(); !s.ok()) return s;
  for (Cluster* group : groups_) {
    cluster_ = group;
    for (Node* n : cluster_->nodes()) {
      if (n->state != NodeState::kPaused) continue;
      const std::string command = absl::StrCat("kill -CONT ", n->pid);
      absl::Status s = cluster_->Signal(n, SIGCONT);
      Log(-1, "heal", n->name(), command, s, "");
      if (!s.ok()) return s;
    }
  }
  for (Cluster* group : groups_) {
    cluster_ = group;
    absl::Status s = cluster_->AwaitHealed(deadline);
    Log(-1, "healed", groups_.size() > 1 ? group->shard() : "",
        "(poll Admin.Status until every running follower caught up)", s, "");
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kvstore::fault
