// Named failpoints at the durable steps of storage and replication
// (docs/reliability.md, "Failpoints"), for the fault suite to crash a real
// binary at an exact step or make a step fail with an I/O error.
//
// Compiled in only when the build is configured with -DKV_FAULT_CONTROLS=ON
// (kv_storage then links libfiu statically); in any other build both macros
// expand to nothing, no libfiu header is included and nothing links it.
//
//   KV_FAILPOINT_CRASH(name): when enabled, the process raises SIGKILL there
//     (no destructors, no flush: as kill -9).
//   storage_failpoints::InjectedIoError(name, op, path): OK unless enabled; when
//     enabled, the Status the step would get had its system call failed with
//     errno = the failpoint's failnum (1, fiu-ctrl's default, means EIO; 28
//     is ENOSPC). The step returns it instead of making the call, so the
//     caller's own error handling runs next (a log write or fsync: the
//     sticky error, wal.h).
//
// Enabled in kv-shard / kv-replica by --failpoints=NAME[,NAME...] at start,
// or in a live process with
//   fiu-ctrl -f DATA_DIR/fiu-ctrl -c 'enable name=NAME[,failnum=N]' PID
#ifndef KVSTORE_COMMON_STORAGE_STORAGE_FAILPOINTS_H_
#define KVSTORE_COMMON_STORAGE_STORAGE_FAILPOINTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#ifdef KV_FAULT_CONTROLS
// Without FIU_ENABLE, fiu.h makes fiu_fail() the constant 0: every failpoint
// would be silently off. Each target that includes this header defines it.
#ifndef FIU_ENABLE
#error "storage_failpoints.h in a KV_FAULT_CONTROLS build needs FIU_ENABLE (see its CMakeLists)"
#endif
#include <fiu.h>

#include <csignal>

#define KV_FAILPOINT_CRASH(name) \
  do {                           \
    if (fiu_fail(name) != 0) {   \
      std::raise(SIGKILL);       \
    }                            \
  } while (0)
#else
#define KV_FAILPOINT_CRASH(name) \
  do {                           \
  } while (0)
#endif

namespace kvstore {
namespace storage_failpoints {

// ---- The log (common/storage/wal.cc). I/O errors:
// a write of appended records to the active segment.
inline constexpr char kWalWrite[] = "kvstore/wal/write";
// the fdatasync of the active segment (every log fsync).
inline constexpr char kWalFsync[] = "kvstore/wal/fsync";
// the creation of a new segment file.
inline constexpr char kWalSegmentCreate[] = "kvstore/wal/segment-create";
// Crashes: records handed to the OS, not yet fsynced.
inline constexpr char kWalAfterWrite[] = "kvstore/wal/after-write";
// just before / after the fdatasync of the active segment.
inline constexpr char kWalBeforeFsync[] = "kvstore/wal/before-fsync";
inline constexpr char kWalAfterFsync[] = "kvstore/wal/after-fsync";
// a new segment file exists with its header, its directory entry not synced.
inline constexpr char kWalAfterSegmentCreate[] = "kvstore/wal/after-segment-create";
// an old segment was unlinked, the directory not synced.
inline constexpr char kWalAfterSegmentDelete[] = "kvstore/wal/after-segment-delete";

// ---- Snapshot writes (common/storage/snapshot.cc). I/O errors:
inline constexpr char kSnapshotWrite[] = "kvstore/snapshot/write";  // a block or the trailer
inline constexpr char kSnapshotFsync[] = "kvstore/snapshot/fsync";  // the .tmp file's fsync
// Crashes: the .tmp file is complete (trailer written) but not fsynced ...
inline constexpr char kSnapshotAfterTmpWrite[] = "kvstore/snapshot/after-tmp-write";
// ... fsynced, not renamed ...
inline constexpr char kSnapshotAfterFsync[] = "kvstore/snapshot/after-fsync";
// ... renamed to snap-*.snap, the directory not synced ...
inline constexpr char kSnapshotAfterRename[] = "kvstore/snapshot/after-rename";
// ... and the directory synced (the snapshot is durable; old ones not pruned).
inline constexpr char kSnapshotAfterDirFsync[] = "kvstore/snapshot/after-dir-fsync";

// ---- A follower installing a snapshot from its leader (full resync).
// Crashes: the received file is complete and fsynced, nothing installed yet ...
inline constexpr char kInstallAfterReceive[] = "kvstore/install/after-receive";
// ... the log reset (durable), the old snapshots still there ...
inline constexpr char kInstallAfterLogReset[] = "kvstore/install/after-log-reset";
// ... the new snapshot renamed into place, the directory not synced.
inline constexpr char kInstallAfterRename[] = "kvstore/install/after-rename";

// ---- A follower's stream (common/replication/follower_session.cc). Crashes:
// pushed entries are in its log, durable, not yet acknowledged to the leader;
inline constexpr char kFollowerAfterApply[] = "kvstore/follower/after-apply";
// an acknowledgement is about to be sent.
inline constexpr char kFollowerBeforeAck[] = "kvstore/follower/before-ack";

// ---- Promotion (common/replication/node.cc). Crash: the new epoch is
// durable, the node does not lead yet.
inline constexpr char kPromoteAfterEpoch[] = "kvstore/promote/after-epoch";

// Every name above, for --failpoints to check against.
inline constexpr const char* kAll[] = {kWalWrite,
                                       kWalFsync,
                                       kWalSegmentCreate,
                                       kWalAfterWrite,
                                       kWalBeforeFsync,
                                       kWalAfterFsync,
                                       kWalAfterSegmentCreate,
                                       kWalAfterSegmentDelete,
                                       kSnapshotWrite,
                                       kSnapshotFsync,
                                       kSnapshotAfterTmpWrite,
                                       kSnapshotAfterFsync,
                                       kSnapshotAfterRename,
                                       kSnapshotAfterDirFsync,
                                       kInstallAfterReceive,
                                       kInstallAfterLogReset,
                                       kInstallAfterRename,
                                       kFollowerAfterApply,
                                       kFollowerBeforeAck,
                                       kPromoteAfterEpoch};

// OK unless failpoint `name` is enabled; then the error of `op` on `path` as
// PosixFileSystem reports that errno (ENOSPC: RESOURCE_EXHAUSTED, others
// INTERNAL), naming the failpoint.
#ifdef KV_FAULT_CONTROLS
absl::Status InjectedIoError(const char* name, absl::string_view op, const std::string& path);
#else
inline absl::Status InjectedIoError(const char*, absl::string_view, const std::string&) {
  return absl::OkStatus();
}
#endif

}  // namespace storage_failpoints
}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_STORAGE_FAILPOINTS_H_
