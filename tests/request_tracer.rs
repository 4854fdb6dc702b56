//! The request tracer (`enable_request_tracer`): its files are private, whatever the umask.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use nix::sys::stat::{Mode, umask};
use ti_sidecar::config::{HttpConfig, SslConfig};
use ti_sidecar::http::HttpClient;
use ti_sidecar::redact::Secrets;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn tracing_config() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(5),
        proxy_url: None,
        ssl: SslConfig::default(),
        enable_request_tracer: true,
        max_response_size: ti_sidecar::config::size::default_max_response_size(),
    }
}

/// Traces hold indicator bodies (possibly TLP:RED): under a umask of 000 the tracer used to
/// create a world-readable directory and file, and left an existing 0644 trace as it was.
#[test]
fn request_trace_directory_and_file_are_private_whatever_the_umask() {
    let root = tempfile::tempdir().unwrap();
    let previous = umask(Mode::empty());
    let fresh = root.path().join("state/request-trace/tc--s.ndjson");
    let built = HttpClient::build(&tracing_config(), Some(&fresh), Secrets::default());

    let old_dir = root.path().join("old");
    std::fs::create_dir(&old_dir).unwrap();
    std::fs::set_permissions(&old_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = old_dir.join("trace.ndjson");
    std::fs::write(&old, b"{}\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reopened = HttpClient::build(&tracing_config(), Some(&old), Secrets::default());
    umask(previous);

    built.unwrap();
    reopened.unwrap();
    assert_eq!(mode(fresh.parent().unwrap()), 0o700);
    assert_eq!(mode(&root.path().join("state")), 0o700);
    assert_eq!(mode(&fresh), 0o600);
    assert_eq!(mode(&old_dir), 0o700, "an existing directory is tightened");
    assert_eq!(mode(&old), 0o600, "an existing trace is tightened");
}
