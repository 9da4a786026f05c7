//! A small HTTP/1.1 proxy in front of the loopback S3 server, for what the
//! server will not do on its own: answer 503 now and then, refuse writes
//! (a bucket policy without `s3:PutObject`), and add latency (the netem
//! qdisc does not work on these machines). It forwards real requests to a
//! real server; nothing is answered from a script but the faults.
//!
//! Connections are kept alive on both sides (one upstream connection per
//! client connection), as a client and a server would keep them; bodies are
//! framed by `Content-Length`, and an answer without one ends the connection.

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
    client.set_nodelay(true)?;
    let mut from_client = BufReader::with_capacity(1 << 16, client.try_clone()?);
    let mut client = client;
    // One upstream connection per client connection, kept while both are.
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let Some(Head { lines, method, length, close, .. }) = read_head(&mut from_client)? else { return Ok(()) };
        let mut body = vec![0u8; length.unwrap_or(0) as usize];
        from_client.read_exact(&mut body)?;
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
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            );
            write!(
                client,
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            )?;
            return Ok(());
        }
        if upstream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", upstream_port))?;
            s.set_nodelay(true)?;
            upstream = Some((s.try_clone()?, BufReader::with_capacity(1 << 16, s)));
        }
        let (up, from_up) = upstream.as_mut().expect("connected");
        up.write_all(&lines)?;
        up.write_all(&body)?;
        let Some(answer) = read_head(from_up)? else { return Ok(()) };
        client.write_all(&answer.lines)?;
        let status_has_body = !answer.method.starts_with("HTTP/1.1 1")
            && !answer.method.starts_with("HTTP/1.1 204")
            && !answer.method.starts_with("HTTP/1.1 304");
        match answer.length {
            _ if method == "HEAD" || !status_has_body => {}
            _ if answer.chunked => copy_chunked(from_up, &mut client)?,
            Some(n) => {
                let copied = std::io::copy(&mut from_up.by_ref().take(n), &mut client)?;
                if copied != n {
                    return Ok(());
                }
            }
            None => {
                // Until close: pass the rest on and end the connection.
                std::io::copy(from_up, &mut client)?;
                return Ok(());
            }
        }
        if close || answer.close {
            return Ok(());
        }
    }
}

/// A request or response head: its bytes as they go on, the first word
/// (method; for a response, the whole status line), the body length, and
/// whether the sender closes after it.
struct Head {
    lines: Vec<u8>,
    method: String,
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut head = Head { lines: Vec::new(), method: String::new(), length: None, chunked: false, close: false };
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if head.method.is_empty() {
            head.method = if line.starts_with("HTTP/") {
                line.trim_end().to_string()
            } else {
                line.split(' ').next().unwrap_or_default().to_string()
            };
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            head.length = v.trim().parse().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            assert!(head.method.starts_with("HTTP/"), "the proxy does not forward chunked request bodies");
            head.chunked = true;
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            head.close = true;
        }
        head.lines.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            return Ok(Some(head));
        }
    }
}

/// Passes a chunked body on as it is: size lines, chunks, the last chunk and its trailer.
fn copy_chunked(from: &mut impl BufRead, to: &mut impl Write) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        from.read_line(&mut line)?;
        to.write_all(line.as_bytes())?;
        let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                let mut t = String::new();
                if from.read_line(&mut t)? == 0 || t == "\r\n" {
                    to.write_all(t.as_bytes())?;
                    return Ok(());
                }
                to.write_all(t.as_bytes())?;
            }
        }
        std::io::copy(&mut from.by_ref().take(size + 2), to)?;
    }
}
