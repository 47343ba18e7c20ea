//! An ssh session through `rtcp connect` as its `ProxyCommand` while the proxy cuts the
//! session (issue 21, "Done when"): a throwaway sshd started by the test behind `rtcp
//! server --forward`, and one ssh whose remote command streams a file the test made.
//!
//! Needs `/usr/sbin/sshd`, `ssh` and `ssh-keygen` (Debian packages openssh-server and
//! openssh-client; `.ci/run` installs them) and root, as the tests run (sshd's privilege
//! separation). Without them the test fails when `CI` is set, and is skipped with a
//! message otherwise.

mod common;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, have_programs, local, Options, Proc, TempDir, Tunnel, RTCP};
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::payload::Payload;
use robust_tcp_testkit::proxy::{CutAt, CutPlan, FaultProxy};

const SSHD: &str = "/usr/sbin/sshd";
/// Bounds the whole test (it takes some 10 s on a busy 2-core machine).
const LIMIT: Duration = Duration::from_secs(90);
/// The file the remote command streams.
const LEN: u64 = 32 << 20;
/// The test cuts the session's connection each time this much more has arrived.
const CUT_EVERY: u64 = 4 << 20;
/// Where the proxy's plan cuts the session's first connection: 3000 bytes both ways in,
/// past rtcp's opening and request (some 300 bytes), inside ssh's key exchange. The
/// client's probe session at start carries fewer and is not cut.
const HANDSHAKE_CUT: u64 = 3000;
/// The name ssh knows the server by, in the known-hosts file the test writes.
const HOST: &str = "rtcp-e2e-sshd";

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway sshd on a free loopback port, with its own host key and root's login by
/// the client key it makes: everything in its directory, removed after sshd is killed.
struct Sshd {
    sshd: Proc,
    addr: SocketAddr,
    dir: TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = TempDir::new("sshd");
        let file = |name: &str| dir.path().join(name);
        keygen(&file("host"));
        keygen(&file("id"));
        std::fs::copy(file("id.pub"), file("authorized_keys")).expect("authorize the key");
        // ssh checks the host key against this file only: it reaches our sshd or fails.
        let host_key = std::fs::read_to_string(file("host.pub")).expect("the host key");
        std::fs::write(file("known_hosts"), format!("{HOST} {host_key}")).expect("known_hosts");
        let addr = local(free_port());
        let config = format!(
            "ListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
            file("host").display(),
            file("authorized_keys").display(),
            file("sshd.pid").display(),
        );
        std::fs::write(file("sshd_config"), config).expect("sshd_config");
        // sshd's privilege separation needs it; a machine without a running sshd may not
        // have it yet.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let mut cmd = Command::new(SSHD);
        // -D: in the foreground, our child; -e: its log on stderr, which Proc collects.
        cmd.args(["-D", "-e", "-f"])
            .arg(file("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut sshd = Proc::spawn("sshd", cmd);
        sshd.wait_listening(addr);
        Sshd { sshd, addr, dir }
    }

    /// `ssh` to it through `rtcp connect PROXY` (with the client's `rtcp_args`: its key) as
    /// its `ProxyCommand`, running `command`.
    fn ssh(&self, proxy: SocketAddr, rtcp_args: &[String], command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(self.dir.path().join("id"))
            .arg("-o")
            .arg(format!(
                "ProxyCommand={RTCP} connect {} {proxy}",
                rtcp_args.join(" ")
            ))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
            .arg(format!("root@{HOST}"))
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // ssh and its ProxyCommand in a group of their own, for [`Group`].
            .process_group(0);
        cmd
    }
}

/// A process group, killed when dropped: ssh's `rtcp connect` is ssh's child, which a
/// kill of ssh alone would leave behind (ssh ends it only when ssh exits by itself).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // Fails harmlessly once every member has exited.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

/// Reads through `inner`, cutting the connections of `proxy` each time `CUT_EVERY` more
/// bytes have come: the cuts land while the stream flows, wherever its bytes are.
struct CuttingReader<'a, R> {
    inner: R,
    proxy: &'a FaultProxy,
    read: u64,
    next_cut: u64,
}

impl<R: Read> Read for CuttingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        // No live connection (a reconnection under way): the cut waits for the next read.
        if self.read >= self.next_cut && self.proxy.cut_all() > 0 {
            self.next_cut += CUT_EVERY;
        }
        Ok(n)
    }
}

// Proves: one ssh session over `rtcp connect` carries a 32 MiB stream byte for byte
// through a cut in ssh's handshake and cuts while the stream flows, and ends normally: ssh exits 0,
// and sshd accepted one login only (the session was never opened again).
#[test]
fn an_ssh_session_streams_byte_exact_through_cuts() {
    let test = "an_ssh_session_streams_byte_exact_through_cuts";
    let tools = [SSHD, "ssh", "ssh-keygen"];
    if !have_programs(test, &tools, "openssh-server and openssh-client") {
        return;
    }
    run_bounded(LIMIT, || {
        let started = Instant::now();
        let sshd = Sshd::start();
        let payload = Payload::new(0x55_4845_3231, LEN);
        let data = sshd.dir.path().join("data");
        let file = std::fs::File::create(&data).expect("create the file");
        payload
            .write_to(io::BufWriter::new(file))
            .expect("write the file");
        // One planned cut, in ssh's handshake; then the test's own, placed by how far the
        // stream got.
        let plan = CutPlan::random(1, HANDSHAKE_CUT)
            .script([CutAt::Bytes(HANDSHAKE_CUT), CutAt::Bytes(HANDSHAKE_CUT)]);
        let mut tunnel = Tunnel::start(sshd.addr, plan, &Options::default());
        let logs = || {
            let sshd = sshd.sshd.stderr();
            format!("{}\n--- sshd stderr:\n{sshd}", tunnel.logs())
        };

        let command = format!("cat {}", data.display());
        let mut ssh = Proc::spawn(
            "ssh",
            sshd.ssh(
                tunnel.proxy.local_addr(),
                &tunnel.keys.client_args(),
                &command,
            ),
        );
        // Dropped before ssh's Proc: the group goes first, then ssh is reaped.
        let _group = Group(ssh.child().id());
        let stdout = ssh.child().stdout.take().expect("ssh's stdout is piped");
        let reader = CuttingReader {
            inner: stdout,
            proxy: &tunnel.proxy,
            read: 0,
            next_cut: CUT_EVERY,
        };
        let checked = payload.verify_from(reader);
        let status = ssh.wait_exit(Duration::from_secs(30));
        assert!(
            checked.is_ok() && status.success(),
            "ssh: {status}, stream: {checked:?}\n--- ssh stderr:\n{}\n{}",
            ssh.stderr(),
            logs()
        );
        assert_eq!(ssh.stderr(), "", "ssh's stderr");
        let cuts = tunnel.proxy.cuts();
        // The handshake's, and one at each multiple of CUT_EVERY before the end.
        let want = 1 + ((LEN - 1) / CUT_EVERY) as usize;
        assert!(cuts >= want, "{cuts} cuts, not {want}\n{}", logs());
        let logins = sshd.sshd.stderr().matches("Accepted publickey").count();
        assert_eq!(logins, 1, "sshd's logins\n{}", logs());
        tunnel.assert_running();
        eprintln!(
            "ssh: {} MiB through {cuts} cuts ({} connections) in {:?}",
            LEN >> 20,
            tunnel.proxy.connections(),
            started.elapsed()
        );
    });
}
