//! Starting and stopping the engine: check the kernel, bind one `SO_REUSEPORT` listener
//! per shard, make the router and the links, start the threads, announce the address,
//! then stay until SIGTERM or SIGINT (a graceful drain, see [`Running::wait`]) or until a
//! thread fails (which ends the process: a shard never stops on its own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Socket, Type};
use switchboard_proto::http1;

use crate::ami;
use crate::ami::gateway::GatewaySettings;
use crate::ami::session::SessionConfig;
use crate::ami::status::AmiStatus;
use crate::ami::thread::{AmiInit, AmiSettings};
use crate::config::{self, MAX_HEADERS_LIMIT, ServeArgs};
use crate::metrics::{Registry, ShardMetrics};
use crate::pubsub::MAX_SHARDS;
use crate::pubsub::history::HistoryLimits;
use crate::pubsub::link::{self, Doorbell, RouterAmiEnd, RouterEnd};
use crate::pubsub::router::{Router, RouterMetrics, RouterSettings};
use crate::shard::{Settings, Shard, ShardInit};
use crate::uring::{Ring, probe, signals};

/// Pending connections the kernel queues per listener (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 65535;

/// The signals that start a graceful drain. They are blocked in every engine thread and
/// taken by one thread with `sigwait`: no signal handler runs.
const DRAIN_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];
/// How long past `--drain-timeout` the process waits for shards to close the connections
/// they cut before it exits regardless.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What the threads tell the one waiting in [`Running::wait`].
enum Event {
    /// A thread ended (returned or panicked).
    Exit(String, Result<()>),
    /// A drain signal arrived.
    Signal(libc::c_int),
    /// A shard has drained: it holds no connection and accepts no more; `cut` of its
    /// connections were still open at the deadline.
    Drained { cut: u32 },
}

/// A running engine's address and the threads' notices.
pub struct Running {
    pub addr: SocketAddr,
    pub shards: usize,
    events: mpsc::Receiver<Event>,
    registry: Arc<Registry>,
    drain_timeout: Duration,
}

