//! Filesystem snapshots of a data directory (`backup --snapshot`): btrfs
//! read-only subvolume snapshots, LVM snapshot volumes mounted read-only,
//! ZFS snapshots read through `.zfs/snapshot`. Each is taken with the
//! filesystem's own tools, the way a DBA's script would, and removed on
//! every way out: `remove`, a drop, or the command written by
//! `removal` run from a signal handler.

use crate::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which snapshot the data directory's filesystem takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Btrfs,
    Lvm,
    Zfs,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "btrfs" => Some(Provider::Btrfs),
            "lvm" => Some(Provider::Lvm),
            "zfs" => Some(Provider::Zfs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Btrfs => "btrfs",
            Provider::Lvm => "lvm",
            Provider::Zfs => "zfs",
        }
    }
}

/// A snapshot in place; removed when dropped.
#[derive(Debug)]
pub struct FsSnapshot {
    pub provider: Provider,
    /// Where the data directory appears inside the snapshot.
    pub datadir: PathBuf,
    /// A directory the snapshot's filesystem shows inside the data
    /// directory itself (btrfs: the snapshot's own mount point, empty in
    /// the snapshot), relative to it: the backup leaves it out.
    pub placeholder: Option<String>,
    /// The commands that remove it, in order.
    removal: Vec<Vec<String>>,
    /// What `open` still has to do before `datadir` can be read (mount an
    /// LVM snapshot, clone a ZFS one): each command with the one undoing it.
    /// Kept out of `take`, which runs while the server is locked.
    opening: Vec<(Vec<String>, Vec<String>)>,
    removed: bool,
}

/// The name every snapshot dedupe takes carries: a leftover one is recognisable.
pub const TAG: &str = ".dedupe-snapshot";

