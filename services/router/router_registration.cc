#include "services/router/router_registration.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"

namespace kvstore {

std::string DefaultRouterId(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  const std::string port = colon == std::string::npos ? "" : address.substr(colon + 1);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') host = name;
  }
  return port.empty() ? host : absl::StrCat(host, ":", port);
}

RouterRegistration::RouterRegistration(coord::EtcdClient* etcd, RouterRegistrationOptions options)
    : etcd_(etcd),
      options_(std::move(options)),
      key_(coord::RouterKey(options_.prefix, options_.id)) {}

RouterRegistration::~RouterRegistration() { Stop(); }

void RouterRegistration::Start(int64_t ring_version, int64_t topology_revision) {
  {
    absl::MutexLock l(&mu_);
    wanted_.id = options_.id;
    wanted_.addr = options_.addr;
    wanted_.started_unix_ms = absl::ToUnixMillis(absl::Now());
    wanted_.ring_version = ring_version;
    wanted_.topology_revision = topology_revision;
  }
  thread_ = std::thread([this] { Loop(); });
}

void RouterRegistration::Update(int64_t ring_version, int64_t topology_revision) {
  absl::MutexLock l(&mu_);
  wanted_.ring_version = ring_version;
  wanted_.topology_revision = topology_revision;
}

coord::RouterRecord RouterRegistration::registered() const {
  absl::MutexLock l(&mu_);
  return written_;
}

void RouterRegistration::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (lease_ != nullptr) {
    if (absl::Status s = lease_->Revoke(); !s.ok()) {
      LOG(WARNING) << "router " << options_.id << ": revoking its lease: " << s << " (its key "
                   << key_ << " goes when the lease runs out)";
    }
    lease_.reset();
  }
}

void RouterRegistration::Loop() {
  std::string last_error;
  bool failed = false;
  bool registered_once = false;
  for (;;) {
    coord::RouterRecord wanted;
    bool need_lease = false;
    {
      absl::MutexLock l(&mu_);
      const auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || lease_lost_ || !(wanted_ == written_);
      };
      if (failed) {
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.retry);
      } else {
        mu_.Await(absl::Condition(&work));
      }
      if (stopping_) return;
      if (lease_lost_) {
        written_ = coord::RouterRecord();
        lease_lost_ = false;
        need_lease = true;
      }
      wanted = wanted_;
    }
    if (need_lease || lease_ == nullptr) {
      if (lease_ != nullptr)
        LOG(WARNING) << "router " << options_.id << ": lease lost; "
                     << "registering again on a new one";
      lease_.reset();
      coord::LeaseOptions lease_options;
      lease_options.ttl = options_.lease_ttl;
      lease_options.on_lost = [this](const absl::Status& why) {
        LOG(WARNING) << "router " << options_.id << ": lease lost: " << why;
        absl::MutexLock l(&mu_);
        lease_lost_ = true;
      };
      absl::StatusOr<std::unique_ptr<coord::Lease>> lease =
          coord::Lease::Grant(etcd_, lease_options);
      if (!lease.ok()) {
        failed = true;
        if (last_error != lease.status().message()) {
          last_error = std::string(lease.status().message());
          LOG(WARNING) << "router " << options_.id
                       << ": cannot register in etcd (lease): " << last_error
                       << "; trying again every " << absl::FormatDuration(options_.retry);
        }
        continue;
      }
      lease_ = *std::move(lease);
    }
    absl::StatusOr<int64_t> put = etcd_->Put(key_, coord::RouterValue(wanted), lease_->id());
    if (!put.ok()) {
      failed = true;
      if (last_error != put.status().message()) {
        last_error = std::string(put.status().message());
        LOG(WARNING) << "router " << options_.id << ": cannot write " << key_ << ": " << last_error
                     << "; trying again every " << absl::FormatDuration(options_.retry);
      }
      continue;
    }
    if (failed || need_lease || !registered_once) {
      LOG(INFO) << "router " << options_.id << ": registered as " << key_ << " (ring version "
                << wanted.ring_version << ", topology revision " << wanted.topology_revision
                << ", lease " << lease_->id() << ")";
    }
    failed = false;
    registered_once = true;
    last_error.clear();
    absl::MutexLock l(&mu_);
    written_ = wanted;
  }
}

}  // namespace kvstore
