//! What the separate comet, logic and job processes share: Redis access with deadlines, the
//! comet registry (goim's discovery, on Redis TTL keys), the Kafka settings, and how a binary
//! (each tier's, and the all-in-one) loads its config file and sets up logging.
//!
//! # Layout
//! - [`redis`]: the `[redis]` table and a reconnecting connection with deadlines.
//! - [`registry`]: [`Instance`] (goim's discovery JSON), comets registering, logic and job
//!   watching.
//! - [`kafka`]: the `[kafka]` table.
//! - [`boot`]: config file loading and logging, shared by every binary (the tiers and the
//!   all-in-one).
//! - [`clikit`]: what every binary's command-line test checks, on the built binary.
//! - [`metrics`]: one Prometheus registry per server (`prometheus-client`), collectors over
//!   the components' atomics, latency histograms.
//! - [`health`]: `/metrics`, `/healthz`, `/readyz` (named readiness checks, draining), and the
//!   `[metrics]` listener of the `comet` and `job` binaries.
//! - [`serve`]: an HTTP/1 server with connection limits (`max_conns`, a header timeout).
//! - [`testkit`]: real `redis-server` and `tansu` processes on spare ports, for tests.

pub mod boot;
#[doc(hidden)]
pub mod clikit;
pub mod health;
pub mod kafka;
pub mod metrics;
pub mod redis;
pub mod registry;
pub mod serve;
#[doc(hidden)]
pub mod testkit;

pub use registry::Instance;
