//! Round trips counted on the wire: a TCP relay between a pool and PostgreSQL that counts how
//! often a client speaks after the server has answered. That is what a round trip costs over a
//! network, whatever the statements are (a simple-protocol message of several statements is
//! one; a prepared statement's parse, bind and execute sent together are one).
//!
//! Not counted: a lone `Sync` message, the ping sqlx's pool sends when a connection is taken
//! (`test_before_acquire`, on by default) and when it is given back. Every pooled statement
//! pays those, the crate's and a hand-written one's alike (a look outside a transaction pays
//! both; a transaction pays them once for all its statements), and the one on giving back is
//! sent after the caller has its answer, so counting it would make counts depend on timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// PostgreSQL's `Sync` message alone: a pool's ping.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// The relay: connect to [`RoundTrips::url`] instead of the server's URL.
pub(crate) struct RoundTrips {
    /// The server's URL with the relay's port.
    pub(crate) url: String,
    count: Arc<AtomicUsize>,
    relay: tokio::task::JoinHandle<()>,
}

impl RoundTrips {
    /// Relays to the server of `url` (`postgres://user@127.0.0.1:PORT/db`).
    pub(crate) async fn start(url: &str) -> RoundTrips {
        let (before, rest) = url.split_once("@127.0.0.1:").expect("a loopback URL");
        let (port, path) = rest.split_once('/').expect("a database in the URL");
        let server = format!("127.0.0.1:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let relay = tokio::spawn({
            let count = count.clone();
            async move {
                loop {
                    let (client, _) = listener.accept().await.unwrap();
                    let server = TcpStream::connect(&server).await.unwrap();
                    tokio::spawn(relay_connection(client, server, count.clone()));
                }
            }
        });
        RoundTrips {
            url: format!("{before}@127.0.0.1:{relay_port}/{path}"),
            count,
            relay,
        }
    }

    /// The round trips since the last call (over every connection through the relay).
    pub(crate) fn take(&self) -> usize {
        self.count.swap(0, Ordering::SeqCst)
    }
}

impl Drop for RoundTrips {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Copies both ways; a client write is a new round trip when the server has spoken since the
/// client's last write (or never has).
async fn relay_connection(client: TcpStream, server: TcpStream, count: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let server_spoke = Arc::new(AtomicBool::new(true));
    let upstream = {
        let server_spoke = server_spoke.clone();
        async move {
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if server_spoke.swap(false, Ordering::SeqCst) && buf[..n] != SYNC {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            server_spoke.store(true, Ordering::SeqCst);
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(upstream, downstream);
}
