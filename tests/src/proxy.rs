//! A TCP proxy in front of a real service, to test what a connector does
//! when its connection breaks: [`Proxy::cut`] drops every open connection and
//! refuses new ones for a while, as a server restart does, without
//! disturbing the other tests that use the same server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy forwarding a local port to a service.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    /// Bumped by every cut: connections opened before it close.
    generation: Arc<watch::Sender<(u64, bool)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port, forwarding to `target`
    /// (e.g. `"127.0.0.1:6379"`). Needs a Tokio runtime.
    pub async fn start(target: &str) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = target.to_string();
        let (tx, _) = watch::channel((0u64, false));
        let generation = Arc::new(tx);
        let gen_tx = generation.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let (generation, refusing) = *gen_tx.borrow();
                if refusing {
                    drop(inbound);
                    continue;
                }
                let mut cuts = gen_tx.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    let pipe = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut ri, &mut wo) => {},
                            _ = tokio::io::copy(&mut ro, &mut wi) => {},
                        }
                    };
                    let cut = async {
                        while cuts.changed().await.is_ok() {
                            if cuts.borrow().0 != generation {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = pipe => {},
                        _ = cut => {},
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            generation,
            task,
        })
    }

    /// The local address to connect to instead of the service's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones for `down`, like a
    /// server restart; then accepts again.
    pub async fn cut(&self, down: Duration) {
        self.generation.send_modify(|(generation, refusing)| {
            *generation += 1;
            *refusing = true;
        });
        tokio::time::sleep(down).await;
        self.generation
            .send_modify(|(_, refusing)| *refusing = false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