impl Running {
    /// Blocks until the engine stops. The first SIGTERM or SIGINT starts a graceful
    /// drain (every shard stops accepting and ends its connections, see `shard::drain`)
    /// and returns `Ok` once every shard has drained, or `--drain-timeout` (plus a
    /// second's grace) has passed; a second signal returns at once. A thread that ends
    /// otherwise is an error.
    pub fn wait(self) -> Result<()> {
        let mut drain: Option<(Instant, u64)> = None;
        let mut drained = 0;
        let mut cut = 0;
        loop {
            let event = match drain {
                None => self.events.recv().context("every engine thread vanished")?,
                Some((started, open)) => {
                    let left = (started + self.drain_timeout + DRAIN_GRACE)
                        .saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(left) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => {
                            tracing::warn!(
                                "drain: shards still busy after {:.1?}; exiting with {} of {open} \
                                 connections open",
                                started.elapsed(),
                                self.registry.open_connections()
                            );
                            return Ok(());
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            bail!("every engine thread vanished")
                        }
                    }
                }
            };
            match event {
                Event::Signal(signal) if drain.is_none() => {
                    let open = self.registry.open_connections();
                    tracing::info!(
                        "{}: draining {open} connections (at most {:?})",
                        signal_name(signal),
                        self.drain_timeout
                    );
                    self.registry.draining.store(true, Relaxed);
                    drain = Some((Instant::now(), open));
                }
                Event::Signal(signal) => {
                    tracing::warn!(
                        "{} during the drain: exiting now with {} connections open",
                        signal_name(signal),
                        self.registry.open_connections()
                    );
                    return Ok(());
                }
                Event::Drained { cut: shard_cut } => {
                    drained += 1;
                    cut += shard_cut;
                    if drained == self.shards
                        && let Some((started, open)) = drain
                    {
                        tracing::info!(
                            "drained in {:.1?}: {open} connections at the start, {cut} cut at \
                             the deadline",
                            started.elapsed()
                        );
                        return Ok(());
                    }
                }
                Event::Exit(name, result) => {
                    result.with_context(|| format!("{name} failed"))?;
                    bail!("{name} stopped")
                }
            }
        }
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
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
        drain_timeout: args.drain_timeout,
        ws_ping_interval: args.ws_ping_interval,
        ws_pong_timeout: args.ws_pong_timeout,
        max_subscriptions: args.max_subscriptions.min(config::MAX_SUBSCRIPTIONS_LIMIT) as u16,
        max_conns_per_ip: args.max_conns_per_ip,
        auth: args.auth_policy(),
        ami: args.ami.is_some(),
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
    if args.ws_ping_interval > MAX_POLL_TIMEOUT || args.ws_pong_timeout > MAX_POLL_TIMEOUT {
        bail!("--ws-ping-interval and --ws-pong-timeout must be at most {MAX_POLL_TIMEOUT:?}");
    }
    let epoch = random_epoch()?;
    let router_settings = RouterSettings {
        epoch,
        history: HistoryLimits {
            size: args.history_size,
            ttl: (!args.history_ttl.is_zero()).then_some(args.history_ttl),
            topics: args.history_topics as usize,
            bytes: args.history_bytes,
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

    let (exit_tx, events) = mpsc::channel();
    // Before any thread starts, so that every thread inherits the mask.
    signals::block(&DRAIN_SIGNALS).context("blocking SIGTERM and SIGINT")?;
    let signal_tx = exit_tx.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = signals::wait(&DRAIN_SIGNALS) {
                if signal_tx.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .context("spawning the signal thread")?;

    // The router's ring must be made on the router's own thread (SINGLE_ISSUER); it
    // reports its doorbell, then waits for the shards' links.
    let (router_ready_tx, router_ready) = mpsc::channel();
    type RouterSetup = (Vec<RouterEnd>, Vec<Arc<Doorbell>>, Option<RouterAmiEnd>);
    let (router_setup_tx, router_setup) = mpsc::channel::<RouterSetup>();
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
        let Ok((links, shard_bells, ami)) = router_setup.recv() else {
            return Ok(());
        };
        Router::new(
            ring,
            bell,
            links,
            shard_bells,
            metrics_for_router,
            router_settings,
            ami,
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

    let ami = match ami_settings(args) {
        Some(settings) => Some(start_ami(settings, router_bell.clone(), exit_tx.clone())?),
        None => None,
    };

    let listeners = bind_listeners(args.listen, shards)?;
    let addr = listeners[0]
        .local_addr()?
        .as_socket()
        .context("listener has no address")?;

    let metrics: Vec<Arc<ShardMetrics>> = (0..shards).map(|_| Arc::default()).collect();
    let mut registry = Registry::new(metrics.clone(), router_metrics.clone());
    registry.ami = ami.as_ref().map(|(_, status)| status.clone());
    let registry = Arc::new(registry);
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
        let drained_tx = exit_tx.clone();
        spawn(format!("shard-{id}"), exit_tx.clone(), move || {
            let mut shard = match Shard::new(init) {
                Ok(shard) => shard,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("shard {id}: {e}")));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok((id, shard.bell())));
            let cut = shard.run()?;
            let _ = drained_tx.send(Event::Drained { cut });
            // The process is about to exit. Keep the ring open until it does: its
            // descriptor is where the router posts wake-ups, and must not be reused.
            loop {
                thread::park();
            }
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
        .send((router_links, shard_bells, ami.map(|(end, _)| end)))
        .map_err(|_| anyhow::anyhow!("the router thread died while starting"))?;

    Ok(Running {
        addr,
        shards,
        events,
        registry,
        drain_timeout: args.drain_timeout,
    })
}

/// The AMI thread's settings, when a PBX is configured.
fn ami_settings(args: &ServeArgs) -> Option<AmiSettings> {
    let address = args.ami.clone()?;
    Some(AmiSettings {
        address,
        session: SessionConfig {
            events: args.ami_events.clone(),
            ping_interval: args.ami_ping_interval,
            backoff_max: args.ami_backoff_max,
            ..SessionConfig::new(
                args.ami_user.clone().unwrap_or_default(),
                args.ami_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default(),
            )
        },
        gateway: GatewaySettings {
            originate_context: args.ami_originate_context.clone(),
            transfer_context: args.ami_transfer_context.clone(),
            ring_timeout: args.ami_ring_timeout,
            record_dir: args.ami_record_dir.clone(),
            action_timeout: args.ami_action_timeout,
            rate_per_sec: args.ami_action_rate,
            burst: args.ami_action_burst,
            ..GatewaySettings::default()
        },
        noise: args.ami_noise.clone(),
    })
}

/// Starts the AMI thread; returns the router's end of its link and its status.
fn start_ami(
    settings: AmiSettings,
    router_bell: Arc<Doorbell>,
    exits: ExitSender,
) -> Result<(RouterAmiEnd, Arc<AmiStatus>)> {
    let (end, inbox, outbox) = link::ami_link();
    let status = Arc::new(AmiStatus::default());
    let init = AmiInit {
        settings,
        link: end,
        router_bell,
        status: status.clone(),
    };
    let (ready_tx, ready) = mpsc::channel();
    spawn("ami".into(), exits, move || {
        let ring = Ring::new(ami::thread::ring_params()).context("creating the AMI ring")?;
        if let Err(e) = probe::check_client(&ring) {
            let _ = ready_tx.send(Err(anyhow::Error::new(e)));
            return Ok(());
        }
        let bell = Doorbell::new(ring.fd());
        let _ = ready_tx.send(Ok(bell.clone()));
        ami::thread::run(init, ring, bell).map_err(Into::into)
    })?;
    let bell = ready
        .recv()
        .context("the AMI thread died while starting")??;
    Ok((
        RouterAmiEnd {
            inbox,
            outbox,
            bell,
        },
        status,
    ))
}

type ExitSender = mpsc::Sender<Event>;

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
        let _ = self
            .tx
            .send(Event::Exit(std::mem::take(&mut self.name), result));
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
