//! The link over real loopback sockets: bad bytes counted while the link stays up, reconnection
//! with back-off, latched messages sent again to a new peer.

use needle_nav_igtl::frame::encode_packet;
use needle_nav_igtl::link::{run, LinkConfig, LinkCounters, LinkEvent, LinkMode, Outgoing};
use needle_nav_igtl::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

fn transform_wire(device: &str, x: f32) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, x, 0.0, 0.0] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    encode_packet("TRANSFORM", device, 1_000_000_000, &body)
}

fn config(mode: LinkMode, port: u16) -> LinkConfig {
    LinkConfig {
        name: "test",
        mode,
        host: "127.0.0.1".into(),
        port,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(80),
        max_body_bytes: 4096,
    }
}

async fn next_message(events: &mut mpsc::Receiver<LinkEvent>) -> needle_nav_igtl::Received {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(LinkEvent::Message(m))) => return m,
            Ok(Some(_)) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_counts_bad_bytes_keeps_the_link_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counters = Arc::new(LinkCounters::default());
    let (tx, mut events) = mpsc::channel(64);
    let (_out, out_rx) = mpsc::channel(4);
    tokio::spawn(run(config(LinkMode::Client, port), counters.clone(), tx, out_rx));

    let (mut peer, _) = listener.accept().await.unwrap();
    let mut oversized = transform_wire("Big", 0.0);
    oversized[42..50].copy_from_slice(&u64::MAX.to_be_bytes());
    let mut bad_crc = transform_wire("Bad", 0.0);
    bad_crc[60] ^= 1;
    peer.write_all(&[0xde; 500]).await.unwrap();
    peer.write_all(&oversized[..58]).await.unwrap();
    peer.write_all(&bad_crc).await.unwrap();
    peer.write_all(&encode_packet("NOPE", "X", 0, &[])).await.unwrap();
    peer.write_all(&transform_wire("Good", 12.5)).await.unwrap();
    let m = next_message(&mut events).await;
    assert_eq!(m.device_name, "Good");
    assert!(matches!(m.message, Incoming::Transform(ref t) if t.matrix[0][3] == 12.5));
    let c = counters.snapshot();
    assert!(c.connected);
    assert_eq!((c.oversized, c.crc_failed, c.unknown_type, c.received), (1, 1, 1, 1));
    assert!(c.garbage >= 1 && c.garbage_bytes >= 500, "{c:?}");

    // The peer goes away; the link reconnects to the next one on the same port.
    drop(peer);
    let (mut peer, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    peer.write_all(&transform_wire("Again", 1.0)).await.unwrap();
    assert_eq!(next_message(&mut events).await.device_name, "Again");
    assert_eq!(counters.snapshot().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sends_latched_messages_to_every_new_peer_and_drops_stream_ones_meanwhile() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let counters = Arc::new(LinkCounters::default());
    let (tx, _events) = mpsc::channel(64);
    let (out, out_rx) = mpsc::channel(4);
    tokio::spawn(run(config(LinkMode::Server, port), counters.clone(), tx, out_rx));
    let latched = transform_wire("TrackerToCT", 5.0);
    out.send(Outgoing::Latched { key: "registration".into(), bytes: latched.clone() }).await.unwrap();
    out.send(Outgoing::Stream(transform_wire("NeedleToTracker", 1.0))).await.unwrap();
    // Let the link take both while nobody is connected.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let connect = || async {
        for _ in 0..100 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the link never listened");
    };
    for _ in 0..2 {
        let mut peer = connect().await;
        let mut got = vec![0u8; latched.len()];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, latched);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counters.snapshot().dropped_unconnected, 1);
}
