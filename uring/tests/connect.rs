//! Connect chains and the client receive path against real loopback sockets: every
//! entry of a chain completes exactly once, the source address and
//! `IP_BIND_ADDRESS_NO_PORT` take effect, failures and timeouts fail the right links,
//! a full submission queue never splits a chain, and a slot is reusable after close.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_uring::{BufRing, Completion, ConnectSpec, Kind, Ring, RingParams, Token, probe};

const WAIT: Duration = Duration::from_secs(10);

fn ring(sq_entries: u32, fixed_files: u32) -> Ring {
    let ring = Ring::new(RingParams {
        sq_entries,
        cq_entries: 1024,
        fixed_files,
    })
    .expect("io_uring ring");
    probe::check_client(&ring).expect("this kernel runs loadgen's operations");
    ring
}

/// Reaps until `n` completions have arrived (panics after [`WAIT`]).
fn reap_n(ring: &mut Ring, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n {
        ring.enter(false).expect("enter");
        ring.reap(&mut out);
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions: {out:?}",
            out.len()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

/// The result of the completion of `kind` among `cs` (exactly one must exist).
fn result_of(cs: &[Completion], kind: Kind) -> i32 {
    let hits: Vec<&Completion> = cs.iter().filter(|c| c.token.kind == kind).collect();
    assert_eq!(hits.len(), 1, "{kind:?} completions in {cs:?}");
    hits[0].result
}

fn local(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[test]
fn chain_binds_the_source_and_connects_then_sends_and_receives() {
    let (listener, addr) = listener();
    let mut ring = ring(64, 16);
    let token = Token::new(Kind::Recv, 7, 3);
    let n = ring.connect_direct(
        token,
        &ConnectSpec {
            src: Some(local([127, 0, 1, 7], 0)),
            dst: addr,
            bind_no_port: true,
            timeout: Some(Duration::from_secs(5)),
        },
    );
    assert_eq!(n, 5, "socket, setsockopt, bind, connect, link timeout");
    let cs = reap_n(&mut ring, 5);
    for c in &cs {
        assert_eq!((c.token.slot, c.token.generation), (3, 7), "{c:?}");
    }
    assert_eq!(result_of(&cs, Kind::Socket), 0);
    assert_eq!(result_of(&cs, Kind::SockOpt), 0);
    assert_eq!(result_of(&cs, Kind::Bind), 0);
    assert_eq!(result_of(&cs, Kind::Connect), 0);
    assert_eq!(result_of(&cs, Kind::ConnectTimeout), -libc::ECANCELED);
    assert_eq!(
        ring.chains_in_flight(),
        0,
        "the chain's arguments are freed"
    );

    let (mut server, peer) = listener.accept().expect("accept");
    assert_eq!(
        peer.ip(),
        local([127, 0, 1, 7], 0).ip(),
        "bound source address"
    );

    // Send through the fixed slot; the ring hands the buffer back with the completion.
    ring.send(Token::new(Kind::Send, 7, 3), Bytes::from_static(b"hello"));
    let cs = reap_n(&mut ring, 1);
    assert_eq!((cs[0].token.kind, cs[0].result), (Kind::Send, 5));
    assert_eq!(cs[0].sent.as_deref(), Some(&b"hello"[..]));
    let mut got = [0u8; 5];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    // Multishot recv into the provided-buffer ring.
    let mut bufs = BufRing::new(&ring, 0, 8, 4096).expect("buffer ring");
    ring.recv_multishot(Token::new(Kind::Recv, 7, 3), 0);
    server.write_all(b"world").unwrap();
    let cs = reap_n(&mut ring, 1);
    assert_eq!(cs[0].token, Token::new(Kind::Recv, 7, 3));
    assert_eq!(cs[0].result, 5);
    assert!(cs[0].more(), "multishot stays armed");
    let bid = cs[0].buffer_id().expect("a provided buffer");
    assert_eq!(bufs.take(bid, 5), b"world");
    bufs.recycle(bid);
    bufs.publish();

    // Peer EOF ends the multishot.
    drop(server);
    let cs = reap_n(&mut ring, 1);
    assert_eq!(cs[0].result, 0, "EOF");
    assert!(!cs[0].more());
    ring.close(Token::new(Kind::Close, 7, 3));
    ring.enter(false).unwrap();
}

#[test]
fn a_refused_connect_completes_every_entry() {
    let (l, addr) = listener();
    drop(l); // nobody listens there now
    let mut ring = ring(64, 4);
    let n = ring.connect_direct(
        Token::new(Kind::Recv, 1, 0),
        &ConnectSpec {
            src: Some(local([127, 0, 1, 9], 0)),
            dst: addr,
            bind_no_port: true,
            timeout: Some(Duration::from_secs(5)),
        },
    );
    let cs = reap_n(&mut ring, usize::from(n));
    assert_eq!(result_of(&cs, Kind::Socket), 0);
    assert_eq!(result_of(&cs, Kind::Connect), -libc::ECONNREFUSED);
    assert_eq!(result_of(&cs, Kind::ConnectTimeout), -libc::ECANCELED);
    assert_eq!(ring.chains_in_flight(), 0);
}

#[test]
fn a_failed_bind_cancels_the_rest_of_the_chain() {
    let (_l, addr) = listener();
    let mut ring = ring(64, 4);
    // 192.0.2.1 (TEST-NET-1) is no address of this host.
    let n = ring.connect_direct(
        Token::new(Kind::Recv, 1, 1),
        &ConnectSpec {
            src: Some(local([192, 0, 2, 1], 0)),
            dst: addr,
            bind_no_port: false,
            timeout: Some(Duration::from_secs(5)),
        },
    );
    assert_eq!(n, 4, "socket, bind, connect, link timeout");
    let cs = reap_n(&mut ring, 4);
    assert_eq!(result_of(&cs, Kind::Socket), 0);
    assert_eq!(result_of(&cs, Kind::Bind), -libc::EADDRNOTAVAIL);
    assert_eq!(result_of(&cs, Kind::Connect), -libc::ECANCELED);
    assert_eq!(result_of(&cs, Kind::ConnectTimeout), -libc::ECANCELED);
    assert_eq!(ring.chains_in_flight(), 0);
}

#[test]
fn the_linked_timeout_bounds_a_connect_whose_syn_is_dropped() {
    // A listener with a backlog of 0 that never accepts: once one connection waits in its
    // queue, the kernel drops further SYNs, so the next connect hangs in SYN_SENT.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&local([127, 0, 0, 1], 0).into()).unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let _queued = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("first connect");
    let mut ring = ring(64, 4);
    let started = Instant::now();
    let n = ring.connect_direct(
        Token::new(Kind::Recv, 2, 2),
        &ConnectSpec {
            src: None,
            dst: addr,
            bind_no_port: false,
            timeout: Some(Duration::from_millis(200)),
        },
    );
    assert_eq!(n, 3, "socket, connect, link timeout");
    let cs = reap_n(&mut ring, 3);
    assert_eq!(result_of(&cs, Kind::Socket), 0);
    assert_eq!(result_of(&cs, Kind::ConnectTimeout), -libc::ETIME);
    assert_eq!(result_of(&cs, Kind::Connect), -libc::ECANCELED);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn chains_are_never_split_by_a_full_submission_queue() {
    let (listener, addr) = listener();
    // Eight submission entries (one chain at a time fits); twenty chains of five each.
    let mut ring = ring(8, 32);
    let mut expected = 0;
    for slot in 0..20u32 {
        expected += usize::from(ring.connect_direct(
            Token::new(Kind::Recv, 1, slot),
            &ConnectSpec {
                src: Some(local([127, 0, 1, 10 + slot as u8], 0)),
                dst: addr,
                bind_no_port: true,
                timeout: Some(Duration::from_secs(5)),
            },
        ));
    }
    assert_eq!(expected, 100);
    let cs = reap_n(&mut ring, expected);
    for slot in 0..20u32 {
        let mine: Vec<&Completion> = cs.iter().filter(|c| c.token.slot == slot).collect();
        assert_eq!(mine.len(), 5, "slot {slot}: {mine:?}");
        for c in mine {
            let want = if c.token.kind == Kind::ConnectTimeout {
                -libc::ECANCELED
            } else {
                0
            };
            assert_eq!(c.result, want, "{c:?}");
        }
    }
    let mut peers: Vec<SocketAddr> = (0..20).map(|_| listener.accept().unwrap().1).collect();
    peers.sort();
    let want: Vec<SocketAddr> = (0..20u8).map(|i| local([127, 0, 1, 10 + i], 0)).collect();
    assert_eq!(
        peers.iter().map(|p| p.ip()).collect::<Vec<_>>(),
        want.iter().map(|p| p.ip()).collect::<Vec<_>>()
    );
}

#[test]
fn a_closed_slot_takes_a_new_connection() {
    let (listener, addr) = listener();
    let mut ring = ring(64, 2);
    let spec = ConnectSpec {
        src: None,
        dst: addr,
        bind_no_port: false,
        timeout: None,
    };
    let n = ring.connect_direct(Token::new(Kind::Recv, 1, 1), &spec);
    assert_eq!(n, 2, "socket, connect");
    let cs = reap_n(&mut ring, 2);
    assert_eq!(result_of(&cs, Kind::Connect), 0);
    let (mut first, _) = listener.accept().unwrap();

    ring.close(Token::new(Kind::Close, 1, 1));
    let n = ring.connect_direct(Token::new(Kind::Recv, 2, 1), &spec);
    let cs = reap_n(&mut ring, usize::from(n));
    assert_eq!(result_of(&cs, Kind::Connect), 0);
    assert!(cs.iter().all(|c| c.token.generation == 2), "{cs:?}");
    let (mut second, _) = listener.accept().unwrap();

    // The first connection was closed (EOF), the second is the slot's socket now.
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(first.read(&mut buf).unwrap(), 0, "first connection closed");
    ring.send(Token::new(Kind::Send, 2, 1), Bytes::from_static(b"x"));
    let cs = reap_n(&mut ring, 1);
    assert_eq!(cs[0].result, 1);
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x");
}
