//! A producer's own compression taken off before anything else looks at
//! the stream: `pg_basebackup -Ft -z` or `--compress=client-zstd`,
//! `mysqldump | gzip`, `mariabackup … | zstd`. A compressed stream is
//! opaque: the same pages compress to other bytes every night, so nothing
//! deduplicates or becomes a delta. Decompressed, its tar or xbstream is
//! demuxed and chunked like any other; the snapshot records what was taken
//! off (`SnapshotFacts::compression`), and a restore gives the stream
//! decompressed (a server needs it so anyway).
//!
//! Maintained crates do the work: flate2 (gzip, several members as `gzip`
//! and `pigz` may write), zstd (the store's), lz4_flex (LZ4 frames) and
//! liblzma (xz). A damaged compressed stream is damaged input (exit 17),
//! one cut short truncated (exit 13), and bytes after its end damaged too:
//! the producer wrote something else.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// A whole-stream compression a producer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Lz4,
    Xz,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Xz => "xz",
        }
    }

    /// The compression a stream starting with `head` is in, by its magic.
    pub fn of(head: &[u8]) -> Option<Compression> {
        Some(match head {
            [0x1f, 0x8b, 0x08, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [0x04, 0x22, 0x4d, 0x18, ..] => Compression::Lz4,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            _ => return None,
        })
    }
}

/// The compressed input, shared: the decoder reads it, and once the
/// decoder is done the rest is read from here to its end.
#[derive(Clone)]
struct Shared(Arc<Mutex<Box<dyn Read + Send>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read(buf)
    }
}

/// `input` (whose first bytes are `c`'s magic) decompressed.
pub fn decoder(c: Compression, input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let shared = Shared(Arc::new(Mutex::new(input)));
    let inner: Box<dyn Read + Send> = match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(shared.clone())),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(shared.clone())?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(shared.clone())),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(shared.clone())),
    };
    Ok(Box::new(Decompressed { c, inner, rest: shared, done: false }))
}

struct Decompressed {
    c: Compression,
    inner: Box<dyn Read + Send>,
    rest: Shared,
    done: bool,
}

impl Read for Decompressed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let what = self.c.name();
        match self.inner.read(buf) {
            Ok(0) => {
                self.done = true;
                // Read the input to its end (a producer's exit status is known
                // only there): anything after the compressed stream is not it.
                let mut extra = [0u8; 512];
                let mut trailing = 0usize;
                loop {
                    match self.rest.read(&mut extra) {
                        Ok(0) => break,
                        Ok(n) => trailing += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if trailing > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the {what} stream is followed by bytes that are not part of it"),
                    ));
                }
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the {what} stream ends early ({e})")))
            }
            // A producer's failure (ProducerOutput) says so itself.
            Err(e) if e.get_ref().is_some_and(|i| i.is::<crate::producer::Failed>()) => Err(e),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("the {what} stream is damaged ({e})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compressed(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    fn read_all(c: Compression, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(c, Box::new(io::Cursor::new(bytes)))?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn each_is_known_by_its_magic_and_read_back_whole() {
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for c in [Compression::Gzip, Compression::Zstd, Compression::Lz4, Compression::Xz] {
            let z = compressed(c, &data);
            assert_eq!(Compression::of(&z), Some(c));
            assert!(read_all(c, z.clone()).unwrap() == data, "{c:?}");
            // Cut short: truncated; damaged in the middle: damaged; followed by more: damaged.
            let cut = read_all(c, z[..z.len() / 2].to_vec()).unwrap_err();
            assert!(matches!(cut.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData), "{c:?}: {cut}");
            let mut flipped = z.clone();
            let at = flipped.len() / 2;
            flipped[at] ^= 0x40;
            assert!(read_all(c, flipped).map(|d| d != data).unwrap_or(true), "{c:?}: a flipped byte went unnoticed");
            let mut more = z.clone();
            more.extend_from_slice(b"garbage after");
            let e = read_all(c, more).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{c:?}: {e}");
        }
        assert_eq!(Compression::of(b"ustar"), None);
    }
}
