#include "services/node/ring_feed.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/coord/schema.h"
#include "glog/logging.h"

namespace kvstore {

absl::StatusOr<VersionedRing> RingFromValue(absl::string_view value) {
  absl::StatusOr<coord::RingRecord> record = coord::ParseRingValue(value);
  if (!record.ok()) return record.status();
  absl::StatusOr<HashRing> ring = coord::BuildRing(*record);
  if (!ring.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring version ", record->version, ": ", ring.status().message()));
  }
  return VersionedRing{std::make_shared<const HashRing>(*std::move(ring)), record->version};
}

RingFeed::RingFeed(coord::EtcdClient* client, const std::string& prefix, OwnershipGate* gate)
    : gate_(gate) {
  coord::TopologyViewOptions options;
  // The one key: nothing else starts with "<P>/ring".
  options.prefix = coord::RingKey(prefix);
  options.on_snapshot = [this](std::shared_ptr<const coord::TopologySnapshot> snapshot) {
    OnSnapshot(*snapshot);
  };
  view_ = std::make_unique<coord::TopologyView>(client, std::move(options));
}

RingFeed::~RingFeed() { Stop(); }

void RingFeed::Start() { view_->Start(); }

void RingFeed::Stop() { view_->Stop(); }

bool RingFeed::AwaitFirstRead(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&read_), timeout);
}

void RingFeed::OnSnapshot(const coord::TopologySnapshot& snapshot) {
  auto entry = snapshot.entries->find("");
  if (entry == snapshot.entries->end()) {
    if (!warned_absent_) {
      warned_absent_ = true;
      if (gate_->enabled()) {
        LOG(WARNING) << "etcd revision " << snapshot.revision
                     << ": the ring key is gone; keeping ring version " << gate_->ring_version();
      } else {
        LOG(WARNING) << "etcd revision " << snapshot.revision
                     << ": no ring key (the cluster was initialised by an older kvctl): shard "
                     << gate_->shard() << " serves every key, ownership is not checked";
      }
    }
  } else {
    warned_absent_ = false;
    absl::StatusOr<VersionedRing> ring = RingFromValue(entry->second);
    if (!ring.ok()) {
      if (last_error_ != ring.status().message()) {
        last_error_ = std::string(ring.status().message());
        LOG(ERROR) << "etcd revision " << snapshot.revision << ": keeping ring version "
                   << gate_->ring_version() << ": " << last_error_;
      }
    } else {
      last_error_.clear();
      const int64_t before = gate_->ring_version();
      const bool first = !gate_->enabled();
      gate_->SetRing(ring->ring, ring->version);
      if (first || ring->version > before) {
        const HashRing& r = *ring->ring;
        const std::vector<double> shares = r.Ownership();
        std::string owns = absl::StrCat("shard ", gate_->shard(),
                                        " is not in it: it owns no key (every key is "
                                        "WRONG_SHARD) until a migration gives it ranges");
        for (size_t i = 0; i < r.shards().size(); ++i) {
          if (r.shards()[i] == gate_->shard()) {
            owns = absl::StrFormat("shard %s owns %.1f%% of the ring", gate_->shard(),
                                   shares[i] * 100);
          }
        }
        LOG(INFO) << "Ring version " << ring->version << " (" << absl::StrJoin(r.shards(), ",")
                  << "; vnodes " << r.vnodes() << "): " << owns;
      }
    }
  }
  absl::MutexLock lock(&mu_);
  read_ = true;
}

}  // namespace kvstore
