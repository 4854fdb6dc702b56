//! The `uri_parts` processor, with Java's `URI` and `URL` parsing rules.

use super::*;

/// ES `uri_parts` (without `original`, which the caller adds with `keep_original`): parses
/// `text` like `java.net.URI` (RFC 2396), falling back to `java.net.URL`, and returns the parts
/// ES writes (`domain`, `fragment`, `path`, `extension`, `port`, `query`, `scheme`,
/// `user_info`, `username`, `password`). Components are percent-decoded as the `URI` getters do.
pub(crate) fn uri_parts(text: &str) -> Result<Map<String, Value>, IngestError> {
    let parts = java_uri::parse(text)
        .or_else(|| java_url::parse(text))
        .ok_or_else(|| IngestError(format!("unable to parse URI [{text}]")))?;
    let mut out = Map::new();
    if let Some(d) = parts.host {
        out.insert("domain".to_owned(), Value::String(d));
    }
    if let Some(f) = parts.fragment {
        out.insert("fragment".to_owned(), Value::String(f));
    }
    if let Some(p) = parts.path {
        if let Some(i) = p.rfind('.') {
            let ext = p.get(i + 1..).unwrap_or_default().to_owned();
            out.insert("extension".to_owned(), Value::String(ext));
        }
        out.insert("path".to_owned(), Value::String(p));
    }
    if let Some(port) = parts.port {
        out.insert("port".to_owned(), Value::from(port));
    }
    if let Some(q) = parts.query {
        out.insert("query".to_owned(), Value::String(q));
    }
    if let Some(s) = parts.scheme {
        out.insert("scheme".to_owned(), Value::String(s));
    }
    if let Some(u) = parts.user_info {
        if let Some((user, pass)) = u.split_once(':') {
            out.insert("username".to_owned(), Value::String(user.to_owned()));
            out.insert("password".to_owned(), Value::String(pass.to_owned()));
        }
        out.insert("user_info".to_owned(), Value::String(u));
    }
    Ok(out)
}

/// The components `uri_parts` reads from a parsed URI/URL.
#[derive(Debug, Default)]
struct UriComponents {
    scheme: Option<String>,
    user_info: Option<String>,
    host: Option<String>,
    port: Option<i32>,
    path: Option<String>,
    query: Option<String>,
    fragment: Option<String>,
}

/// `java.net.URI`'s RFC 2396 parser (`URI.Parser`), reduced to what the getters expose.
mod java_uri {
    use super::UriComponents;

    const MARK: &str = "-_.!~*'()";
    const RESERVED: &str = ";/?:@&=+$,[]";

    fn unreserved(c: char) -> bool {
        c.is_ascii_alphanumeric() || MARK.contains(c)
    }
    fn uric(c: char) -> bool {
        unreserved(c) || RESERVED.contains(c)
    }
    fn pchar(c: char) -> bool {
        unreserved(c) || ":@&=+$,".contains(c)
    }
    fn path_char(c: char) -> bool {
        pchar(c) || c == ';' || c == '/'
    }
    fn userinfo_char(c: char) -> bool {
        unreserved(c) || ";:&=+$,".contains(c)
    }
    fn reg_name_char(c: char) -> bool {
        unreserved(c) || "$,;:@&=+".contains(c)
    }
    fn server_char(c: char) -> bool {
        userinfo_char(c) || c.is_ascii_alphanumeric() || "-.:@[]".contains(c)
    }

    /// Java `scan` with escapes: the end of the longest prefix of `s` made of `ok` characters,
    /// `%XX` escapes and visible non-ASCII characters; `None` on a malformed escape.
    fn scan_escaped(s: &str, ok: impl Fn(char) -> bool) -> Option<usize> {
        let b = s.as_bytes();
        let mut it = s.char_indices();
        while let Some((i, c)) = it.next() {
            if ok(c) {
                continue;
            }
            if c == '%' {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if hex(i + 1) && hex(i + 2) {
                    it.next();
                    it.next();
                    continue;
                }
                return None;
            }
            if u32::from(c) > 128 && !c.is_whitespace() && !c.is_control() {
                continue;
            }
            return Some(i);
        }
        Some(s.len())
    }

    /// The whole of `s` is made of `ok` characters (with escapes).
    fn all_escaped(s: &str, ok: impl Fn(char) -> bool) -> bool {
        scan_escaped(s, ok) == Some(s.len())
    }

