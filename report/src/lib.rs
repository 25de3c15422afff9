//! couic-report: receives the reports couic daemons POST to their webhook,
//! adds them up per period, and notifies Discord and/or a generic JSON
//! webhook when a period was busy enough.
//!
//! Plain types hold the logic and are tested without a runtime: the
//! config, the [`period::Period`] and its [`aggregator::Aggregator`]
//! schedule, the dedup window, the top-N ranking, the message formats and
//! the retry policy. Around them, thin shells: the actix handlers
//! ([`server`]), the aggregator thread ([`worker`]) and one thread per
//! notification destination ([`delivery`]).

pub mod aggregator;
pub mod config;
pub mod dedup;
pub mod delivery;
pub mod discord;
pub mod metrics;
pub mod network;
pub mod notify;
pub mod period;
pub mod queue;
pub mod secret;
pub mod server;
pub mod thresholds;
pub mod topn;
pub mod webhook;
pub mod worker;
