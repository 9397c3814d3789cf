//! Strata's analysis engine, usable on its own and run by workers.
//!
//! # Layout
//! Data flows top to bottom:
//! - `source`: image references → manifests and layer blob streams
//!   (registries, OCI layout directories, docker-archive tarballs, root dirs).
//! - `layer`: one pass over a layer blob: verify its digest, decompress,
//!   walk the tar in memory, hand wanted entries to analysers.
//! - `analyzers`: one folder per ecosystem behind the [`analyzers::Analyzer`] trait.
//! - `gate`: per-registry fetch limits and `429 Retry-After` pauses.
//! - `queue`: the job transport, NATS JetStream or in-process, one enum.
//! - `job`: one layer job as a worker runs it: fetch, analyse, store the
//!   inventory at its content address, return the result event.
//! - `run`: the worker loop: slots, progress acks, publish-then-ack, graceful shutdown.
//! - `telemetry`: logs, metrics (OpenTelemetry SDK, Prometheus `/metrics`), traces
//!   (OTLP when configured) and W3C trace context over NATS headers.

pub mod analyzers;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod job;
pub mod layer;
pub mod queue;
pub mod rate_limit;
pub mod run;
pub mod source;
pub mod storage;
pub mod telemetry;
