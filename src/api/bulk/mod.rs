//! `POST /v1/{policy}/bulk`, beyond the reference: many removes and adds
//! in one request, with one result per item.
//!
//! Body: `{"atomic": bool, "remove": ["cidr", ...], "add": [EntryRequest, ...]}`
//! (every key optional). Removes are played first, then adds, each in
//! order, with the rules of the single-entry routes. With `atomic`, every
//! item is validated and played before anything is written, and one failure
//! means nothing is applied (the others answer 424). The answer is 200 with
//! the per-item results whenever the body could be read.

mod answer;

use std::borrow::Cow;
use std::fmt;

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{Cidr, ErrorBody, Metadata};
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::body::{self, BodyError};
use super::error::{ApiError, Fields};
use super::policies::{self, EntryParts};
use super::{params, AppState};
use crate::actors::map_writer::ApplyBatch;
use crate::actors::messages::Origin;
use crate::batch::{Mode, Op, Rules};
use crate::firewall::WriteError;
use crate::rbac::Scope;
use answer::{json_answer, Answer, CidrText, ANSWER_ITEM_BYTES};

/// Largest bulk body (32 MiB, several hundred thousand entries).
pub const BULK_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The body. Strings borrow from the request bytes unless they hold
/// escapes: a bulk request may hold hundreds of thousands of entries.
/// Only a JSON object is one: serde's derive would also take an array of
/// the fields in order (`[]` meaning every default), which the document
/// does not describe and no client means.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct BulkRequest<'a> {
    #[serde(default)]
    pub atomic: bool,
    #[serde(default, borrow)]
    pub remove: Vec<Text<'a>>,
    #[serde(default, borrow)]
    pub add: Vec<BulkEntry<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for BulkRequest<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = BulkRequest<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                BulkRequest::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

/// An add item: the fields of `POST /v1/{policy}` (object or positional form).
#[derive(Debug, Deserialize)]
pub struct BulkEntry<'a> {
    #[serde(borrow)]
    pub cidr: Text<'a>,
    #[serde(default, borrow)]
    pub tag: Option<Text<'a>>,
    pub expiration: u64,
    /// Boxed: most items have none, and the list is sized by its largest item.
    #[serde(default)]
    pub metadata: Option<Box<Metadata>>,
}

/// A string of the body, borrowed when it has no escapes. (`Cow<str>`
/// borrows only as a direct field: inside a `Vec` or an `Option` it always
/// copies.)
#[derive(Debug)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(TextVisitor).map(Text)
    }
}

/// The CIDR of an item: normalised when it parsed, as sent otherwise.
#[derive(Debug)]
pub enum ItemCidr<'a> {
    Parsed(Cidr),
    Raw(&'a str),
}

impl Serialize for ItemCidr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ItemCidr::Parsed(c) => s.serialize_str(CidrText::new(*c).as_str()),
            ItemCidr::Raw(r) => s.serialize_str(r),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ItemResult<'a> {
    /// The normalised CIDR, or the text sent when it is not one.
    pub cidr: ItemCidr<'a>,
    /// What the single-entry route would have answered: 201 / 204 on
    /// success, 409, 404, 422, 500, or 424 when an atomic batch was refused
    /// because of another item.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

