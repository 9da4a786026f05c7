//! Ctrl-C and SIGTERM: one line on stderr saying what was and was not
//! committed, then exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports
//! them. Commands say what an interruption would leave behind as they go
//! (`say`); until one does, nothing was changed.
//!
//! signal-hook's iterator runs the handler on a thread of its own, so it
//! may print and exit; the default handlers would end the process silently.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::borrow::Cow;
use std::sync::Mutex;

static LEFT: Mutex<Cow<'static, str>> = Mutex::new(Cow::Borrowed("nothing was changed"));
/// Set as the handler starts: the process is about to end with the signal's code.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// What to undo before the process ends (`mount` unmounts).
static BEFORE_EXIT: Mutex<Option<Box<dyn FnOnce() + Send>>> = Mutex::new(None);
/// The terminal's settings from before the process started, restored on
/// the way out: a password prompt turns echo off, and an interrupted prompt
/// must not leave the user's shell silent.
static TERMINAL: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Starts listening; call once, first thing.
pub(crate) fn install() {
    // SAFETY: tcgetattr writes the termios it is given; it fails harmlessly on a non-terminal.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0 {
            *TERMINAL.lock().expect("not poisoned") = Some(t);
        }
    }
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else { return };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(undo) = BEFORE_EXIT.lock().ok().and_then(|mut b| b.take()) {
                undo();
            }
            let left = LEFT.lock().map(|l| l.to_string()).unwrap_or_default();
            let name = if sig == SIGINT { "interrupted" } else { "terminated" };
            if let Some(t) = TERMINAL.lock().ok().and_then(|t| *t) {
                // SAFETY: restores settings tcgetattr gave us for the same descriptor.
                unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
                eprintln!();
            }
            eprintln!("dedupe: {name}: {left}");
            std::process::exit(128 + sig);
        }
    });
}

/// Blocks for good once an interruption is being handled: what it undid
/// (an unmount) may let the command return, and the process must still end
/// with the signal's code, which the handler's thread is about to do.
pub(crate) fn wait_if_interrupted() {
    while INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Runs `undo` if the process is interrupted from now on, before it ends.
pub(crate) fn before_exit(undo: impl FnOnce() + Send + 'static) {
    if let Ok(mut b) = BEFORE_EXIT.lock() {
        *b = Some(Box::new(undo));
    }
}

/// What an interruption from now on leaves behind, in a few words.
pub(crate) fn say(left: impl Into<Cow<'static, str>>) {
    if let Ok(mut l) = LEFT.lock() {
        *l = left.into();
    }
}
