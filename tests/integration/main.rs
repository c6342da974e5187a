//! The in-process integration tests, one binary with a file per topic (as garage lays
//! them out): each starts the whole appliance on loopback through [`common`].

mod common;

mod api_description;
mod certificates;
mod data;
mod firewall;
mod identity;
mod live;
mod messaging;
mod operations;
mod reports;
mod store;
mod toolkit;
