//! A Binance connection's outbound side: the whole WebSocket frames queued
//! for it (stream events shared with every subscriber of their stream,
//! and its own replies, pings and Close) and the non-blocking socket writes
//! that drain them.
//!
//! This is the main endpoint's model ([`crate::pipeline::fanout`]): the
//! hub frames each payload once (server frames are unmasked, so header and
//! payload are the same bytes for every subscriber), queues the shared
//! `Bytes` for each subscriber and, at the end of each ring batch, writes
//! every connection it queued for with one `write` of everything pending.
//! No channel, no task wake-up per event: the session task wakes only when
//! the socket was full (to wait for room) or the connection must end.
//!
//! Everything written to the socket goes through this queue, the session's
//! replies and control frames included, so a frame is never interleaved
//! with another's bytes, and a reply keeps its place among the events.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::net::transport::Transport;
use crate::wire::frame::close_frame;

/// Most bytes gathered into one write: a backlog goes out in writes of
/// this size (the kernel takes about this much at a time on loopback).
const GATHER_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where several queued frames are copied to be written at once: one per
    /// thread (the endpoint has one), not one per connection.
    static GATHER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_BYTES));
}

/// How far a flush got.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is in the kernel.
    Drained,
    /// The socket is full; the rest waits for it to take more.
    Blocked,
    /// Our Close frame is out (or the socket failed): nothing more will be
    /// written, and the write side is shut down.
    Closed,
}

/// What [`Outbox::push_event`] did with an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (or dropped because the connection is closing anyway).
    Queued,
    /// The queue is full: the connection cannot keep up.
    Full,
}

/// One connection's queue of frames and its socket's write side.
pub struct Outbox {
    /// The socket; `None` once our side is shut down (Close written, or
    /// the socket failed).
    write: Option<Rc<Transport>>,
    /// Whole frames to write, oldest first; the first is written up to
    /// `front_sent`.
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already in the kernel.
    front_sent: usize,
    /// Frames the queue may hold (`--binance-queue-len`): more means the
    /// client cannot keep up.
    cap: usize,
    /// A Close frame is queued: no stream event is queued after it.
    closing: bool,
    /// The socket was full at the last write: the session waits for room
    /// (the hub does not try again before it has).
    blocked: bool,
    /// In the hub's list of outboxes to write at the end of the batch.
    pub(super) dirty: bool,
    /// Wakes the session: the socket filled up, or the connection closes.
    wake: Rc<Notify>,
}

impl Outbox {
    /// An outbox for `write` holding at most `cap` frames.
    pub fn new(write: Transport, cap: usize) -> Outbox {
        Outbox {
            write: Some(Rc::new(write)),
            frames: VecDeque::new(),
            front_sent: 0,
            cap,
            closing: false,
            blocked: false,
            dirty: false,
            wake: Rc::new(Notify::new()),
        }
    }

    /// What the session waits on.
    pub fn wake(&self) -> Rc<Notify> {
        self.wake.clone()
    }

    /// Queues a stream event (a frame shared with other subscribers).
    pub fn push_event(&mut self, frame: Bytes) -> Pushed {
        if self.closing {
            return Pushed::Queued;
        }
        if self.frames.len() >= self.cap {
            return Pushed::Full;
        }
        self.frames.push_back(frame);
        Pushed::Queued
    }

    /// Queues a frame of the session's own (a reply, a ping, a pong),
    /// never refused: a request's reply is not a backlog.
    pub fn push_control(&mut self, frame: Bytes) {
        if !self.closing {
            self.frames.push_back(frame);
        }
    }

