//! What `--repo` may say, and the backend each kind of location opens.
//!
//! - a path, or `file:///path`: a local directory (`LocalBackend`);
//! - `s3://bucket/prefix`: AWS S3 or an S3-compatible server. Endpoint,
//!   region, path-style addressing and credentials come from the usual
//!   AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, …), and when they do not give
//!   credentials or a region, from the shared AWS files (`aws_profile`);
//! - `gs://bucket/prefix`: Google Cloud Storage (`GOOGLE_*` variables,
//!   `GOOGLE_APPLICATION_CREDENTIALS`);
//! - `az://container/prefix`: Azure Blob Storage (`AZURE_*` variables).
//!
//! Anything else that looks like a URL (`sftp:…`, `s3:host/bucket` in
//! restic's spelling, `https://…`) is refused before anything is created,
//! so a typo never turns into a local directory that looks like an offsite
//! repository.

use super::{aws_profile, Backend, Limited, LocalBackend, ObjectStoreBackend};
use crate::error::{Error, Result};
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const SUPPORTED: &str = "a local path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix";

/// Schemes other tools use that a user may try here.
const FOREIGN: [&str; 14] =
    ["s3", "gs", "az", "azure", "b2", "sftp", "ssh", "rest", "rclone", "swift", "http", "https", "ftp", "gcs"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
}

/// How to reach a remote store; none of it changes what is stored.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Transfers in flight at once (uploads in a backup, ranged reads in a
    /// restore); `None` for the backend's default.
    pub connections: Option<usize>,
    /// Bytes per second, over all connections.
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    /// How long one request is retried (timeouts, connection errors, 5xx)
    /// before the command fails; `None` for two minutes.
    pub retry_for: Option<Duration>,
}

/// Connections to a remote store unless `--connections` says otherwise.
/// Measured with 20 ms added to every request (benches/s3-vs-rustic.sh): a
/// restore took 56% longer than without at 4, 20-30% at 8, 21% at 16; a
/// backup 10% at 4 and at 8. Packs shrink as connections grow
/// (`upload::pack_size`), so memory stays within budget (a backup at 8:
/// 130 MiB peak).
pub const DEFAULT_REMOTE_CONNECTIONS: usize = 8;

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        if s.is_empty() {
            return Err(Error::Invalid(format!("the repository location is empty: give {SUPPORTED}")));
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/').to_string();
            let bucket = bucket.to_string();
            let need_bucket =
                |what: &str| Err(Error::Invalid(format!("{s} names no {what}: write {scheme}://{what}/prefix")));
            return match scheme.to_ascii_lowercase().as_str() {
                "file" => Ok(Location::Local(PathBuf::from(format!("/{}", rest.trim_start_matches('/'))))),
                "s3" if bucket.is_empty() => need_bucket("bucket"),
                "gs" if bucket.is_empty() => need_bucket("bucket"),
                "az" if bucket.is_empty() => need_bucket("container"),
                "s3" => Ok(Location::S3 { bucket, prefix }),
                "gs" => Ok(Location::Gcs { bucket, prefix }),
                "az" => Ok(Location::Azure { container: bucket, prefix }),
                _ => Err(Error::Invalid(format!(
                    "repository location {s}: the scheme {scheme}:// is not supported; give {SUPPORTED}"
                ))),
            };
        }
        if let Some((scheme, _)) = s.split_once(':') {
            if FOREIGN.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(Error::Invalid(format!(
                    "repository location {s} is not one dedupe reads (restic spells S3 `s3:host/bucket`, \
                     dedupe `s3://bucket/prefix` with AWS_ENDPOINT_URL for the host); give {SUPPORTED}"
                )));
            }
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// The location as a URL (a path for a local directory), for messages
    /// and for the commands dedupe writes into a server's configuration.
    pub fn display(&self) -> String {
        let url = |scheme: &str, b: &str, p: &str| {
            if p.is_empty() {
                format!("{scheme}://{b}")
            } else {
                format!("{scheme}://{b}/{p}")
            }
        };
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3 { bucket, prefix } => url("s3", bucket, prefix),
            Location::Gcs { bucket, prefix } => url("gs", bucket, prefix),
            Location::Azure { container, prefix } => url("az", container, prefix),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }
}

