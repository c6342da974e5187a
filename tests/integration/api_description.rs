//! The OpenAPI description at `/api/openapi.json`: fetched as a script would, it names every
//! route of the table with its method, access, bodies and refusal codes. (The browser
//! suite validates it with a real OpenAPI validator; the harness checks every refusal a
//! test provoked is listed.)

use serde_json::Value;
use sightline::api::{Access, routes, status_of};

use crate::common::*;

async fn description(app: &TestAppliance) -> Value {
    let response = app.client().get("/api/openapi.json").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("application/json")
    );
    response.json()
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Invitation => "invitation",
        Access::SigningIn => "signing_in",
        Access::Technician => "technician",
        Access::Admin => "admin",
    }
}

#[tokio::test]
async fn the_description_names_every_route_with_its_access_answers_and_refusals() {
    let app = TestAppliance::start().await;
    let doc = description(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let table = routes();
    let described: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |ops| ops.len()))
        .sum();
    assert_eq!(described, table.len(), "one operation per route, no more");

    for route in &table {
        let method = route.method.as_str().to_ascii_lowercase();
        let op = &doc["paths"][route.path][&method];
        let name = format!("{} {}", route.method, route.path);
        assert!(op.is_object(), "{name} is described");
        assert_eq!(
            op["x-sightline-access"],
            access_name(route.access),
            "{name}"
        );
        assert_eq!(op["summary"], route.summary, "{name}");
        let security = op["security"].as_array().map_or(0, Vec::len);
        assert_eq!(
            security == 0,
            route.access == Access::Public,
            "{name} security"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s.as_str() == "101"),
            "{name} has a success answer: {:?}",
            responses.keys().collect::<Vec<_>>()
        );
        for code in route.error_codes() {
            let status = status_of(code).to_string();
            let listed = &responses[&status]["content"]["application/json"]["schema"]["properties"]
                ["error"]["enum"];
            assert!(
                listed
                    .as_array()
                    .is_some_and(|l| l.iter().any(|c| c == code)),
                "{name}: {code} under {status}"
            );
        }
        for param in route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let params = op["parameters"].as_array().expect("parameters");
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == param && p["in"] == "path"),
                "{name}: path parameter {param}"
            );
        }
    }
}

/// The bodies come from the handlers' own types: what the login takes and what it answers.
#[tokio::test]
async fn bodies_are_the_schemas_of_the_types_the_handlers_take_and_return() {
    let app = TestAppliance::start().await;
    let doc = description(&app).await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let login = &doc["paths"]["/api/login"]["post"];
    let body = &login["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/LoginRequest");
    let request = schema("LoginRequest");
    for field in ["email", "password"] {
        assert!(request["properties"][field].is_object(), "{field}");
    }
    let answer = &login["responses"]["200"];
    assert_eq!(
        answer["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Principal"
    );
    assert!(answer["headers"]["Set-Cookie"].is_object());
    assert!(schema("Principal")["properties"]["role"].is_object());
    // A POST that creates answers 201 with the thing it made.
    let created = &doc["paths"]["/api/users"]["post"]["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/UserView"
    );
    // Media negotiation is SDP both ways, and the customer's proof of device a header.
    let whip = &doc["paths"]["/api/invitation/whip"]["post"];
    assert!(whip["requestBody"]["content"]["application/sdp"].is_object());
    assert!(whip["responses"]["201"]["content"]["application/sdp"].is_object());
    assert!(whip["responses"]["201"]["headers"]["Location"].is_object());
    let device = whip["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .any(|p| p["name"] == "x-sightline-device" && p["in"] == "header");
    assert!(device);
    // Cookie-authenticated changes need the CSRF header; reads do not.
    let needs_csrf = |op: &Value| {
        op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "x-sightline-csrf"))
    };
    assert!(needs_csrf(&doc["paths"]["/api/sessions"]["post"]));
    assert!(!needs_csrf(&doc["paths"]["/api/sessions"]["get"]));
    // Every $ref points at a schema that is there.
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap_or_default();
        assert!(schema(name).is_object(), "{name} is defined");
    }
}

/// What a script does: sign in, keep the cookie, send the CSRF header on changes. The
/// answers have the shapes the description gives.
#[tokio::test]
async fn a_script_signs_in_and_calls_the_api_as_the_description_says() {
    let app = TestAppliance::start().await;
    let mut admin = app.set_up().await;
    let me = admin.get("/api/me").await;
    assert_eq!(me.status, 200);
    let doc = description(&app).await;
    let principal = &doc["components"]["schemas"]["Principal"];
    for field in principal["required"].as_array().expect("required") {
        let field = field.as_str().expect("name");
        assert!(
            !me.json()[field].is_null() || principal["properties"][field]["type"] == "null",
            "{field} in /api/me"
        );
    }
    let refused = app
        .client()
        .json("POST", "/api/sessions", &serde_json::json!({}))
        .await;
    assert_eq!(refused.status, 401);
    let listed = &doc["paths"]["/api/sessions"]["post"]["responses"]["401"]["content"]["application/json"]
        ["schema"]["properties"]["error"]["enum"];
    assert!(
        listed
            .as_array()
            .expect("codes")
            .contains(&refused.json()["error"])
    );
}
