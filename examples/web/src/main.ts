// Registers a user, logs in and reads the account back through authd's gRPC-Web endpoint
// (no proxy in between), then writes the outcome into #result as JSON.
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { AuthService } from "./gen/auth/v1/auth_pb";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("authd") ?? "http://127.0.0.1:50051";
const email = params.get("email") ?? `web-${Date.now()}@example.com`;
const password = "correct horse battery staple";

async function run() {
  const client = createClient(AuthService, createGrpcWebTransport({ baseUrl }));
  await client.register({ email, password, name: "Web User" });
  const login = await client.login({ email, password });
  const bearer = `Bearer ${login.tokens?.accessToken ?? ""}`;
  const me = await client.getMe({}, { headers: { authorization: bearer } });
  return { ok: true, email: me.user?.email, name: me.user?.name };
}

// Shown on the page; with ?report=1 also posted to the page's own origin (the browser
// test reads it there).
async function show(outcome: object) {
  const text = JSON.stringify(outcome);
  const result = document.getElementById("result");
  if (result) result.textContent = text;
  if (params.has("report")) await fetch("outcome", { method: "POST", body: text });
}

run().then(show, (error: unknown) => show({ ok: false, error: String(error) }));