/// Opens the backend a location names (`NoRepository` for a local
/// directory that does not exist; a remote bucket is only reached by the
/// first request).
pub fn open(location: &Location, opts: &Options) -> Result<Arc<dyn Backend>> {
    let connections = opts.connections.unwrap_or(DEFAULT_REMOTE_CONNECTIONS);
    let remote = |store: Arc<dyn ObjectStore>, prefix: &str| -> Result<Arc<dyn Backend>> {
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { store } else { Arc::new(PrefixStore::new(store, prefix)) };
        Ok(Arc::new(ObjectStoreBackend::new(store, location.display(), connections)?))
    };
    let failed = |e: object_store::Error| Error::Storage {
        object: location.display(),
        message: format!("cannot set up the connection: {}", e.to_string().replace('\n', " ")),
    };
    let backend = match location {
        Location::Local(path) => Arc::new(LocalBackend::new(path)?) as Arc<dyn Backend>,
        Location::S3 { bucket, prefix } => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as K};
            let env = env_with_prefix("AWS_");
            let b = AmazonS3Builder::new().with_client_options(client_options()).with_retry(retry(opts));
            let mut b = configured(b, &env, |b, k: K, v| b.with_config(k, v));
            let endpoint = env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL" || k == "AWS_ENDPOINT");
            if endpoint.is_some_and(|(_, v)| v.starts_with("http://"))
                && !env.iter().any(|(k, _)| k == "AWS_ALLOW_HTTP")
            {
                // An endpoint given as plain http is a deliberate choice (a server on loopback).
                b = b.with_allow_http(true);
            }
            let profile = aws_profile::read();
            if !env.iter().any(|(k, _)| k == "AWS_ACCESS_KEY_ID") {
                if let Some(c) = &profile.credentials {
                    b = b.with_access_key_id(&c.access_key_id).with_secret_access_key(&c.secret_access_key);
                    if let Some(t) = &c.session_token {
                        b = b.with_token(t);
                    }
                }
            }
            if !env.iter().any(|(k, _)| k == "AWS_REGION" || k == "AWS_DEFAULT_REGION") {
                if let Some(r) = &profile.region {
                    b = b.with_region(r);
                }
            }
            // The payload is not hashed into the signature: every object is
            // authenticated by its own AEAD tag and named by its BLAKE3 hash,
            // and SHA-256 of every uploaded byte was a tenth of a backup's CPU.
            // AWS_UNSIGNED_PAYLOAD=false in the environment turns it back on.
            if !env.iter().any(|(k, _)| k == "AWS_UNSIGNED_PAYLOAD") {
                b = b.with_unsigned_payload(true);
            }
            remote(Arc::new(b.with_bucket_name(bucket).build().map_err(failed)?), prefix)?
        }
        Location::Gcs { bucket, prefix } => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as K};
            let b = GoogleCloudStorageBuilder::new().with_client_options(client_options()).with_retry(retry(opts));
            let b = configured(b, &env_with_prefix("GOOGLE_"), |b, k: K, v| b.with_config(k, v));
            remote(Arc::new(b.with_bucket_name(bucket).build().map_err(failed)?), prefix)?
        }
        Location::Azure { container, prefix } => {
            use object_store::azure::{AzureConfigKey as K, MicrosoftAzureBuilder};
            let b = MicrosoftAzureBuilder::new().with_client_options(client_options()).with_retry(retry(opts));
            let b = configured(b, &env_with_prefix("AZURE_"), |b, k: K, v| b.with_config(k, v));
            remote(Arc::new(b.with_container_name(container).build().map_err(failed)?), prefix)?
        }
    };
    Ok(Limited::wrap(backend, opts.limit_upload, opts.limit_download))
}

/// Applies each variable a builder knows as a setting (the variable's name
/// in lower case is `object_store`'s key, as in its own `from_env`), on top
/// of our client and retry options rather than instead of them.
fn configured<B, K: std::str::FromStr>(mut b: B, env: &[(String, String)], set: impl Fn(B, K, &str) -> B) -> B {
    for (k, v) in env {
        if let Ok(key) = k.to_ascii_lowercase().parse::<K>() {
            b = set(b, key, v);
        }
    }
    b
}

fn env_with_prefix(prefix: &str) -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(prefix))
        .collect()
}

fn client_options() -> ClientOptions {
    // A 32 MiB pack on a slow uplink takes a while: the timeout is per
    // request, generous, and a stalled connection still fails within it.
    ClientOptions::new().with_connect_timeout(Duration::from_secs(10)).with_timeout(Duration::from_secs(300))
}

fn retry(opts: &Options) -> RetryConfig {
    // object_store's backoff doubles from 100 ms up to 15 s with jitter.
    RetryConfig {
        max_retries: 10,
        retry_timeout: opts.retry_for.unwrap_or(Duration::from_secs(120)),
        ..RetryConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_are_refused() {
        assert_eq!(Location::parse("/srv/backups").unwrap(), Location::Local("/srv/backups".into()));
        assert_eq!(Location::parse("relative/dir").unwrap(), Location::Local("relative/dir".into()));
        assert_eq!(Location::parse("file:///srv/b").unwrap(), Location::Local("/srv/b".into()));
        assert_eq!(
            Location::parse("s3://bucket/pg/main/").unwrap(),
            Location::S3 { bucket: "bucket".into(), prefix: "pg/main".into() }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3 { bucket: "bucket".into(), prefix: "".into() }
        );
        assert_eq!(Location::parse("gs://b/x").unwrap(), Location::Gcs { bucket: "b".into(), prefix: "x".into() });
        assert_eq!(Location::parse("az://c").unwrap(), Location::Azure { container: "c".into(), prefix: "".into() });
        assert_eq!(Location::parse("s3://bucket/pg").unwrap().display(), "s3://bucket/pg");
        for bad in ["s3:host/bucket", "sftp:user@host:/srv", "https://host/x", "ftp://x", "s3://", "gs:///x", ""] {
            let e = Location::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad}: {e}");
        }
        assert!(Location::parse("ftp://x").unwrap_err().to_string().contains("s3://bucket/prefix"));
    }
}
