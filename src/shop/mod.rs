//! The shop's workflows, one module per thing it does. Each is a typed
//! function that owns its transaction and returns what happened, so that a
//! handler only parses, calls and renders, and an actor only schedules,
//! calls and messages. Pure rules live in `domain`, SQL in `db`.

pub mod checkout;
pub mod fulfilment;
pub mod options;
pub mod outcome;
pub mod refund;
pub mod review;
