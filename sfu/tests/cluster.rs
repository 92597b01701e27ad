//! A cluster on one machine: a real `redis-server` (Debian's package, on a
//! loopback port of its own) and server processes sharing it. Nodes agree
//! on where a room lives even when they race for it, serve requests about
//! any room (redirect or proxy), survive a node's death and Redis's.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::member::{ms, T};
use common::redis::{free_port, log_file, log_lines, wait_answering, Redis};
use common::{post_sdp_with, Posted, TestPeer, TestResult};
use signaling::livekit::proto;
use signaling::livekit::proto::signal_request::Message as Request;
use signaling::livekit::proto::signal_response::Message as Response;
use str0m::media::MediaKind;
use str0m::RtcConfig;

const START: Duration = Duration::from_secs(15);

/// One server process in the cluster; killed (SIGKILL) on drop.
struct Node {
    id: String,
    base: String,
    child: Child,
}

impl Node {
    fn start(id: &str, redis: &Redis, forward: &str) -> Node {
        Self::start_with(id, redis, forward, true)
    }

    fn start_with(id: &str, redis: &Redis, forward: &str, relay: bool) -> Node {
        Self::spawn(id, redis, forward, relay, &["--workers", "1"])
    }

    /// Two workers, and a room's viewers spread over them from its first
    /// participant on.
    fn start_spreading(id: &str, redis: &Redis) -> Node {
        let workers = ["--workers", "2", "--spread-viewers-at", "1"];
        Self::spawn(id, redis, "proxy", true, &workers)
    }

