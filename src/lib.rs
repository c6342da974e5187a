//! Sightline: a self-hosted appliance for live camera remote support.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that tests can start
//! the whole appliance in-process on ephemeral ports (see [`appliance::Appliance`]).

pub mod api;
pub mod appliance;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod files;
pub mod firewall;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod live;
pub mod media;
pub mod messaging;
pub mod metrics;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod webm;
