//! Pure domain types and rules: state machines, ids, file names, tokens,
//! prices and the payment checks.
//! No I/O lives here.

pub mod alerts;
pub mod backoff;
pub mod chain;
pub mod filename;
pub mod ids;
pub mod options;
pub mod pace;
pub mod payments;
pub mod review;
pub mod status;
pub mod token;

pub use ids::*;
pub use status::*;
