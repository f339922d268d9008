#!/usr/bin/python3
"""A kvstore client in Python: every call of kvstore.v1.KeyValue, through the router.

Uses Debian's python3-grpcio and python3-protobuf (run it with /usr/bin/python3)
and stubs generated from proto/kvstore/v1/kv.proto (docs/clients.md):

  protoc --proto_path=proto --python_out=gen --grpc_out=gen \
      --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin kvstore/v1/kv.proto
  PYTHONPATH=gen /usr/bin/python3 tools/clients/python/kv_example.py 127.0.0.1:50051

Prints one line per call. Exit code: 0 done, 1 a call failed (its gRPC status
code is printed), 2 usage error.
"""

import argparse
import sys

import grpc

try:
    from kvstore.v1 import kv_pb2, kv_pb2_grpc
except ImportError:
    kv_pb2 = kv_pb2_grpc = None  # Reported once the flags are parsed, so that --help works.

# gRPC's numeric codes (as in a batch's KeyError.code) by name.
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def text(value):
    """Keys and values are bytes; these examples store UTF-8 text."""
    return '"' + value.decode("utf-8", errors="replace") + '"'


def main():
    parser = argparse.ArgumentParser(description="Calls every kvstore.v1.KeyValue method once.")
    parser.add_argument("router", metavar="HOST:PORT", help="address of a kv-router (plaintext)")
    parser.add_argument("--deadline-ms", type=int, default=5000,
                        help="deadline of each call in milliseconds (default 5000)")
    args = parser.parse_args()
    if kv_pb2 is None:
        parser.error("no kvstore/v1/kv_pb2.py on PYTHONPATH: generate the stubs "
                     "(see the top of this file or docs/clients.md)")
    timeout = args.deadline_ms / 1000  # Python's gRPC takes the deadline as seconds from now.

    # One channel for the whole program: it reconnects by itself and is safe to share.
    with grpc.insecure_channel(args.router) as channel:
        kv = kv_pb2_grpc.KeyValueStub(channel)
        try:
            run(kv, timeout)
        except grpc.RpcError as e:
            # Every failed call raises grpc.RpcError: code() is a grpc.StatusCode.
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


def run(kv, timeout):
    # Set with a time to live: the key expires after 60 s.
    reply = kv.Set(kv_pb2.SetRequest(key=b"example:greeting", value=b"hello", ttl_ms=60000),
                   timeout=timeout)
    first = reply.version
    print(f"Set example:greeting = \"hello\" ttl_ms=60000: version={first}")

    got = kv.Get(kv_pb2.GetRequest(key=b"example:greeting"), timeout=timeout)
    print(f"Get example:greeting: found={str(got.found).lower()} value={text(got.value)} "
          f"version={got.version}")

    # A missing key is found=false, not an error.
    got = kv.Get(kv_pb2.GetRequest(key=b"example:missing"), timeout=timeout)
    print(f"Get example:missing: found={str(got.found).lower()}")

    # Compare-and-set: if_version=0 means "only if absent". The key exists, so
    # the server answers FAILED_PRECONDITION, naming the current version.
    try:
        kv.Set(kv_pb2.SetRequest(key=b"example:greeting", value=b"hi", if_version=0),
               timeout=timeout)
        print("Set example:greeting if_version=0: written (unexpected)")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        print(f"Set example:greeting if_version=0: {e.code().name}: {e.details()}")

    # With the version just read, the compare-and-set succeeds.
    reply = kv.Set(kv_pb2.SetRequest(key=b"example:greeting", value=b"hello again",
                                     if_version=first), timeout=timeout)
    print(f"Set example:greeting = \"hello again\" if_version={first}: version={reply.version}")

    deleted = kv.Delete(kv_pb2.DeleteRequest(key=b"example:greeting"), timeout=timeout)
    print(f"Delete example:greeting: deleted={str(deleted.deleted).lower()} "
          f"version={deleted.version}")

    # Batches: the router splits them per shard. Results come back in request
    # order; a key that failed carries its own error instead of failing the call.
    items = [kv_pb2.SetItem(key=b"example:a", value=b"1"),
             kv_pb2.SetItem(key=b"example:b", value=b"2"),
             kv_pb2.SetItem(key=b"example:c", value=b"3")]
    reply = kv.MultiSet(kv_pb2.MultiSetRequest(items=items), timeout=timeout)
    for item, result in zip(items, reply.results):
        if result.HasField("error"):
            print(f"MultiSet {item.key.decode()}: {CODE_NAMES[result.error.code]}: "
                  f"{result.error.message}")
        else:
            print(f"MultiSet {item.key.decode()} = {text(item.value)}: version={result.version}")

    keys = [b"example:a", b"example:b", b"example:missing"]
    reply = kv.MultiGet(kv_pb2.MultiGetRequest(keys=keys), timeout=timeout)
    for key, result in zip(keys, reply.results):
        if result.HasField("error"):
            print(f"MultiGet {key.decode()}: {CODE_NAMES[result.error.code]}: "
                  f"{result.error.message}")
        elif result.found:
            print(f"MultiGet {key.decode()}: found=true value={text(result.value)} "
                  f"version={result.version}")
        else:
            print(f"MultiGet {key.decode()}: found=false")

    # A write acknowledged once one follower has it durable (the shard needs a
    # replica), then a read that any replica may serve. Replica reads may be
    # stale; with one replica, this one has the write.
    ack = kv_pb2.WriteAck(mode=kv_pb2.ACK_MODE_REPLICAS, replicas=1)
    reply = kv.Set(kv_pb2.SetRequest(key=b"example:replicated", value=b"on a replica", ack=ack),
                   timeout=timeout)
    print(f"Set example:replicated = \"on a replica\" ack=ACK_MODE_REPLICAS replicas=1: "
          f"version={reply.version}")
    got = kv.Get(kv_pb2.GetRequest(key=b"example:replicated",
                                   read_mode=kv_pb2.READ_MODE_ANY_REPLICA), timeout=timeout)
    print(f"Get example:replicated read_mode=READ_MODE_ANY_REPLICA: "
          f"found={str(got.found).lower()} value={text(got.value)} version={got.version}")

    # Pipeline: many requests on one stream, without a call each; a message
    # carries one or more. Each answer carries its request's id and comes as
    # soon as that request completes (in any order, several to a message); a
    # request's failure is in its answer's status, not raised.
    requests = [
        kv_pb2.PipelineRequest(id=1, set=kv_pb2.SetRequest(key=b"example:p", value=b"piped")),
        kv_pb2.PipelineRequest(id=2, get=kv_pb2.GetRequest(key=b"example:a")),
        kv_pb2.PipelineRequest(id=3, set=kv_pb2.SetRequest(key=b"", value=b"no key")),
    ]
    messages = iter([kv_pb2.PipelineRequests(requests=requests)])
    answers = {a.id: a for message in kv.Pipeline(messages, timeout=timeout)
               for a in message.responses}
    for request in requests:
        answer = answers[request.id]
        kind = request.WhichOneof("request")
        what = f"Pipeline id={request.id} {kind.capitalize()} {text(getattr(request, kind).key)}"
        if answer.status.code != 0:
            print(f"{what}: {CODE_NAMES[answer.status.code]}: {answer.status.message}")
        elif kind == "set":
            print(f"{what} = {text(request.set.value)}: version={answer.set.version}")
        else:
            print(f"{what}: found={str(answer.get.found).lower()} value={text(answer.get.value)} "
                  f"version={answer.get.version}")


if __name__ == "__main__":
    sys.exit(main())
