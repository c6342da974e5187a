//! The API's OpenAPI 3.1 description at `/api/openapi.json`, generated from the route
//! table: paths, methods and access come from the table itself, request and answer bodies
//! from the types each handler takes and returns (aide's traits, schemars' schemas), and
//! the refusals from the codes the table declares per route — which the appliance checks
//! against every refusal it actually sends (see [`Undocumented`]). Nothing is written down
//! twice, so the description cannot drift from what is served.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use aide::generate::GenContext;
use aide::openapi::{
    self, Components, Info, MediaType, OpenApi, Operation, Parameter, ParameterData,
    ParameterSchemaOrContent, PathItem, Paths, ReferenceOr, Response, Responses, SchemaObject,
    SecurityScheme, StatusCode as DocStatus,
};
use aide::{OperationInput, OperationOutput};
use axum::http::{Method, StatusCode};
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{Access, CSRF_HEADER, Route, SESSION_COOKIE};

mod answers;
pub(super) use answers::*;

/// Fills an operation from a handler's argument and answer types.
pub(super) type Describe = fn(&mut GenContext, &mut Operation);

pub(super) fn describe<I: OperationInput, O: OperationOutput>(
    ctx: &mut GenContext,
    operation: &mut Operation,
) {
    I::operation_input(ctx, operation);
    let inferred = O::inferred_responses(ctx, operation);
    let responses = operation.responses.get_or_insert_with(Responses::default);
    for (status, mut response) in inferred {
        if response.description.is_empty() {
            // A description is required; the body's schema says the rest.
            response.description = "Done.".into();
        }
        let response = ReferenceOr::Item(response);
        match status {
            Some(status) => {
                responses
                    .responses
                    .insert(DocStatus::Code(status), response);
            }
            None => responses.default = Some(response),
        }
    }
}

/// The status every refusal with this code carries. The description groups codes by it,
/// and a refusal sent with another status counts as undocumented.
pub fn status_of(code: &str) -> u16 {
    match code {
        "bad_message" | "bad_request" | "invalid_sdp" => 400,
        "bad_credentials" | "bad_second_factor" | "unauthenticated" => 401,
        "bad_setup_code" | "csrf" | "deactivated" | "forbidden" | "foreign_origin"
        | "invitation_invalid" | "no_consent" | "not_allowed" | "pin_invalid"
        | "sign_in_incomplete" | "wrong_device" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "already_joined" | "already_set_up" | "conflict" | "customer_absent" | "not_configured"
        | "unexpected" | "wrong_stage" => 409,
        "ended" => 410,
        "too_large" => 413,
        "unsupported_media_type" => 415,
        "invalid"
        | "invalid_recipient"
        | "password_letters_and_digits"
        | "password_own_details"
        | "password_too_common"
        | "password_too_long"
        | "password_too_short" => 422,
        "locked" => 423,
        "throttled" => 429,
        "headers_too_large" => 431,
        "delivery_failed" => 502,
        "store_unavailable" => 503,
        _ => 500,
    }
}

impl Route {
    /// Every refusal code this route can answer with: the handler's own (declared in the
    /// table) and those that come with its access, its method and the layers every route
    /// passes through.
    pub fn error_codes(&self) -> Vec<&'static str> {
        let mut codes: BTreeSet<&'static str> = self.errors.iter().copied().collect();
        // Any request may be malformed (a path parameter, a query, a body).
        codes.extend([
            "bad_request",
            "internal",
            "store_unavailable",
            "headers_too_large",
        ]);
        if matches!(self.method, Method::POST | Method::PATCH) {
            codes.insert("too_large");
        }
        if self.method != Method::GET {
            // Whoever sends the sign-in cookie along must send the CSRF header too.
            codes.insert("csrf");
        }
        match self.access {
            Access::Public => {}
            Access::Invitation => {
                codes.insert("unauthenticated");
            }
            Access::SigningIn => {
                codes.insert("unauthenticated");
            }
            Access::Technician => {
                codes.extend(["unauthenticated", "sign_in_incomplete"]);
            }
            Access::Admin => {
                codes.extend(["unauthenticated", "sign_in_incomplete", "forbidden"]);
            }
        }
        codes.into_iter().collect()
    }

    /// Whether a refusal this route sent is one its description lists.
    pub(super) fn documents(&self, status: StatusCode, code: &str) -> bool {
        status.as_u16() == status_of(code) && self.error_codes().contains(&code)
    }
}

/// Refusals a route sent that its description does not list: a warning in the log for an
/// operator, and a list the test suite checks is empty after every appliance it ran.
#[derive(Default)]
pub struct Undocumented(Mutex<BTreeSet<String>>);

