//! Splitting a byte stream into chunks.
//!
//! The caller picks the chunking per file: content-defined (FastCDC 2020)
//! for data that shifts, such as streams and dumps, or fixed-size blocks for
//! files that are arrays of pages updated in place. The choice is not
//! recorded in the format: a reader only ever sees a list of chunk ids.
//!
//! We drive `fastcdc::v2020::FastCDC::cut` over our own buffer rather than use
//! the crate's `StreamCDC`, which shifts its whole buffer and zero-fills it
//! after every chunk; here the buffer is compacted once per refill.

use std::io::{self, Read};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Chunking {
    /// FastCDC 2020, normalization level 1, seed 0.
    FastCdc { min: u32, avg: u32, max: u32 },
    /// Fixed-size blocks; the last block of a stream may be shorter.
    /// `level`: the zstd level these blocks are compressed at when it is not
    /// the repository's (a page format that compresses better at another
    /// one, format-spec §7.4); `backup --compression` overrides it.
    Fixed {
        size: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<i32>,
    },
}

impl Chunking {
    /// The default for opaque streams: 256 KiB / 1 MiB / 4 MiB (see format-spec).
    pub const DEFAULT_CDC: Chunking = Chunking::FastCdc { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 };

    fn max(&self) -> usize {
        match *self {
            Chunking::FastCdc { max, .. } => max as usize,
            Chunking::Fixed { size, .. } => size as usize,
        }
    }
}

/// Chunk boundaries of data already in memory (a demuxed piece): the same
/// cuts a `Chunker` makes, without copying the data into a read buffer first.
pub fn split(data: &[u8], chunking: Chunking) -> Vec<&[u8]> {
    match chunking {
        Chunking::Fixed { size, .. } => data.chunks(size.max(1) as usize).collect(),
        Chunking::FastCdc { min, avg, max } => {
            fastcdc::v2020::FastCDC::new(data, min, avg, max).map(|c| &data[c.offset..c.offset + c.length]).collect()
        }
    }
}

/// An iterator of chunks read from `R`. Each chunk is an owned buffer, since
/// it travels to a worker thread next.
pub struct Chunker<R> {
    source: R,
    chunking: Chunking,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    pub fn new(source: R, chunking: Chunking) -> Self {
        let cap = (chunking.max() * 4).max(1 << 20);
        Chunker { source, chunking, buf: vec![0; cap], start: 0, end: 0, eof: false }
    }

    /// Reads until the buffer holds at least one maximal chunk or the input ends.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunking.max();
        if self.end - self.start >= max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() && !self.eof {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next_len(&self) -> usize {
        let avail = &self.buf[self.start..self.end];
        match self.chunking {
            Chunking::Fixed { size, .. } => avail.len().min(size as usize),
            Chunking::FastCdc { min, avg, max } => {
                if avail.len() <= min as usize {
                    return avail.len();
                }
                let cdc = fastcdc::v2020::FastCDC::new(avail, min, avg, max);
                let (_, len) = cdc.cut(0, avail.len());
                len
            }
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.start == self.end {
            return None;
        }
        let len = self.next_len();
        let chunk = self.buf[self.start..self.start + len].to_vec();
        self.start += len;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(data: &[u8], c: Chunking) -> Vec<usize> {
        Chunker::new(data, c).map(|c| c.unwrap().len()).collect()
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(lens(&[], Chunking::DEFAULT_CDC).is_empty());
        assert!(lens(&[], Chunking::Fixed { size: 16384, level: None }).is_empty());
    }

    #[test]
    fn one_byte_is_one_chunk() {
        assert_eq!(lens(&[7], Chunking::DEFAULT_CDC), vec![1]);
    }

    #[test]
    fn fixed_blocks_split_at_multiples() {
        let data = vec![1u8; 16384 * 3 + 5];
        assert_eq!(lens(&data, Chunking::Fixed { size: 16384, level: None }), vec![16384, 16384, 16384, 5]);
    }

    #[test]
    fn cdc_chunks_respect_bounds_and_cover_input() {
        let mut x: u64 = 1;
        let data: Vec<u8> = (0..20_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let l = lens(&data, Chunking::DEFAULT_CDC);
        assert_eq!(l.iter().sum::<usize>(), data.len());
        for &n in &l[..l.len() - 1] {
            assert!((256 * 1024..=4 * 1024 * 1024).contains(&n), "{n}");
        }
        // Same cut points as the reference implementation over a slice.
        let reference: Vec<usize> =
            fastcdc::v2020::FastCDC::new(&data, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024).map(|c| c.length).collect();
        assert_eq!(l, reference);
    }

    #[test]
    fn split_cuts_like_the_chunker() {
        let data: Vec<u8> = (0..9_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for c in [Chunking::DEFAULT_CDC, Chunking::Fixed { size: 32768, level: None }] {
            let a: Vec<usize> = split(&data, c).iter().map(|s| s.len()).collect();
            assert_eq!(a, lens(&data, c));
        }
        assert!(split(&[], Chunking::DEFAULT_CDC).is_empty());
    }

    #[test]
    fn zero_run_cuts_at_max() {
        let data = vec![0u8; 9 * 1024 * 1024];
        assert_eq!(lens(&data, Chunking::DEFAULT_CDC), vec![4 << 20, 4 << 20, 1 << 20]);
    }
}
