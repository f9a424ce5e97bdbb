//! A fault-injecting loopback TCP proxy, in the spirit of toxiproxy: every connection it
//! accepts is forwarded to a target port by two threads (one per direction), and the test
//! can inject one [`Fault`] into a connection ([`Link`]) at once or when a chosen number
//! of bytes has gone through one direction (so a cut can fall inside a stanza):
//!
//! - [`Fault::Hold`]: one or both directions stop forwarding and buffer, then release
//!   everything in order after a while (a latency spike; if the end that waits gives up
//!   first, the release goes to a closed socket);
//! - [`Fault::Drop`]: a blackhole; one or both directions stop forwarding and discard, and
//!   the connection stays open (a dead path that neither end notices at once) until an end
//!   gives up or the test closes it ([`Proxy::close_stale`]);
//! - [`Fault::Reset`]: an RST to the client, the server or both (`SO_LINGER` 0 and an
//!   abortive disconnect); a side not reset is left open and silent;
//! - [`Fault::Close`]: a FIN both ways.
//!
//! New connections go to the current target ([`Proxy::retarget`], after a daemon restart);
//! one that cannot be forwarded is closed at once. Loopback only.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }
}

/// The directions a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dirs {
    /// Client to server only.
    Up,
    /// Server to client only.
    Down,
    /// Both.
    Both,
}

impl Dirs {
    fn has(self, d: Dir) -> bool {
        matches!(
            (self, d),
            (Dirs::Both, _) | (Dirs::Up, Dir::Up) | (Dirs::Down, Dir::Down)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Dirs::Up => "up",
            Dirs::Down => "down",
            Dirs::Both => "both",
        }
    }
}

/// What the proxy does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Buffer `dirs` for `hold`, then forward the buffer and go on.
    Hold { dirs: Dirs, hold: Duration },
    /// Discard what comes in `dirs`; the sockets stay open.
    Drop { dirs: Dirs },
    /// An RST to the client and/or the server; nothing is forwarded any more.
    Reset { client: bool, server: bool },
    /// A FIN to both ends.
    Close,
}

impl Fault {
    /// A short name for the counts: `hold-up`, `drop-both`, `reset-client`, `close`, ...
    pub fn kind(&self) -> String {
        match self {
            Fault::Hold { dirs, .. } => format!("hold-{}", dirs.name()),
            Fault::Drop { dirs } => format!("drop-{}", dirs.name()),
            Fault::Reset {
                client: true,
                server: true,
            } => "reset-both".to_owned(),
            Fault::Reset { client: true, .. } => "reset-client".to_owned(),
            Fault::Reset { .. } => "reset-server".to_owned(),
            Fault::Close => "close".to_owned(),
        }
    }
}

/// What one direction does with what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Hold,
    Drop,
    /// Reset or closed: nothing more is forwarded, an end of input is not passed on.
    Dead,
}

/// One direction of a link.
struct Half {
    mode: Mode,
    /// What a hold kept, to release in order.
    held: Vec<u8>,
    /// The input ended while held: pass the end on after the release.
    eof: bool,
    /// Bytes read in this direction.
    seen: u64,
    /// Fire the link's armed fault once `seen` reaches this.
    trigger: Option<u64>,
}

/// One proxied connection.
pub struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Up, Down; when both are needed, Up is locked first.
    halves: [Mutex<Half>; 2],
    /// The fault armed or fired on this link (one per link).
    fault: Mutex<Option<Fault>>,
    fired: AtomicBool,
}

/// Largest hold buffer per direction; beyond it a hold discards (the runs stay far below).
const MAX_HELD: usize = 16 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An abortive close: `SO_LINGER` 0, then a disconnect, which sends an RST (Linux's
/// `connect(AF_UNSPEC)`) even though the pump threads still hold clones of the socket.
fn reset(s: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO));
    let _ = rustix::net::connect_unspec(s);
    let _ = s.shutdown(Shutdown::Both);
}

impl Link {
    /// The socket written to in direction `d`.
    fn sink(&self, d: Dir) -> &TcpStream {
        match d {
            Dir::Up => &self.server,
            Dir::Down => &self.client,
        }
    }

