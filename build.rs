//! Compiles `proto/` with a pure-Rust protobuf compiler (no system `protoc`), generates the
//! tonic server and client, and writes the descriptor set (imports included) that server
//! reflection serves and `authd descriptor` prints for gateways.

use std::{env, fs, path::PathBuf, process::Command};

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
    println!("cargo:rustc-env=AUTHD_COMMIT={}", commit());
    // google.rpc's error details go in too: a gateway that turns a gRPC error into JSON
    // (Envoy's transcoder) needs their types to print the field violations.
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files([
            "auth/v1/auth.proto",
            "auth/v1/admin.proto",
            // A gateway that turns a gRPC error into JSON (Envoy's transcoder) needs these
            // types to print the field violations.
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
        ])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by the compiler itself: prost's FileDescriptorSet would drop the extension
    // options, the google.api.http annotations among them.
    fs::write(
        out_dir.join("auth_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .skip_debug(SECRET_BEARING.iter().map(|name| format!(".auth.v1.{name}")))
        .compile_fds(fds)?;
    Ok(())
}

/// The commit being built, for `authd --version`: AUTHD_COMMIT when the build sets it (an
/// image built without `.git`), else git's, else "unknown".
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=AUTHD_COMMIT");
    if let Ok(commit) = env::var("AUTHD_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_owned())
    };
    // Rebuilt when HEAD moves: a checkout (HEAD) or a commit (the branch it points at,
    // loose or packed). Only files that exist: a missing one would rebuild every time.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        if fs::metadata(&path).is_ok() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}
