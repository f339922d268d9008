#!/usr/bin/env node
// A kvstore client in Node.js: every call of kvstore.v1.KeyValue, through the router.
//
// Uses @grpc/grpc-js and @grpc/proto-loader (pinned by package.json and
// package-lock.json here) and loads proto/kvstore/v1/kv.proto at run time: no
// generated code. See docs/clients.md:
//
//   node tools/clients/node/kv_example.js 127.0.0.1:50051
//
// Prints one line per call. Exit code: 0 done, 1 a call failed (its gRPC status
// code is printed), 2 usage error.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const USAGE = `usage: kv_example.js [--deadline-ms=N] [--proto-dir=DIR] HOST:PORT

Calls every kvstore.v1.KeyValue method once.

  HOST:PORT          address of a kv-router (plaintext)
  --deadline-ms=N    deadline of each call in milliseconds (default 5000)
  --proto-dir=DIR    directory holding kvstore/v1/kv.proto (default: this
                     repository's proto/)
  --help             this text`;

function parseArgs(argv) {
  const args = {
    deadlineMs: 5000,
    protoDir: path.join(__dirname, '..', '..', '..', 'proto'),
    router: null,
  };
  for (const arg of argv) {
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else if (arg.startsWith('--deadline-ms=')) {
      args.deadlineMs = Number(arg.slice('--deadline-ms='.length));
      if (!Number.isInteger(args.deadlineMs) || args.deadlineMs <= 0) usageError(`bad ${arg}`);
    } else if (arg.startsWith('--proto-dir=')) {
      args.protoDir = arg.slice('--proto-dir='.length);
    } else if (arg.startsWith('-') || args.router !== null) {
      usageError(`unexpected argument ${arg}`);
    } else {
      args.router = arg;
    }
  }
  if (args.router === null) usageError('the router address HOST:PORT is required');
  return args;
}

function usageError(message) {
  console.error(`kv_example.js: ${message}\n${USAGE}`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));

// keepCase: fields keep the .proto's names (if_version, read_mode).
// longs: String: uint64 versions arrive as decimal strings (JavaScript numbers
// lose precision above 2^53). enums: String: enum values by name. Bytes fields
// are Buffers. defaults: absent fields read as their defaults (message fields
// as null).
const definition = protoLoader.loadSync('kvstore/v1/kv.proto', {
  includeDirs: [args.protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const kvstore = grpc.loadPackageDefinition(definition).kvstore.v1;

// One client (one channel) for the whole program: it reconnects by itself.
const kv = new kvstore.KeyValue(args.router, grpc.credentials.createInsecure());

// Calls METHOD with a deadline; the promise fails with the gRPC error, whose
// .code is a number (grpc.status[code] is its name) and .details the message.
function call(method, request) {
  const deadline = new Date(Date.now() + args.deadlineMs);
  return new Promise((resolve, reject) => {
    kv[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// Keys and values are bytes (Buffers); these examples store UTF-8 text.
const text = (buffer) => `"${buffer.toString('utf8')}"`;

async function run() {
  // Set with a time to live: the key expires after 60 s.
  let reply = await call('Set', {
    key: Buffer.from('example:greeting'), value: Buffer.from('hello'), ttl_ms: 60000,
  });
  const first = reply.version;
  console.log(`Set example:greeting = "hello" ttl_ms=60000: version=${first}`);

  let got = await call('Get', { key: Buffer.from('example:greeting') });
  console.log(`Get example:greeting: found=${got.found} value=${text(got.value)} ` +
              `version=${got.version}`);

  // A missing key is found=false, not an error.
  got = await call('Get', { key: Buffer.from('example:missing') });
  console.log(`Get example:missing: found=${got.found}`);

  // Compare-and-set: if_version=0 means "only if absent". The key exists, so
  // the server answers FAILED_PRECONDITION, naming the current version.
  try {
    await call('Set', { key: Buffer.from('example:greeting'), value: Buffer.from('hi'),
                        if_version: 0 });
    console.log('Set example:greeting if_version=0: written (unexpected)');
  } catch (err) {
    if (err.code !== grpc.status.FAILED_PRECONDITION) throw err;
    console.log(`Set example:greeting if_version=0: ${grpc.status[err.code]}: ${err.details}`);
  }

  // With the version just read, the compare-and-set succeeds.
  reply = await call('Set', {
    key: Buffer.from('example:greeting'), value: Buffer.from('hello again'), if_version: first,
  });
  console.log(`Set example:greeting = "hello again" if_version=${first}: version=${reply.version}`);

  const deleted = await call('Delete', { key: Buffer.from('example:greeting') });
  console.log(`Delete example:greeting: deleted=${deleted.deleted} version=${deleted.version}`);

  // Batches: the router splits them per shard. Results come back in request
  // order; a key that failed carries its own error instead of failing the call.
  const items = [['example:a', '1'], ['example:b', '2'], ['example:c', '3']].map(
    ([key, value]) => ({ key: Buffer.from(key), value: Buffer.from(value) }));
  const set = await call('MultiSet', { items });
  set.results.forEach((result, i) => {
    const key = items[i].key.toString();
    if (result.error) {
      console.log(`MultiSet ${key}: ${grpc.status[result.error.code]}: ${result.error.message}`);
    } else {
      console.log(`MultiSet ${key} = ${text(items[i].value)}: version=${result.version}`);
    }
  });

  const keys = ['example:a', 'example:b', 'example:missing'];
  const many = await call('MultiGet', { keys: keys.map((key) => Buffer.from(key)) });
  many.results.forEach((result, i) => {
    if (result.error) {
      console.log(`MultiGet ${keys[i]}: ${grpc.status[result.error.code]}: ${result.error.message}`);
    } else if (result.found) {
      console.log(`MultiGet ${keys[i]}: found=true value=${text(result.value)} ` +
                  `version=${result.version}`);
    } else {
      console.log(`MultiGet ${keys[i]}: found=false`);
    }
  });

  // A write acknowledged once one follower has it durable (the shard needs a
  // replica), then a read that any replica may serve. Replica reads may be
  // stale; with one replica, this one has the write.
  reply = await call('Set', {
    key: Buffer.from('example:replicated'), value: Buffer.from('on a replica'),
    ack: { mode: 'ACK_MODE_REPLICAS', replicas: 1 },
  });
  console.log('Set example:replicated = "on a replica" ack=ACK_MODE_REPLICAS replicas=1: ' +
              `version=${reply.version}`);
  got = await call('Get', { key: Buffer.from('example:replicated'),
                            read_mode: 'READ_MODE_ANY_REPLICA' });
  console.log('Get example:replicated read_mode=READ_MODE_ANY_REPLICA: ' +
              `found=${got.found} value=${text(got.value)} version=${got.version}`);

  // Pipeline: many requests on one stream, without a call each; a message
  // carries one or more. Each answer carries its request's id and comes as
  // soon as that request completes (in any order, several to a message); a
  // request's failure is in its answer's status, not thrown.
  const requests = [
    { id: 1, set: { key: Buffer.from('example:p'), value: Buffer.from('piped') } },
    { id: 2, get: { key: Buffer.from('example:a') } },
    { id: 3, set: { key: Buffer.from(''), value: Buffer.from('no key') } },
  ];
  const answers = await pipeline(requests);
  for (const request of requests) {
    const answer = answers.get(String(request.id));
    const kind = request.set ? 'set' : 'get';
    const what = `Pipeline id=${request.id} ${kind === 'set' ? 'Set' : 'Get'} ` +
                 `${text(request[kind].key)}`;
    // status is left out (null here) when the request succeeded.
    if (answer.status && answer.status.code !== 0) {
      console.log(`${what}: ${grpc.status[answer.status.code]}: ${answer.status.message}`);
    } else if (kind === 'set') {
      console.log(`${what} = ${text(request.set.value)}: version=${answer.set.version}`);
    } else {
      console.log(`${what}: found=${answer.get.found} value=${text(answer.get.value)} ` +
                  `version=${answer.get.version}`);
    }
  }
}

// Sends REQUESTS on one Pipeline stream and resolves with the answers by id
// (a string: uint64s arrive as strings); fails with the stream's error.
function pipeline(requests) {
  const deadline = new Date(Date.now() + args.deadlineMs);
  return new Promise((resolve, reject) => {
    const answers = new Map();
    const stream = kv.Pipeline({ deadline });
    stream.on('data', (message) => {
      for (const answer of message.responses) answers.set(answer.id, answer);
    });
    stream.on('error', reject);
    stream.on('end', () => resolve(answers));
    stream.write({ requests });
    stream.end();
  });
}

run().then(
  () => kv.close(),
  (err) => {
    // A failed call: err.code is the gRPC status code. Anything else is a bug.
    if (typeof err.code === 'number') {
      console.error(`error: ${grpc.status[err.code]}: ${err.details}`);
    } else {
      console.error(err);
    }
    kv.close();
    process.exitCode = 1;
  });
