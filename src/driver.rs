//! The event loop (layer: edge). One thread and one `mio::Poll` own every file descriptor: each
//! module's pty master, the [`NetStack`]'s sockets and DNS waker, and the shutdown signals. The loop
//! moves bytes, events and time between them and the pure cores; it holds no protocol state.

use crate::certstore::CertStore;
use crate::config::Config;
use crate::module::io::{ConnId, NetEvent, NetOp, StoreOp};
use crate::module::Module;
use crate::net::{ModuleIdx, NetStack, WriteQueue};
use crate::serial::{Pty, PtyLink};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds of (serial out, ops, reads, events) per turn before the loop polls again; bounds the time
/// a chatty socket can keep the other lines waiting.
const MAX_SETTLE_ROUNDS: usize = 64;

/// Serial reads are handed to the core one chunk per call, so a host's write burst usually arrives
/// in one piece (the core's stray-byte quirk looks at bursts).
const SERIAL_CHUNK: usize = 8192;

/// Serial output the driver holds for a line; while more waits, it takes no more replies from the
/// core (which then stops taking input): a host that never reads stalls instead of growing memory.
pub const SERIAL_OUT_HIGH: usize = 64 * 1024;

/// What the driver needs from an emulated module. [`Module`] is the real one; the driver's tests use
/// small fakes.
pub trait Core {
    fn handle_serial(&mut self, data: &[u8], now: Instant);
    fn handle_net(&mut self, ev: NetEvent, now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn take_serial(&mut self) -> Vec<u8>;
    /// The driver has taken the output: the core may go on with commands it held back.
    fn handle_output_taken(&mut self, _now: Instant) {}
    fn poll_op(&mut self) -> Option<NetOp>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn rx_room(&self, conn: ConnId) -> usize;
    /// How many more serial bytes the core takes now (0: stop reading the line).
    fn serial_room(&self) -> usize {
        usize::MAX
    }
    /// Next certificate-store write (fakes have none).
    fn poll_store(&mut self) -> Option<StoreOp> {
        None
    }
    fn handle_stored(&mut self, _req: u64, _result: Result<(), String>, _now: Instant) {}
}

impl Core for Module {
    fn handle_serial(&mut self, data: &[u8], now: Instant) {
        Module::handle_serial(self, data, now)
    }
    fn handle_net(&mut self, ev: NetEvent, now: Instant) {
        Module::handle_net(self, ev, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Module::handle_timeout(self, now)
    }
    fn take_serial(&mut self) -> Vec<u8> {
        Module::take_serial(self)
    }
    fn handle_output_taken(&mut self, now: Instant) {
        Module::handle_output_taken(self, now)
    }
    fn poll_op(&mut self) -> Option<NetOp> {
        Module::poll_op(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Module::poll_timeout(self)
    }
    fn rx_room(&self, conn: ConnId) -> usize {
        Module::rx_room(self, conn)
    }
    fn serial_room(&self) -> usize {
        Module::serial_room(self)
    }
    fn poll_store(&mut self) -> Option<StoreOp> {
        Module::poll_store(self)
    }
    fn handle_stored(&mut self, req: u64, result: Result<(), String>, now: Instant) {
        Module::handle_stored(self, req, result, now)
    }
}

/// Everything `eswifi-emu` (serve) needs from the command line.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: Config,
    /// Also make this path a symlink to the pty slave.
    pub link: Option<PathBuf>,
    /// Where the certificate sets are stored (see `certsets/README.md`).
    pub certsets: PathBuf,
}

/// Emulate one module on a fresh pty until SIGINT or SIGTERM. `ready` is called with the slave
/// path once a host program can open it.
pub fn serve(opts: &ServeOptions, ready: impl FnOnce(&Path)) -> io::Result<()> {
    log::debug!("certificate sets in {}", opts.certsets.display());
    let pty = Pty::open()?;
    let _link = match &opts.link {
        Some(path) => Some(
            PtyLink::create(path, pty.slave_path())
                .map_err(|e| io::Error::new(e.kind(), format!("--link {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let slave = pty.slave_path().to_owned();
    let store = CertStore::new(&opts.certsets);
    // A torn or corrupt item is an error worth stopping for: an OTP slot must never look empty.
    let sets = store
        .load()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let saved = store
        .load_settings()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut module = Module::new(&opts.config, Instant::now(), unix);
    module.set_cert_sets(sets);
    module.load_saved(saved);
    let mut driver = Driver::new()?;
    let idx = driver.add(module, pty)?;
    driver.set_store(idx, store);
    log::info!("emulating an eS-WiFi module on {}", slave.display());
    ready(&slave);
    driver.run()?;
    log::info!("shutting down");
    Ok(())
}

/// Whether the loop goes on after a [`Driver::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A shutdown signal arrived.
    Shutdown,
}

/// One module and its serial line.
struct Line<M> {
    core: M,
    pty: Pty,
    token: Token,
    out: WriteQueue,
    /// Whether WRITABLE is in the pty's registered interest (only while `out` has bytes: a pty master
    /// turns writable each time the host reads).
    writable: bool,
    /// The line has input we have not read (the core had no room); edge-triggered polling will
    /// not say so again, so it is retried whenever the core may have room.
    want_read: bool,
    /// Where this module's certificate sets live.
    store: Option<CertStore>,
}

/// The event loop over any number of modules.
pub struct Driver<M: Core = Module> {
    poll: Poll,
    events: Events,
    net: NetStack,
    signals: Signals,
    signal_token: Token,
    lines: Vec<Line<M>>,
    by_token: HashMap<Token, ModuleIdx>,
    /// Last settle stopped at the round limit: the cores may hold work, so the next poll must not
    /// sleep.
    hurry: bool,
    store: StoreWorker,
}

/// Certificate-store writes run on this thread: an fsync must never hold up a serial line. It wakes
/// the loop with the net stack's waker; results are collected every turn.
struct StoreWorker {
    jobs: mpsc::Sender<(ModuleIdx, CertStore, StoreOp)>,
    done: mpsc::Receiver<(ModuleIdx, u64, Result<(), String>)>,
}

impl StoreWorker {
    fn start(waker: Arc<mio::Waker>) -> io::Result<StoreWorker> {
        let (jobs, job_rx) = mpsc::channel::<(ModuleIdx, CertStore, StoreOp)>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("certstore".into())
            .spawn(move || {
                for (idx, store, op) in job_rx {
                    let req = op.req();
                    let result = match op {
                        StoreOp::Item {
                            set, item, data, ..
                        } => store
                            .write(set, item, &data)
                            .map_err(|e| format!("{}: {e}", store.item_path(set, item).display())),
                        StoreOp::Settings { data, .. } => store
                            .write_settings(&data)
                            .map_err(|e| format!("{}: {e}", store.settings_path().display())),
                    };
                    if done_tx.send((idx, req, result)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(StoreWorker { jobs, done })
    }
}

impl<M: Core> Driver<M> {
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut net = NetStack::new(poll.registry())?;
        let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM])?;
        let signal_token = net.alloc_token();
        poll.registry()
            .register(&mut signals, signal_token, Interest::READABLE)?;
        let store = StoreWorker::start(net.waker())?;
        Ok(Driver {
            store,
            poll,
            events: Events::with_capacity(256),
            net,
            signals,
            signal_token,
            lines: Vec::new(),
            by_token: HashMap::new(),
            hurry: false,
        })
    }

    /// Attach a module to its serial line. Its first output (boot banner) goes out on the next step.
    pub fn add(&mut self, core: M, pty: Pty) -> io::Result<ModuleIdx> {
        let token = self.net.alloc_token();
        self.poll.registry().register(
            &mut SourceFd(&pty.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        let idx = self.lines.len();
        self.lines.push(Line {
            core,
            pty,
            token,
            out: WriteQueue::default(),
            writable: false,
            want_read: true,
            store: None,
        });
        self.by_token.insert(token, idx);
        Ok(idx)
    }

    /// Give a module its on-disk certificate store (without one, `PG` writes fail).
    pub fn set_store(&mut self, idx: ModuleIdx, store: CertStore) {
        if let Some(line) = self.lines.get_mut(idx) {
            line.store = Some(store);
        }
    }

    pub fn core(&self, idx: ModuleIdx) -> Option<&M> {
        self.lines.get(idx).map(|l| &l.core)
    }

    /// Serve until a shutdown signal.
    pub fn run(&mut self) -> io::Result<()> {
        while self.step(None)? == Flow::Continue {}
        Ok(())
    }

    /// One turn: settle the cores, wait for input (at most `max_wait`, and no longer than the
    /// earliest module timer), handle it, fire due timers.
    pub fn step(&mut self, max_wait: Option<Duration>) -> io::Result<Flow> {
        self.settle()?;

        let now = Instant::now();
        let lines = &self.lines;
        let mut timeout = lines
            .iter()
            .filter_map(|l| l.core.poll_timeout())
            .min()
            .map(|t| t.saturating_duration_since(now));
        let serial_pending = lines
            .iter()
            .any(|l| l.want_read && l.core.serial_room() > 0);
        if self.hurry || serial_pending || self.net.has_pending_reads(room(lines)) {
            timeout = Some(Duration::ZERO);
        }
        if let Some(cap) = max_wait {
            timeout = Some(timeout.map_or(cap, |t| t.min(cap)));
        }

        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Flow::Continue),
            Err(e) => return Err(e),
        }

        let mut flow = Flow::Continue;
        for event in self.events.iter() {
            let token = event.token();
            if token == self.signal_token {
                for sig in self.signals.pending() {
                    log::info!("signal {sig}: shutting down");
                    flow = Flow::Shutdown;
                }
            } else if let Some(&idx) = self.by_token.get(&token) {
                let line = &mut self.lines[idx];
                if event.is_readable() {
                    line.want_read = true;
                    line.read_serial(idx)?;
                }
                if event.is_writable() {
                    line.flush(self.poll.registry())?;
                }
            } else {
                self.net.handle_event(self.poll.registry(), event);
            }
        }
        if flow == Flow::Shutdown {
            return Ok(flow);
        }

        while let Ok((idx, req, result)) = self.store.done.try_recv() {
            if let Some(line) = self.lines.get_mut(idx) {
                line.core.handle_stored(req, result, Instant::now());
            }
        }
        let now = Instant::now();
        for line in &mut self.lines {
            if line.core.poll_timeout().is_some_and(|t| t <= now) {
                line.core.handle_timeout(now);
            }
        }
        self.settle()?;
        Ok(Flow::Continue)
    }

    /// Move everything the cores produced to where it goes, and everything the network produced to
    /// the cores, until nothing moves (or the round limit).
    fn settle(&mut self) -> io::Result<()> {
        let registry = self.poll.registry();
        for _ in 0..MAX_SETTLE_ROUNDS {
            let mut moved = false;
            for (idx, line) in self.lines.iter_mut().enumerate() {
                if line.want_read && line.core.serial_room() > 0 {
                    let before = line.core.serial_room();
                    line.read_serial(idx)?;
                    moved |= line.core.serial_room() != before;
                }
                if line.out.len() < SERIAL_OUT_HIGH {
                    let bytes = line.core.take_serial();
                    if !bytes.is_empty() {
                        // Contents are logged by the core, which knows what they are.
                        log::trace!("m{idx} serial out {} bytes", bytes.len());
                        line.out.push(&bytes);
                        line.flush(registry)?;
                        line.core.handle_output_taken(Instant::now());
                        moved = true;
                    }
                }
                while let Some(op) = line.core.poll_op() {
                    self.net.perform(registry, idx, op);
                    moved = true;
                }
                while let Some(op) = line.core.poll_store() {
                    moved = true;
                    let req = op.req();
                    let sent = match &line.store {
                        Some(store) => self.store.jobs.send((idx, store.clone(), op)).is_ok(),
                        None => false,
                    };
                    if !sent {
                        line.core.handle_stored(
                            req,
                            Err("no certificate store".into()),
                            Instant::now(),
                        );
                    }
                }
            }
            self.net.pump_reads(registry, room(&self.lines));
            while let Some((idx, ev)) = self.net.pop_event() {
                log_event(idx, &ev);
                match self.lines.get_mut(idx) {
                    Some(line) => line.core.handle_net(ev, Instant::now()),
                    None => log::warn!("event for unknown module {idx}"),
                }
                moved = true;
            }
            if !moved {
                self.hurry = false;
                return Ok(());
            }
        }
        self.hurry = true;
        Ok(())
    }
}

impl<M: Core> Line<M> {
    /// Feed what the host wrote to the core, chunk by chunk, while it has room, until the pty is
    /// drained (then `want_read` is cleared).
    fn read_serial(&mut self, idx: ModuleIdx) -> io::Result<()> {
        let mut buf = [0u8; SERIAL_CHUNK];
        loop {
            let room = self.core.serial_room().min(SERIAL_CHUNK);
            if room == 0 {
                // The host's bytes wait in the pty (and then in the host): backpressure.
                return Ok(());
            }
            match self.pty.read(&mut buf[..room]) {
                // Not expected while we hold the slave open; stop rather than spin.
                Ok(0) => {
                    self.want_read = false;
                    return Ok(());
                }
                Ok(n) => {
                    let data = &buf[..n];
                    // Only the count: the core logs commands, and never certificate-key payloads.
                    log::trace!("m{idx} serial in {n} bytes");
                    self.core.handle_serial(data, Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_read = false;
                    return Ok(());
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("pty read: {e}"))),
            }
        }
    }

    /// Write buffered output; ask for WRITABLE only while some is left.
    fn flush(&mut self, registry: &Registry) -> io::Result<()> {
        let pty = &self.pty;
        self.out
            .flush(|b| pty.write(b))
            .map_err(|e| io::Error::new(e.kind(), format!("pty write: {e}")))?;
        let want = !self.out.is_empty();
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut SourceFd(&self.pty.as_raw_fd()), self.token, interest)?;
            self.writable = want;
        }
        Ok(())
    }
}

/// The cores' backpressure, as the NetStack asks for it.
fn room<M: Core>(lines: &[Line<M>]) -> impl Fn(ModuleIdx, ConnId) -> usize + '_ {
    |m, c| lines.get(m).map_or(0, |l| l.core.rx_room(c))
}

fn log_event(idx: ModuleIdx, ev: &NetEvent) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    match ev {
        // Payloads are logged (escaped) by the net layer at trace level; keep debug readable.
        NetEvent::Data { conn, data } => {
            log::debug!("m{idx} event Data #{conn} {} bytes", data.len())
        }
        NetEvent::Datagram { conn, data, from } => {
            log::debug!(
                "m{idx} event Datagram #{conn} {} bytes from {from}",
                data.len()
            )
        }
        other => log::debug!("m{idx} event {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    //! The loop with small fake cores, a real pty and loopback sockets the tests start themselves.

    use super::*;
    use crate::module::io::{ConnId, NetEvent, NetOp};
    use std::fs::{File, OpenOptions};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
    use std::os::unix::fs::OpenOptionsExt;

    const WAIT: Duration = Duration::from_secs(5);

    /// Echoes the host's bytes upper-cased, says "hi" at boot and "T" when its timer fires.
    struct Echo {
        out: Vec<u8>,
        timer: Option<Instant>,
    }

    impl Core for Echo {
        fn handle_serial(&mut self, data: &[u8], _now: Instant) {
            self.out.extend(data.to_ascii_uppercase());
        }
        fn handle_net(&mut self, _ev: NetEvent, _now: Instant) {}
        fn handle_timeout(&mut self, now: Instant) {
            if self.timer.is_some_and(|t| t <= now) {
                self.timer = None;
                self.out.extend_from_slice(b"T");
            }
        }
        fn take_serial(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.out)
        }
        fn poll_op(&mut self) -> Option<NetOp> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.timer
        }
        fn rx_room(&self, _conn: ConnId) -> usize {
            0
        }
    }

    fn open_host(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .expect("open slave")
    }

    /// Step the driver until the host has read `want` bytes or `limit` passed; returns them.
    fn host_read_for<M: Core>(
        d: &mut Driver<M>,
        host: &mut File,
        want: usize,
        limit: Duration,
    ) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < want && Instant::now() < deadline {
            assert_eq!(
                d.step(Some(Duration::from_millis(10))).expect("step"),
                Flow::Continue
            );
            match host.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("host read: {e}"),
            }
        }
        got
    }

