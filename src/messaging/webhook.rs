//! The company's SMS gateway: one HTTPS request per message, as its API wants it — the
//! configured method, headers and a JSON body made from a template. hyper speaks HTTP/1.1
//! over our rustls (Mozilla's intermediate profile), verifying the gateway's certificate.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::{SendError, SetupError};
use crate::config::SmsConfig;

pub(super) struct SmsGateway {
    uri: Uri,
    method: Method,
    headers: Vec<(HeaderName, String)>,
    secret: Option<String>,
    template: serde_json::Value,
    tls: tokio_rustls::TlsConnector,
}

impl SmsGateway {
    pub(super) fn new(config: &SmsConfig) -> Result<Option<Self>, SetupError> {
        let Some(url) = config.url.as_deref() else {
            return Ok(None);
        };
        let setup = |key, message: String| SetupError { key, message };
        let uri: Uri = url
            .parse()
            .map_err(|_| setup("sms.url", format!("{url:?} is not a URL")))?;
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| setup("sms.method", config.method.clone()))?;
        let headers = config
            .headers
            .iter()
            .map(|(name, value)| {
                HeaderName::try_from(name.as_str())
                    .map(|name| (name, value.clone()))
                    .map_err(|_| setup("sms.headers", format!("{name:?} is not a header name")))
            })
            .collect::<Result<_, _>>()?;
        let secret = config
            .secret_file
            .as_deref()
            .map(crate::config::read_secret_file)
            .transpose()
            .map_err(|message| setup("sms.secret_file", message))?;
        let template = serde_json::from_str(&config.body)
            .map_err(|e| setup("sms.body", format!("not JSON: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for der in super::trust_anchors(config.ca_file.as_deref(), "sms.ca_file")? {
            // The system store may hold a certificate rustls cannot use; skip it as
            // browsers do, as long as some remain.
            let _ = roots.add(der);
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::crypto_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| setup("sms.url", e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Some(Self {
            uri,
            method,
            headers,
            secret,
            template,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        }))
    }

    pub(super) async fn send(&self, number: &str, text: &str) -> Result<(), SendError> {
        // The text last: it holds names a technician chose, and a `{secret}` in them
        // must stay as typed, not become the gateway's key on a stranger's phone.
        let fill = |s: &str| {
            let s = match &self.secret {
                Some(secret) => s.replace("{secret}", secret),
                None => s.to_owned(),
            };
            s.replace("{number}", number).replace("{text}", text)
        };
        let body = filled(&self.template, &fill).to_string();
        let unreachable = |e: &dyn std::fmt::Display| SendError::Delivery {
            summary: "the SMS gateway cannot be reached".into(),
            detail: format!("the SMS gateway cannot be reached: {e}"),
        };
        let host = self.uri.host().unwrap_or_default();
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| unreachable(&e))?;
        let name = ServerName::try_from(bare_host.to_owned()).map_err(|e| unreachable(&e))?;
        let stream = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| SendError::Delivery {
                summary: "no trusted TLS connection to the SMS gateway".into(),
                detail: format!("no trusted TLS connection to the SMS gateway: {e}"),
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let authority = self.uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("Sightline/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.headers {
            let value = HeaderValue::try_from(fill(value)).map_err(|_| {
                SendError::delivery(format!("the {name} header is not a valid header value"))
            })?;
            if let Some(headers) = request.headers_mut() {
                headers.insert(name.clone(), value);
            }
        }
        let request = request
            .body(Full::new(axum::body::Bytes::from(body)))
            .map_err(|e| SendError::delivery(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Enough of the answer to log why; a gateway's error page is no reason to read more.
        let answer = http_body_util::Limited::new(response.into_body(), 4096)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let answer: String = String::from_utf8_lossy(&answer)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        tracing::warn!(%status, %answer, "the SMS gateway did not take an invitation");
        Err(SendError::delivery(format!(
            "the SMS gateway refused the message ({status})"
        )))
    }
}

/// The template with every string filled in; keys stay as written.
fn filled(value: &serde_json::Value, fill: &dyn Fn(&str) -> String) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(fill(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| filled(v, fill)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), filled(v, fill)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_filled_as_json_so_text_cannot_break_out() {
        let template: serde_json::Value =
            serde_json::from_str(r#"{"to": "{number}", "msg": {"text": "{text}"}, "n": 1}"#)
                .expect("json");
        let text = "say \"hi\"\n{number}";
        let body = filled(&template, &|s: &str| {
            s.replace("{number}", "+491701234567")
                .replace("{text}", text)
        });
        assert_eq!(body["to"], "+491701234567");
        assert_eq!(body["msg"]["text"], text);
        assert_eq!(body["n"], 1);
    }
}
