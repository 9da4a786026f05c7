//! A throwaway MariaDB server for the integration tests: its own data
//! directory, socket and loopback port, shut down on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One server-heavy test at a time: two cores, and MariaDB's bootstrap is not
/// made for neighbours.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A mariadbd on a temporary data directory; shut down on drop.
pub struct Server {
    pub datadir: PathBuf,
    pub socket: PathBuf,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl Server {
    /// A new, empty server in `dir`.
    pub fn init(dir: &Path) -> Server {
        let datadir = dir.join("data");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .expect("mariadb-install-db (scripts/test.sh installs mariadb-server)");
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        Server::start(dir, &datadir)
    }

    /// Starts a server on an existing data directory.
    pub fn start(dir: &Path, datadir: &Path) -> Server {
        let socket = dir.join("mysqld.sock");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--log-bin=mysql-bin", "--server-id=1"])
            .args(["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=32M", "--bind-address=127.0.0.1"])
            .arg(format!("--port={}", free_port()))
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.join("mysqld.err").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        let s = Server { datadir: datadir.to_path_buf(), socket, dir: dir.to_path_buf(), child };
        let start = Instant::now();
        while !s.sql_ok("SELECT 1") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "mariadbd did not start: {}",
                std::fs::read_to_string(dir.join("mysqld.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    pub fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults").arg(format!("--socket={}", self.socket.display())).args(["-uroot", "-N", "-B"]);
        c
    }

    pub fn sql_ok(&self, sql: &str) -> bool {
        self.client().arg("-e").arg(sql).stderr(Stdio::null()).output().map(|o| o.status.success()).unwrap_or(false)
    }

    pub fn sql(&self, sql: &str) -> String {
        let out = self.client().arg("-e").arg(sql).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// CHECKSUM TABLE of every table of `db`.
    pub fn checksums(&self, db: &str) -> BTreeMap<String, String> {
        let tables = self.sql(&format!("SELECT table_name FROM information_schema.tables WHERE table_schema='{db}'"));
        let list: Vec<String> = tables.lines().map(|t| format!("{db}.{t}")).collect();
        assert!(!list.is_empty());
        self.sql(&format!("CHECKSUM TABLE {} EXTENDED", list.join(", ")))
            .lines()
            .map(|l| {
                let mut f = l.split('\t');
                (f.next().unwrap().to_string(), f.next().unwrap().to_string())
            })
            .collect()
    }

    /// `dedupe binlog push --name NAME --binlog-dir <datadir>` into `repo`; its --json report.
    pub fn push_binlogs(&self, repo: &crate::Repo, name: &str) -> serde_json::Value {
        let dir = self.datadir.to_str().expect("a UTF-8 path");
        repo.json(&["binlog", "push", "--name", name, "--binlog-dir", dir])
    }

    pub fn backup_command(&self, tmp: &Path, parallel: u32) -> String {
        format!(
            "mariabackup --backup --stream=xbstream --parallel={parallel} --user=root --socket={} --target-dir={}",
            self.socket.display(),
            tmp.display()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("mariadb-admin")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "shutdown"])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
