//! One journal record on disk: a frame (payload length, CRC-32 of the
//! payload) around a put or a delete of one entry. Little-endian throughout.
//!
//! ```text
//! frame   len u32 | crc32 u32 | payload (len bytes)
//! payload op u8 (1 put, 2 delete) | policy u8 (0 drop, 1 ignore)
//!         | prefix u8 | family u8 (4, 6) | address (4 or 16 bytes)
//! put     + creation u64 | expiration u64 | origin u8 (1 api, 2 peer, 3 fleet)
//!         | client (node) u16+bytes | tag u16+bytes | metadata u32+JSON (0: none)
//! ```
//!
//! A frame of length 0 ends a file's records: files are zero-filled ahead
//! of the writer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use couic_common::{Cidr, Metadata, Policy};

use crate::firewall::NewEntry;
use crate::origin::Origin;

/// Length and CRC before each payload.
pub const FRAME_HEADER: usize = 8;
/// No payload is larger: a length past it is damage, not a record.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// A delete's frame, whole (an IPv6 address).
pub const DELETE_MAX: usize = FRAME_HEADER + 4 + 16;
/// A put's frame without its client name, tag and metadata.
pub const PUT_FIXED_MAX: usize = DELETE_MAX + 8 + 8 + 1 + 2 + 2 + 4;

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// An entry as the journal keeps it: everything needed to put it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    pub policy: Policy,
    pub entry: NewEntry,
    pub creation: u64,
    /// API or peer: only those entries are journaled.
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Put(Put),
    Delete { policy: Policy, cidr: Cidr },
}

/// Whether entries of this origin are journaled (sets are files; expiry is
/// only ever a cause).
pub fn durable(origin: &Origin) -> bool {
    matches!(
        origin,
        Origin::Api { .. } | Origin::Peer { .. } | Origin::Fleet { .. }
    )
}

/// The largest frame a put of `entry` by `origin` can take.
pub fn put_bound(entry: &NewEntry, origin: &Origin) -> usize {
    let client = origin.client().map_or(0, str::len);
    let metadata = entry.metadata.as_ref().map_or(0, metadata_len);
    PUT_FIXED_MAX + client + entry.tag.len() + metadata
}

fn metadata_len(m: &Metadata) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, m).map_or(0, |()| count.0)
}

/// Appends a put's frame to `buf`.
#[allow(clippy::too_many_arguments)]
pub fn encode_put(
    buf: &mut Vec<u8>,
    policy: Policy,
    cidr: Cidr,
    tag: &str,
    creation: u64,
    expiration: u64,
    origin: &Origin,
    metadata: Option<&Metadata>,
) {
    let start = open_frame(buf);
    head(buf, PUT, policy, cidr);
    buf.extend_from_slice(&creation.to_le_bytes());
    buf.extend_from_slice(&expiration.to_le_bytes());
    buf.push(match origin {
        Origin::Peer { .. } => 2,
        Origin::Fleet { .. } => 3,
        _ => 1,
    });
    short_bytes(buf, origin.client().unwrap_or("").as_bytes());
    short_bytes(buf, tag.as_bytes());
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_le_bytes());
    if let Some(m) = metadata {
        if serde_json::to_writer(&mut *buf, m).is_ok() {
            let len = (buf.len() - at - 4) as u32;
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        } else {
            buf.truncate(at + 4);
        }
    }
    close_frame(buf, start);
}

/// Appends the frame of `put` to `buf`.
pub fn encode(buf: &mut Vec<u8>, put: &Put) {
    encode_put(
        buf,
        put.policy,
        put.entry.cidr,
        &put.entry.tag,
        put.creation,
        put.entry.expiration,
        &put.origin,
        put.entry.metadata.as_ref(),
    );
}

/// Appends a delete's frame to `buf`.
pub fn encode_delete(buf: &mut Vec<u8>, policy: Policy, cidr: Cidr) {
    let start = open_frame(buf);
    head(buf, DELETE, policy, cidr);
    close_frame(buf, start);
}

fn open_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    start
}

fn close_frame(buf: &mut [u8], start: usize) {
    let payload = &buf[start + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn head(buf: &mut Vec<u8>, op: u8, policy: Policy, cidr: Cidr) {
    buf.push(op);
    buf.push(match policy {
        Policy::Drop => 0,
        Policy::Ignore => 1,
    });
    buf.push(cidr.prefix_len());
    match cidr.addr() {
        IpAddr::V4(a) => {
            buf.push(4);
            buf.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            buf.push(6);
            buf.extend_from_slice(&a.octets());
        }
    }
}

fn short_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(len as u16).to_le_bytes());
    buf.extend_from_slice(&bytes[..len]);
}