    fn host_read<M: Core>(d: &mut Driver<M>, host: &mut File, want: usize) -> Vec<u8> {
        host_read_for(d, host, want, WAIT)
    }

    #[test]
    fn serial_round_trip_across_host_reopen() {
        let mut d = Driver::new().expect("driver");
        let pty = Pty::open().expect("pty");
        let path = pty.slave_path().to_owned();
        let boot = Echo {
            out: b"hi".to_vec(),
            timer: None,
        };
        d.add(boot, pty).expect("add");
        // Output made before any host opened the line waits in the pty for the first one.
        for _ in 0..3 {
            d.step(Some(Duration::from_millis(1))).expect("step");
        }
        let mut host = open_host(&path);
        assert_eq!(host_read(&mut d, &mut host, 2), b"hi");
        for round in 0..3 {
            host.write_all(b"i?\r\n").expect("host write");
            assert_eq!(host_read(&mut d, &mut host, 4), b"I?\r\n", "round {round}");
            drop(host);
            // With no host attached the loop must sleep, not spin on hang-ups.
            let t = Instant::now();
            d.step(Some(Duration::from_millis(100))).expect("step");
            d.step(Some(Duration::from_millis(100))).expect("step");
            assert!(t.elapsed() >= Duration::from_millis(150), "loop spun");
            host = open_host(&path);
        }
    }

