//! The opening handshake (RFC 6455 §4): validating a client's upgrade request and
//! writing the 101 response (server side), writing the request and checking the
//! response (client side, for the load generator). HTTP parsing itself is httparse's.
//! No subprotocol and no extension is ever negotiated (permessage-deflate offers are
//! ignored: the reader rejects RSV bits).

use thiserror::Error;

/// Appended to the client's key before hashing (§1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a handshake failed. The first five are the server's verdict on a request, the
/// last three the client's verdict on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{}", self.reason())]
pub enum HandshakeError {
    /// Not a GET.
    Method,
    /// Older than HTTP/1.1.
    HttpVersion,
    /// No `Upgrade: websocket` or no `Connection: upgrade`.
    NotUpgrade,
    /// `Sec-WebSocket-Version` missing, repeated or not `13`.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing, repeated or not the base64 of 16 bytes.
    BadKey,
    /// The server answered with this status instead of 101.
    Status(u16),
    /// `Sec-WebSocket-Accept` missing or not derived from our key.
    BadAccept,
    /// The server accepted an extension we did not offer.
    UnexpectedExtension,
}

impl HandshakeError {
    /// The status a server answers a bad request with. The client-side variants are
    /// not answered by anyone; they report 502 (Bad Gateway: the upstream misbehaved).
    pub const fn status(self) -> u16 {
        match self {
            Self::Method => 405,
            Self::HttpVersion | Self::UnsupportedVersion | Self::BadKey => 400,
            Self::NotUpgrade => 426,
            Self::Status(_) | Self::BadAccept | Self::UnexpectedExtension => 502,
        }
    }

    /// A short reason, for the response body or a log.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Method => "WebSocket upgrade requires GET",
            Self::HttpVersion => "WebSocket upgrade requires HTTP/1.1",
            Self::NotUpgrade => "expected Upgrade: websocket and Connection: upgrade",
            Self::UnsupportedVersion => "unsupported Sec-WebSocket-Version (13 required)",
            Self::BadKey => "missing or malformed Sec-WebSocket-Key",
            Self::Status(_) => "server did not switch protocols",
            Self::BadAccept => "missing or wrong Sec-WebSocket-Accept",
            Self::UnexpectedExtension => "server selected an extension that was not offered",
        }
    }

    /// Headers the error response carries (PROTOCOL.md): `Allow` for 405 (RFC 9110
    /// §15.5.6), `Upgrade` for 426 (§15.5.22), and the supported version (RFC 6455 §4.4)
    /// with 426 and with the 400s about the WebSocket headers.
    pub const fn response_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Method => &[("Allow", "GET")],
            Self::NotUpgrade => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            Self::UnsupportedVersion | Self::BadKey => &[("Sec-WebSocket-Version", "13")],
            Self::HttpVersion | Self::Status(_) | Self::BadAccept | Self::UnexpectedExtension => {
                &[]
            }
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    let mut out = [0u8; 28];
    base64_encode(&sha1.digest().bytes(), &mut out);
    out
}

/// A `Sec-WebSocket-Key` for a client: the base64 of 16 random bytes the caller draws.
pub fn client_key(nonce: &[u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    base64_encode(nonce, &mut out);
    out
}

/// Standard base64 with padding. `out` holds `4 * input.len().div_ceil(3)` bytes.
fn base64_encode(input: &[u8], out: &mut [u8]) {
    for (group, chars) in input.chunks(3).zip(out.chunks_exact_mut(4)) {
        let mut bytes = [0u8; 3];
        for (slot, &byte) in bytes.iter_mut().zip(group) {
            *slot = byte;
        }
        let bits = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        // n input bytes give n + 1 significant characters; the rest is padding.
        for (i, c) in chars.iter_mut().enumerate() {
            *c = if i <= group.len() {
                BASE64[(bits >> (18 - 6 * i) & 0x3F) as usize]
            } else {
                b'='
            };
        }
    }
}

/// Validates a client's upgrade request and returns the `Sec-WebSocket-Accept` value.
/// `http_minor_version` is httparse's `version` (HTTP/1.x). Checked in this order:
/// method (405), HTTP version (400), Upgrade/Connection (426), WebSocket version (400),
/// key (400).
pub fn server_handshake(
    method: &str,
    http_minor_version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<[u8; 28], HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::Method);
    }
    if http_minor_version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if !has_token(headers, "Upgrade", "websocket") || !has_token(headers, "Connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if single_value(headers, "Sec-WebSocket-Version") != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    match single_value(headers, "Sec-WebSocket-Key") {
        Some(key) if is_valid_key(key) => Ok(accept_key(key)),
        _ => Err(HandshakeError::BadKey),
    }
}

/// The base64 of 16 bytes: 22 characters and `==`. (The unused low bits of the 22nd
/// character are not required to be zero: be liberal.)
fn is_valid_key(key: &[u8]) -> bool {
    match key.split_last_chunk::<2>() {
        Some((data, b"==")) => {
            data.len() == 22
                && data
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        }
        _ => false,
    }
}

