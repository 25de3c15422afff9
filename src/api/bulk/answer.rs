//! The bulk route's answer, written by hand into one buffer. Kept apart
//! from serde on purpose: serialising each item through serde's struct
//! machinery, and each IPv4 CIDR through `Display`, was the largest part
//! of a bulk answer of 262,144 items (measured with `make bench`'s bulk
//! figures when it was written; see commit "bulk: write a successful
//! item's answer by hand"). A success, most items, is written directly:
//! its CIDR text (digits, dots, colons and a slash) needs no escaping. A
//! refusal still goes through `serde_json`, and a test checks the
//! hand-written items against serde's output.

use std::net::IpAddr;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use couic_common::Cidr;

use super::{failure, Checked, ItemCidr};
use crate::api::ApiError;
use crate::firewall::WriteError;

/// A CIDR written out on the stack: `Display` for IPv6, by hand for IPv4
/// (a bulk answer writes one per item, and `Display` costs more than the
/// rest of the item).
pub(super) struct CidrText {
    buf: [u8; 64],
    len: usize,
}

impl CidrText {
    pub(super) fn new(cidr: Cidr) -> Self {
        let mut text = CidrText {
            buf: [0; 64],
            len: 0,
        };
        match cidr.addr() {
            IpAddr::V4(a) => {
                for (i, octet) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    text.decimal(octet);
                }
                text.push(b'/');
                text.decimal(cidr.prefix_len());
            }
            IpAddr::V6(_) => {
                use std::io::Write;
                let mut out = &mut text.buf[..];
                write!(out, "{cidr}").expect("a CIDR fits in 64 bytes");
                text.len = 64 - out.len();
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn decimal(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ASCII")
    }
}

/// The answer, written straight from the results: `{"atomic", "applied",
/// "failed", "remove": [ItemResult], "add": [ItemResult]}`.
pub(super) struct Answer<'r> {
    pub atomic: bool,
    pub applied: usize,
    pub checked: &'r Checked<'r>,
    pub results: &'r [Result<(), WriteError>],
}

impl Answer<'_> {
    /// Writes the answer as `serde_json` writes it compact. A success, most
    /// items, is written by hand (its CIDR text needs no escaping); a
    /// failure goes through `serde_json`.
    pub(super) fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let c = self.checked;
        let invalid_removes = c
            .invalid
            .iter()
            .take_while(|(i, ..)| *i < c.removes)
            .count();
        out.extend_from_slice(br#"{"atomic":"#);
        out.extend_from_slice(if self.atomic { b"true" } else { b"false" });
        out.extend_from_slice(br#","applied":"#);
        serde_json::to_writer(&mut *out, &self.applied)?;
        out.extend_from_slice(br#","failed":"#);
        serde_json::to_writer(&mut *out, &(c.removes + c.adds - self.applied))?;
        out.extend_from_slice(br#","remove":"#);
        self.write_items(out, 0..c.removes, 0, StatusCode::NO_CONTENT)?;
        out.extend_from_slice(br#","add":"#);
        let first_op = c.removes - invalid_removes;
        self.write_items(
            out,
            c.removes..c.removes + c.adds,
            first_op,
            StatusCode::CREATED,
        )?;
        out.push(b'}');
        Ok(())
    }

    /// The items `range`, whose valid ones are the operations from `op` on.
    fn write_items(
        &self,
        out: &mut Vec<u8>,
        range: std::ops::Range<usize>,
        mut op: usize,
        success: StatusCode,
    ) -> serde_json::Result<()> {
        let c = self.checked;
        let mut invalid = c
            .invalid
            .iter()
            .skip_while(|(i, ..)| *i < range.start)
            .peekable();
        out.push(b'[');
        for item in range.clone() {
            if item > range.start {
                out.push(b',');
            }
            if let Some((_, raw, fields)) = invalid.next_if(|(i, ..)| *i == item) {
                let error = ApiError::Validation(fields.clone());
                serde_json::to_writer(&mut *out, &failure(ItemCidr::Raw(raw), error))?;
                continue;
            }
            let cidr = c.cidrs[op];
            match &self.results[op] {
                Ok(()) => {
                    out.extend_from_slice(br#"{"cidr":""#);
                    out.extend_from_slice(CidrText::new(cidr).as_str().as_bytes());
                    out.extend_from_slice(br#"","status":"#);
                    out.extend_from_slice(success.as_str().as_bytes());
                    out.push(b'}');
                }
                Err(e) => {
                    let error = ApiError::Write(e.clone());
                    serde_json::to_writer(&mut *out, &failure(ItemCidr::Parsed(cidr), error))?;
                }
            }
            op += 1;
        }
        out.push(b']');
        Ok(())
    }
}

/// A JSON answer written into a buffer sized for it up front, with the
/// headers of `api::json`.
pub(super) fn json_answer(answer: &Answer, capacity: usize) -> HttpResponse {
    let mut body = Vec::with_capacity(capacity);
    match answer.write(&mut body) {
        Ok(()) => HttpResponse::build(StatusCode::OK)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a response");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// About the size of one item of the answer: `{"cidr":"…","status":201},`.
pub(super) const ANSWER_ITEM_BYTES: usize = 48;
