//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends at the
//! start of a connection, before TLS or HTTP, naming the client it took the connection from.
//! Pure parsing; the listener decides whose header it believes (`[listen] proxy-protocol`).
//!
//! - v1: `PROXY TCP4|TCP6 <source> <destination> <source port> <destination port>\r\n`, or
//!   `PROXY UNKNOWN ...\r\n`; at most 107 bytes.
//! - v2: a 12-byte signature, version and command, family, length, the addresses, and
//!   type-length-value fields (skipped). `LOCAL`, `UNKNOWN` and families other than TCP over
//!   IPv4 and IPv6 name no client ([`Header::Local`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The longest v1 header, `\r\n` included.
const V1_MAX: usize = 107;

/// The longest v2 header berth reads (16 bytes and the length field's); longer ones (large
/// type-length-value sections) are refused rather than buffered.
pub const V2_MAX: usize = 16 + 4096;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client (source) and the address it connected to (destination).
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The balancer's address the client connected to.
        destination: SocketAddr,
    },
    /// No client named (`LOCAL`, `UNKNOWN`, a family other than TCP over IPv4 or IPv6):
    /// the balancer may be speaking for anyone (HAProxy sends these for clients of a UNIX
    /// socket), so the connection has no readable client.
    Local,
}

/// What the bytes read so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `usize` bytes long; what follows it is the connection's own.
    Complete(Header, usize),
    /// The start of a header: read more.
    Partial,
    /// Not a header, or a broken one: why.
    Invalid(&'static str),
}

/// Reads the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let m = buf.len().min(V2_SIGNATURE.len());
    if buf[..m] == V2_SIGNATURE[..m] {
        return if buf.len() < 16 {
            Parsed::Partial
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("a v1 header longer than 107 bytes")
        } else if buf.contains(&b'\n') || buf.contains(&b'\r') && !buf.ends_with(b"\r") {
            Parsed::Invalid("a v1 header not ended by CRLF")
        } else {
            Parsed::Partial
        };
    };
    if end + 2 > V1_MAX {
        return Parsed::Invalid("a v1 header longer than 107 bytes");
    }
    // A CR or LF before the CRLF: invalid however the bytes were cut into reads.
    if buf[..end].iter().any(|b| *b == b'\r' || *b == b'\n') {
        return Parsed::Invalid("a v1 header not ended by CRLF");
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid("a v1 header that is not text");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Some(src), Some(dst)) = (v1_ip(src, family), v1_ip(dst, family)) else {
                return Parsed::Invalid("a v1 header with a bad address");
            };
            let (Some(sport), Some(dport)) = (v1_port(sport), v1_port(dport)) else {
                return Parsed::Invalid("a v1 header with a bad port");
            };
            Header::Proxied {
                source: SocketAddr::new(src, sport),
                destination: SocketAddr::new(dst, dport),
            }
        }
        _ => return Parsed::Invalid("a v1 header of another form"),
    };
    Parsed::Complete(header, end + 2)
}

