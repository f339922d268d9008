#include "tools/kvfault/power_loss.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tools/kvfault/journal_format.h"

namespace kvstore::fault {
namespace {

namespace jf = journal;

constexpr int64_t kSector = 512;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// What the journal says is durable.
struct Durable {
  std::string root;
  uint64_t dev = 0;
  std::map<uint64_t, int64_t> length;                  // By inode; absent = 0.
  std::map<std::string, std::vector<jf::Entry>> dirs;  // Last durable listing per directory.
  std::set<uint64_t> stashed;
  int64_t overwrites = 0;
};

absl::StatusOr<Durable> ReadJournal(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the journal ", path));
  Durable d;
  std::string line;
  int64_t n = 0;
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, " line ", n, ": ", why, ": ", line));
  };
  while (std::getline(in, line)) {
    ++n;
    // A line cut short by the kill has no newline: getline still returns it,
    // but it cannot be trusted. Only the last line can be such a line.
    if (in.eof()) break;
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.empty()) continue;
    if (n == 1) {
      if (f.size() != 4 || f[0] != jf::kMagic || f[1] != std::to_string(jf::kVersion) ||
          !jf::UnescapeName(f[2], &d.root) || !absl::SimpleAtoi(f[3], &d.dev)) {
        return bad("not a kvfault journal header");
      }
      continue;
    }
    uint64_t ino = 0;
    int64_t bytes = 0;
    if (f[0] == "dir" && f.size() >= 2) {
      std::string rel;
      if (!jf::UnescapeName(f[1], &rel)) return bad("bad name");
      std::vector<jf::Entry> entries;
      for (size_t i = 2; i < f.size(); ++i) {
        std::vector<std::string> parts = absl::StrSplit(f[i], absl::MaxSplits(':', 2));
        jf::Entry e;
        if (parts.size() != 3 || parts[0].size() != 1 || !absl::SimpleAtoi(parts[1], &e.ino) ||
            !jf::UnescapeName(parts[2], &e.name)) {
          return bad("bad entry");
        }
        e.type = parts[0][0];
        entries.push_back(std::move(e));
      }
      d.dirs[rel] = std::move(entries);
    } else if ((f[0] == "len" || f[0] == "trunc") && f.size() == 4 &&
               absl::SimpleAtoi(f[1], &ino) && absl::SimpleAtoi(f[2], &bytes)) {
      if (f[0] == "len") {
        d.length[ino] = bytes;
      } else {
        auto it = d.length.find(ino);
        d.length[ino] = std::min(it == d.length.end() ? 0 : it->second, bytes);
      }
    } else if (f[0] == "stash" && f.size() == 3 && absl::SimpleAtoi(f[1], &ino)) {
      d.stashed.insert(ino);
    } else if (f[0] == "overwrite") {
      ++d.overwrites;
    } else {
      return bad("unknown line");
    }
  }
  if (d.root.empty()) return absl::DataLossError(absl::StrCat(path, ": empty journal"));
  return d;
}

class Cutter {
 public:
  Cutter(const PowerLossOptions& options, const Durable& durable, PowerLossReport* report)
      : options_(options), durable_(durable), report_(report), rng_(options.seed) {}

  absl::Status Run() {
    hold_ = jf::StashPath(options_.journal) + "/hold";
    std::error_code ec;
    std::filesystem::create_directories(hold_, ec);
    if (ec) return absl::InternalError(absl::StrCat("mkdir ", hold_, ": ", ec.message()));
    absl::Status s = CutDir(".");
    std::filesystem::remove_all(hold_, ec);
    return s;
  }

 private:
  std::string Path(const std::string& rel) const {
    return rel == "." ? durable_.root : durable_.root + "/" + rel;
  }

