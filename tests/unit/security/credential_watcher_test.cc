// Reloading a server's credentials (common/security/credential_watcher.h):
// each check is one direct CheckNow call, so nothing here waits on a clock.
// The same against the real binaries, with the interval and SIGHUP, is in
// tests/integration/security_integration_test.cc.
#include "common/security/credential_watcher.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "common/security/credentials.h"
#include "common/security/staged_tls_files.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes aside and renames over, as a rotation should.
void Replace(const std::string& path, const std::string& content) {
  std::ofstream(path + ".new", std::ios::binary) << content;
  ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0) << path;
}

// A self-signed P-256 certificate for `cn` and its key, in PEM.
struct KeyPair {
  std::string cert;
  std::string key;
};
KeyPair SelfSigned(const std::string& cn, long serial) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  auto to_string = [](BIO* bio) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string s(data, static_cast<size_t>(n));
    BIO_free(bio);
    return s;
  };
  BIO* cert_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cert_bio, cert);
  BIO* key_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  KeyPair pair{to_string(cert_bio), to_string(key_bio)};
  X509_free(cert);
  EVP_PKEY_free(key);
  return pair;
}

class TokenReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    flags_.auth_token_file = dir_.Join("public.token");
    flags_.admin_token_file = dir_.Join("admin.token");
    std::ofstream(flags_.auth_token_file) << "pub-1\n";
    std::ofstream(flags_.admin_token_file) << "adm-1\n";
    absl::StatusOr<ServerSecurity> loaded = LoadServerSecurity(flags_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    security_ = std::make_unique<ServerSecurity>(*std::move(loaded));
    watcher_ = std::make_unique<CredentialWatcher>(flags_, security_.get());
  }

  bool PublicAllows(const std::string& token) const {
    return security_->policy.Allows(Access::kPublic, "Bearer " + token, false);
  }

  TempDir dir_;
  SecurityFlags flags_;
  std::unique_ptr<ServerSecurity> security_;
  std::unique_ptr<CredentialWatcher> watcher_;
};

TEST_F(TokenReloadTest, UnchangedFilesReloadNothing) {
  watcher_->CheckNow("test");
  std::ofstream(flags_.auth_token_file) << "  pub-1 \n";  // Same token, other bytes.
  watcher_->CheckNow("test");
  EXPECT_EQ(watcher_->Count("auth-token", "ok"), 0u);
  EXPECT_EQ(watcher_->Count("auth-token", "error"), 0u);
  EXPECT_TRUE(PublicAllows("pub-1"));
}

TEST_F(TokenReloadTest, NewTokenOpensAndTheOldOneClosesForServerAndClient) {
  Replace(flags_.auth_token_file, "pub-2\n");
  watcher_->CheckNow("test");
  EXPECT_TRUE(PublicAllows("pub-2"));
  EXPECT_FALSE(PublicAllows("pub-1"));
  EXPECT_EQ(security_->client.public_token(), "pub-2");
  EXPECT_EQ(security_->client.admin_token(), "adm-1");
  EXPECT_EQ(watcher_->Count("auth-token", "ok"), 1u);
  EXPECT_EQ(watcher_->Count("admin-token", "ok"), 0u);
  // A copy of the client security made before (a channel's) sees it too.
  Replace(flags_.admin_token_file, "adm-2\n");
  const ClientSecurity copy = security_->client;
  watcher_->CheckNow("test");
  EXPECT_EQ(copy.admin_token(), "adm-2");
  EXPECT_TRUE(security_->policy.Allows(Access::kCluster, "Bearer adm-2", false));
  EXPECT_FALSE(security_->policy.Allows(Access::kCluster, "Bearer adm-1", false));
  EXPECT_EQ(watcher_->Count("admin-token", "ok"), 1u);
}

TEST_F(TokenReloadTest, BadTokenFileKeepsTheOldTokenAndIsReportedOnce) {
  Replace(flags_.auth_token_file, "two words\n");
  watcher_->CheckNow("test");
  watcher_->CheckNow("test");
  EXPECT_EQ(watcher_->Count("auth-token", "error"), 1u);
  EXPECT_TRUE(PublicAllows("pub-1"));
  EXPECT_EQ(security_->client.public_token(), "pub-1");
  ASSERT_EQ(std::remove(flags_.auth_token_file.c_str()), 0);  // Mid-rotation: gone.
  watcher_->CheckNow("test");
  watcher_->CheckNow("test");
  EXPECT_EQ(watcher_->Count("auth-token", "error"), 2u);
  EXPECT_TRUE(PublicAllows("pub-1"));
  Replace(flags_.auth_token_file, "pub-3\n");  // Fixed: taken.
  watcher_->CheckNow("test");
  EXPECT_TRUE(PublicAllows("pub-3"));
  EXPECT_EQ(watcher_->Count("auth-token", "ok"), 1u);
}

