#include "tests/support/fake_file_system.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvstore::testing {

class FakeFileSystem::Writable final : public WritableFile {
 public:
  Writable(FakeFileSystem* fs, std::string path, std::shared_ptr<Inode> inode, uint64_t gen)
      : fs_(fs), path_(std::move(path)), inode_(std::move(inode)), gen_(gen) {}

  absl::Status Append(absl::string_view data) override {
    absl::MutexLock l(&fs_->mu_);
    if (absl::Status s = Check(Op::kAppend); !s.ok()) return s;
    buffer_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Flush() override {
    absl::MutexLock l(&fs_->mu_);
    return FlushLocked();
  }
  absl::Status Sync() override {
    absl::MutexLock l(&fs_->mu_);
    if (absl::Status s = FlushLocked(); !s.ok()) return s;
    // What fdatasync promises: the bytes written before it started. Bytes
    // appended by another handle while it runs (a slow disk) may be left out.
    const uint64_t covered = inode_->data.size();
    if (fs_->hold_syncs_ && absl::StrContains(path_, fs_->hold_syncs_of_)) {
      ++fs_->syncs_waiting_;
      fs_->mu_.Await(absl::Condition(fs_, &FakeFileSystem::SyncMayProceed));
      --fs_->syncs_waiting_;
      if (fs_->hold_syncs_) --fs_->sync_permits_;
    }
    if (absl::Status s = Check(Op::kSync); !s.ok()) return s;
    inode_->synced = std::max(inode_->synced, std::min<uint64_t>(covered, inode_->data.size()));
    return absl::OkStatus();
  }
  absl::Status Close() override {
    absl::MutexLock l(&fs_->mu_);
    absl::Status s = FlushLocked();
    closed_ = true;
    return s;
  }
  uint64_t Size() const override {
    absl::MutexLock l(&fs_->mu_);
    return inode_->data.size() + buffer_.size();
  }

 private:
  absl::Status Check(Op op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(fs_->mu_) {
    if (closed_) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    if (gen_ != fs_->generation_) {
      return absl::InternalError(absl::StrCat(path_, ": handle died in a simulated crash"));
    }
    return fs_->MaybeFail(op);
  }
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fs_->mu_) {
    if (absl::Status s = Check(Op::kFlush); !s.ok()) return s;
    inode_->data += buffer_;
    buffer_.clear();
    return absl::OkStatus();
  }

  FakeFileSystem* const fs_;
  const std::string path_;
  const std::shared_ptr<Inode> inode_;
  const uint64_t gen_;
  std::string buffer_;
  bool closed_ = false;
};

// Reads the live inode as read(2) would: bytes appended after the open are seen,
// and the open file outlives a Remove of its name.
class FakeFileSystem::Sequential final : public SequentialFile {
 public:
  Sequential(FakeFileSystem* fs, std::shared_ptr<Inode> inode)
      : fs_(fs), inode_(std::move(inode)) {}
  absl::Status Read(size_t n, std::string* out) override {
    absl::MutexLock l(&fs_->mu_);
    const std::string& data = inode_->data;
    const size_t take = pos_ < data.size() ? std::min(n, data.size() - pos_) : 0;
    out->assign(data, std::min(pos_, data.size()), take);
    pos_ += take;
    return absl::OkStatus();
  }

 private:
  FakeFileSystem* const fs_;
  const std::shared_ptr<Inode> inode_;
  size_t pos_ = 0;
};

std::string FakeFileSystem::DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

absl::Status FakeFileSystem::MaybeFail(Op op) {
  int n = calls_[op]++;
  auto it = fail_after_.find(op);
  if (it != fail_after_.end() && n >= it->second) {
    ++injected_;
    return absl::InternalError("injected I/O error");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WritableFile>> FakeFileSystem::Open(const std::string& path,
                                                                   bool truncate) {
  absl::MutexLock l(&mu_);
  if (!dirs_.count(DirOf(path)))
    return absl::NotFoundError(absl::StrCat("no directory for ", path));
  auto it = live_.find(path);
  if (it == live_.end() || truncate) {
    if (absl::Status s = MaybeFail(Op::kCreate); !s.ok()) return s;
  }
  if (it == live_.end()) {
    it = live_.emplace(path, std::make_shared<Inode>()).first;
  } else if (truncate) {
    // A fresh inode: the old contents stay reachable from durable_ until a SyncDir.
    it->second = std::make_shared<Inode>();
  }
  return std::unique_ptr<WritableFile>(new Writable(this, path, it->second, generation_));
}

absl::StatusOr<std::unique_ptr<WritableFile>> FakeFileSystem::OpenAppendable(
    const std::string& path) {
  return Open(path, /*truncate=*/false);
}

absl::StatusOr<std::unique_ptr<WritableFile>> FakeFileSystem::CreateFile(const std::string& path) {
  return Open(path, /*truncate=*/true);
}

absl::StatusOr<std::unique_ptr<SequentialFile>> FakeFileSystem::OpenSequential(
    const std::string& path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = MaybeFail(Op::kRead); !s.ok()) return s;
  auto it = live_.find(path);
  if (it == live_.end()) return absl::NotFoundError(absl::StrCat("no such file: ", path));
  return std::unique_ptr<SequentialFile>(new Sequential(this, it->second));
}

absl::StatusOr<std::string> FakeFileSystem::ReadFile(const std::string& path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = MaybeFail(Op::kRead); !s.ok()) return s;
  auto it = live_.find(path);
  if (it == live_.end()) return absl::NotFoundError(absl::StrCat("no such file: ", path));
  return it->second->data;
}

absl::StatusOr<uint64_t> FakeFileSystem::FileSize(const std::string& path) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  if (it == live_.end()) return absl::NotFoundError(absl::StrCat("no such file: ", path));
  return it->second->data.size();
}

