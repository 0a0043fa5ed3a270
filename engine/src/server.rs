//! Starting the engine: check the kernel, bind one `SO_REUSEPORT` listener per shard,
//! make the router and the links, start the threads, announce the address, and stay
//! until a thread ends (which ends the process: a shard never stops on its own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use anyhow::{Context, Result, bail};
use socket2::{Domain, Socket, Type};
use switchboard_proto::http1;

use crate::config::{self, MAX_HEADERS_LIMIT, ServeArgs};
use crate::metrics::{Registry, ShardMetrics};
use crate::pubsub::MAX_SHARDS;
use crate::pubsub::history::HistoryLimits;
use crate::pubsub::link::{self, Doorbell, RouterEnd};
use crate::pubsub::router::{Router, RouterMetrics, RouterSettings};
use crate::shard::{Settings, Shard, ShardInit};
use crate::uring::{Ring, probe};

/// Pending connections the kernel queues per listener (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 65535;

/// A running engine's address and the threads' exit notices.
pub struct Running {
    pub addr: SocketAddr,
    pub shards: usize,
    exits: mpsc::Receiver<(String, Result<()>)>,
}

impl Running {
    /// Blocks until a thread ends; returns its error (or an error saying it ended).
    pub fn wait(self) -> Result<()> {
        let (name, result) = self.exits.recv().context("every engine thread vanished")?;
        result.with_context(|| format!("{name} failed"))?;
        bail!("{name} stopped")
    }
}

/// Longest `--poll-timeout`: a held poll's deadline must fit the shards' timer wheel.
pub const MAX_POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(100);
/// Largest `--history-size` (messages per topic).
pub const MAX_HISTORY_SIZE: usize = 1 << 16;

pub fn settings(args: &ServeArgs, max_conns: u32, epoch: u32) -> Settings {
    Settings {
        epoch,
        poll_timeout: args.poll_timeout,
        echo: args.echo,
        max_conns,
        http: http1::Limits {
            max_head_bytes: args.max_head_bytes,
            max_headers: args.max_headers.min(MAX_HEADERS_LIMIT),
        },
        max_publish_bytes: args.max_publish_bytes,
        max_queued_bytes: args.max_queued_bytes as u32,
        max_queued_messages: args.max_queued_messages,
        slow_policy: args.slow_policy,
        request_timeout: args.request_timeout,
        sse_heartbeat: args.sse_heartbeat,
        sse_retry: args.sse_retry,
        recv_buffers: args.recv_buffers,
        recv_buffer_size: args.recv_buffer_size as u32,
    }
}

/// This instance's epoch: 32 random bits from the OS (never 0), so that positions of an
/// earlier run of the server are recognised as such.
fn random_epoch() -> Result<u32> {
    use std::io::Read;
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(u32::from_ne_bytes(bytes).max(1))
}

