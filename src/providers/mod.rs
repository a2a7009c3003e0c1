//! Third-party providers, each a trait with a production implementation and
//! an embedded one that needs no account. Production and embedded share every
//! line above the wire call; tests point the real clients at local fakes.

pub mod mail;
pub mod payments;
pub mod restoration;
