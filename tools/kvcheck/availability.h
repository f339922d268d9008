// Availability during faults (issue 15: "ok share of writes during each fault
// window"), from the history and the fault driver's nemesis log
// (nemesis.jsonl: one JSON object per action, {"t_ns", "step", "action",
// "node", "command", "ok", "note"}, t_ns on the history's clock).
//
// A fault window runs from the log line of a fault's start to the line of its
// end (docs/reliability.md, "Availability during faults"):
//   kill, powerloss, failpoint, await-exit, fill-disk of a node: until that
//       node's restart (a start that serves; not one refused after a bit
//       flip, nor the leader's restart as a replica), its grow-disk, or a
//       promote, promote-race or settle (a leader again), whichever comes
//       first. The leader is n0 until a promotion names another;
//   pause of a node: until its resume (or the heal's SIGCONT);
//   net blackhole or refuse of a link: until that link gets another mode
//       (heal, delay, rate) or the heal after the load;
//   partition or loss in network namespaces (the run's nft drops): from the
//       first such step until a step leaves no fault ("healthy");
//   instantaneous faults (a clock jump, a net reset, a promotion while no
//       other window is open): a fixed span of kInstantFaultNs.
// The faults one step starts (a powerloss of every node, a partition of
// several links) make one window, which ends when the last of them does. A
// window still open when the log ends is open until the end of the history.
//
// In a window: the writes (set, cas, delete; final reads excluded) whose
// invoke falls inside, by outcome. A `fail` carrying a current_version is a
// version mismatch: the store was up and answered, so it is left out of the
// share (a CAS that lost a race says nothing about availability). The share
// is ok / (writes - mismatches). The aggregate counts each write once over
// the union of the windows; "outside" is the same share for the writes
// invoked in no window, as the baseline.
#ifndef KVSTORE_TOOLS_KVCHECK_AVAILABILITY_H_
#define KVSTORE_TOOLS_KVCHECK_AVAILABILITY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tools/kvcheck/history.h"

namespace kvstore::check {

inline constexpr int64_t kInstantFaultNs = 2'000'000'000;
inline constexpr int64_t kOpenWindow = INT64_MAX;  // end_ns of a window never closed.

struct FaultWindow {
  std::string fault;  // "kill n0", "net blackhole n0->n1,n0->n2", "clock n0,n1,n2"
  int step = -1;      // The nemesis step that started it.
  int64_t start_ns = 0;
  int64_t end_ns = kOpenWindow;
};

// Parses nemesis.jsonl into fault windows, ordered by start. Lines that are
// not faults are skipped, and so are failed actions (ok false: no fault took
// place). INVALID_ARGUMENT "line N: ..." on a line that is not a JSON object
// with an integer t_ns and step and string action and node.
absl::StatusOr<std::vector<FaultWindow>> ParseFaultWindows(absl::string_view nemesis_jsonl);
absl::StatusOr<std::vector<FaultWindow>> ReadFaultWindows(const std::string& path);

struct WriteCounts {
  int64_t writes = 0;
  int64_t ok = 0;
  int64_t fail = 0;
  int64_t info = 0;
  int64_t mismatches = 0;  // Fails with a current_version, among `fail`.

  // ok / (writes - mismatches); -1 when there is no such write.
  double OkShare() const;
};

struct WindowFigures {
  FaultWindow window;
  int64_t end_ns = 0;  // window.end_ns, or the history's last event when open.
  WriteCounts counts;
};

struct AvailabilityFigures {
  std::vector<WindowFigures> windows;
  WriteCounts during;   // Over the union of the windows, each write once.
  double seconds = 0;   // Length of that union.
  WriteCounts outside;  // Writes invoked in no window.
};

AvailabilityFigures ComputeAvailability(const History& h, const std::vector<FaultWindow>& windows);

// The lines kvcheck and kvfault print (tools/kvfault/figures_table.py reads
// the first), each starting with `indent`: the aggregate, then one per window
// (docs/reliability.md shows them),
//   availability during faults: OK of N writes ok (S %) in W window(s), Ts; outside: ...
//     FAULT (step I) at Ts for Ds: OK of N writes ok (S %), X info, Y fail, Z mismatches left out
// or "availability during faults: no fault window". N excludes mismatches.
std::vector<std::string> AvailabilityLines(const AvailabilityFigures& a, const std::string& indent);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_AVAILABILITY_H_
