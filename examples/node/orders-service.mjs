// A service that lets in only callers with a valid authd access token.
//
// Every request's `authorization: Bearer <token>` is checked by authd's ValidateToken
// (the service holds no signing key), with the API key authd expects of ValidateToken
// callers. The proto is loaded at start-up; nothing is generated. Run:
//
//   npm ci
//   AUTHD_ADDR=127.0.0.1:50051 AUTHD_API_KEY=... PORT=8080 node orders-service.mjs
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const protoDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../proto");
const definition = protoLoader.loadSync("auth/v1/auth.proto", {
  includeDirs: [protoDir],
  enums: String,
});
const { AuthService } = grpc.loadPackageDefinition(definition).auth.v1;
const authd = new AuthService(
  process.env.AUTHD_ADDR ?? "127.0.0.1:50051",
  grpc.credentials.createInsecure(),
);
const apiKey = process.env.AUTHD_API_KEY;
if (!apiKey) {
  throw new Error("AUTHD_API_KEY is required: the key authd expects of ValidateToken callers");
}

function validate(token) {
  const metadata = new grpc.Metadata();
  metadata.set("x-api-key", apiKey);
  const deadline = new Date(Date.now() + 2000);
  return new Promise((resolve, reject) =>
    authd.validateToken({ token }, metadata, { deadline }, (err, claims) =>
      err ? reject(err) : resolve(claims),
    ),
  );
}

const server = http.createServer(async (request, response) => {
  const answer = (status, body) => {
    response.writeHead(status, { "content-type": "text/plain" });
    response.end(body);
  };
  const [scheme, token] = (request.headers.authorization ?? "").split(" ", 2);
  if (scheme?.toLowerCase() !== "bearer" || !token) {
    return answer(401, "a bearer token is required\n");
  }
  let claims;
  try {
    claims = await validate(token);
  } catch (err) {
    // authd unreachable, or this service's key refused: not the caller's fault.
    return answer(503, `cannot check the token: ${grpc.status[err.code]}\n`);
  }
  if (!claims.active) {
    return answer(401, `token not accepted: ${claims.reason}\n`);
  }
  answer(200, `orders of ${claims.email} (${claims.role})\n`);
});
server.listen(Number(process.env.PORT ?? 8080), "127.0.0.1", () => console.log("listening"));
