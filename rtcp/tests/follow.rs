//! `rtcp client` follows a DNS change of `--server` while a session reconnects. The client
//! runs in a mount namespace of its own (`unshare --mount`) where a hosts file of the
//! test's is bound over `/etc/hosts`: the name resolves where the test says, for that
//! process only, and the mount goes with the process. Two fault proxies of the test, on
//! 127.0.0.2 and 127.0.0.3 at one port, lead to the one rtcp server. Needs root (the bind
//! mount): skipped otherwise, unless `CI` is set.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, local, skip, Keys, Proc, Target, RTCP};
use robust_tcp_testkit::bounded::run_bounded;
use robust_tcp_testkit::proxy::{CutPlan, FaultProxy};

/// The name the client is given, in its own hosts file only.
const NAME: &str = "rtcp-follow.test";
/// Reads through the tunnel wait at most this.
const IO_LIMIT: Duration = Duration::from_secs(20);

/// Whether this process may bind a file over `/etc/hosts` in a mount namespace of a
/// child's (root); without it the test is skipped, unless `CI` is set.
fn can_mount() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !root {
        skip("follow: the hosts file's bind mount needs root");
    }
    root
}

/// Writes `text` over the hosts file in place: the bind mount shows the file's inode, so
/// it must not be replaced by another.
fn write_hosts(path: &std::path::Path, text: &str) {
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write the hosts file");
}

/// Writes `bytes` through `stream` and reads them back from the echo target.
fn echoed(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    let mut back = vec![0; bytes.len()];
    stream.read_exact(&mut back)?;
    assert_eq!(back, bytes);
    Ok(())
}

#[test]
fn a_session_follows_its_server_name_to_a_new_address() {
    if !can_mount() {
        return;
    }
    run_bounded(Duration::from_secs(60), || {
        let target = Target::start(|stream| io::copy(&mut &stream, &mut &stream));
        let keys = Keys::new();
        let server_addr = local(free_port());
        let mut args = vec![
            "server".into(),
            "--listen".into(),
            server_addr.to_string(),
            "--forward".into(),
            target.addr().to_string(),
        ];
        args.extend(keys.server_args());
        let mut server = Proc::rtcp("rtcp server", &args);
        server.wait_listening(server_addr);

        // The server's two addresses, at one port (the name carries it).
        let port = TcpListener::bind("127.0.0.2:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let at = |last: u8| SocketAddr::from(([127, 0, 0, last], port));
        let old = FaultProxy::start_at(at(2), server_addr, CutPlan::never()).expect("a proxy");
        let new = FaultProxy::start_at(at(3), server_addr, CutPlan::never()).expect("a proxy");

        let dir = tempfile::tempdir().expect("a directory for the hosts file");
        let hosts = dir.path().join("hosts");
        write_hosts(&hosts, &format!("127.0.0.2 {NAME}\n"));
        let entry = local(free_port());
        let mut client_args = vec![
            "client".to_owned(),
            "--listen".into(),
            entry.to_string(),
            "--server".into(),
            format!("{NAME}:{port}"),
            "--quiet".into(),
        ];
        client_args.extend(keys.client_args());
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(&hosts)
            .arg(RTCP)
            .args(&client_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut client = Proc::spawn("rtcp client", cmd);
        client.wait_listening(entry);

        let mut stream = TcpStream::connect(entry).expect("connect to rtcp client");
        stream
            .set_read_timeout(Some(IO_LIMIT))
            .expect("a read timeout");
        echoed(&mut stream, b"before the move").expect("an echo through the old address");

        // The name moves; the old address goes, and the session's connection with it.
        write_hosts(&hosts, &format!("127.0.0.3 {NAME}\n"));
        drop(old);
        let moved = echoed(&mut stream, b"after the move");
        assert!(
            moved.is_ok(),
            "no echo after the move: {moved:?}\n{}",
            client.stderr()
        );
        client.wait_stderr(
            &format!(
                "resolves to {} now, not {}: reconnecting there",
                at(3),
                at(2)
            ),
            IO_LIMIT,
        );
        assert!(new.connections() >= 1);
        client.assert_running();
        server.assert_running();
    });
}
