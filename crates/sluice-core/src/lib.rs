//! sluice core: what every protocol adapter shares — tokens, the store,
//! the hash-chained audit log, the protocol-neutral command model, and the
//! `Core` facade the adapters call.

pub mod audit;
pub mod command;
pub mod connection;
pub mod core;
pub mod delegation;
pub mod detect;
pub mod identity;
pub mod journal;
pub mod mask;
pub mod masking;
pub mod notify;
pub mod policy;
pub mod recording;
pub mod review;
pub mod reviews;
pub mod secret;
pub mod store;
pub mod stream_mask;
pub mod time;
pub mod token;

pub use crate::core::{
    AuthError, Core, CoreError, Credential, Grant, IssueRequest, OpenError, PolicyConfig,
    SessionHandle, TokenWatch, READ_ONLY_ROLE,
};
pub use command::{Class, Classification, Command, CommandOutcome, Flags};
pub use connection::{Connection, TargetTls};
pub use policy::{Decision, Effect, PolicyEngine, PolicySource};
pub use secret::Secret;
pub use store::{Store, StoreError};
