//! # Progress of a long measurement
//!
//! `trinity run` and `trinity bench-model` take minutes; [`Progress`] is how
//! they say which step they are on without knowing who listens (indicatif's
//! spinner or plain stderr lines in the binary, [`Silent`] in tests).

/// Progress reporting (indicatif in the binary, nothing in tests).
pub trait Progress {
    /// A new step.
    fn step(&self, message: &str);
    /// Something that failed without failing the run (a baseline or ceiling
    /// that could not be measured); a step unless the reporter says otherwise.
    fn warning(&self, message: &str) {
        self.step(message);
    }
}

/// No progress output.
#[derive(Debug)]
pub struct Silent;
impl Progress for Silent {
    fn step(&self, _: &str) {}
}