absl::Status FakeFileSystem::Rename(const std::string& from, const std::string& to) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = MaybeFail(Op::kRename); !s.ok()) return s;
  auto it = live_.find(from);
  if (it == live_.end()) return absl::NotFoundError(absl::StrCat("no such file: ", from));
  std::shared_ptr<Inode> inode = it->second;
  live_.erase(it);
  live_[to] = std::move(inode);
  return absl::OkStatus();
}

absl::Status FakeFileSystem::SyncDir(const std::string& dir) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = MaybeFail(Op::kSyncDir); !s.ok()) return s;
  for (auto it = durable_.begin(); it != durable_.end();) {
    it = DirOf(it->first) == dir ? durable_.erase(it) : std::next(it);
  }
  for (const auto& [path, inode] : live_) {
    if (DirOf(path) == dir) durable_[path] = inode;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FakeFileSystem::ListDir(const std::string& dir) {
  absl::MutexLock l(&mu_);
  if (!dirs_.count(dir)) return absl::NotFoundError(absl::StrCat("no such directory: ", dir));
  std::vector<std::string> names;
  for (const auto& [path, inode] : live_) {
    if (DirOf(path) == dir) names.push_back(path.substr(dir.size() + 1));
  }
  return names;
}

absl::Status FakeFileSystem::Remove(const std::string& path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = MaybeFail(Op::kRemove); !s.ok()) return s;
  if (live_.erase(path) == 0) return absl::NotFoundError(absl::StrCat("no such file: ", path));
  return absl::OkStatus();
}

absl::Status FakeFileSystem::Truncate(const std::string& path, uint64_t size) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = MaybeFail(Op::kTruncate); !s.ok()) return s;
  auto it = live_.find(path);
  if (it == live_.end()) return absl::NotFoundError(absl::StrCat("no such file: ", path));
  Inode& inode = *it->second;
  inode.data.resize(std::min<uint64_t>(size, inode.data.size()));
  inode.synced = inode.data.size();  // Truncate syncs, as the POSIX one does.
  return absl::OkStatus();
}

absl::Status FakeFileSystem::CreateDirs(const std::string& dir) {
  absl::MutexLock l(&mu_);
  // Directories themselves are durable at once: tests are about file contents.
  std::string d = dir;
  while (!d.empty() && d != "." && d != "/") {
    dirs_[d] = true;
    size_t slash = d.rfind('/');
    if (slash == std::string::npos) break;
    d = d.substr(0, slash);
  }
  return absl::OkStatus();
}

bool FakeFileSystem::Exists(const std::string& path) {
  absl::MutexLock l(&mu_);
  return live_.count(path) > 0 || dirs_.count(path) > 0;
}

void FakeFileSystem::CrashProcess() {
  absl::MutexLock l(&mu_);
  ++generation_;  // Buffers in dead handles are simply never flushed.
}

void FakeFileSystem::CutPower(double keep_unsynced_fraction) {
  absl::MutexLock l(&mu_);
  ++generation_;
  live_ = durable_;
  for (auto& [path, inode] : live_) {
    uint64_t unsynced = inode->data.size() - inode->synced;
    uint64_t keep = static_cast<uint64_t>(static_cast<double>(unsynced) * keep_unsynced_fraction);
    inode->data.resize(inode->synced + keep);
    inode->synced = inode->data.size();
  }
}

void FakeFileSystem::FailAfter(Op op, int n) {
  absl::MutexLock l(&mu_);
  fail_after_[op] = calls_[op] + n;
}

void FakeFileSystem::ClearFailures() {
  absl::MutexLock l(&mu_);
  fail_after_.clear();
}

int FakeFileSystem::injected_failures() const {
  absl::MutexLock l(&mu_);
  return injected_;
}

std::string FakeFileSystem::Contents(const std::string& path) const {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  return it == live_.end() ? std::string() : it->second->data;
}

void FakeFileSystem::SetContents(const std::string& path, std::string data) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  if (it == live_.end()) {
    it = live_.emplace(path, std::make_shared<Inode>()).first;
  }
  it->second->data = std::move(data);
  it->second->synced = it->second->data.size();
  durable_[path] = it->second;
}

void FakeFileSystem::HoldSyncs(bool hold, std::string path_part) {
  absl::MutexLock l(&mu_);
  hold_syncs_ = hold;
  hold_syncs_of_ = std::move(path_part);
  sync_permits_ = 0;
}

void FakeFileSystem::ReleaseSyncs(int n) {
  absl::MutexLock l(&mu_);
  sync_permits_ += n;
}

bool FakeFileSystem::SyncMayProceed() const { return !hold_syncs_ || sync_permits_ > 0; }

int FakeFileSystem::syncs_waiting() const {
  absl::MutexLock l(&mu_);
  return syncs_waiting_;
}

}  // namespace kvstore::testing