    /// Closes both sockets (FIN).
    fn shut(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// Whether a fault is armed or in effect on this link (a hold that ended is not).
    pub fn faulted(&self) -> bool {
        lock(&self.fault).is_some()
    }

    /// Whether the armed fault has fired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Arms `fault`, to fire once `after` more bytes have been read in direction `at`
    /// (or when [`Link::fire`] is called). Returns false if the link had a fault already.
    pub fn arm(&self, fault: Fault, at: Dir, after: u64) -> bool {
        {
            let mut f = lock(&self.fault);
            if f.is_some() {
                return false;
            }
            *f = Some(fault);
        }
        let mut h = lock(&self.halves[at.index()]);
        h.trigger = Some(h.seen + after);
        true
    }

    /// Applies the armed fault now, unless it has fired already.
    pub fn fire(self: &Arc<Self>) {
        let Some(fault) = *lock(&self.fault) else {
            return;
        };
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut up = lock(&self.halves[0]);
        let mut down = lock(&self.halves[1]);
        up.trigger = None;
        down.trigger = None;
        match fault {
            Fault::Hold { dirs, hold } => {
                for (d, h) in [(Dir::Up, &mut up), (Dir::Down, &mut down)] {
                    if dirs.has(d) && h.mode == Mode::Forward {
                        h.mode = Mode::Hold;
                        let link = self.clone();
                        std::thread::spawn(move || {
                            // The hold's length is the fault itself, not a wait for an event.
                            std::thread::sleep(hold);
                            link.release(d);
                        });
                    }
                }
            }
            Fault::Drop { dirs } => {
                for (d, h) in [(Dir::Up, &mut up), (Dir::Down, &mut down)] {
                    if dirs.has(d) && h.mode != Mode::Dead {
                        h.mode = Mode::Drop;
                    }
                }
            }
            Fault::Reset { client, server } => {
                up.mode = Mode::Dead;
                down.mode = Mode::Dead;
                if client {
                    reset(&self.client);
                }
                if server {
                    reset(&self.server);
                }
            }
            Fault::Close => {
                up.mode = Mode::Dead;
                down.mode = Mode::Dead;
                self.shut();
            }
        }
    }

    /// Ends a hold of direction `d`: forwards what it kept, then goes on forwarding (or
    /// passes on an end of input that came meanwhile).
    fn release(&self, d: Dir) {
        let mut h = lock(&self.halves[d.index()]);
        if h.mode != Mode::Hold {
            return;
        }
        let held = std::mem::take(&mut h.held);
        if self.sink(d).write_all(&held).is_err() {
            h.mode = Mode::Dead;
            drop(h);
            self.shut();
            return;
        }
        h.mode = Mode::Forward;
        if h.eof {
            drop(h);
            self.shut();
            return;
        }
        drop(h);
        // A hold that ended with the link intact: the link may take another fault.
        let up = lock(&self.halves[0]);
        let down = lock(&self.halves[1]);
        if up.mode == Mode::Forward && down.mode == Mode::Forward {
            *lock(&self.fault) = None;
            self.fired.store(false, Ordering::SeqCst);
        }
    }

    /// Handles `data` read in direction `d` as the direction's mode says; false when the
    /// pump should stop (its sink failed).
    fn deliver(&self, d: Dir, h: &mut Half, data: &[u8]) -> bool {
        h.seen += data.len() as u64;
        match h.mode {
            Mode::Forward => {
                if self.sink(d).write_all(data).is_err() {
                    h.mode = Mode::Dead;
                    self.shut();
                    return false;
                }
            }
            Mode::Hold if h.held.len() + data.len() <= MAX_HELD => h.held.extend_from_slice(data),
            Mode::Hold | Mode::Drop | Mode::Dead => {}
        }
        true
    }

    /// Copies direction `d` until its input ends.
    fn pump(self: Arc<Self>, d: Dir, mut from: TcpStream) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            if n == 0 {
                let mut h = lock(&self.halves[d.index()]);
                match h.mode {
                    Mode::Forward => {
                        drop(h);
                        self.shut();
                    }
                    Mode::Hold => h.eof = true,
                    // A blackhole does not pass the end on; a dead link has no peer.
                    Mode::Drop | Mode::Dead => {}
                }
                return;
            }
            let mut data = &buf[..n];
            let mut fire = false;
            {
                let mut h = lock(&self.halves[d.index()]);
                if let Some(at) = h.trigger {
                    let before = at.saturating_sub(h.seen).min(data.len() as u64) as usize;
                    if h.seen + data.len() as u64 >= at {
                        if !self.deliver(d, &mut h, &data[..before]) {
                            return;
                        }
                        data = &data[before..];
                        h.trigger = None;
                        fire = true;
                    }
                }
            }
            if fire {
                self.fire();
            }
            let mut h = lock(&self.halves[d.index()]);
            if !self.deliver(d, &mut h, data) {
                return;
            }
        }
    }
}

