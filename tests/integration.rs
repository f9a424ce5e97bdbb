//! The single integration test binary (`autotests = false`): end-to-end tests that start the
//! real daemon on 127.0.0.1 with an ephemeral port, and sans-IO negotiation transcripts.

mod e2e;
mod negotiation;
mod purity;
mod stream_management;
