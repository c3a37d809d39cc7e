//! The all-reduce between the ranks of a data-parallel run: a star over TCP, rank 0 in the
//! middle, with a fixed reduction order.
//!
//! Written by hand, not taken from burn-collective 0.21, because that crate's multi-process
//! path cannot serve a training loop (the module docs of [`crate::parallel`] cite its source):
//! its global all-reduce cannot complete a second time, it offers no max reduction, its global
//! reduction order follows the order in which processes happened to register, and nothing in
//! it times out.
//!
//! Every round, each rank ≠ 0 sends rank 0 one frame (its step, then three arrays: values to
//! sum in f32, values to sum in f64, values to max-reduce in f32). Rank 0 reads them in rank
//! order and reduces element by element as `((r0 + r1) + r2) + …`, the order a single process
//! accumulating the same micro-batches in turn would use, takes the NaN-propagating maximum of
//! the third array, and sends the result back, so every rank holds bit-identical values.
//!
//! A peer that dies closes its socket (the kernel does it), which the others see at once as an
//! end of stream; a peer that hangs is noticed when a read or write waits longer than the
//! timeout. Either way the call returns an error naming the rank, and the caller stops.

use anyhow::{anyhow, bail, Context};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The first bytes of every connection: protocol name and version.
const MAGIC: &[u8; 8] = b"fp8dp\0\0\x01";

/// What one rank contributes to a round, and what it gets back reduced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload {
    /// Summed in f32 (gradients).
    pub sum_f32: Vec<f32>,
    /// Summed in f64 (the loss).
    pub sum_f64: Vec<f64>,
    /// Max-reduced, NaN-propagating (amaxes).
    pub max_f32: Vec<f32>,
}

/// This process's place in the group, and its connections.
pub struct Link {
    rank: usize,
    world: usize,
    timeout: Duration,
    /// Rank 0: one connection per other rank, index r−1 for rank r. Others: the one to rank 0.
    peers: Vec<Conn>,
}

