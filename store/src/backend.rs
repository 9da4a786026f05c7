//! Storage: one small trait, and its implementation on `object_store`.
//!
//! The rest of the store speaks only `Backend`: put a whole immutable
//! object, get it (or a byte range of it), list a prefix, delete. Objects
//! are never overwritten; `put` of a name that exists with the same bytes is
//! harmless because names are content hashes. `object_store` is async; the
//! store's pipeline is threads and rayon, so this layer owns a small tokio
//! runtime and blocks on it.

use crate::error::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub trait Backend: Send + Sync {
    fn put(&self, name: &str, bytes: Bytes) -> Result<()>;
    fn get(&self, name: &str) -> Result<Bytes>;
    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes>;
    /// Every object name under `prefix` (which ends in `/`), with its size.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    fn delete(&self, name: &str) -> Result<()>;
    /// Makes every `put` so far durable. Callers flush before writing an
    /// object that refers to others (a manifest), so what it names survives
    /// a power cut whenever it does.
    fn flush(&self) -> Result<()>;
    /// Where the repository is, for messages.
    fn location(&self) -> String;
}

pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    location: String,
    /// Set for a local directory: `object_store`'s local store renames into
    /// place without a sync, and a backup that reports success must survive
    /// a power cut, so puts are remembered here and synced by `flush`.
    local_root: Option<PathBuf>,
    unsynced: Mutex<Vec<String>>,
    /// Set when root writes into a local repository another user owns: new
    /// objects and directories are handed to that user, so the database
    /// server's own archive_command (running as that user) can keep writing.
    owner: Option<(u32, u32)>,
}

impl ObjectStoreBackend {
    /// A repository in a local directory (which must exist).
    pub fn local(root: &Path) -> Result<Self> {
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| Error::Storage { object: root.display().to_string(), message: e.to_string() })?;
        Ok(ObjectStoreBackend {
            store: Arc::new(store),
            runtime: runtime()?,
            location: root.display().to_string(),
            local_root: Some(root.to_path_buf()),
            unsynced: Mutex::new(Vec::new()),
            owner: {
                use std::os::unix::fs::MetadataExt;
                // SAFETY: geteuid cannot fail.
                let root_user = unsafe { libc::geteuid() } == 0;
                std::fs::metadata(root).ok().filter(|m| root_user && m.uid() != 0).map(|m| (m.uid(), m.gid()))
            },
        })
    }

    /// A repository in memory, for benchmarks and tests of the store itself.
    pub fn memory() -> Result<Self> {
        Ok(ObjectStoreBackend {
            store: Arc::new(object_store::memory::InMemory::new()),
            runtime: runtime()?,
            location: "memory".into(),
            local_root: None,
            unsynced: Mutex::new(Vec::new()),
            owner: None,
        })
    }

    fn err(&self, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::Missing(name.to_string()),
            other => {
                // Surface the OS error (full disk above all) with its own kind.
                let mut src: Option<&dyn std::error::Error> = Some(&other);
                while let Some(s) = src {
                    if let Some(io) = s.downcast_ref::<std::io::Error>() {
                        let copy = match io.raw_os_error() {
                            Some(code) => std::io::Error::from_raw_os_error(code),
                            None => std::io::Error::new(io.kind(), io.to_string()),
                        };
                        return Error::io(format!("storage operation on {name}"), copy);
                    }
                    src = s.source();
                }
                Error::Storage { object: name.to_string(), message: other.to_string() }
            }
        }
    }

    fn sync_local(&self, names: &[String]) -> Result<()> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let mut dirs = std::collections::BTreeSet::new();
        for name in names {
            let path = root.join(name);
            let f = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {name} to sync it"), e))?;
            f.sync_all().map_err(|e| Error::io(format!("syncing {name}"), e))?;
            // Each ancestor up to the root: `data/xx/` may have been created by this put.
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(root)) {
                dirs.insert(d.to_path_buf());
                dir = d.parent();
            }
        }
        // The renames (and mkdirs) that made the objects visible live in their directories.
        for dir in dirs {
            if let Ok(d) = std::fs::File::open(&dir) {
                d.sync_all().map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
            }
        }
        Ok(())
    }
}

fn read_range(root: &Path, name: &str, range: Range<u64>) -> Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let path = root.join(name);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::Missing(name.to_string())),
        Err(e) => return Err(Error::io(format!("reading {name}"), e)),
    };
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], range.start + got as u64) {
            // Past the end: the caller sees a short object and names it.
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("reading {name}"), e)),
        }
    }
    buf.truncate(got);
    Ok(Bytes::from(buf))
}

/// Hands an object, and the directories above it that root created, to the repository's owner.
fn give(root: &Path, name: &str, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut p = root.join(name);
    while p != root && p.starts_with(root) {
        match std::fs::metadata(&p) {
            Ok(m) if m.uid() == 0 => std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("giving {} to the repository's owner", p.display()), e))?,
            _ => break,
        }
        if !p.pop() {
            break;
        }
    }
    Ok(())
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
        self.runtime.block_on(self.store.put(&path, PutPayload::from_bytes(bytes))).map_err(|e| self.err(name, e))?;
        if let Some(root) = &self.local_root {
            self.unsynced.lock().expect("not poisoned").push(name.to_string());
            if let Some((uid, gid)) = self.owner {
                give(root, name, uid, gid)?;
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Bytes> {
        let path = ObjPath::from(name);
        self.runtime.block_on(async { self.store.get(&path).await?.bytes().await }).map_err(|e| self.err(name, e))
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        // Restores read thousands of ranges a second. On a local directory a
        // positional read on the calling thread does what object_store's local
        // store does, without a hop to tokio's blocking pool and back per range
        // (the hops were a tenth of a restore's CPU in context switches).
        if let Some(root) = &self.local_root {
            return read_range(root, name, range);
        }
        let path = ObjPath::from(name);
        self.runtime.block_on(self.store.get_range(&path, range)).map_err(|e| self.err(name, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let path = ObjPath::from(prefix.trim_end_matches('/'));
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect::<Vec<_>>())
            .map_err(|e| self.err(prefix, e))?;
        let mut out: Vec<(String, u64)> = metas.into_iter().map(|m| (m.location.to_string(), m.size)).collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = ObjPath::from(name);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(name, e)),
        }
    }

    fn flush(&self) -> Result<()> {
        let names = std::mem::take(&mut *self.unsynced.lock().expect("not poisoned"));
        self.sync_local(&names)
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}