    /// Percent-decoding as `URI.decode` does (UTF-8, malformed sequences replaced).
    fn decode(s: &str) -> String {
        if !s.contains('%') {
            return s.to_owned();
        }
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if c == b'%' {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(c);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub(super) fn parse(s: &str) -> Option<UriComponents> {
        let mut parts = UriComponents::default();
        let scheme_end = s.find(['/', '?', '#', ':']);
        let rest = match scheme_end {
            Some(p) if s.as_bytes().get(p) == Some(&b':') => {
                let scheme = s.get(..p)?;
                let mut chars = scheme.chars();
                if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                    || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                {
                    return None;
                }
                let ssp = s.get(p + 1..)?;
                if ssp.is_empty() {
                    return None;
                }
                parts.scheme = Some(scheme.to_owned());
                if !ssp.starts_with('/') {
                    // Opaque URI: only scheme and fragment are exposed.
                    let (body, frag) = match ssp.split_once('#') {
                        Some((b, f)) => (b, Some(f)),
                        None => (ssp, None),
                    };
                    if !all_escaped(body, uric) {
                        return None;
                    }
                    if let Some(f) = frag {
                        if !all_escaped(f, uric) {
                            return None;
                        }
                        parts.fragment = Some(decode(f));
                    }
                    return Some(parts);
                }
                ssp
            }
            _ => s,
        };
        hierarchical(rest, &mut parts)?;
        Some(parts)
    }

    fn hierarchical(s: &str, parts: &mut UriComponents) -> Option<()> {
        let mut rest = s;
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let authority = after.get(..end)?;
            if !authority.is_empty() {
                parse_authority(authority, parts)?;
            } else if end == after.len() {
                return None; // "Expected authority"
            }
            rest = after.get(end..)?;
        }
        let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
        let path = rest.get(..path_end)?;
        if !all_escaped(path, path_char) {
            return None;
        }
        parts.path = Some(decode(path));
        rest = rest.get(path_end..)?;
        if let Some(q) = rest.strip_prefix('?') {
            let end = q.find('#').unwrap_or(q.len());
            let query = q.get(..end)?;
            if !all_escaped(query, uric) {
                return None;
            }
            parts.query = Some(decode(query));
            rest = q.get(end..)?;
        }
        if let Some(f) = rest.strip_prefix('#') {
            if !all_escaped(f, uric) {
                return None;
            }
            parts.fragment = Some(decode(f));
            rest = "";
        }
        rest.is_empty().then_some(())
    }

    fn parse_authority(a: &str, parts: &mut UriComponents) -> Option<()> {
        let server_chars = all_escaped(a, server_char);
        let reg_chars = all_escaped(a, reg_name_char);
        if server_chars {
            let mut server = UriComponents::default();
            if parse_server(a, &mut server).is_some() {
                parts.user_info = server.user_info;
                parts.host = server.host;
                parts.port = server.port;
                return Some(());
            }
        }
        // A registry-based authority: valid, but no host, user info or port.
        reg_chars.then_some(())
    }

    fn parse_server(a: &str, parts: &mut UriComponents) -> Option<()> {
        let mut rest = a;
        if let Some(at) = a.find('@') {
            let user = a.get(..at)?;
            if !all_escaped(user, userinfo_char) {
                return None;
            }
            parts.user_info = Some(decode(user));
            rest = a.get(at + 1..)?;
        }
        let host_end = if rest.starts_with('[') {
            let close = rest.find(']')?;
            let inner = rest.get(1..close)?;
            let addr = inner.split_once('%').map_or(inner, |(a, _)| a);
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            close + 1
        } else {
            match ipv4_end(rest) {
                Some(end) => end,
                None => hostname_end(rest)?,
            }
        };
        parts.host = Some(rest.get(..host_end)?.to_owned());
        let after = rest.get(host_end..)?;
        if after.is_empty() {
            return Some(());
        }
        let port = after.strip_prefix(':')?;
        if port.is_empty() {
            return Some(());
        }
        if !port.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        parts.port = Some(port.parse().ok()?);
        Some(())
    }

    /// `parseIPv4Address`: a dotted quad (octets ≤ 255) followed by nothing or `:`.
    fn ipv4_end(s: &str) -> Option<usize> {
        let run = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let quad = s.get(..run)?;
        let octets: Vec<&str> = quad.split('.').collect();
        let ok = octets.len() == 4
            && octets
                .iter()
                .all(|o| !o.is_empty() && o.len() <= 3 && o.parse::<u16>().is_ok_and(|v| v <= 255));
        if !ok {
            return None;
        }
        match s.as_bytes().get(run) {
            None | Some(b':') => Some(run),
            Some(_) => None,
        }
    }

    /// `parseHostname`: dot-separated labels of alphanumerics and inner dashes; the last label
    /// of a multi-label name starts with a letter; only `:` may follow.
    fn hostname_end(s: &str) -> Option<usize> {
        let b = s.as_bytes();
        let mut p = 0usize;
        let mut last_label: Option<usize> = None;
        loop {
            let start = p;
            while b.get(p).is_some_and(u8::is_ascii_alphanumeric) {
                p += 1;
            }
            if p == start {
                break;
            }
            last_label = Some(start);
            while b
                .get(p)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-')
            {
                p += 1;
            }
            if p > 0 && b.get(p - 1) == Some(&b'-') {
                return None;
            }
            if b.get(p) == Some(&b'.') {
                p += 1;
            } else {
                break;
            }
            if p >= b.len() {
                break;
            }
        }
        if p < b.len() && b.get(p) != Some(&b':') {
            return None;
        }
        let l = last_label?;
        if l > 0 && !b.get(l).is_some_and(u8::is_ascii_alphabetic) {
            return None;
        }
        Some(p)
    }
}

/// The lenient `java.net.URL` parser (`URLStreamHandler.parseURL`) for the protocols a JDK
/// ships handlers for; used only when `java.net.URI` refuses the text.
mod java_url {
    use super::UriComponents;