/// An address of `family` as v1 writes it.
fn v1_ip(text: &str, family: &str) -> Option<IpAddr> {
    match family {
        "TCP4" => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        _ => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// A port as v1 writes it: decimal, no sign, no leading zero.
fn v1_port(text: &str) -> Option<u16> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0F);
    if version != 2 {
        return Parsed::Invalid("a v2 header of another version");
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX {
        return Parsed::Invalid("a v2 header longer than berth reads");
    }
    if buf.len() < total {
        return Parsed::Partial;
    }
    let body = &buf[16..total];
    let header = match command {
        0 => Header::Local,
        1 => match family {
            0x11 if len >= 12 => {
                let ip = |at: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        body[at],
                        body[at + 1],
                        body[at + 2],
                        body[at + 3],
                    ))
                };
                let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            0x21 if len >= 36 => {
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            0x11 | 0x21 => return Parsed::Invalid("a v2 header too short for its addresses"),
            // UNSPEC, UDP, UNIX: accepted, and the addresses ignored (the specification).
            0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Header::Local,
            _ => return Parsed::Invalid("a v2 header of an unknown family"),
        },
        _ => return Parsed::Invalid("a v2 header with an unknown command"),
    };
    Parsed::Complete(header, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: source.parse().expect("source"),
            destination: destination.parse().expect("destination"),
        }
    }

    #[test]
    fn v1_headers_are_read_whole_and_only_whole() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let len = line.iter().position(|b| *b == b'\n').expect("lf") + 1;
        assert_eq!(
            parse(line),
            Parsed::Complete(proxied("192.0.2.7:56324", "10.0.0.1:443"), len)
        );
        // Every prefix is partial: a header split across reads waits for the rest.
        for cut in 0..len {
            assert_eq!(parse(&line[..cut]), Parsed::Partial, "{cut}");
        }
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1 80\r\n"),
            Parsed::Complete(proxied("[2001:db8::1]:1", "[::1]:80"), 33)
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 whatever\r\n"),
            Parsed::Complete(Header::Local, 32)
        );
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 056324 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 ::1 10.0.0.1 1 443\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert!(matches!(parse(long.as_bytes()), Parsed::Invalid(_)));
        assert!(matches!(parse(&long.as_bytes()[..107]), Parsed::Invalid(_)));
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).expect("len").to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v2_headers_are_read_whole_and_only_whole() {
        let mut four = vec![192, 0, 2, 7, 10, 0, 0, 1];
        four.extend_from_slice(&56324u16.to_be_bytes());
        four.extend_from_slice(&443u16.to_be_bytes());
        // A type-length-value field after the addresses is skipped.
        four.extend_from_slice(&[0x04, 0x00, 0x01, 0xAA]);
        let header = v2(1, 0x11, &four);
        let mut stream = header.clone();
        stream.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&stream),
            Parsed::Complete(proxied("192.0.2.7:56324", "10.0.0.1:443"), header.len())
        );
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Parsed::Partial, "{cut}");
        }
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().expect("v6").octets());
        six.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        six.extend_from_slice(&[0, 1, 0, 80]);
        assert_eq!(
            parse(&v2(1, 0x21, &six)),
            Parsed::Complete(proxied("[2001:db8::7]:1", "[::1]:80"), 16 + 36)
        );
        // LOCAL, and families with no TCP client: the peer stands.
        assert_eq!(
            parse(&v2(0, 0x11, &four)),
            Parsed::Complete(Header::Local, 16 + 16)
        );
        assert_eq!(
            parse(&v2(1, 0x00, &[])),
            Parsed::Complete(Header::Local, 16)
        );
        assert_eq!(
            parse(&v2(1, 0x12, &four)),
            Parsed::Complete(Header::Local, 16 + 16)
        );
        // Too short for its family, an unknown command or version, too long.
        assert!(matches!(
            parse(&v2(1, 0x11, &four[..8])),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(&v2(2, 0x11, &four)), Parsed::Invalid(_)));
        let mut v3 = v2(1, 0x11, &four);
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Parsed::Invalid(_)));
        let mut huge = v2(1, 0x11, &four);
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
    }

    #[test]
    fn stray_line_ends_and_unknown_families_are_refused_however_the_bytes_come() {
        let stray = b"PROXY UNKNOWN \nX\r\n";
        for cut in 1..=stray.len() {
            assert_ne!(
                parse(&stray[..cut]),
                Parsed::Complete(Header::Local, stray.len()),
                "{cut}"
            );
        }
        assert!(matches!(parse(stray), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY UNKNOWN a\rb\r\n"),
            Parsed::Invalid(_)
        ));
        for family in [0x41, 0xFF, 0x01, 0x13] {
            assert!(
                matches!(parse(&v2(1, family, &[0; 12])), Parsed::Invalid(_)),
                "{family:#x}"
            );
        }
    }
}
