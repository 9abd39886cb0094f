//! The load generator's HTTP/2 connections.
//!
//! h2 sends a DATA payload of 256 bytes or more by itself when the connection can write
//! vectored, and takes no other frame until that write is done: a ValidateToken request
//! (a ~500-byte token) then costs the client one write syscall of its own, where the
//! small Check requests of many callers share one. That is the client's cost, not the
//! server's, and it lowered the ratios by about a tenth (BENCHMARKS.md). So by default
//! the connections say they cannot write vectored, which makes h2 copy payloads up to
//! 1 KiB into its buffer and write the frames of many calls at once, as it does for
//! Check; `--vectored-writes` keeps tonic's own connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// One connection to `addr` (`http://HOST:PORT`).
pub(crate) async fn connect(addr: &str, vectored_writes: bool) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(addr.to_owned())?;
    if vectored_writes {
        return Ok(endpoint.connect().await?);
    }
    let connector = tower::service_fn(|uri: Uri| async move {
        let host = uri.host().unwrap_or_default();
        // An IPv6 literal comes bracketed.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?;
        stream.set_nodelay(true)?;
        io::Result::Ok(Unvectored(TokioIo::new(stream)))
    });
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// A TCP connection that reports no vectored writes; everything else passes through.
struct Unvectored(TokioIo<TcpStream>);

impl Read for Unvectored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for Unvectored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
