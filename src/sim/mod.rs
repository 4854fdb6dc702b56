//! Simulators of the threat-intelligence platforms ti-sidecar reads from, so that the product can
//! be tried without an account and integration tests can exercise real failure modes.
//!
//! Each platform module (`threatconnect`, `threatq`) keeps what is really its own: the
//! authentication scheme, the query parameters, the store and its order, page rendering and the
//! data. What both share is here: the HTTP server and its handle ([`server`]), fault injection
//! ([`faults`]), `--mutate-per-page` ([`mutation`]), page bodies ([`page`]) and value generators
//! ([`values`]).

use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod faults;
pub(crate) mod mutation;
pub mod page;
pub mod server;
pub mod threatconnect;
pub mod threatq;
pub(crate) mod values;

/// A poisoned lock only means another request panicked; the data is still consistent enough
/// for a simulator, so keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