TEST_F(TokenReloadTest, PublicTokenEqualToTheAdminTokenIsRefusedUntilOneChanges) {
  Replace(flags_.auth_token_file, "adm-1\n");
  watcher_->CheckNow("test");
  EXPECT_EQ(watcher_->Count("auth-token", "error"), 1u);
  EXPECT_EQ(watcher_->Count("admin-token", "error"), 0u);  // Not the file that changed.
  EXPECT_TRUE(PublicAllows("pub-1"));
  EXPECT_FALSE(PublicAllows("adm-1"));
  // The admin token moves on: the pair is good now, and both are taken.
  Replace(flags_.admin_token_file, "adm-2\n");
  watcher_->CheckNow("test");
  EXPECT_TRUE(PublicAllows("adm-1"));
  EXPECT_TRUE(security_->policy.Allows(Access::kCluster, "Bearer adm-2", false));
  EXPECT_EQ(watcher_->Count("admin-token", "ok"), 1u);
  EXPECT_EQ(watcher_->Count("auth-token", "ok"), 1u);
}

class TlsReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    first_ = SelfSigned("first", 1);
    second_ = SelfSigned("second", 2);
    flags_.tls.cert = dir_.Join("server.pem");
    flags_.tls.key = dir_.Join("server.key");
    std::ofstream(flags_.tls.cert) << first_.cert;
    std::ofstream(flags_.tls.key) << first_.key;
    flags_.reload_interval = absl::Seconds(10);
    absl::StatusOr<ServerSecurity> loaded = LoadServerSecurity(flags_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    security_ = std::make_unique<ServerSecurity>(*std::move(loaded));
    ASSERT_NE(security_->staged_tls, nullptr);
    watcher_ = std::make_unique<CredentialWatcher>(flags_, security_.get());
  }

  // What gRPC's certificate provider reads.
  std::string StagedCert() const { return ReadAll(security_->staged_tls->cert_path()); }
  std::string StagedKey() const { return ReadAll(security_->staged_tls->key_path()); }

  TempDir dir_;
  KeyPair first_;
  KeyPair second_;
  SecurityFlags flags_;
  std::unique_ptr<ServerSecurity> security_;
  std::unique_ptr<CredentialWatcher> watcher_;
};

TEST_F(TlsReloadTest, NewPairReachesTheStagedFilesGrpcReads) {
  EXPECT_EQ(StagedCert(), first_.cert);
  EXPECT_EQ(StagedKey(), first_.key);
  Replace(flags_.tls.key, second_.key);
  Replace(flags_.tls.cert, second_.cert);
  watcher_->CheckNow("test");
  EXPECT_EQ(StagedCert(), second_.cert);
  EXPECT_EQ(StagedKey(), second_.key);
  EXPECT_EQ(watcher_->Count("tls-cert", "ok"), 1u);
  EXPECT_EQ(watcher_->Count("tls-cert", "error"), 0u);
}

TEST_F(TlsReloadTest, CheckBetweenTheTwoRenamesOfARotationIsNotAFailure) {
  Replace(flags_.tls.key, second_.key);  // The certificate follows later.
  watcher_->CheckNow("test");
  EXPECT_EQ(StagedCert(), first_.cert);
  EXPECT_EQ(watcher_->Count("tls-cert", "error"), 0u);
  Replace(flags_.tls.cert, second_.cert);
  watcher_->CheckNow("test");
  EXPECT_EQ(StagedCert(), second_.cert);
  EXPECT_EQ(watcher_->Count("tls-cert", "ok"), 1u);
  EXPECT_EQ(watcher_->Count("tls-cert", "error"), 0u);
}

TEST_F(TlsReloadTest, KeyOfAnotherCertificateKeepsTheOldPair) {
  Replace(flags_.tls.key, second_.key);
  watcher_->CheckNow("test");
  watcher_->CheckNow("test");  // Still not the certificate's key: refused.
  EXPECT_EQ(watcher_->Count("tls-cert", "error"), 1u);
  watcher_->CheckNow("test");
  EXPECT_EQ(watcher_->Count("tls-cert", "error"), 1u);  // Once per contents.
  EXPECT_EQ(StagedCert(), first_.cert);
  EXPECT_EQ(StagedKey(), first_.key);
  Replace(flags_.tls.cert, "garbage");
  watcher_->CheckNow("test");
  watcher_->CheckNow("test");
  EXPECT_EQ(watcher_->Count("tls-cert", "error"), 2u);
  EXPECT_EQ(StagedCert(), first_.cert);
  EXPECT_EQ(watcher_->Count("tls-cert", "ok"), 0u);
}