    #[test]
    fn timer_fires_on_time() {
        let mut d = Driver::new().expect("driver");
        let pty = Pty::open().expect("pty");
        let mut host = open_host(pty.slave_path());
        let start = Instant::now();
        let core = Echo {
            out: Vec::new(),
            timer: Some(start + Duration::from_millis(80)),
        };
        d.add(core, pty).expect("add");
        // One long step: the poll must wake itself for the timer.
        d.step(Some(WAIT)).expect("step");
        assert_eq!(host_read(&mut d, &mut host, 1), b"T");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(80) && took < Duration::from_secs(2),
            "timer fired after {took:?}"
        );
    }

    /// Connects at boot, sends "hello", and passes received bytes to the serial line. It takes at
    /// most `room` bytes until the host writes "+", which grants `room` more.
    struct Relay {
        ops: Vec<NetOp>,
        out: Vec<u8>,
        room: usize,
        grant: usize,
    }

    impl Core for Relay {
        fn handle_serial(&mut self, data: &[u8], _now: Instant) {
            self.room += self.grant * data.iter().filter(|&&b| b == b'+').count();
        }
        fn handle_net(&mut self, ev: NetEvent, _now: Instant) {
            match ev {
                NetEvent::Connected { conn, .. } => self.ops.push(NetOp::Send {
                    conn,
                    seq: 1,
                    data: b"hello".to_vec(),
                    to: None,
                }),
                NetEvent::Sent { .. } => self.out.extend_from_slice(b"<sent>"),
                NetEvent::Data { data, .. } => {
                    assert!(data.len() <= self.room, "read past the room");
                    self.room -= data.len();
                    self.out.extend(data);
                }
                NetEvent::Closed { .. } => self.out.extend_from_slice(b"<closed>"),
                other => panic!("unexpected {other:?}"),
            }
        }
        fn handle_timeout(&mut self, _now: Instant) {}
        fn take_serial(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.out)
        }
        fn poll_op(&mut self) -> Option<NetOp> {
            (!self.ops.is_empty()).then(|| self.ops.remove(0))
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn rx_room(&self, _conn: ConnId) -> usize {
            self.room
        }
    }

