#include "common/security/access_policy.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/auth_context.h"

namespace kvstore {
namespace {

using Digest = std::array<unsigned char, 32>;

Digest Sha256(absl::string_view data) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

// Deliberately the same for every refusal: a caller learns nothing about
// which token or certificate would have worked.
constexpr char kPublicRefusal[] =
    "this server requires a bearer token (authorization: Bearer <token>)";
constexpr char kClusterRefusal[] =
    "Admin, Replication and Migration require a client certificate signed by the cluster CA or the "
    "admin "
    "token (authorization: Bearer <token>)";

}  // namespace

absl::StatusOr<std::string> LoadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read token file ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("cannot read token file ", path));
  return ParseToken(path, contents.str());
}

absl::StatusOr<std::string> ParseToken(const std::string& path, absl::string_view contents) {
  std::string token(absl::StripAsciiWhitespace(contents));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  }
  for (unsigned char c : token) {
    // A metadata value must be printable ASCII; a space would make the
    // "Bearer <token>" value ambiguous.
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file ", path,
          " holds whitespace, control or non-ASCII bytes inside the token; a token is one "
          "line of printable ASCII"));
    }
  }
  return token;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Hashing first makes both sides the same length, so the comparison takes
  // the same time whatever the lengths; SHA-256 collisions are not a concern.
  const Digest da = Sha256(a);
  const Digest db = Sha256(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

AccessPolicy::AccessPolicy(const std::string& public_token, const std::string& admin_token,
                           bool verify_client_certs)
    : has_public_(!public_token.empty()),
      has_admin_(!admin_token.empty()),
      verify_client_certs_(verify_client_certs) {
  auto digests = std::make_shared<Digests>();
  if (has_public_) digests->public_digest = Sha256(public_token);
  if (has_admin_) digests->admin_digest = Sha256(admin_token);
  digests_ = std::move(digests);
}

AccessPolicy::AccessPolicy(const AccessPolicy& other)
    : has_public_(other.has_public_),
      has_admin_(other.has_admin_),
      verify_client_certs_(other.verify_client_certs_),
      digests_(other.digests()) {}

AccessPolicy& AccessPolicy::operator=(const AccessPolicy& other) {
  if (this == &other) return *this;
  has_public_ = other.has_public_;
  has_admin_ = other.has_admin_;
  verify_client_certs_ = other.verify_client_certs_;
  std::atomic_store(&digests_, other.digests());
  return *this;
}

absl::Status AccessPolicy::ReplaceTokens(const std::string& public_token,
                                         const std::string& admin_token) {
  if (public_token.empty() == has_public_ || admin_token.empty() == has_admin_) {
    return absl::FailedPreconditionError(
        "turning the public or admin token on or off needs a restart; only their values can be "
        "replaced");
  }
  if (has_public_ && ConstantTimeEquals(public_token, admin_token)) {
    return absl::InvalidArgumentError(
        "the public and admin tokens are the same: the public token would open Admin and "
        "Replication");
  }
  auto digests = std::make_shared<Digests>();
  if (has_public_) digests->public_digest = Sha256(public_token);
  if (has_admin_) digests->admin_digest = Sha256(admin_token);
  std::atomic_store(&digests_, std::shared_ptr<const Digests>(std::move(digests)));
  return absl::OkStatus();
}

bool AccessPolicy::BearerMatches(std::optional<absl::string_view> authorization,
                                 const Digest& want) const {
  if (!authorization.has_value()) return false;
  // The scheme is case-insensitive (RFC 7235); the token is not.
  constexpr size_t kPrefix = sizeof(kBearerPrefix) - 1;
  if (authorization->size() <= kPrefix ||
      !absl::EqualsIgnoreCase(authorization->substr(0, kPrefix), kBearerPrefix)) {
    return false;
  }
  const Digest got = Sha256(authorization->substr(kPrefix));
  return CRYPTO_memcmp(got.data(), want.data(), got.size()) == 0;
}

bool AccessPolicy::Allows(Access access, std::optional<absl::string_view> authorization,
                          bool peer_verified) const {
  switch (access) {
    case Access::kPublic:
      return !has_public_ || BearerMatches(authorization, digests()->public_digest);
    case Access::kCluster:
      if (!enforcing()) return true;
      if (verify_client_certs_ && peer_verified) return true;
      return has_admin_ && BearerMatches(authorization, digests()->admin_digest);
  }
  return false;
}

grpc::Status AccessPolicy::Check(const grpc::ServerContextBase& context, Access access) const {
  if (!enforcing()) return grpc::Status::OK;
  std::optional<absl::string_view> authorization;
  const auto& metadata = context.client_metadata();
  const auto range = metadata.equal_range(kAuthorizationKey);
  for (auto it = range.first; it != range.second; ++it) {
    if (authorization.has_value()) {
      authorization.reset();  // Two of them: ambiguous, so neither counts.
      break;
    }
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  bool peer_verified = false;
  if (verify_client_certs_) {
    const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    peer_verified = auth != nullptr && auth->IsPeerAuthenticated();
  }
  if (Allows(access, authorization, peer_verified)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      access == Access::kPublic ? kPublicRefusal : kClusterRefusal);
}

grpc::ServerUnaryReactor* RefuseUnauthenticated(const AccessPolicy* policy,
                                                grpc::CallbackServerContext* context,
                                                Access access) {
  if (policy == nullptr) return nullptr;
  grpc::Status status = policy->Check(*context, access);
  if (status.ok()) return nullptr;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::Status CheckAccess(const AccessPolicy* policy, const grpc::ServerContextBase& context,
                         Access access) {
  if (policy == nullptr) return grpc::Status::OK;
  return policy->Check(context, access);
}

}  // namespace kvstore
