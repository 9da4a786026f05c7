//! Byte-level mutations, as AFL and libFuzzer make them: bit flips, byte
//! and word overwrites with boundary values, small arithmetic on length
//! fields, cuts, insertions, deletions, duplicated ranges, splices with
//! another corpus input, and comparison constants the code was seen to test.

/// splitmix64: seeded, so a run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

fn write_le(buf: &mut [u8], at: usize, value: u64, size: usize) {
    let bytes = value.to_le_bytes();
    let n = size.min(buf.len() - at);
    buf[at..at + n].copy_from_slice(&bytes[..n]);
}

fn read_le(buf: &[u8], at: usize, size: usize) -> u64 {
    let mut b = [0u8; 8];
    let n = size.min(buf.len() - at);
    b[..n].copy_from_slice(&buf[at..at + n]);
    u64::from_le_bytes(b)
}

/// Mutates `buf` in place with 1 to 8 stacked mutations, keeping it at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, other: &[u8], words: &[(u64, usize)], max_len: usize) {
    let rounds = 1 << rng.below(4);
    for _ in 0..rounds {
        one(rng, buf, other, words, max_len);
    }
    buf.truncate(max_len);
}

fn one(rng: &mut Rng, buf: &mut Vec<u8>, other: &[u8], words: &[(u64, usize)], max_len: usize) {
    if buf.is_empty() {
        let n = 1 + rng.below(64);
        buf.extend((0..n).map(|_| rng.next_u64() as u8));
        return;
    }
    let len = buf.len();
    match rng.below(14) {
        // One bit.
        0 | 1 => {
            let at = rng.below(len);
            buf[at] ^= 1 << rng.below(8);
        }
        // A random byte.
        2 => {
            let at = rng.below(len);
            buf[at] = rng.next_u64() as u8;
        }
        // A boundary value in a 1/2/4/8-byte little- or big-endian field.
        3 | 4 => {
            let size = 1 << rng.below(4);
            let at = rng.below(len);
            let mut v = INTERESTING[rng.below(INTERESTING.len())];
            if rng.chance(2) {
                v = v.swap_bytes() >> (64 - 8 * size);
            }
            write_le(buf, at, v, size);
        }
        // Small arithmetic on a field: lengths one off, offsets a page off.
        5 => {
            let size = [1, 2, 4, 8][rng.below(4)];
            let at = rng.below(len);
            let delta = match rng.below(3) {
                0 => 1 + rng.below(16) as u64,
                1 => 1 << rng.below(24),
                _ => len as u64,
            };
            let v = read_le(buf, at, size);
            let v = if rng.chance(2) { v.wrapping_add(delta) } else { v.wrapping_sub(delta) };
            write_le(buf, at, v, size);
        }
        // Cut the tail.
        6 => {
            let keep = rng.below(len);
            buf.truncate(keep);
        }
        // Delete a range.
        7 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            buf.drain(at..at + n);
        }
        // Insert random bytes or a run of one byte.
        8 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(32);
            let fill: Vec<u8> = if rng.chance(2) {
                vec![rng.next_u64() as u8; n]
            } else {
                (0..n).map(|_| rng.next_u64() as u8).collect()
            };
            buf.splice(at..at, fill);
        }
        // Duplicate or move a range within the input.
        9 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(512));
            let piece = buf[from..from + n].to_vec();
            if rng.chance(2) {
                let at = rng.below(len + 1);
                buf.splice(at..at, piece);
            } else {
                let at = rng.below(len - n + 1);
                buf[at..at + n].copy_from_slice(&piece);
            }
        }
        // Splice: our head, another input's tail (or a piece of it inserted).
        10 | 11 if !other.is_empty() => {
            let from = rng.below(other.len());
            if rng.chance(2) {
                let at = rng.below(len + 1);
                buf.truncate(at);
                buf.extend_from_slice(&other[from..]);
            } else {
                let n = 1 + rng.below((other.len() - from).min(256));
                let at = rng.below(len + 1);
                buf.splice(at..at, other[from..from + n].iter().copied());
            }
        }
        // A constant the code compared against, over or into the input.
        12 | 13 if !words.is_empty() => {
            let (v, size) = words[rng.below(words.len())];
            let v = if rng.chance(4) { v.swap_bytes() >> (64 - 8 * size) } else { v };
            let bytes = &v.to_le_bytes()[..size];
            let at = rng.below(len + 1);
            if rng.chance(2) || at + size > len {
                buf.splice(at..at, bytes.iter().copied());
            } else {
                buf[at..at + size].copy_from_slice(bytes);
            }
        }
        _ => {
            let at = rng.below(len);
            buf[at] = buf[at].wrapping_add(1 + rng.below(3) as u8);
        }
    }
    if buf.len() > max_len {
        buf.truncate(max_len);
    }
}
