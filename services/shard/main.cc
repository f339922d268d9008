// kv-shard: a shard leader. See services/node/node_main.h.
#include "services/node/node_main.h"

int main(int argc, char** argv) { return kvstore::NodeMain(argc, argv, kvstore::NodeKind::kShard); }