fn failure(cidr: ItemCidr<'_>, error: ApiError) -> ItemResult<'_> {
    let (status, body) = error.envelope();
    ItemResult {
        cidr,
        status: status.as_u16(),
        error: Some(body),
    }
}

/// The request once validated: the operations for the MapWriter, and what
/// the answer needs of the items that did not become one.
struct Checked<'a> {
    ops: Vec<Op>,
    /// The CIDR of each operation, to answer with once `ops` is sent.
    cidrs: Vec<Cidr>,
    /// Items refused by validation: (item index, text sent, fields), in
    /// order. Items are numbered removes first, then adds.
    invalid: Vec<(usize, Cow<'a, str>, Fields)>,
    removes: usize,
    adds: usize,
}

fn check(request: BulkRequest<'_>, now: u64) -> Checked<'_> {
    let (removes, adds) = (request.remove.len(), request.add.len());
    let mut checked = Checked {
        ops: Vec::with_capacity(removes + adds),
        cidrs: Vec::with_capacity(removes + adds),
        invalid: Vec::new(),
        removes,
        adds,
    };
    for (i, Text(raw)) in request.remove.into_iter().enumerate() {
        match raw.parse::<Cidr>() {
            Ok(c) => {
                let c = c.normalized();
                checked.ops.push(Op::Remove(c));
                checked.cidrs.push(c);
            }
            Err(e) => {
                let mut fields = Fields::default();
                fields.invalid("cidr", e);
                checked.invalid.push((i, raw, fields));
            }
        }
    }
    for (i, entry) in request.add.into_iter().enumerate() {
        let parts = EntryParts {
            cidr: &entry.cidr.0,
            tag: entry.tag.as_ref().map(|t| &*t.0),
            expiration: entry.expiration,
            metadata: entry.metadata.map(|m| *m),
        };
        match policies::validate_parts(parts, now) {
            Ok(e) => {
                checked.cidrs.push(e.cidr);
                checked.ops.push(Op::Add(e));
            }
            Err(fields) => checked.invalid.push((removes + i, entry.cidr.0, fields)),
        }
    }
    checked
}

pub async fn bulk(
    req: HttpRequest,
    state: Data<AppState>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.authorize(&req, Scope::POLICY_CREATE)?;
    state.authorize(&req, Scope::POLICY_DELETE)?;
    let policy = params::policy(&req)?;
    let bytes = body::read(&req, payload, BULK_BODY_LIMIT, state.body_deadline)
        .await
        .map_err(BodyError::envelope)?;
    let request: BulkRequest = body::parse(&bytes).map_err(BodyError::envelope)?;
    let atomic = request.atomic;
    let mut checked = check(request, state.clock.now());

    let ops = std::mem::take(&mut checked.ops);
    let results = if atomic && !checked.invalid.is_empty() {
        vec![Err(WriteError::Aborted); ops.len()]
    } else {
        let origin = Origin::api(&caller.name);
        state
            .writer
            .send(ApplyBatch {
                policy,
                ops,
                origin,
                rules: Rules {
                    protect_sets: true,
                    atomic,
                    mode: Mode::Strict,
                },
            })
            .await?
            .await
    };

    let answer = Answer {
        atomic,
        applied: results.iter().filter(|r| r.is_ok()).count(),
        checked: &checked,
        results: &results,
    };
    let items = checked.removes + checked.adds;
    tracing::info!(
        client.name = %caller.name,
        %policy,
        atomic,
        applied = answer.applied,
        failed = items - answer.applied,
        "bulk request applied"
    );
    Ok(json_answer(&answer, 64 + items * ANSWER_ITEM_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_text_is_display() {
        for c in [
            "0.0.0.0/0",
            "1.2.3.4/32",
            "10.20.30.0/24",
            "255.255.255.255/32",
            "100.9.99.199/8",
            "2001:db8::/32",
            "::ffff:1.2.3.4/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "::/0",
        ] {
            let cidr: Cidr = c.parse().unwrap();
            assert_eq!(CidrText::new(cidr).as_str(), cidr.to_string());
        }
    }

    #[test]
    fn a_success_is_written_as_serde_writes_it() {
        let body =
            br#"{"remove":["1.1.1.1/32"],"add":[{"cidr":"2001:DB8::1/128","expiration":0}]}"#;
        let checked = check(body::parse(body).unwrap(), 100);
        let results = vec![Ok(()), Ok(())];
        let answer = Answer {
            atomic: true,
            applied: 2,
            checked: &checked,
            results: &results,
        };
        let mut bytes = Vec::new();
        answer.write(&mut bytes).unwrap();
        let item = |cidr: &str, status| ItemResult {
            cidr: ItemCidr::Parsed(cidr.parse().unwrap()),
            status,
            error: None,
        };
        let expected = format!(
            r#"{{"atomic":true,"applied":2,"failed":0,"remove":[{}],"add":[{}]}}"#,
            serde_json::to_string(&item("1.1.1.1/32", 204)).unwrap(),
            serde_json::to_string(&item("2001:db8::1/128", 201)).unwrap(),
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }

    #[test]
    fn only_an_object_is_a_request() {
        for body in [&b"[]"[..], b"[false]", b"null", b"1"] {
            assert!(
                matches!(body::parse::<BulkRequest>(body), Err(BodyError::Data(e)) if e.contains("a JSON object")),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let request: BulkRequest = body::parse(b"{}").unwrap();
        assert!(!request.atomic && request.remove.is_empty() && request.add.is_empty());
    }

    #[test]
    fn text_borrows_unless_escaped() {
        let body = br#"{"remove":["1.1.1.1/32","\u0031.1.1.2/32"]}"#;
        let request: BulkRequest = body::parse(body).unwrap();
        assert!(matches!(request.remove[0].0, Cow::Borrowed("1.1.1.1/32")));
        assert!(matches!(&request.remove[1].0, Cow::Owned(s) if s == "1.1.1.2/32"));
        assert!(matches!(
            body::parse::<BulkRequest>(br#"{"remove":[1]}"#),
            Err(BodyError::Data(e)) if e.contains("expected a string")
        ));
    }

    #[test]
    fn answer_keeps_request_order_around_invalid_items() {
        let body = br#"{"remove":["x","1.1.1.1/32"],
            "add":[{"cidr":"2.2.2.2/32","expiration":0},{"cidr":"y","expiration":0},
                   {"cidr":"3.3.3.3/32","expiration":0}]}"#;
        let checked = check(body::parse(body).unwrap(), 100);
        assert_eq!(checked.ops.len(), 3);
        let results = vec![
            Ok(()),
            Err(WriteError::Duplicate("2.2.2.2/32".parse().unwrap())),
            Ok(()),
        ];
        let answer = Answer {
            atomic: false,
            applied: 2,
            checked: &checked,
            results: &results,
        };
        let mut bytes = Vec::new();
        answer.write(&mut bytes).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let list = |key: &str| -> Vec<(String, u64)> {
            out[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["cidr"].as_str().unwrap().into(),
                        i["status"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(
            (out["applied"].clone(), out["failed"].clone()),
            (2.into(), 3.into())
        );
        let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(c, s)| (c.to_string(), *s)).collect()
        };
        assert_eq!(list("remove"), owned(&[("x", 422), ("1.1.1.1/32", 204)]));
        assert_eq!(
            list("add"),
            owned(&[("2.2.2.2/32", 409), ("y", 422), ("3.3.3.3/32", 201)])
        );
        assert_eq!(out["add"][1]["error"]["errors"]["cidr"]["code"], "invalid");
        assert!(out["add"][2].get("error").is_none());
    }
}
