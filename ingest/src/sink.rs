//! Restore sinks: a snapshot's nodes written into a directory (with owners,
//! modes, times, links and holes), or one file's bytes to a writer.

use dedupe_store::{Error, Indexed, Node, NodeKind, Piece, Progress, Result, Tree};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::dir::ROOT;

/// Which nodes of a snapshot to restore: all, or one path and what is below it.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub path: Option<String>,
}

impl Selection {
    fn includes(&self, p: &str) -> bool {
        match &self.path {
            None => true,
            Some(sel) => {
                let sel = sel.trim_matches('/');
                sel.is_empty() || p == sel || p.starts_with(&format!("{sel}/"))
            }
        }
    }

    /// The selected nodes; a hard link whose first name is not selected
    /// becomes a copy of that file, so a partial restore is complete.
    pub fn apply(&self, tree: Tree) -> Result<Vec<Node>> {
        let files: HashMap<String, Node> = tree
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::File && !self.includes(&n.path))
            .map(|n| (n.path.clone(), n.clone()))
            .collect();
        let mut out = Vec::new();
        for n in tree.nodes {
            if !self.includes(&n.path) {
                continue;
            }
            if n.kind == NodeKind::Hardlink {
                if let Some(first) = n.target.as_ref().and_then(|t| files.get(t)) {
                    let mut copy = first.clone();
                    copy.path = n.path.clone();
                    out.push(copy);
                    continue;
                }
            }
            out.push(n);
        }
        if out.is_empty() {
            if let Some(p) = &self.path {
                return Err(Error::Invalid(format!("the snapshot has no path {p}")));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// A snapshot path as a relative filesystem path, refusing anything that
/// could step outside the target (`..`, absolute paths).
fn safe_rel(p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    if p.is_empty() || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(Error::corrupt(format!("tree entry {p:?}"), "path leaves the restore target"));
    }
    Ok(path.to_path_buf())
}

fn io_err(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", p.display());
    move |e| Error::io(context, e)
}

/// Restores nodes under `target`, which must exist and be empty unless the caller allowed otherwise.
pub fn restore_to_dir(repo: &Indexed, nodes: &[Node], target: &Path, progress: &dyn Progress) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    progress.total(nodes.iter().filter(|n| n.kind == NodeKind::File).map(|n| n.size).sum());
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut chown_warned = false;
    // Directories this restore made (or the target): files go only below these,
    // so a symlink in the snapshot can never redirect a later file elsewhere.
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    // Files this restore wrote: a hard link may only name one of these, so a
    // link can never reach through a symlink to a file outside the target.
    let mut files: HashSet<PathBuf> = HashSet::new();
    dirs.insert(target.to_path_buf());
    let mut dir_meta: Vec<(PathBuf, &Node)> = Vec::new();
    let mut done: u64 = 0;
    repo.read_ahead(nodes, |ahead| {
        for node in nodes {
            let dest = if node.path == ROOT { target.to_path_buf() } else { target.join(safe_rel(&node.path)?) };
            if node.path != ROOT {
                let parent = dest.parent().expect("below target").to_path_buf();
                if !dirs.contains(&parent) {
                    real_dirs(target, &parent)?;
                    dirs.insert(parent);
                }
            }
            match node.kind {
                NodeKind::Dir => {
                    if node.path != ROOT {
                        real_dirs(target, &dest)?;
                    }
                    dirs.insert(dest.clone());
                    dir_meta.push((dest, node));
                    report.dirs += 1;
                    continue;
                }
                NodeKind::Symlink => {
                    let _ = fs::remove_file(&dest);
                    symlink(node.target.as_deref().unwrap_or_default(), &dest)
                        .map_err(io_err("creating symlink", &dest))?;
                    report.links += 1;
                }
                NodeKind::Hardlink => {
                    let first = target.join(safe_rel(node.target.as_deref().unwrap_or_default())?);
                    if !files.contains(&first) {
                        return Err(Error::corrupt(
                            format!("tree entry {}", node.path),
                            "a hard link to a file this restore did not write",
                        ));
                    }
                    let _ = fs::remove_file(&dest);
                    fs::hard_link(&first, &dest).map_err(io_err("linking", &dest))?;
                    report.links += 1;
                    continue;
                }
                NodeKind::File => {
                    files.insert(dest.clone());
                    let _ = fs::remove_file(&dest);
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&dest)
                        .map_err(io_err("creating", &dest))?;
                    let mut pos = 0u64;
                    let mut seek_needed = false;
                    let err = io_err("writing", &dest);
                    let r = ahead.read_file(node, &mut |piece| {
                        match piece {
                            Piece::Data(d) => {
                                if seek_needed {
                                    f.seek(SeekFrom::Start(pos)).map_err(|e| Error::io("seeking", e))?;
                                    seek_needed = false;
                                }
                                f.write_all(d).map_err(|e| Error::io("writing", e))?;
                                pos += d.len() as u64;
                                done += d.len() as u64;
                                progress.done(done);
                            }
                            Piece::Hole(n) => {
                                pos += n;
                                seek_needed = true;
                            }
                        }
                        Ok(())
                    });
                    r.map_err(|e| match e {
                        Error::Io { source, .. } => err(source),
                        other => other,
                    })?;
                    // A trailing hole: extend without writing.
                    f.set_len(pos).map_err(io_err("sizing", &dest))?;
                    f.sync_all().map_err(io_err("syncing", &dest))?;
                    report.files += 1;
                    report.bytes += pos;
                }
            }
            apply_meta(&dest, node, root, &mut chown_warned, &mut report)?;
        }
        Ok(())
    })?;
    // Directory times last, deepest first: creating children changes them.
    for (dest, node) in dir_meta.into_iter().rev() {
        apply_meta(&dest, node, root, &mut chown_warned, &mut report)?;
    }
    Ok(report)
}

