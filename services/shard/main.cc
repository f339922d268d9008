// kv-shard: a shard leader. See services/replication/node_main.h.
#include "services/replication/node_main.h"

int main(int argc, char** argv) { return kvstore::NodeMain(argc, argv, kvstore::NodeKind::kShard); }
