//! `ssl.certificate_authorities`, `ssl.certificate` and `ssl.key`: each value is either inline
//! PEM or a file path, and this module alone decides which, reads it and parses it.
//!
//! Validation, the HTTP client and the OTLP sink all go through [`PemSource::classify`], so a
//! value that validates is read the same way at run time. The rule is deliberately generous
//! towards "inline": a value holding `-----BEGIN` anywhere, or a line break, is inline PEM (an
//! openssl export opens with `Bag Attributes` lines before its first `-----BEGIN`). Only what is
//! left is a path, and only a path is ever shown in an error: no error carries a key or a
//! certificate.
//!
//! Parsing is `rustls-pki-types`' [`PemObject`](rustls::pki_types::pem::PemObject), which ignores text between sections.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a PEM value comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PemSource<'a> {
    /// The value is the PEM text itself.
    Inline(&'a str),
    /// The value names a file holding PEM.
    Path(&'a Path),
}

/// Never shows inline PEM: it may be a private key.
impl std::fmt::Debug for PemSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(..)"),
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
        }
    }
}

/// Where PEM was read from, as errors show it: a path, or just "inline PEM".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Inline PEM (never shown).
    Inline,
    /// A file.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline => f.write_str("inline PEM"),
            Self::File(path) => write!(f, "file {path:?}"),
        }
    }
}

/// Why a PEM value is unusable. Names a path when the value is one, never PEM content.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The value is empty or blank.
    #[error("must not be empty")]
    Empty,
    /// The path does not exist.
    #[error("file {path:?} does not exist (give a file path or inline PEM)")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read file {path:?}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error (it never holds file content).
        source: std::io::Error,
    },
    /// A section is broken.
    #[error("malformed PEM in {origin}: {reason}")]
    Malformed {
        /// Where.
        origin: Origin,
        /// What is broken, never the offending text.
        reason: &'static str,
    },
    /// No `CERTIFICATE` section.
    #[error("no certificate found in {origin}")]
    NoCertificate {
        /// Where.
        origin: Origin,
    },
    /// No private key section of a supported kind.
    #[error("no private key (PKCS#1, PKCS#8 or SEC1) found in {origin}")]
    NoPrivateKey {
        /// Where.
        origin: Origin,
    },
    /// An encrypted PKCS#8 key, and no passphrase.
    #[error("the private key in {origin} is encrypted: set `key_passphrase`")]
    NeedsPassphrase {
        /// Where.
        origin: Origin,
    },
    /// The passphrase does not open the key.
    #[error(
        "cannot decrypt the private key in {origin}: wrong `key_passphrase`, or a scheme other than \
         PBES2 with PBKDF2-HMAC-SHA256 or scrypt and AES-CBC (openssl's default; re-encrypt \
         with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)"
    )]
    Decrypt {
        /// Where.
        origin: Origin,
    },
    /// OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` key encryption.
    #[error(
        "the private key in {origin} uses legacy PEM encryption (Proc-Type: 4,ENCRYPTED), which \
         is not supported; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 \
         aes-256-cbc -in old.key -out new.key`"
    )]
    LegacyEncryption {
        /// Where.
        origin: Origin,
    },
}

impl<'a> PemSource<'a> {
    /// Inline PEM when the value holds `-----BEGIN` or a line break, a path otherwise.
    pub(crate) fn classify(value: &'a str) -> Self {
        if value.contains("-----BEGIN") || value.contains(['\n', '\r']) {
            Self::Inline(value)
        } else {
            Self::Path(Path::new(value))
        }
    }

    /// Where errors say the PEM came from.
    pub(crate) fn origin(&self) -> Origin {
        match self {
            Self::Inline(_) => Origin::Inline,
            Self::Path(p) => Origin::File(p.to_path_buf()),
        }
    }

    /// The PEM bytes: the inline text, or the file's content.
    pub(crate) fn read(&self) -> Result<Cow<'a, [u8]>, PemError> {
        match self {
            Self::Inline(text) => Ok(Cow::Borrowed(text.as_bytes())),
            Self::Path(path) => std::fs::read(path).map(Cow::Owned).map_err(|source| {
                let path = path.to_path_buf();
                if source.kind() == std::io::ErrorKind::NotFound {
                    PemError::NotFound { path }
                } else {
                    PemError::Read { path, source }
                }
            }),
        }
    }
}

/// A value's PEM bytes and where they came from.
pub fn load(value: &str) -> Result<(Cow<'_, [u8]>, Origin), PemError> {
    if value.trim().is_empty() {
        return Err(PemError::Empty);
    }
    let source = PemSource::classify(value);
    Ok((source.read()?, source.origin()))
}

/// The certificates of a value (inline PEM or path); at least one.
pub(crate) fn certificates(value: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let (pem, origin) = load(value)?;
    parse_certificates(&pem, &origin)
}

