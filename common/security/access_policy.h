// Who may call what on a kvstore server: the check every RPC handler makes
// first, before it reads or changes anything.
//
//   kPublic  (kvstore.v1.KeyValue): open, unless the server has a public token
//            (--auth-token-file); then the call must carry
//            "authorization: Bearer <token>".
//   kCluster (kvstore.v1.Admin, Replication, Migration): open only while the
//            server has no security configured at all. Otherwise the caller
//            needs a client certificate verified against --tls-ca (mutual
//            TLS), or "authorization: Bearer <admin token>"
//            (--admin-token-file). The public token never opens them.
//
// A refusal is always UNAUTHENTICATED with a message that does not say which
// part was wrong. Tokens are compared in constant time (SHA-256 of each side,
// compared with CRYPTO_memcmp), so neither a token's bytes nor its length leak
// through timing. grpc.health.v1.Health and server reflection are gRPC's own
// services and are not checked (docs/security.md).
#ifndef KVSTORE_COMMON_SECURITY_ACCESS_POLICY_H_
#define KVSTORE_COMMON_SECURITY_ACCESS_POLICY_H_

#include <array>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/status.h"

namespace kvstore {

enum class Access {
  kPublic,   // kvstore.v1.KeyValue.
  kCluster,  // kvstore.v1.Admin, kvstore.v1.Replication and kvstore.v1.Migration.
};

// The metadata key and scheme clients send tokens with.
inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

// Reads a token file: its contents with surrounding whitespace (a trailing
// newline) removed. InvalidArgument when the file cannot be read or the token
// is empty or holds whitespace or control characters (it must fit in one
// metadata value).
absl::StatusOr<std::string> LoadTokenFile(const std::string& path);
// The same checks on `contents`, already read from `path` (for the message).
absl::StatusOr<std::string> ParseToken(const std::string& path, absl::string_view contents);

// Equality of two byte strings in time that depends on neither's contents nor
// length.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// Thread-safe. Which checks are configured (a public token, an admin token,
// client certificates) is fixed at construction; the token values can be
// replaced while calls are checked (ReplaceTokens: a rotated token file). The
// default policy lets every call through (a server started without security
// flags).
class AccessPolicy {
 public:
  AccessPolicy() = default;
  // Empty tokens are "not configured". `verify_client_certs`: the server's TLS
  // verifies client certificates against a CA, so a verified peer may use
  // kCluster services.
  AccessPolicy(const std::string& public_token, const std::string& admin_token,
               bool verify_client_certs);
  // Copies the tokens current at the time of the copy.
  AccessPolicy(const AccessPolicy& other);
  AccessPolicy& operator=(const AccessPolicy& other);

  // From the next check on, the tokens are these (a check already running
  // uses the old or the new pair, never a mix). FailedPrecondition when this
  // would turn a token on or off (empty for a configured one or the reverse:
  // that needs a restart); InvalidArgument when both are set and equal (the
  // public token would open Admin). Either way the old tokens stay.
  absl::Status ReplaceTokens(const std::string& public_token, const std::string& admin_token);

  // True when any check is configured (some call can be refused).
  bool enforcing() const { return has_public_ || has_admin_ || verify_client_certs_; }

  // The decision, apart from gRPC: `authorization` is the call's
  // "authorization" metadata value (nullopt when absent), `peer_verified`
  // whether the TLS layer verified a client certificate.
  bool Allows(Access access, std::optional<absl::string_view> authorization,
              bool peer_verified) const;

  // OK, or UNAUTHENTICATED, for the call of `context`.
  grpc::Status Check(const grpc::ServerContextBase& context, Access access) const;

 private:
  using Digest = std::array<unsigned char, 32>;
  // One immutable pair, swapped as a whole (std::atomic_load/atomic_store on
  // the shared_ptr), so a check reads one consistent pair without a lock of
  // ours; the comparison stays constant-time.
  struct Digests {
    Digest public_digest{};
    Digest admin_digest{};
  };
  bool BearerMatches(std::optional<absl::string_view> authorization, const Digest& want) const;
  std::shared_ptr<const Digests> digests() const { return std::atomic_load(&digests_); }

  bool has_public_ = false;
  bool has_admin_ = false;
  bool verify_client_certs_ = false;
  std::shared_ptr<const Digests> digests_ = std::make_shared<const Digests>();
};

// For the first line of a callback (unary) handler:
//   if (auto* refused = RefuseUnauthenticated(access_, context, Access::kPublic)) return refused;
// Null when the call may go on (always when `policy` is null); otherwise the
// call's default reactor, already finished with UNAUTHENTICATED.
grpc::ServerUnaryReactor* RefuseUnauthenticated(const AccessPolicy* policy,
                                                grpc::CallbackServerContext* context,
                                                Access access);

// For synchronous handlers: OK when `policy` is null or allows the call.
grpc::Status CheckAccess(const AccessPolicy* policy, const grpc::ServerContextBase& context,
                         Access access);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SECURITY_ACCESS_POLICY_H_