    /// Queues a Close after what is queued; nothing is queued after it.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.close_with_frame(close_frame(code, reason));
    }

    /// [`Outbox::close`] with a ready frame (the echo of the client's Close).
    pub fn close_with_frame(&mut self, frame: Bytes) {
        if !self.closing {
            self.frames.push_back(frame);
            self.closing = true;
            self.wake.notify_one();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Whether nothing more will be written: the Close is out or the socket
    /// failed.
    pub fn is_finished(&self) -> bool {
        self.write.is_none()
    }

    /// The socket's write side, to wait for room on.
    pub fn write_half(&self) -> Option<Rc<Transport>> {
        self.write.clone()
    }

    /// Writes as much as the socket takes, in as few writes as possible.
    /// An error leaves the outbox finished (nothing more is written).
    pub fn flush(&mut self) -> io::Result<Flushed> {
        let result = self.try_flush();
        if result.is_err() {
            self.write = None;
            self.closing = true;
            self.frames.clear();
            self.wake.notify_one();
        }
        result
    }

    fn try_flush(&mut self) -> io::Result<Flushed> {
        let Some(write) = self.write.clone() else {
            return Ok(Flushed::Closed);
        };
        // TLS: the rest of the last write's ciphertext goes first.
        if !write.try_flush()? {
            self.blocked = true;
            return Ok(Flushed::Blocked);
        }
        while !self.frames.is_empty() {
            // How many bytes this write is offered, to tell a short write.
            let mut offered = self.frames[0].len() - self.front_sent;
            let written = if self.frames.len() == 1 {
                // The common case at light load: one event, written from
                // the shared frame itself.
                write.try_write(&self.frames[0][self.front_sent..])
            } else {
                GATHER.with_borrow_mut(|buf| {
                    buf.clear();
                    buf.extend_from_slice(&self.frames[0][self.front_sent..]);
                    for f in self.frames.iter().skip(1) {
                        if buf.len() + f.len() > GATHER_BYTES {
                            break;
                        }
                        buf.extend_from_slice(f);
                    }
                    offered = buf.len();
                    write.try_write(buf)
                })
            };
            match written {
                Ok(n) => {
                    self.consume(n);
                    if n < offered || !write.is_flushed() {
                        self.blocked = true;
                        return Ok(Flushed::Blocked);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(Flushed::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.blocked = false;
        if self.frames.capacity() > 4 * 1024 {
            // Give back what a backlog grew.
            self.frames = VecDeque::new();
        }
        if self.closing {
            write.finish();
            self.write = None;
            return Ok(Flushed::Closed);
        }
        Ok(Flushed::Drained)
    }

    /// Drops the `n` bytes just written from the front of the queue.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.frames[0].len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: our outbox over one end, the peer's socket.
    async fn pair(cap: usize) -> (Outbox, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = l.accept().await.unwrap();
        let (_, w) = ours.into_split();
        (Outbox::new(Transport::Plain(w), cap), peer)
    }

    #[tokio::test]
    async fn frames_go_out_whole_and_in_order_then_the_close() {
        use tokio::io::AsyncReadExt;
        let (mut out, mut peer) = pair(8).await;
        let a = crate::wire::frame::frame(crate::wire::frame::OPCODE_TEXT, b"one");
        let b = crate::wire::frame::frame(crate::wire::frame::OPCODE_TEXT, b"two");
        assert_eq!(out.push_event(a.clone()), Pushed::Queued);
        out.push_control(b.clone());
        out.close(1008, "bye");
        assert_eq!(
            out.push_event(a.clone()),
            Pushed::Queued,
            "dropped after Close"
        );
        assert_eq!(out.flush().unwrap(), Flushed::Closed);
        assert!(out.is_finished());
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        let mut want = [a, b].concat();
        want.extend_from_slice(&close_frame(1008, "bye"));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_partial_write_resumes_mid_frame() {
        use tokio::io::AsyncReadExt;
        let (mut out, mut peer) = pair(4).await;
        // Frames big enough to fill the socket's buffers before 4 are out.
        let big = crate::wire::frame::frame(
            crate::wire::frame::OPCODE_TEXT,
            &vec![b'x'; 4 * 1024 * 1024],
        );
        for _ in 0..4 {
            assert_eq!(out.push_event(big.clone()), Pushed::Queued);
        }
        assert_eq!(out.push_event(big.clone()), Pushed::Full);
        assert_eq!(out.flush().unwrap(), Flushed::Blocked);
        assert!(out.is_blocked());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        out.close(1000, "");
        while out.flush().unwrap() != Flushed::Closed {
            out.write_half().unwrap().writable().await.unwrap();
        }
        let got = reader.await.unwrap();
        let mut want = [big.clone(), big.clone(), big.clone(), big].concat();
        want.extend_from_slice(&close_frame(1000, ""));
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the stream is the frames, whole and in order");
    }
}
