//! The answers and extractors of the API that describe themselves for the OpenAPI
//! document: status, media types and headers of what a handler returns, and the bodies
//! and headers the appliance's own extractors read.

use std::marker::PhantomData;

use aide::generate::GenContext;
use aide::openapi::{
    self, Header, MediaType, Operation, ParameterSchemaOrContent, ReferenceOr, RequestBody,
    Response,
};
use aide::{OperationInput, OperationOutput};
use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Serialize;

use super::{header_param, string_schema};

fn json_response<T: JsonSchema>(ctx: &mut GenContext) -> Option<Response> {
    Json::<T>::operation_response(ctx, &mut Operation::default())
}

macro_rules! json_with_status {
    ($(#[$doc:meta])* $name:ident, $status:ident) => {
        $(#[$doc])*
        pub(in crate::api) struct $name<T>(pub T);

        impl<T: Serialize> IntoResponse for $name<T> {
            fn into_response(self) -> axum::response::Response {
                (StatusCode::$status, Json(self.0)).into_response()
            }
        }

        impl<T: JsonSchema> OperationOutput for $name<T> {
            type Inner = T;

            fn inferred_responses(
                ctx: &mut GenContext,
                _: &mut Operation,
            ) -> Vec<(Option<u16>, Response)> {
                json_response::<T>(ctx)
                    .map(|r| vec![(Some(StatusCode::$status.as_u16()), r)])
                    .unwrap_or_default()
            }
        }
    };
}

json_with_status!(
    /// `201 Created` with the new thing as JSON.
    Created,
    CREATED
);
json_with_status!(
    /// `202 Accepted` with the request as JSON (it completes later).
    Accepted,
    ACCEPTED
);

/// A successful sign-in (or a changed password): the principal as JSON and a new sign-in
/// cookie.
pub(in crate::api) struct SignedIn<T> {
    pub body: T,
    pub token: String,
}

impl<T: Serialize> IntoResponse for SignedIn<T> {
    fn into_response(self) -> axum::response::Response {
        crate::api::with_cookie(Json(self.body).into_response(), &self.token)
    }
}

impl<T: JsonSchema> OperationOutput for SignedIn<T> {
    type Inner = T;

    fn inferred_responses(ctx: &mut GenContext, _: &mut Operation) -> Vec<(Option<u16>, Response)> {
        let Some(mut response) = json_response::<T>(ctx) else {
            return Vec::new();
        };
        response
            .headers
            .insert("Set-Cookie".into(), header_doc("The sign-in cookie."));
        vec![(Some(200), response)]
    }
}

fn header_doc(description: &str) -> ReferenceOr<Header> {
    ReferenceOr::Item(Header {
        description: Some(description.into()),
        style: openapi::HeaderStyle::Simple,
        required: false,
        deprecated: None,
        format: ParameterSchemaOrContent::Schema(string_schema()),
        example: None,
        examples: IndexMap::new(),
        extensions: IndexMap::new(),
    })
}

/// What an answer that is not JSON carries, for its description.
pub(in crate::api) trait Kind {
    const STATUS: u16;
    const DESCRIPTION: &'static str;
    const MEDIA_TYPES: &'static [&'static str];
    const HEADERS: &'static [(&'static str, &'static str)] = &[];
}

/// An answer that is not JSON (a file, an SDP answer, an upgrade), built by the handler
/// and described by its [`Kind`].
pub(in crate::api) struct Raw<K>(axum::response::Response, PhantomData<K>);

impl<K> Raw<K> {
    pub(in crate::api) fn new(response: impl IntoResponse) -> Self {
        Self(response.into_response(), PhantomData)
    }
}

impl<K> IntoResponse for Raw<K> {
    fn into_response(self) -> axum::response::Response {
        self.0
    }
}

impl<K: Kind> OperationOutput for Raw<K> {
    type Inner = ();

    fn inferred_responses(_: &mut GenContext, _: &mut Operation) -> Vec<(Option<u16>, Response)> {
        let response = Response {
            description: K::DESCRIPTION.into(),
            content: K::MEDIA_TYPES
                .iter()
                .map(|t| ((*t).to_owned(), MediaType::default()))
                .collect(),
            headers: K::HEADERS
                .iter()
                .map(|(name, description)| ((*name).to_owned(), header_doc(description)))
                .collect(),
            ..Response::default()
        };
        vec![(Some(K::STATUS), response)]
    }
}

macro_rules! kind {
    ($(#[$doc:meta])* $name:ident, $status:expr, $description:expr, [$($media:expr),*] $(, [$($header:expr),*])?) => {
        $(#[$doc])*
        pub(in crate::api) enum $name {}

        impl Kind for $name {
            const STATUS: u16 = $status;
            const DESCRIPTION: &'static str = $description;
            const MEDIA_TYPES: &'static [&'static str] = &[$($media),*];
            $(const HEADERS: &'static [(&'static str, &'static str)] = &[$($header),*];)?
        }
    };
}

kind!(
    StillImage,
    200,
    "The camera still.",
    ["image/jpeg", "image/png", "image/webp"]
);
kind!(
    RecordingVideo,
    200,
    "The recording as WebM; a Range request is answered 206 with that part, or 416 (with Content-Range: bytes */length) when it lies outside the file.",
    ["video/webm"],
    [
        ("Accept-Ranges", "bytes"),
        ("Content-Range", "With 206: the part sent.")
    ]
);
kind!(
    CsvTable,
    200,
    "The history as CSV, one session per line.",
    ["text/csv"]
);
kind!(
    TarArchive,
    200,
    "Everything in scope: a tar archive of JSON records, stills and recordings.",
    ["application/x-tar"]
);
kind!(
    SdpCreated,
    201,
    "The SDP answer; Location names the media session for PATCH (ICE restart) and DELETE.",
    ["application/sdp"],
    [("Location", "The media session's URL.")]
);
kind!(
    SdpAnswer,
    200,
    "The SDP answer to the ICE restart.",
    ["application/sdp"]
);
kind!(
    SignedOut,
    204,
    "Signed out; the sign-in cookie is cleared.",
    [],
    [("Set-Cookie", "Clears the sign-in cookie.")]
);
kind!(
    Description,
    200,
    "The OpenAPI 3.1 description.",
    ["application/json"]
);
kind!(
    Upgraded,
    101,
    "The signaling WebSocket (JSON text messages; the protocol is in the README).",
    []
);

/// Answers `200 OK` with an empty body.
pub(in crate::api) struct Done;

impl IntoResponse for Done {
    fn into_response(self) -> axum::response::Response {
        StatusCode::OK.into_response()
    }
}

impl OperationOutput for Done {
    type Inner = ();

    fn inferred_responses(_: &mut GenContext, _: &mut Operation) -> Vec<(Option<u16>, Response)> {
        vec![(
            Some(200),
            Response {
                description: "Done.".into(),
                ..Response::default()
            },
        )]
    }
}

/// A handler's refusals are described from the route's codes (see [`Route::error_codes`]).
impl OperationOutput for crate::api::ApiError {
    type Inner = ();
}

// ---------------------------------------------------------------------------------------
// What the appliance's own extractors read, for the description

impl<T: JsonSchema> OperationInput for crate::api::JsonBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<T>::operation_input(ctx, operation);
    }
}

impl<T: JsonSchema> OperationInput for crate::api::OptionalJsonBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<T>::operation_input(ctx, operation);
        if let Some(ReferenceOr::Item(body)) = operation.request_body.as_mut() {
            body.required = false;
            body.description = Some("Optional: an empty body takes the defaults.".into());
        }
    }
}

impl OperationInput for crate::api::negotiation::SdpOffer {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        operation.request_body = Some(ReferenceOr::Item(RequestBody {
            description: Some("The SDP offer.".into()),
            content: IndexMap::from_iter([("application/sdp".into(), MediaType::default())]),
            required: true,
            extensions: IndexMap::new(),
        }));
    }
}

impl OperationInput for crate::api::StillUpload {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        operation.request_body = Some(ReferenceOr::Item(RequestBody {
            description: Some("The camera still the technician asked for.".into()),
            content: ["image/jpeg", "image/png", "image/webp"]
                .iter()
                .map(|t| ((*t).to_owned(), MediaType::default()))
                .collect(),
            required: true,
            extensions: IndexMap::new(),
        }));
    }
}

impl OperationInput for crate::api::Customer {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        operation.parameters.push(header_param(
            crate::api::DEVICE_HEADER,
            "The device secret the customer's page got at join.",
            None,
        ));
    }
}

// Who is calling is the route's access (its security requirement), not a parameter.
impl OperationInput for crate::api::User {}
impl OperationInput for crate::api::Caller {}
impl OperationInput for crate::api::InvitationToken {}
