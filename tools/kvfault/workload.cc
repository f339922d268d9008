#include "tools/kvfault/workload.h"

#include <algorithm>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvstore::fault {
namespace {

// "version mismatch: expected 5, current version is 7" -> 7.
bool ParseCurrentVersion(const std::string& message, uint64_t* version) {
  constexpr char kMarker[] = "current version is ";
  const size_t at = message.find(kMarker);
  if (at == std::string::npos) return false;
  size_t start = at + sizeof(kMarker) - 1;
  size_t end = start;
  while (end < message.size() && message[end] >= '0' && message[end] <= '9') ++end;
  return end > start && absl::SimpleAtoi(message.substr(start, end - start), version);
}

std::string Describe(const grpc::Status& s) {
  return absl::StrCat(s.error_code(), " ", s.error_message());
}

// How a write's error is recorded (docs/reliability.md).
//   fail: INVALID_ARGUMENT, and a version mismatch (with its current version)
//   info: everything else, because the write may have been applied
void ClassifyWriteError(const grpc::Status& s, Event* done) {
  uint64_t current = 0;
  if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    done->type = "fail";
  } else if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
             absl::StrContains(s.error_message(), "version mismatch") &&
             ParseCurrentVersion(s.error_message(), &current)) {
    done->type = "fail";
    done->current_version = current;
  } else {
    done->type = "info";
  }
  done->error = Describe(s);
}

}  // namespace

Load::Load(Cluster* cluster, HistoryRecorder* history, LoadOptions options)
    : cluster_(cluster), groups_{cluster}, history_(history), options_(std::move(options)) {}

void Load::Touch(const std::string& key) {
  absl::MutexLock l(&mu_);
  keys_.insert(key);
}

size_t Load::keys_touched() {
  absl::MutexLock l(&mu_);
  return keys_.size();
}

void Load::Run() {
  int total_clients = 0;
  for (const WorkloadSpec& w : options_.workloads) total_clients += w.clients;
  const int64_t per_client = std::max<int64_t>(1, options_.max_ops / std::max(1, total_clients));
  std::vector<std::thread> threads;
  int before = 0;
  for (const WorkloadSpec& w : options_.workloads) {
    // replica-reads writes nothing: its letter names no value.
    const char letter = w.kind == "register" ? 'r' : w.kind == "set" ? 's' : 'a';
    for (int c = 0; c < w.clients; ++c) {
      threads.emplace_back(
          [this, &w, letter, c, before, per_client] { Client(w, letter, c, before, per_client); });
    }
    before += w.clients;
  }
  for (std::thread& t : threads) t.join();
}

