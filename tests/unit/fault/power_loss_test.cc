// The power-loss cut (tools/kvfault/power_loss.h) against a real process: a
// scripted writer runs under libkvfault_preload.so, kills itself, and the cut
// must leave exactly what its fsyncs and directory fsyncs made durable.
#include "tools/kvfault/power_loss.h"

#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

extern char** environ;

namespace kvstore::fault {
namespace {

class PowerLossTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/power_loss_test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    dir_ = base_ + "/data";
    journal_ = base_ + "/preload.journal";
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!HasFailure()) std::filesystem::remove_all(base_, ec);
  }

  // Runs the writer under the preload; it must die of SIGKILL.
  void RunWriter(const std::string& script) {
    std::vector<std::string> env = {std::string("LD_PRELOAD=") + KVFAULT_PRELOAD_LIB,
                                    "KVFAULT_PRELOAD_DIR=" + dir_,
                                    "KVFAULT_PRELOAD_JOURNAL=" + journal_};
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string bin = KVFAULT_PRELOAD_WRITER;
    std::vector<char*> argv = {bin.data(), dir_.data(), const_cast<char*>(script.c_str()), nullptr};
    pid_t pid;
    ASSERT_EQ(posix_spawn(&pid, bin.c_str(), nullptr, nullptr, argv.data(), envp.data()), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer did not kill itself: status " << status;
  }

  PowerLossReport Cut(Tear tear, uint64_t seed = 7) {
    PowerLossOptions o;
    o.dir = dir_;
    o.journal = journal_;
    o.tear = tear;
    o.seed = seed;
    absl::StatusOr<PowerLossReport> r = PowerLoss(o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : PowerLossReport();
  }

  // Size, or -1 when the file is absent.
  int64_t Size(const std::string& name) {
    struct stat st;
    return ::stat((dir_ + "/" + name).c_str(), &st) == 0 ? st.st_size : -1;
  }
  std::string Contents(const std::string& name) {
    std::ifstream in(dir_ + "/" + name);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string base_, dir_, journal_;
};

TEST_F(PowerLossTest, KeepsExactlyWhatWasMadeDurable) {
  RunWriter("basic");
  // Before the cut the page cache has it all.
  ASSERT_EQ(Size("a.log"), 150);
  ASSERT_EQ(Size("b.log"), 30);
  ASSERT_EQ(Size("d"), 40);
  ASSERT_EQ(Size("e.log"), -1);
  const PowerLossReport r = Cut(Tear::kNone);
  EXPECT_TRUE(r.unrestorable.empty());
  EXPECT_EQ(r.overwrites, 0);
  EXPECT_EQ(Contents("a.log"), std::string(100, 'a'));  // Synced 100, 50 dropped.
  EXPECT_EQ(Size("b.log"), -1);                         // Its creation was never durable.
  EXPECT_EQ(Size("d"), -1);                             // The rename is undone...
  EXPECT_EQ(Contents("d.tmp"), std::string(40, 'd'));   // ...back under its durable name.
  EXPECT_EQ(Contents("e.log"), std::string(30, 'e'));   // The unlink is undone.
  EXPECT_EQ(Contents("f"), std::string(10, 'f'));       // The replacement is undone...
  EXPECT_EQ(Size("f.tmp"), -1);                         // ...and its file never existed.
  EXPECT_EQ(Contents("g"), std::string(20, 'G'));       // A durable replacement stays.
  EXPECT_EQ(Contents("h"), std::string(40, 'h'));       // Shortened: at most 40 durable.
  EXPECT_EQ(r.renames_undone, 1);
  EXPECT_EQ(r.entries_restored, 2);  // e.log and the old f.
  EXPECT_EQ(r.entries_removed, 2);   // b.log and the new f (f.tmp).
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a.log", "d.tmp", "e.log", "f", "g", "h"}));
}

TEST_F(PowerLossTest, ALaterRunContinuesFromTheCut) {
  RunWriter("basic");
  Cut(Tear::kNone);
  RunWriter("append");  // 10 unsynced bytes on a.log.
  ASSERT_EQ(Size("a.log"), 110);
  const PowerLossReport r = Cut(Tear::kNone);
  EXPECT_EQ(Contents("a.log"), std::string(100, 'a'));
  EXPECT_EQ(r.files_cut, 1);
  EXPECT_EQ(r.entries_removed + r.renames_undone + r.entries_restored, 0);
  EXPECT_TRUE(std::filesystem::exists(journal_ + ".cut-1"));
  EXPECT_TRUE(std::filesystem::exists(journal_ + ".cut-2"));
}

TEST_F(PowerLossTest, TornTailsNeverTouchDurableBytes) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    for (Tear tear : {Tear::kPrefix, Tear::kZeroSector}) {
      SCOPED_TRACE(testing::Message() << "seed " << seed << " tear " << static_cast<int>(tear));
      std::filesystem::remove_all(dir_);
      std::filesystem::create_directories(dir_);
      RemoveJournal(journal_);
      RunWriter("basic");
      Cut(tear, seed);
      const std::string a = Contents("a.log");
      ASSERT_GE(a.size(), 100u);
      ASSERT_LE(a.size(), 150u);
      EXPECT_EQ(a.substr(0, 100), std::string(100, 'a'));
      if (tear == Tear::kZeroSector) {
        ASSERT_GT(a.size(), 100u);
        // The kept tail ends in zeros from its last sector start (or from 100).
        const size_t from = std::max<size_t>(100, (a.size() - 1) / 512 * 512);
        EXPECT_EQ(a.substr(from), std::string(a.size() - from, '\0'));
      } else {
        EXPECT_EQ(a.substr(100), std::string(a.size() - 100, 'A'));
      }
    }
  }
}

TEST(PowerLossOptionsTest, RefusesAJournalOfAnotherDirectory) {
  char tmpl[] = "/tmp/power_loss_test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string base = tmpl;
  std::filesystem::create_directories(base + "/other");
  std::ofstream(base + "/j") << "kvfault-journal 1 /nowhere 1\ndir .\n";
  PowerLossOptions o;
  o.dir = base + "/other";
  o.journal = base + "/j";
  absl::StatusOr<PowerLossReport> r = PowerLoss(o);
  EXPECT_FALSE(r.ok());
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace kvstore::fault
