//! Process signals: SIGINT or SIGTERM mean "stop gracefully", for every mode that runs until told
//! otherwise (`run`, `simulate`, `demo`, and later `agent`/`host`).

/// Resolves when the process receives SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a handler there is nothing to wait for but Ctrl-C; if even that cannot be
    // installed, never resolve rather than stop at once.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Prints a server's bound address as the first stdout line, flushed, so that scripts and tests
/// can read it before anything else.
pub fn announce_address(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{addr}")?;
    out.flush()
}
