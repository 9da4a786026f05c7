//! A directory tree (typically a mounted LVM, ZFS or btrfs snapshot) as a
//! source: regular files, directories, symlinks and hard links with their
//! modes, owners and times, walked depth-first in name order so that two
//! backups of the same tree list it the same way. Sockets, FIFOs and device
//! nodes have no place in a database backup; they are skipped with a warning.

use dedupe_store::{Body, Chunking, Entry, Error, Event, Node, NodeKind, Result, Source};
use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The path of the tree's root directory inside a snapshot.
pub const ROOT: &str = ".";

pub struct DirSource {
    root: PathBuf,
    /// Directories still to list, with their snapshot paths (a stack, so the walk is depth-first).
    stack: Vec<Vec<(PathBuf, String)>>,
    started: bool,
    /// (dev, inode) of files with several links, to the first path seen.
    links: HashMap<(u64, u64), String>,
    chunking: Chunking,
    warnings: Vec<String>,
    /// Names left out at the root (a snapshot's own placeholder directory).
    excluded: Vec<String>,
    /// Files given in memory, added at the root (a PostgreSQL backup label).
    extra: Vec<(String, Vec<u8>)>,
    root_meta: Option<Metadata>,
}

impl DirSource {
    pub fn new(root: &Path, chunking: Chunking) -> Result<Self> {
        let meta = fs::metadata(root).map_err(|e| Error::Input(format!("cannot read {}: {e}", root.display())))?;
        if !meta.is_dir() {
            return Err(Error::Input(format!("{} is not a directory", root.display())));
        }
        Ok(DirSource {
            root: root.to_path_buf(),
            stack: Vec::new(),
            started: false,
            links: HashMap::new(),
            chunking,
            warnings: Vec::new(),
            excluded: Vec::new(),
            extra: Vec::new(),
            root_meta: None,
        })
    }

    /// Adds files at the root with these names and contents (private, owned
    /// as the root directory), in place of any of the same name in the tree.
    pub fn with_files(mut self, files: Vec<(String, Vec<u8>)>) -> Self {
        self.excluded.extend(files.iter().map(|(n, _)| n.clone()));
        self.extra = files;
        self
    }

    /// Leaves out these names at the root of the tree.
    pub fn excluding(mut self, names: Vec<String>) -> Self {
        self.excluded = names;
        self
    }

    fn list(&mut self, dir: &Path, rel: &str) -> Result<()> {
        let rd = fs::read_dir(dir).map_err(|e| Error::Input(format!("cannot list {}: {e}", dir.display())))?;
        let mut children = Vec::new();
        for de in rd {
            let de = de.map_err(|e| Error::Input(format!("cannot list {}: {e}", dir.display())))?;
            let name = de.file_name();
            let Some(name) = name.to_str() else {
                self.warnings.push(format!("skipped {}: the name is not UTF-8", de.path().display()));
                continue;
            };
            if rel == ROOT && self.excluded.iter().any(|x| x == name) {
                continue;
            }
            let path = if rel == ROOT { name.to_string() } else { format!("{rel}/{name}") };
            children.push((de.path(), path));
        }
        // Reverse order: the stack pops the smallest name first.
        children.sort_by(|a, b| b.1.cmp(&a.1));
        self.stack.push(children);
        Ok(())
    }
}

fn node_from(path: String, kind: NodeKind, m: &Metadata) -> Node {
    let mut n = Node::new(path, kind);
    n.mode = m.mode() & 0o7777;
    n.uid = m.uid();
    n.gid = m.gid();
    n.mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    n.ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
    n.inode = m.ino();
    if kind == NodeKind::File {
        n.size = m.len();
    }
    n
}

