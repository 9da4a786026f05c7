//! Stream formats told apart by their first bytes: a generic tar is split
//! into its files and comes back as a tar; a mysqldump keeps its coordinates.

use dedupe_suite::*;
use std::process::{Command, Stdio};

#[test]
fn a_tar_stream_is_split_into_files_and_comes_back_as_tar() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("base/16384")).unwrap();
    // Larger than the pieces in flight (8 MiB each): later pieces are read
    // into buffers the earlier ones came back with.
    std::fs::write(src.join("base/16384/16385"), Prng::new(1).bytes(72 << 20)).unwrap();
    std::fs::write(src.join("base/16384/16386"), Prng::new(2).bytes((40 << 20) + 8192 * 3)).unwrap();
    std::fs::write(src.join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(src.join("long-".repeat(30) + "name"), b"a name over 100 bytes needs GNU or pax headers").unwrap();
    std::os::unix::fs::symlink("PG_VERSION", src.join("link")).unwrap();
    let tar = repo.scratch("in.tar");
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).arg(".").status().unwrap().success());

    let out =
        repo.cmd(["--json", "backup", "--name", "t", "-"]).stdin(std::fs::File::open(&tar).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snaps = repo.json(&["snapshots"]);
    assert_eq!(snaps[0]["metadata"]["format"], "tar");
    let ls = repo.json(&["ls", "latest"]);
    let paths: Vec<&str> = ls.as_array().unwrap().iter().map(|n| n["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"base/16384/16385") && paths.contains(&"link"), "{paths:?}");

    // As a directory, and as a tar again.
    let a = repo.scratch("a");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), a.as_os_str()]);
    let b = repo.scratch("b");
    std::fs::create_dir_all(&b).unwrap();
    let mut restore = repo.cmd(["restore", "latest", "--stdout"]).stdout(Stdio::piped()).spawn().unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&b)
        .arg("-xf")
        .arg("-")
        .stdin(restore.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(st.success() && restore.wait().unwrap().success());
    for dir in [&a, &b] {
        for f in ["base/16384/16385", "base/16384/16386"] {
            assert!(std::fs::read(dir.join(f)).unwrap() == std::fs::read(src.join(f)).unwrap(), "{f} differs");
        }
        assert_eq!(std::fs::read_link(dir.join("link")).unwrap().to_str(), Some("PG_VERSION"));
        assert!(std::fs::read(dir.join("long-".repeat(30) + "name")).unwrap().starts_with(b"a name over"));
    }
}

#[test]
fn a_mysqldump_keeps_its_replication_coordinates() {
    let repo = Repo::new();
    let dump = "-- MariaDB dump 10.19-11.4  Distrib 10.11.19-MariaDB\n--\n-- Host: localhost    Database: \n\
                -- Position to start replication or point-in-time recovery from\n--\n\n\
                -- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000007', MASTER_LOG_POS=1234;\n\n\
                -- SET GLOBAL gtid_slave_pos='0-1-99';\n\nCREATE TABLE t (id int);\nINSERT INTO t VALUES (1),(2);\n";
    repo.backup_bytes("db", dump.as_bytes());
    let m = &repo.json(&["snapshots"])[0]["metadata"];
    assert_eq!(m["format"], "mysqldump");
    assert_eq!(m["database"], "mariadb");
    assert_eq!(m["mysql"]["binlog_file"], "mysql-bin.000007");
    assert_eq!(m["mysql"]["binlog_position"], 1234);
    assert_eq!(m["mysql"]["gtid"], "0-1-99");
    assert_eq!(repo.ok(&["restore", "latest", "--stdout"]), dump.as_bytes());
}

#[test]
fn format_can_be_forced() {
    let repo = Repo::new();
    // An xbstream taken as raw bytes stays one opaque file.
    let mut w = Vec::new();
    w.extend_from_slice(b"XBSTCK01 not really");
    let out = repo
        .cmd(["backup", "--name", "r", "--format", "raw", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&w)?;
            c.wait()
        });
    assert!(out.unwrap().success());
    assert_eq!(repo.ok(&["restore", "latest", "--stdout"]), w);
    // Sniffed, the same bytes are a damaged xbstream.
    let mut c = repo.cmd(["backup", "--name", "r2", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(&w).unwrap();
    }
    let out = c.wait_with_output().unwrap();
    assert!(!out.status.success());
    one_line_error(&out);
}

#[test]
fn a_postgres_base_backup_with_tablespaces_is_refused_before_writing() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("base/1")).unwrap();
    std::fs::write(src.join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(
        src.join("backup_label"),
        b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
    )
    .unwrap();
    std::fs::write(src.join("tablespace_map"), b"16390 /srv/tablespaces/fast\n").unwrap();
    let tar = repo.scratch("base.tar");
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let out = repo.cmd(["backup", "--name", "pg", "-"]).stdin(std::fs::File::open(&tar).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let target = repo.scratch("restored");
    let out = repo.cmd(["restore", "latest", "--target"]).arg(&target).output().unwrap();
    assert_eq!(out.status.code(), Some(16));
    assert!(one_line_error(&out).contains("tablespace"));
    assert!(!target.join("PG_VERSION").exists(), "nothing is written");
}

#[test]
fn a_tar_cut_between_members_and_a_failing_tar_producer_commit_nothing() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), vec![b'a'; 1000]).unwrap();
    std::fs::write(src.join("b"), vec![b'b'; 1000]).unwrap();
    let tar = repo.scratch("in.tar");
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).args(["a", "b"]).status().unwrap().success());
    // Header and data of "a" (512 + 1024 bytes): the cut falls exactly between members.
    let bytes = std::fs::read(&tar).unwrap();
    let cut = repo.scratch("cut.tar");
    std::fs::write(&cut, &bytes[..1536]).unwrap();
    let out = repo.cmd(["backup", "--name", "t", "-"]).stdin(std::fs::File::open(&cut).unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", String::from_utf8_lossy(&out.stderr));
    one_line_error(&out);

    // A producer that writes a complete tar and then fails.
    let cmd = format!("tar -C {} -cf - a b; exit 3", src.display());
    let out = repo.cmd(["backup", "--name", "t", "--command", &cmd]).output().unwrap();
    assert_eq!(out.status.code(), Some(14), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}