impl Undocumented {
    pub(super) fn note(&self, route: &Route, status: StatusCode, code: &str) {
        let entry = format!(
            "{} {} answered {} {code}",
            route.method,
            route.path,
            status.as_u16()
        );
        tracing::warn!(refusal = %entry, "a route answered with a refusal its description does not list");
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(entry);
    }

    pub fn seen(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// The code of a refusal, attached to the answer so the route layer can check it.
#[derive(Clone, Copy)]
pub(super) struct RefusalCode(pub &'static str);

/// The description, built once: it depends on nothing but the code.
pub(super) fn document() -> &'static [u8] {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_vec(&build(&super::routes())).unwrap_or_default())
}

fn build(routes: &[Route]) -> Value {
    aide::generate::reset_context();
    let mut paths: IndexMap<String, ReferenceOr<PathItem>> = IndexMap::new();
    let schemas = aide::generate::in_context(|ctx| {
        for route in routes {
            let operation = operation(ctx, route);
            let item = paths
                .entry(route.path.to_owned())
                .or_insert_with(|| ReferenceOr::Item(PathItem::default()));
            let ReferenceOr::Item(item) = item else {
                continue;
            };
            let slot = match route.method {
                Method::GET => &mut item.get,
                Method::POST => &mut item.post,
                Method::PATCH => &mut item.patch,
                Method::DELETE => &mut item.delete,
                Method::PUT => &mut item.put,
                _ => continue,
            };
            *slot = Some(operation);
        }
        ctx.schema.take_definitions(true)
    });
    let mut components = Components::default();
    for (name, schema) in schemas {
        if let Ok(json_schema) = serde_json::from_value(schema) {
            components.schemas.insert(
                name,
                SchemaObject {
                    json_schema,
                    example: None,
                    external_docs: None,
                },
            );
        }
    }
    components.schemas.insert(
        "Refusal".into(),
        SchemaObject {
            json_schema: refusal_schema(),
            example: None,
            external_docs: None,
        },
    );
    components.security_schemes = security_schemes();
    let document = OpenApi {
        openapi: "3.1.0".into(),
        info: Info {
            title: "Sightline".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: Some("Live camera remote support, self-hosted".into()),
            description: Some(
                "Every refusal is JSON, `{\"error\": code, \"message\": …}`; each \
                 operation lists the codes it can answer with under their status. A \
                 console user signs in with `POST /api/login` and is then identified by \
                 the `__Host-sightline` cookie; state-changing requests that send it must \
                 also send the `X-Sightline-CSRF` header (any value). A customer is \
                 identified by the invitation token as a bearer token and, once joined, \
                 by the device secret in `X-Sightline-Device`. `x-sightline-access` names \
                 who may call an operation."
                    .into(),
            ),
            ..Info::default()
        },
        paths: Some(Paths {
            paths,
            ..Paths::default()
        }),
        components: Some(components),
        ..OpenApi::default()
    };
    serde_json::to_value(document).unwrap_or(Value::Null)
}

fn operation(ctx: &mut GenContext, route: &Route) -> Operation {
    let mut operation = Operation {
        summary: Some(route.summary.to_owned()),
        operation_id: Some(operation_id(route)),
        tags: vec![tag_of(route.path).to_owned()],
        ..Operation::default()
    };
    (route.describe)(ctx, &mut operation);
    path_parameters(route.path, &mut operation);
    let (access, security) = match route.access {
        Access::Public => ("public", vec![]),
        Access::Invitation => ("invitation", vec!["invitation"]),
        Access::SigningIn => ("signing_in", vec!["sign_in_cookie"]),
        Access::Technician => ("technician", vec!["sign_in_cookie"]),
        Access::Admin => ("admin", vec!["sign_in_cookie"]),
    };
    operation
        .extensions
        .insert("x-sightline-access".into(), json!(access));
    operation.security = security
        .into_iter()
        .map(|scheme| IndexMap::from_iter([(scheme.to_owned(), Vec::new())]))
        .collect();
    if route.method != Method::GET && security_uses_cookie(route.access) {
        operation.parameters.push(header_param(
            CSRF_HEADER,
            "Any value; browsers cannot send it cross-site.",
            Some(json!("1")),
        ));
    }
    let responses = operation.responses.get_or_insert_with(Responses::default);
    let mut by_status: IndexMap<u16, Vec<&str>> = IndexMap::new();
    for code in route.error_codes() {
        by_status.entry(status_of(code)).or_default().push(code);
    }
    by_status.sort_keys();
    for (status, codes) in by_status {
        responses.responses.insert(
            DocStatus::Code(status),
            ReferenceOr::Item(refusal_response(&codes)),
        );
    }
    operation
}

fn security_uses_cookie(access: Access) -> bool {
    matches!(
        access,
        Access::SigningIn | Access::Technician | Access::Admin
    )
}

fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for part in route
        .path
        .trim_start_matches("/api/")
        .split(['/', '.', '-'])
    {
        let part = part.trim_start_matches('{').trim_end_matches('}');
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars.filter(|c| *c != '_'));
        }
    }
    id
}

