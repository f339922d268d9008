// A kv-router in etcd mode registers itself: it keeps <P>/routers/<id> =
// {addr, ring_version, topology_revision, started_unix_ms} (coord::RouterRecord)
// on a lease of its own, so that a migration's cleanup knows which ring every
// live router routes by (docs/resharding.md, docs/router.md). A router that
// dies or hangs stops renewing the lease, and etcd deletes its key after the
// TTL: it then no longer counts.
//
//   - The key is written once at Start and again only when Update brings a
//     different ring version or topology revision.
//   - A lost lease (etcd unreachable past the TTL, or the lease gone) is
//     replaced by a new one and the key written on it again, retried every
//     `retry` until it works. Routing never waits for any of this.
//   - Stop revokes the lease, so the key goes at once.
//
// Thread-safe; the work happens on its own thread between Start and Stop.
#ifndef KVSTORE_SERVICES_ROUTER_ROUTER_REGISTRATION_H_
#define KVSTORE_SERVICES_ROUTER_ROUTER_REGISTRATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/lease.h"
#include "common/coord/schema.h"

namespace kvstore {

struct RouterRegistrationOptions {
  std::string prefix;  // The cluster's etcd prefix.
  std::string id;      // The key's last part.
  std::string addr;    // Where clients reach this router.
  absl::Duration lease_ttl = absl::Seconds(3);
  // After a failed grant or write, the next attempt.
  absl::Duration retry = absl::Seconds(1);
};

// "host:port" of `address` (as the server bound it), with the machine's host
// name in place of a wildcard host (0.0.0.0, [::], empty), so that routers
// on one machine differ by port and routers on different machines by host.
std::string DefaultRouterId(const std::string& address);

class RouterRegistration {
 public:
  // `etcd` must outlive the registration.
  RouterRegistration(coord::EtcdClient* etcd, RouterRegistrationOptions options);
  ~RouterRegistration();
  RouterRegistration(const RouterRegistration&) = delete;
  RouterRegistration& operator=(const RouterRegistration&) = delete;

  // Starts registering with the given routing state (without waiting for
  // etcd).
  void Start(int64_t ring_version, int64_t topology_revision);
  // The routing table now in use; the key is rewritten if either changed.
  void Update(int64_t ring_version, int64_t topology_revision);
  // Ends the thread and revokes the lease. Idempotent.
  void Stop();

  // What etcd holds for this router as far as this process knows (the last
  // write that succeeded, on the current lease); empty addr before the first.
  coord::RouterRecord registered() const;

 private:
  void Loop();

  coord::EtcdClient* const etcd_;
  const RouterRegistrationOptions options_;
  const std::string key_;

  mutable absl::Mutex mu_;
  coord::RouterRecord wanted_ ABSL_GUARDED_BY(mu_);
  coord::RouterRecord written_ ABSL_GUARDED_BY(mu_);
  bool lease_lost_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<coord::Lease> lease_;  // Loop's thread only (and Stop after the join).
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_ROUTER_REGISTRATION_H_
