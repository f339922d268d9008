#include "common/coord/etcd_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/coord/txn.h"
#include "glog/logging.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kvstore::coord {
namespace {

absl::Status CheckEndpoint(absl::string_view endpoint) {
  const size_t colon = endpoint.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(endpoint.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd endpoint \"", endpoint, "\" is not host:port"));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& endpoint) {
  grpc::ChannelArguments args;
  // A restarted etcd is reached again within a second, not after gRPC's
  // default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // gRPC also takes this as the time a connection attempt may take to get the
  // server's HTTP/2 SETTINGS. An etcd that has just started accepts TCP
  // before it serves; attempts cut shorter than that failed one after the
  // other for many seconds on a loaded machine.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  // Pings find a silent peer under an open stream. etcd's server refuses
  // pings more often than --grpc-keepalive-min-time (5 s by default).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Each client its own connection, so two clients in one process (tests,
  // two contenders) fail independently.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(const EtcdClientOptions& options) {
  std::vector<std::string> endpoints;
  for (absl::string_view part : absl::StrSplit(options.endpoints, ',', absl::SkipWhitespace())) {
    std::string endpoint(absl::StripAsciiWhitespace(part));
    // etcdctl's "http://host:port" is accepted; TLS is not supported yet.
    absl::string_view view(endpoint);
    if (absl::ConsumePrefix(&view, "https://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("etcd endpoint \"", endpoint, "\": TLS is not supported"));
    }
    absl::ConsumePrefix(&view, "http://");
    if (absl::Status s = CheckEndpoint(view); !s.ok()) return s;
    endpoints.emplace_back(view);
  }
  if (endpoints.empty()) {
    return absl::InvalidArgumentError("no etcd endpoint given (expected host:port[,host:port...])");
  }
  if (options.call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("etcd call timeout must be positive");
  }
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(endpoints), options));
}

EtcdClient::EtcdClient(std::vector<std::string> endpoints, const EtcdClientOptions& options)
    : endpoints_(std::move(endpoints)),
      call_timeout_(options.call_timeout),
      on_call_(options.on_call) {
  for (const std::string& endpoint : endpoints_) channels_.push_back(NewChannel(endpoint));
}

EtcdClient::~EtcdClient() = default;

std::shared_ptr<grpc::Channel> EtcdClient::CurrentChannel() const {
  absl::MutexLock lock(&mu_);
  return channels_[current_];
}

std::string EtcdClient::CurrentEndpoint() const {
  absl::MutexLock lock(&mu_);
  return endpoints_[current_];
}

void EtcdClient::ReportUnavailable(const std::shared_ptr<grpc::Channel>& channel) {
  absl::MutexLock lock(&mu_);
  if (channels_[current_] != channel || channels_.size() == 1) return;
  const size_t next = (current_ + 1) % channels_.size();
  LOG(WARNING) << "etcd " << endpoints_[current_] << " unavailable; trying " << endpoints_[next];
  current_ = next;
}

template <typename Call>
absl::Status EtcdClient::Invoke(absl::string_view method, Call call) {
  const absl::Time started = absl::Now();
  const absl::Time deadline = started + call_timeout_;
  absl::Duration pause = absl::Milliseconds(25);
  grpc::Status status;
  std::string endpoint;
  int attempts = 0;
  while (true) {
    std::shared_ptr<grpc::Channel> channel;
    {
      absl::MutexLock lock(&mu_);
      channel = channels_[current_];
      endpoint = endpoints_[current_];
    }
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    status = call(channel, &context);
    ++attempts;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    ReportUnavailable(channel);
    // A full round over the endpoints failed: wait a little (a channel in
    // its reconnect backoff fails calls at once) before the next round.
    if (attempts % channels_.size() == 0) {
      if (absl::Now() + pause >= deadline) break;
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(400));
    }
  }
  if (on_call_) {
    on_call_(method, absl::Now() - started, static_cast<absl::StatusCode>(status.error_code()));
  }
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("etcd ", method, " on ", endpoint, " (", attempts,
                                   " attempt(s)): ", status.error_message()));
}

