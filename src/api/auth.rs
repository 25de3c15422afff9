//! Bearer authentication and the scope check (§2). Every failure is the
//! same 401; the log says why, and which client when known, but never
//! carries the token.

use std::sync::RwLock;

use actix_web::http::header;
use actix_web::HttpRequest;
use couic_common::Group;
use uuid::Uuid;

use super::error::ApiError;
use crate::rbac::{grants, ClientRegistry, Scope};

/// The authenticated client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub group: Group,
}

/// The token of `Authorization: Bearer <uuid>`: the literal `Bearer ` prefix
/// (capital B, one space), then any spelling of a UUID.
fn bearer(req: &HttpRequest) -> Result<Uuid, &'static str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or("missing Authorization header")?;
    let value = value
        .to_str()
        .map_err(|_| "unreadable Authorization header")?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or("not a Bearer authorization")?;
    Uuid::parse_str(token).map_err(|_| "token is not a UUID")
}

/// Authenticates the request and checks that the client's group grants
/// `scope`.
pub fn authorize(
    registry: &RwLock<ClientRegistry>,
    req: &HttpRequest,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let route = || format!("{} {}", req.method(), req.path());
    let token = bearer(req).map_err(|reason| {
        tracing::warn!(route = %route(), "unauthorized: {reason}");
        ApiError::Unauthorized
    })?;
    let registry = registry.read().unwrap_or_else(|e| e.into_inner());
    let Some(client) = registry.authenticate(&token) else {
        tracing::warn!(route = %route(), "unauthorized: unknown token");
        return Err(ApiError::Unauthorized);
    };
    if !grants(client.group, scope) {
        tracing::warn!(
            route = %route(),
            client.name = %client.name,
            client.group = %client.group,
            scope = %scope.as_string(),
            "unauthorized: scope not granted"
        );
        return Err(ApiError::Unauthorized);
    }
    Ok(Caller {
        name: client.name.to_string(),
        group: client.group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::ClientRecord;
    use actix_web::test::TestRequest;
    use couic_common::ClientName;

    #[test]
    fn bearer_syntax_is_strict() {
        let rec = ClientRecord::generate(ClientName::parse("m").unwrap(), Group::Monitoring);
        let registry = RwLock::new(ClientRegistry::new(vec![rec.clone()]));
        let with = |value: &str| {
            let req = TestRequest::default()
                .insert_header(("authorization", value))
                .to_http_request();
            authorize(&registry, &req, Scope::STATS_LIST)
        };
        let t = rec.token;
        assert_eq!(with(&format!("Bearer {t}")).unwrap().name, "m");
        assert!(with(&format!("Bearer {}", t.simple())).is_ok());
        assert!(with(&format!("Bearer {}", t.urn())).is_ok());
        assert!(with(&format!("Bearer {}", t.braced())).is_ok());
        for bad in [
            format!("bearer {t}"),
            format!("Bearer  {t}"),
            format!("Basic {t}"),
            format!("{t}"),
        ] {
            assert!(matches!(with(&bad), Err(ApiError::Unauthorized)), "{bad}");
        }
        assert!(with(&format!("Bearer {}", Uuid::new_v4())).is_err());
        let req = TestRequest::default()
            .insert_header(("authorization", format!("Bearer {t}")))
            .to_http_request();
        assert!(
            authorize(&registry, &req, Scope::POLICY_LIST).is_err(),
            "monitoring cannot list entries"
        );
        assert!(authorize(
            &registry,
            &TestRequest::default().to_http_request(),
            Scope::STATS_LIST
        )
        .is_err());
    }
}