fn run(args: &[String]) -> Result<String> {
    let out = dedupe_ingest::secrets::scrub(&mut Command::new(&args[0]))
        .args(&args[1..])
        .output()
        .map_err(|e| Error::Tool(format!("cannot run {} (is it installed?): {e}", args[0])))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            dedupe_ingest::producer::last_line(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `findmnt`'s source, filesystem type and mount point of the filesystem holding `dir`.
fn mount_of(dir: &Path) -> Result<(String, String, PathBuf)> {
    let out = run(&strings(&["findmnt", "-n", "-o", "SOURCE,FSTYPE,TARGET", "--target", &dir.display().to_string()]))?;
    let mut f = out.split_whitespace();
    match (f.next(), f.next(), f.next()) {
        (Some(s), Some(t), Some(m)) => Ok((s.to_string(), t.to_string(), PathBuf::from(m))),
        _ => Err(Error::Input(format!("cannot tell which filesystem holds {}", dir.display()))),
    }
}

/// Whether `provider` can snapshot the filesystem holding `datadir`: asked
/// before the server is locked, so a wrong `--snapshot` costs it nothing.
pub fn check(provider: Provider, datadir: &Path) -> Result<()> {
    let (source, fstype, _) = mount_of(datadir)?;
    let fits = match provider {
        Provider::Btrfs => fstype == "btrfs",
        Provider::Zfs => fstype == "zfs" || fstype.starts_with("fuse.zfs"),
        Provider::Lvm => run(&strings(&["lvs", "--noheadings", "-o", "vg_name,lv_name", &source]))
            .is_ok_and(|out| out.split_whitespace().count() >= 2),
    };
    if fits {
        return Ok(());
    }
    let on = if provider == Provider::Lvm { format!("{source}, not an LVM logical volume") } else { fstype };
    Err(Error::Usage(format!(
        "{} is on {on}: --snapshot {} cannot snapshot it (btrfs, lvm or zfs: the one its filesystem is on)",
        datadir.display(),
        provider.name()
    )))
}

/// Takes a snapshot of the filesystem holding `datadir` (an absolute path).
/// `id` makes its name unique (`.dedupe-snapshot-<id>`).
pub fn take(provider: Provider, datadir: &Path, id: &str) -> Result<FsSnapshot> {
    let name = format!("{TAG}-{id}");
    match provider {
        Provider::Btrfs => btrfs(datadir, &name),
        Provider::Lvm => lvm(datadir, &name),
        Provider::Zfs => zfs(datadir, &name),
    }
}

/// The subvolume holding `dir`: the nearest directory up whose inode is 256
/// (every btrfs subvolume's root) on the same device.
fn subvolume_of(dir: &Path) -> Result<PathBuf> {
    let dev = std::fs::metadata(dir).map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?.dev();
    let mut at = dir.to_path_buf();
    loop {
        let m = std::fs::metadata(&at).map_err(|e| Error::Input(format!("{}: {e}", at.display())))?;
        if m.dev() != dev {
            break;
        }
        if m.ino() == 256 {
            return Ok(at);
        }
        if !at.pop() {
            break;
        }
    }
    Err(Error::Usage(format!(
        "{} is not on btrfs (no subvolume holds it): pick the provider of its filesystem",
        dir.display()
    )))
}

fn btrfs(datadir: &Path, name: &str) -> Result<FsSnapshot> {
    let (_, fstype, _) = mount_of(datadir)?;
    if fstype != "btrfs" {
        return Err(Error::Usage(format!("{} is on {fstype}, not btrfs", datadir.display())));
    }
    let subvol = subvolume_of(datadir)?;
    let rel = datadir.strip_prefix(&subvol).expect("below its subvolume").to_path_buf();
    // Inside the subvolume: the one place sure to be on the same filesystem.
    let at = subvol.join(name);
    run(&strings(&["btrfs", "subvolume", "snapshot", "-r", &subvol.display().to_string(), &at.display().to_string()]))?;
    // In the snapshot, the snapshot's own directory is an empty placeholder.
    let placeholder = if rel.as_os_str().is_empty() { Some(name.to_string()) } else { None };
    Ok(FsSnapshot {
        provider: Provider::Btrfs,
        datadir: at.join(rel),
        placeholder,
        removal: vec![strings(&["btrfs", "subvolume", "delete", &at.display().to_string()])],
        opening: Vec::new(),
        removed: false,
    })
}

fn lvm(datadir: &Path, name: &str) -> Result<FsSnapshot> {
    let (source, fstype, mountpoint) = mount_of(datadir)?;
    let out = run(&strings(&["lvs", "--noheadings", "-o", "vg_name,lv_name", &source]))
        .map_err(|e| Error::Usage(format!("{} is not on an LVM volume ({source}): {e}", datadir.display())))?;
    let mut f = out.split_whitespace();
    let (Some(vg), Some(lv)) = (f.next(), f.next()) else {
        return Err(Error::Usage(format!("{source} is not an LVM logical volume")));
    };
    let rel = datadir.strip_prefix(&mountpoint).expect("below its mount point").to_path_buf();
    let origin = format!("{vg}/{lv}");
    // Room for the origin's writes while the backup reads: a fifth of its size.
    run(&strings(&["lvcreate", "-s", "-l", "20%ORIGIN", "-n", name, &origin]))?;
    let device = format!("/dev/{vg}/{name}");
    let mnt = std::env::temp_dir().join(name);
    let remove_lv = strings(&["lvremove", "-f", &format!("{vg}/{name}")]);
    if let Err(e) = std::fs::create_dir_all(&mnt) {
        let _ = run(&remove_lv);
        return Err(Error::Storage(format!("cannot make {}: {e}", mnt.display())));
    }
    // XFS refuses a second mount of the same filesystem UUID without nouuid.
    let opts = if fstype == "xfs" { "ro,nouuid" } else { "ro" };
    let m = mnt.display().to_string();
    Ok(FsSnapshot {
        provider: Provider::Lvm,
        datadir: mnt.join(rel),
        placeholder: None,
        removal: vec![remove_lv, strings(&["rmdir", &m])],
        opening: vec![(strings(&["mount", "-o", opts, &device, &m]), strings(&["umount", &m]))],
        removed: false,
    })
}

fn zfs(datadir: &Path, name: &str) -> Result<FsSnapshot> {
    let (dataset, fstype, mountpoint) = mount_of(datadir)?;
    // zfs-fuse mounts as `fuse.zfs`.
    if fstype != "zfs" && !fstype.starts_with("fuse.zfs") {
        return Err(Error::Usage(format!("{} is on {fstype}, not ZFS", datadir.display())));
    }
    let rel = datadir.strip_prefix(&mountpoint).expect("below its mount point").to_path_buf();
    let leaf = name.trim_start_matches('.');
    let snap = format!("{dataset}@{leaf}");
    let destroy_snap = strings(&["zfs", "destroy", &snap]);
    run(&strings(&["zfs", "snapshot", &snap]))?;
    let visible = mountpoint.join(".zfs/snapshot").join(leaf);
    if visible.is_dir() {
        return Ok(FsSnapshot {
            provider: Provider::Zfs,
            datadir: visible.join(rel),
            placeholder: None,
            removal: vec![destroy_snap],
            opening: Vec::new(),
            removed: false,
        });
    }
    // No `.zfs/snapshot` (zfs-fuse has none): a read-only clone, mounted
    // apart, destroyed before the snapshot.
    let clone = format!("{dataset}/{leaf}");
    let mnt = std::env::temp_dir().join(name);
    let mountpoint_opt = format!("mountpoint={}", mnt.display());
    Ok(FsSnapshot {
        provider: Provider::Zfs,
        datadir: mnt.join(rel),
        placeholder: None,
        removal: vec![destroy_snap],
        opening: vec![(
            strings(&["zfs", "clone", "-o", "readonly=on", "-o", &mountpoint_opt, &snap, &clone]),
            strings(&["zfs", "destroy", "-f", &clone]),
        )],
        removed: false,
    })
}

impl FsSnapshot {
    /// Makes `datadir` readable (after the server's lock is released): the
    /// mount or clone `take` left for later. What it did is undone on removal.
    pub fn open(&mut self) -> Result<()> {
        for (cmd, undo) in std::mem::take(&mut self.opening) {
            run(&cmd)?;
            self.removal.insert(0, undo);
        }
        Ok(())
    }

    /// The commands that remove the snapshot, for a signal handler that
    /// cannot wait for a drop.
    pub fn removal(&self) -> Vec<Vec<String>> {
        self.removal.clone()
    }

    /// Removes the snapshot; the first failure is the error, the later
    /// commands still run.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_with(&self.removal)
    }
}

/// Runs the commands `FsSnapshot::removal` gave. A filesystem just read
/// may still be busy for a moment (zfs-fuse's "dataset is busy"): each
/// command is tried a few times before its failure counts.
pub fn remove_with(removal: &[Vec<String>]) -> Result<()> {
    let mut first = None;
    for cmd in removal {
        let mut tried = run(cmd);
        for _ in 0..10 {
            if tried.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            tried = run(cmd);
        }
        if let Err(e) = tried {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

impl Drop for FsSnapshot {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = remove_with(&self.removal) {
                eprintln!("dedupe: the {} snapshot was not removed: {e}", self.provider.name());
            }
        }
    }
}
