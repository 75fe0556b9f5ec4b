//! The kmodlike daemon and its client, as a library shared by the two programs:
//!
//! - `kmodlike` ([`daemon`]): hosts modules with a [`kmodlike::Loader`], survives their crashes,
//!   and serves the control socket ([`server`], [`service`]);
//! - `kmodctl` ([`ctl`]): drives it over that socket ([`client`]).
//!
//! The protocol is Varlink ([`varlink`]); its one interface, `io.kmodlike.Loader`, is documented
//! by the commented interface file `src/varlink/io.kmodlike.Loader.varlink`, which the daemon also
//! serves to clients through `org.varlink.service.GetInterfaceDescription`.
#![warn(missing_docs)]

pub mod bridge;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect_errors;
pub mod ctl;
pub mod daemon;
pub mod generate;
pub mod journal;
pub mod man_sections;
pub mod metrics;
pub mod module_completion;
pub mod notify;
pub mod render;
pub mod server;
pub mod service;
pub mod socket;
pub mod state;
pub mod stdout;
pub mod times;
pub mod varlink;
