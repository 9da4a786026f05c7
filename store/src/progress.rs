//! Progress of a long operation as one small trait: the store (and ingest's
//! restore sinks) report through it, the command line draws it. Every method
//! has a default that ignores the report, so a caller with nothing to show
//! passes `&()`.

pub trait Progress: Sync {
    /// How much there is to do, once known: bytes, or packs for a repair.
    fn total(&self, _n: u64) {}
    /// How much is done so far (a running total, not an increment).
    fn done(&self, _n: u64) {}
    /// `n` more bytes of new data were stored (a backup's "new").
    fn stored(&self, _n: u64) {}
    /// Everything is stored; the manifest that commits it is being written.
    fn committing(&self) {}
}

/// Shows nothing.
impl Progress for () {}
