//! `dedupe mount MOUNTPOINT`: every snapshot as a read-only filesystem
//! (`mountfs.rs`), in the foreground until it is unmounted
//! (`fusermount3 -u MOUNTPOINT`) or the command is interrupted, which
//! unmounts it first. `restore SNAPSHOT --mount DIR` (`one`): one snapshot;
//! with `--writable` (`writable`), copy-on-write into an overlay directory
//! (`cowfs.rs`) that lives as long as the mount.

use crate::cowfs::CowFs;
use crate::ctx::Ctx;
use crate::exit::{self, Failure, R};
use crate::mountfs::MountFs;
use fuser::{Filesystem, MountOption};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn options() -> Vec<MountOption> {
    vec![
        MountOption::RO,
        MountOption::FSName("dedupe".into()),
        MountOption::Subtype("dedupe".into()),
        MountOption::NoExec,
    ]
}

/// A writable mount is for a database server, which runs as its own user:
/// other users may use it (root may always ask; others when
/// /etc/fuse.conf has `user_allow_other`), and the kernel checks each
/// file's mode and owner as on a local disk.
fn writable_options() -> Vec<MountOption> {
    let mut o = vec![
        MountOption::RW,
        MountOption::FSName("dedupe".into()),
        MountOption::Subtype("dedupe".into()),
        MountOption::DefaultPermissions,
    ];
    // SAFETY: a plain getter.
    let root = unsafe { libc::geteuid() } == 0;
    let allowed =
        std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|c| c.lines().any(|l| l.trim() == "user_allow_other"));
    if root || allowed {
        o.push(MountOption::AllowOther);
    }
    o
}

fn mount_failed(at: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::new(
        exit::MOUNT_FAILED,
        format!("cannot mount at {}: {e} (FUSE needs /dev/fuse and fusermount3: apt-get install fuse3)", at.display()),
    )
}

fn need_dir(p: &Path) -> R {
    if !p.is_dir() {
        return Err(Failure::usage(format!("{}: not a directory; create it first", p.display())));
    }
    Ok(())
}

pub(crate) fn run(ctx: &Ctx, mountpoint: &Path, name: Option<&str>) -> R {
    need_dir(mountpoint)?;
    let fs = MountFs::new(ctx.indexed()?, name)?;
    serve(ctx, fs, mountpoint, "every snapshot (by-id/, by-name/, logs/) mounted read-only", options(), None)
}

/// `restore SPEC --mount POINT`: one snapshot, read-only.
pub(crate) fn one(ctx: &Ctx, spec: &str, name: Option<&str>, point: &Path) -> R {
    need_dir(point)?;
    let repo = ctx.indexed()?;
    let (id, manifest) = repo.find_snapshot(spec, name)?;
    let what = format!("snapshot {} mounted read-only", &id[..8]);
    serve(ctx, MountFs::one(repo, &id, &manifest), point, &what, options(), None)
}

