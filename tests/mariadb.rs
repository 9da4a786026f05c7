//! Real MariaDB: mariabackup streams piped into dedupe, restored, prepared,
//! started again, and compared table by table with CHECKSUM TABLE.

use dedupe_suite::mariadb::{serial, Server};
use dedupe_suite::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TRUNCATED: i32 = 13;
const PRODUCER_FAILED: i32 = 14;

/// A server with a few tables: InnoDB with secondary indexes, a blob table, an Aria table.
fn loaded_server(dir: &Path) -> Server {
    let s = Server::init(dir);
    s.sql(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer VARCHAR(64), total DECIMAL(10,2), note TEXT, KEY (customer)) ENGINE=InnoDB;
         INSERT INTO shop.orders (customer, total, note) SELECT CONCAT('c', seq % 997), seq * 1.25, REPEAT(MD5(seq), 3) FROM seq_1_to_150000;
         CREATE TABLE shop.blobs (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB;
         INSERT INTO shop.blobs SELECT seq, RANDOM_BYTES(1024) FROM seq_1_to_2000;
         CREATE TABLE shop.audit (id INT PRIMARY KEY, what VARCHAR(100)) ENGINE=Aria;
         INSERT INTO shop.audit SELECT seq, CONCAT('event ', seq) FROM seq_1_to_5000;",
    );
    // Settle like a server that has run a while: a slow shutdown checkpoints
    // everything, so two backups of the unchanged database see the same files.
    s.sql("SET GLOBAL innodb_fast_shutdown=0");
    let datadir = s.datadir.clone();
    drop(s);
    Server::start(dir, &datadir)
}

fn files_equal(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut v = Vec::new();
        fn go(root: &Path, d: &Path, v: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    go(root, &e.path(), v);
                } else {
                    v.push(e.path().strip_prefix(root).unwrap().to_path_buf());
                }
            }
        }
        go(root, root, &mut v);
        v.sort();
        v
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(la, lb, "different file lists");
    for f in la {
        assert!(std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(), "{} differs", f.display());
    }
}

fn mbstream_extract(stream: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("mbstream")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(std::fs::File::open(stream).unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "mbstream -x failed");
}

#[test]
fn mariabackup_roundtrip_restores_prepares_and_starts_with_equal_checksums() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = loaded_server(&work.join("src"));
    let want = src.checksums("shop");

    // Serial stream through --command: the producer's failure would be seen.
    let tmp = work.join("mb-tmp");
    let summary = repo.json(&["backup", "--name", "maria", "--command", &src.backup_command(&tmp, 1)]);
    assert_eq!(summary["warnings"].as_array().unwrap().len(), 0, "{summary}");
    let snaps = repo.json(&["snapshots"]);
    let meta = &snaps[0]["metadata"];
    assert_eq!(meta["format"], "xbstream");
    assert_eq!(meta["database"], "mariadb");
    assert!(meta["mysql"]["binlog_file"].as_str().unwrap().starts_with("mysql-bin."), "{meta}");
    assert!(meta["mysql"]["to_lsn"].as_u64().unwrap() > 0);
    assert!(meta["command"].as_str().unwrap().starts_with("mariabackup"));
    assert!(String::from_utf8(repo.ok(&["log", "latest"])).unwrap().contains("completed OK"));

    // Restore, prepare, start a second server, compare.
    let restored = work.join("restored");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--prepare".as_ref(), "--target".as_ref(), restored.as_os_str()]);
    {
        let copy = Server::start(&work.join("copy"), &restored);
        assert_eq!(copy.checksums("shop"), want);
    }

    // A --parallel=4 stream of the unchanged database: interleaved chunks, same files.
    let stream = work.join("parallel.xbs");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("{} > {}", src.backup_command(&work.join("mb-tmp2"), 4), stream.display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let size = std::fs::metadata(&stream).unwrap().len();
    let out = repo
        .cmd(["--json", "backup", "--name", "maria", "-"])
        .stdin(std::fs::File::open(&stream).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let added = second["new_bytes_stored"].as_u64().unwrap();
    eprintln!("parallel=4 stream of {size} bytes added {added} bytes ({:.2}%)", added as f64 * 100.0 / size as f64);
    assert!(added * 50 <= size, "a parallel stream of an unchanged database added {added} of {size} bytes");

    // What mbstream -x makes of the original stream, of dedupe's restore, and of dedupe's re-emitted stream.
    let (a, b, c) = (work.join("x-orig"), work.join("x-target"), work.join("x-stdout"));
    mbstream_extract(&stream, &a);
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), b.as_os_str()]);
    let re = work.join("re.xbs");
    let st = repo.cmd(["restore", "latest", "--stdout"]).stdout(std::fs::File::create(&re).unwrap()).status().unwrap();
    assert!(st.success());
    mbstream_extract(&re, &c);
    files_equal(&a, &b);
    files_equal(&a, &c);
    // And read through `dedupe mount`.
    {
        let m = dedupe_suite::mount::Mounted::new(&repo);
        files_equal(&a, &m.point.join("by-name/maria/latest"));
    }

    // The parallel snapshot prepares and starts too, with the same tables.
    let restored = work.join("restored-parallel");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--prepare".as_ref(), "--target".as_ref(), restored.as_os_str()]);
    {
        let copy = Server::start(&work.join("copy-parallel"), &restored);
        assert_eq!(copy.checksums("shop"), want);
    }

    // Instant restore: prepared and started on a writable mount, same
    // tables, writable; the overlay goes with the mount.
    {
        let m = dedupe_suite::mount::Mounted::writable(&repo, "latest");
        let out =
            Command::new("mariabackup").arg("--prepare").arg(format!("--target-dir={}", m.point.display())).output();
        let out = out.unwrap();
        assert!(out.status.success(), "mariabackup --prepare on the mount: {}", String::from_utf8_lossy(&out.stderr));
        {
            let instant = Server::start(&work.join("instant"), &m.point);
            assert_eq!(instant.checksums("shop"), want);
            instant.sql("CREATE TABLE shop.after_restore (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.after_restore VALUES (1)");
            assert_eq!(instant.sql("SELECT COUNT(*) FROM shop.after_restore").trim(), "1");
        }
        let overlay = m.overlay();
        let (code, stderr) = m.unmount();
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!overlay.exists());
    }

    // One file alone.
    let one = work.join("one");
    repo.ok(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--path".as_ref(),
        "shop/orders.ibd".as_ref(),
        "--target".as_ref(),
        one.as_os_str(),
    ]);
    assert!(std::fs::read(one.join("shop/orders.ibd")).unwrap() == std::fs::read(a.join("shop/orders.ibd")).unwrap());
    drop(src);
}

