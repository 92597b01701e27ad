//! The SFU media server: media workers that own str0m `Rtc`s, the sans-IO
//! forwarding core, configuration and metrics. `run` starts everything.

pub mod config;
pub mod forward;
pub mod metrics;
