//! `tunnel_crr` (issue 20): CRR as a program that cannot be recompiled gets it, through a
//! relay at each end of the path, TLS between them: two `socat`s with OpenSSL over TCP
//! (the "TCP" side of the tables) against `rtcp client` and `rtcp server`, TLS 1.3 over a
//! robust-tcp session (the "robust" side). Both relays forward to the server child's
//! plain TCP CRR listener; the client connects to its end's relay on loopback, in the
//! client's namespace. Needs `rtcp` built beside this example (`cargo build --release -p
//! robust-tcp-cli`), `socat` and `openssl`.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use robust_tcp_testkit::paired::{crr_transaction, Side, Tcp};

/// The relays' ports: in namespaces of this run's own, so fixed ones are free.
const RTCP_SERVER_PORT: u16 = 7700;
const SOCAT_SERVER_PORT: u16 = 7701;
const RTCP_ENTRY_PORT: u16 = 7800;
const SOCAT_ENTRY_PORT: u16 = 7801;
/// How long a relay may take to listen.
const START_LIMIT: Duration = Duration::from_secs(15);

/// The relays' process ids, for the cleanup after a signal or the watchdog, when drops do
/// not run.
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The four relays and their keys; stopped, and the keys removed, when dropped.
pub(super) struct Tunnels {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Tunnels {
    /// Starts the relays: the servers in namespace `server_ns` at `server_ip`, forwarding
    /// to `target`; the clients in `client_ns`, on its loopback.
    pub(super) fn start(
        server_ns: &str,
        client_ns: &str,
        server_ip: Ipv4Addr,
        target: SocketAddr,
    ) -> io::Result<Tunnels> {
        let rtcp = rtcp_binary()?;
        let dir = std::env::temp_dir().join(format!("wan-tunnels-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let mut tunnels = Tunnels {
            children: Vec::new(),
            dir: dir.clone(),
        };
        let (client_state, server_state) = (dir.join("client"), dir.join("server"));
        let client_key = output(
            Command::new(&rtcp)
                .arg("fingerprint")
                .arg("--state-dir")
                .arg(&client_state),
        )?;
        let server_key = output(
            Command::new(&rtcp)
                .args(["fingerprint", "--server", "--state-dir"])
                .arg(&server_state),
        )?;
        let authorized = dir.join("authorized_keys");
        fs::write(&authorized, format!("{}\n", client_key.trim()))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        output(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
                .args(["-subj", "/CN=wan", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;

        let rtcp_server = SocketAddr::from((server_ip, RTCP_SERVER_PORT));
        tunnels.spawn(
            server_ns,
            Command::new(&rtcp)
                .args(["--quiet", "server", "--listen"])
                .arg(rtcp_server.to_string())
                .arg("--forward")
                .arg(target.to_string())
                .arg("--authorized-keys")
                .arg(&authorized)
                .arg("--state-dir")
                .arg(&server_state),
        )?;
        tunnels.spawn(
            server_ns,
            Command::new("socat").arg(format!(
                "OPENSSL-LISTEN:{SOCAT_SERVER_PORT},bind={server_ip},reuseaddr,fork,nodelay,cert={},key={},verify=0",
                cert.display(),
                key.display()
            )).arg(format!("TCP:{target},nodelay")),
        )?;
        tunnels.spawn(
            client_ns,
            Command::new(&rtcp)
                .args(["--quiet", "client", "--listen"])
                .arg(format!("127.0.0.1:{RTCP_ENTRY_PORT}"))
                .arg("--server")
                .arg(rtcp_server.to_string())
                .arg("--server-key")
                .arg(server_key.trim())
                .arg("--state-dir")
                .arg(&client_state),
        )?;
        tunnels.spawn(
            client_ns,
            Command::new("socat")
                .arg(format!(
                    "TCP-LISTEN:{SOCAT_ENTRY_PORT},bind=127.0.0.1,reuseaddr,fork,nodelay"
                ))
                .arg(format!(
                    "OPENSSL:{server_ip}:{SOCAT_SERVER_PORT},verify=0,nodelay"
                )),
        )?;
        // This thread is in the client's namespace: each relay answers once both of its
        // ends listen, which a first exchange through it shows.
        for side in [Side::Tcp, Side::Robust] {
            wait_through(tunnels.entry(side))?;
        }
        Ok(tunnels)
    }

    /// The client's end of `side`'s relays.
    pub(super) fn entry(&self, side: Side) -> SocketAddr {
        let port = match side {
            Side::Tcp => SOCAT_ENTRY_PORT,
            Side::Robust => RTCP_ENTRY_PORT,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Starts `command` in namespace `ns`, its output discarded.
    fn spawn(&mut self, ns: &str, command: &Command) -> io::Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // `ip netns exec` execs the command: the child's id is the relay's.
        lock_pids().push(child.id());
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        lock_pids().clear();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Kills the relays: for the watchdog and signals, when drops will not run.
pub(super) fn kill_all() {
    for pid in lock_pids().drain(..) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill has no memory effects; the pid is a child of ours not yet
            // reaped (reaping clears the list first).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn lock_pids() -> std::sync::MutexGuard<'static, Vec<u32>> {
    PIDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `rtcp`, built beside this example (`target/release/examples/wan` next to
/// `target/release/rtcp`).
fn rtcp_binary() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let rtcp = exe
        .parent()
        .and_then(FsPath::parent)
        .map(|dir| dir.join("rtcp"))
        .filter(|rtcp| rtcp.exists());
    rtcp.ok_or_else(|| {
        io::Error::other("no rtcp beside this example: cargo build --release -p robust-tcp-cli")
    })
}

/// What `command` printed, or why it failed.
fn output(command: &mut Command) -> io::Result<String> {
    let out = command.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until an exchange through the relay at `entry` reaches the CRR server: it
/// answers a request with its reply and ends the stream.
fn wait_through(entry: SocketAddr) -> io::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        match crr_transaction::<Tcp>(entry, 0) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::other(format!("the relay at {entry}: {e}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
