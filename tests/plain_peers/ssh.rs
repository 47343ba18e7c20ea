//! ssh against a throwaway sshd (root only: sshd runs as root; skipped otherwise, unless
//! `CI` is set). Both ends of ssh send their identification line at once, without waiting
//! for the other's: an ordinary ssh client is handed to `accept` at its first byte, and a
//! falling-back client's probe hears sshd's banner. (A client that waits for the server
//! to speak first is `smtp.rs`'s.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use robust_tcp::{Config, Error, RServerSocket, RSocket};
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::check::carried;

use super::relay::{fallback_relay, robust_relay, Proc};
use super::{accept_plain, fallback, free_addr, have, run, LIMIT};

const SSHD: &str = "/usr/sbin/sshd";

/// A directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway sshd on a free loopback port: its own host key, and root's login with the
/// client key it makes, which [`ssh`] uses.
struct Sshd {
    addr: SocketAddr,
    dir: TempDir,
    _sshd: Proc,
}

/// Whether sshd can be started here (root, and the programs); skipped otherwise unless
/// `CI` is set.
fn can_run_sshd() -> bool {
    let root = is_root();
    assert!(
        root || std::env::var_os("CI").is_none(),
        "sshd needs root (CI is set)"
    );
    if !root {
        eprintln!("skipped: sshd needs root");
        return false;
    }
    let present = Path::new(SSHD).exists();
    assert!(
        present || std::env::var_os("CI").is_none(),
        "{SSHD} is missing (CI is set)"
    );
    present && have("ssh") && have("ssh-keygen")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ssh-keygen {path:?}");
}

impl Sshd {
    fn start() -> Sshd {
        let dir = std::env::temp_dir().join(format!(
            "robust-tcp-sshd-{}-{}",
            std::process::id(),
            free_addr().port()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let dir = TempDir(dir);
        // sshd's privilege separation needs it; a Debian machine without a running sshd
        // may not have it yet.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        keygen(&dir.0.join("host"));
        keygen(&dir.0.join("id"));
        std::fs::copy(dir.0.join("id.pub"), dir.0.join("authorized_keys")).expect("keys");
        let addr = free_addr();
        let option = |o: String| ["-o".to_string(), o];
        let mut cmd = Command::new(SSHD);
        cmd.args([
            "-D",
            "-e",
            "-f",
            "/dev/null",
            "-p",
            &addr.port().to_string(),
        ])
        .args(option("ListenAddress=127.0.0.1".into()))
        .args(option(format!("HostKey={}", dir.0.join("host").display())))
        .args(option(format!(
            "AuthorizedKeysFile={}",
            dir.0.join("authorized_keys").display()
        )))
        .args(option("StrictModes=no".into()))
        .args(option("PidFile=none".into()))
        .args(option("UsePAM=no".into()))
        .args(option("PasswordAuthentication=no".into()))
        .args(option("PermitRootLogin=prohibit-password".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let sshd = Proc::from(cmd.spawn().expect("start sshd"));
        sshd.wait_listening(addr);
        Sshd {
            addr,
            dir,
            _sshd: sshd,
        }
    }

    /// Runs `echo WORD` over ssh at `addr` (sshd, or a relay to it): its output.
    fn ssh_echo(&self, addr: SocketAddr, word: &str) -> std::process::Output {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-p", &addr.port().to_string(), "-i"])
            .arg(self.dir.0.join("id"))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"])
            .args(["root@127.0.0.1", "echo", word]);
        run(cmd, Duration::from_secs(30))
    }
}

#[test]
fn ssh_reaches_sshd_through_a_server_that_accepts_plain_tcp() {
    if !can_run_sshd() {
        return;
    }
    run_bounded(LIMIT, || {
        let sshd = Sshd::start();
        // Longer than `ssh_echo` lets ssh run (`plain_wait` is capped at the handshake
        // timeout, so both): ssh gets its answer only if the server hands it over at its
        // first byte (its identification line), not after a silence.
        let config = accept_plain().handshake_timeout(LIMIT).plain_wait(LIMIT);
        let relay = robust_relay(config, sshd.addr, 1);
        let out = sshd.ssh_echo(relay.addr, "plain-ssh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "plain-ssh\n",
            "{out:?}"
        );
        assert!(relay.finish()[0].plain);
    });
}

#[test]
fn ssh_through_an_rsocket_that_falls_back_reaches_sshd() {
    if !can_run_sshd() {
        return;
    }
    run_bounded(LIMIT, || {
        let sshd = Sshd::start();
        let relay = fallback_relay(fallback(), sshd.addr, 1);
        let out = sshd.ssh_echo(relay.addr, "fallback-ssh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "fallback-ssh\n",
            "{out:?}"
        );
        assert!(relay.finish()[0].plain);
    });
}

#[test]
fn without_the_options_ssh_and_an_rsocket_fail_clearly() {
    if !can_run_sshd() {
        return;
    }
    run_bounded(LIMIT, || {
        let sshd = Sshd::start();
        let config = Config::default().handshake_timeout(Duration::from_secs(1));
        let server = RServerSocket::bind_with("127.0.0.1:0", config.clone()).expect("bind");
        let out = sshd.ssh_echo(server.local_addr().expect("address"), "never");
        assert!(!out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");

        let mut sock = RSocket::connect_with(sshd.addr, config).expect("connect");
        let e = std::io::Read::read(&mut sock, &mut [0; 16]).expect_err("sshd's banner");
        assert!(
            matches!(carried("a session with sshd", &e), Error::NotRobust { .. }),
            "{e:?}"
        );
    });
}
