//! A repository in a local directory, through `std::fs`.
//!
//! Written by hand rather than with `object_store`'s local store, which
//! renames objects into place without a sync, hops to tokio's blocking pool
//! for every ranged read (a tenth of a restore's CPU went to those context
//! switches), and has no notion of the directory's owner. Each of the three
//! matters here: a backup that reports success must survive a power cut,
//! restores read thousands of ranges a second, and root writing into a
//! repository the database server's user owns must not lock that user's
//! archive_command out.
//!
//! An object is written to a hidden temporary file beside its name and
//! renamed into place, so a reader never sees half an object; `flush` syncs
//! the objects put since the last flush and the directories their names
//! live in. Temporary files a crash leaves behind start with a dot and are
//! never listed.

use super::{Backend, ObjectKind};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

pub struct LocalBackend {
    root: PathBuf,
    unsynced: Mutex<Vec<String>>,
    flushing: Mutex<()>,
    /// Set when root writes into a repository another user owns: new
    /// objects and directories are handed to that user.
    owner: Option<(u32, u32)>,
    /// The top directory's permission bits: new directories get them, new
    /// objects the same without execute (0700 → 0600, 0750 → 0640), so
    /// `init` decides once who may read the repository.
    mode: u32,
}

impl LocalBackend {
    /// A repository in `root`, which must exist.
    pub fn new(root: &Path) -> Result<LocalBackend> {
        let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::NoRepository(root.display().to_string()),
            _ => Error::io(format!("opening {}", root.display()), e),
        })?;
        if !meta.is_dir() {
            return Err(Error::NoRepository(root.display().to_string()));
        }
        // SAFETY: geteuid cannot fail.
        let root_user = unsafe { libc::geteuid() } == 0;
        Ok(LocalBackend {
            root: root.to_path_buf(),
            unsynced: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
            owner: (root_user && meta.uid() != 0).then(|| (meta.uid(), meta.gid())),
            mode: meta.mode() & 0o777,
        })
    }

    /// Writes `bytes` to a temporary file in the object's directory
    /// (made if missing) and returns its path.
    fn stage(&self, name: &str, bytes: &[u8]) -> Result<(PathBuf, PathBuf)> {
        let path = self.root.join(name);
        let dir = path.parent().expect("object names have a parent");
        if !dir.is_dir() {
            self.create_dirs(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let file_name = path.file_name().expect("object names end in a file name").to_string_lossy();
        let tmp = dir.join(format!(".{file_name}.{:016x}.tmp", rand::random::<u64>()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create_new(&tmp)?;
            // Set, not asked of open(): a umask must not take away the group's read.
            f.set_permissions(std::fs::Permissions::from_mode(self.mode & 0o666))?;
            f.write_all(bytes)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("writing {name}"), e));
        }
        Ok((tmp, path))
    }

    /// Creates `dir` and its missing parents below the root with the root's mode.
    fn create_dirs(&self, dir: &Path) -> std::io::Result<()> {
        if dir == self.root || dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.mode)),
            // Another writer made it first.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Hands an object, and the directories above it that root created, to the repository's owner.
    fn give(&self, name: &str) -> Result<()> {
        let Some((uid, gid)) = self.owner else { return Ok(()) };
        let mut p = self.root.join(name);
        while p != self.root && p.starts_with(&self.root) {
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

    fn placed(&self, name: &str) -> Result<()> {
        self.unsynced.lock().expect("not poisoned").push(name.to_string());
        self.give(name)
    }

    fn open(&self, name: &str) -> Result<std::fs::File> {
        std::fs::File::open(self.root.join(name)).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::Missing(name.to_string()),
            _ => Error::io(format!("reading {name}"), e),
        })
    }

    /// Every object under `dir` with its size and modification time; the
    /// temporary files met on the way go to `temps` (with theirs).
    fn walk(
        &self,
        dir: &Path,
        out: &mut Vec<(String, u64, SystemTime)>,
        temps: &mut Vec<(PathBuf, SystemTime)>,
    ) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Renamed or removed since the directory was read (a temporary file).
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("listing {}", path.display()), e)),
            };
            let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
            // Temporary files, ours and those of object_store's local store
            // that wrote repositories before this module (`name#n`).
            if file_name.starts_with('.') || file_name.contains('#') {
                if meta.is_file() {
                    temps.push((path, modified));
                }
                continue;
            }
            if meta.is_dir() {
                self.walk(&path, out, temps)?;
            } else if meta.is_file() {
                let rel = path.strip_prefix(&self.root).expect("under the root").to_string_lossy().into_owned();
                out.push((rel, meta.len(), modified));
            }
        }
        Ok(())
    }
}

