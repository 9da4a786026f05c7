//! A btrfs filesystem on a loop device for `backup --snapshot btrfs`
//! (tests/snapshot_btrfs.rs, tests/postgres_pitr.rs): needs root, loop
//! devices and btrfs-progs (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A btrfs filesystem in a sparse image, mounted through a loop device; unmounted when dropped.
pub struct Btrfs {
    pub mnt: PathBuf,
}

impl Btrfs {
    pub fn new(dir: &Path) -> Btrfs {
        assert!(
            Command::new("mkfs.btrfs").arg("--version").output().is_ok(),
            "mkfs.btrfs is missing: apt-get install btrfs-progs (scripts/test.sh does)"
        );
        let (img, mnt) = (dir.join("btrfs.img"), dir.join("btrfs"));
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(3 << 30).unwrap();
        let out = Command::new("mkfs.btrfs").arg("-q").arg("-f").arg(&img).output().unwrap();
        assert!(out.status.success(), "mkfs.btrfs: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt).output().unwrap();
        assert!(
            out.status.success(),
            "mount -o loop (needs root and loop devices): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Btrfs { mnt }
    }

    /// The subvolumes below the mount, as `btrfs subvolume list` names them.
    pub fn subvolumes(&self) -> String {
        let out = Command::new("btrfs").args(["subvolume", "list"]).arg(&self.mnt).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}
