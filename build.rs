//! Compiles `proto/` with a pure-Rust protobuf compiler (no system `protoc`), generates the
//! tonic server and client, and writes the descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// Keep in step with `src/redacted.rs`.
const SECRET_BEARING: [&str; 13] = [
    "TokenPair",
    "RegisterRequest",
    "LoginRequest",
    "RefreshRequest",
    "LogoutRequest",
    "ChangePasswordRequest",
    "ChangeEmailRequest",
    "ResetPasswordRequest",
    "VerifyEmailRequest",
    "ValidateTokenRequest",
    "CreateUserRequest",
    "ImportUser",
    "IssuePasswordResetCodeResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["auth/v1/auth.proto", "auth/v1/admin.proto"], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("auth_descriptor.bin"), fds.encode_to_vec())?;
    // Messages that carry a password, token, code or hash get a Debug that redacts it
    // (src/redacted.rs), so no Debug print of a request or response can leak one.
    tonic_prost_build::configure()
        .skip_debug(SECRET_BEARING.iter().map(|name| format!(".auth.v1.{name}")))
        .compile_fds(fds)?;
    Ok(())
}