    #[test]
    fn net_relay_with_backpressure() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let SocketAddr::V4(remote) = listener.local_addr().expect("addr") else {
            unreachable!()
        };
        let mut d = Driver::new().expect("driver");
        let pty = Pty::open().expect("pty");
        let mut host = open_host(pty.slave_path());
        let core = Relay {
            ops: vec![NetOp::Connect {
                conn: 1,
                local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
                remote,
                keepalive: None,
            }],
            out: Vec::new(),
            room: 4,
            grant: 4,
        };
        d.add(core, pty).expect("add");
        assert_eq!(host_read(&mut d, &mut host, 6), b"<sent>");
        let (mut peer, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).expect("peer read");
        assert_eq!(&buf, b"hello");

        peer.write_all(b"0123456789").expect("peer write");
        peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
        assert_eq!(host_read(&mut d, &mut host, 4), b"0123");
        // The socket has more, but the core has no room: nothing more comes.
        assert_eq!(
            host_read_for(&mut d, &mut host, 1, Duration::from_millis(200)),
            b""
        );
        // Room opens through the serial line; the paused socket is read again without any new
        // readiness from it.
        host.write_all(b"+").expect("host write");
        assert_eq!(host_read(&mut d, &mut host, 4), b"4567");
        host.write_all(b"+").expect("host write");
        assert_eq!(host_read(&mut d, &mut host, 10), b"89<closed>");
    }
}