    pub(super) fn parse(spec: &str) -> Option<UriComponents> {
        let spec = spec.trim_matches(|c: char| c <= ' ');
        let spec = match spec.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("url:") => spec.get(4..)?,
            _ => spec,
        };
        let colon = spec.find([':', '/', '#'])?;
        if spec.as_bytes().get(colon) != Some(&b':') {
            return None; // "no protocol"
        }
        let protocol = spec.get(..colon)?.to_ascii_lowercase();
        let mut chars = protocol.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        if !["http", "https", "ftp", "file", "jar", "mailto", "jrt"].contains(&protocol.as_str()) {
            return None; // "unknown protocol"
        }
        let rest = spec.get(colon + 1..)?;
        if protocol == "jar" && !rest.contains("!/") {
            return None;
        }
        let mut parts = UriComponents {
            scheme: Some(protocol.clone()),
            ..UriComponents::default()
        };
        let (body, frag) = match rest.split_once('#') {
            Some((b, f)) => (b, Some(f.to_owned())),
            None => (rest, None),
        };
        parts.fragment = frag;
        if protocol == "mailto" || protocol == "jar" {
            parts.path = Some(body.to_owned());
            return Some(parts);
        }
        let (before_query, query) = match body.split_once('?') {
            Some((b, q)) => (b, Some(q.to_owned())),
            None => (body, None),
        };
        parts.query = query;
        let mut path = before_query;
        if let Some(after) = before_query.strip_prefix("//") {
            let end = after.find('/').unwrap_or(after.len());
            let authority = after.get(..end)?;
            path = after.get(end..)?;
            let host_port = match authority.rfind('@') {
                Some(at) => {
                    parts.user_info = Some(authority.get(..at)?.to_owned());
                    authority.get(at + 1..)?
                }
                None => authority,
            };
            let (host, port) = if host_port.starts_with('[') {
                let close = host_port.find(']')?;
                (host_port.get(..=close)?, host_port.get(close + 1..)?)
            } else {
                match host_port.find(':') {
                    Some(i) => (host_port.get(..i)?, host_port.get(i..)?),
                    None => (host_port, ""),
                }
            };
            parts.host = Some(host.to_owned());
            if let Some(p) = port.strip_prefix(':') {
                if !p.is_empty() {
                    if !p.bytes().all(|c| c.is_ascii_digit()) {
                        return None; // "Invalid port number"
                    }
                    parts.port = Some(p.parse().ok()?);
                }
            } else if !port.is_empty() {
                return None;
            }
        }
        parts.path = Some(path.to_owned());
        Some(parts)
    }
}
