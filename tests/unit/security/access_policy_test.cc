// The access decision (who may call KeyValue, Admin and Replication), token
// files, and the start-up checks of the security flags. The per-RPC wiring is
// tested against the real binaries in tests/integration/security_integration_test.cc.
#include "common/security/access_policy.h"

#include <stdlib.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "common/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::TempDir;

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& content) {
  const std::string path = dir.Join(name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(LoadTokenFileTest, TrimsSurroundingWhitespace) {
  TempDir dir;
  absl::StatusOr<std::string> token = LoadTokenFile(WriteFile(dir, "t", "  s3cret-Token_1\n\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret-Token_1");
}

TEST(LoadTokenFileTest, RefusesMissingEmptyAndMultiWordFiles) {
  TempDir dir;
  EXPECT_FALSE(LoadTokenFile(dir.Join("missing")).ok());
  EXPECT_FALSE(LoadTokenFile(WriteFile(dir, "empty", " \n")).ok());
  EXPECT_FALSE(LoadTokenFile(WriteFile(dir, "two", "a b\n")).ok());
  EXPECT_FALSE(LoadTokenFile(WriteFile(dir, "ctl", std::string("a\0b", 3))).ok());
}

TEST(ConstantTimeEqualsTest, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
}

TEST(AccessPolicyTest, DefaultPolicyAllowsEverything) {
  const AccessPolicy open;
  EXPECT_FALSE(open.enforcing());
  EXPECT_TRUE(open.Allows(Access::kPublic, std::nullopt, false));
  EXPECT_TRUE(open.Allows(Access::kCluster, std::nullopt, false));
}

TEST(AccessPolicyTest, PublicTokenOpensKeyValueOnly) {
  const AccessPolicy policy("pub", "adm", /*verify_client_certs=*/false);
  EXPECT_TRUE(policy.Allows(Access::kPublic, "Bearer pub", false));
  EXPECT_TRUE(policy.Allows(Access::kPublic, "bearer pub", false));  // Scheme: any case.
  EXPECT_FALSE(policy.Allows(Access::kPublic, std::nullopt, false));
  EXPECT_FALSE(policy.Allows(Access::kPublic, "Bearer Pub", false));  // Token: exact.
  EXPECT_FALSE(policy.Allows(Access::kPublic, "Bearer pub ", false));
  EXPECT_FALSE(policy.Allows(Access::kPublic, "Bearer ", false));
  EXPECT_FALSE(policy.Allows(Access::kPublic, "pub", false));
  EXPECT_FALSE(policy.Allows(Access::kPublic, "Basic pub", false));
  // The admin token is for Admin and Replication, not the data.
  EXPECT_FALSE(policy.Allows(Access::kPublic, "Bearer adm", false));
  // A public token never opens Admin or Replication.
  EXPECT_FALSE(policy.Allows(Access::kCluster, "Bearer pub", false));
  EXPECT_TRUE(policy.Allows(Access::kCluster, "Bearer adm", false));
  EXPECT_FALSE(policy.Allows(Access::kCluster, std::nullopt, false));
}

TEST(AccessPolicyTest, VerifiedCertificateOpensClusterServicesButNotATokenProtectedApi) {
  const AccessPolicy policy("pub", "", /*verify_client_certs=*/true);
  EXPECT_TRUE(policy.Allows(Access::kCluster, std::nullopt, true));
  EXPECT_FALSE(policy.Allows(Access::kCluster, std::nullopt, false));
  EXPECT_FALSE(policy.Allows(Access::kCluster, "Bearer pub", false));
  EXPECT_FALSE(policy.Allows(Access::kPublic, std::nullopt, true));
  EXPECT_TRUE(policy.Allows(Access::kPublic, "Bearer pub", true));
}

TEST(AccessPolicyTest, ClientCertificatesAloneLeaveKeyValueOpenToVerifiedPeers) {
  const AccessPolicy policy("", "", /*verify_client_certs=*/true);
  EXPECT_TRUE(policy.enforcing());
  EXPECT_TRUE(policy.Allows(Access::kPublic, std::nullopt, true));
  EXPECT_TRUE(policy.Allows(Access::kCluster, std::nullopt, true));
  // Without a verified certificate (not possible through a server that
  // requires one, but the policy does not rely on that).
  EXPECT_FALSE(policy.Allows(Access::kCluster, std::nullopt, false));
}

TEST(AccessPolicyTest, AdminTokenAloneLocksOnlyTheClusterServices) {
  const AccessPolicy policy("", "adm", false);
  EXPECT_TRUE(policy.Allows(Access::kPublic, std::nullopt, false));
  EXPECT_FALSE(policy.Allows(Access::kCluster, std::nullopt, false));
  EXPECT_TRUE(policy.Allows(Access::kCluster, "Bearer adm", false));
}

TEST(AccessPolicyTest, ReplacedTokensOpenFromTheNextCheckAndTheOldOnesNoLonger) {
  AccessPolicy policy("pub", "adm", /*verify_client_certs=*/true);
  ASSERT_TRUE(policy.ReplaceTokens("pub2", "adm2").ok());
  EXPECT_TRUE(policy.Allows(Access::kPublic, "Bearer pub2", false));
  EXPECT_FALSE(policy.Allows(Access::kPublic, "Bearer pub", false));
  EXPECT_TRUE(policy.Allows(Access::kCluster, "Bearer adm2", false));
  EXPECT_FALSE(policy.Allows(Access::kCluster, "Bearer adm", false));
  EXPECT_TRUE(policy.Allows(Access::kCluster, std::nullopt, true));  // Certificates unchanged.
  // A copy made now keeps the tokens of now.
  const AccessPolicy copy = policy;
  ASSERT_TRUE(policy.ReplaceTokens("pub3", "adm3").ok());
  EXPECT_TRUE(copy.Allows(Access::kPublic, "Bearer pub2", false));
  EXPECT_TRUE(policy.Allows(Access::kPublic, "Bearer pub3", false));
}

TEST(AccessPolicyTest, ReplaceTokensNeverTurnsATokenOnOrOffNorMergesThem) {
  AccessPolicy policy("pub", "", /*verify_client_certs=*/true);
  EXPECT_EQ(policy.ReplaceTokens("", "").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(policy.ReplaceTokens("pub2", "adm").code(), absl::StatusCode::kFailedPrecondition);
  AccessPolicy both("pub", "adm", false);
  EXPECT_EQ(both.ReplaceTokens("same", "same").code(), absl::StatusCode::kInvalidArgument);
  // Refused replacements left the old tokens in force.
  EXPECT_TRUE(policy.Allows(Access::kPublic, "Bearer pub", false));
  EXPECT_TRUE(both.Allows(Access::kPublic, "Bearer pub", false));
  EXPECT_FALSE(both.Allows(Access::kCluster, "Bearer same", false));
  AccessPolicy open;
  EXPECT_TRUE(open.ReplaceTokens("", "").ok());
  EXPECT_FALSE(open.enforcing());
}

TEST(LoadServerSecurityTest, NoFlagsIsPlaintextWithoutChecks) {
  absl::StatusOr<ServerSecurity> security = LoadServerSecurity(SecurityFlags{});
  ASSERT_TRUE(security.ok()) << security.status();
  EXPECT_EQ(security->server_credentials, nullptr);
  EXPECT_EQ(security->client.credentials, nullptr);
  EXPECT_FALSE(security->policy.enforcing());
  EXPECT_TRUE(security->client.public_token().empty());
  EXPECT_TRUE(security->client.admin_token().empty());
}

TEST(LoadServerSecurityTest, RefusesCombinationsThatLockOutTheClusterOrLeakAdmin) {
  TempDir dir;
  SecurityFlags flags;
  flags.auth_token_file = WriteFile(dir, "pub", "pub\n");
  // A public token alone would leave Admin and Replication open to nobody.
  absl::StatusOr<ServerSecurity> security = LoadServerSecurity(flags);
  EXPECT_FALSE(security.ok());
  EXPECT_NE(security.status().message().find("--admin-token-file"), std::string::npos)
      << security.status();
  // The same token for both would let the public token open Admin.
  flags.admin_token_file = WriteFile(dir, "adm", "pub");
  security = LoadServerSecurity(flags);
  EXPECT_FALSE(security.ok());
  flags.admin_token_file = WriteFile(dir, "adm2", "adm");
  security = LoadServerSecurity(flags);
  ASSERT_TRUE(security.ok()) << security.status();
  EXPECT_EQ(security->client.public_token(), "pub");
  EXPECT_EQ(security->client.admin_token(), "adm");
  // A router's backend token replaces the public one on its outgoing calls.
  flags.backend_token_file = WriteFile(dir, "backend", "shards");
  security = LoadServerSecurity(flags);
  ASSERT_TRUE(security.ok()) << security.status();
  EXPECT_EQ(security->client.public_token(), "shards");
}

TEST(LoadServerSecurityTest, RefusesIncompleteOrUnreadableTlsFiles) {
  TempDir dir;
  SecurityFlags flags;
  flags.tls.cert = WriteFile(dir, "cert.pem", "not a certificate");
  EXPECT_FALSE(LoadServerSecurity(flags).ok());  // No key.
  flags.tls.key = WriteFile(dir, "key.pem", "not a key");
  absl::StatusOr<ServerSecurity> security = LoadServerSecurity(flags);
  EXPECT_FALSE(security.ok());
  EXPECT_NE(security.status().message().find("cert.pem"), std::string::npos) << security.status();
  SecurityFlags ca_only;
  ca_only.tls.ca = WriteFile(dir, "ca.pem", "x");
  EXPECT_FALSE(LoadServerSecurity(ca_only).ok());  // mTLS needs the server's own certificate.
  SecurityFlags missing;
  missing.tls.cert = dir.Join("nope.pem");
  missing.tls.key = dir.Join("nope.key");
  EXPECT_FALSE(LoadServerSecurity(missing).ok());
}

}  // namespace
}  // namespace kvstore