void Load::Client(const WorkloadSpec& spec, char letter, int client, int clients_before,
                  int64_t max_ops) {
  const int global_client = clients_before + client;
  std::mt19937_64 rng(options_.seed * 1000003 + static_cast<uint64_t>(global_client));
  const absl::Duration interval = absl::Seconds(spec.clients / std::max(0.001, spec.rate));
  const absl::Time start = absl::Now();
  const absl::Time end = start + options_.duration;
  absl::Time next = start + interval * client / std::max(1, spec.clients);
  absl::Duration backoff = absl::ZeroDuration();
  // After an error a register client only reads until a read succeeds: each
  // info write stays open for the rest of the history and multiplies the
  // checker's search on its key, so an outage should cost one per client,
  // not one per attempt.
  bool probing = false;
  std::map<std::string, uint64_t> known;  // Key -> version this client last saw (0 absent).
  int64_t proc = NewProc();
  counters_.procs.fetch_add(1);
  int64_t seq = 0;
  std::pair<std::string, std::string> route;  // The leader this client uses: name, address.
  for (int64_t n = 0; n < max_ops && !stop_.load(); ++n) {
    absl::Time now = absl::Now();
    if (next > now) absl::SleepFor(next - now);  // Pacing to the rate, not synchronisation.
    now = absl::Now();
    if (now >= end) break;
    next = std::max(next + interval, now) + backoff;

    Event invoke;
    invoke.proc = proc;
    invoke.type = "invoke";
    std::string key;
    int choice = 0;  // 0 get, 1 set, 2 cas, 3 delete, 4 replica read.
    if (spec.kind == "replica-reads") {
      // The register's hot keys, so the reads meet values being written.
      key = absl::StrCat("r", rng() % static_cast<uint64_t>(std::max(1, spec.keys)));
      choice = 4;
    } else if (spec.kind == "register") {
      key = absl::StrCat("r", rng() % static_cast<uint64_t>(std::max(1, spec.keys)));
      const int dice = static_cast<int>(rng() % 100);
      choice = dice < 40 ? 0 : dice < 60 ? 1 : dice < 90 ? 2 : 3;
      if (probing) choice = 0;  // The dice were still drawn: the stream stays seeded.

    } else {
      key = absl::StrCat("s", global_client, "-", seq + 1);
      choice = 1;
    }
    invoke.key = key;
    if (choice != 4) Touch(key);  // A key only read from replicas needs no final read.
    // The leader is looked up after the invoke is recorded, so a write sent
    // to an old leader was invoked before the new one could answer anything
    // (kvcheck's stale-epoch-ack relies on that order). `node` names who
    // answers, for its epoch-two-nodes check.
    // In etcd mode a client keeps the leader it found until that one fails
    // it (as a client with a cached leader would), so a leader that kept
    // acknowledging after losing its lease would be caught doing so.
    std::unique_ptr<v1::KeyValue::Stub> stub;
    Event done = invoke;
    // Through a router the answering node is unknown: `node` stays empty,
    // and the per-node checks leave the op out.
    auto connect = [&] {
      if (!options_.routers.empty()) {
        stub = v1::KeyValue::NewStub(cluster_->Channel(
            options_.routers[static_cast<size_t>(global_client) % options_.routers.size()]));
        return;
      }
      if (!cluster_->etcd_mode() || route.first.empty()) route = cluster_->leader_route();
      stub = v1::KeyValue::NewStub(cluster_->Channel(route.second));
      done.node = route.first;
    };
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.request_timeout));
    grpc::Status s;
    if (choice == 0 || choice == 4) {
      // A replica read may be stale: its own f, so kvcheck never holds it to
      // the leader's order, and it teaches this client no version.
      invoke.f = done.f = choice == 0 ? "get" : "read-any";
      v1::GetRequest request;
      request.set_key(key);
      if (choice == 4) request.set_read_mode(v1::READ_MODE_ANY_REPLICA);
      v1::GetResponse response;
      history_->Record(invoke);
      connect();
      s = stub->Get(&context, request, &response);
      if (s.ok()) {
        done.type = "ok";
        done.found = response.found();
        if (response.found()) {
          done.value = response.value();
          done.version = response.version();
        }
        if (choice == 0) known[key] = response.found() ? response.version() : 0;
      } else {
        done.type = "fail";  // A failed read tells nothing; the checker leaves it out.
        done.error = Describe(s);
      }
    } else if (choice == 1 || choice == 2) {
      const std::string value =
          absl::StrCat(std::string(1, letter), "c", global_client, "-", ++seq);
      invoke.f = done.f = choice == 1 ? "set" : "cas";
      invoke.value = done.value = value;
      v1::SetRequest request;
      request.set_key(key);
      request.set_value(value);
      if (choice == 2) {
        const uint64_t if_version = known.count(key) ? known[key] : 0;
        request.set_if_version(if_version);
        invoke.if_version = done.if_version = if_version;
      }
      v1::SetResponse response;
      history_->Record(invoke);
      connect();
      s = stub->Set(&context, request, &response);
      if (s.ok()) {
        done.type = "ok";
        done.version = response.version();
        known[key] = response.version();
      } else {
        ClassifyWriteError(s, &done);
        if (done.current_version) known[key] = *done.current_version;
      }
    } else {
      invoke.f = done.f = "delete";
      v1::DeleteRequest request;
      request.set_key(key);
      v1::DeleteResponse response;
      history_->Record(invoke);
      connect();
      s = stub->Delete(&context, request, &response);
      if (s.ok()) {
        done.type = "ok";
        done.deleted = response.deleted();
        if (response.deleted()) done.version = response.version();
        known[key] = 0;
      } else {
        ClassifyWriteError(s, &done);
      }
    }
    history_->Record(done);
    counters_.ops.fetch_add(1);
    if (done.type == "ok") {
      counters_.ok.fetch_add(1);
      backoff = absl::ZeroDuration();
      probing = false;
    } else {
      (done.type == "fail" ? counters_.fail : counters_.info).fetch_add(1);
      // Errors mean the cluster is in trouble: back off (50 ms doubling to
      // 500 ms) so a long outage yields a bounded number of open writes.
      if (!s.ok() && !done.current_version) {  // A version mismatch is no trouble.
        route.first.clear();                   // Ask who leads before the next one.
        probing = spec.kind == "register";
        backoff = std::min(absl::Milliseconds(500), std::max(absl::Milliseconds(50), backoff * 2));
      }
    }
    if (done.type == "info") {
      // The old operation may still take effect at any time: a new process.
      proc = NewProc();
      counters_.procs.fetch_add(1);
      known.clear();
    }
  }
}

