//! What dedupe's children never see: the repository passwords and the
//! storage credentials in dedupe's environment. A producer, a hook, a
//! database tool or a drill's server is another program, often the
//! database's own or the DBA's script; it needs none of them, and a
//! `--command 'env'` would otherwise print (and the snapshot keep, in its
//! producer log) the password that opens every backup.
//!
//! Every child is made through `Command` and passes through `scrub` (or
//! `scrub_passwords`, for the one child that reaches the repository on its
//! own: a drill's PostgreSQL, whose `restore_command` is dedupe reading
//! the archive with the storage credentials, and a password file).

use std::process::Command;

/// Variables that open the repository (or another: `copy --from-repo`).
pub const PASSWORDS: &[&str] =
    &["DEDUPE_PASSWORD", "DEDUPE_NEW_PASSWORD", "DEDUPE_FROM_PASSWORD", "DEDUPE_PASSWORD_COMMAND"];

/// Variables that open the storage (object_store's names for S3, Azure, GCS).
pub const STORAGE: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_PATH",
];

/// `c` without the passwords and the storage credentials.
pub fn scrub(c: &mut Command) -> &mut Command {
    for v in PASSWORDS.iter().chain(STORAGE) {
        c.env_remove(v);
    }
    c
}

/// `c` without the passwords (it keeps the storage credentials).
pub fn scrub_passwords(c: &mut Command) -> &mut Command {
    for v in PASSWORDS {
        c.env_remove(v);
    }
    c
}
