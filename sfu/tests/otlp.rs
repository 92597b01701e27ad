//! Traces over OTLP, received for real: the server binary runs with
//! `--otlp-endpoint` pointing at a receiver in this test, which decodes the
//! OTLP HTTP/protobuf export (the OpenTelemetry project's own message types).
//! A WHIP request that carries a W3C `traceparent` yields a `POST
//! /whip/{room}` span in the caller's trace, and the session it creates is a
//! child span with the room, identity and kind; every span names the node.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use common::TestPeer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A span as received, with what the test looks at.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flatten(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The receiver: POST /v1/traces, protobuf in, spans out to `store`.
async fn receiver(store: Arc<Mutex<Vec<Received>>>) -> std::io::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut out = store.lock().unwrap_or_else(|e| e.into_inner());
                for rs in req.resource_spans {
                    let resource = rs
                        .resource
                        .map(|r| flatten(&r.attributes))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            out.push(Received {
                                name: s.name,
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent_span_id: hex(&s.parent_span_id),
                                attributes: flatten(&s.attributes),
                                resource: resource.clone(),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_request_and_its_session_are_one_trace_exported_over_otlp() -> TestResult {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let collector = receiver(spans.clone()).await?;
    let port = free_port()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            "node-a",
            "--otlp-endpoint",
            &format!("http://{collector}"),
        ])
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < end, "server did not start");
        if let Some(status) = child.try_wait()? {
            panic!("server exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server_pid = child.id();
    let _guard = Server(child);

    // The caller's trace context, as a proxy or another node would send it.
    let (caller_trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let token = signaling::auth::mint_with_secret(
        "devkey",
        "secret",
        "camera",
        signaling::auth::VideoGrant {
            room: Some("traced".into()),
            room_join: true,
            can_publish: Some(true),
            ..Default::default()
        },
        Duration::from_secs(600),
    )?;
    let (_peer, offer) = TestPeer::publisher();
    let created = http
        .post(format!("{base}/whip/traced"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body(offer)
        .send()
        .await?;
    assert_eq!(created.status().as_u16(), 201);
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or("no Location")?;
    let deleted = http
        .delete(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(deleted.status().as_u16(), 200);
    // SIGTERM: the server drains (no rooms left), stops and flushes.
    let killed = Command::new("kill")
        .args(["-TERM", &server_pid.to_string()])
        .status()?;
    assert!(killed.success());

    let find = |name: &str| -> Option<Received> {
        spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.name == name)
            .cloned()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while (find("POST /whip/{room}").is_none() || find("session").is_none()) && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all: Vec<String> = spans
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let request = find("POST /whip/{room}").ok_or(format!("no request span in {all:?}"))?;
    let session = find("session").ok_or(format!("no session span in {all:?}"))?;

    assert_eq!(
        request.trace_id, caller_trace,
        "the caller's trace continues"
    );
    assert_eq!(
        request.parent_span_id, caller_span,
        "a child of the caller's span"
    );
    assert_eq!(
        request
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("201")
    );
    assert_eq!(
        session.trace_id, caller_trace,
        "the session is in the same trace"
    );
    assert_eq!(
        session.parent_span_id, request.span_id,
        "the session is a child of the request that created it"
    );
    assert_eq!(
        session.attributes.get("room").map(String::as_str),
        Some("traced")
    );
    assert_eq!(
        session.attributes.get("identity").map(String::as_str),
        Some("camera")
    );
    assert_eq!(
        session.attributes.get("kind").map(String::as_str),
        Some("Whip")
    );
    for span in [&request, &session] {
        assert_eq!(
            span.resource.get("service.instance.id").map(String::as_str),
            Some("node-a"),
            "{span:?}"
        );
        assert_eq!(
            span.resource.get("service.name").map(String::as_str),
            Some("sfu")
        );
    }
    assert!(
        find("DELETE /whip/{room}/{id}").is_some(),
        "the DELETE is traced too: {all:?}"
    );
    Ok(())
}

/// A cluster node exporting traces to `collector`; killed on drop.
fn traced_node(
    id: &str,
    redis: &common::redis::Redis,
    collector: SocketAddr,
) -> std::io::Result<(Server, String)> {
    let port = common::redis::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--node-id",
            id,
        ])
        .args([
            "--redis-url",
            &redis.url(),
            "--workers",
            "1",
            "--http-rate-limit",
            "0",
        ])
        .args(["--otlp-endpoint", &format!("http://{collector}")])
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(common::redis::log_file(&format!("otlp-{id}")))
        .stderr(Stdio::null())
        .spawn()?;
    Ok((Server(child), format!("http://127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_one_node_watching_a_publisher_on_another_is_one_trace() -> TestResult {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let collector = receiver(spans.clone()).await?;
    let redis = common::redis::Redis::start();
    let (_a, a) = traced_node("trace-a", &redis, collector)?;
    let (_b, b) = traced_node("trace-b", &redis, collector)?;
    for base in [&a, &b] {
        let started = common::redis::wait_answering(base, Duration::from_secs(10)).await;
        assert!(started, "node {base} did not start");
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // registered
    let http = reqwest::Client::new();
    let token = |identity: &str, publish: bool| -> Result<String, std::convert::Infallible> {
        Ok(common::dev_token("stage", identity, publish, !publish))
    };
    // The publisher asks node A directly: the room may still be placed on
    // B, in which case A proxies; either way the viewer asks the other one.
    let (_publisher, offer) = TestPeer::publisher();
    let published = http
        .post(format!("{a}/whip/stage"))
        .bearer_auth(token("camera", true)?)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    assert_eq!(published.status().as_u16(), 201);
    let host = published
        .headers()
        .get("x-sfu-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or("x-sfu-node")?;
    let (edge_id, edge) = if host == "trace-a" {
        ("trace-b", &b)
    } else {
        ("trace-a", &a)
    };

    let (viewer_trace, viewer_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (_viewer, offer) = TestPeer::viewer(str0m::RtcConfig::new());
    let played = http
        .post(format!("{edge}/whep/stage"))
        .bearer_auth(token("viewer", false)?)
        .header("content-type", "application/sdp")
        .header("traceparent", format!("00-{viewer_trace}-{viewer_span}-01"))
        .body(offer)
        .send()
        .await?;
    assert_eq!(played.status().as_u16(), 201);
    let location = played
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or("no Location")?;
    // A span is exported when it ends, and a request's span lasts as long
    // as the session it created: the viewer leaves, the edge's relay closes
    // after its idle time and ends its session on the hosting node.
    let deleted = http
        .delete(format!("{edge}{location}"))
        .bearer_auth(token("viewer", false)?)
        .send()
        .await?;
    assert_eq!(deleted.status().as_u16(), 200);

    // Spans of the viewer's trace, as exported by both nodes.
    let in_trace = || -> Vec<Received> {
        spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.trace_id == viewer_trace)
            .cloned()
            .collect()
    };
    let node_of = |s: &Received| {
        s.resource
            .get("service.instance.id")
            .cloned()
            .unwrap_or_default()
    };
    let end = Instant::now() + Duration::from_secs(20);
    let (relay, upstream) = loop {
        let t = in_trace();
        let relay = t
            .iter()
            .find(|s| s.name == "cluster relay" && node_of(s) == edge_id)
            .cloned();
        let upstream = t
            .iter()
            .find(|s| s.name == "POST /whep/{room}" && node_of(s) == host)
            .cloned();
        if let (Some(r), Some(u)) = (relay, upstream) {
            break (r, u);
        }
        let names: Vec<(String, String)> = t.iter().map(|s| (node_of(s), s.name.clone())).collect();
        assert!(
            Instant::now() < end,
            "spans of the viewer's trace so far: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        relay.parent_span_id, viewer_span,
        "the relay span continues the viewer's request"
    );
    assert_eq!(
        upstream.parent_span_id, relay.span_id,
        "the hosting node's request is a child of the edge's relay span"
    );
    // The relay's session on the hosting node is in the viewer's trace too.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let session = in_trace().into_iter().find(|s| {
            s.name == "session" && node_of(s) == host && s.parent_span_id == upstream.span_id
        });
        if let Some(session) = session {
            assert_eq!(
                session.attributes.get("room").map(String::as_str),
                Some("stage")
            );
            break;
        }
        assert!(Instant::now() < end, "no relay session span on {host}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
