//! `dedupe mount MOUNTPOINT`: every snapshot as a read-only filesystem
//! (`mountfs.rs`), in the foreground until it is unmounted
//! (`fusermount3 -u MOUNTPOINT`) or the command is interrupted, which
//! unmounts it first.

use crate::ctx::Ctx;
use crate::exit::{self, Failure, R};
use crate::mountfs::MountFs;
use fuser::MountOption;
use std::path::Path;

pub(crate) fn run(ctx: &Ctx, mountpoint: &Path, name: Option<&str>) -> R {
    if !mountpoint.is_dir() {
        return Err(Failure::usage(format!("{}: not a directory; create it first", mountpoint.display())));
    }
    let repo = ctx.indexed()?;
    let fs = MountFs::new(repo, name)?;
    let options = [
        MountOption::RO,
        MountOption::FSName("dedupe".into()),
        MountOption::Subtype("dedupe".into()),
        MountOption::NoExec,
    ];
    // Ctrl-C or SIGTERM: unmount before the process ends, or the
    // mountpoint is left answering "Transport endpoint is not connected".
    let point = mountpoint.to_path_buf();
    crate::interrupt::before_exit(move || {
        let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(&point).status();
    });
    crate::interrupt::say("the repository was not changed; the mount was removed");
    ctx.note(&format!(
        "mounted at {} (by-id/, by-name/); unmount with `fusermount3 -u {}` or Ctrl-C",
        mountpoint.display(),
        mountpoint.display()
    ));
    fuser::mount2(fs, mountpoint, &options).map_err(|e| {
        Failure::new(
            exit::MOUNT_FAILED,
            format!(
                "cannot mount at {}: {e} (FUSE needs /dev/fuse and fusermount3: apt-get install fuse3)",
                mountpoint.display()
            ),
        )
    })
}