/// Page-aligned chunking for database page files; an InnoDB tablespace's
/// page size is in its first page, so that much is read (not counted as
/// content: unchanged files are still not read).
fn file_chunking(fs_path: &Path, path: &str, default: Chunking) -> Chunking {
    if !crate::pages::is_innodb_paged(path) && !crate::pages::is_postgres_relation(path) {
        return default;
    }
    let mut head = [0u8; 64];
    let n = fs::File::open(fs_path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
    crate::pages::chunking_for(path, &head[..n], default)
}

impl Source for DirSource {
    fn next_event(&mut self) -> Result<Option<Event>> {
        Ok(self.next_entry()?.map(Event::Entry))
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// A walk of sizes before the backup starts: a stat per entry, small
    /// beside reading, and what gives the progress display its percentage
    /// and ETA. A file with several links counts once, as it is read once.
    fn size_hint(&mut self) -> Option<u64> {
        fn walk(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
            let Ok(rd) = fs::read_dir(dir) else { return 0 };
            let mut total = 0;
            for de in rd.flatten() {
                let Ok(m) = de.path().symlink_metadata() else { continue };
                if m.is_dir() {
                    total += walk(&de.path(), seen);
                } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                    total += m.len();
                }
            }
            total
        }
        Some(walk(&self.root, &mut Default::default()))
    }
}

impl DirSource {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        if !self.started {
            self.started = true;
            let m = fs::metadata(&self.root).map_err(|e| Error::Input(format!("{}: {e}", self.root.display())))?;
            let root = self.root.clone();
            self.list(&root, ROOT)?;
            let mut node = node_from(ROOT.into(), NodeKind::Dir, &m);
            node.inode = 0;
            node.ctime_ns = 0;
            self.root_meta = Some(m);
            return Ok(Some(Entry { node, body: Body::None, chunking: self.chunking }));
        }
        if let Some((name, data)) = self.extra.pop() {
            let m = self.root_meta.as_ref().expect("the root came first");
            let mut node = node_from(name, NodeKind::File, m);
            (node.mode, node.size, node.inode, node.ctime_ns) = (0o600, data.len() as u64, 0, 0);
            let body = Body::Stream(Box::new(std::io::Cursor::new(data)));
            return Ok(Some(Entry { node, body, chunking: self.chunking }));
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some((fs_path, path)) = top.pop() else {
                self.stack.pop();
                continue;
            };
            let m = match fs::symlink_metadata(&fs_path) {
                Ok(m) => m,
                // Gone since the listing: only a live tree does that; say so and go on.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.warnings.push(format!("{} vanished during the backup", fs_path.display()));
                    continue;
                }
                Err(e) => return Err(Error::Input(format!("cannot stat {}: {e}", fs_path.display()))),
            };
            let ft = m.file_type();
            let entry = if ft.is_dir() {
                self.list(&fs_path, &path)?;
                let mut node = node_from(path, NodeKind::Dir, &m);
                node.inode = 0;
                node.ctime_ns = 0;
                Entry { node, body: Body::None, chunking: self.chunking }
            } else if ft.is_symlink() {
                let target = fs::read_link(&fs_path)
                    .map_err(|e| Error::Input(format!("cannot read link {}: {e}", fs_path.display())))?;
                let Some(target) = target.to_str() else {
                    self.warnings.push(format!("skipped {}: link target is not UTF-8", fs_path.display()));
                    continue;
                };
                let mut node = node_from(path, NodeKind::Symlink, &m);
                node.target = Some(target.to_string());
                node.inode = 0;
                node.ctime_ns = 0;
                Entry { node, body: Body::None, chunking: self.chunking }
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                        let mut node = node_from(path, NodeKind::Hardlink, &m);
                        node.target = Some(first.clone());
                        node.size = 0;
                        node.inode = 0;
                        node.ctime_ns = 0;
                        return Ok(Some(Entry { node, body: Body::None, chunking: self.chunking }));
                    }
                    self.links.insert((m.dev(), m.ino()), path.clone());
                }
                let node = node_from(path, NodeKind::File, &m);
                let chunking = file_chunking(&fs_path, &node.path, self.chunking);
                Entry { node, body: Body::File(fs_path), chunking }
            } else {
                let what = if ft.is_socket() {
                    "socket"
                } else if ft.is_fifo() {
                    "FIFO"
                } else if ft.is_block_device() || ft.is_char_device() {
                    "device node"
                } else {
                    "special file"
                };
                self.warnings.push(format!("skipped {}: a {what} is not backed up", fs_path.display()));
                continue;
            };
            return Ok(Some(entry));
        }
    }
}
