//! `hook-sink`: a webhook receiver that answers 200 to every request, so a
//! broker with webhooks on can be benchmarked without a real app behind it
//! (see `scripts/bench-webhooks`). HTTP/1.1 with keep-alive, bodies sized by
//! `Content-Length` (what the broker sends); nothing is parsed beyond that.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Serves on 127.0.0.1:`port` until the process is stopped.
pub async fn run(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(serve(socket));
    }
}

async fn serve(mut socket: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Answer every complete request in the buffer.
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let length = content_length(&buf[..end]);
            if buf.len() < end + 4 + length {
                break;
            }
            buf.drain(..end + 4 + length);
            if socket.write_all(OK).await.is_err() {
                return;
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_body_length_whatever_the_header_case() {
        assert_eq!(content_length(b"POST / HTTP/1.1\r\nContent-Length: 12"), 12);
        assert_eq!(content_length(b"POST / HTTP/1.1\r\ncontent-length:7"), 7);
        assert_eq!(content_length(b"GET / HTTP/1.1\r\nHost: x"), 0);
    }
}
