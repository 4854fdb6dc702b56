//! One vocabulary for what an error means, whatever raised it.
//!
//! Every error type of the library says, through [`Classify`], whether the work that met it
//! should try again ([`ErrorKind::Retry`]), keep running while reported as degraded
//! ([`ErrorKind::Degrade`]), or stop and report ([`ErrorKind::Fail`]). The poll loop, health
//! and the unit manager read this instead of matching on variants.

/// What an error means for the work that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: try again later (with backoff).
    Retry,
    /// The work goes on, but not fully: report DEGRADED (a receiver rejecting some records).
    Degrade,
    /// The work cannot go on as configured (credentials refused, a bad request, a damaged
    /// store, an unusable setting): stop and report FAILED.
    Fail,
}

/// An error that says what it means.
pub trait Classify {
    /// Retry, degrade or fail.
    fn kind(&self) -> ErrorKind;
}

impl Classify for crate::sink::SinkError {
    fn kind(&self) -> ErrorKind {
        use crate::sink::SinkError;
        match self {
            // A full disk or a receiver that is down comes back.
            SinkError::Io { .. } | SinkError::Otlp { .. } => ErrorKind::Retry,
            SinkError::OtlpRejected { .. } => ErrorKind::Degrade,
            SinkError::OtlpConfig { .. } => ErrorKind::Fail,
        }
    }
}

impl Classify for crate::state::StateError {
    fn kind(&self) -> ErrorKind {
        use crate::state::StateError;
        match self {
            StateError::Io { .. } => ErrorKind::Retry,
            _ => ErrorKind::Fail,
        }
    }
}

impl Classify for crate::poll::PollError {
    /// A poll loop's error is the end of that loop.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Fail
    }
}

impl Classify for crate::pipeline::BuildError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use crate::sink::SinkError;

    #[test]
    fn each_error_says_what_it_means() {
        let server = HttpError::Server {
            status: 503,
            message: String::new(),
        };
        assert_eq!(server.kind(), ErrorKind::Retry);
        let refused = HttpError::Unauthorized {
            status: 401,
            message: String::new(),
        };
        assert_eq!(refused.kind(), ErrorKind::Fail);
        let rejected = SinkError::OtlpRejected {
            endpoint: "127.0.0.1:4317".into(),
            rejected: 1,
            sent: 2,
            message: String::new(),
        };
        assert_eq!(rejected.kind(), ErrorKind::Degrade);
        let locked = crate::state::StateError::Locked {
            path: "/data/state.redb".into(),
        };
        assert_eq!(locked.kind(), ErrorKind::Fail);
    }
}