/// What is at an offset of a file.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A length of 0: no record from here.
    End,
    /// A whole, checked record and the frame's length.
    Record(Record, usize),
    /// A length past the file or the limit, a CRC that does not match, or
    /// a payload that does not decode.
    Bad,
}

/// Reads the frame at the start of `data`.
pub fn read_frame(data: &[u8]) -> Frame {
    if data.len() < FRAME_HEADER {
        return if data.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Bad
        };
    }
    let len = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return if crc == 0 { Frame::End } else { Frame::Bad };
    }
    if len > MAX_PAYLOAD || FRAME_HEADER + len > data.len() {
        return Frame::Bad;
    }
    let payload = &data[FRAME_HEADER..FRAME_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Frame::Bad;
    }
    match decode(payload) {
        Some(record) => Frame::Record(record, FRAME_HEADER + len),
        None => Frame::Bad,
    }
}

/// A cursor that yields `None` past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn text(&mut self, len: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(len)?).ok()
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let op = c.u8()?;
    let policy = match c.u8()? {
        0 => Policy::Drop,
        1 => Policy::Ignore,
        _ => return None,
    };
    let prefix = c.u8()?;
    let addr = match c.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(c.take(4)?).ok()?)),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(c.take(16)?).ok()?)),
        _ => return None,
    };
    let cidr = Cidr::new(addr, prefix).ok()?;
    let record = match op {
        DELETE => Record::Delete { policy, cidr },
        PUT => {
            let creation = c.u64()?;
            let expiration = c.u64()?;
            let kind = c.u8()?;
            let len = c.u16()? as usize;
            let client = c.text(len)?;
            let origin = match kind {
                1 => Origin::api(client),
                2 => Origin::peer(client),
                3 => Origin::fleet(client),
                _ => return None,
            };
            let len = c.u16()? as usize;
            let tag = c.text(len)?.to_string();
            let len = c.u32()? as usize;
            let metadata = match len {
                0 => None,
                n => Some(serde_json::from_slice(c.take(n)?).ok()?),
            };
            Record::Put(Put {
                policy,
                entry: NewEntry {
                    cidr,
                    tag,
                    expiration,
                    metadata,
                },
                creation,
                origin,
            })
        }
        _ => return None,
    };
    c.0.is_empty().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cidr: &str, metadata: Option<Metadata>) -> Put {
        Put {
            policy: Policy::Ignore,
            entry: NewEntry {
                cidr: cidr.parse().unwrap(),
                tag: "fail2ban".into(),
                expiration: 1_900_000_000,
                metadata,
            },
            creation: 1_800_000_000,
            origin: Origin::peer("node-b"),
        }
    }

    fn encode(p: &Put) -> Vec<u8> {
        let mut buf = Vec::new();
        super::encode(&mut buf, p);
        buf
    }

    #[test]
    fn puts_and_deletes_read_back_as_written() {
        let metadata = Metadata {
            kind: "ban".into(),
            detail: "sshd: 5 failures".into(),
            extra: None,
        };
        for p in [
            put("192.0.2.0/24", None),
            put("2001:db8::1/128", Some(metadata)),
        ] {
            let buf = encode(&p);
            assert!(
                buf.len() <= put_bound(&p.entry, &p.origin),
                "the bound holds"
            );
            assert_eq!(read_frame(&buf), Frame::Record(Record::Put(p), buf.len()));
        }
        let mut buf = Vec::new();
        let cidr: Cidr = "2001:db8::/32".parse().unwrap();
        encode_delete(&mut buf, Policy::Drop, cidr);
        assert_eq!(buf.len(), DELETE_MAX);
        let delete = Record::Delete {
            policy: Policy::Drop,
            cidr,
        };
        assert_eq!(read_frame(&buf), Frame::Record(delete, DELETE_MAX));
    }

    #[test]
    fn damage_is_told_from_the_end() {
        let buf = encode(&put("198.51.100.7/32", None));
        assert_eq!(read_frame(&[0; 32]), Frame::End);
        assert_eq!(read_frame(&[0; 3]), Frame::End);
        // Cut short, one bit flipped, a length past the limit.
        assert_eq!(read_frame(&buf[..buf.len() - 1]), Frame::Bad);
        let mut flipped = buf.clone();
        flipped[20] ^= 1;
        assert_eq!(read_frame(&flipped), Frame::Bad);
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_frame(&huge), Frame::Bad);
    }
}
