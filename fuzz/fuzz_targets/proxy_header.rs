//! PROXY protocol headers: a header built from arbitrary addresses, in either version and
//! cut into arbitrary reads, is read back as exactly those addresses and its own length,
//! with what follows untouched; arbitrary bytes never panic, a whole header is never
//! claimed longer than what was read, and no shorter first read of it is anything but partial.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use berth_core::proxy_protocol::{parse, Header, Parsed, V2_SIGNATURE};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    v2: bool,
    tlv: Vec<u8>,
    rest: Vec<u8>,
    cut: usize,
    noise: Vec<u8>,
}

fn ip(bytes: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

fuzz_target!(|input: Input| {
    // Arbitrary bytes: no panic, and a whole header within what was read.
    // Arbitrary bytes: no panic, a whole header within what was read, and the same answer
    // however the bytes were cut into reads (every shorter first read waits for more).
    if let Parsed::Complete(_, used) = parse(&input.noise) {
        assert!(used <= input.noise.len());
        let cut = input.cut % used.max(1);
        assert_eq!(parse(&input.noise[..cut]), Parsed::Partial, "{input:?}");
    }
    let (src, dst) = (ip(input.src, input.v6), ip(input.dst, input.v6));
    let mut header = Vec::new();
    if input.v2 {
        header.extend_from_slice(&V2_SIGNATURE);
        header.push(0x21);
        header.push(if input.v6 { 0x21 } else { 0x11 });
        let tlv = &input.tlv[..input.tlv.len().min(256)];
        let mut body = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        body.extend_from_slice(&input.sport.to_be_bytes());
        body.extend_from_slice(&input.dport.to_be_bytes());
        body.extend_from_slice(tlv);
        header.extend_from_slice(&(body.len() as u16).to_be_bytes());
        header.extend_from_slice(&body);
    } else {
        let family = if input.v6 { "TCP6" } else { "TCP4" };
        header.extend_from_slice(
            format!("PROXY {family} {src} {dst} {} {}\r\n", input.sport, input.dport).as_bytes(),
        );
    }
    let mut stream = header.clone();
    stream.extend_from_slice(&input.rest);
    let want = Parsed::Complete(
        Header::Proxied {
            source: SocketAddr::new(src, input.sport),
            destination: SocketAddr::new(dst, input.dport),
        },
        header.len(),
    );
    assert_eq!(parse(&stream), want, "{input:?}");
    // Any first read shorter than the header waits for more.
    let cut = input.cut % header.len();
    assert_eq!(parse(&stream[..cut]), Parsed::Partial, "{input:?}");
});
