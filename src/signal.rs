//! Process signals: SIGINT or SIGTERM mean "stop gracefully", for every mode that runs until told
//! otherwise (`run`, `simulate`, `demo`, `agent`, `host`).
//!
//! Handlers are registered synchronously, before anything else starts: a SIGTERM that arrives
//! early must be caught, not take the default action (which kills the process mid-batch).

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Registers the SIGINT/SIGTERM handlers now; the returned future resolves on either signal.
/// Must be called inside a Tokio runtime.
fn listen() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = i.recv() => {}
                    }
                }
                (Ok(mut t), Err(_)) => {
                    t.recv().await;
                }
                (Err(_), Ok(mut i)) => {
                    i.recv().await;
                }
                // Without handlers there is nothing to wait for: never resolve rather than
                // stop at once.
                (Err(_), Err(_)) => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A token cancelled on SIGINT or SIGTERM. The handlers are in place when this returns.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let signalled = listen();
    let t = token.clone();
    tokio::spawn(async move {
        signalled.await;
        tracing::info!("shutdown requested: stopping fetches, finishing the batch in flight");
        t.cancel();
    });
    token
}

/// Prints a server's bound address as the first stdout line, flushed, so that scripts and tests
/// can read it before anything else.
pub fn announce_address(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{addr}")?;
    out.flush()
}