TEST(StagedTlsFilesTest, EachGenerationIsLaterAndTheDirectoryGoesAway) {
  const KeyPair a = SelfSigned("a", 1);
  const KeyPair b = SelfSigned("b", 2);
  absl::StatusOr<std::unique_ptr<StagedTlsFiles>> staged =
      StagedTlsFiles::Create(TlsContents{a.cert, a.key, ""});
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_TRUE((*staged)->ca_path().empty());
  const std::string cert_path = (*staged)->cert_path();
  struct stat before;
  ASSERT_EQ(::stat(cert_path.c_str(), &before), 0);
  // gRPC pairs key and certificate by their modification times: every
  // generation must differ from the last, even within one second.
  ASSERT_TRUE((*staged)->Publish(TlsContents{b.cert, b.key, ""}).ok());
  struct stat after;
  ASSERT_EQ(::stat(cert_path.c_str(), &after), 0);
  EXPECT_GT(after.st_mtime, before.st_mtime);
  EXPECT_EQ(ReadAll(cert_path), b.cert);
  // Which parts exist is fixed.
  EXPECT_FALSE((*staged)->Publish(TlsContents{b.cert, b.key, b.cert}).ok());
  EXPECT_EQ(ReadAll(cert_path), b.cert);
  const std::string dir = std::filesystem::path(cert_path).parent_path().parent_path();
  staged->reset();
  EXPECT_FALSE(std::filesystem::exists(dir));
}

// A process killed with -9 runs no destructor: its directory (dangling links
// only) stays until the next process creates one under the same $TMPDIR,
// which removes it because nobody holds its lock any more. A directory whose
// lock is held, or that has no lock file, is not touched.
TEST(StagedTlsFilesTest, TheDirectoryOfAKilledProcessIsRemovedByTheNextOne) {
  const KeyPair a = SelfSigned("a", 1);
  const std::string base =
      std::filesystem::temp_directory_path() / ("staged-tls-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(base);
  ASSERT_TRUE(std::filesystem::create_directory(base));
  const char* old_tmpdir = std::getenv("TMPDIR");
  const std::string saved_tmpdir = old_tmpdir == nullptr ? "" : old_tmpdir;
  ::setenv("TMPDIR", base.c_str(), 1);

  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    absl::StatusOr<std::unique_ptr<StagedTlsFiles>> staged =
        StagedTlsFiles::Create(TlsContents{a.cert, a.key, ""});
    const std::string path = staged.ok() ? (*staged)->cert_path() : "";
    (void)!::write(pipe_fds[1], path.data(), path.size());
    ::close(pipe_fds[1]);
    ::pause();  // Until killed.
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  char buf[4096];
  const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
  ::close(pipe_fds[0]);
  ASSERT_GT(n, 0);
  const std::string killed_dir =
      std::filesystem::path(std::string(buf, static_cast<size_t>(n))).parent_path().parent_path();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(std::filesystem::exists(killed_dir));

  // A live owner's directory (its lock held) and one without a lock file.
  const std::string live_dir = base + "/kvstore-tls-live";
  ASSERT_TRUE(std::filesystem::create_directory(live_dir));
  const int live_lock = ::open((live_dir + "/owner.lock").c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(live_lock, 0);
  ASSERT_EQ(::flock(live_lock, LOCK_EX | LOCK_NB), 0);
  const std::string lockless_dir = base + "/kvstore-tls-nolock";
  ASSERT_TRUE(std::filesystem::create_directory(lockless_dir));

  int removed = -1;
  absl::StatusOr<std::unique_ptr<StagedTlsFiles>> next =
      StagedTlsFiles::Create(TlsContents{a.cert, a.key, ""}, &removed);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(removed, 1);
  EXPECT_FALSE(std::filesystem::exists(killed_dir));
  EXPECT_TRUE(std::filesystem::exists(live_dir));
  EXPECT_TRUE(std::filesystem::exists(lockless_dir));
  EXPECT_EQ(ReadAll((*next)->cert_path()), a.cert);

  next->reset();
  ::close(live_lock);
  if (saved_tmpdir.empty()) {
    ::unsetenv("TMPDIR");
  } else {
    ::setenv("TMPDIR", saved_tmpdir.c_str(), 1);
  }
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace kvstore
