#include "common/storage/storage_failpoints.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvstore {
namespace storage_failpoints {

#ifdef KV_FAULT_CONTROLS
absl::Status InjectedIoError(const char* name, absl::string_view op, const std::string& path) {
  const int failnum = fiu_fail(name);
  if (failnum == 0) return absl::OkStatus();
  const int err = failnum == 1 ? EIO : failnum;
  const std::string msg =
      absl::StrCat(op, " ", path, ": ", std::strerror(err), " (failpoint ", name, ")");
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}
#endif

}  // namespace storage_failpoints
}  // namespace kvstore