/// What the accept thread and the test share.
struct Shared {
    /// The daemon's port.
    target: AtomicU16,
    /// Every link accepted, in order.
    links: Mutex<Vec<Arc<Link>>>,
    /// While set ([`Proxy::cut`]), new connections are held: accepted, not forwarded, until
    /// [`Proxy::up`].
    down: AtomicBool,
    held: Mutex<Vec<TcpStream>>,
}

/// The proxy: a loopback listener whose connections go to the target port.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Connects `client` to `target` and starts its two pumps; `None` if the target is down
/// (the client is then closed).
fn forward(client: TcpStream, target: u16) -> Option<Arc<Link>> {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = client.shutdown(Shutdown::Both);
        return None;
    };
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        // Bounds a write to an end that stopped reading (it then counts as gone).
        let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    }
    let (c2, s2) = (client.try_clone().ok()?, server.try_clone().ok()?);
    let half = || {
        Mutex::new(Half {
            mode: Mode::Forward,
            held: Vec::new(),
            eof: false,
            seen: 0,
            trigger: None,
        })
    };
    let link = Arc::new(Link {
        client,
        server,
        halves: [half(), half()],
        fault: Mutex::new(None),
        fired: AtomicBool::new(false),
    });
    let (up, down) = (link.clone(), link.clone());
    std::thread::spawn(move || up.pump(Dir::Up, c2));
    std::thread::spawn(move || down.pump(Dir::Down, s2));
    Some(link)
}