  absl::Status CutDir(const std::string& rel) {
    std::vector<jf::Entry> now;
    if (!jf::ListEntries(durable_.root, rel, &now)) return Errno(absl::StrCat("list ", Path(rel)));
    static const std::vector<jf::Entry> kNone;
    auto it = durable_.dirs.find(rel);
    const std::vector<jf::Entry>& durable = it == durable_.dirs.end() ? kNone : it->second;
    auto durable_as = [&](const jf::Entry& e) {
      for (const jf::Entry& d : durable) {
        if (d.name == e.name) return d.ino == e.ino && d.type == e.type;
      }
      return false;
    };

    // 1. Entries no directory fsync covered (new names, a name now on another
    // inode) go aside, by inode, so a rename can be moved back.
    std::map<uint64_t, std::string> held;  // inode -> path in hold_
    for (const jf::Entry& e : now) {
      if (durable_as(e)) continue;
      const std::string aside = absl::StrCat(hold_, "/", std::string(1, e.type), e.ino);
      if (::rename(Path(jf::JoinRel(rel, e.name)).c_str(), aside.c_str()) != 0) {
        return Errno(absl::StrCat("rename ", Path(jf::JoinRel(rel, e.name)), " ", aside));
      }
      held[e.ino] = aside;
    }
    // 2. Durable names now missing: moved back from aside (an undone rename),
    // or linked back from the stash (an undone unlink or replacement).
    for (const jf::Entry& d : durable) {
      const std::string path = Path(jf::JoinRel(rel, d.name));
      struct stat st;
      if (::lstat(path.c_str(), &st) == 0) continue;
      auto h = held.find(d.ino);
      const std::string stashed = absl::StrCat(jf::StashPath(options_.journal), "/", d.ino);
      if (h != held.end()) {
        if (::rename(h->second.c_str(), path.c_str()) != 0) {
          return Errno(absl::StrCat("rename ", h->second, " ", path));
        }
        held.erase(h);
        ++report_->renames_undone;
        report_->actions.push_back(absl::StrCat("rename undone: ", path, " (inode ", d.ino, ")"));
      } else if (d.type == 'f' && ::link(stashed.c_str(), path.c_str()) == 0) {
        ++report_->entries_restored;
        report_->actions.push_back(absl::StrCat("restored from the stash: ", path));
      } else {
        report_->unrestorable.push_back(absl::StrCat(path, " (inode ", d.ino, ")"));
      }
    }
    // 3. The rest never durably existed under any name here.
    for (const auto& [ino, aside] : held) {
      std::error_code ec;
      std::filesystem::remove_all(aside, ec);
      if (ec) return absl::InternalError(absl::StrCat("rm -rf ", aside, ": ", ec.message()));
      ++report_->entries_removed;
    }
    for (const jf::Entry& e : now) {
      if (!durable_as(e) && held.count(e.ino)) {
        report_->actions.push_back(
            absl::StrCat("removed (creation not durable): ", Path(jf::JoinRel(rel, e.name))));
      }
    }
    // 4. Lengths, then the subdirectories.
    for (const jf::Entry& d : durable) {
      const std::string child = jf::JoinRel(rel, d.name);
      if (d.type == 'd') {
        if (absl::Status s = CutDir(child); !s.ok()) return s;
      } else if (absl::Status s = CutFile(child, d.ino); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status CutFile(const std::string& rel, uint64_t ino) {
    const std::string path = Path(rel);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return absl::OkStatus();
    auto it = durable_.length.find(ino);
    const int64_t durable = it == durable_.length.end() ? 0 : it->second;
    const int64_t size = st.st_size;
    if (size <= durable) return absl::OkStatus();
    int64_t keep = durable;
    int64_t zero_from = -1;
    const auto draw = [&](int64_t lo, int64_t hi) {  // Uniform in [lo, hi].
      return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
    };
    switch (options_.tear) {
      case Tear::kNone:
        break;
      case Tear::kPrefix:
        keep = draw(durable, size);
        break;
      case Tear::kZeroSector:
        keep = draw(durable + 1, size);
        zero_from = std::max(durable, (keep - 1) / kSector * kSector);
        break;
    }
    if (::truncate(path.c_str(), keep) != 0) return Errno(absl::StrCat("truncate ", path));
    std::string what =
        absl::StrCat("cut ", path, " from ", size, " to ", keep, " bytes (durable ", durable, ")");
    if (zero_from >= 0) {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return Errno(absl::StrCat("open ", path));
      const std::string zeros(static_cast<size_t>(keep - zero_from), '\0');
      const ssize_t n = ::pwrite(fd, zeros.data(), zeros.size(), zero_from);
      ::close(fd);
      if (n != static_cast<ssize_t>(zeros.size())) return Errno(absl::StrCat("pwrite ", path));
      absl::StrAppend(&what, ", zeroed [", zero_from, ", ", keep, ")");
    }
    ++report_->files_cut;
    report_->bytes_dropped += size - keep;
    report_->actions.push_back(std::move(what));
    return absl::OkStatus();
  }

  const PowerLossOptions& options_;
  const Durable& durable_;
  PowerLossReport* report_;
  std::mt19937_64 rng_;
  std::string hold_;
};

// The journal starts again from what the cut left, which is all durable now;
// the old one is kept beside it for the record.
absl::Status RestartJournal(const PowerLossOptions& options, const Durable& durable) {
  std::string kept;
  for (int n = 1;; ++n) {
    kept = absl::StrCat(options.journal, ".cut-", n);
    if (::access(kept.c_str(), F_OK) != 0) break;
  }
  if (::rename(options.journal.c_str(), kept.c_str()) != 0) {
    return Errno(absl::StrCat("rename ", options.journal, " ", kept));
  }
  std::string lines = jf::Header(durable.root, durable.dev);
  jf::AppendBaseline(durable.root, ".", &lines);
  std::ofstream out(options.journal, std::ios::trunc);
  out << lines;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", options.journal));
  std::error_code ec;
  std::filesystem::remove_all(jf::StashPath(options.journal), ec);
  if (ec) return absl::InternalError(absl::StrCat("rm -rf the stash: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tear> ParseTear(const std::string& name) {
  if (name == "none") return Tear::kNone;
  if (name == "prefix") return Tear::kPrefix;
  if (name == "zero-sector") return Tear::kZeroSector;
  return absl::InvalidArgumentError(
      absl::StrCat("--tear=", name, " (expected none, prefix or zero-sector)"));
}

std::string PowerLossReport::Summary() const {
  return absl::StrCat(
      files_cut, " files cut (", bytes_dropped, " bytes dropped), ", entries_removed,
      " undurable entries removed, ", renames_undone, " renames undone, ", entries_restored,
      " unlinked files restored",
      overwrites > 0 ? absl::StrCat(", ", overwrites, " overwrites NOT undone") : "",
      unrestorable.empty() ? ""
                           : absl::StrCat(", ", unrestorable.size(), " entries NOT restorable"));
}

absl::StatusOr<PowerLossReport> PowerLoss(const PowerLossOptions& options) {
  absl::StatusOr<Durable> durable = ReadJournal(options.journal);
  if (!durable.ok()) return durable.status();
  char buf[PATH_MAX];
  if (::realpath(options.dir.c_str(), buf) == nullptr) {
    return Errno(absl::StrCat("realpath ", options.dir));
  }
  if (durable->root != buf) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.journal, " covers ", durable->root, ", not ", buf));
  }
  PowerLossReport report;
  report.overwrites = durable->overwrites;
  if (absl::Status s = Cutter(options, *durable, &report).Run(); !s.ok()) return s;
  if (absl::Status s = RestartJournal(options, *durable); !s.ok()) return s;
  return report;
}

absl::StatusOr<int64_t> UnsyncedWatcher::UnsyncedBytes() {
  // Sizes first, then the journal: bytes counted here were not durable when
  // the journal was read, later (the other order would count bytes that an
  // fsync in between made durable).
  absl::StatusOr<std::map<uint64_t, int64_t>> sizes = Sizes();
  if (!sizes.ok()) return sizes.status();
  if (absl::Status s = ReadJournal(); !s.ok()) return s;
  int64_t unsynced = 0;
  for (const auto& [ino, size] : *sizes) {
    auto it = durable_.find(ino);
    unsynced += std::max<int64_t>(0, size - (it == durable_.end() ? 0 : it->second));
  }
  return unsynced;
}

absl::StatusOr<std::map<uint64_t, int64_t>> UnsyncedWatcher::Sizes() const {
  std::vector<jf::Entry> entries;
  if (!jf::ListEntries(dir_, ".", &entries)) return Errno(absl::StrCat("list ", dir_));
  std::map<uint64_t, int64_t> sizes;
  for (const jf::Entry& e : entries) {
    struct stat st;
    if (e.type == 'f' && ::stat(absl::StrCat(dir_, "/", e.name).c_str(), &st) == 0) {
      sizes[e.ino] = st.st_size;
    }
  }
  return sizes;
}

absl::Status UnsyncedWatcher::ReadJournal() {
  const int fd = ::open(journal_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", journal_));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::pread(fd, buf, sizeof(buf), static_cast<off_t>(offset_));
    if (n <= 0) break;
    offset_ += static_cast<uint64_t>(n);
    partial_.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::vector<absl::string_view> f =
        absl::StrSplit(absl::string_view(partial_).substr(start, nl - start), ' ');
    uint64_t ino = 0;
    int64_t bytes = 0;
    if (f.size() == 4 && (f[0] == "len" || f[0] == "trunc") && absl::SimpleAtoi(f[1], &ino) &&
        absl::SimpleAtoi(f[2], &bytes)) {
      auto it = durable_.find(ino);
      durable_[ino] =
          f[0] == "len" ? bytes : std::min(it == durable_.end() ? 0 : it->second, bytes);
    }
  }
  partial_.erase(0, start);
  return absl::OkStatus();
}

void RemoveJournal(const std::string& journal) {
  std::error_code ec;
  std::filesystem::remove_all(jf::StashPath(journal), ec);
  std::filesystem::remove(journal, ec);
  for (int n = 1;; ++n) {
    if (!std::filesystem::remove(absl::StrCat(journal, ".cut-", n), ec)) break;
  }
}

}  // namespace kvstore::fault