absl::Status Load::FinalReads(absl::Time deadline) {
  std::vector<std::string> pending;
  {
    absl::MutexLock l(&mu_);
    pending.assign(keys_.begin(), keys_.end());
  }
  std::map<std::string, Final> finals;
  constexpr size_t kBatch = 200;
  absl::Status last_error;
  while (!pending.empty()) {
    std::vector<std::string> retry;
    for (size_t start = 0; start < pending.size(); start += kBatch) {
      const size_t end = std::min(pending.size(), start + kBatch);
      std::vector<int64_t> procs;
      v1::MultiGetRequest request;
      request.set_read_mode(v1::READ_MODE_LEADER);
      for (size_t i = start; i < end; ++i) {
        Event invoke;
        invoke.proc = NewProc();  // One op at a time per proc: a proc per key.
        invoke.type = "invoke";
        invoke.f = "get";
        invoke.key = pending[i];
        invoke.final_phase = true;
        history_->Record(invoke);
        procs.push_back(invoke.proc);
        request.add_keys(pending[i]);
      }
      auto stub = v1::KeyValue::NewStub(cluster_->Channel(
          options_.routers.empty() ? cluster_->leader_address() : options_.routers.front()));
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      v1::MultiGetResponse response;
      grpc::Status s = stub->MultiGet(&context, request, &response);
      if (s.ok() && response.results_size() != request.keys_size()) {
        s = grpc::Status(grpc::StatusCode::INTERNAL, "MultiGet: wrong number of results");
      }
      if (!s.ok())
        last_error = absl::UnavailableError(absl::StrCat("final MultiGet: ", Describe(s)));
      for (size_t i = start; i < end; ++i) {
        Event done;
        done.proc = procs[i - start];
        done.f = "get";
        done.key = pending[i];
        done.final_phase = true;
        const v1::GetResult* r = s.ok() ? &response.results(static_cast<int>(i - start)) : nullptr;
        if (r == nullptr || (r->has_error() && r->error().code() != 0)) {
          done.type = "fail";
          done.error = r == nullptr ? Describe(s) : r->error().message();
          retry.push_back(pending[i]);
        } else {
          done.type = "ok";
          done.found = r->found();
          if (r->found()) {
            done.value = r->value();
            done.version = r->version();
          }
          finals[pending[i]] = Final{r->found(), r->value(), r->version()};
        }
        history_->Record(done);
      }
    }
    pending.swap(retry);
    if (!pending.empty()) {
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat(pending.size(), " keys never read; last: ", last_error.message()));
      }
      absl::SleepFor(absl::Milliseconds(100));  // Polling with a deadline.
    }
  }
  finals_.assign(finals.begin(), finals.end());
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Load::CompareReplicas(std::vector<std::string>* examples) {
  int64_t differing = 0;
  const bool sharded = groups_.size() > 1;
  std::vector<int> owners(finals_.size(), 0);  // Groups whose replicas compared the key.
  for (Cluster* group : groups_) {
    std::vector<bool> owned(finals_.size(), false);
    const std::string leader = group->leader();
    for (Node* node : group->nodes()) {
      // With several groups the leader is read too: it says which keys are
      // its shard's even when the group has no running replica.
      if ((node->name() == leader && !sharded) || node->state != NodeState::kRunning) continue;
      auto stub = v1::KeyValue::NewStub(group->Channel(node->address));
      constexpr size_t kBatch = 500;
      for (size_t start = 0; start < finals_.size(); start += kBatch) {
        const size_t end = std::min(finals_.size(), start + kBatch);
        v1::MultiGetRequest request;
        request.set_read_mode(v1::READ_MODE_ANY_REPLICA);
        for (size_t i = start; i < end; ++i) request.add_keys(finals_[i].first);
        grpc::ClientContext context;
        context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
        v1::MultiGetResponse response;
        grpc::Status s = stub->MultiGet(&context, request, &response);
        if (!s.ok() || response.results_size() != request.keys_size()) {
          return absl::UnavailableError(
              absl::StrCat("reading ", node->name(), " (", node->address, "): ", Describe(s)));
        }
        for (size_t i = start; i < end; ++i) {
          const v1::GetResult& r = response.results(static_cast<int>(i - start));
          const Final& f = finals_[i].second;
          if (sharded && r.has_error() && r.error().reason() == "WRONG_SHARD") continue;
          if (r.has_error() && r.error().code() != 0) {
            return absl::UnavailableError(absl::StrCat(
                "reading ", node->name(), " key ", finals_[i].first, ": ", r.error().message()));
          }
          owned[i] = true;
          const bool same = r.found() == f.found &&
                            (!f.found || (r.value() == f.value && r.version() == f.version));
          if (same) continue;
          if (++differing <= 5) {
            examples->push_back(absl::StrCat(
                node->name(), " key ", finals_[i].first, ": ",
                r.found() ? absl::StrCat(r.value(), "@", r.version()) : "absent",
                ", leader: ", f.found ? absl::StrCat(f.value, "@", f.version) : "absent"));
          }
        }
      }
    }
    for (size_t i = 0; i < finals_.size(); ++i) {
      owners[i] += owned[i];
      if (owned[i]) key_shards_[finals_[i].first] = group->shard();
    }
  }
  if (sharded) {
    // Each key lives on one shard: compared by none (a group without a
    // running replica aside) or by two would mean the ring is not what the
    // shards enforce.
    int64_t unowned = 0, twice = 0;
    for (int n : owners) {
      unowned += n == 0;
      twice += n > 1;
    }
    if (twice > 0) {
      return absl::InternalError(absl::StrCat(twice, " keys answered by replicas of two shards"));
    }
    if (unowned > 0) {
      examples->push_back(absl::StrCat(unowned, " keys compared on no shard's replicas"));
      differing += unowned;
    }
  }
  return differing;
}

}  // namespace kvstore::fault
