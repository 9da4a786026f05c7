//! A counting allocator: live heap bytes, their peak since the last reset,
//! and the largest single request, so the driver can tell an input that
//! makes a parser allocate from a length field.
//!
//! A request above the hard cap is not attempted: the input being run is
//! written to the artifact path the driver gave and the process exits (71),
//! since a parser asking for that much would take the machine down first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static HARD_CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
static CURRENT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
static OOM_ARTIFACT: OnceLock<CString> = OnceLock::new();

#[global_allocator]
static GLOBAL: Counting = Counting;

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
    LARGEST.fetch_max(size, Relaxed);
}

fn check_cap(size: usize) {
    if size > HARD_CAP.load(Relaxed) {
        over_cap(size);
    }
}

/// Saves the current input and exits without allocating.
#[cold]
fn over_cap(size: usize) -> ! {
    // SAFETY: only libc calls on buffers that live for the whole call; the
    // input buffer is the driver's, allocated once and never reallocated.
    unsafe {
        let msg = b"dedupe-fuzz: an allocation above the hard memory cap: input saved to ";
        libc::write(2, msg.as_ptr().cast(), msg.len());
        if let Some(path) = OOM_ARTIFACT.get() {
            let fd = libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, 0o644);
            if fd >= 0 {
                libc::write(fd, CURRENT_PTR.load(Relaxed).cast(), CURRENT_LEN.load(Relaxed));
                libc::close(fd);
            }
            let p = path.as_bytes();
            libc::write(2, p.as_ptr().cast(), p.len());
        }
        let mut digits = [0u8; 24];
        let mut n = size;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let tail = b" (bytes asked: ";
        libc::write(2, tail.as_ptr().cast(), tail.len());
        libc::write(2, digits[i..].as_ptr().cast(), digits.len() - i);
        libc::write(2, b")\n".as_ptr().cast(), 2);
        libc::_exit(71)
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_cap(layout.size());
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_cap(layout.size());
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_cap(new_size);
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Relaxed)
}

/// Starts a measurement: the peak becomes what is live now.
pub fn reset() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    LARGEST.store(0, Relaxed);
    live
}

/// (peak live bytes, largest single request) since `reset`.
pub fn measured() -> (usize, usize) {
    (PEAK.load(Relaxed), LARGEST.load(Relaxed))
}

/// Requests above `cap` bytes exit the process after saving the input to `artifact`.
pub fn set_hard_cap(cap: usize, artifact: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let _ = OOM_ARTIFACT.set(CString::new(artifact.as_os_str().as_bytes()).expect("no NUL in the artifact path"));
    HARD_CAP.store(cap, Relaxed);
}

/// The input the target is running on, for the hard-cap exit. The buffer
/// must stay allocated (and not move) while it is registered.
pub fn set_current(input: &[u8]) {
    CURRENT_PTR.store(input.as_ptr().cast_mut(), Relaxed);
    CURRENT_LEN.store(input.len(), Relaxed);
}
