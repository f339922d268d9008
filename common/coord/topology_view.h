// TopologyView: a live, read-only copy of every key under a prefix in etcd
// (the cluster's topology: `<prefix>/cluster`, `ring`, `shards/...`), handed
// out as immutable snapshots.
//
// One linearizable Range of the prefix at revision R, then a watch from R+1
// (WatchStream). Each batch of events makes a new snapshot. When the watch
// reports a compaction (it asked for history etcd no longer has), the view
// reads the prefix afresh and watches on from there, so no change is lost:
// the new snapshot is the store's state at the read. When the stream breaks
// (etcd down, restarted, another endpoint), the view reconnects every
// retry_delay and resumes from the last revision it has seen. Progress
// notifications advance revision() without a new snapshot.
//
// While etcd is unreachable, Current() keeps the last snapshot. Snapshot
// revisions strictly increase; callbacks get them in that order, one at a
// time, on the view's thread, and must not call Stop() or destroy the view.
//
// Thread-safe.
#ifndef KVSTORE_COMMON_COORD_TOPOLOGY_VIEW_H_
#define KVSTORE_COMMON_COORD_TOPOLOGY_VIEW_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/watcher.h"

namespace kvstore::coord {

struct TopologySnapshot {
  // The store's revision this snapshot is complete up to.
  int64_t revision = 0;
  // Keys with the view's prefix removed ("shards/s1/leader"), and values.
  std::shared_ptr<const std::map<std::string, std::string>> entries;
};

struct TopologyViewOptions {
  // Every key starting with it, e.g. "/kvstore/main/".
  std::string prefix;
  // Called with each new snapshot (may be empty).
  std::function<void(std::shared_ptr<const TopologySnapshot>)> on_snapshot;
  // Pause between attempts while etcd is unreachable.
  absl::Duration retry_delay = absl::Milliseconds(200);
};

class TopologyView {
 public:
  // `client` must outlive the view. Nothing runs before Start().
  TopologyView(EtcdClient* client, TopologyViewOptions options);
  // Stops.
  ~TopologyView();
  TopologyView(const TopologyView&) = delete;
  TopologyView& operator=(const TopologyView&) = delete;

  void Start();
  // Ends the watch and joins the view's thread. Idempotent.
  void Stop();

  // The latest snapshot; nullptr until the first read succeeded.
  std::shared_ptr<const TopologySnapshot> Current() const;
  // The latest revision the view knows to be complete (snapshot or progress).
  int64_t revision() const;
  // True while a watch is open and confirmed by etcd.
  bool watching() const;

  struct Counters {
    int64_t reads = 0;        // Full reads of the prefix (1 + one per compaction).
    int64_t compactions = 0;  // Watches ended by a compaction.
    int64_t reconnects = 0;   // Watches ended by a broken stream.
    int64_t progress = 0;     // Progress notifications received.
  };
  Counters counters() const;

  // Test hook: while paused the view holds no watch and opens none, so the
  // test can write and compact behind its back.
  void PauseForTesting(bool paused);

 private:
  void Run();
  // One full read; false when it failed (logged).
  bool ReadAll();
  // Watches until the stream ends, etcd compacts, or the view stops.
  void WatchFromLast();
  void Publish(std::shared_ptr<const std::map<std::string, std::string>> entries, int64_t revision);
  // Waits `d` or until stopped or unpaused; returns false when stopping.
  bool Pause(absl::Duration d);

  EtcdClient* const client_;
  const TopologyViewOptions options_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool watching_ ABSL_GUARDED_BY(mu_) = false;
  WatchStream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;  // Owned by the view's thread.
  std::shared_ptr<const TopologySnapshot> current_ ABSL_GUARDED_BY(mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  Counters counters_ ABSL_GUARDED_BY(mu_);

  // The view's thread only.
  std::map<std::string, std::string> entries_;
  bool need_read_ = true;

  std::thread thread_;
};

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_TOPOLOGY_VIEW_H_
