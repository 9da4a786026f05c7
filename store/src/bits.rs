//! A fixed-size set of small numbers (index record positions, pack
//! numbers) as one bit each, shared between threads without a lock: a
//! backup remembers which index records it deduplicated against in one bit
//! a record, not in a set of 32-byte ids, so the memory it needs grows by
//! an eighth of a byte per chunk of the repository.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Bits {
    words: Vec<AtomicU64>,
}

impl Bits {
    pub fn new(len: usize) -> Bits {
        Bits { words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect() }
    }

    pub fn set(&self, i: usize) {
        self.words[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
    }

    pub fn clear(&self, i: usize) {
        self.words[i / 64].fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
    }

    pub fn get(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
    }

    /// Every number in the set, in order.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, w)| {
            let mut x = w.load(Ordering::Relaxed);
            std::iter::from_fn(move || {
                if x == 0 {
                    return None;
                }
                let b = x.trailing_zeros() as usize;
                x &= x - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_clears_and_lists_in_order() {
        let b = Bits::new(200);
        for i in [0, 63, 64, 130, 199] {
            b.set(i);
        }
        b.clear(64);
        assert!(b.get(63) && !b.get(64) && !b.get(500));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 63, 130, 199]);
    }
}
