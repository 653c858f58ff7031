//! Mandate's authority model, with no I/O: who may do what, and why.
//!
//! - [`identity`]: identities, their chains up to a human, effective status.
//! - [`grant`]: delegation grants, pattern coverage, attenuation, signatures.
//! - [`policy`]: Cedar policy sets with `@id` names, validation, fail-closed
//!   evaluation.
//! - [`tool_call`]: a coding agent's tool call as an action, a resource and
//!   a Cedar context.
//!
//! The clock, randomness and keys are the caller's: every function here is a
//! pure function of its arguments, so decisions replay exactly from the log.

pub mod budget;
pub mod decision;
pub mod grant;
pub mod identity;
pub mod pattern;
pub mod policy;
pub mod tool_call;
pub mod wire;