    fn spawn(id: &str, redis: &Redis, forward: &str, relay: bool, workers: &[&str]) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
            .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--node-id", id, "--redis-url", &redis.url()])
            .args(["--cluster-forward", forward])
            .args(workers)
            .args(["--cluster-relay", if relay { "true" } else { "false" }])
            .args(["--http-rate-limit", "0", "--session-timeout-secs", "5"])
            .env("SFU_LOG", "info,sfu::cluster=debug,sfu::dynacast=debug")
            .stdout(log_file(id))
            .stderr(Stdio::null())
            .spawn()
            .expect("sfu binary");
        Node {
            id: id.into(),
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn token(room: &str, identity: &str, publish: bool) -> String {
    common::dev_token(room, identity, publish, !publish)
}

/// Wait until every node answers and is registered (its first heartbeat).
async fn wait_ready(nodes: &[&Node]) {
    for node in nodes {
        assert!(
            wait_answering(&node.base, START).await,
            "node {} did not start",
            node.id
        );
    }
    // Registrations are written by the first heartbeat, right after start.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// An answered POST (status, the URL that answered, headers, body).
type Answer = Posted;

async fn post(http: &reqwest::Client, url: &str, token: &str, sdp: &str) -> Answer {
    post_sdp_with(http, url, token, sdp).await
}

/// The node that served an answer (`x-sfu-node`; a proxied answer keeps
/// the hosting node's).
fn served_by(a: &Answer) -> Option<String> {
    a.header("x-sfu-node")
}

/// The node that served (201, itself or through a proxy) or was pointed
/// at (307): its id, or for a redirect its base URL.
fn placed_on(a: &Answer) -> Option<String> {
    match a.status {
        201 => served_by(a),
        307 => a.location.as_deref().map(base_of),
        _ => None,
    }
}

fn base_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    url[..end].to_string()
}

/// POST an offer, following a 307 by sending the same request (with its
/// token) to the node it names, as a WHIP/WHEP client does (RFC 9725).
/// Generic HTTP clients drop `Authorization` on a redirect to another
/// origin, so they are not used for this.
async fn post_following(url: &str, token: &str, sdp: &str) -> Answer {
    let http = no_redirects();
    let first = post(&http, url, token, sdp).await;
    match (first.status, &first.location) {
        (307, Some(next)) => post(&http, next, token, sdp).await,
        _ => first,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Publish on `url` (following redirects); the running publisher and the
/// base URL of the node that took it.
async fn publish(url: &str, room: &str, secs: u64) -> (std::thread::JoinHandle<TestPeer>, String) {
    let (mut peer, offer) = TestPeer::publisher();
    let a = post_following(url, &token(room, "camera", true), &offer).await;
    assert_eq!(a.status, 201, "publish via {url}: {}", a.body);
    peer.accept_answer(&a.body).expect("answer");
    let node = served_by(&a).expect("x-sfu-node");
    (peer.spawn_for(Duration::from_secs(secs)), node)
}

/// Play on `url` (following redirects); the running viewer and the
/// resource URL to DELETE.
async fn play(
    url: &str,
    room: &str,
    who: &str,
    secs: u64,
) -> (std::thread::JoinHandle<TestPeer>, String) {
    let (mut peer, offer) = TestPeer::viewer(RtcConfig::new());
    let a = post_following(url, &token(room, who, false), &offer).await;
    assert_eq!(a.status, 201, "play via {url}: {}", a.body);
    peer.accept_answer(&a.body).expect("answer");
    // The Location is relative to the URL that answered.
    let resource = format!("{}{}", base_of(&a.url), a.location.expect("Location"));
    (peer.spawn_for(Duration::from_secs(secs)), resource)
}

fn joined(h: std::thread::JoinHandle<TestPeer>) -> TestPeer {
    h.join().expect("peer thread")
}

/// The id of the node an answer placed the room on (201: the node that
/// served; 307: the node whose URL the redirect names).
fn placed_id(answer: &Answer, nodes: &[Node]) -> Option<String> {
    let placed = placed_on(answer)?;
    match nodes.iter().find(|n| n.base == placed) {
        Some(n) => Some(n.id.clone()),
        None => Some(placed),
    }
}

fn base_of_id<'a>(nodes: &'a [Node], id: &str) -> &'a str {
    nodes
        .iter()
        .find(|n| n.id == id)
        .map_or("", |n| n.base.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_agree_on_rooms_serve_any_room_and_replace_a_dead_node() -> TestResult {
    let redis = Redis::start();
    // Viewers are passed on here (relays have their own test).
    let mut nodes = vec![
        Node::start_with("node-a", &redis, "redirect", false),
        Node::start_with("node-b", &redis, "redirect", false),
        Node::start_with("node-c", &redis, "proxy", false),
    ];
    wait_ready(&nodes.iter().collect::<Vec<_>>()).await;
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let (a, b, c) = (
        nodes[0].base.clone(),
        nodes[1].base.clone(),
        nodes[2].base.clone(),
    );

    // A race: the first requests for each room reach all three nodes at
    // once. Every answer names the same node (it served, proxied to it, or
    // redirected to it).
    let http = no_redirects();
    let mut owners = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..6 {
        let room = format!("race-{round}");
        let asks = nodes.iter().map(|n| {
            let url = format!("{}/whep/{room}", n.base);
            let token = token(&room, &format!("v-{}", n.id), false);
            let http = http.clone();
            async move {
                let (_peer, offer) = TestPeer::viewer(RtcConfig::new());
                post(&http, &url, &token, &offer).await
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let placed: Vec<Option<String>> = answers.iter().map(|a| placed_id(a, &nodes)).collect();
        for (ans, node) in answers.iter().zip(&placed) {
            assert!(node.is_some(), "{room}: {} {}", ans.status, ans.body);
        }
        assert!(
            placed.windows(2).all(|w| w[0] == w[1]),
            "{room}: nodes disagree: {placed:?}"
        );
        let owner = placed[0].clone().unwrap_or_default();
        assert!(ids.contains(&owner), "{owner} is not a node");
        *owners.entry(owner).or_default() += 1;
    }
    eprintln!("race rooms per node: {owners:?}");

    // Media across the front doors: the publisher asks node b, viewers ask
    // node a (redirected) and node c (proxied); all reach the room's node.
    let room = "show";
    let (publisher, host) = publish(&format!("{b}/whip/{room}"), room, 8).await;
    let (via_redirect, _) = play(&format!("{a}/whep/{room}"), room, "va", 5).await;
    let (via_proxy, proxied_resource) = play(&format!("{c}/whep/{room}"), room, "vc", 5).await;
    assert!(
        proxied_resource.starts_with(&c),
        "the proxied viewer keeps talking to node c: {proxied_resource}"
    );
    let listing: serde_json::Value = reqwest::Client::new()
        .get(format!("{a}/api/rooms"))
        .basic_auth("devkey", Some("secret"))
        .send()
        .await?
        .json()
        .await?;
    let listed = listing["rooms"]
        .as_array()
        .ok_or("rooms")?
        .iter()
        .find(|r| r["name"] == room)
        .cloned()
        .ok_or_else(|| format!("{room} missing from the cluster listing: {listing}"))?;
    assert_eq!(listed["node"], host.as_str(), "{listing}");
    let (v1, v2) = (joined(via_redirect), joined(via_proxy));
    for (name, v) in [("redirected", &v1), ("proxied", &v2)] {
        eprintln!("{name} viewer: {:?}", v.stats);
        assert!(v.stats.video_frames > 50, "{name} viewer decoded video");
        assert!(v.stats.audio_frames > 50, "{name} viewer received audio");
    }
    let deleted = reqwest::Client::new()
        .delete(&proxied_resource)
        .bearer_auth(token(room, "vc", false))
        .send()
        .await?;
    assert_eq!(deleted.status().as_u16(), 200, "DELETE through the proxy");
    let _ = joined(publisher);

    // The room's node dies (SIGKILL: no deregistration). Once its
    // registration expires, the room is placed on a live node and serves
    // a new publisher and viewer.
    let host_index = ids.iter().position(|i| *i == host).ok_or("host")?;
    let survivors: Vec<String> = nodes
        .iter()
        .filter(|n| n.id != host)
        .map(|n| n.base.clone())
        .collect();
    let dead_at = Instant::now();
    nodes[host_index].kill();
    let ask = &survivors[0];
    let end = Instant::now() + Duration::from_secs(20);
    let new_host = loop {
        let (_peer, offer) = TestPeer::viewer(RtcConfig::new());
        let url = format!("{ask}/whep/{room}");
        let answer = post(&http, &url, &token(room, "probe", false), &offer).await;
        match placed_id(&answer, &nodes) {
            Some(n) if n != host => break n,
            _ => {}
        }
        assert!(Instant::now() < end, "the room was not re-placed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "re-placed on {new_host} {:?} after the kill",
        dead_at.elapsed()
    );
    assert!(survivors.iter().any(|b| b == base_of_id(&nodes, &new_host)));
    let other = &survivors[1];
    let (publisher, host2) = publish(&format!("{other}/whip/{room}"), room, 6).await;
    assert_eq!(host2, new_host);
    let (viewer, _) = play(&format!("{ask}/whep/{room}"), room, "again", 4).await;
    let v = joined(viewer);
    assert!(
        v.stats.video_frames > 30,
        "viewer after the failover: {:?}",
        v.stats
    );
    let _ = joined(publisher);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_sessions_refuses_new_rooms_and_heals() -> TestResult {
    let mut redis = Redis::start();
    let nodes = vec![
        Node::start_with("out-a", &redis, "redirect", false),
        Node::start_with("out-b", &redis, "redirect", false),
    ];
    wait_ready(&nodes.iter().collect::<Vec<_>>()).await;
    let room = "live";
    let (publisher, host_id) = publish(&format!("{}/whip/{room}", nodes[0].base), room, 12).await;
    let host = base_of_id(&nodes, &host_id).to_string();
    let other = nodes
        .iter()
        .find(|n| n.id != host_id)
        .map(|n| n.base.clone())
        .ok_or("two nodes")?;
    let (viewer, _) = play(&format!("{host}/whep/{room}"), room, "early", 10).await;

    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New rooms need a placement: refused, with a reason and a retry time.
    let http = no_redirects();
    let (_p, offer) = TestPeer::viewer(RtcConfig::new());
    let url = format!("{host}/whep/elsewhere");
    let refused = post(&http, &url, &token("elsewhere", "x", false), &offer).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("Redis"), "{}", refused.body);
    assert!(refused.header("retry-after").is_some(), "Retry-After");
    // The room in progress still takes viewers at its node: no Redis needed.
    let (late, _) = play(&format!("{host}/whep/{room}"), room, "late", 3).await;
    let late = joined(late);
    assert!(
        late.stats.video_frames > 20,
        "viewer during the outage: {:?}",
        late.stats
    );

    redis.restart();
    // Heals by itself: a new room is placed again once nodes re-register.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (_p, offer) = TestPeer::viewer(RtcConfig::new());
        let url = format!("{other}/whep/after");
        let placed = post(&http, &url, &token("after", "y", false), &offer).await;
        if placed_on(&placed).is_some() {
            break;
        }
        assert!(
            Instant::now() < end,
            "no placement after Redis returned: {} {}",
            placed.status,
            placed.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Redis came back empty. Within a heartbeat the room's node registers
    // and claims its rooms again (seen here through the cluster listing);
    // from then on the other node sends the room's viewers there.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let listing: serde_json::Value = reqwest::Client::new()
            .get(format!("{other}/api/rooms"))
            .basic_auth("devkey", Some("secret"))
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        let listed = listing["rooms"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["name"] == room && r["node"] == host_id.as_str())
        });
        if listed {
            break;
        }
        assert!(
            Instant::now() < end,
            "{host_id} did not re-register: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_p, offer) = TestPeer::viewer(RtcConfig::new());
    let url = format!("{other}/whep/{room}");
    let routed = post(&http, &url, &token(room, "z", false), &offer).await;
    assert_eq!(routed.status, 307, "{}", routed.body);
    assert_eq!(placed_on(&routed).as_deref(), Some(host.as_str()));
    // A browser follows it only if it may read it.
    assert_eq!(
        routed.header("access-control-allow-origin").as_deref(),
        Some("*")
    );

    let v = joined(viewer);
    eprintln!("viewer across the outage: {:?}", v.stats);
    // 10 s at 30 fps; the outage must not have interrupted it.
    assert!(v.stats.video_frames > 200, "{:?}", v.stats);
    let _ = joined(publisher);
    Ok(())
}

/// One metric on a node, summed over the series whose labels contain `label`.
async fn metric(base: &str, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| l.split(' ').next().is_some_and(|s| s.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publish three simulcast layers on `url`; the running publisher and the
/// id of the node that hosts the room.
async fn publish_simulcast(
    url: &str,
    room: &str,
    secs: u64,
) -> (std::thread::JoinHandle<TestPeer>, String) {
    use common::SimLayer;
    let layers = vec![
        SimLayer::new("q", 320, 180, 300),
        SimLayer::new("h", 640, 360, 900),
        SimLayer::new("f", 1280, 720, 2_500),
    ];
    let (mut peer, offer) = TestPeer::simulcast_publisher(layers);
    let a = post_following(url, &token(room, "camera", true), &offer).await;
    assert_eq!(a.status, 201, "publish via {url}: {}", a.body);
    peer.accept_answer(&a.body).expect("answer");
    let host = served_by(&a).expect("x-sfu-node");
    (peer.spawn_for(Duration::from_secs(secs)), host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_other_nodes_get_the_room_over_one_relay_per_node() -> TestResult {
    let redis = Redis::start();
    let mut nodes = vec![
        Node::start("relay-a", &redis, "proxy"),
        Node::start("relay-b", &redis, "proxy"),
        Node::start("relay-c", &redis, "proxy"),
    ];
    wait_ready(&nodes.iter().collect::<Vec<_>>()).await;
    let room = "broadcast";
    let (publisher, host) =
        publish_simulcast(&format!("{}/whip/{room}", nodes[0].base), room, 10).await;
    let host_base = base_of_id(&nodes, &host).to_string();
    let edges: Vec<String> = nodes
        .iter()
        .filter(|n| n.id != host)
        .map(|n| n.base.clone())
        .collect();

    // Two viewers on each other node (one asking for at most 320 wide),
    // one on the room's node. The edge nodes serve theirs themselves.
    let started = Instant::now();
    let mut viewers = vec![];
    for (i, edge) in edges.iter().enumerate() {
        let (full, _) = play(
            &format!("{edge}/whep/{room}"),
            room,
            &format!("full-{i}"),
            28,
        )
        .await;
        let small_url = format!("{edge}/whep/{room}?maxWidth=320");
        let (small, resource) = play(&small_url, room, &format!("small-{i}"), 6).await;
        assert!(resource.starts_with(edge), "served by the edge: {resource}");
        viewers.push((format!("edge {i} full"), full, None));
        viewers.push((format!("edge {i} at most 320"), small, Some(320)));
    }
    let (direct, _) = play(&format!("{host_base}/whep/{room}"), room, "direct", 6).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The room's node carries one WHEP session per edge node plus its own
    // viewer, not one per viewer.
    let sessions = metric(&host_base, "sfu_participants", "kind=\"whep\"").await;
    assert_eq!(sessions, 3.0, "1 direct viewer + 2 relays on {host}");
    for edge in &edges {
        assert_eq!(
            metric(edge, "sfu_cluster_relays", "").await,
            1.0,
            "one relay on {edge}"
        );
        let relayed = metric(edge, "sfu_cluster_requests_total", "outcome=\"relayed\"").await;
        assert_eq!(relayed, 2.0, "both viewers on {edge} served from the relay");
    }
    // Edges are not rooms of their own in the cluster listing.
    let listing: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/rooms", edges[0]))
        .basic_auth("devkey", Some("secret"))
        .send()
        .await?
        .json()
        .await?;
    let entries: Vec<&serde_json::Value> = listing["rooms"]
        .as_array()
        .ok_or("rooms")?
        .iter()
        .filter(|r| r["name"] == room)
        .collect();
    assert_eq!(entries.len(), 1, "{listing}");
    assert_eq!(entries[0]["node"], host.as_str(), "{listing}");

    let direct = joined(direct);
    assert!(
        direct.stats.video_frames > 50,
        "direct viewer: {:?}",
        direct.stats
    );
    let mut long_running = vec![];
    for (name, v, max_width) in viewers {
        match max_width {
            Some(max) => {
                let v = joined(v);
                eprintln!(
                    "{name}: {} frames, keyframes {:?}",
                    v.stats.video_frames, v.stats.keyframe_widths
                );
                assert!(
                    v.stats.video_frames > 50,
                    "{name} decoded video: {:?}",
                    v.stats
                );
                assert!(
                    v.stats.keyframe_widths.iter().all(|(_, w)| *w <= max),
                    "{name} gets the low layer: {:?}",
                    v.stats.keyframe_widths
                );
            }
            None => long_running.push((name, v)),
        }
    }
    let _ = joined(publisher);

    // The room's node dies. The publisher comes back through another node;
    // the edge viewers, still connected to their nodes, resume.
    let i = nodes.iter().position(|n| n.id == host).ok_or("host")?;
    nodes[i].kill();
    let survivor = edges[0].clone();
    let end = Instant::now() + Duration::from_secs(20);
    let (republished, republished_at) = loop {
        let layers = vec![
            common::SimLayer::new("q", 320, 180, 300),
            common::SimLayer::new("f", 1280, 720, 2_500),
        ];
        let (mut peer, offer) = TestPeer::simulcast_publisher(layers);
        let url = format!("{survivor}/whip/{room}");
        let a = post_following(&url, &token(room, "camera", true), &offer).await;
        if a.status == 201 && served_by(&a).as_deref() != Some(host.as_str()) {
            peer.accept_answer(&a.body)?;
            break (peer.spawn_for(Duration::from_secs(10)), started.elapsed());
        }
        assert!(
            Instant::now() < end,
            "no new home for the room: {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("publisher back after {republished_at:?}");
    for (name, v) in long_running {
        let v = joined(v);
        let resumed: Vec<_> = v
            .stats
            .keyframe_widths
            .iter()
            .filter(|(t, _)| *t > republished_at)
            .collect();
        eprintln!(
            "{name}: {} frames, keyframes after the failover {resumed:?}",
            v.stats.video_frames
        );
        assert!(
            !resumed.is_empty(),
            "{name} resumed after the failover: {:?}",
            v.stats.keyframe_widths
        );
        assert!(
            v.stats.keyframe_widths.iter().any(|(_, w)| *w == 1280),
            "{name} without a limit got the top layer: {:?}",
            v.stats.keyframe_widths
        );
    }
    let _ = joined(republished);
    Ok(())
}

/// Video packets per second a node receives from publishers (its relays
/// included), over `window`.
async fn video_packets_per_sec(base: &str, window: Duration) -> f64 {
    let name = "sfu_media_packets_received_total";
    let before = metric(base, name, "kind=\"video\"").await;
    tokio::time::sleep(window).await;
    (metric(base, name, "kind=\"video\"").await - before) / window.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_carries_only_the_layers_its_viewers_can_use() -> TestResult {
    let redis = Redis::start();
    let nodes = [
        Node::start("wish-a", &redis, "proxy"),
        Node::start("wish-b", &redis, "proxy"),
    ];
    wait_ready(&nodes.iter().collect::<Vec<_>>()).await;
    let room = "wishes";
    let (publisher, host) =
        publish_simulcast(&format!("{}/whip/{room}", nodes[0].base), room, 24).await;
    let edge = nodes
        .iter()
        .find(|n| n.id != host)
        .map(|n| n.base.clone())
        .ok_or("two nodes")?;
    // The edge's only viewer takes at most 320 wide: the relay carries
    // the low layer alone (one layer's frames, not three).
    let (small, _) = play(
        &format!("{edge}/whep/{room}?maxWidth=320"),
        room,
        "small",
        22,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let one_layer = video_packets_per_sec(&edge, Duration::from_secs(2)).await;
    // A viewer without a limit arrives: every layer flows again.
    let (full, _) = play(&format!("{edge}/whep/{room}"), room, "full", 14).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all_layers = video_packets_per_sec(&edge, Duration::from_secs(2)).await;
    eprintln!("edge receives {one_layer:.1} video packets/s for a 320 viewer, {all_layers:.1} with a full one");
    assert!(one_layer > 10.0, "the low layer flows: {one_layer}");
    assert!(
        all_layers > 2.0 * one_layer,
        "a full viewer brings the other layers back: {one_layer} -> {all_layers}"
    );
    // It started on the one layer there was, and goes up as the others
    // arrive (after the selector's upgrade hold).
    let full = joined(full);
    eprintln!("full viewer keyframes {:?}", full.stats.keyframe_widths);
    assert!(
        full.stats.keyframe_widths.iter().any(|(_, w)| *w == 1280),
        "the full viewer reaches the top layer: {:?}",
        full.stats.keyframe_widths
    );
    let small = joined(small);
    assert!(small.stats.keyframe_widths.iter().all(|(_, w)| *w == 320));
    let _ = joined(publisher);
    Ok(())
}

/// Publish a single-layer camera on `url`; the running publisher, the node
/// that hosts it and its resource URL (for DELETE).
async fn publish_for_delete(
    url: &str,
    room: &str,
    who: &str,
    secs: u64,
) -> (std::thread::JoinHandle<TestPeer>, String, String) {
    let (mut peer, offer) = TestPeer::publisher();
    let a = post_following(url, &token(room, who, true), &offer).await;
    assert_eq!(a.status, 201, "publish via {url}: {}", a.body);
    peer.accept_answer(&a.body).expect("answer");
    let host = served_by(&a).expect("x-sfu-node");
    let resource = format!("{}{}", base_of(&a.url), a.location.expect("Location"));
    (peer.spawn_for(Duration::from_secs(secs)), host, resource)
}

/// An edge node spreading its viewers over two workers: the second viewer
/// is fed through two relays (the node's, then the worker fan-out's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_see_the_publisher_leave_and_return() -> TestResult {
    let redis = Redis::start();
    let nodes = [
        Node::start_spreading("turns-a", &redis),
        Node::start_spreading("turns-b", &redis),
    ];
    wait_ready(&nodes.iter().collect::<Vec<_>>()).await;
    let room = "turns";
    let url = format!("{}/whip/{room}", nodes[0].base);
    let (first, host, first_resource) = publish_for_delete(&url, room, "camera-1", 3).await;
    let edge = nodes
        .iter()
        .find(|n| n.id != host)
        .map(|n| n.base.clone())
        .ok_or("two nodes")?;
    let (direct, _) = play(&format!("{edge}/whep/{room}"), room, "direct", 14).await;
    let (viewer, resource) = play(&format!("{edge}/whep/{room}"), room, "spread", 14).await;
    assert!(
        resource.starts_with(&edge),
        "served by the edge: {resource}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metric(&edge, "sfu_cluster_relays", "").await,
        1.0,
        "one node relay"
    );
    assert_eq!(
        metric(&edge, "sfu_fanout_relays", "").await,
        1.0,
        "one worker relay"
    );
    let mut events = common::open_events(&resource, None).await?;
    let mut buf = String::new();
    common::next_event(&mut events, &mut buf, "active").await?;

    // The publisher leaves (the room's node lives on): the edge's viewer is
    // told, and told again when the next publisher starts.
    joined(first);
    let del = reqwest::Client::new()
        .delete(&first_resource)
        .bearer_auth(token(room, "camera-1", true))
        .send()
        .await?;
    assert_eq!(del.status().as_u16(), 200, "publisher DELETE");
    common::next_event(&mut events, &mut buf, "inactive").await?;
    let (second, second_host, _) = publish_for_delete(&url, room, "camera-2", 3).await;
    assert_eq!(
        second_host, host,
        "the room stayed on its node (the relay keeps it)"
    );
    common::next_event(&mut events, &mut buf, "active").await?;
    joined(second);
    for (name, viewer) in [("direct", joined(direct)), ("spread", joined(viewer))] {
        eprintln!(
            "edge viewer {name}: {} frames, {} keyframes",
            viewer.stats.video_frames, viewer.stats.video_keyframes
        );
        assert!(
            viewer.stats.video_keyframes >= 2,
            "edge viewer {name} started each publisher on a keyframe: {:?}",
            viewer.stats
        );
    }
    Ok(())
}

/// Frames received on the line that carries track `sid`.
fn frames_of(peer: &TestPeer, subs: &[(String, str0m::media::Mid)], sid: &str) -> u64 {
    subs.iter()
        .find(|(s, _)| s == sid)
        .and_then(|(_, mid)| peer.frames_by_mid.get(mid).copied())
        .unwrap_or(0)
}

fn member_token(room: &str, identity: &str) -> String {
    common::dev_token(room, identity, true, true)
}

/// A meeting over two nodes: alice joins through one node, bob and carol
/// through the other. They see and hear each other; the room's tracks
/// cross between the nodes over one bridge however many subscribe; mute
/// and leave reach the other node.
#[test]
fn a_meeting_spans_nodes_over_one_bridge() {
    use common::livekit::{
        join_and_publish, leave, left, muted, subscribe, told_to_leave, user_packet, user_packets,
        LkClient, RELIABLE,
    };
    use common::member::{ms, run_until, T};
    use serde_json::json;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut redis = Redis::start();
    // Regions of their own: the room is placed on the node asked first
    // (alice's), so bob and carol are the satellite's.
    // A short reconnect grace: a bridge must outlive it (its member on the
    // satellite has no socket of its own to lose).
    let grace = ["--reconnect-grace-secs", "2"];
    let nodes = [
        Node::spawn(
            "meet-a",
            &redis,
            "proxy",
            true,
            &[&grace[..], &["--region", "one"]].concat(),
        ),
        Node::spawn(
            "meet-b",
            &redis,
            "proxy",
            true,
            &[&grace[..], &["--region", "two"]].concat(),
        ),
    ];
    rt.block_on(wait_ready(&nodes.iter().collect::<Vec<_>>()));
    let room = "span";
    let (mut a, mut pa, a_audio, a_video) =
        join_and_publish(&nodes[0].base, &member_token(room, "alice"));
    let (mut b, mut pb, b_audio, b_video) =
        join_and_publish(&nodes[1].base, &member_token(room, "bob"));

    // Each learns of the other's tracks, through the bridge.
    let seen_by_bob = b
        .wait_tracks_of("alice", &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        })
        .expect("bob is told of alice's tracks");
    assert_eq!(seen_by_bob, (a_audio.clone(), a_video.clone()));
    let seen_by_alice = a
        .wait_tracks_of("bob", &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        })
        .expect("alice is told of bob's tracks");
    assert_eq!(seen_by_alice, (b_audio.clone(), b_video.clone()));

    let b_subs = subscribe(&mut b, &mut pb, &[a_audio.clone(), a_video.clone()]);
    let a_subs = subscribe(&mut a, &mut pa, &[b_audio.clone(), b_video.clone()]);
    let decoded = run_until(&mut [&mut pa, &mut pb], 2 * T, |p| {
        frames_of(p[0], &a_subs, &b_video) >= 10
            && frames_of(p[0], &a_subs, &b_audio) >= 10
            && frames_of(p[1], &b_subs, &a_video) >= 10
            && frames_of(p[1], &b_subs, &a_audio) >= 10
    });
    assert!(
        decoded,
        "both get the other's audio and video: alice {:?}, bob {:?}",
        pa.frames_by_mid, pb.frames_by_mid
    );

    // Carol joins beside bob: she gets alice's video over the same bridge.
    let (mut c, mut pc, _, carol_video) =
        join_and_publish(&nodes[1].base, &member_token(room, "carol"));
    let carol_sees = c
        .wait_tracks_of("alice", &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
            pc.run_for(ms(2));
        })
        .expect("carol is told of alice's tracks");
    let c_subs = subscribe(&mut c, &mut pc, &[carol_sees.0, carol_sees.1]);
    assert!(
        run_until(&mut [&mut pa, &mut pb, &mut pc], 2 * T, |p| {
            frames_of(p[2], &c_subs, &a_video) >= 10
        }),
        "carol decodes alice: {:?}",
        pc.frames_by_mid
    );
    // Past the reconnect grace, nobody has seen anyone leave.
    run_until(&mut [&mut pa, &mut pb, &mut pc], ms(3000), |_| false);
    for (who, client) in [("alice", &mut a), ("bob", &mut b), ("carol", &mut c)] {
        client.wait(0, |_| false, ms(500), &mut || {});
        for other in ["alice", "bob", "carol"] {
            assert!(
                !client.inbox.iter().any(|m| left(m, other)),
                "{who} saw {other} leave"
            );
        }
    }
    let bridges: f64 = rt.block_on(async {
        metric(&nodes[0].base, "sfu_cluster_bridges", "").await
            + metric(&nodes[1].base, "sfu_cluster_bridges", "").await
    });
    assert_eq!(bridges, 1.0, "one bridge between the nodes");

    // Alice talks: bob, on the other node, is told she speaks (and not
    // the bridge that carries her voice).
    pa.audio_level = Some(-15);
    let alice_sid = a.me();
    let n = b.inbox.len();
    let spoke = b.wait(
        n,
        |m| {
            matches!(m, Response::SpeakersChanged(s)
                if s.speakers.iter().any(|s| s.active && s.sid == alice_sid)
                    && s.speakers.iter().all(|s| !s.active || s.sid == alice_sid))
        },
        T,
        &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
            pc.run_for(ms(2));
        },
    );
    assert!(
        spoke.is_some(),
        "bob is told alice speaks: {:?}",
        &b.inbox[n..]
    );
    pa.audio_level = None;

    // Data packets cross the bridge: to everyone, and to carol alone.
    let mut sent = false;
    for _ in 0..200 {
        if pa.send_bytes(RELIABLE, &user_packet(b"hello all", "chat", &[])) {
            sent = true;
            break;
        }
        run_until(&mut [&mut pa, &mut pb, &mut pc], ms(20), |_| false);
    }
    assert!(sent, "alice's data channel opened");
    assert!(pa.send_bytes(RELIABLE, &user_packet(b"psst", "chat", &["carol"])));
    let got = |p: &TestPeer, payload: &[u8]| {
        user_packets(p)
            .iter()
            .any(|(from, _, data)| from == "alice" && data == payload)
    };
    assert!(
        run_until(&mut [&mut pa, &mut pb, &mut pc], T, |p| {
            got(p[1], b"hello all") && got(p[2], b"hello all") && got(p[2], b"psst")
        }),
        "bob and carol get alice's packets: bob {:?}, carol {:?}",
        user_packets(&pb),
        user_packets(&pc)
    );
    assert!(!got(&pb, b"psst"), "a packet to carol is not bob's");

    // The room's API (asked at bob's node, answered by the room's) acts on
    // participants of the satellite: listed, updated, muted, removed.
    let api = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let url = format!("{}{path}", nodes[1].base);
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method, url)
                .header("authorization", "Basic ZGV2a2V5OnNlY3JldA==");
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.expect("admin API");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        })
    };
    let (status, body) = api(reqwest::Method::GET, "/api/rooms/span/participants", None);
    assert_eq!(status, 200, "{body}");
    for who in ["alice", "bob", "carol"] {
        assert!(body.contains(&format!("\"{who}\"")), "{who} listed: {body}");
    }
    assert!(
        !body.contains("bridge:"),
        "the bridge is not listed: {body}"
    );
    let (status, body) = api(reqwest::Method::GET, "/api/rooms", None);
    assert_eq!(status, 200, "{body}");
    let rooms: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(rooms["rooms"][0]["participants"], 3, "{body}");
    assert_eq!(rooms["rooms"][0]["node"], "meet-a", "{body}");
    let n = a.inbox.len();
    let (status, body) = api(
        reqwest::Method::PATCH,
        "/api/rooms/span/participants/carol",
        Some(json!({"metadata": "host"})),
    );
    assert_eq!(status, 200, "{body}");
    a.wait(
        n,
        |m| {
            matches!(m, Response::Update(u) if u.participants.iter()
            .any(|p| p.identity == "carol" && p.metadata == "host"))
        },
        T,
        &mut || pa.run_for(ms(2)),
    )
    .expect("alice sees carol's new metadata");
    let (status, body) = api(
        reqwest::Method::POST,
        "/api/rooms/span/participants/carol/mute",
        Some(json!({"track": "TR_nope", "muted": true})),
    );
    assert_eq!(status, 404, "not carol's track: {body}");

    // Redis goes away: a new participant still joins the satellite (a room
    // bridged here is served without a placement), a new room is refused.
    redis.stop();
    let mut dan = LkClient::connect(&nodes[1].base, &member_token(room, "dan"), None)
        .expect("dan joins the satellite without Redis");
    let refused = LkClient::connect(&nodes[1].base, &member_token("elsewhere", "eve"), None);
    assert_eq!(
        refused.err().map(|r| r.status),
        Some(503),
        "a room needing a placement is refused"
    );
    dan.send(leave());
    redis.restart();

    // Bob mutes his microphone, then leaves: alice hears both.
    let bob_sid = a.participant("bob").map(|p| p.sid).expect("bob's sid");
    let n = a.inbox.len();
    b.send(Request::Mute(proto::MuteTrackRequest {
        sid: b_audio.clone(),
        muted: true,
    }));
    a.wait(n, |m| muted(m, &b_audio), T, &mut || {
        pa.run_for(ms(2));
        pb.run_for(ms(2));
    })
    .expect("alice sees bob's microphone muted");
    b.send(leave());
    let gone = a
        .wait(n, |m| left(m, "bob"), T, &mut || pa.run_for(ms(2)))
        .expect("alice hears bob left");
    assert!(
        matches!(gone, Response::Update(ref u) if u.participants.iter().any(|p| p.sid == bob_sid)),
        "{gone:?}"
    );
    assert!(a.participant("bob").is_none());
    // Carol still sees alice after bob left.
    let before = frames_of(&pc, &c_subs, &a_video);
    assert!(
        run_until(&mut [&mut pa, &mut pc], T, |p| {
            frames_of(p[1], &c_subs, &a_video) >= before + 10
        }),
        "carol still decodes alice"
    );
    // An administrator mutes carol's camera, then removes her.
    let n = a.inbox.len();
    let (status, body) = api(
        reqwest::Method::POST,
        "/api/rooms/span/participants/carol/mute",
        Some(json!({"track": carol_video, "muted": true})),
    );
    assert_eq!(status, 204, "{body}");
    a.wait(n, |m| muted(m, &carol_video), T, &mut || pa.run_for(ms(2)))
        .expect("alice sees carol's camera muted");
    let (status, body) = api(
        reqwest::Method::DELETE,
        "/api/rooms/span/participants/carol",
        None,
    );
    assert!(status == 200 || status == 204, "{status} {body}");
    c.wait(
        0,
        |m| told_to_leave(m, proto::DisconnectReason::ParticipantRemoved),
        T,
        &mut || pc.run_for(ms(2)),
    )
    .expect("carol is told she was removed");
    a.wait(n, |m| left(m, "carol"), T, &mut || pa.run_for(ms(2)))
        .expect("alice hears carol left");

    // One identity, one session in the room, whichever nodes: erin joins
    // on the satellite, then again on the room's node, and the first is
    // replaced; alice joins again on the satellite, and so is she.
    let mut erin =
        LkClient::connect(&nodes[1].base, &member_token(room, "erin"), None).expect("erin");
    a.wait(
        0,
        |m| matches!(m, Response::Update(u) if u.participants.iter().any(|p| p.identity == "erin")),
        T,
        &mut || pa.run_for(ms(2)),
    )
    .expect("alice sees erin");
    // Erin sends no media: her node grades her link lost, and alice is told.
    let erin_sid = erin.me();
    a.wait(
        0,
        |m| {
            matches!(m, Response::ConnectionQuality(q) if q.updates.iter().any(|u|
                u.participant_sid == erin_sid && u.quality == proto::ConnectionQuality::Lost as i32))
        },
        T,
        &mut || pa.run_for(ms(2)),
    )
    .expect("alice is told erin's link is lost");
    let _erin2 =
        LkClient::connect(&nodes[0].base, &member_token(room, "erin"), None).expect("erin again");
    let replaced = erin.wait(
        0,
        |m| told_to_leave(m, proto::DisconnectReason::DuplicateIdentity),
        T,
        &mut || {},
    );
    assert!(
        replaced.is_some(),
        "erin's first session is replaced: {:?}",
        erin.inbox
    );
    let _alice2 =
        LkClient::connect(&nodes[1].base, &member_token(room, "alice"), None).expect("alice again");
    let replaced = a.wait(
        0,
        |m| told_to_leave(m, proto::DisconnectReason::DuplicateIdentity),
        T,
        &mut || pa.run_for(ms(2)),
    );
    assert!(replaced.is_some(), "alice's first session is replaced");
}

/// A simulcast member joined through `base`: its client, peer and video sid.
fn simulcast_member_on(
    base: &str,
    room: &str,
    identity: &str,
) -> (common::livekit::LkClient, TestPeer, String) {
    use common::livekit::{add_track, answered, LkClient};
    use common::SimLayer;
    let mut client = LkClient::connect(base, &member_token(room, identity), None).expect("join");
    add_track(&mut client, "audio", MediaKind::Audio, &mut || {});
    let video = add_track(&mut client, "video", MediaKind::Video, &mut || {});
    let (mut peer, offer) = TestPeer::simulcast_member(vec![
        SimLayer::new("f", 1280, 720, 4000),
        SimLayer::new("h", 640, 360, 1500),
        SimLayer::new("q", 320, 180, 500),
    ]);
    let n = client.inbox.len();
    let id = client.offer(offer);
    answered(&mut client, &mut peer, id, n);
    (client, peer, video)
}

/// Dynacast across a bridge, both ways: a simulcast publisher on each node
/// (one is the room's node, the other a satellite) is told to pause the
/// layers nobody on the other node can use, and to resume those a viewer
/// there can.
#[test]
fn dynacast_crosses_the_bridge() {
    use common::livekit::{enabled_qualities, receive_only, subscribe, LkClient};
    use proto::VideoQuality::{High, Low, Medium};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = Redis::start();
    let nodes = [
        Node::start("dyn-a", &redis, "proxy"),
        Node::start("dyn-b", &redis, "proxy"),
    ];
    rt.block_on(wait_ready(&nodes.iter().collect::<Vec<_>>()));
    let room = "dyn";
    let (c0, p0, video0) = simulcast_member_on(&nodes[0].base, room, "pub-0");
    let (c1, p1, video1) = simulcast_member_on(&nodes[1].base, room, "pub-1");
    let mut clients = vec![c0, c1];
    let mut peers = vec![p0, p1];
    let videos = [video0, video1];
    // A listener on the other node of each: audio only, so that nobody
    // anywhere wants the cameras yet.
    for (i, base) in [(0, &nodes[1].base), (1, &nodes[0].base)] {
        let identity = format!("listener-{i}");
        let mut client =
            LkClient::connect(base, &member_token(room, &identity), None).expect("listener");
        let (audio, _) = client
            .wait_tracks_of(&format!("pub-{i}"), &mut || run_all(&mut peers))
            .expect("the publisher's tracks");
        let (peer, _) = receive_only(&mut client, &[audio]);
        clients.push(client);
        peers.push(peer);
    }
    for (i, video) in videos.iter().enumerate() {
        let (first, rest) = clients.split_at_mut(1);
        let publisher = if i == 0 { &mut first[0] } else { &mut rest[0] };
        // First the bridge takes every layer, then the other node's view
        // (nobody there wants the camera) pauses them all.
        let told = |m: &Response, q: &[proto::VideoQuality]| {
            enabled_qualities(m, video).as_deref() == Some(q)
        };
        publisher
            .wait(0, |m| told(m, &[Low, Medium, High]), T, &mut || {
                run_all(&mut peers)
            })
            .expect("the bridge wants every layer");
        let taken = publisher
            .inbox
            .iter()
            .position(|m| told(m, &[Low, Medium, High]))
            .unwrap_or(0);
        let paused = publisher.wait(taken, |m| told(m, &[]), 2 * T, &mut || run_all(&mut peers));
        assert!(
            paused.is_some(),
            "pub-{i}: every layer paused: {:?}\n{}",
            publisher
                .inbox
                .iter()
                .filter_map(|m| enabled_qualities(m, video))
                .collect::<Vec<_>>(),
            dynacast_logs(&nodes)
        );
    }
    // Each listener now watches the other node's camera at most 640 wide:
    // the two lower layers resume, and it decodes 640.
    for i in 0..2 {
        let n = clients[i].inbox.len();
        let listener = &mut clients[2 + i];
        listener.send(Request::TrackSetting(proto::UpdateTrackSettings {
            track_sids: vec![videos[i].clone()],
            width: 640,
            height: 360,
            ..Default::default()
        }));
        let line = subscribe(
            listener,
            &mut peers[2 + i],
            std::slice::from_ref(&videos[i]),
        )[0]
        .1;
        let publisher = &mut clients[i];
        let resumed = publisher.wait(
            n,
            |m| enabled_qualities(m, &videos[i]).as_deref() == Some(&[Low, Medium][..]),
            2 * T,
            &mut || run_all(&mut peers),
        );
        assert!(
            resumed.is_some(),
            "pub-{i}: the layers the viewer can use resume: {:?}\n{}",
            publisher.inbox[n..]
                .iter()
                .filter_map(|m| enabled_qualities(m, &videos[i]))
                .collect::<Vec<_>>(),
            dynacast_logs(&nodes)
        );
        let mut refs: Vec<&mut TestPeer> = peers.iter_mut().collect();
        let got = common::member::run_until(&mut refs, 2 * T, |p| {
            p[2 + i]
                .stats
                .keyframe_widths
                .iter()
                .any(|(_, w)| *w == 640)
                && p[2 + i].frames_on(line) > 10
        });
        assert!(
            got,
            "listener-{i} decodes the 640 layer: {:?}",
            peers[2 + i].stats.keyframe_widths
        );
    }
}

/// What each node decided about layers (its `sfu::dynacast` debug lines,
/// with its bridges' and rooms' lifecycle).
fn dynacast_logs(nodes: &[Node]) -> String {
    let mut out = String::new();
    for node in nodes {
        let needles = ["DEBUG", "bridge", "room created", "satellite"];
        out.push_str(&log_lines(&node.id, &needles));
    }
    out
}

fn run_all(peers: &mut [TestPeer]) {
    for p in peers.iter_mut() {
        p.run_for(ms(1));
    }
}

/// A room's participant limit holds over nodes: a satellite counts the
/// room's participants on the other node, and the room's node counts the
/// satellite's (not the one bridge that speaks for them).
#[test]
fn the_participant_limit_counts_every_node() {
    use common::livekit::{join_and_publish, leave, LkClient};

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = Redis::start();
    let limit = ["--workers", "1", "--max-participants-per-room", "3"];
    let nodes = [
        Node::spawn("cap-a", &redis, "proxy", true, &limit),
        Node::spawn("cap-b", &redis, "proxy", true, &limit),
    ];
    rt.block_on(wait_ready(&nodes.iter().collect::<Vec<_>>()));
    let room = "cap";
    let (_a, mut pa, _, _) = join_and_publish(&nodes[0].base, &member_token(room, "alice"));
    let (mut b, mut pb, _, _) = join_and_publish(&nodes[1].base, &member_token(room, "bob"));
    let (mut c, mut pc, _, _) = join_and_publish(&nodes[1].base, &member_token(room, "carol"));
    for (who, client) in [("bob", &mut b), ("carol", &mut c)] {
        client
            .wait_tracks_of("alice", &mut || {
                pa.run_for(ms(2));
                pb.run_for(ms(2));
                pc.run_for(ms(2));
            })
            .unwrap_or_else(|| panic!("{who} sees alice"));
    }
    // Node 0 has alice and a bridge (or the room's copy of bob and carol):
    // counting sessions there would admit a fourth.
    for (node, who) in [(0, "dave"), (1, "erin")] {
        // Both nodes know of both participants once each sees the other.
        let end = std::time::Instant::now() + T;
        let refused = loop {
            pa.run_for(ms(20));
            pb.run_for(ms(20));
            pc.run_for(ms(20));
            match LkClient::connect(&nodes[node].base, &member_token(room, who), None) {
                Err(r) => break Some(r),
                Ok(mut c) => {
                    c.send(leave());
                    if std::time::Instant::now() > end {
                        break None;
                    }
                }
            }
        };
        let refused = refused.unwrap_or_else(|| panic!("{who} on node {node} is refused"));
        assert_eq!(refused.status, 503, "{who}: {}", refused.body);
        assert!(
            refused.body.contains("participants per room"),
            "{who}: {}",
            refused.body
        );
    }
}