/// The first private key of a value (inline PEM or path); an encrypted PKCS#8 key
/// (`ENCRYPTED PRIVATE KEY`) is decrypted with `passphrase`.
pub(crate) fn private_key(
    value: &str,
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, PemError> {
    let (pem, origin) = load(value)?;
    parse_private_key(&pem, &origin, passphrase)
}

/// The key as unencrypted PEM, for APIs that take PEM (tonic's `Identity`): the text as given
/// when it is not encrypted, otherwise the decrypted PKCS#8 key re-encoded.
pub(crate) fn private_key_pem(
    value: &str,
    passphrase: Option<&str>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, PemError> {
    let (pem, origin) = load(value)?;
    if encrypted_section(&pem).is_none() {
        parse_private_key(&pem, &origin, passphrase)?;
        return Ok(zeroize::Zeroizing::new(pem.into_owned()));
    }
    let document = decrypt(&pem, &origin, passphrase)?;
    let text = document
        .to_pem("PRIVATE KEY", pkcs8::LineEnding::LF)
        .map_err(|_| PemError::Decrypt {
            origin: origin.clone(),
        })?;
    Ok(zeroize::Zeroizing::new(text.as_bytes().to_vec()))
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// The `ENCRYPTED PRIVATE KEY` section of PEM bytes, BEGIN to END lines included.
fn encrypted_section(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find(ENCRYPTED_BEGIN)?;
    let end = text[start..].find(ENCRYPTED_END)? + start + ENCRYPTED_END.len();
    Some(&text[start..end])
}

/// Decrypts the `ENCRYPTED PRIVATE KEY` section (PBES2, as `openssl pkcs8 -topk8` writes it).
fn decrypt(
    pem: &[u8],
    origin: &Origin,
    passphrase: Option<&str>,
) -> Result<pkcs8::SecretDocument, PemError> {
    let section = encrypted_section(pem).ok_or_else(|| PemError::NoPrivateKey {
        origin: origin.clone(),
    })?;
    let Some(passphrase) = passphrase else {
        return Err(PemError::NeedsPassphrase {
            origin: origin.clone(),
        });
    };
    let (_, document) = pkcs8::Document::from_pem(section).map_err(|_| PemError::Malformed {
        origin: origin.clone(),
        reason: "the encrypted key section is not valid PEM",
    })?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes()).map_err(|_| {
        PemError::Malformed {
            origin: origin.clone(),
            reason: "the encrypted key section is not PKCS#8",
        }
    })?;
    info.decrypt(passphrase).map_err(|_| PemError::Decrypt {
        origin: origin.clone(),
    })
}

/// The certificates in PEM bytes; at least one.
pub(crate) fn parse_certificates(
    pem: &[u8],
    origin: &Origin,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(&e, origin))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            origin: origin.clone(),
        });
    }
    Ok(certs)
}

/// The first private key in PEM bytes; an encrypted PKCS#8 key is decrypted with `passphrase`.
pub(crate) fn parse_private_key(
    pem: &[u8],
    origin: &Origin,
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, PemError> {
    if encrypted_section(pem).is_some() {
        let document = decrypt(pem, origin, passphrase)?;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(document.as_bytes().to_vec());
        return Ok(PrivateKeyDer::Pkcs8(der));
    }
    if pem
        .windows(b"Proc-Type: 4,ENCRYPTED".len())
        .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(PemError::LegacyEncryption {
            origin: origin.clone(),
        });
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => PemError::NoPrivateKey {
            origin: origin.clone(),
        },
        other => malformed(&other, origin),
    })
}

/// A parse error without the text it quotes (a broken line could be key material).
fn malformed(e: &pem::Error, origin: &Origin) -> PemError {
    let reason = match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        pem::Error::NoItemsFound => "nothing found",
        _ => "unreadable",
    };
    PemError::Malformed {
        origin: origin.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_is_anything_with_a_begin_line_or_a_line_break() {
        assert!(matches!(
            PemSource::classify("Bag Attributes\n    friendlyName: x\n-----BEGIN PRIVATE KEY-----"),
            PemSource::Inline(_)
        ));
        assert!(matches!(
            PemSource::classify("   -----BEGIN CERTIFICATE-----"),
            PemSource::Inline(_)
        ));
        assert!(matches!(
            PemSource::classify("no begin\nbut two lines"),
            PemSource::Inline(_)
        ));
        assert_eq!(
            PemSource::classify("/etc/ssl/key.pem"),
            PemSource::Path(Path::new("/etc/ssl/key.pem"))
        );
    }

    #[test]
    fn errors_name_a_path_but_never_inline_content() {
        let e = private_key("Bag Attributes\nMIIEsecretsecret\n", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no private key (PKCS#1, PKCS#8 or SEC1) found in inline PEM"
        );
        let e = private_key("-----BEGIN PRIVATE KEY-----\nMIIEsecret\n", None).unwrap_err();
        assert!(!e.to_string().contains("MIIE"), "{e}");
        let e = certificates("/nonexistent/ca.pem").unwrap_err();
        assert_eq!(
            e.to_string(),
            "file \"/nonexistent/ca.pem\" does not exist (give a file path or inline PEM)"
        );
        assert!(matches!(certificates("  "), Err(PemError::Empty)));
        assert_eq!(
            format!("{:?}", PemSource::classify("-----BEGIN x")),
            "Inline(..)"
        );
    }
}
