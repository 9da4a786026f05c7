//! `--limit-upload` / `--limit-download`: a backend that paces another.
//!
//! Each direction keeps the moment its line is next free; a transfer of n
//! bytes books n / rate seconds from then on and waits for its turn (before
//! an upload, after a download, whose size is only known then). Over any
//! stretch longer than one object the rate holds, whatever the number of
//! threads transferring at once.

use super::{Backend, ObjectKind};
use crate::error::Result;
use bytes::Bytes;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Limited {
    inner: Arc<dyn Backend>,
    up: Option<Pace>,
    down: Option<Pace>,
}

struct Pace {
    bytes_per_second: u64,
    free_at: Mutex<Instant>,
}

impl Pace {
    fn new(bytes_per_second: u64) -> Pace {
        Pace { bytes_per_second: bytes_per_second.max(1), free_at: Mutex::new(Instant::now()) }
    }

    fn book(&self, bytes: usize) {
        let wait = {
            let mut free_at = self.free_at.lock().expect("not poisoned");
            let now = Instant::now();
            let start = (*free_at).max(now);
            *free_at = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
            start - now
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

impl Limited {
    /// `inner` itself when neither limit is set.
    pub fn wrap(inner: Arc<dyn Backend>, upload: Option<u64>, download: Option<u64>) -> Arc<dyn Backend> {
        if upload.is_none() && download.is_none() {
            return inner;
        }
        Arc::new(Limited { inner, up: upload.map(Pace::new), down: download.map(Pace::new) })
    }

    fn sent(&self, n: usize) {
        if let Some(p) = &self.up {
            p.book(n)
        }
    }

    fn received(&self, n: usize) {
        if let Some(p) = &self.down {
            p.book(n)
        }
    }
}

impl Backend for Limited {
    fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.sent(bytes.len());
        self.inner.put(name, bytes)
    }

    fn create(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.sent(bytes.len());
        self.inner.create(name, bytes)
    }

    fn get(&self, name: &str) -> Result<Bytes> {
        let b = self.inner.get(name)?;
        self.received(b.len());
        Ok(b)
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let b = self.inner.get_range(name, range)?;
        self.received(b.len());
        Ok(b)
    }

    fn get_ranges(&self, wanted: &[(String, Range<u64>)]) -> Result<Vec<Bytes>> {
        let all = self.inner.get_ranges(wanted)?;
        self.received(all.iter().map(|b| b.len()).sum());
        Ok(all)
    }

    fn get_many(&self, names: &[String]) -> Vec<Result<Bytes>> {
        let all = self.inner.get_many(names);
        self.received(all.iter().filter_map(|b| b.as_ref().ok()).map(|b| b.len()).sum());
        all
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        self.inner.list(kind)
    }

    fn list_after(&self, kind: ObjectKind, after: &str) -> Result<Vec<(String, u64)>> {
        self.inner.list_after(kind, after)
    }

    fn list_dated(&self, kind: ObjectKind) -> Result<Vec<(String, u64, std::time::SystemTime)>> {
        self.inner.list_dated(kind)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn remove_stale_temporaries(&self, before: std::time::SystemTime) -> Result<u64> {
        self.inner.remove_stale_temporaries(before)
    }

    fn sync(&self, names: &[String]) -> Result<()> {
        self.inner.sync(names)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ObjectStoreBackend;

    #[test]
    fn uploads_keep_to_the_rate() {
        let inner: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory().unwrap());
        let b = Limited::wrap(inner, Some(1 << 20), None);
        let started = Instant::now();
        // 1.5 MiB at 1 MiB/s: the first 512 KiB go at once, the rest waits its turn.
        for i in 0..3 {
            b.put(&format!("index/{i}"), Bytes::from(vec![0u8; 512 << 10])).unwrap();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(950), "{took:?}");
        // Downloads are not limited.
        let started = Instant::now();
        b.get("index/0").unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
    }
}
