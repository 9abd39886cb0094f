"""A service that lets in only callers with a valid authd access token.

Every request's `authorization: Bearer <token>` is checked by authd's ValidateToken
(the service holds no signing key), with the API key authd expects of ValidateToken
callers. Run:

    python -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
        auth/v1/auth.proto google/api/annotations.proto google/api/http.proto
    AUTHD_ADDR=127.0.0.1:50051 AUTHD_API_KEY=... PORT=8080 python orders_service.py
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from auth.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(os.environ.get("AUTHD_ADDR", "127.0.0.1:50051"))
authd = auth_pb2_grpc.AuthServiceStub(channel)
api_key = os.environ["AUTHD_API_KEY"]


class Orders(BaseHTTPRequestHandler):
    def do_GET(self):
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self.answer(401, "a bearer token is required\n")
        try:
            claims = authd.ValidateToken(
                auth_pb2.ValidateTokenRequest(token=token),
                metadata=[("x-api-key", api_key)],
                timeout=2,
            )
        except grpc.RpcError as err:
            # authd unreachable, or this service's key refused: not the caller's fault.
            return self.answer(503, f"cannot check the token: {err.code().name}\n")
        if not claims.active:
            reason = auth_pb2.InactiveReason.Name(claims.reason)
            return self.answer(401, f"token not accepted: {reason}\n")
        self.answer(200, f"orders of {claims.email} ({claims.role})\n")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Orders)
print("listening", flush=True)
server.serve_forever()