fn tag_of(path: &str) -> &str {
    let first = path.trim_start_matches("/api/").split(['/', '.']).next();
    match first.unwrap_or_default() {
        "setup" | "login" | "logout" | "me" => "sign-in",
        "join" | "invitation" => "customer",
        "sessions" | "colleagues" => "sessions",
        "users" | "groups" | "account" | "audit" => "administration",
        "export" | "deletions" => "data",
        "ws" => "signaling",
        _ => "api",
    }
}

/// Path parameters the handler's types did not name (tuples and plain strings carry no
/// names), taken from the path template.
fn path_parameters(path: &str, operation: &mut Operation) {
    let named: BTreeSet<String> = operation
        .parameters
        .iter()
        .filter_map(|p| match p {
            ReferenceOr::Item(p @ Parameter::Path { .. }) => {
                Some(p.parameter_data_ref().name.clone())
            }
            _ => None,
        })
        .collect();
    for name in path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
    {
        if named.contains(name) {
            continue;
        }
        operation
            .parameters
            .push(ReferenceOr::Item(Parameter::Path {
                parameter_data: ParameterData {
                    name: name.into(),
                    description: None,
                    required: true,
                    deprecated: None,
                    format: ParameterSchemaOrContent::Schema(string_schema()),
                    example: None,
                    examples: IndexMap::new(),
                    explode: None,
                    extensions: IndexMap::new(),
                },
                style: openapi::PathStyle::Simple,
            }));
    }
}

/// A required request header.
fn header_param(name: &str, description: &str, example: Option<Value>) -> ReferenceOr<Parameter> {
    ReferenceOr::Item(Parameter::Header {
        parameter_data: ParameterData {
            name: name.into(),
            description: Some(description.into()),
            required: true,
            deprecated: None,
            format: ParameterSchemaOrContent::Schema(string_schema()),
            example,
            examples: IndexMap::new(),
            explode: None,
            extensions: IndexMap::new(),
        },
        style: openapi::HeaderStyle::Simple,
    })
}

fn string_schema() -> SchemaObject {
    SchemaObject {
        json_schema: schemars::json_schema!({"type": "string"}),
        example: None,
        external_docs: None,
    }
}

fn refusal_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": super::ERROR_CODES},
            "message": {"type": "string", "description": "A sentence for people (English)."},
            "locked_until_ms": {
                "type": "integer",
                "description": "With `locked`: when the account unlocks (Unix ms)."
            },
            "min_length": {
                "type": "integer",
                "description": "With `password_too_short`: the minimum length."
            }
        }
    })
}

fn refusal_response(codes: &[&str]) -> Response {
    let schema = schemars::json_schema!({
        "allOf": [{"$ref": "#/components/schemas/Refusal"}],
        "properties": {"error": {"enum": codes}}
    });
    Response {
        description: format!("Refused: {}", codes.join(", ")),
        content: IndexMap::from_iter([(
            "application/json".into(),
            MediaType {
                schema: Some(SchemaObject {
                    json_schema: schema,
                    example: None,
                    external_docs: None,
                }),
                ..MediaType::default()
            },
        )]),
        ..Response::default()
    }
}

fn security_schemes() -> IndexMap<String, ReferenceOr<SecurityScheme>> {
    IndexMap::from_iter([
        (
            "sign_in_cookie".into(),
            ReferenceOr::Item(SecurityScheme::ApiKey {
                location: openapi::ApiKeyLocation::Cookie,
                name: SESSION_COOKIE.into(),
                description: Some(
                    "Set by POST /api/login (and /api/setup); send X-Sightline-CSRF with it \
                     on every request that is not a GET."
                        .into(),
                ),
                extensions: IndexMap::new(),
            }),
        ),
        (
            "invitation".into(),
            ReferenceOr::Item(SecurityScheme::Http {
                scheme: "bearer".into(),
                bearer_format: Some("invitation token".into()),
                description: Some(
                    "The token in the customer's link (or from POST /api/join/pin).".into(),
                ),
                extensions: IndexMap::new(),
            }),
        ),
    ])
}

/// A refusal's code, readable by the route layer.
pub(super) fn refusal_code(response: &axum::response::Response) -> Option<&'static str> {
    response.extensions().get::<RefusalCode>().map(|c| c.0)
}
