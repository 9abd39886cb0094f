//! The listener's stream of connections, kept going through accept errors.
//!
//! Out of file descriptors (EMFILE, ENFILE) or memory, every accept fails at once, and
//! tonic's loop would retry at once, spinning a core at the moment the server is busiest.
//! Here the error is logged and accepting resumes after a pause that doubles while the
//! errors go on (as Go's `net/http` server does); the connections queued meanwhile are
//! served once resources come back.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{net::TcpStream, time::Sleep};
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Accepted connections; an error never reaches tonic.
#[derive(Debug)]
pub(super) struct Accepting {
    incoming: TcpIncoming,
    pause: Option<Pin<Box<Sleep>>>,
    next_pause: Duration,
}

impl Accepting {
    pub(super) fn new(incoming: TcpIncoming) -> Self {
        Self {
            incoming,
            pause: None,
            next_pause: FIRST_PAUSE,
        }
    }
}

impl Stream for Accepting {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match ready!(Pin::new(&mut self.incoming).poll_next(cx)) {
                Some(Err(err)) => {
                    let pause = self.next_pause;
                    tracing::warn!(error = %err, pause_ms = pause.as_millis(), "accepting a connection failed");
                    self.pause = Some(Box::pin(tokio::time::sleep(pause)));
                    self.next_pause = (pause * 2).min(LONGEST_PAUSE);
                }
                accepted => {
                    self.next_pause = FIRST_PAUSE;
                    return Poll::Ready(accepted);
                }
            }
        }
    }
}
