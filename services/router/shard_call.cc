#include "services/router/shard_call.h"

namespace kvstore {

void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context, const v1::GetRequest* request,
              v1::GetResponse* response, RpcDone done) {
  stub->async()->Get(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context, const v1::SetRequest* request,
              v1::SetResponse* response, RpcDone done) {
  stub->async()->Set(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::DeleteRequest* request, v1::DeleteResponse* response, RpcDone done) {
  stub->async()->Delete(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::MultiGetRequest* request, v1::MultiGetResponse* response, RpcDone done) {
  stub->async()->MultiGet(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::MultiSetRequest* request, v1::MultiSetResponse* response, RpcDone done) {
  stub->async()->MultiSet(context, request, response, std::move(done));
}
void StartRpc(v1::KeyValue::Stub* stub, grpc::ClientContext* context,
              const v1::ScanRequest* request, v1::ScanResponse* response, RpcDone done) {
  stub->async()->Scan(context, request, response, std::move(done));
}

}  // namespace kvstore
