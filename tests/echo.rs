//! The conformance echo listener (`serve --echo-listen`): off by default,
//! echoes text and binary through the same reader and outbox as
//! `/v1/stream`, with its own message size cap.

mod common;

use common::*;

fn echo_config() -> tickwire::server::config::Config {
    let mut c = config();
    c.echo_listen = Some("127.0.0.1:0".parse().unwrap());
    c.echo_max_message_bytes = 4 << 20;
    c.max_message_bytes = 1024;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_listener_is_off_by_default() {
    let h = start(config());
    assert_eq!(h.echo_addr(), None);
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_come_back_with_their_opcode() {
    let h = start(echo_config());
    let addr = h.echo_addr().expect("echo listener on");
    assert_ne!(addr.port(), h.addr().port());
    // Any path: the Autobahn client connects to `/`.
    let (mut ws, head) = connect_with(addr, "/", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.send_text("hello").await;
    assert_eq!(ws.recv().await, Msg::Text("hello".into()));
    ws.send_frame(true, 2, &[0, 1, 2, 255]).await;
    assert_eq!(ws.recv().await, Msg::Binary(vec![0, 1, 2, 255]));
    // Fragmented, with a ping in between: one message back, pong first.
    ws.send_frame(false, 2, b"ab").await;
    ws.send_frame(true, 9, b"p").await;
    ws.send_frame(true, 0, b"cd").await;
    assert_eq!(ws.recv().await, Msg::Pong(b"p".to_vec()));
    assert_eq!(ws.recv().await, Msg::Binary(b"abcd".to_vec()));
    // Close, then a second Close: one echo, then EOF.
    ws.send_close(1000, "bye").await;
    ws.send_close(1000, "again").await;
    assert_eq!(ws.recv().await, Msg::Close(Some(1000), "bye".into()));
    ws.expect_eof().await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_has_its_own_size_cap_and_the_stream_keeps_its_own() {
    let h = start(echo_config());
    let big = vec![b'x'; 1 << 20];
    let (mut ws, _) = connect_with(h.echo_addr().unwrap(), "/", "", None).await;
    ws.send_frame(true, 1, &big).await;
    assert_eq!(
        ws.recv().await,
        Msg::Text(String::from_utf8(big.clone()).unwrap())
    );
    // Over the echo's cap: 1009 from the header.
    let mut head = vec![0x82u8, 0x80 | 127];
    head.extend_from_slice(&(5u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    use tokio::io::AsyncWriteExt;
    ws.stream.write_all(&head).await.unwrap();
    assert_eq!(ws.recv_close().await.0, Some(1009));
    // The same megabyte on /v1/stream: over its own cap, read through and
    // answered `message_too_large` (the echo, above, is closed instead).
    let mut sub = subscriber(h.addr()).await;
    sub.send_frame(true, 1, &big).await;
    let e = sub.recv_json().await;
    assert_eq!(e["code"], "message_too_large", "{e}");
    let cap = echo_config().subscriber_max_message_bytes();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&format!("({cap} bytes)")),
        "{e}"
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_frame_on_the_echo_is_closed_with_1002_after_earlier_messages() {
    let h = start(echo_config());
    let (mut ws, _) = connect_with(h.echo_addr().unwrap(), "/", "", None).await;
    // A good frame and an unmasked one in the same write: the first is
    // still echoed, then the connection is failed.
    let mut bytes = encode_frame(true, 1, b"first");
    bytes.extend_from_slice(&[0x81, 0x03, b'b', b'a', b'd']);
    use tokio::io::AsyncWriteExt;
    ws.stream.write_all(&bytes).await.unwrap();
    assert_eq!(ws.recv().await, Msg::Text("first".into()));
    let (code, reason, _) = ws.recv_close().await;
    assert_eq!(code, Some(1002));
    assert!(reason.contains("masked"), "{reason}");
    h.shutdown();
}
