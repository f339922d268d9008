// The security flags every kvstore server binary takes (kv-shard,
// kv-replica, kv-router): --tls-cert, --tls-key, --tls-ca,
// --auth-token-file, --admin-token-file, --credentials-reload-interval. Linking kv_security_flags
// defines them; see credentials.h and docs/security.md for what they do.
#ifndef KVSTORE_COMMON_SECURITY_SERVER_FLAGS_H_
#define KVSTORE_COMMON_SECURITY_SERVER_FLAGS_H_

#include "common/security/credentials.h"

namespace kvstore {

// The flags' current values (after parsing and --config).
SecurityFlags SecurityFlagsFromCommandLine();

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SECURITY_SERVER_FLAGS_H_
