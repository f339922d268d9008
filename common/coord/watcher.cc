#include "common/coord/watcher.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/coord/txn.h"
#include "glog/logging.h"

namespace kvstore::coord {

absl::StatusOr<std::unique_ptr<WatchStream>> WatchStream::Open(EtcdClient* client,
                                                               const std::string& prefix,
                                                               int64_t start_revision) {
  std::unique_ptr<WatchStream> stream(new WatchStream(client, client->CurrentChannel()));
  stream->rw_ = stream->stub_->Watch(&stream->context_);
  etcdserverpb::WatchRequest request;
  etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
  create->set_key(prefix);
  create->set_range_end(PrefixEnd(prefix));
  create->set_start_revision(start_revision);
  create->set_progress_notify(true);
  create->set_prev_kv(true);
  if (!stream->rw_->Write(request)) {
    absl::Status s = stream->Finish();
    return absl::Status(s.code(), absl::StrCat("opening a watch of ", prefix, ": ", s.message()));
  }
  return stream;
}

WatchStream::WatchStream(EtcdClient* client, std::shared_ptr<grpc::Channel> channel)
    : client_(client),
      channel_(std::move(channel)),
      stub_(etcdserverpb::Watch::NewStub(channel_)) {}

WatchStream::~WatchStream() {
  if (rw_ != nullptr && !finished_) {
    context_.TryCancel();
    (void)Finish();  // Only to release the call: the stream is being dropped.
  }
}

void WatchStream::Cancel() { context_.TryCancel(); }

absl::Status WatchStream::Finish() {
  finished_ = true;
  // Drain what is left so that Finish does not wait on unread messages.
  etcdserverpb::WatchResponse ignored;
  while (rw_->Read(&ignored)) {
  }
  const grpc::Status status = rw_->Finish();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) client_->ReportUnavailable(channel_);
  if (status.ok()) return absl::UnavailableError("etcd ended the watch stream");
  return absl::Status(
      static_cast<absl::StatusCode>(status.error_code()),
      absl::StrCat("etcd watch on ", client_->CurrentEndpoint(), ": ", status.error_message()));
}

absl::StatusOr<WatchBatch> WatchStream::Next() {
  if (finished_) return absl::FailedPreconditionError("the watch stream has ended");
  etcdserverpb::WatchResponse response;
  while (rw_->Read(&response)) {
    if (response.compact_revision() > 0) {
      WatchBatch batch;
      batch.revision = response.header().revision();
      batch.compact_revision = response.compact_revision();
      return batch;
    }
    if (response.canceled()) {
      context_.TryCancel();
      (void)Finish();  // The cause is etcd's reason, not the stream's status.
      return absl::FailedPreconditionError(
          absl::StrCat("etcd canceled the watch: ", response.cancel_reason()));
    }
    if (response.created() && response.events_size() == 0) continue;
    WatchBatch batch;
    batch.revision = response.header().revision();
    if (response.events_size() > 0) {
      batch.revision = response.events(response.events_size() - 1).kv().mod_revision();
      batch.events.assign(std::make_move_iterator(response.mutable_events()->begin()),
                          std::make_move_iterator(response.mutable_events()->end()));
    }
    return batch;
  }
  return Finish();
}

}  // namespace kvstore::coord
