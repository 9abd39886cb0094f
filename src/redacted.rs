//! Debug for the proto messages that carry a secret (`build.rs` leaves them without one):
//! every field is shown except the password, token, code or hash, which prints as
//! `[REDACTED]` (or `""` when empty, which is no secret and helps debugging).

use std::fmt;

use crate::proto::auth::v1::{
    ChangeEmailRequest, ChangePasswordRequest, CreateUserRequest, ImportUser,
    IssuePasswordResetCodeResponse, LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest,
    ResetPasswordRequest, TokenPair, ValidateTokenRequest, VerifyEmailRequest,
};

/// How a secret field prints.
struct Secret<'a>(&'a str);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("[REDACTED]")
        }
    }
}

macro_rules! redacted_debug {
    ($($message:ident { $($field:ident),* ; secret: $($secret:ident),+ })+) => {$(
        impl fmt::Debug for $message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    $(.field(stringify!($field), &self.$field))*
                    $(.field(stringify!($secret), &Secret(&self.$secret)))+
                    .finish()
            }
        }
    )+};
}

redacted_debug! {
    TokenPair { token_type, expires_in, refresh_expires_in; secret: access_token, refresh_token }
    RegisterRequest { email, name; secret: password }
    LoginRequest { email; secret: password }
    RefreshRequest { ; secret: refresh_token }
    LogoutRequest { all_sessions; secret: refresh_token }
    ChangePasswordRequest { ; secret: current_password, new_password }
    ChangeEmailRequest { new_email; secret: current_password }
    ResetPasswordRequest { ; secret: code, new_password }
    VerifyEmailRequest { ; secret: code }
    ValidateTokenRequest { ; secret: token }
    CreateUserRequest { email, name, role, email_verified; secret: password }
    ImportUser { email, name, role, email_verified, active; secret: password_hash }
    IssuePasswordResetCodeResponse { expires_at; secret: code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_the_rest_does() {
        let login = LoginRequest {
            email: "ada@example.com".into(),
            password: "correct horse battery staple".into(),
        };
        let printed = format!("{login:?}");
        assert!(printed.contains("ada@example.com"), "{printed}");
        assert!(
            printed.contains("[REDACTED]") && !printed.contains("horse"),
            "{printed}"
        );
        let pair = TokenPair {
            access_token: "eyJ.secret.token".into(),
            refresh_token: "refresh-secret".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_expires_in: 0,
        };
        let printed = format!(
            "{:?}",
            crate::proto::auth::v1::LoginResponse {
                user: None,
                tokens: Some(pair),
            }
        );
        assert!(
            !printed.contains("secret") && printed.contains("Bearer"),
            "{printed}"
        );
        let row = ImportUser {
            email: "grace@example.com".into(),
            password_hash: "$2b$10$abcdefghijklmnopqrstuv".into(),
            ..Default::default()
        };
        assert!(!format!("{row:?}").contains("$2b$"));
        assert!(format!("{:?}", RefreshRequest::default()).contains("refresh_token: \"\""));
    }
}