/// Starts every thread and returns once all shards accept connections.
pub fn start(args: &ServeArgs) -> Result<Running> {
    args.validate().map_err(anyhow::Error::msg)?;
    if !(config::TICK..=MAX_POLL_TIMEOUT).contains(&args.poll_timeout) {
        bail!(
            "--poll-timeout must be between {:?} and {MAX_POLL_TIMEOUT:?}",
            config::TICK
        );
    }
    if args.history_size > MAX_HISTORY_SIZE {
        bail!("--history-size must be at most {MAX_HISTORY_SIZE}");
    }
    if args.history_topics == 0 {
        bail!("--history-topics must be at least 1");
    }
    if args.max_queued_messages == 0 {
        bail!("--max-queued-messages must be at least 1");
    }
    let epoch = random_epoch()?;
    let router_settings = RouterSettings {
        epoch,
        history: HistoryLimits {
            size: args.history_size,
            ttl: (!args.history_ttl.is_zero()).then_some(args.history_ttl),
            topics: args.history_topics as usize,
        },
    };
    let shards = usize::from(args.shards.unwrap_or_else(|| {
        thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS) as u16)
    }));
    let nofile = config::nofile_limit().unwrap_or(1024);
    let max_conns = args.max_conns.unwrap_or(nofile);
    if max_conns > nofile {
        bail!(
            "--max-conns {max_conns} exceeds the open-file limit {nofile}: a shard's fixed-file table \
             cannot be larger (raise `ulimit -n`, or add shards)"
        );
    }
    if max_conns == 0 {
        bail!("--max-conns must be at least 1");
    }

    let (exit_tx, exits) = mpsc::channel();

    // The router's ring must be made on the router's own thread (SINGLE_ISSUER); it
    // reports its doorbell, then waits for the shards' links.
    let (router_ready_tx, router_ready) = mpsc::channel();
    let (router_setup_tx, router_setup) = mpsc::channel::<(Vec<RouterEnd>, Vec<Arc<Doorbell>>)>();
    let router_metrics = Arc::new(RouterMetrics::default());
    let metrics_for_router = router_metrics.clone();
    spawn("router".into(), exit_tx.clone(), move || {
        let ring = Ring::new(Router::ring_params()).context("creating the router's ring")?;
        if let Err(e) = probe::check(&ring) {
            let _ = router_ready_tx.send(Err(anyhow::Error::new(e)));
            return Ok(());
        }
        let bell = Doorbell::new(ring.fd());
        let _ = router_ready_tx.send(Ok((bell.clone(), ring.task_run())));
        let Ok((links, shard_bells)) = router_setup.recv() else {
            return Ok(());
        };
        Router::new(
            ring,
            bell,
            links,
            shard_bells,
            metrics_for_router,
            router_settings,
        )
        .run()
        .map_err(Into::into)
    })?;
    let (router_bell, task_run) = router_ready
        .recv()
        .context("the router thread died while starting")??;
    tracing::info!(
        "io_uring ready: {shards} shards x {max_conns} connections, rings with {task_run}"
    );

    let listeners = bind_listeners(args.listen, shards)?;
    let addr = listeners[0]
        .local_addr()?
        .as_socket()
        .context("listener has no address")?;

    let metrics: Vec<Arc<ShardMetrics>> = (0..shards).map(|_| Arc::default()).collect();
    let registry = Arc::new(Registry {
        shards: metrics.clone(),
        router: router_metrics.clone(),
    });
    let settings = Arc::new(settings(args, max_conns, epoch));

    let (ready_tx, ready) = mpsc::channel();
    let mut router_links = Vec::with_capacity(shards);
    for (id, listener) in listeners.into_iter().enumerate() {
        let (shard_end, router_end) = link::link();
        router_links.push(router_end);
        let init = ShardInit {
            id,
            settings: settings.clone(),
            listener,
            link: shard_end,
            router_bell: router_bell.clone(),
            metrics: metrics[id].clone(),
            registry: registry.clone(),
        };
        let ready_tx = ready_tx.clone();
        spawn(format!("shard-{id}"), exit_tx.clone(), move || {
            let shard = match Shard::new(init) {
                Ok(shard) => shard,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("shard {id}: {e}")));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok((id, shard.bell())));
            shard.run().map_err(Into::into)
        })?;
    }
    drop(ready_tx);
    let mut shard_bells: Vec<Option<Arc<Doorbell>>> = vec![None; shards];
    for _ in 0..shards {
        let (id, bell) = ready
            .recv()
            .context("a shard thread died while starting")??;
        shard_bells[id] = Some(bell);
    }
    let shard_bells = shard_bells
        .into_iter()
        .map(|b| b.expect("every shard reported"))
        .collect();
    router_setup_tx
        .send((router_links, shard_bells))
        .map_err(|_| anyhow::anyhow!("the router thread died while starting"))?;

    Ok(Running {
        addr,
        shards,
        exits,
    })
}

type ExitSender = mpsc::Sender<(String, Result<()>)>;

/// Reports a thread's end when dropped, so that a panic is reported too.
struct ExitReport {
    name: String,
    tx: ExitSender,
    result: Option<Result<()>>,
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(anyhow::anyhow!("panicked")));
        let _ = self.tx.send((std::mem::take(&mut self.name), result));
    }
}

/// Runs a thread whose end (return or panic) is reported on `exits`.
fn spawn(
    name: String,
    exits: ExitSender,
    body: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut report = ExitReport {
                name,
                tx: exits,
                result: None,
            };
            report.result = Some(body());
        })
        .context("spawning a thread")?;
    Ok(())
}

/// One listener per shard on the same address (`SO_REUSEPORT` lets the kernel spread
/// connections among them). With port 0 the first picks the port and the rest share it.
fn bind_listeners(addr: SocketAddr, shards: usize) -> Result<Vec<Socket>> {
    let mut listeners: Vec<Socket> = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Accepted sockets inherit TCP_NODELAY: pushes are small and latency matters.
        socket.set_tcp_nodelay(true)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("cannot listen on {addr}"))?;
        socket.listen(LISTEN_BACKLOG)?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()?
                .as_socket()
                .context("listener has no address")?;
        }
        listeners.push(socket);
    }
    Ok(listeners)
}