impl Shared {
    fn forward(&self, client: TcpStream) {
        if let Some(link) = forward(client, self.target.load(Ordering::SeqCst)) {
            lock(&self.links).push(link);
        }
    }
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            target: AtomicU16::new(target),
            links: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, sp) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let mut held = lock(&sh.held);
                        if sh.down.load(Ordering::SeqCst) {
                            held.push(client);
                        } else {
                            drop(held);
                            sh.forward(client);
                        }
                    }
                    // Polling the non-blocking listener, so that the thread sees `stop`.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// New connections go to `target` from now on.
    pub fn retarget(&self, target: u16) {
        self.shared.target.store(target, Ordering::SeqCst);
    }

    /// Connections accepted and forwarded so far.
    pub fn forwarded(&self) -> usize {
        lock(&self.shared.links).len()
    }

    /// The newest forwarded connection, if it has no fault yet.
    pub fn fresh(&self) -> Option<Arc<Link>> {
        lock(&self.shared.links)
            .last()
            .filter(|l| !l.faulted())
            .cloned()
    }

    /// Closes (FIN) every connection but the newest: the ones a fault left open once the
    /// client has gone on to a new one.
    pub fn close_stale(&self) {
        let links = lock(&self.shared.links);
        if let Some((_, old)) = links.split_last() {
            for l in old {
                l.shut();
            }
        }
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        for l in lock(&self.shared.links).iter() {
            l.shut();
        }
    }

    /// The link goes down: every connection is closed, and new ones are held (accepted,
    /// not forwarded) until [`Proxy::up`].
    pub fn cut(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.close_all();
    }

    /// The link comes back, to `127.0.0.1:target`: the held connections are forwarded.
    pub fn up(&self, target: u16) {
        self.retarget(target);
        let held = {
            let mut held = lock(&self.shared.held);
            self.shared.down.store(false, Ordering::SeqCst);
            std::mem::take(&mut *held)
        };
        for client in held {
            self.shared.forward(client);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.close_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long [`self_test`] waits for any one thing.
const SELF_TEST_WAIT: Duration = Duration::from_secs(5);

/// Reads from `s` until `want` bytes came, the peer ended (`Ok` with fewer) or
/// [`SELF_TEST_WAIT`] passed; an error is returned as is.
fn read_n(s: &mut TcpStream, want: usize) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let deadline = Instant::now() + SELF_TEST_WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether nothing arrives on `s` within `quiet` (the peer neither sends nor closes).
fn silent(s: &mut TcpStream, quiet: Duration) -> bool {
    s.set_read_timeout(Some(quiet)).expect("timeout");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// A client through the proxy and the server end it reaches, on a loopback listener.
fn pair(proxy: &Proxy, listener: &TcpListener) -> (TcpStream, TcpStream, Arc<Link>) {
    let before = proxy.forwarded();
    let client = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect to the proxy");
    let (server, _) = listener.accept().expect("accept from the proxy");
    let deadline = Instant::now() + SELF_TEST_WAIT;
    while proxy.forwarded() == before {
        assert!(
            Instant::now() < deadline,
            "the proxy did not register the link"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let link = proxy.fresh().expect("a fresh link");
    (client, server, link)
}

/// The proxy's faults do what they say, on a plain loopback pair: a hold delays and then
/// releases in order, a drop discards with both ends open, a reset reaches its side as
/// `ECONNRESET` while the other stays open, a close is an end of stream, and a fault armed
/// after k bytes lets exactly k through.
#[test]
fn chaos_proxy_faults_do_what_they_say() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let proxy = Proxy::start(listener.local_addr().expect("addr").port());

    // Armed after 5 bytes up: a hold of 300 ms; the rest comes after it, in order.
    let (mut c, mut s, link) = pair(&proxy, &listener);
    assert!(link.arm(
        Fault::Hold {
            dirs: Dirs::Up,
            hold: Duration::from_millis(300)
        },
        Dir::Up,
        5
    ));
    let sent = Instant::now();
    c.write_all(b"0123456789").expect("write");
    assert_eq!(read_n(&mut s, 5).expect("read"), b"01234");
    assert_eq!(read_n(&mut s, 5).expect("read"), b"56789");
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );
    // A hold that ended leaves the link free for another fault (just after the release).
    let deadline = Instant::now() + SELF_TEST_WAIT;
    while link.faulted() {
        assert!(Instant::now() < deadline, "the ended hold still counts");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.write_all(b"down").expect("write");
    assert_eq!(
        read_n(&mut c, 4).expect("read"),
        b"down",
        "down is not held"
    );

    // A drop down: discarded, nobody is told; up still flows.
    let (mut c, mut s, link) = pair(&proxy, &listener);
    link.arm(Fault::Drop { dirs: Dirs::Down }, Dir::Down, 0);
    link.fire();
    s.write_all(b"lost").expect("write");
    assert!(
        silent(&mut c, Duration::from_millis(300)),
        "a dropped write arrived"
    );
    c.write_all(b"up").expect("write");
    assert_eq!(read_n(&mut s, 2).expect("read"), b"up");
    drop((c, s));

    // A reset of the client: ECONNRESET there, the server end stays open and silent.
    let (mut c, mut s, link) = pair(&proxy, &listener);
    link.arm(
        Fault::Reset {
            client: true,
            server: false,
        },
        Dir::Up,
        0,
    );
    link.fire();
    let e = read_n(&mut c, 1).expect_err("a reset client end");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(
        silent(&mut s, Duration::from_millis(300)),
        "the server end was told"
    );

    // A close: both ends see the end of the stream.
    let (mut c, mut s, link) = pair(&proxy, &listener);
    link.arm(Fault::Close, Dir::Up, 0);
    link.fire();
    assert!(read_n(&mut c, 1).expect("read").is_empty());
    assert!(read_n(&mut s, 1).expect("read").is_empty());
}
