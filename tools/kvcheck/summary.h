// summary.json: what a run's check found, for people and for the fault suite
// (docs/reliability.md lists the fields). Keys are in a fixed order so two
// summaries diff cleanly.
#ifndef KVSTORE_TOOLS_KVCHECK_SUMMARY_H_
#define KVSTORE_TOOLS_KVCHECK_SUMMARY_H_

#include <string>

#include "tools/kvcheck/checker.h"
#include "tools/kvcheck/history.h"

namespace kvstore::check {

// The JSON text, pretty-printed, ending in a newline. Ops are named by the
// "i" of their invoke line.
std::string SummaryJson(const History& h, const Report& r);

// A few lines for a terminal: the verdict, the figures, the first violations.
std::string SummaryText(const History& h, const Report& r);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_SUMMARY_H_
