#include "tools/kvfault/network.h"

#include "absl/strings/str_cat.h"

namespace kvstore::fault {

absl::StatusOr<std::string> Network::Route(const std::string& from, const std::string& to,
                                           const std::string& to_address) {
  const std::string link = LinkName(from, to);
  auto it = proxies_.find(link);
  if (it != proxies_.end()) {
    if (it->second->target() != to_address) {
      return absl::FailedPreconditionError(
          absl::StrCat("link ", link, " leads to ", it->second->target(), ", not to ", to_address));
    }
    return it->second->address();
  }
  auto proxy = std::make_unique<TcpProxy>(to_address, seed_ + proxies_.size() * 7919);
  if (absl::Status s = proxy->Start(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("proxy for ", link, ": ", s.message()));
  }
  auto f = faults_.find(link);
  if (f != faults_.end()) proxy->Set(f->second);
  const std::string address = proxy->address();
  proxies_[link] = std::move(proxy);
  return address;
}

void Network::Set(const std::string& link, const LinkFaults& faults) {
  faults_[link] = faults;
  auto it = proxies_.find(link);
  if (it != proxies_.end()) it->second->Set(faults);
}

int Network::Reset(const std::string& link) {
  auto it = proxies_.find(link);
  return it == proxies_.end() ? 0 : it->second->ResetConnections();
}

LinkFaults Network::faults(const std::string& link) const {
  auto it = faults_.find(link);
  return it == faults_.end() ? LinkFaults() : it->second;
}

std::vector<std::string> Network::links() const {
  std::vector<std::string> out;
  for (const auto& [name, proxy] : proxies_) out.push_back(name);
  return out;
}

std::string Network::Describe(const std::string& link) const {
  auto it = proxies_.find(link);
  if (it == proxies_.end()) return "not made";
  const ProxyStats s = it->second->stats();
  return absl::StrCat(it->second->address(), " -> ", it->second->target(), ": accepted ",
                      s.accepted, ", refused ", s.refused, ", reset ", s.reset, ", open ", s.open,
                      ", ", s.bytes_to_target, " B to target, ", s.bytes_from_target, " B back");
}

}  // namespace kvstore::fault