#[test]
fn a_truncated_stream_and_a_failing_producer_commit_nothing() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = loaded_server(&work.join("src"));
    let stream = work.join("full.xbs");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("{} > {}", src.backup_command(&work.join("t"), 1), stream.display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    drop(src);
    let bytes = std::fs::read(&stream).unwrap();

    // Cut in the middle: the producer was killed.
    let cut = repo.scratch("cut.xbs");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = repo.cmd(["backup", "--name", "m", "-"]).stdin(std::fs::File::open(&cut).unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(TRUNCATED), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("truncated"));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());

    // --allow-partial keeps what arrived, and says so.
    let out = repo
        .cmd(["--json", "backup", "--name", "m", "--allow-partial", "-"])
        .stdin(std::fs::File::open(&cut).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("incomplete files"));

    // A producer that fails: nothing committed, its own exit code, its last words.
    let out = repo
        .cmd([
            "backup",
            "--name",
            "m2",
            "--command",
            "mariabackup --backup --stream=xbstream --user=root --socket=/nonexistent/mysqld.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(PRODUCER_FAILED), "{}", String::from_utf8_lossy(&out.stderr));
    one_line_error(&out);
    let names: Vec<String> =
        repo.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["m"]);
}

/// Five mariabackup streams with a day of writes between (format-spec
/// §7.5): from the second on, changed pages are stored as deltas on their
/// previous version; every generation restores, prepares and starts with
/// the tables it had, the newest (the longest history of deltas) too.
#[test]
fn five_generations_with_writes_between_restore_prepare_and_start_exactly() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = loaded_server(&work.join("src"));
    let mut generations = Vec::new();
    for g in 0..5u32 {
        if g > 0 {
            // A day of writes: a row in most pages changes, a few rows come and go;
            // then the changed pages are written to the table files, as a day's checkpoints do.
            src.sql(&format!(
                "USE shop; UPDATE shop.orders SET total = total + {g}, note = CONCAT(LEFT(note, 90), '{g}') WHERE id % 23 = {g};
                 DELETE FROM shop.orders WHERE id % 997 = {g};
                 INSERT INTO shop.orders (customer, total, note) SELECT CONCAT('n', seq), seq, MD5(seq) FROM seq_1_to_500;
                 UPDATE shop.blobs SET data = RANDOM_BYTES(1024) WHERE id % 50 = {g};
                 UPDATE shop.audit SET what = CONCAT(what, '!') WHERE id % 10 = {g};
                 FLUSH TABLES shop.orders, shop.blobs FOR EXPORT; UNLOCK TABLES;"
            ));
        }
        let want = src.checksums("shop");
        let tmp = work.join(format!("mb-tmp{g}"));
        let v = repo.json(&["backup", "--name", "maria", "--command", &src.backup_command(&tmp, 1)]);
        eprintln!(
            "generation {g}: {} new bytes, {} of them as {} deltas stored in {}; {} stored in all",
            v["new_bytes"], v["delta_bytes"], v["delta_chunks"], v["delta_bytes_stored"], v["new_bytes_stored"]
        );
        if g > 0 {
            assert!(v["delta_chunks"].as_u64().unwrap() > 100, "generation {g}: {v}");
            let (deltas, stored) = (v["delta_bytes"].as_u64().unwrap(), v["delta_bytes_stored"].as_u64().unwrap());
            assert!(stored * 4 < deltas, "generation {g}: deltas of {deltas} bytes took {stored}: {v}");
        }
        generations.push((v["snapshot"].as_str().unwrap().to_string(), want));
    }
    drop(src);
    for (g, (id, want)) in generations.iter().enumerate() {
        let restored = work.join(format!("restored{g}"));
        repo.ok(&["restore".as_ref(), id.as_ref(), "--prepare".as_ref(), "--target".as_ref(), restored.as_os_str()]);
        let copy = Server::start(&work.join(format!("copy{g}")), &restored);
        assert_eq!(copy.checksums("shop"), *want, "generation {g}");
    }
    assert_eq!(repo.json(&["check", "--read-data"])["whole"], true);
}
