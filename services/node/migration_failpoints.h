// Named failpoints of online resharding (docs/resharding.md, "Crash matrix").
//
// The names only: the crash itself is common/storage/storage_failpoints.h's
// KV_FAILPOINT_CRASH (SIGKILL exactly there: no destructors, no flush, as
// kill -9), compiled in only in a -DKV_FAULT_CONTROLS=ON build, so that a test
// can stop a process at a named step of the protocol without racing a timer.
//
// They are enabled in kv-shard / kv-replica by --failpoints=NAME[,NAME...]
// at start, or in a live process with
//   fiu-ctrl -f DATA_DIR/fiu-ctrl -c 'enable name=NAME' PID
// (the node listens on DATA_DIR/fiu-ctrl-PID.in, fault builds only).
#ifndef KVSTORE_SERVICES_NODE_MIGRATION_FAILPOINTS_H_
#define KVSTORE_SERVICES_NODE_MIGRATION_FAILPOINTS_H_

namespace kvstore {
namespace failpoints {

// On the driver (the new shard's leader), by phase.
// copy: a copy page is imported, its progress not yet checkpointed in etcd.
inline constexpr char kDriverCopyPageImported[] = "migration/driver/copy-page-imported";
// catchup: the migration's phase has just been recorded as "catchup".
inline constexpr char kDriverCatchupEntered[] = "migration/driver/catchup-entered";
// fenced: every source holds its moving ranges; the cutover Txn not yet sent.
inline constexpr char kDriverSourcesFenced[] = "migration/driver/sources-fenced";
// switched: the cutover Txn has committed (ring switched); no cleanup yet.
inline constexpr char kDriverSwitched[] = "migration/driver/switched";
// cleanup: a source has answered the first cleanup page.
inline constexpr char kDriverCleanupPage[] = "migration/driver/cleanup-page";

// On a source's leader.
// Fence has taken its hold on the moving ranges, before it answers.
inline constexpr char kSourceFenced[] = "migration/source/fenced";
// Cleanup has written a page of deletes, before it answers.
inline constexpr char kSourceCleanupPage[] = "migration/source/cleanup-page";

// Every name above, for --failpoints to check against.
inline constexpr const char* kAll[] = {
    kDriverCopyPageImported, kDriverCatchupEntered, kDriverSourcesFenced, kDriverSwitched,
    kDriverCleanupPage,      kSourceFenced,         kSourceCleanupPage};

}  // namespace failpoints
}  // namespace kvstore

#endif  // KVSTORE_SERVICES_NODE_MIGRATION_FAILPOINTS_H_
