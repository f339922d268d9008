// Admin.Backup and Admin.Restore on a shard node: the streams that send a
// backup image (common/backup/backup_image.h) and install one.
//
// Both do file I/O, which must not run on a gRPC reaction: each stream owns a
// thread that reads or writes the files and drives the stream from there (one
// write or read in flight at a time), and the reaction callbacks only hand
// over. The reactor deletes itself in OnDone, after joining its thread, whose
// last act is Finish.
#ifndef KVSTORE_SERVICES_NODE_BACKUP_STREAM_H_
#define KVSTORE_SERVICES_NODE_BACKUP_STREAM_H_

#include <atomic>
#include <string>

#include "common/replication/replication_hooks.h"
#include "common/storage/store.h"
#include "grpcpp/support/server_callback.h"
#include "kvstore/v1/admin.grpc.pb.h"

namespace kvstore {

// Starts sending the image of `store`: the newest verified snapshot (a new
// one first with request.fresh_snapshot) and the log after it up to the
// index written when the image was cut. `self` is this node's Admin.Status
// answer (role, shard, address) for the header. `store` must outlive the call.
grpc::ServerWriteReactor<v1::BackupChunk>* StartBackupStream(Store* store,
                                                             v1::StatusResponse self,
                                                             const v1::BackupRequest& request);

// Starts receiving an image and installing it into `store` (see Admin.Restore
// in admin.proto). `busy` is set while a restore runs: a second one is
// refused. `store`, `replication` (may be null: a lone shard) and `busy`
// must outlive the call.
grpc::ServerReadReactor<v1::BackupChunk>* StartRestoreStream(Store* store,
                                                             ReplicationHooks* replication,
                                                             v1::StatusResponse self,
                                                             v1::RestoreResponse* response,
                                                             std::atomic<bool>* busy);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_BACKUP_STREAM_H_
