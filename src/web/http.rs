//! The little HTTP/1.1 the web view needs: one bounded request per
//! connection (GET or HEAD), the token check, and responses with
//! `Connection: close`.

use std::io::{Read, Write};

/// Largest request head (request line and headers) read, in bytes.
pub const MAX_HEAD: usize = 8192;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), empty if none.
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The connection closed or timed out before a whole head arrived.
    Incomplete,
    /// The head is larger than [`MAX_HEAD`] (431).
    TooLarge,
    /// Not an HTTP/1.x request line (400).
    Malformed,
}

/// Reads one request head from `r` (at most [`MAX_HEAD`] bytes).
pub fn read_request(r: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = [0u8; MAX_HEAD];
    let mut n = 0;
    let end = loop {
        if n == buf.len() {
            return Err(ReadError::TooLarge);
        }
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return Err(ReadError::Incomplete),
            Ok(k) => n += k,
        }
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    parse_head(&buf[..end])
}

/// Parses a request head (without the blank line that ends it).
pub fn parse_head(head: &[u8]) -> Result<Request, ReadError> {
    let text = std::str::from_utf8(head).map_err(|_| ReadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or(ReadError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Malformed);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut authorization = None;
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            return Err(ReadError::Malformed);
        };
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        authorization,
    })
}

/// The value of `key` in a query string (`a=1&b=2`), percent-decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` and `+` (query values); bad escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes standard base64 (with or without padding).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Compares two byte strings in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether `req` carries `token`: as `Authorization: Bearer TOKEN`, as the
/// password of `Authorization: Basic` (any user name), or as `?token=` in
/// the query (for MJPEG players and Home Assistant's camera, which take a
/// URL only).
pub fn authorized(req: &Request, token: &str) -> bool {
    let t = token.as_bytes();
    if let Some(a) = &req.authorization {
        if let Some(b) = a.strip_prefix("Bearer ") {
            if same(b.trim().as_bytes(), t) {
                return true;
            }
        } else if let Some(b) = a.strip_prefix("Basic ")
            && let Some(raw) = base64_decode(b.trim())
            && let Some(i) = raw.iter().position(|&c| c == b':')
            && same(&raw[i + 1..], t)
        {
            return true;
        }
    }
    query_value(&req.query, "token").is_some_and(|q| same(q.as_bytes(), t))
}

/// Writes a whole response: status, headers, body (left out for HEAD).
pub fn respond(
    w: &mut impl Write,
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )?;
    if !head_only {
        w.write_all(body)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_parsed_and_bounded() {
        let raw = b"GET /api/events?since=4&token=a%20b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n";
        let r = read_request(&mut &raw[..]).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/events"));
        assert_eq!(query_value(&r.query, "since").as_deref(), Some("4"));
        assert_eq!(query_value(&r.query, "token").as_deref(), Some("a b"));
        assert_eq!(query_value(&r.query, "none"), None);
        assert_eq!(r.authorization.as_deref(), Some("Bearer t0k"));
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(read_request(&mut &big[..]), Err(ReadError::TooLarge));
        assert_eq!(
            read_request(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(ReadError::Incomplete)
        );
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"\xff / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(read_request(&mut &bad[..]), Err(ReadError::Malformed));
        }
    }

    #[test]
    fn tokens_are_accepted_as_bearer_basic_password_or_query() {
        let req = |auth: Option<&str>, query: &str| Request {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            authorization: auth.map(str::to_string),
        };
        assert!(authorized(&req(Some("Bearer s3cret"), ""), "s3cret"));
        // "viewer:s3cret" and ":s3cret"
        assert!(authorized(
            &req(Some("Basic dmlld2VyOnMzY3JldA=="), ""),
            "s3cret"
        ));
        assert!(authorized(&req(Some("Basic OnMzY3JldA"), ""), "s3cret"));
        assert!(authorized(&req(None, "x=1&token=s3cret"), "s3cret"));
        for (auth, query) in [
            (None, ""),
            (Some("Bearer s3cre"), ""),
            (Some("Bearer s3cretx"), ""),
            (Some("Basic dmlld2VyOnd yb25n"), ""),
            (Some("Basic dmlld2VyOndyb25n"), ""),
            (Some("Digest s3cret"), ""),
            (None, "token=S3CRET"),
        ] {
            assert!(!authorized(&req(auth, query), "s3cret"), "{auth:?} {query}");
        }
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a*b").is_none());
    }
}
