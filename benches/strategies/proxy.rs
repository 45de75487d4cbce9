//! The network hop: a TCP relay between a pool and PostgreSQL that holds every chunk of bytes
//! for a fixed delay in each direction, so that "one round trip more or less" is measured
//! where it matters (a service and its database on two machines), not argued from loopback,
//! where a round trip costs almost nothing and CPU per statement decides.
//!
//! Each direction of each connection is a reader that stamps every chunk it reads with
//! `now + delay` and a writer that sends each chunk when its stamp is due, in the order read.
//! Bytes in one direction therefore keep their order and each is delayed by the same amount,
//! while several messages can be in flight at once (pipelining is not serialised), as on a
//! real link with latency and ample bandwidth.
//!
//! Plain OS threads, not tokio tasks: tokio's timer has a resolution of one millisecond and
//! rounds deadlines up, so a 1 ms sleep takes 1 to 2 ms; a sleeping thread wakes within tens of
//! microseconds. The relay also stays off the runtime the strategies run on: it is the
//! network, not the client. (`round_trips` in `setup.rs` measures what a round trip really
//! costs through it, and the report prints it.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A relay listening on `127.0.0.1:port`, forwarding to `upstream` with `delay` each way. It
/// lives until the process exits; a connection's threads end when either side closes it.
pub(crate) struct DelayProxy {
    pub(crate) port: u16,
}

impl DelayProxy {
    /// Starts listening on a free port of 127.0.0.1.
    pub(crate) fn start(upstream: SocketAddr, delay: Duration) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        thread::Builder::new()
            .name("delay-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let relayed = client.and_then(|client| relay(client, upstream, delay));
                    if let Err(e) = relayed {
                        eprintln!("delay proxy: a connection failed to open: {e}");
                    }
                }
            })?;
        Ok(DelayProxy { port })
    }
}

/// Connects `client` to `upstream`, one delayed pipe each way.
fn relay(client: TcpStream, upstream: SocketAddr, delay: Duration) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    // Small messages must leave at once: Nagle's algorithm would add its own delay.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    pipe(client.try_clone()?, server.try_clone()?, delay)?;
    pipe(server, client, delay)
}

/// Forwards what `from` sends to `to`, each chunk `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> io::Result<()> {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::Builder::new()
        .name("delay-proxy-read".into())
        .spawn(move || {
            let mut buf = vec![0; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let stamp = Instant::now() + delay;
                        if chunks.send((stamp, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping `chunks` tells the writer that nothing more comes.
        })?;
    thread::Builder::new()
        .name("delay-proxy-write".into())
        .spawn(move || {
            for (stamp, chunk) in due {
                let now = Instant::now();
                if stamp > now {
                    thread::sleep(stamp - now);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            // The other side sees end of file, as it would without the relay.
            let _ = to.shutdown(Shutdown::Write);
        })?;
    Ok(())
}