/// `restore SPEC --mount POINT --writable`: one snapshot, its changes in
/// `overlay` (default `POINT.overlay`), which is removed when the mount ends.
pub(crate) fn writable(
    ctx: &Ctx,
    spec: &str,
    name: Option<&str>,
    point: &Path,
    overlay: Option<PathBuf>,
    keep_archiving: bool,
) -> R {
    need_dir(point)?;
    let point = std::fs::canonicalize(point).map_err(|e| Failure::usage(format!("{}: {e}", point.display())))?;
    let overlay = overlay.unwrap_or_else(|| {
        let mut p = point.clone().into_os_string();
        p.push(".overlay");
        PathBuf::from(p)
    });
    if std::fs::read_dir(&overlay).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Failure::new(
            exit::TARGET_NOT_EMPTY,
            format!("the overlay {} is not empty; give --overlay a new or empty directory", overlay.display()),
        ));
    }
    let repo = ctx.indexed()?;
    let (id, manifest) = repo.find_snapshot(spec, name)?;
    std::fs::create_dir_all(&overlay)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot make the overlay {}: {e}", overlay.display())))?;
    let overlay = std::fs::canonicalize(&overlay).unwrap_or(overlay);
    if overlay.starts_with(&point) {
        let _ = std::fs::remove_dir(&overlay);
        return Err(Failure::usage(format!("the overlay {} must not be inside the mount point", overlay.display())));
    }
    let gone = overlay.clone();
    // A PostgreSQL copy must not archive into its source's name (`pgcopy`).
    let postgresql =
        dedupe_ingest::facts::SnapshotFacts::of(&manifest).database == Some(dedupe_ingest::facts::Database::Postgresql);
    let disarm = postgresql && !keep_archiving;
    let served = CowFs::new(repo, &id, &manifest, overlay.clone()).map_err(Failure::from).and_then(|mut fs| {
        if disarm {
            fs.append(dedupe_recovery::pgcopy::AUTO_CONF, dedupe_recovery::pgcopy::NO_ARCHIVING.as_bytes()).map_err(
                |errno| {
                    Failure::new(
                        exit::STORAGE,
                        format!(
                            "cannot turn archiving off in the copy's {}: {}",
                            dedupe_recovery::pgcopy::AUTO_CONF,
                            std::io::Error::from_raw_os_error(errno)
                        ),
                    )
                },
            )?;
        }
        let what = format!(
            "snapshot {} mounted writable (copy-on-write; changes go to {} and last as long as the mount)",
            &id[..8],
            overlay.display()
        );
        serve(ctx, fs, &point, &what, writable_options(), Some(gone))
    });
    ctx.note(&format!(
        "the overlay {} held {} of changes; removed (the repository was not changed)",
        overlay.display(),
        crate::ctx::human(du(&overlay))
    ));
    let _ = std::fs::remove_dir_all(&overlay);
    served
}

/// Bytes the files under `dir` take on disk (their overlays are sparse).
fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum())
        .unwrap_or(0)
}

/// Serves `fs` at `point` in the foreground until it is unmounted or the
/// command is interrupted; an interruption also removes `overlay`.
fn serve(
    ctx: &Ctx,
    fs: impl Filesystem + Send + 'static,
    point: &Path,
    what: &str,
    options: Vec<MountOption>,
    overlay: Option<PathBuf>,
) -> R {
    // Ctrl-C or SIGTERM: unmount before the process ends, or the
    // mountpoint is left answering "Transport endpoint is not connected".
    let p = point.to_path_buf();
    crate::interrupt::say(match overlay {
        Some(_) => "the repository was not changed; the mount and its overlay were removed",
        None => "the repository was not changed; the mount was removed",
    });
    crate::interrupt::before_exit(move || {
        unmount_fuse(&p);
        if let Some(o) = overlay {
            let _ = std::fs::remove_dir_all(o);
        }
    });
    ctx.note(&format!("{what} at {}; `fusermount3 -u {}` or Ctrl-C unmounts", point.display(), point.display()));
    raise_read_ahead(point);
    let served = fuser::mount2(fs, point, &options).map_err(|e| mount_failed(point, e));
    crate::interrupt::wait_if_interrupted();
    served
}

fn unmount_fuse(at: &Path) {
    let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(at).status();
}

/// Once the mount is up, raises its read-ahead window to 1 MiB through
/// sysfs (root only; the FUSE handshake leaves it at the kernel's 128 KiB):
/// a sequential `cat` of a table file then asks for larger reads, about a
/// tenth faster on a 1 GiB relation file. Best effort, on a thread of its own.
fn raise_read_ahead(point: &Path) {
    let point = std::fs::canonicalize(point).unwrap_or_else(|_| point.to_path_buf());
    let Some(parent_dev) = point.parent().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.dev()) else { return };
    std::thread::spawn(move || {
        for _ in 0..100 {
            match std::fs::metadata(&point).map(|m| m.dev()) {
                Ok(dev) if dev != parent_dev => {
                    let (major, minor) = (libc::major(dev), libc::minor(dev));
                    let _ = std::fs::write(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"), "1024");
                    return;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    });
}