/// Writes the `101 Switching Protocols` response. `extra_headers` (name, value) pairs
/// are written as given: the caller keeps them free of CR and LF.
pub fn write_response(out: &mut Vec<u8>, accept: &[u8; 28], extra_headers: &[(&str, &str)]) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    write_headers(out, extra_headers);
    out.extend_from_slice(b"\r\n");
}

/// Writes a client's upgrade request. `key` is from [`client_key`]; `extra_headers`
/// as for [`write_response`].
pub fn write_client_request(
    out: &mut Vec<u8>,
    host: &str,
    path_and_query: &str,
    key: &str,
    extra_headers: &[(&str, &str)],
) {
    for part in [
        "GET ",
        path_and_query,
        " HTTP/1.1\r\nHost: ",
        host,
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
        key,
        "\r\nSec-WebSocket-Version: 13\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    write_headers(out, extra_headers);
    out.extend_from_slice(b"\r\n");
}

/// Checks a server's response to a request made with `key`.
pub fn check_server_response(
    status: u16,
    headers: &[httparse::Header<'_>],
    key: &str,
) -> Result<(), HandshakeError> {
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    if !has_token(headers, "Upgrade", "websocket") || !has_token(headers, "Connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if single_value(headers, "Sec-WebSocket-Accept") != Some(&accept_key(key.as_bytes())[..]) {
        return Err(HandshakeError::BadAccept);
    }
    // We never offer an extension (§4.1: the client must fail if one is selected).
    if values(headers, "Sec-WebSocket-Extensions").any(|v| !v.is_empty()) {
        return Err(HandshakeError::UnexpectedExtension);
    }
    Ok(())
}

fn write_headers(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for (name, value) in headers {
        for part in [name, ": ", value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
}

/// The values (trimmed of whitespace) of every header called `name` (case-insensitive).
fn values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim_ascii())
}

/// The value of a header that must appear exactly once.
fn single_value<'h>(headers: &'h [httparse::Header<'_>], name: &'h str) -> Option<&'h [u8]> {
    let mut found = values(headers, name);
    let value = found.next()?;
    found.next().is_none().then_some(value)
}

/// Whether a comma-separated token list header (`Connection: keep-alive, Upgrade`),
/// possibly repeated, contains `token` (case-insensitive).
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values(headers, name).any(|value| {
        value
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn good_headers() -> Vec<httparse::Header<'static>> {
        vec![
            h("Host", "example.com"),
            h("upgrade", "WebSocket"),
            h("Connection", "keep-alive, Upgrade"),
            h("Sec-WebSocket-Key", KEY),
            h("sec-websocket-version", "13"),
            h(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ]
    }

    fn without(name: &str) -> Vec<httparse::Header<'static>> {
        good_headers()
            .into_iter()
            .filter(|h| !h.name.eq_ignore_ascii_case(name))
            .collect()
    }

    fn with(name: &'static str, value: &'static str) -> Vec<httparse::Header<'static>> {
        let mut headers = without(name);
        headers.push(h(name, value));
        headers
    }

    /// RFC 6455 §1.3. (Computed independently: `base64(sha1(key + GUID))` in Python
    /// gives the same value.)
    #[test]
    fn rfc_accept_key_example() {
        assert_eq!(accept_key(KEY.as_bytes()), *b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases: [(&[u8], &[u8]); 7] = [
            (b"", b""),
            (b"f", b"Zg=="),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg=="),
            (b"fooba", b"Zm9vYmE="),
            (b"foobar", b"Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            let mut out = vec![0u8; 4 * input.len().div_ceil(3)];
            base64_encode(input, &mut out);
            assert_eq!(out, expected);
        }
        assert_eq!(&client_key(b"the sample nonce"), KEY.as_bytes());
        assert_eq!(&client_key(&[0xFF; 16]), b"/////////////////////w==");
    }

    #[test]
    fn accepts_a_valid_request() {
        assert_eq!(
            server_handshake("GET", 1, &good_headers()),
            Ok(*b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        // Token lists, repeated headers and padding whitespace.
        let mut headers = without("Connection");
        headers.push(h("Connection", "keep-alive"));
        headers.push(h("Connection", " Upgrade "));
        assert!(server_handshake("GET", 1, &headers).is_ok());
        assert!(server_handshake("GET", 1, &with("Upgrade", "h2c,  websocket")).is_ok());
        assert!(
            server_handshake(
                "GET",
                1,
                &with("Sec-WebSocket-Key", " dGhlIHNhbXBsZSBub25jZQ== ")
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_other_methods_with_405() {
        for method in ["POST", "HEAD", "get"] {
            assert_eq!(
                server_handshake(method, 1, &good_headers()),
                Err(HandshakeError::Method)
            );
        }
        assert_eq!(HandshakeError::Method.status(), 405);
        assert_eq!(
            HandshakeError::Method.response_headers(),
            [("Allow", "GET")]
        );
    }

    #[test]
    fn rejects_http_1_0_with_400() {
        assert_eq!(
            server_handshake("GET", 0, &good_headers()),
            Err(HandshakeError::HttpVersion)
        );
        assert_eq!(HandshakeError::HttpVersion.status(), 400);
    }

    #[test]
    fn rejects_a_non_upgrade_with_426() {
        for headers in [
            without("Upgrade"),
            without("Connection"),
            with("Upgrade", "h2c"),
            with("Upgrade", "websocketx"),
            with("Connection", "keep-alive"),
            with("Connection", "upgrade-insecure, close"),
        ] {
            assert_eq!(
                server_handshake("GET", 1, &headers),
                Err(HandshakeError::NotUpgrade),
                "{headers:?}"
            );
        }
        assert_eq!(HandshakeError::NotUpgrade.status(), 426);
        assert_eq!(
            HandshakeError::NotUpgrade.response_headers(),
            [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        );
    }

    #[test]
    fn rejects_other_versions_with_400_and_the_supported_version() {
        let mut repeated = good_headers();
        repeated.push(h("Sec-WebSocket-Version", "13"));
        for headers in [
            without("Sec-WebSocket-Version"),
            with("Sec-WebSocket-Version", "8"),
            with("Sec-WebSocket-Version", "13, 8"),
            repeated,
        ] {
            assert_eq!(
                server_handshake("GET", 1, &headers),
                Err(HandshakeError::UnsupportedVersion),
                "{headers:?}"
            );
        }
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 400);
        assert_eq!(
            HandshakeError::UnsupportedVersion.response_headers(),
            [("Sec-WebSocket-Version", "13")]
        );
    }

    #[test]
    fn rejects_bad_keys_with_400() {
        let mut repeated = good_headers();
        repeated.push(h("Sec-WebSocket-Key", KEY));
        for headers in [
            without("Sec-WebSocket-Key"),
            with("Sec-WebSocket-Key", ""),
            with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"), // no padding
            with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ="), // 23 chars
            with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZSE="), // 17 bytes
            with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j*Q=="), // not base64
            with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==AA"), // too long
            repeated,
        ] {
            assert_eq!(
                server_handshake("GET", 1, &headers),
                Err(HandshakeError::BadKey),
                "{headers:?}"
            );
        }
        assert_eq!(HandshakeError::BadKey.status(), 400);
        assert_eq!(
            HandshakeError::BadKey.response_headers(),
            [("Sec-WebSocket-Version", "13")]
        );
    }

    #[test]
    fn writes_the_exact_response() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            &[("Server", "switchboard")],
        );
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nServer: switchboard\r\n\r\n"
        );
    }

    #[test]
    fn client_and_server_agree_through_httparse() {
        let key = client_key(&[7; 16]);
        let key = std::str::from_utf8(&key).unwrap();
        let mut request = Vec::new();
        write_client_request(
            &mut request,
            "push.example:8080",
            "/ws?topic=a",
            key,
            &[("Origin", "https://example")],
        );

        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        assert_eq!(
            parsed.parse(&request),
            Ok(httparse::Status::Complete(request.len()))
        );
        assert_eq!(parsed.path, Some("/ws?topic=a"));
        assert!(parsed.headers.contains(&h("Host", "push.example:8080")));
        assert!(parsed.headers.contains(&h("Origin", "https://example")));
        let accept = server_handshake(
            parsed.method.unwrap(),
            parsed.version.unwrap(),
            parsed.headers,
        )
        .unwrap();

        let mut response = Vec::new();
        write_response(&mut response, &accept, &[]);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut headers);
        assert_eq!(
            parsed.parse(&response),
            Ok(httparse::Status::Complete(response.len()))
        );
        assert_eq!(
            check_server_response(parsed.code.unwrap(), parsed.headers, key),
            Ok(())
        );
        // The same response does not fit another key.
        assert_eq!(
            check_server_response(101, parsed.headers, KEY),
            Err(HandshakeError::BadAccept)
        );
    }

    #[test]
    fn client_rejects_bad_responses() {
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let good = [
            h("Upgrade", "websocket"),
            h("Connection", "Upgrade"),
            h("Sec-WebSocket-Accept", accept),
        ];
        assert_eq!(check_server_response(101, &good, KEY), Ok(()));
        assert_eq!(
            check_server_response(200, &good, KEY),
            Err(HandshakeError::Status(200))
        );
        assert_eq!(
            check_server_response(101, &good[1..], KEY),
            Err(HandshakeError::NotUpgrade)
        );
        assert_eq!(
            check_server_response(101, &good[..2], KEY),
            Err(HandshakeError::BadAccept)
        );
        let wrong = [
            good[0],
            good[1],
            h("Sec-WebSocket-Accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ];
        assert_eq!(
            check_server_response(101, &wrong, KEY),
            Err(HandshakeError::BadAccept)
        );
        let extension = [
            good[0],
            good[1],
            good[2],
            h("Sec-WebSocket-Extensions", "permessage-deflate"),
        ];
        assert_eq!(
            check_server_response(101, &extension, KEY),
            Err(HandshakeError::UnexpectedExtension)
        );
        assert_eq!(HandshakeError::BadAccept.status(), 502);
    }
}
