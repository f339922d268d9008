// gflags names use underscores; our documented spelling uses dashes
// (--data-dir, --sync-acks). Rewriting argv before parsing lets both work.
#ifndef KVSTORE_COMMON_CONFIG_FLAG_NAMES_H_
#define KVSTORE_COMMON_CONFIG_FLAG_NAMES_H_

namespace kvstore {

// Turns "--data-dir=x" into "--data_dir=x" in place (the name part only, never
// the value), for every argument before a bare "--".
void NormalizeFlagSpelling(int argc, char** argv);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_CONFIG_FLAG_NAMES_H_
