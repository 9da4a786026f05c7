//! `dedupe mount`: every snapshot read through a real FUSE mount equals
//! what `restore --target` writes, every archived log what `wal fetch` writes; a damaged pack fails only the files it
//! holds, with EIO; Ctrl-C unmounts.

use dedupe_suite::mount::Mounted;
use dedupe_suite::*;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every entry under `root`: relative path, kind, mode, size, content hash or link target.
fn scan(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("{} bytes {}", m.len(), blake3::hash(&std::fs::read(&p).unwrap()))
            };
            out.push((rel, format!("{:o} {what}", m.permissions().mode() & 0o7777)));
        }
    }
    out.sort();
    out
}

#[test]
fn every_file_reads_through_the_mount_as_restore_writes_it() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("db/sub")).unwrap();
    let mut prng = Prng::new(71);
    std::fs::write(src.join("db/t1.ibd"), prng.bytes(3 << 20)).unwrap();
    std::fs::write(src.join("db/sub/small.frm"), b"hello").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    // A sparse file: a hole of 8 MiB between two written mebibytes.
    let sparse = std::fs::File::create(src.join("db/sparse.ibd")).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&prng.bytes(1 << 20), 0).unwrap();
    sparse.write_all_at(&prng.bytes(1 << 20), 9 << 20).unwrap();
    std::fs::set_permissions(src.join("db/sub/small.frm"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("t1.ibd", src.join("db/link")).unwrap();
    std::fs::hard_link(src.join("db/t1.ibd"), src.join("db/t1-again.ibd")).unwrap();
    repo.ok(&["backup", "--name", "dir", src.to_str().unwrap()]);
    let stream = prng.bytes(2 << 20);
    repo.backup_bytes("stream", &stream);
    // A tar stream whose members have no entries for their directories.
    let tar = std::process::Command::new("tar")
        .args(["-cf", "-", "--no-recursion", "-C"])
        .arg(&src)
        .args(["db/t1.ibd", "db/sub/small.frm"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    repo.backup_bytes("tar", &tar.stdout);
    let snaps = repo.json(&["snapshots"]);
    let dir_id = snaps[0]["id"].as_str().unwrap().to_string();
    // An archived WAL file.
    let wal = repo.scratch("000000010000000000000003");
    std::fs::write(&wal, prng.bytes(300_000)).unwrap();
    repo.ok(&["wal", "push", "--name", "pg", wal.to_str().unwrap()]);

    let m = Mounted::new(&repo);
    // The layout: by-id, by-name/<name>/<time>, latest.
    let by_id: Vec<String> = std::fs::read_dir(m.point.join("by-id"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(by_id.len(), 3, "{by_id:?}");
    let latest = std::fs::read_link(m.point.join("by-name/dir/latest")).unwrap();
    assert!(m.point.join("by-name/dir").join(&latest).is_dir(), "{latest:?}");

    // The directory snapshot: as restore writes it, file by file.
    let target = repo.scratch("restored");
    repo.ok(&["restore", &dir_id, "--target", target.to_str().unwrap()]);
    let mounted = m.point.join("by-name/dir/latest");
    assert_eq!(scan(&mounted), scan(&target));
    assert_eq!(scan(&m.point.join("by-id").join(&dir_id)), scan(&target));
    // Sizes, holes read as zeros, hard links one inode, times and owners kept.
    let meta = std::fs::metadata(mounted.join("db/sparse.ibd")).unwrap();
    assert_eq!(meta.len(), 10 << 20);
    let f = std::fs::File::open(mounted.join("db/sparse.ibd")).unwrap();
    let mut hole = vec![1u8; 4096];
    f.read_exact_at(&mut hole, 5 << 20).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    let (a, b) = (
        std::fs::metadata(mounted.join("db/t1.ibd")).unwrap(),
        std::fs::metadata(mounted.join("db/t1-again.ibd")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "a hard link is its target's inode");
    let orig = std::fs::metadata(src.join("db/t1.ibd")).unwrap();
    assert_eq!((a.mtime(), a.uid(), a.gid()), (orig.mtime(), orig.uid(), orig.gid()));
    // A write is refused: the mount is read-only.
    assert!(std::fs::OpenOptions::new().write(true).open(mounted.join("db/t1.ibd")).is_err());
    // The stream snapshot shows its content as one file.
    let files: Vec<_> = std::fs::read_dir(m.point.join("by-name/stream/latest")).unwrap().collect();
    assert_eq!(files.len(), 1);
    assert!(std::fs::read(files[0].as_ref().unwrap().path()).unwrap() == stream);

    // The tar's members, under the directories their paths name.
    let tar_root = m.point.join("by-name/tar/latest");
    assert!(std::fs::read(tar_root.join("db/sub/small.frm")).unwrap() == b"hello");
    assert!(std::fs::read(tar_root.join("db/t1.ibd")).unwrap() == std::fs::read(src.join("db/t1.ibd")).unwrap());

    // logs/: the archived file, as `wal fetch` writes it.
    let fetched = repo.scratch("fetched");
    repo.ok(&["wal", "fetch", "--name", "pg", "000000010000000000000003", fetched.to_str().unwrap()]);
    let through = std::fs::read(m.point.join("logs/pg/000000010000000000000003")).unwrap();
    assert!(through == std::fs::read(&fetched).unwrap() && through == std::fs::read(&wal).unwrap());

    // A backup made while mounted appears, and `latest` follows it.
    std::fs::write(src.join("db/new.ibd"), b"new").unwrap();
    let v = repo.json(&["backup", "--name", "dir", src.to_str().unwrap()]);
    let new_id = v["snapshot"].as_str().unwrap().to_string();
    let started = Instant::now();
    while !m.point.join("by-id").join(&new_id).exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "the new snapshot did not appear");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(std::fs::read(m.point.join("by-name/dir/latest/db/new.ibd")).unwrap(), b"new");

    // Ctrl-C: the mount goes, the command ends as interrupted.
    let point = m.point.clone();
    let (code, stderr) = m.interrupt();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!point.join("by-id").exists(), "unmounted");
}

#[test]
fn a_damaged_pack_fails_only_its_files_with_eio() {
    let repo = Repo::uninitialised_local();
    repo.ok(&["init"]);
    let a = repo.scratch("a");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("good"), Prng::new(72).bytes(1 << 20)).unwrap();
    repo.ok(&["backup", "--name", "a", a.to_str().unwrap()]);
    let before: std::collections::HashSet<PathBuf> = repo.packs().into_iter().collect();
    std::fs::write(a.join("bad"), Prng::new(73).bytes(1 << 20)).unwrap();
    repo.ok(&["backup", "--name", "a", a.to_str().unwrap()]);
    // Flip a byte in the middle of the pack only the second backup wrote.
    let pack = repo.packs().into_iter().find(|p| !before.contains(p)).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    let m = Mounted::new(&repo);
    let dir = m.point.join("by-name/a/latest");
    let err = std::fs::read(dir.join("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(std::fs::read(dir.join("good")).unwrap() == std::fs::read(a.join("good")).unwrap());
    let (_, stderr) = m.interrupt();
    let leaf = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains(&leaf), "the damaged pack is named: {stderr}");
}

#[test]
fn restore_mount_shows_one_snapshot_until_interrupted() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a.ibd"), Prng::new(74).bytes(1 << 20)).unwrap();
    repo.ok(&["backup", "--name", "one", src.to_str().unwrap()]);
    std::fs::write(src.join("d/a.ibd"), b"changed later").unwrap();
    repo.ok(&["backup", "--name", "one", src.to_str().unwrap()]);
    let first = repo.json(&["snapshots"])[0]["id"].as_str().unwrap().to_string();
    let target = repo.scratch("restored");
    repo.ok(&["restore", &first, "--target", target.to_str().unwrap()]);

    let point = repo.scratch("one");
    std::fs::create_dir_all(&point).unwrap();
    let child = repo
        .cmd(["restore", &first, "--mount", point.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !point.join("d").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the mount did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(scan(&point), scan(&target), "the first snapshot, not the latest");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!point.join("d").exists(), "unmounted");
    // --mount and --target are one or the other.
    let out =
        repo.run(&["restore", "latest", "--mount", point.to_str().unwrap(), "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Bytes the files of `dir` take on disk.
fn allocated(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().blocks() * 512).sum()
}

/// `restore --mount --writable`: random writes, truncations, creations,
/// renames, links and removals through the mount give what the same
/// operations give on a restored copy; a one-byte write to a large file
/// stores a block, not the file; unmounting removes the overlay and leaves
/// the repository as it was.
#[test]
fn a_writable_mount_behaves_as_a_local_copy_and_changes_nothing_in_the_repository() {
    use rand::{Rng, SeedableRng};
    use std::os::unix::fs::FileExt;
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("db/sub")).unwrap();
    let mut prng = Prng::new(75);
    std::fs::write(src.join("db/big.ibd"), prng.bytes(3 << 20)).unwrap();
    std::fs::write(src.join("db/sub/small"), prng.bytes(5000)).unwrap();
    std::fs::hard_link(src.join("db/big.ibd"), src.join("db/big-again")).unwrap();
    std::os::unix::fs::symlink("big.ibd", src.join("db/link")).unwrap();
    repo.ok(&["backup", "--name", "rw", src.to_str().unwrap()]);
    let copy = repo.scratch("copy");
    repo.ok(&["restore", "latest", "--target", copy.to_str().unwrap()]);
    let before = scan(&copy);

    let m = Mounted::writable(&repo, "latest");
    let mnt = m.point.clone();
    assert_eq!(scan(&mnt), before);
    // One byte in the middle of 3 MiB: one 4 KiB block goes to the overlay.
    for root in [&mnt, &copy] {
        let f = std::fs::OpenOptions::new().write(true).open(root.join("db/big.ibd")).unwrap();
        f.write_all_at(b"x", 1_500_001).unwrap();
        f.sync_all().unwrap();
    }
    assert!(allocated(&m.overlay()) <= 64 << 10, "copy-on-write by block: {} bytes", allocated(&m.overlay()));
    assert_eq!(std::fs::read(mnt.join("db/big-again")).unwrap(), std::fs::read(copy.join("db/big.ibd")).unwrap());

    // The same random operations on both; every result and every touched file equal.
    let names = ["db/big.ibd", "db/big-again", "db/sub/small", "db/new", "db/sub/other", "top"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(76);
    for step in 0..1500 {
        let (n, n2) = (names[rng.random_range(0..names.len())], names[rng.random_range(0..names.len())]);
        let op = rng.random_range(0..10);
        let (off, len) = (rng.random_range(0..(3 << 20) + 20_000u64), rng.random_range(1..40_000usize));
        let data = prng.bytes(len);
        let mut results = Vec::new();
        for root in [&mnt, &copy] {
            let (p, p2) = (root.join(n), root.join(n2));
            let r: std::io::Result<Vec<u8>> = match op {
                0..=3 => std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    // Direct I/O, as InnoDB writes, reaches the filesystem
                    // unaligned (the copy's filesystem would refuse it).
                    .custom_flags(if op == 0 && root == &mnt { libc::O_DIRECT } else { 0 })
                    .open(&p)
                    .and_then(|f| f.write_all_at(&data, off))
                    .map(|()| Vec::new()),
                4 => std::fs::OpenOptions::new().write(true).open(&p).and_then(|f| f.set_len(off)).map(|()| Vec::new()),
                5 => std::fs::File::open(&p).and_then(|f| {
                    let mut buf = vec![0u8; len];
                    let n = f.read_at(&mut buf, off)?;
                    buf.truncate(n);
                    Ok(buf)
                }),
                6 => std::fs::rename(&p, &p2).map(|()| Vec::new()),
                7 => std::fs::remove_file(&p).map(|()| Vec::new()),
                8 => std::fs::hard_link(&p, &p2).map(|()| Vec::new()),
                _ => std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600 | (off as u32 & 0o077)))
                    .map(|()| Vec::new()),
            };
            results.push(r.map_err(|e| e.raw_os_error()));
        }
        assert_eq!(results[0], results[1], "step {step}: op {op} on {n} ({n2}) at {off}");
        for f in [n, n2] {
            let a = std::fs::read(mnt.join(f)).map_err(|e| e.raw_os_error());
            let b = std::fs::read(copy.join(f)).map_err(|e| e.raw_os_error());
            assert!(a == b, "step {step}: {f} differs after op {op}");
        }
    }
    // A removed file stays readable through a handle opened before.
    for root in [&mnt, &copy] {
        std::fs::write(root.join("db/temp"), b"still here").unwrap();
    }
    let open = std::fs::File::open(mnt.join("db/temp")).unwrap();
    std::fs::remove_file(mnt.join("db/temp")).unwrap();
    std::fs::remove_file(copy.join("db/temp")).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(open.read_at(&mut buf, 0).unwrap(), 10);
    assert_eq!(&buf, b"still here");
    drop(open);
    std::fs::create_dir(mnt.join("db/newdir")).unwrap();
    std::fs::create_dir(copy.join("db/newdir")).unwrap();
    assert_eq!(std::fs::remove_dir(mnt.join("db")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    assert_eq!(scan(&mnt), scan(&copy));

    let overlay = m.overlay();
    let (code, stderr) = m.unmount();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("of changes; removed"), "the overlay's size is reported: {stderr}");
    assert!(!overlay.exists(), "the overlay is removed with the mount");
    // The repository is as it was: the snapshot restores as before and checks whole.
    let again = repo.scratch("again");
    repo.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert_eq!(scan(&again), before);
    repo.ok(&["check", "--read-data"]);
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 1);

    // An overlay that is not empty is refused: it may be someone's files.
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(overlay.join("keep"), b"mine").unwrap();
    let out = repo.run(&["restore", "latest", "--mount", mnt.to_str().unwrap(), "--writable"]);
    assert_eq!(out.status.code(), Some(11), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(overlay.join("keep")).unwrap(), b"mine");
}