impl Backend for LocalBackend {
    fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let (tmp, path) = self.stage(name, &bytes)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("writing {name}"), e));
        }
        self.placed(name)
    }

    fn create(&self, name: &str, bytes: Bytes) -> Result<()> {
        let (tmp, path) = self.stage(name, &bytes)?;
        // A hard link, unlike a rename, fails when the name exists.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => self.placed(name),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::RepositoryExists(self.location())),
            Err(e) => Err(Error::io(format!("writing {name}"), e)),
        }
    }

    fn get(&self, name: &str) -> Result<Bytes> {
        match std::fs::read(self.root.join(name)) {
            Ok(b) => Ok(b.into()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing(name.to_string())),
            Err(e) => Err(Error::io(format!("reading {name}"), e)),
        }
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        use std::io::{Read, Seek, SeekFrom};
        // Each call has its own descriptor, so seeking is safe; `read_to_end`
        // reads into the vector's spare capacity without zeroing it first
        // (a restore's buffers are most of what it reads).
        let mut f = self.open(name)?;
        let len = (range.end - range.start) as usize;
        let mut buf = Vec::with_capacity(len);
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| f.take(len as u64).read_to_end(&mut buf))
            .map_err(|e| Error::io(format!("reading {name}"), e))?;
        // Past the end the read is short: the caller sees a short object and names it.
        Ok(Bytes::from(buf))
    }

    fn get_ranges(&self, wanted: &[(String, Range<u64>)]) -> Result<Vec<Bytes>> {
        // One positional read per core: the page cache answers most of them.
        use rayon::prelude::*;
        wanted.par_iter().map(|(name, r)| self.get_range(name, r.clone())).collect()
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        Ok(self.list_dated(kind)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }

    fn list_dated(&self, kind: ObjectKind) -> Result<Vec<(String, u64, SystemTime)>> {
        let mut out = Vec::new();
        if kind == ObjectKind::Config {
            if let Ok(m) = std::fs::metadata(self.root.join("config")) {
                out.push(("config".to_string(), m.len(), m.modified().unwrap_or_else(|_| SystemTime::now())));
            }
            return Ok(out);
        }
        self.walk(&self.root.join(kind.prefix()), &mut out, &mut Vec::new())?;
        out.sort();
        Ok(out)
    }

    fn remove_stale_temporaries(&self, before: SystemTime) -> Result<u64> {
        let mut temps = Vec::new();
        for kind in ObjectKind::ALL.into_iter().skip(1) {
            self.walk(&self.root.join(kind.prefix()), &mut Vec::new(), &mut temps)?;
        }
        let mut removed = 0;
        for (path, modified) in temps {
            if modified < before && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn delete(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.root.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {name}"), e)),
        }
    }

    fn sync(&self, names: &[String]) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for name in names {
            let path = self.root.join(name);
            let f = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {name} to sync it"), e))?;
            f.sync_all().map_err(|e| Error::io(format!("syncing {name}"), e))?;
            // Each ancestor up to the root: `data/xx/` may have been created by this put.
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(&self.root)) {
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

    fn flush(&self) -> Result<()> {
        // One flush at a time: one running beside this one must not return
        // while objects put before it are still being synced here. Puts go
        // on meanwhile (they only append to `unsynced`).
        let _one = self.flushing.lock().expect("not poisoned");
        let names = std::mem::take(&mut *self.unsynced.lock().expect("not poisoned"));
        self.sync(&names)
    }

    fn connections(&self) -> usize {
        // A local disk gains little from more writers than cores to fill them.
        2
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_an_existing_object_and_put_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path()).unwrap();
        b.create("config", Bytes::from_static(b"one")).unwrap();
        assert!(matches!(b.create("config", Bytes::from_static(b"two")), Err(Error::RepositoryExists(_))));
        assert_eq!(&b.get("config").unwrap()[..], b"one");
        let name = ObjectKind::Pack.name(&"cd".repeat(32));
        b.put(&name, Bytes::from_static(b"0123456789")).unwrap();
        b.flush().unwrap();
        assert_eq!(&b.get_range(&name, 2..5).unwrap()[..], b"234");
        assert_eq!(b.list(ObjectKind::Pack).unwrap(), vec![(name.clone(), 10)]);
        // Leftovers of an interrupted write are not objects.
        std::fs::write(dir.path().join("data/cd/.x.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("data/cd/y#1"), b"half").unwrap();
        assert_eq!(b.list(ObjectKind::Pack).unwrap().len(), 1);
        assert!(matches!(b.get("data/cd/none"), Err(Error::Missing(_))));
        b.delete(&name).unwrap();
        b.delete(&name).unwrap();
        assert!(b.list(ObjectKind::Pack).unwrap().is_empty());
    }
}
