//! A repository in object storage (S3 and S3-compatible servers, GCS,
//! Azure), or in memory for benches, through `object_store`.
//!
//! `object_store` is async; the store's pipeline is threads and rayon, so
//! this type owns a small tokio runtime and blocks on it. Several threads
//! may block on it at once (the backup's uploaders), and `get_ranges` runs
//! up to `connections` requests concurrently on it. Retries with backoff
//! and jitter on timeouts, connection errors and 5xx answers are
//! `object_store`'s own (configured in `location`).

use super::{Backend, ObjectKind};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::ops::Range;
use std::sync::Arc;

/// Objects at least this large go up in parts: a part that fails is sent
/// again alone, and the parts of one object travel side by side.
const MULTIPART_THRESHOLD: usize = 24 << 20;
const PART_SIZE: usize = 8 << 20;

pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    location: String,
    connections: usize,
}

impl ObjectStoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, location: String, connections: usize) -> Result<Self> {
        Ok(ObjectStoreBackend { store, runtime: runtime()?, location, connections: connections.max(1) })
    }

    /// A repository in memory, for benchmarks and tests of the store itself.
    pub fn memory() -> Result<Self> {
        Self::new(Arc::new(object_store::memory::InMemory::new()), "memory".into(), 4)
    }

    /// One line naming the object, the operation and what the store said.
    fn err(&self, op: &str, name: &str, e: object_store::Error) -> Error {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => Error::Missing(name.to_string()),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                let status = if matches!(e, E::Unauthenticated { .. }) { "401 Unauthorized" } else { "403 Forbidden" };
                let text = e.to_string();
                // The store's own word for it (S3: `<Code>AccessDenied</Code>`), else the status.
                let code = text
                    .split_once("<Code>")
                    .and_then(|(_, rest)| rest.split_once("</Code>"))
                    .map(|(c, _)| c.to_string())
                    .unwrap_or_else(|| status.into());
                Error::Storage {
                    object: format!("{}/{name}", self.location),
                    message: format!(
                        "{op} was refused ({code}): check the credentials and what they may do in this bucket"
                    ),
                }
            }
            other => Error::Storage {
                object: format!("{}/{name}", self.location),
                message: format!("{op} failed: {}", one_line(&other.to_string())),
            },
        }
    }

    async fn upload(&self, path: &ObjPath, bytes: Bytes) -> object_store::Result<()> {
        if bytes.len() < MULTIPART_THRESHOLD {
            self.store.put(path, PutPayload::from_bytes(bytes)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(path).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for part in bytes.chunks(PART_SIZE) {
            // At most two parts of one object in flight: the other
            // connections belong to other packs.
            if let Err(e) = w.wait_for_capacity(2).await {
                // An unfinished multipart upload is kept (and billed) until aborted.
                let _ = w.abort().await;
                return Err(e);
            }
            w.put(bytes.slice_ref(part));
        }
        w.finish().await?;
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dedupe-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the I/O runtime", e))
}

impl Backend for ObjectStoreBackend {
    fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = ObjPath::from(name);
        self.runtime.block_on(self.upload(&path, bytes)).map_err(|e| self.err("writing", name, e))
    }

    fn create(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = ObjPath::from(name);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let put = self.runtime.block_on(self.store.put_opts(&path, PutPayload::from_bytes(bytes), opts));
        match put {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotImplemented) => Err(Error::Storage {
                object: format!("{}/{name}", self.location),
                message: "this store cannot write an object only if it is absent (S3 conditional writes), \
                          which `init` needs so that two inits cannot both succeed"
                    .into(),
            }),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Err(Error::RepositoryExists(self.location.clone()))
            }
            Err(e) => Err(self.err("creating", name, e)),
        }
    }

    fn get(&self, name: &str) -> Result<Bytes> {
        let path = ObjPath::from(name);
        self.runtime
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map_err(|e| self.err("reading", name, e))
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let path = ObjPath::from(name);
        self.runtime.block_on(self.store.get_range(&path, range)).map_err(|e| self.err("reading", name, e))
    }

    fn get_ranges(&self, wanted: &[(String, Range<u64>)]) -> Result<Vec<Bytes>> {
        self.runtime.block_on(
            futures::stream::iter(wanted)
                .map(|(name, range)| async move {
                    self.store
                        .get_range(&ObjPath::from(name.as_str()), range.clone())
                        .await
                        .map_err(|e| self.err("reading", name, e))
                })
                .buffered(self.connections)
                .try_collect(),
        )
    }

    fn get_many(&self, names: &[String]) -> Vec<Result<Bytes>> {
        self.runtime.block_on(
            futures::stream::iter(names)
                .map(|name| async move {
                    let path = ObjPath::from(name.as_str());
                    let got = async { self.store.get(&path).await?.bytes().await }.await;
                    got.map_err(|e| self.err("reading", name, e))
                })
                .buffered(self.connections)
                .collect(),
        )
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        Ok(self.list_dated(kind)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }

    fn list_after(&self, kind: ObjectKind, after: &str) -> Result<Vec<(String, u64)>> {
        let path = ObjPath::from(kind.prefix().trim_end_matches('/'));
        let listed: Vec<_> = self
            .runtime
            .block_on(self.store.list_with_offset(Some(&path), &ObjPath::from(after)).try_collect::<Vec<_>>())
            .map_err(|e| self.err("listing", kind.prefix(), e))?;
        let mut out: Vec<(String, u64)> = listed.into_iter().map(|m| (m.location.to_string(), m.size)).collect();
        out.sort();
        Ok(out)
    }

    fn list_dated(&self, kind: ObjectKind) -> Result<Vec<(String, u64, std::time::SystemTime)>> {
        let prefix = kind.prefix().trim_end_matches('/');
        let listed: Vec<_> = if kind == ObjectKind::Config {
            // `config` sits at the top, beside the folders: list the top level only.
            let top = self
                .runtime
                .block_on(self.store.list_with_delimiter(None))
                .map_err(|e| self.err("listing", "config", e))?;
            top.objects.into_iter().filter(|m| m.location.as_ref() == "config").collect()
        } else {
            let path = ObjPath::from(prefix);
            self.runtime
                .block_on(self.store.list(Some(&path)).try_collect::<Vec<_>>())
                .map_err(|e| self.err("listing", kind.prefix(), e))?
        };
        let mut out: Vec<(String, u64, std::time::SystemTime)> =
            listed.into_iter().map(|m| (m.location.to_string(), m.size, m.last_modified.into())).collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = ObjPath::from(name);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("deleting", name, e)),
        }
    }

    fn flush(&self) -> Result<()> {
        // An object store has made a put durable when it answers it.
        Ok(())
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}
