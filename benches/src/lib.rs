//! The Criterion suite lives in `benches/`; this library is empty on purpose.
