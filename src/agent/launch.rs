//! The launch contract (spec §2, §3.1): `-E key=value` arguments and the `StartUpInfo` the
//! Agent writes to stdin before closing it.
//!
//! The Agent always appends `-E path.data=<workdir>`; other `-E` pairs and unknown flags are
//! tolerated and ignored, as the Agent's own test component does.

use std::io::Read;
use std::path::PathBuf;

use prost::Message as _;

use crate::proto::{ConnInfoServices, StartUpInfo};

/// Why the component cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// stdin could not be read.
    #[error("cannot read StartUpInfo from stdin: {0}")]
    Read(#[source] std::io::Error),
    /// stdin held no valid `StartUpInfo`.
    #[error("stdin is not a StartUpInfo protobuf message: {0}")]
    Decode(#[source] prost::DecodeError),
    /// stdin was empty (not launched by an Agent).
    #[error("stdin was empty: `ti-sidecar agent` expects the Agent's StartUpInfo on stdin")]
    Empty,
    /// The Agent does not offer the V2 check-in.
    #[error("the Agent does not offer CheckinV2 (services: {0:?}): v2 protocol is not available")]
    NoCheckinV2(Vec<String>),
    /// A field the connection needs is missing.
    #[error("StartUpInfo.{0} is empty")]
    Missing(&'static str),
}

/// What the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    /// The state directory (`-E path.data=DIR`, default: the current directory).
    pub path_data: PathBuf,
    /// `-E` keys that were ignored (logged once at start).
    pub ignored: Vec<String>,
}

/// Parses the agent command's arguments. Accepts `-E k=v`, `-Ek=v`, `--E k=v`; ignores the rest.
pub fn parse_args<I, S>(args: I) -> LaunchArgs
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut path_data = None;
    let mut ignored = Vec::new();
    let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let pair = if arg == "-E" || arg == "--E" {
            i += 1;
            args.get(i).cloned()
        } else {
            arg.strip_prefix("-E").map(str::to_owned)
        };
        i += 1;
        let Some(pair) = pair else {
            if !arg.is_empty() {
                ignored.push(arg.to_owned());
            }
            continue;
        };
        match pair.split_once('=') {
            Some(("path.data", dir)) if !dir.is_empty() => path_data = Some(PathBuf::from(dir)),
            Some((key, _)) => ignored.push(key.to_owned()),
            None => ignored.push(pair),
        }
    }
    LaunchArgs {
        path_data: path_data.unwrap_or_else(|| PathBuf::from(".")),
        ignored,
    }
}

/// Reads stdin to EOF and decodes the `StartUpInfo`.
pub fn read_start_up_info<R: Read>(mut input: R) -> Result<StartUpInfo, LaunchError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(LaunchError::Read)?;
    decode_start_up_info(&bytes)
}

/// Decodes and checks a `StartUpInfo`: V2 must be offered and the TLS material present.
pub(crate) fn decode_start_up_info(bytes: &[u8]) -> Result<StartUpInfo, LaunchError> {
    if bytes.is_empty() {
        return Err(LaunchError::Empty);
    }
    let info = StartUpInfo::decode(bytes).map_err(LaunchError::Decode)?;
    if !info
        .services
        .contains(&(ConnInfoServices::CheckinV2 as i32))
    {
        let names = info
            .services
            .iter()
            .map(|s| match ConnInfoServices::try_from(*s) {
                Ok(v) => v.as_str_name().to_owned(),
                Err(_) => s.to_string(),
            })
            .collect();
        return Err(LaunchError::NoCheckinV2(names));
    }
    for (name, empty) in [
        ("addr", info.addr.is_empty()),
        ("server_name", info.server_name.is_empty()),
        ("token", info.token.is_empty()),
        ("ca_cert", info.ca_cert.is_empty()),
        ("peer_cert", info.peer_cert.is_empty()),
        ("peer_key", info.peer_key.is_empty()),
    ] {
        if empty {
            return Err(LaunchError::Missing(name));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_data_and_ignored_pairs() {
        let args = parse_args([
            "-E",
            "logging.level=debug",
            "-E",
            "path.data=/var/run/x",
            "--unknown",
            "-Emanagement.enabled=true",
        ]);
        assert_eq!(args.path_data, PathBuf::from("/var/run/x"));
        assert_eq!(
            args.ignored,
            vec!["logging.level", "--unknown", "management.enabled"]
        );
        assert_eq!(
            parse_args(Vec::<String>::new()).path_data,
            PathBuf::from(".")
        );
        // A trailing -E without a value is tolerated.
        assert_eq!(parse_args(["-E"]).path_data, PathBuf::from("."));
    }

    fn info(services: Vec<i32>) -> Vec<u8> {
        StartUpInfo {
            addr: "localhost:1".into(),
            server_name: "abc".into(),
            token: "t".into(),
            ca_cert: b"c".to_vec(),
            peer_cert: b"c".to_vec(),
            peer_key: b"k".to_vec(),
            services,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn refuses_v1_only_agents() {
        let err = decode_start_up_info(&info(vec![ConnInfoServices::Checkin as i32]))
            .expect_err("v1 only");
        assert!(err.to_string().contains("CheckinV2"), "{err}");
        assert!(decode_start_up_info(&info(vec![ConnInfoServices::CheckinV2 as i32])).is_ok());
        assert!(matches!(decode_start_up_info(&[]), Err(LaunchError::Empty)));
        assert!(matches!(
            decode_start_up_info(&[0xff, 0xff]),
            Err(LaunchError::Decode(_))
        ));
    }
}
