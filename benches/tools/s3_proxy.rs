//! The test suite's fault proxy (`tests/support/proxy.rs`) as a program, for
//! `benches/s3-vs-rustic.sh`: adds a delay to every request sent to a
//! loopback S3 server, as a distant region would.
//!
//!   s3-proxy UPSTREAM_PORT DELAY_MS      # prints the port it listens on, runs until killed

use dedupe_suite::proxy::{Faults, Proxy};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(upstream), Some(delay)) =
        (args.get(1).and_then(|a| a.parse().ok()), args.get(2).and_then(|a| a.parse().ok()))
    else {
        eprintln!("usage: s3-proxy UPSTREAM_PORT DELAY_MS");
        std::process::exit(2);
    };
    let proxy = Proxy::start(upstream, Faults { delay: Duration::from_millis(delay), ..Faults::default() });
    println!("{}", proxy.port);
    loop {
        std::thread::park();
    }
}