/// Makes every directory from `target` down to `dir` a real directory,
/// replacing a symlink or file in the way (only possible with --force), so
/// that no restored path is ever written through a symlink.
fn real_dirs(target: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(target).expect("below target");
    let mut p = target.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => fs::remove_file(&p).map_err(io_err("replacing", &p))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("checking", &p)(e)),
        }
        fs::create_dir(&p).map_err(io_err("creating", &p))?;
    }
    Ok(())
}

fn apply_meta(dest: &Path, node: &Node, root: bool, warned: &mut bool, report: &mut RestoreReport) -> Result<()> {
    let symlink = node.kind == NodeKind::Symlink;
    if let Err(e) = std::os::unix::fs::lchown(dest, Some(node.uid), Some(node.gid)) {
        if root {
            return Err(io_err("setting the owner of", dest)(e));
        }
        if !*warned {
            *warned = true;
            report.warnings.push("not running as root: files keep the restoring user as owner".into());
        }
    }
    if !symlink {
        fs::set_permissions(dest, fs::Permissions::from_mode(node.mode))
            .map_err(io_err("setting the mode of", dest))?;
    }
    let t = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(dest, t, t).map_err(io_err("setting the times of", dest))?;
    Ok(())
}

/// Writes the content of the selected files to `out`, holes as zeros.
pub fn restore_to_writer(repo: &Indexed, nodes: &[Node], out: &mut (dyn Write + Send)) -> Result<u64> {
    let mut total = 0u64;
    repo.read_ahead(nodes, |ahead| {
        for node in nodes.iter().filter(|n| n.kind == NodeKind::File) {
            ahead.read_file(node, &mut |piece| {
                total += write_piece(out, piece).map_err(|e| Error::io("writing the output", e))?;
                Ok(())
            })?;
        }
        Ok(())
    })?;
    out.flush().map_err(|e| Error::io("writing the output", e))?;
    Ok(total)
}

/// Writes one piece of a file's content (a hole as zeros); returns its length.
fn write_piece(out: &mut (dyn Write + Send), piece: Piece<'_>) -> std::io::Result<u64> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    match piece {
        Piece::Data(d) => out.write_all(d).map(|_| d.len() as u64),
        Piece::Hole(n) => {
            let mut left = n;
            while left > 0 {
                let k = left.min(ZEROS.len() as u64);
                out.write_all(&ZEROS[..k as usize])?;
                left -= k;
            }
            Ok(n)
        }
    }
}

/// Writes the selected files as an xbstream (what `mbstream -x` reads):
/// each decoded block as a payload chunk of its own, straight from the
/// fetched batch (gathering them into chunks of 10 MiB, as mariabackup
/// writes, copied the whole stream once more on the writer's thread).
pub fn restore_as_xbstream(repo: &Indexed, nodes: &[Node], out: &mut (dyn Write + Send)) -> Result<u64> {
    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
    let mut w = crate::xbstream::XbstreamWriter::new(out);
    let mut total = 0u64;
    let werr = |e: std::io::Error| Error::io("writing the output", e);
    repo.read_ahead(nodes, |ahead| {
        // A hard link in a demuxed tree can only come from a directory backup.
        for node in nodes.iter().filter(|n| n.kind == NodeKind::File) {
            let path = &node.path;
            let mut offset = 0u64;
            ahead.read_file(node, &mut |piece| {
                match piece {
                    Piece::Data(d) => {
                        w.payload(path, offset, d).map_err(werr)?;
                        offset += d.len() as u64;
                    }
                    Piece::Hole(mut n) => {
                        while n > 0 {
                            let k = n.min(ZEROS.len() as u64);
                            w.payload(path, offset, &ZEROS[..k as usize]).map_err(werr)?;
                            offset += k;
                            n -= k;
                        }
                    }
                }
                Ok(())
            })?;
            w.end(path).map_err(werr)?;
            total += offset;
        }
        Ok(())
    })?;
    w.into_inner().flush().map_err(werr)?;
    Ok(total)
}

/// Writes the selected nodes as a tar stream.
pub fn restore_as_tar(repo: &Indexed, nodes: &[Node], out: &mut (dyn Write + Send)) -> Result<u64> {
    let werr = |e: std::io::Error| Error::io("writing the output", e);
    let mut w = crate::tar::TarWriter::new(out);
    let mut total = 0u64;
    repo.read_ahead(nodes, |ahead| {
        for node in nodes {
            if node.path == ROOT {
                continue;
            }
            if node.kind == NodeKind::File {
                let out = w.begin_file(node).map_err(werr)?;
                let mut written = 0u64;
                ahead.read_file(node, &mut |piece| {
                    written += write_piece(out, piece).map_err(werr)?;
                    Ok(())
                })?;
                w.end_file(node, written).map_err(werr)?;
                total += node.size;
            } else {
                w.other(node).map_err(werr)?;
            }
        }
        Ok(())
    })?;
    w.finish().map_err(werr)?.flush().map_err(werr)?;
    Ok(total)
}
