// The nemesis's disk, clock and I/O-error faults (issue 15 scenarios 6, 12,
// 15, 16, 19, 21; docs/reliability.md, "Disk, clock and I/O-error faults").
// Each action logs its exact command line through the Nemesis, like the
// others. Actions:
//   failpoint    fiu-ctrl enable `failpoint` (with `failnum`) in `node`; with
//                `exit_within_s` the node must then die within that time (by
//                the failpoint's SIGKILL or the store's crash on a failed
//                write) and is marked down, else the step fails
//   await-exit   `node` must die within `exit_within_s` (e.g. at a failpoint
//                a restart's `flags: [--failpoints=NAME]` enabled)
//   fill-disk    fill the tmpfs under `node`'s data dir until ENOSPC
//   grow-disk    mount -o remount,size=`size_mib`M that tmpfs
//   clock        write `clock` ("+300", "-60") to the faketime file of
//                `node` ("all", "leader", "followers" or a name)
//   bitflip-live flip a bit in the middle of `node`'s newest snapshot while
//                it runs, first waiting (up to `wait_s`) for a new one
//   record-index remember `node`'s last log index (it must run)
//   watch-index  poll `node` for up to `wait_s` until it has caught up with
//                the leader; its last index must never be below the one
//                recorded; with `expect_log` the leader's log must contain
//                that text and the damaged file's name
//   truncate-log cut `bytes` off the end of `node`'s newest log segment
//                (the node must be down): a lost log tail
//
// Set-up before the cluster starts (Scenario::tmpfs, Scenario::faketime):
// PrepareDiskFaults mounts the tmpfs data dirs (root only: else the scenario
// is skipped, with the reason) and writes the faketime files; the mounts are
// undone by ReleaseDiskFaults, and by `kvfault cleanup` after a crash.
#ifndef KVSTORE_TOOLS_KVFAULT_NEMESIS_DISK_H_
#define KVSTORE_TOOLS_KVFAULT_NEMESIS_DISK_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/kvfault/cluster.h"
#include "tools/kvfault/scenario.h"

namespace kvstore::fault {

// Mounts and environment a scenario's nodes need before their first start.
// FAILED_PRECONDITION when the mechanism is missing here (not root, no
// libfaketime): the caller reports the scenario skipped with that message.
absl::Status PrepareDiskFaults(const Scenario& scenario, Cluster* cluster,
                               std::vector<std::string>* mounts);
// Unmounts what PrepareDiskFaults mounted (the processes must be gone).
void ReleaseDiskFaults(const std::vector<std::string>& mounts);
// `kvfault cleanup`: unmounts every tmpfs a kvfault run left mounted (mount
// points `<dir>/kvfault-*/nodes/<node>/data`). Prints what it did.
int CleanupCommand();

// The faketime file of a node (FAKETIME_TIMESTAMP_FILE).
std::string FaketimePath(const Node& node);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NEMESIS_DISK_H_
