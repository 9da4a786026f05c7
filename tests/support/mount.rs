//! A running `dedupe mount` of a test's repository (`tests/mount.rs`, and
//! the real servers' snapshots in `tests/mariadb.rs` and `tests/postgres.rs`).

use crate::Repo;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Unmounted (and waited for) when dropped.
pub struct Mounted {
    child: Option<Child>,
    pub point: PathBuf,
}

impl Mounted {
    /// Mounts `repo` at a new directory of its scratch space and waits until it answers.
    pub fn new(repo: &Repo) -> Mounted {
        assert!(
            std::process::Command::new("fusermount3").arg("-V").output().is_ok(),
            "fusermount3 is missing: apt-get install fuse3 (scripts/test.sh does)"
        );
        let point = repo.scratch("mnt");
        std::fs::create_dir_all(&point).unwrap();
        let child =
            repo.cmd([std::ffi::OsStr::new("mount"), point.as_os_str()]).stderr(Stdio::piped()).spawn().unwrap();
        let started = Instant::now();
        while !point.join("by-id").exists() {
            assert!(started.elapsed() < Duration::from_secs(30), "the mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mounted { child: Some(child), point }
    }

    /// `restore SPEC --mount --writable` of `repo` at a new directory of its
    /// scratch space (the overlay beside it, `<point>.overlay`), once it answers.
    pub fn writable(repo: &Repo, spec: &str) -> Mounted {
        Mounted::writable_at(repo, spec, repo.scratch("rw"))
    }

    /// The same at `point` (made if missing), for a server that runs as
    /// another user and must reach it.
    pub fn writable_at(repo: &Repo, spec: &str, point: PathBuf) -> Mounted {
        std::fs::create_dir_all(&point).unwrap();
        let parent_dev = std::fs::metadata(point.parent().unwrap()).unwrap().dev();
        let child = repo
            .cmd(["restore", spec, "--mount", point.to_str().unwrap(), "--writable"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::fs::metadata(&point).map_or(true, |m| m.dev() == parent_dev) {
            assert!(started.elapsed() < Duration::from_secs(30), "the writable mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mounted { child: Some(child), point }
    }

    /// The overlay directory of a writable mount.
    pub fn overlay(&self) -> PathBuf {
        let mut p = self.point.clone().into_os_string();
        p.push(".overlay");
        PathBuf::from(p)
    }

    /// Unmounts as a user does (`fusermount3 -u`); returns the mount's exit code and stderr.
    pub fn unmount(mut self) -> (Option<i32>, String) {
        let child = self.child.take().unwrap();
        let started = Instant::now();
        // A server that just stopped may still hold the mount busy for a moment.
        while !std::process::Command::new("fusermount3").arg("-u").arg(&self.point).status().unwrap().success() {
            assert!(started.elapsed() < Duration::from_secs(30), "fusermount3 -u kept failing");
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Interrupts the mount as Ctrl-C does; returns its exit code and stderr.
    pub fn interrupt(mut self) -> (Option<i32>, String) {
        let child = self.child.take().unwrap();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(&self.point).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