absl::StatusOr<RangeResult> EtcdClient::Range(absl::string_view key, const RangeOptions& options) {
  etcdserverpb::RangeRequest request;
  request.set_key(std::string(key));
  if (options.prefix) request.set_range_end(PrefixEnd(key));
  request.set_revision(options.revision);
  etcdserverpb::RangeResponse response;
  absl::Status s = Invoke(
      "Range", [&](const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context) {
        return etcdserverpb::KV::NewStub(channel)->Range(context, request, &response);
      });
  if (!s.ok()) return s;
  RangeResult result;
  result.revision = response.header().revision();
  result.kvs.assign(std::make_move_iterator(response.mutable_kvs()->begin()),
                    std::make_move_iterator(response.mutable_kvs()->end()));
  return result;
}

absl::StatusOr<int64_t> EtcdClient::Put(absl::string_view key, absl::string_view value,
                                        int64_t lease) {
  etcdserverpb::PutRequest request;
  request.set_key(std::string(key));
  request.set_value(std::string(value));
  request.set_lease(lease);
  etcdserverpb::PutResponse response;
  absl::Status s = Invoke(
      "Put", [&](const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context) {
        return etcdserverpb::KV::NewStub(channel)->Put(context, request, &response);
      });
  if (!s.ok()) return s;
  return response.header().revision();
}

absl::StatusOr<int64_t> EtcdClient::DeleteRange(absl::string_view key, bool prefix) {
  etcdserverpb::DeleteRangeRequest request;
  request.set_key(std::string(key));
  if (prefix) request.set_range_end(PrefixEnd(key));
  etcdserverpb::DeleteRangeResponse response;
  absl::Status s = Invoke("DeleteRange", [&](const std::shared_ptr<grpc::Channel>& channel,
                                             grpc::ClientContext* context) {
    return etcdserverpb::KV::NewStub(channel)->DeleteRange(context, request, &response);
  });
  if (!s.ok()) return s;
  return response.deleted();
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& request) {
  etcdserverpb::TxnResponse response;
  absl::Status s = Invoke(
      "Txn", [&](const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context) {
        return etcdserverpb::KV::NewStub(channel)->Txn(context, request, &response);
      });
  if (!s.ok()) return s;
  return response;
}

absl::Status EtcdClient::Compact(int64_t revision) {
  etcdserverpb::CompactionRequest request;
  request.set_revision(revision);
  request.set_physical(true);
  etcdserverpb::CompactionResponse response;
  return Invoke("Compact",
                [&](const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* context) {
                  return etcdserverpb::KV::NewStub(channel)->Compact(context, request, &response);
                });
}

absl::StatusOr<GrantedLease> EtcdClient::LeaseGrant(int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_seconds);
  etcdserverpb::LeaseGrantResponse response;
  absl::Status s = Invoke("LeaseGrant", [&](const std::shared_ptr<grpc::Channel>& channel,
                                            grpc::ClientContext* context) {
    return etcdserverpb::Lease::NewStub(channel)->LeaseGrant(context, request, &response);
  });
  if (!s.ok()) return s;
  if (!response.error().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("etcd LeaseGrant: ", response.error()));
  }
  return GrantedLease{response.id(), response.ttl()};
}

absl::Status EtcdClient::LeaseRevoke(int64_t id) {
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(id);
  etcdserverpb::LeaseRevokeResponse response;
  return Invoke("LeaseRevoke", [&](const std::shared_ptr<grpc::Channel>& channel,
                                   grpc::ClientContext* context) {
    return etcdserverpb::Lease::NewStub(channel)->LeaseRevoke(context, request, &response);
  });
}

absl::StatusOr<int64_t> EtcdClient::LeaseTimeToLive(int64_t id) {
  etcdserverpb::LeaseTimeToLiveRequest request;
  request.set_id(id);
  etcdserverpb::LeaseTimeToLiveResponse response;
  absl::Status s = Invoke("LeaseTimeToLive", [&](const std::shared_ptr<grpc::Channel>& channel,
                                                 grpc::ClientContext* context) {
    return etcdserverpb::Lease::NewStub(channel)->LeaseTimeToLive(context, request, &response);
  });
  if (!s.ok()) return s;
  return response.ttl();
}

}  // namespace kvstore::coord
