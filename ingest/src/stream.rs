//! A raw byte stream (stdin, or a producer's stdout) as a one-file source.

use dedupe_store::{Body, Chunking, Entry, Event, Node, NodeKind, Result, Source};
use std::io::Read;

pub struct StreamSource {
    entry: Option<Entry>,
}

impl StreamSource {
    /// The stream becomes the file `filename` of the snapshot.
    pub fn new(reader: Box<dyn Read + Send>, filename: &str, chunking: Chunking) -> Self {
        let mut node = Node::new(filename, NodeKind::File);
        node.mode = 0o640;
        // SAFETY: getuid/getgid cannot fail.
        node.uid = unsafe { libc::getuid() };
        node.gid = unsafe { libc::getgid() };
        node.mtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        StreamSource { entry: Some(Entry { node, body: Body::Stream(reader), chunking }) }
    }
}

impl Source for StreamSource {
    fn next_event(&mut self) -> Result<Option<Event>> {
        Ok(self.entry.take().map(Event::Entry))
    }
}
