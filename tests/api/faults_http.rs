//! Faults at the HTTP edge (issue 13, items 4, 5 and 8): clients that hold
//! connections without finishing a request, a flood of idle connections, a
//! database that stops answering while `/readyz` is probed, and the bearer
//! scheme's spelling and challenge. All on loopback, bounded in size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

/// Reads until the server closes the connection (or resets it); `None` if
/// it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A 408/400 before the close is fine; keep reading.
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end)
        .await
        .ok()
        .map(|()| started.elapsed())
}

fn address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_is_cut_off_after_the_header_timeout() {
    let app = spawn_app_with(Db::Sqlite, &["--header-read-timeout", "1s"]).await;
    let stream = TcpStream::connect(address(&app)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Headers one byte every 100 ms, never finished: ten times longer than
    // the timeout if nobody stops it.
    let trickle = tokio::spawn(async move {
        let head =
            "GET /healthz HTTP/1.1\r\nHost: ballast\r\nX-Slow: ".to_owned() + &"a".repeat(200);
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        closed.is_ok(),
        "a client trickling its headers still holds the connection after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(800),
        "closed too early: {elapsed:?}"
    );
    // The service itself is fine.
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_fails_after_the_body_timeout() {
    let app = spawn_app_with(Db::Sqlite, &["--body-read-timeout", "1s"]).await;
    app.create_small("c1").await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    // Promises 100 bytes, sends 10, then nothing.
    stream
        .write_all(
            b"POST /v1/clusters/c1/telemetry HTTP/1.1\r\nHost: ballast\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"worker\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(closed_within(&mut stream, Duration::from_secs(3))
        .await
        .is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_neither_starves_healthz_nor_stays_open() {
    let app = spawn_app_with(Db::Sqlite, &["--header-read-timeout", "2s"]).await;
    // Bounded: 256 idle loopback connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..256 {
        idle.push(TcpStream::connect(address(&app)).await.unwrap());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every idle connection is closed once the header timeout passes.
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(5))
                .await
                .is_some(),
            "idle connection {i} is still open"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_app_with(Db::Sqlite, &["--header-read-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ballast\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Kept alive after the answer, but not for ever.
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|after| after >= Duration::from_millis(800)),
        "idle keep-alive connection: {closed:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_bounds_open_connections() {
    let app = spawn_app_with(
        Db::Sqlite,
        &["--header-read-timeout", "2s", "--max-connections", "4"],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(address(&app)).await.unwrap());
    }
    // Let the server accept them all before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 200);
    // The fifth connection waited in the backlog until the idle ones timed out.
    assert!(
        waited >= Duration::from_millis(1200),
        "served at once ({waited:?}): the limit is not enforced"
    );
    app.stop().await;
}

/// A TCP relay to PostgreSQL that can be frozen: it stops forwarding in
/// both directions and holds every socket open, as a partitioned or hung
/// database looks to the service (no reset, no answer).
struct Relay {
    address: String,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        // Accepted, never answered (the socket stays open).
                        let _held = client;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, flag.clone()), pump(sr, cw, flag));
                });
            }
        });
        Relay { address, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while not frozen; frozen, it waits (holding both).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `postgres://user:pass@host:port/db` with `host:port` replaced.
fn via(url: &str, relay: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let upstream = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    let at = if userinfo.is_empty() { "" } else { "@" };
    (upstream, format!("{scheme}://{userinfo}{at}{relay}/{path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_within_its_deadline_when_the_database_hangs() {
    if postgres_url().is_none() {
        eprintln!("skipped: BALLAST_TEST_POSTGRES_URL is not set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Postgres, dir.path()).await;
    let (upstream, _) = via(&url, "-");
    let relay = Relay::start(upstream).await;
    let (_, relayed) = via(&url, &relay.address);
    let app = spawn_app_on(&relayed, dir, &["--ready-timeout", "1s"]).await;
    let mut ready = false;
    for _ in 0..100 {
        if app.get("/readyz").await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the service becomes ready through the relay");

    relay.freeze(true);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = client.get(app.url("/readyz")).send().await;
    let took = started.elapsed();
    let r = r.unwrap_or_else(|e| panic!("/readyz gave no answer in {took:?}: {e}"));
    assert_eq!(r.status(), 503);
    assert!(
        took < Duration::from_millis(2500),
        "/readyz took {took:?} with a 1s deadline"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["database"]["ok"], false);
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), 200);

    relay.freeze(false);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app_with(
        Db::Sqlite,
        &["--worker-token", "w-token", "--admin-token", "a-token"],
    )
    .await;
    for header in ["Bearer w-token", "bearer w-token", "BEARER w-token"] {
        let r = app
            .client
            .get(app.url("/v1/clusters"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{header}");
    }
    let r = app
        .client
        .get(app.url("/v1/clusters"))
        .header("authorization", "Basic w-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_carries_its_bearer_challenge() {
    let app = spawn_app_with(
        Db::Sqlite,
        &["--worker-token", "w-token", "--admin-token", "a-token"],
    )
    .await;
    let challenge = |r: &reqwest::Response| {
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // No token, and a wrong one.
    let r = app.get("/v1/clusters").await;
    assert_eq!(r.status(), 401);
    let value = challenge(&r).expect("a 401 names its scheme");
    assert!(value.starts_with("Bearer"), "{value}");
    let r = app
        .client
        .get(app.url("/v1/clusters"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).is_some_and(|v| v.starts_with("Bearer")));
    // A valid token without the right role is a 403, not a challenge.
    let r = app
        .client
        .post(app.url("/v1/clusters/c1/rebalance"))
        .bearer_auth("w-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    app.stop().await;
}
