//! Coverage feedback on the stable toolchain: LLVM's SanitizerCoverage pass
//! (`-Cpasses=sancov-module` with inline 8-bit counters and comparison
//! tracing, all stable `-C` options; `scripts/fuzz.sh` sets them) calls the
//! hooks below, which libFuzzer would otherwise provide. Without those flags
//! nothing registers and the driver mutates blindly.
//!
//! Counters: one byte per instrumented edge, registered per module at start.
//! Comparisons: the constants the code compares against (magic bytes, type
//! codes, lengths) are kept in a small table the mutator writes into inputs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

static REGIONS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// Comparison tracing runs only while a target does.
static TRACING: AtomicBool = AtomicBool::new(false);
const WORDS: usize = 512;
static WORD_VALUES: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// Size in bytes (1, 2, 4, 8) of each word, 0 for an empty slot.
static WORD_SIZES: [AtomicUsize; WORDS] = [const { AtomicUsize::new(0) }; WORDS];

fn note(value: u64, size: usize) {
    // Small values are what byte flips find anyway.
    if value < 0x100 && size > 1 || value == u64::MAX {
        return;
    }
    let slot = (value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % WORDS;
    WORD_VALUES[slot].store(value, Relaxed);
    WORD_SIZES[slot].store(size, Relaxed);
}

#[cfg(not(feature = "libfuzzer"))]
mod hooks {
    use super::*;

    #[no_mangle]
    pub extern "C" fn __sanitizer_cov_8bit_counters_init(start: *mut u8, end: *mut u8) {
        if let Ok(mut r) = REGIONS.lock() {
            r.push((start as usize, end as usize - start as usize));
        }
    }

    #[no_mangle]
    pub extern "C" fn __sanitizer_cov_pcs_init(_beg: *const usize, _end: *const usize) {}

    macro_rules! const_cmp {
        ($name:ident, $t:ty, $size:expr) => {
            #[no_mangle]
            pub extern "C" fn $name(a: $t, _b: $t) {
                if TRACING.load(Relaxed) {
                    note(a as u64, $size);
                }
            }
        };
    }
    const_cmp!(__sanitizer_cov_trace_const_cmp1, u8, 1);
    const_cmp!(__sanitizer_cov_trace_const_cmp2, u16, 2);
    const_cmp!(__sanitizer_cov_trace_const_cmp4, u32, 4);
    const_cmp!(__sanitizer_cov_trace_const_cmp8, u64, 8);

    macro_rules! cmp {
        ($name:ident, $t:ty) => {
            #[no_mangle]
            pub extern "C" fn $name(_a: $t, _b: $t) {}
        };
    }
    cmp!(__sanitizer_cov_trace_cmp1, u8);
    cmp!(__sanitizer_cov_trace_cmp2, u16);
    cmp!(__sanitizer_cov_trace_cmp4, u32);
    cmp!(__sanitizer_cov_trace_cmp8, u64);

    /// `cases[0]` is the number of cases, `cases[1]` the operand's width in bits.
    #[no_mangle]
    pub unsafe extern "C" fn __sanitizer_cov_trace_switch(_value: u64, cases: *const u64) {
        if !TRACING.load(Relaxed) || cases.is_null() {
            return;
        }
        // SAFETY: LLVM passes a table of 2 + cases[0] u64s.
        let (n, bits) = unsafe { (*cases, *cases.add(1)) };
        for i in 0..n.min(64) as usize {
            // SAFETY: as above.
            note(unsafe { *cases.add(2 + i) }, (bits / 8).max(1) as usize);
        }
    }

    #[no_mangle]
    pub extern "C" fn __sanitizer_cov_trace_div4(_v: u32) {}
    #[no_mangle]
    pub extern "C" fn __sanitizer_cov_trace_div8(_v: u64) {}
    #[no_mangle]
    pub extern "C" fn __sanitizer_cov_trace_gep(_v: usize) {}
}

/// The counters of every instrumented module, and which (edge, hit-count
/// bucket) pairs have been seen.
pub struct Coverage {
    regions: Vec<(usize, usize)>,
    seen: Vec<u8>,
    pub edges: usize,
}

fn bucket(hits: u8) -> u8 {
    match hits {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

impl Coverage {
    pub fn new() -> Coverage {
        let regions = REGIONS.lock().map(|r| r.clone()).unwrap_or_default();
        let total = regions.iter().map(|r| r.1).sum();
        Coverage { regions, seen: vec![0; total], edges: 0 }
    }

    /// Instrumented edges (0 when the build has no coverage instrumentation).
    pub fn size(&self) -> usize {
        self.seen.len()
    }

    /// Clears the counters and starts comparison tracing: call right before the target.
    pub fn start(&self) {
        for &(start, len) in &self.regions {
            // SAFETY: LLVM registered [start, start + len) as counters that live for the whole program.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
        }
        TRACING.store(true, Relaxed);
    }

    /// Stops tracing; true if the run hit an edge or a hit-count bucket not seen before.
    pub fn finish(&mut self) -> bool {
        TRACING.store(false, Relaxed);
        let mut new = false;
        let mut at = 0;
        for &(start, len) in &self.regions {
            // SAFETY: as in `start`; other threads may still bump a counter, which only blurs a count.
            let counters = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
            for (i, &c) in counters.iter().enumerate() {
                if c != 0 {
                    let b = bucket(c);
                    let s = &mut self.seen[at + i];
                    if *s & b == 0 {
                        if *s == 0 {
                            self.edges += 1;
                        }
                        *s |= b;
                        new = true;
                    }
                }
            }
            at += len;
        }
        new
    }
}

impl Default for Coverage {
    fn default() -> Self {
        Coverage::new()
    }
}

/// The comparison constants seen so far, as (value, size in bytes).
pub fn words() -> Vec<(u64, usize)> {
    (0..WORDS)
        .filter_map(|i| {
            let size = WORD_SIZES[i].load(Relaxed);
            (size != 0).then(|| (WORD_VALUES[i].load(Relaxed), size))
        })
        .collect()
}
