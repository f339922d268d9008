#include "common/security/credentials.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/client_interceptor.h"

namespace kvstore {
namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  if (in) contents << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  }
  return contents.str();
}

// OpenSSL objects freed on scope exit.
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM chain; null when there is none.
std::unique_ptr<X509, X509Free> FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  return std::unique_ptr<X509, X509Free>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// gRPC only reports a bad certificate or key as a failed bind or handshake;
// parsing them here first gives an error that names the file.
absl::Status CheckKeyPair(const TlsFiles& files, const std::string& cert_pem,
                          const std::string& key_pem) {
  std::unique_ptr<X509, X509Free> cert = FirstCertificate(cert_pem);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert: ", files.cert, " holds no PEM certificate"));
  }
  Bio bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key: ", files.key, " holds no PEM private key (or it is encrypted)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key: ", files.key, " is not the key of the certificate in ", files.cert));
  }
  return absl::OkStatus();
}

struct LoadedTls {
  std::string cert;
  std::string key;
  std::string ca;
};

absl::StatusOr<LoadedTls> LoadTls(const TlsFiles& files) {
  LoadedTls tls;
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!files.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile("tls-cert", files.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile("tls-key", files.key);
    if (!key.ok()) return key.status();
    if (absl::Status s = CheckKeyPair(files, *cert, *key); !s.ok()) return s;
    tls.cert = *std::move(cert);
    tls.key = *std::move(key);
  }
  if (!files.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("tls-ca", files.ca);
    if (!ca.ok()) return ca.status();
    if (FirstCertificate(*ca) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-ca: ", files.ca, " holds no PEM certificate"));
    }
    tls.ca = *std::move(ca);
  }
  return tls;
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const LoadedTls& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca;  // Empty: gRPC's default roots.
  options.pem_private_key = tls.key;
  options.pem_cert_chain = tls.cert;
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::string> OptionalToken(const std::string& flag, const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> token = LoadTokenFile(path);
  if (!token.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", token.status().message()));
  }
  return token;
}

// Adds "authorization: Bearer <token>" to a call's initial metadata, the
// token chosen by the service the call is for.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* value) : value_(value) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorizationKey, *value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;  // Owned by the factory, which the channel keeps.
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  TokenInterceptorFactory(const std::string& public_token, const std::string& admin_token)
      : public_value_(BearerValue(public_token)), admin_value_(BearerValue(admin_token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    const char* method = info->method();
    const bool cluster =
        method != nullptr && (absl::StartsWith(method, "/kvstore.v1.Admin/") ||
                              absl::StartsWith(method, "/kvstore.v1.Replication/") ||
                              absl::StartsWith(method, "/kvstore.v1.Migration/"));
    const std::string& value = cluster ? admin_value_ : public_value_;
    if (value.empty()) return nullptr;  // Nothing to add for this call.
    return new TokenInterceptor(&value);
  }

 private:
  // "Bearer <token>", or empty when there is no token.
  static std::string BearerValue(const std::string& token) {
    return token.empty() ? std::string() : absl::StrCat(kBearerPrefix, token);
  }

  const std::string public_value_;
  const std::string admin_value_;
};

}  // namespace

absl::StatusOr<ClientSecurity> LoadClientSecurity(const TlsFiles& files,
                                                  const std::string& public_token_file,
                                                  const std::string& admin_token_file) {
  ClientSecurity security;
  if (files.tls()) {
    absl::StatusOr<LoadedTls> tls = LoadTls(files);
    if (!tls.ok()) return tls.status();
    security.credentials = ChannelCredentials(*tls);
  }
  absl::StatusOr<std::string> public_token = OptionalToken("auth-token-file", public_token_file);
  if (!public_token.ok()) return public_token.status();
  absl::StatusOr<std::string> admin_token = OptionalToken("admin-token-file", admin_token_file);
  if (!admin_token.ok()) return admin_token.status();
  security.public_token = *std::move(public_token);
  security.admin_token = *std::move(admin_token);
  return security;
}

std::shared_ptr<grpc::Channel> CreateClientChannel(const std::string& target,
                                                   const ClientSecurity& security,
                                                   const grpc::ChannelArguments& args) {
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      security.credentials != nullptr ? security.credentials : grpc::InsecureChannelCredentials();
  if (security.public_token.empty() && security.admin_token.empty()) {
    return grpc::CreateCustomChannel(target, credentials, args);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(
      std::make_unique<TokenInterceptorFactory>(security.public_token, security.admin_token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                 std::move(factories));
}

absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityFlags& flags) {
  const TlsFiles& files = flags.tls;
  if (!files.ca.empty() && files.cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-ca needs --tls-cert and --tls-key: the server's own certificate");
  }
  absl::StatusOr<LoadedTls> tls = LoadTls(files);
  if (!tls.ok()) return tls.status();
  absl::StatusOr<std::string> public_token =
      OptionalToken("auth-token-file", flags.auth_token_file);
  if (!public_token.ok()) return public_token.status();
  absl::StatusOr<std::string> admin_token =
      OptionalToken("admin-token-file", flags.admin_token_file);
  if (!admin_token.ok()) return admin_token.status();
  absl::StatusOr<std::string> backend_token =
      OptionalToken("backend-token-file", flags.backend_token_file);
  if (!backend_token.ok()) return backend_token.status();

  if (!public_token->empty() && ConstantTimeEquals(*public_token, *admin_token)) {
    return absl::InvalidArgumentError(
        "--auth-token-file and --admin-token-file hold the same token: the public token would "
        "open Admin and Replication");
  }
  if (!public_token->empty() && admin_token->empty() && files.ca.empty()) {
    return absl::InvalidArgumentError(
        "--auth-token-file needs --admin-token-file or --tls-ca as well: otherwise Admin and "
        "Replication accept nobody (not the router's probes, not a leader's stream)");
  }

  ServerSecurity security;
  const bool mutual = !files.ca.empty();
  std::vector<std::string> summary;
  if (!tls->cert.empty()) {
    grpc::SslServerCredentialsOptions options(
        mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    options.pem_root_certs = tls->ca;
    options.pem_key_cert_pairs.push_back({tls->key, tls->cert});
    security.server_credentials = grpc::SslServerCredentials(options);
    security.client.credentials = ChannelCredentials(*tls);
    summary.push_back(mutual ? "mutual TLS (client certificates required, verified by --tls-ca)"
                             : "TLS (no client certificates)");
  } else {
    summary.push_back("plaintext");
  }
  security.policy = AccessPolicy(*public_token, *admin_token, mutual);
  if (!public_token->empty()) summary.push_back("KeyValue requires the bearer token");
  if (security.policy.enforcing()) {
    summary.push_back(
        absl::StrCat("Admin/Replication require ", mutual && !admin_token->empty()
                                                       ? "a client certificate or the admin token"
                                                   : mutual ? "a client certificate"
                                                            : "the admin token"));
  }
  security.client.public_token =
      backend_token->empty() ? *std::move(public_token) : *std::move(backend_token);
  security.client.admin_token = *std::move(admin_token);
  security.summary = absl::StrJoin(summary, "; ");
  return security;
}

}  // namespace kvstore
