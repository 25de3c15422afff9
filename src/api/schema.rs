//! What `openapi/openapi.json` says of each value the API validates, built
//! from the definitions the code validates with (patterns, lengths, ranges,
//! enums). The document holds each in `components.schemas` and refers to it
//! wherever that value goes; `tests/api_openapi.rs` checks both, so the
//! rules are written once, here and in `couic_common`, and the document
//! follows.

use couic_common::cidr::{cidr_pattern, ip_pattern, IPV6_MAX_PREFIX};
use couic_common::names::{caseless_pattern, NAME_MAX_LEN, NAME_PATTERN};
use couic_common::tag::{RESERVED_TAG, TAG_MAX_LEN, TAG_PATTERN};
use couic_common::{Group, Policy, SHARDS};
use serde_json::{json, Value};

/// A client or set name.
fn name(description: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": NAME_MAX_LEN,
        "pattern": NAME_PATTERN,
        "description": description,
    })
}

/// `(name in components.schemas, schema)` of every validated value.
pub fn components() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Policy",
            json!({
                "type": "string",
                "enum": Policy::ALL.map(Policy::as_str),
                "description": "Case-sensitive.",
            }),
        ),
        (
            "Group",
            json!({"type": "string", "enum": Group::ALL.map(Group::as_str)}),
        ),
        (
            "GroupRequest",
            json!({
                "type": "string",
                "pattern": Group::request_pattern(),
                "description": "A group in any case (`ADMIN` works, `client_ro` does not).",
            }),
        ),
        ("ClientName", name("ASCII letters, digits, `-` and `_`.")),
        (
            "SetName",
            name("ASCII letters, digits, `-` and `_`, without the `.couic` extension."),
        ),
        (
            "Tag",
            json!({
                "type": "string",
                "nullable": true,
                "maxLength": TAG_MAX_LEN,
                "pattern": TAG_PATTERN,
                "not": {"type": "string", "pattern": caseless_pattern(&[RESERVED_TAG])},
                "description": "Empty or null = untagged. Not `untagged` in any case; \
                    no `.`, so never the `.couic` of set entries.",
            }),
        ),
        (
            "Cidr",
            json!({
                "type": "string",
                "pattern": cidr_pattern(),
                "description": "`address/prefix`, prefix mandatory (0-32 for IPv4, 0-128 \
                    for IPv6, no leading zero); host bits are cleared where an entry is stored.",
                "example": "192.0.2.0/24",
            }),
        ),
        (
            "IpAddress",
            json!({
                "type": "string",
                "pattern": ip_pattern(),
                "description": "An IPv4 or IPv6 address: no brackets, no zone, no prefix.",
                "example": "192.0.2.1",
            }),
        ),
        (
            "Prefix",
            json!({
                "type": "integer",
                "minimum": 0,
                "maximum": IPV6_MAX_PREFIX,
                "description": "A prefix length: at most 32 with an IPv4 address (400 \
                    otherwise), 128 with an IPv6 one.",
            }),
        ),
        (
            "Shard",
            json!({"type": "integer", "minimum": 0, "maximum": SHARDS - 1}),
        ),
        (
            "Expiration",
            json!({
                "type": "integer",
                "format": "uint64",
                "minimum": 0,
                "maximum": u64::MAX,
                "description": "Absolute Unix seconds; 0 = never, otherwise strictly after \
                    the server's now (422 otherwise).",
            }),
        ),
    ]
}
