//! A small HTTP/1.1 proxy in front of the loopback S3 server, for what the
//! server will not do on its own: answer 503 now and then, refuse writes
//! (a bucket policy without `s3:PutObject`), and add latency (the netem
//! qdisc does not work on these machines). It forwards real requests to a
//! real server; nothing is answered from a script but the faults.
//!
//! One request per connection: the request goes upstream with
//! `Connection: close`, and the answer is copied back until the server
//! closes, so the proxy never parses a response.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added before each request is forwarded.
    pub delay: Duration,
    /// Every n-th request is answered `503 Slow Down` instead (0: never).
    pub fail_every: u64,
    /// Writes (PUT, POST, DELETE) are answered `403 Access Denied`.
    pub deny_writes: bool,
}

pub struct Proxy {
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream_port`.
    pub fn start(upstream_port: u16, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let (requests, failed, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (r, f, s) = (requests.clone(), failed.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (faults, r, f) = (faults.clone(), r.clone(), f.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream_port, &faults, &r, &f);
                });
            }
        });
        Proxy { port, requests, failed, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    faults: &Faults,
    requests: &AtomicU64,
    failed: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, client.try_clone()?);
    let mut client = client;
    // The request head, with Connection rewritten to close.
    let mut head = Vec::new();
    let mut method = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if method.is_empty() {
            method = line.split(' ').next().unwrap_or_default().to_string();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            panic!("the proxy does not forward chunked request bodies");
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
    std::thread::sleep(faults.delay);
    let write = matches!(method.as_str(), "PUT" | "POST" | "DELETE");
    let canned = if faults.deny_writes && write {
        Some(("403 Forbidden", "AccessDenied", "Access Denied"))
    } else if faults.fail_every > 0 && n.is_multiple_of(faults.fail_every) {
        Some(("503 Slow Down", "SlowDown", "Please reduce your request rate."))
    } else {
        None
    };
    if let Some((status, code, message)) = canned {
        failed.fetch_add(1, Ordering::Relaxed);
        let xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>");
        write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(&head)?;
    upstream.write_all(&body)?;
    std::io::copy(&mut upstream, &mut client)?;
    Ok(())
}
