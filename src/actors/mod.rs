//! The daemon's actors. Each owns one part of the state; they talk only
//! through the messages of their own file and `messages.rs`.

pub mod expirer;
pub mod map_writer;
pub mod messages;
pub mod set_reloader;
