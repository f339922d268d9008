// kvcheck: checks a fault-injection history (docs/reliability.md, "Checker").
//
//   kvcheck HISTORY.jsonl [--out DIR] [--nemesis FILE] [--time-limit-ms N] [--max-memo-mib N]
//       writes DIR/summary.json (default: the history's directory) and prints
//       the verdict; exit 0 valid, 1 any violation, 2 bad input or usage.
//       With the nemesis log (default: nemesis.jsonl beside the history, if
//       there is one) it adds the availability during faults.
//   kvcheck --explain KEY HISTORY.jsonl [--time-limit-ms N] [--max-memo-mib N]
//       prints the window of KEY's history around its first violation;
//       exit 0 when KEY has none, 1 when it has one, 2 bad input or usage.
//
// Flags are parsed here, not by gflags, whose parser exits 1 on a bad flag:
// that would read as "violation found".
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tools/kvcheck/availability.h"
#include "tools/kvcheck/checker.h"
#include "tools/kvcheck/explain.h"
#include "tools/kvcheck/history.h"
#include "tools/kvcheck/summary.h"

namespace kvstore::check {
namespace {

constexpr int kValid = 0;
constexpr int kViolation = 1;
constexpr int kBadInput = 2;

constexpr char kUsage[] =
    "usage: kvcheck HISTORY.jsonl [--out DIR] [--nemesis FILE] [--time-limit-ms N] [--max-memo-mib "
    "N]\n"
    "       kvcheck --explain KEY HISTORY.jsonl [--time-limit-ms N] [--max-memo-mib N]\n"
    "Checks a fault-injection history (docs/reliability.md). --out: where summary.json goes\n"
    "(default: the history's directory). --nemesis: the fault driver's nemesis.jsonl, for the\n"
    "availability during faults (default: nemesis.jsonl beside the history, when there is one).\n"
    "--time-limit-ms: per key, 0 = none (default); an\n"
    "undecided key is a violation. --max-memo-mib: memory for the search, per key (2048).\n"
    "Exit: 0 valid, 1 violation, 2 bad input or usage.\n";

struct Args {
  std::string history;
  std::string out;
  std::string explain_key;
  std::string nemesis;
  bool explain = false;
  CheckOptions options;
};

int Usage(const std::string& why) {
  std::fprintf(stderr, "kvcheck: %s\n%s", why.c_str(), kUsage);
  return kBadInput;
}

// Returns -1 when parsed, else the exit code.
int ParseArgs(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string v;
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return kValid;
    } else if (a == "--out") {
      if (!value(&args->out)) return Usage("--out needs a directory");
    } else if (a == "--nemesis") {
      if (!value(&args->nemesis)) return Usage("--nemesis needs a file");
    } else if (a == "--explain") {
      args->explain = true;
      if (!value(&args->explain_key)) return Usage("--explain needs a key");
    } else if (a == "--time-limit-ms") {
      if (!value(&v) || !absl::SimpleAtoi(v, &args->options.search.time_limit_ms) ||
          args->options.search.time_limit_ms < 0) {
        return Usage("--time-limit-ms needs a number of milliseconds");
      }
    } else if (a == "--max-memo-mib") {
      int64_t mib = 0;
      if (!value(&v) || !absl::SimpleAtoi(v, &mib) || mib <= 0) return Usage("--max-memo-mib needs a positive number");
      args->options.search.max_memo_bytes = mib << 20;
    } else if (a.size() > 1 && a[0] == '-') {
      return Usage(absl::StrCat("unknown flag ", a));
    } else if (args->history.empty()) {
      args->history = a;
    } else {
      return Usage(absl::StrCat("one history only (got ", args->history, " and ", a, ")"));
    }
  }
  if (args->history.empty()) return Usage("no history file");
  return -1;
}

int Run(int argc, char** argv) {
  Args args;
  if (int rc = ParseArgs(argc, argv, &args); rc >= 0) return rc;
  absl::StatusOr<History> h = ReadHistoryFile(args.history);
  if (!h.ok()) {
    std::fprintf(stderr, "kvcheck: %s\n", std::string(h.status().message()).c_str());
    return kBadInput;
  }
  std::string nemesis = args.nemesis;
  if (nemesis.empty()) {
    const size_t slash = args.history.rfind('/');
    const std::string beside =
        (slash == std::string::npos ? "" : args.history.substr(0, slash + 1)) + "nemesis.jsonl";
    if (std::ifstream(beside).good()) nemesis = beside;
  }
  if (!nemesis.empty()) {
    absl::StatusOr<std::vector<FaultWindow>> windows = ReadFaultWindows(nemesis);
    if (!windows.ok()) {
      std::fprintf(stderr, "kvcheck: %s\n", std::string(windows.status().message()).c_str());
      return kBadInput;
    }
    args.options.fault_windows = *std::move(windows);
  }
  const Report report = Check(*h, args.options);
  if (args.explain) {
    const Explanation e = Explain(*h, report, args.explain_key);
    std::fputs(e.text.c_str(), stdout);
    return e.violated ? kViolation : kValid;
  }
  std::string dir = args.out;
  if (dir.empty()) {
    const size_t slash = args.history.rfind('/');
    dir = slash == std::string::npos ? "." : args.history.substr(0, slash + 1);
  }
  const std::string path = dir + (dir.back() == '/' ? "" : "/") + "summary.json";
  std::ofstream out(path, std::ios::trunc);
  out << SummaryJson(*h, report);
  out.close();
  if (!out) {
    std::fprintf(stderr, "kvcheck: cannot write %s\n", path.c_str());
    return kBadInput;
  }
  std::fputs(SummaryText(*h, report).c_str(), stdout);
  std::printf("summary: %s\n", path.c_str());
  return report.valid() ? kValid : kViolation;
}

}  // namespace
}  // namespace kvstore::check

int main(int argc, char** argv) { return kvstore::check::Run(argc, argv); }
