// Durability figures from the final reads (ops marked "phase":"final": gets
// done after healing and restarting everything). The final state of a key is
// what its last ok final get returned; writes of keys without one, or invoked
// after it, are not judged, and counted apart when acked. Definitions (docs/reliability.md):
//   acked      ok sets and CAS, and ok deletes that deleted.
//   lost       an acked write the final state does not reflect: for a set,
//              the final version is below the write's, or equal with another
//              value, or the key is absent and no delete superseded it (an ok
//              delete with a higher version, or an info delete that could
//              have applied after it: no if_version, or one at least the
//              write's version); for a delete, the key is present with a
//              version not above the delete's.
//   recovered  info sets/CAS whose value is the final value.
//   phantom    failed sets/CAS whose value is the final value.
#ifndef KVSTORE_TOOLS_KVCHECK_DURABILITY_H_
#define KVSTORE_TOOLS_KVCHECK_DURABILITY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tools/kvcheck/history.h"

namespace kvstore::check {

struct DurabilityFigures {
  int64_t keys_with_final_read = 0;
  int64_t acked = 0;
  int64_t acked_without_final_read = 0;  // Not judged: no final read of their key after them.
  int64_t lost = 0;
  int64_t recovered = 0;
  int64_t phantom = 0;
  std::vector<int> lost_ops, recovered_ops, phantom_ops;  // History::ops ids.
  std::map<std::string, int> final_read;                  // Key -> its final get.
};

DurabilityFigures ComputeDurability(const History& h);

}  // namespace kvstore::check

#endif  // KVSTORE_TOOLS_KVCHECK_DURABILITY_H_