struct Conn {
    rank: usize,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Link {
    /// Join the group: rank 0 listens on `orchestrator` (`HOST:PORT`) until every other rank
    /// has connected; the others connect to it, retrying until `timeout`. `run_id` must be the
    /// same on every rank (the run's identity), so ranks of different runs never pair up.
    pub fn join(
        rank: usize,
        world: usize,
        orchestrator: &str,
        run_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Link> {
        if world < 2 || rank >= world {
            bail!("rank {rank} of a group of {world}: need 2 or more ranks and rank < world");
        }
        let peers = if rank == 0 {
            accept_all(world, orchestrator, run_id, timeout)?
        } else {
            vec![connect(rank, world, orchestrator, run_id, timeout)?]
        };
        Ok(Link {
            rank,
            world,
            timeout,
            peers,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// One all-reduce round for optimizer step `step`: every rank must call it with the same
    /// step and array lengths; `mine` is replaced by the reduced values.
    pub fn all_reduce(&mut self, step: u64, mine: &mut Payload) -> anyhow::Result<()> {
        if self.rank == 0 {
            let expect = lengths(mine);
            for conn in &mut self.peers {
                let theirs = read_frame(conn, step, expect, self.timeout)?;
                reduce_into(mine, &theirs).map_err(|e| {
                    anyhow!(
                        "rank {} disagrees with rank 0 at step {step}: {e}",
                        conn.rank
                    )
                })?;
            }
            for conn in &mut self.peers {
                write_frame(conn, step, mine, self.timeout)?;
            }
        } else {
            let conn = &mut self.peers[0];
            write_frame(conn, step, mine, self.timeout)?;
            *mine = read_frame(conn, step, lengths(mine), self.timeout)?;
        }
        Ok(())
    }
}

fn lengths(p: &Payload) -> [usize; 3] {
    [p.sum_f32.len(), p.sum_f64.len(), p.max_f32.len()]
}

/// `acc ⊕= other`, element by element: sums for the sum arrays, the NaN-propagating maximum
/// for the max array.
fn reduce_into(acc: &mut Payload, other: &Payload) -> Result<(), String> {
    if lengths(acc) != lengths(other) {
        return Err(format!(
            "array lengths {:?} against {:?} (different models or recipes?)",
            lengths(other),
            lengths(acc)
        ));
    }
    for (a, b) in acc.sum_f32.iter_mut().zip(&other.sum_f32) {
        *a += b;
    }
    for (a, b) in acc.sum_f64.iter_mut().zip(&other.sum_f64) {
        *a += b;
    }
    for (a, b) in acc.max_f32.iter_mut().zip(&other.max_f32) {
        *a = fp8_core::context::max_nan(*a, *b);
    }
    Ok(())
}

fn accept_all(
    world: usize,
    addr: &str,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Conn>> {
    let listener = TcpListener::bind(bind_address(addr)?)
        .with_context(|| format!("rank 0: cannot listen on {addr} (--orchestrator)"))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut peers: Vec<Option<Conn>> = (1..world).map(|_| None).collect();
    while peers.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                let conn = handshake_accept(stream, world, run_id, timeout)?;
                let slot = &mut peers[conn.rank - 1];
                if slot.is_some() {
                    bail!("rank {} connected twice to rank 0", conn.rank);
                }
                *slot = Some(conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<String> = peers
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    bail!(
                        "rank 0: ranks {} did not connect to {addr} within {} s",
                        missing.join(", "),
                        timeout.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("rank 0: accepting a connection"),
        }
    }
    Ok(peers.into_iter().flatten().collect())
}

/// `HOST:PORT` → the address rank 0 binds: the same port on every interface, so ranks on other
/// machines reach it under whatever name `HOST` is for them.
fn bind_address(addr: &str) -> anyhow::Result<String> {
    let (_, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--orchestrator {addr:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--orchestrator {addr:?}: the port must be a number 0–65535"))?;
    Ok(
        if addr.starts_with("127.") || addr.starts_with("localhost:") {
            format!("127.0.0.1:{port}")
        } else {
            format!("0.0.0.0:{port}")
        },
    )
}

fn handshake_accept(
    stream: TcpStream,
    world: usize,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Conn> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .context("rank 0: reading a joining rank's greeting")?;
    if &magic != MAGIC {
        bail!("rank 0: something that is not an fp8 rank (or another fp8 version) connected");
    }
    let rank = read_u64(&mut reader)? as usize;
    let their_world = read_u64(&mut reader)? as usize;
    let their_id = read_string(&mut reader)?;
    let problem = if their_world != world {
        Some(format!(
            "it has a group of {their_world}, rank 0 one of {world}"
        ))
    } else if rank == 0 || rank >= world {
        Some(format!("its rank must be in 1..{world}"))
    } else if their_id != run_id {
        Some(format!(
            "it trains run {their_id}, rank 0 run {run_id} (different settings)"
        ))
    } else {
        None
    };
    let reply = problem.clone().unwrap_or_default();
    write_string(&mut writer, &reply)?;
    writer.flush()?;
    if let Some(p) = problem {
        bail!("rank 0: refused rank {rank}: {p}");
    }
    Ok(Conn {
        rank,
        reader,
        writer,
    })
}

fn connect(
    rank: usize,
    world: usize,
    addr: &str,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Conn> {
    let deadline = Instant::now() + timeout;
    let stream = loop {
        let attempt = addr
            .to_socket_addrs()
            .with_context(|| format!("--orchestrator {addr:?}: cannot resolve it"))?
            .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok());
        match attempt {
            Some(s) => break s,
            None if Instant::now() > deadline => bail!(
                "rank {rank}: could not reach rank 0 at {addr} within {} s",
                timeout.as_secs()
            ),
            // Rank 0 may simply not be listening yet.
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    writer.write_all(MAGIC)?;
    write_u64(&mut writer, rank as u64)?;
    write_u64(&mut writer, world as u64)?;
    write_string(&mut writer, run_id)?;
    writer.flush()?;
    let reply = read_string(&mut reader)
        .with_context(|| format!("rank {rank}: rank 0 at {addr} did not answer"))?;
    if !reply.is_empty() {
        bail!("rank {rank}: rank 0 refused this rank: {reply}");
    }
    Ok(Conn {
        rank: 0,
        reader,
        writer,
    })
}

fn write_frame(conn: &mut Conn, step: u64, p: &Payload, timeout: Duration) -> anyhow::Result<()> {
    let w = &mut conn.writer;
    let result = (|| -> std::io::Result<()> {
        write_u64(w, step)?;
        write_u64(w, p.sum_f32.len() as u64)?;
        write_u64(w, p.sum_f64.len() as u64)?;
        write_u64(w, p.max_f32.len() as u64)?;
        let bytes: Vec<u8> = (p.sum_f32.iter().flat_map(|v| v.to_le_bytes()))
            .chain(p.sum_f64.iter().flat_map(|v| v.to_le_bytes()))
            .chain(p.max_f32.iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        w.write_all(&bytes)?;
        w.flush()
    })();
    result.map_err(|e| io_error(conn.rank, step, timeout, &e))
}

/// Read one frame, refusing (before allocating) one whose array lengths differ from `expect`.
fn read_frame(
    conn: &mut Conn,
    step: u64,
    expect: [usize; 3],
    timeout: Duration,
) -> anyhow::Result<Payload> {
    let r = &mut conn.reader;
    let result = (|| -> std::io::Result<(u64, Payload)> {
        let their_step = read_u64(r)?;
        let (n32, n64, nmax) = (read_u64(r)?, read_u64(r)?, read_u64(r)?);
        if [n32, n64, nmax] != expect.map(|n| n as u64) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "array lengths {:?} against this rank's {expect:?} (different models or \
                     recipes?)",
                    [n32, n64, nmax]
                ),
            ));
        }
        let mut bytes = |n: u64, width: usize| -> std::io::Result<Vec<u8>> {
            let mut b = vec![0u8; n as usize * width];
            r.read_exact(&mut b)?;
            Ok(b)
        };
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let sum_f32 = f32s(bytes(n32, 4)?);
        let sum_f64 = bytes(n64, 8)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let max_f32 = f32s(bytes(nmax, 4)?);
        Ok((
            their_step,
            Payload {
                sum_f32,
                sum_f64,
                max_f32,
            },
        ))
    })();
    match result {
        Ok((s, p)) if s == step => Ok(p),
        Ok((s, _)) => bail!(
            "rank {} is at step {s} while this rank is at step {step} (ranks resumed from \
             different checkpoints?)",
            conn.rank
        ),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            bail!("rank {} disagrees at step {step}: {e}", conn.rank)
        }
        Err(e) => Err(io_error(conn.rank, step, timeout, &e)),
    }
}

/// A failed read or write as the user needs it: which rank, and whether it hangs or is gone.
fn io_error(rank: usize, step: u64, timeout: Duration, e: &std::io::Error) -> anyhow::Error {
    let who = if rank == 0 {
        "rank 0 (the orchestrator)".to_string()
    } else {
        format!("rank {rank}")
    };
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        anyhow!(
            "{who} did not respond for {} s at step {step}: it hangs or is far behind \
             (FP8_DP_TIMEOUT sets the limit in seconds)",
            timeout.as_secs()
        )
    } else {
        anyhow!("lost the connection to {who} at step {step}: it stopped or died ({e})")
    }
}

fn write_u64(w: &mut impl Write, v: u64) -> std::io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    write_u64(w, s.len() as u64)?;
    w.write_all(s.as_bytes())
}

fn read_string(r: &mut impl Read) -> anyhow::Result<String> {
    let n = read_u64(r)? as usize;
    if n > 1 << 16 {
        bail!("a greeting of {n} bytes: not an fp8 rank");
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Three ranks in threads: rank 0 reduces in rank order, every rank gets the same bits.
    #[test]
    fn three_ranks_reduce_in_rank_order_and_agree() {
        let addr = format!("127.0.0.1:{}", free_port());
        // In f32, (1e8 + 1) rounds back to 1e8, so ((r0 + r1) + r2) is 0, while summing rank 0
        // and rank 2 first would give 1: the result shows the order.
        let inputs = [
            (vec![1e8f32, 0.5], vec![0.25f64], vec![1.0f32, 3.0]),
            (vec![1.0f32, 0.25], vec![0.5f64], vec![f32::NAN, 2.0]),
            (vec![-1e8f32, 0.125], vec![1.0f64], vec![0.5, 7.0]),
        ];
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                let addr = addr.clone();
                let (a, b, c) = inputs[rank].clone();
                std::thread::spawn(move || {
                    let mut link =
                        Link::join(rank, 3, &addr, "run", Duration::from_secs(20)).unwrap();
                    let mut p = Payload {
                        sum_f32: a,
                        sum_f64: b,
                        max_f32: c,
                    };
                    link.all_reduce(7, &mut p).unwrap();
                    p
                })
            })
            .collect();
        let results: Vec<Payload> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let expect_first = (1e8f32 + 1.0) + -1e8f32;
        assert_eq!(expect_first, 0.0);
        for p in &results {
            assert_eq!(p.sum_f32[0].to_bits(), expect_first.to_bits());
            assert_eq!(p.sum_f32[1], 0.875);
            assert_eq!(p.sum_f64, vec![1.75]);
            assert!(p.max_f32[0].is_nan());
            assert_eq!(p.max_f32[1], 7.0);
        }
    }

    #[test]
    fn a_rank_of_another_run_is_refused_by_name() {
        let addr = format!("127.0.0.1:{}", free_port());
        let a2 = addr.clone();
        let hub = std::thread::spawn(move || {
            Link::join(0, 2, &a2, "run-a", Duration::from_secs(20)).err()
        });
        let e = Link::join(1, 2, &addr, "run-b", Duration::from_secs(20))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("trains run run-b, rank 0 run run-a"), "{e}");
        let e0 = hub.join().unwrap().unwrap().to_string();
        assert!(e0.contains("refused rank 1"), "{e0}");
    }

    #[test]
    fn a_peer_that_disappears_is_an_error_naming_it() {
        let addr = format!("127.0.0.1:{}", free_port());
        let a2 = addr.clone();
        let spoke = std::thread::spawn(move || {
            let link = Link::join(1, 2, &a2, "r", Duration::from_secs(20)).unwrap();
            drop(link); // as if the process died: the kernel closes its socket
        });
        let mut link = Link::join(0, 2, &addr, "r", Duration::from_secs(20)).unwrap();
        spoke.join().unwrap();
        let mut p = Payload::default();
        let e = link.all_reduce(3, &mut p).unwrap_err().to_string();
        assert!(e.contains("lost the connection to rank 1 at step 3"), "{e}");
    }

    #[test]
    fn a_peer_that_hangs_times_out_naming_it() {
        let addr = format!("127.0.0.1:{}", free_port());
        let a2 = addr.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let spoke = std::thread::spawn(move || {
            let _link = Link::join(1, 2, &a2, "r", Duration::from_secs(20)).unwrap();
            rx.recv().ok(); // connected, then silent
        });
        let mut link = Link::join(0, 2, &addr, "r", Duration::from_secs(1)).unwrap();
        let started = Instant::now();
        let e = link
            .all_reduce(0, &mut Payload::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 1 did not respond for 1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        tx.send(()).unwrap();
        spoke.join().unwrap();
    }

    #[test]
    fn mismatched_lengths_and_steps_are_errors() {
        let mut a = Payload {
            sum_f32: vec![1.0],
            ..Payload::default()
        };
        let b = Payload::default();
        assert!(reduce_into(&mut a, &b).unwrap_err().contains("lengths"));
        assert!(bind_address("nohost").is_err());
        assert_eq!(bind_address("127.0.0.1:5").unwrap(), "127.0.0.1:5");
        assert_eq!(bind_address("node1:29500").unwrap(), "0.0.0.0:29500");
    }
}
