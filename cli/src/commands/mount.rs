//! `dedupe mount MOUNTPOINT`: every snapshot as a read-only filesystem
//! (`mountfs.rs`), in the foreground until it is unmounted
//! (`fusermount3 -u MOUNTPOINT`) or the command is interrupted, which
//! unmounts it first. `restore SNAPSHOT --mount DIR` (`one`): one snapshot.

use crate::ctx::Ctx;
use crate::exit::{self, Failure, R};
use crate::mountfs::MountFs;
use fuser::MountOption;
use std::path::Path;

fn options() -> [MountOption; 4] {
    [MountOption::RO, MountOption::FSName("dedupe".into()), MountOption::Subtype("dedupe".into()), MountOption::NoExec]
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
    serve(ctx, fs, mountpoint, "every snapshot (by-id/, by-name/, logs/)")
}

/// `restore SPEC --mount POINT`: one snapshot, read-only.
pub(crate) fn one(ctx: &Ctx, spec: &str, name: Option<&str>, point: &Path) -> R {
    need_dir(point)?;
    let repo = ctx.indexed()?;
    let (id, manifest) = repo.find_snapshot(spec, name)?;
    serve(ctx, MountFs::one(repo, &id, &manifest), point, &format!("snapshot {}", &id[..8]))
}

/// Serves `fs` at `point` in the foreground until it is unmounted or the
/// command is interrupted.
fn serve(ctx: &Ctx, fs: MountFs, point: &Path, what: &str) -> R {
    // Ctrl-C or SIGTERM: unmount before the process ends, or the
    // mountpoint is left answering "Transport endpoint is not connected".
    let p = point.to_path_buf();
    crate::interrupt::before_exit(move || unmount_fuse(&p));
    crate::interrupt::say("the repository was not changed; the mount was removed");
    ctx.note(&format!(
        "{what} mounted read-only at {}; `fusermount3 -u {}` or Ctrl-C unmounts",
        point.display(),
        point.display()
    ));
    let served = fuser::mount2(fs, point, &options()).map_err(|e| mount_failed(point, e));
    crate::interrupt::wait_if_interrupted();
    served
}

fn unmount_fuse(at: &Path) {
    let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(at).status();
}
