//! A directory tree (a mounted snapshot) backed up and restored with its
//! metadata, and unchanged files skipped on the next backup.

use dedupe_suite::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Everything a restore must reproduce, per relative path.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    size: u64,
    content: Option<blake3::Hash>,
    link: Option<String>,
}

fn scan(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Seen>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            let content = ft.is_file().then(|| blake3::hash(&fs::read(&p).unwrap()));
            let link = ft.is_symlink().then(|| fs::read_link(&p).unwrap().to_string_lossy().into_owned());
            out.insert(
                rel,
                Seen {
                    kind,
                    mode: if ft.is_symlink() { 0 } else { m.mode() & 0o7777 },
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    size: if ft.is_dir() { 0 } else { m.len() },
                    content,
                    link,
                },
            );
            if ft.is_dir() {
                go(root, &p, out);
            }
        }
    }
    go(root, root, &mut out);
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// A tree with every kind of entry a datadir snapshot may hold.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("db/sub")).unwrap();
    fs::write(root.join("db/ibdata1"), Prng::new(1).bytes(5 << 20)).unwrap();
    fs::write(root.join("db/small.frm"), b"tiny").unwrap();
    fs::write(root.join("db/empty"), b"").unwrap();
    fs::write(root.join("db/sub/config.cnf"), b"[mysqld]\nport=3306\n").unwrap();
    fs::set_permissions(root.join("db/sub/config.cnf"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("db/small.frm"), fs::Permissions::from_mode(0o4751)).unwrap();
    std::os::unix::fs::symlink("sub/config.cnf", root.join("db/link.cnf")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::hard_link(root.join("db/ibdata1"), root.join("db/ibdata1.hardlink")).unwrap();
    // A sparse file: 1 MiB of data, an 8 MiB hole, 1 MiB of data, a 4 MiB trailing hole.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(root.join("db/sparse.ibd")).unwrap();
        f.write_all(&Prng::new(9).bytes(1 << 20)).unwrap();
        f.seek(SeekFrom::Current(8 << 20)).unwrap();
        f.write_all(&Prng::new(10).bytes(1 << 20)).unwrap();
        f.set_len(14 << 20).unwrap();
    }
    if is_root() {
        std::os::unix::fs::lchown(root.join("db/small.frm"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("db/link.cnf"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::chown(root.join("db/sub"), Some(999), Some(998)).unwrap();
    }
    fs::set_permissions(root.join("db"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&root.join("db/small.frm"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("db/link.cnf"), 1_500_000_000, 5);
    set_mtime(&root.join("db/sub"), 1_400_000_000, 0);
    set_mtime(&root.join("db"), 1_300_000_000, 42);
}

#[test]
fn directory_restore_preserves_contents_metadata_links_and_holes() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    make_tree(&src);
    let sock = std::os::unix::net::UnixListener::bind(src.join("db/mysqld.sock")).unwrap();
    set_mtime(&src.join("db"), 1_300_000_000, 42);
    let out = repo.cmd(["--json", "backup", "--name", "host1"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysqld.sock: a socket is not backed up"));
    drop(sock);
    fs::remove_file(src.join("db/mysqld.sock")).unwrap();
    // Removing the socket changed the directory's mtime; put it back.
    set_mtime(&src.join("db"), 1_300_000_000, 42);

    let target = repo.scratch("restored");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);

    let (a, b) = (scan(&src), scan(&target));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, want) in &a {
        assert_eq!(&b[path], want, "{path}");
    }
    // Hard links stay linked.
    let (m1, m2) =
        (fs::metadata(target.join("db/ibdata1")).unwrap(), fs::metadata(target.join("db/ibdata1.hardlink")).unwrap());
    assert_eq!(m1.ino(), m2.ino());
    assert_eq!(m1.nlink(), 2);
    // Holes stay holes: 14 MiB long, about 2 MiB allocated.
    let sparse = fs::metadata(target.join("db/sparse.ibd")).unwrap();
    assert_eq!(sparse.len(), 14 << 20);
    assert!(sparse.blocks() * 512 <= 3 << 20, "sparse file allocates {} bytes", sparse.blocks() * 512);
    // The root directory's own mode comes back too (a datadir must stay 0700).
    assert_eq!(fs::metadata(target.join("db")).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn second_backup_of_an_unchanged_tree_reads_no_file_contents() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    make_tree(&src);
    let backup = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["backup".as_ref(), "--name".as_ref(), "h".as_ref()];
        args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        args.push(src.as_os_str());
        repo.json(&args)
    };
    let first = backup(&[]);
    // Hard links are not counted as files of their own.
    assert_eq!(first["files"], 5);
    assert!(first["bytes_read"].as_u64().unwrap() >= 7 << 20);

    let second = backup(&[]);
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_unchanged"], 5, "every file is reused: {second}");
    assert_eq!(second["new_chunks"], 0, "{second}");

    // One changed file is read again, and only it.
    fs::write(src.join("db/sub/config.cnf"), b"[mysqld]\nport=3307\n").unwrap();
    let third = backup(&[]);
    assert_eq!(third["bytes_read"], 19, "{third}");

    // --force-read reads everything (the sparse file's holes are not read).
    let forced = backup(&["--force-read"]);
    assert_eq!(forced["bytes_read"], (5 << 20) + 4 + 19 + (2 << 20), "{forced}");

    // And what the reused lists point at restores exactly.
    let target = repo.scratch("restored");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_eq!(fs::read(target.join("db/ibdata1")).unwrap(), fs::read(src.join("db/ibdata1")).unwrap());
}

#[test]
fn partial_restore_and_stdout_of_one_file() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    make_tree(&src);
    repo.ok(&["backup".as_ref(), "--name".as_ref(), "h".as_ref(), src.as_os_str()]);
    let target = repo.scratch("one");
    repo.ok(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--path".as_ref(),
        "db/sub".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    let got: Vec<String> = scan(&target).into_keys().collect();
    assert_eq!(got, ["db", "db/sub", "db/sub/config.cnf"]);
    // A hard link selected without its first name is restored as a full copy.
    let t2 = repo.scratch("two");
    repo.ok(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--path".as_ref(),
        "db/ibdata1.hardlink".as_ref(),
        "--target".as_ref(),
        t2.as_os_str(),
    ]);
    assert_eq!(fs::read(t2.join("db/ibdata1.hardlink")).unwrap(), fs::read(src.join("db/ibdata1")).unwrap());
    // One file to stdout, holes as zeros.
    let out = repo.ok(&["restore", "latest", "--path", "db/sparse.ibd", "--stdout"]);
    assert!(out == fs::read(src.join("db/sparse.ibd")).unwrap());
    // A whole directory snapshot to stdout is a tar of it.
    let tar = repo.ok(&["restore", "latest", "--stdout"]);
    let listing = repo.scratch("whole.tar");
    fs::write(&listing, &tar).unwrap();
    let out = std::process::Command::new("tar").arg("-tf").arg(&listing).output().unwrap();
    let names = String::from_utf8(out.stdout).unwrap();
    for want in ["db/", "db/ibdata1", "db/ibdata1.hardlink", "db/link.cnf", "db/sub/config.cnf", "db/sparse.ibd"] {
        assert!(names.lines().any(|l| l == want), "{want} missing from {names}");
    }
}

#[test]
fn restore_refuses_a_non_empty_target_without_force() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"new content");
    let target = repo.scratch("t");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("stdin"), b"old").unwrap();
    fs::write(target.join("keep-me"), b"precious").unwrap();
    let out = repo.run(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(11));
    assert!(one_line_error(&out).contains("not empty"));
    assert_eq!(fs::read(target.join("stdin")).unwrap(), b"old");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--force".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_eq!(fs::read(target.join("stdin")).unwrap(), b"new content");
    assert_eq!(fs::read(target.join("keep-me")).unwrap(), b"precious");
}

#[test]
fn forced_restore_never_writes_through_a_symlink_in_the_target() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    make_tree(&src);
    repo.ok(&["backup".as_ref(), "--name".as_ref(), "h".as_ref(), src.as_os_str()]);
    let outside = repo.scratch("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = repo.scratch("t");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("db")).unwrap();
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--force".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "restore wrote through the symlink");
    assert!(fs::symlink_metadata(target.join("db")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("db/small.frm")).unwrap(), b"tiny");
}
