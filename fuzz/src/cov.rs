//! Coverage feedback on the stable toolchain: LLVM's SanitizerCoverage pass
//! (`-Cpasses=sancov-module` with inline 8-bit counters and comparison
//! tracing, all stable `-C` options; `scripts/fuzz.sh` sets them) calls the
//! hooks in `src/hooks/sancov.c`, which libFuzzer would otherwise provide.
//! Without those flags nothing registers and the driver mutates blindly.
//!
//! Counters: one byte per instrumented edge, registered per module at start.
//! Comparisons: the constants the code compares against (magic bytes, type
//! codes, lengths) are kept in a small table the mutator writes into inputs.

#[cfg(not(feature = "libfuzzer"))]
mod hooks {
    extern "C" {
        pub fn dedupe_fuzz_regions() -> usize;
        pub fn dedupe_fuzz_region(i: usize, start: *mut *mut u8, len: *mut usize);
        pub fn dedupe_fuzz_tracing(on: i32);
        pub fn dedupe_fuzz_word(i: usize, value: *mut u64) -> u8;
    }
}

/// Comparison-constant slots in `src/hooks/sancov.c`.
#[cfg(not(feature = "libfuzzer"))]
const WORDS: usize = 512;

fn regions() -> Vec<(usize, usize)> {
    #[cfg(not(feature = "libfuzzer"))]
    {
        // SAFETY: the hooks registered these ranges of counters at start; they live for the program.
        (0..unsafe { hooks::dedupe_fuzz_regions() })
            .map(|i| {
                let (mut start, mut len) = (std::ptr::null_mut(), 0usize);
                // SAFETY: `i` is below the count, and both out-pointers are valid.
                unsafe { hooks::dedupe_fuzz_region(i, &mut start, &mut len) };
                (start as usize, len)
            })
            .collect()
    }
    #[cfg(feature = "libfuzzer")]
    Vec::new()
}

fn tracing(on: bool) {
    #[cfg(not(feature = "libfuzzer"))]
    // SAFETY: sets a flag.
    unsafe {
        hooks::dedupe_fuzz_tracing(on as i32)
    };
    #[cfg(feature = "libfuzzer")]
    let _ = on;
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
        let regions = regions();
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
        tracing(true);
    }

    /// Stops tracing; true if the run hit an edge or a hit-count bucket not seen before.
    pub fn finish(&mut self) -> bool {
        tracing(false);
        let mut new = false;
        let mut at = 0;
        for &(start, len) in &self.regions {
            // SAFETY: as in `start`; other threads may still bump a counter, which only blurs a count.
            let counters = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
            // Most counters are zero: skip them eight at a time.
            let mut i = 0;
            while i < len {
                if i + 8 <= len && counters[i..i + 8] == [0; 8] {
                    i += 8;
                    continue;
                }
                let c = counters[i];
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
                i += 1;
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
    #[cfg(not(feature = "libfuzzer"))]
    {
        (0..WORDS)
            .filter_map(|i| {
                let mut value = 0u64;
                // SAFETY: `i` is below the slot count and `value` is valid.
                let size = unsafe { hooks::dedupe_fuzz_word(i, &mut value) };
                (size != 0).then_some((value, size as usize))
            })
            .collect()
    }
    #[cfg(feature = "libfuzzer")]
    Vec::new()
}
