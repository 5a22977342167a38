//! `ferry collect serve`: the collector over HTTPS (rustls; there is no plain-HTTP mode: the
//! reports carry an estate's audit trail and the tokens that write it). `POST /v1/report` with
//! `Authorization: Bearer TOKEN` (the token decides the site; the tokens file is read again on
//! each request, so `ferry collect enroll` needs no restart); `GET /v1/health`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};

use super::store::{Refusal, Store, load_tokens};
use super::{MAX_BODY, REPORT_FORMAT, Report};

pub struct ServeConfig {
    pub listen: String,
    pub dir: PathBuf,
    pub tokens: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Serves until the process ends; `ready` is told the bound address.
pub async fn serve(cfg: ServeConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let tls = acceptor(&cfg)?;
    load_tokens(&cfg.tokens)?;
    let store = Arc::new(Store::open(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", cfg.listen))?;
    ready(listener.local_addr().map_err(|e| e.to_string())?);
    let tokens = Arc::new(cfg.tokens);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (tls, store, tokens) = (tls.clone(), store.clone(), tokens.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(stream).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let (store, tokens) = (store.clone(), tokens.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(req, &store, &tokens, peer).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn acceptor(cfg: &ServeConfig) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("--tls-cert {}: {e}", cfg.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| format!("--tls-key {}: {e}", cfg.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response")
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({ "error": message.to_string() }))
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    store: &Arc<Store>,
    tokens: &std::path::Path,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/health") => reply(StatusCode::OK, serde_json::json!({ "ok": true })),
        ("POST", "/v1/report") => report(req, store, tokens, peer).await,
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The site the request's bearer token is for.
fn site_of(
    req: &Request<hyper::body::Incoming>,
    tokens: &std::path::Path,
) -> Result<String, Box<Response<Full<Bytes>>>> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Box::new(error(StatusCode::UNAUTHORIZED, "a bearer token is needed")))?;
    let known = load_tokens(tokens).map_err(|e| {
        eprintln!("collect: {e}");
        Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the collector's tokens file is unreadable",
        ))
    })?;
    known
        .get(&crate::load::sha256_hex(token.trim().as_bytes()))
        .cloned()
        .ok_or_else(|| Box::new(error(StatusCode::UNAUTHORIZED, "unknown token")))
}

async fn report(
    req: Request<hyper::body::Incoming>,
    store: &Arc<Store>,
    tokens: &std::path::Path,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let site = match site_of(&req, tokens) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
    };
    let report: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a report: {e}")),
    };
    if report.format != REPORT_FORMAT {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "format `{}`, this collector reads `{REPORT_FORMAT}`",
                report.format
            ),
        );
    }
    let store = store.clone();
    let from = report.from;
    let got = tokio::task::spawn_blocking(move || {
        store
            .receive(&site, &report, &peer.to_string())
            .map(|a| (site, a))
    })
    .await;
    match got {
        Ok(Ok((site, ack))) => {
            eprintln!(
                "collect: {site} from {peer}: entries #{from}.. held {}",
                ack.held
            );
            reply(
                StatusCode::OK,
                serde_json::to_value(ack).expect("acks serialize"),
            )
        }
        Ok(Err(Refusal::Gap { held, .. })) => reply(
            StatusCode::CONFLICT,
            serde_json::json!({ "error": format!("resend from entry #{held}"), "held": held }),
        ),
        Ok(Err(e @ (Refusal::Fork { .. } | Refusal::Tamper(_)))) => {
            eprintln!("collect: refused a report from {peer}: {e}");
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Ok(Err(e @ Refusal::Bad(_))) => error(StatusCode::BAD_REQUEST, e),
        Ok(Err(e @ Refusal::Io(_))) => {
            eprintln!("collect: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
