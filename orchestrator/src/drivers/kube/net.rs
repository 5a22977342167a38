//! How ferry reaches an API server: which proxy (if any), and the `Retry-After` an API server
//! answers with, carried to where the retry loop can read it.
//!
//! kube-client 5 reads `HTTPS_PROXY` itself but matches `NO_PROXY` against the *proxy's*
//! address instead of the cluster's, so a cluster listed in `NO_PROXY` is still proxied. ferry
//! decides the proxy itself, per cluster: the kubeconfig's `proxy-url` if the cluster has one
//! (as kubectl), else `HTTPS_PROXY` (`HTTP_PROXY` for an `http://` server) unless the server's
//! host is in `NO_PROXY`. Unlike kubectl, loopback addresses are not exempt: a local cluster
//! behind a proxy setting belongs in `NO_PROXY` (what curl does; it also lets the tests prove
//! the proxy path on loopback).

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kube::client::DynBody;
use serde_json::{Value, json};
use tower::BoxError;

/// The proxy for `server` (`scheme://host[:port]/...`) given the environment (`get("HTTPS_PROXY")`),
/// or None for a direct connection.
pub fn proxy_for(server: &http::Uri, get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
    };
    let proxy = if server.scheme_str() == Some("http") {
        var(&["HTTP_PROXY", "http_proxy"])
    } else {
        var(&["HTTPS_PROXY", "https_proxy"])
    }?;
    let host = server.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = server
        .port_u16()
        .unwrap_or(if server.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let no_proxy = var(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    let bypass = no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|e| no_proxy_matches(e, host, port));
    (!bypass).then(|| {
        if proxy.contains("://") {
            proxy
        } else {
            format!("http://{proxy}")
        }
    })
}

/// A proxy URL without its user and password (for messages and records).
pub fn redact_userinfo(u: &http::Uri) -> String {
    match u.authority() {
        Some(a) if a.as_str().contains('@') => {
            let host = a.as_str().rsplit('@').next().unwrap_or_default();
            format!("{}://***@{host}", u.scheme_str().unwrap_or("http"))
        }
        _ => u.to_string(),
    }
}

/// One `NO_PROXY` entry against a host: `*`; an IP or CIDR; `host` (the host and its
/// subdomains); `.domain` (its subdomains); any of them with `:port`.
fn no_proxy_matches(entry: &str, host: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    let host = host.to_ascii_lowercase();
    if let Some((net, bits)) = entry.split_once('/') {
        let (Ok(net), Ok(bits), Ok(ip)) = (
            net.parse::<IpAddr>(),
            bits.parse::<u32>(),
            host.parse::<IpAddr>(),
        ) else {
            return false;
        };
        return in_cidr(ip, net, bits);
    }
    // `host:port`, `[v6]:port`, or a bare host (a bare IPv6 address has colons of its own).
    let (name, want_port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    };
    if want_port.is_some_and(|p| p != port) {
        return false;
    }
    let name = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if let (Ok(a), Ok(b)) = (name.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return a == b;
    }
    match name.strip_prefix('.') {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == name || host.ends_with(&format!(".{name}")),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The error body of an answer that carried `Retry-After: secs`, as a Kubernetes Status
/// whose `details.retryAfterSeconds` says so (kube hands back the Status, not the headers).
/// API Priority and Fairness answers 429 with the header and a plain-text body.
pub fn with_retry_after(code: u16, body: &[u8], secs: u32) -> Vec<u8> {
    let mut status = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["kind"] == "Status" => v,
        _ => json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": String::from_utf8_lossy(body).trim(),
            "reason": if code == 429 { "TooManyRequests" } else { "ServiceUnavailable" },
            "code": code,
        }),
    };
    if !status["details"].is_object() {
        status["details"] = json!({});
    }
    if status["details"]["retryAfterSeconds"].as_u64().unwrap_or(0) == 0 {
        status["details"]["retryAfterSeconds"] = json!(secs);
    }
    status.to_string().into_bytes()
}

pub type Answer = http::Response<Box<DynBody>>;

/// Service step after every call: an error answer with a `Retry-After` header gets it into
/// its Status body (`with_retry_after`); everything else passes untouched.
pub async fn carry_retry_after(resp: Answer) -> Result<Answer, BoxError> {
    let secs = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let Some(secs) = secs.filter(|_| !resp.status().is_success()) else {
        return Ok(resp);
    };
    let (mut parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let out = with_retry_after(parts.status.as_u16(), &bytes, secs);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = Full::new(Bytes::from(out)).map_err(|e| match e {});
    Ok(http::Response::from_parts(parts, Box::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_proxy_is_matched_against_the_cluster() {
        let https: http::Uri = "https://api.prod.example.org:6443".parse().unwrap();
        let p = [("HTTPS_PROXY", "http://10.0.0.1:3128")];
        assert_eq!(
            proxy_for(&https, env(&p)).as_deref(),
            Some("http://10.0.0.1:3128")
        );
        for no in [
            "example.org",
            ".example.org",
            "prod.example.org",
            "*",
            "x.com, api.prod.example.org:6443",
        ] {
            let e = [p[0], ("NO_PROXY", no)];
            assert_eq!(proxy_for(&https, env(&e)), None, "{no}");
        }
        for no in [
            "api.prod.example.org:443",
            "other.org",
            ".api.prod.example.org",
        ] {
            let e = [p[0], ("no_proxy", no)];
            assert!(proxy_for(&https, env(&e)).is_some(), "{no}");
        }
        let ip: http::Uri = "https://10.96.0.1".parse().unwrap();
        let e = [p[0], ("NO_PROXY", "10.96.0.0/12")];
        assert_eq!(proxy_for(&ip, env(&e)), None);
        let e = [p[0], ("NO_PROXY", "10.0.0.0/16,10.96.0.2")];
        assert!(proxy_for(&ip, env(&e)).is_some());
        // An http:// server is proxied by HTTP_PROXY only; a proxy without a scheme is http.
        let plain: http::Uri = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(proxy_for(&plain, env(&p)), None);
        let e = [("HTTP_PROXY", "127.0.0.9:3128")];
        assert_eq!(
            proxy_for(&plain, env(&e)).as_deref(),
            Some("http://127.0.0.9:3128")
        );
        let v6: http::Uri = "https://[fd00::1]:6443".parse().unwrap();
        let e = [p[0], ("NO_PROXY", "fd00::/8")];
        assert_eq!(proxy_for(&v6, env(&e)), None);
        let e = [p[0], ("NO_PROXY", "[fd00::1]:6443")];
        assert_eq!(proxy_for(&v6, env(&e)), None);
    }

    #[test]
    fn retry_after_reaches_the_status() {
        let s: Value = serde_json::from_slice(&with_retry_after(
            429,
            b"Too many requests, please try again later.\n",
            3,
        ))
        .unwrap();
        assert_eq!(s["details"]["retryAfterSeconds"], 3);
        assert_eq!(s["code"], 429);
        assert_eq!(s["message"], "Too many requests, please try again later.");
        let st = json!({"kind": "Status", "code": 429, "message": "m", "reason": "TooManyRequests",
                        "details": {"retryAfterSeconds": 7}});
        let s: Value =
            serde_json::from_slice(&with_retry_after(429, st.to_string().as_bytes(), 3)).unwrap();
        assert_eq!(
            s["details"]["retryAfterSeconds"], 7,
            "the body's own value stays"
        );
    }
}
