//! The little HTTP the Prometheus endpoint speaks: one request per
//! connection (`Connection: close`), GET or HEAD `/metrics`.
//!
//! The request head is parsed by `httparse` (the parser under hyper: no
//! I/O, no allocation, incremental, well fuzzed); what is ours is the
//! routing and the limits. Why not a server crate: the daemon runs plain
//! threads and no async runtime, so hyper/axum would bring one in for a
//! page a minute; `tiny_http`, the usual small choice, has a thread per
//! connection with no cap and no read or write timeouts (tiny-http issue
//! #143), which is the very hole this endpoint must not have. The
//! connections themselves are served by [`super::reactor`].

/// Largest request head accepted (request line plus headers).
pub(super) const MAX_HEAD: usize = 8192;

/// Most headers in a request (a scrape sends about five).
const MAX_HEADERS: usize = 32;

/// `Content-Type` of the Prometheus text format 0.0.4.
pub(super) const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request head, as far as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Head {
    /// Not complete yet.
    Partial,
    /// Method and request target.
    Complete {
        /// Method, e.g. `GET`.
        method: String,
        /// Request target, e.g. `/metrics?x=1`.
        target: String,
    },
    /// Not HTTP/1.x: why.
    Bad(String),
}

/// Parse the request head at the start of `input` (a body, if any, is
/// ignored: one request per connection).
pub(super) fn parse(input: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(input) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some(m), Some(p)) => Head::Complete {
                method: m.to_string(),
                target: p.to_string(),
            },
            // httparse fills both whenever it returns Complete.
            _ => Head::Bad("incomplete request line".into()),
        },
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(e) => Head::Bad(e.to_string()),
    }
}

/// An answer: status, reason, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    pub extra: &'static str,
    /// Body (sent for every method but HEAD; its length always).
    pub body: String,
    /// HEAD: headers only.
    pub head_only: bool,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            extra: "",
            body: body.into(),
            head_only: false,
        }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut o = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
            self.extra
        )
        .into_bytes();
        if !self.head_only {
            o.extend_from_slice(self.body.as_bytes());
        }
        o
    }
}

/// What to answer `head`; `metrics` renders the page (called only when
/// it is asked for).
pub(super) fn route(head: &Head, metrics: impl FnOnce() -> String) -> Option<Response> {
    let (method, target) = match head {
        Head::Partial => return None,
        Head::Bad(why) => return Some(Response::text(400, "Bad Request", format!("{why}\n"))),
        Head::Complete { method, target } => (method.as_str(), target.as_str()),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Some(Response::text(
            404,
            "Not Found",
            format!("{path:?}: not found; metrics are at /metrics\n"),
        ));
    }
    match method {
        "GET" | "HEAD" => Some(Response {
            status: 200,
            reason: "OK",
            content_type: PROMETHEUS_TYPE,
            extra: "",
            body: metrics(),
            head_only: method == "HEAD",
        }),
        other => Some(Response {
            extra: "Allow: GET, HEAD\r\n",
            ..Response::text(
                405,
                "Method Not Allowed",
                format!("method {other:?} not allowed; GET or HEAD /metrics\n"),
            )
        }),
    }
}

/// The answer to a head over [`MAX_HEAD`] bytes.
pub(super) fn too_large() -> Response {
    Response::text(
        400,
        "Bad Request",
        format!("request head longer than {MAX_HEAD} bytes\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9750\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";

    fn answer(req: &[u8]) -> Option<Response> {
        route(&parse(req), || "m 1\n".into())
    }

    #[test]
    fn scrape_gets_metrics() {
        let r = answer(SCRAPE).expect("complete");
        assert_eq!((r.status, r.content_type), (200, PROMETHEUS_TYPE));
        let wire = String::from_utf8(r.to_bytes()).unwrap();
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(wire.contains("\r\nContent-Length: 4\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nm 1\n"), "{wire}");
    }

    #[test]
    fn head_has_length_no_body() {
        let r = answer(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        let wire = String::from_utf8(r.to_bytes()).unwrap();
        assert!(wire.contains("Content-Length: 4\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n"), "{wire}");
    }

    #[test]
    fn other_paths_methods_and_garbage() {
        assert_eq!(answer(b"GET / HTTP/1.1\r\n\r\n").unwrap().status, 404);
        assert_eq!(
            answer(b"GET /metricsx HTTP/1.1\r\n\r\n").unwrap().status,
            404
        );
        let post = answer(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(post.status, 405);
        assert!(String::from_utf8(post.to_bytes())
            .unwrap()
            .contains("Allow: GET, HEAD\r\n"));
        assert_eq!(answer(b"\x16\x03\x01\x02\x00garbage").unwrap().status, 400);
        assert_eq!(
            answer(b"GET /metrics HTTP/2.0\r\n\r\n").unwrap().status,
            400
        );
        assert_eq!(answer(b"GET /metrics HTTP/1.1\r\nHost"), None);
        assert_eq!(answer(b""), None);
        assert_eq!(too_large().status, 400);
    }

    proptest! {
        /// Arbitrary bytes never panic, and a verdict, once reached, never
        /// changes as more bytes arrive (what the loop relies on: it
        /// answers at the first non-partial verdict).
        #[test]
        fn any_bytes(a in proptest::collection::vec(any::<u8>(), 0..600),
                     b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let first = parse(&a);
            let mut ab = a.clone();
            ab.extend_from_slice(&b);
            let later = parse(&ab);
            if first != Head::Partial {
                prop_assert_eq!(&first, &later);
            }
            if let Some(r) = route(&later, String::new) {
                prop_assert!(matches!(r.status, 200 | 400 | 404 | 405));
            }
        }

        /// A real scrape cut anywhere is partial before its end and the
        /// same request after it, whatever follows.
        #[test]
        fn scrape_split_anywhere(cut in 0..SCRAPE.len(),
                                 tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(parse(&SCRAPE[..cut]), Head::Partial);
            let mut whole = SCRAPE.to_vec();
            whole.extend_from_slice(&tail);
            prop_assert_eq!(answer(&whole).map(|r| r.status), Some(200));
        }

        /// Header values of any printable content and any count up to the
        /// cap are accepted; one more header than the cap is a 400.
        #[test]
        fn headers(n in 0..=MAX_HEADERS + 1, v in "[ -~]{0,40}") {
            let mut req = String::from("GET /metrics HTTP/1.1\r\n");
            for i in 0..n {
                req.push_str(&format!("X-H{i}: {}\r\n", v.trim()));
            }
            req.push_str("\r\n");
            let st = answer(req.as_bytes()).map(|r| r.status);
            prop_assert_eq!(st, Some(if n > MAX_HEADERS { 400 } else { 200 }));
        }
    }
}
