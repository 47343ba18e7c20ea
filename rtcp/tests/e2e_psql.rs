//! A psql session through the tunnel while the proxy cuts it (issue 21, "Done when"): a
//! throwaway PostgreSQL cluster behind `rtcp server --forward`, and one `psql` kept open in
//! front of `rtcp client --listen`, running statements before, during and after cuts.
//!
//! The session must keep its backend throughout: its temporary table and its open
//! transaction exist only in that backend, and `pg_backend_pid()` stays the same.
//!
//! Needs PostgreSQL's server programs (`/usr/lib/postgresql/*/bin`), `psql` and the
//! `postgres` OS user (Debian package postgresql; `.ci/run` installs it); the tests run as
//! root and PostgreSQL refuses to run as root, so the cluster runs as `postgres`. Without
//! them the test fails when `CI` is set, and is skipped with a message otherwise.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, have_programs, local, skip, Options, Proc, TempDir, Tunnel};
use robust_tcp_testkit::bounded::{poll_until, run_bounded, wait_until};
use robust_tcp_testkit::proxy::CutPlan;

/// Bounds the whole test (it takes some 10 s on a busy 2-core machine).
const LIMIT: Duration = Duration::from_secs(90);
/// How long one step may take: the cluster's start, one batch of statements.
const STEP: Duration = Duration::from_secs(30);
/// Rows of the temporary table: their listing (some 2 MB) is what the planned cuts land in.
const ROWS: u64 = 50_000;
/// Cuts the proxy's plan makes while data flows, each after at most `CUT_BYTES`.
const PLANNED_CUTS: usize = 3;
const CUT_BYTES: u64 = 256 << 10;

/// The newest PostgreSQL's server programs, as Debian installs them.
fn server_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// The uid and gid of the OS user `name`, from `/etc/passwd`.
fn os_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A throwaway cluster on a free loopback port, run as the `postgres` user from a
/// directory of its own. Dropping it shuts it down (fast shutdown: its backends end and
/// its shared memory goes), then removes the directory.
struct Postgres {
    server: Proc,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Postgres {
    fn start(bin: &Path, (uid, gid): (u32, u32)) -> Postgres {
        let dir = TempDir::new("postgres");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster");
        let as_postgres = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            cmd.uid(uid)
                .gid(gid)
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .stdin(Stdio::null());
            cmd
        };
        let data = dir.path().join("data");
        // Trust on loopback: the cluster lives for one test, on a port only this machine
        // reaches. No fsync: nothing here needs to survive a crash.
        let out = as_postgres("initdb")
            .args(["--username=postgres", "--auth=trust", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = local(free_port());
        let mut cmd = as_postgres("postgres");
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &addr.port().to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null());
        let server = Proc::spawn("postgres", cmd);
        let mut cluster = Postgres {
            server,
            addr,
            _dir: dir,
        };
        // Listening is not accepting yet ("the database system is starting up"):
        // pg_isready says when sessions are accepted.
        let ready = poll_until(STEP, || {
            cluster.server.assert_running();
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &addr.port().to_string()])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ready, "postgres not ready:\n{}", cluster.server.stderr());
        cluster
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown. SIGKILL (Proc's drop, afterwards) would
        // leave its shared memory and orphaned backends behind.
        let pid = self.server.child().id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let _ = poll_until(Duration::from_secs(10), || {
            !matches!(self.server.child().try_wait(), Ok(None))
        });
    }
}

/// One `psql` kept open: statements go to its stdin, its output lines come back through a
/// channel (a reader thread), so every wait has a deadline.
struct Psql {
    proc: Proc,
    stdin: ChildStdin,
    lines: Receiver<String>,
    batches: usize,
}

impl Psql {
    fn start(entry: SocketAddr) -> Psql {
        let mut cmd = Command::new("psql");
        // Unaligned, tuples only: each row one line "a|b"; command tags still print.
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(entry.ip().to_string())
            .args([
                "-p",
                &entry.port().to_string(),
                "-U",
                "postgres",
                "postgres",
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("psql", cmd);
        let stdin = proc.child().stdin.take().expect("psql's stdin is piped");
        let stdout = proc.child().stdout.take().expect("psql's stdout is piped");
        let (tx, lines) = mpsc::channel();
        // Ends at psql's exit (end of its stdout) or when the test is gone.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Psql {
            proc,
            stdin,
            lines,
            batches: 0,
        }
    }

    /// Sends `sql` followed by an `\echo` of a mark of its own, without waiting: the
    /// mark's line says where the batch's output ends.
    fn send(&mut self, sql: &str) -> String {
        self.batches += 1;
        let mark = format!("-- end of batch {} --", self.batches);
        let input = format!("{sql}\n\\echo '{mark}'\n");
        self.stdin
            .write_all(input.as_bytes())
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("write to psql: {e}\n{}", self.proc.stderr()));
        mark
    }

    /// The output lines before `mark` (a batch sent with [`Psql::send`]).
    fn output(&mut self, mark: &str, logs: impl Fn() -> String) -> Vec<String> {
        let deadline = Instant::now() + STEP;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == mark => return out,
                Ok(line) => out.push(line),
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("no {mark:?} within {STEP:?}"),
                        RecvTimeoutError::Disconnected => "psql exited".to_string(),
                    };
                    panic!(
                        "{why}; output so far {:?}\n--- psql stderr:\n{}\n{}",
                        last(&out),
                        self.proc.stderr(),
                        logs()
                    );
                }
            }
        }
    }
}

/// The last few lines of `lines`, for failure messages.
fn last(lines: &[String]) -> &[String] {
    &lines[lines.len().saturating_sub(5)..]
}

/// Rows `first..=last` into the temporary table, each as [`row`] prints it.
fn insert(first: u64, last: u64) -> String {
    format!(
        "INSERT INTO t SELECT g, 'row ' || g || ' ' || repeat('x', g % 50) \
         FROM generate_series({first}, {last}) g;"
    )
}

/// Row `i` of the temporary table as psql prints it ("i|v").
fn row(i: u64) -> String {
    format!("{i}|row {i} {}", "x".repeat((i % 50) as usize))
}

/// Cuts the session's connection, waiting (bounded) until the proxy has one: after a cut
/// the client reconnects on its own. A cut may land in that reconnection's handshake.
fn cut(tunnel: &Tunnel) {
    wait_until(STEP, "a connection to cut", || tunnel.proxy.cut_all() >= 1);
}

// Proves: psql keeps one backend through cuts between statements, during one, and while a
// 2 MB result streams: its open transaction and temporary table are still there, every
// row comes back exactly, and pg_backend_pid() never changes.
#[test]
fn a_psql_session_keeps_its_backend_through_cuts() {
    let test = "a_psql_session_keeps_its_backend_through_cuts";
    if !have_programs(test, &["psql"], "postgresql") {
        return;
    }
    let server = server_bin();
    let user = os_user("postgres");
    let (Some(bin), Some(user)) = (server, user) else {
        skip(&format!(
            "{test}: no /usr/lib/postgresql/*/bin/initdb or no postgres user (Debian package \
             postgresql)"
        ));
        return;
    };
    run_bounded(LIMIT, move || {
        let started = Instant::now();
        let cluster = Postgres::start(&bin, user);
        // Cut points past an opening's 176 bytes (no early cuts) and within the first 256
        // KiB of each connection: the table's listing takes the planned cuts; the test's
        // own two come on top.
        let plan = CutPlan::random(PLANNED_CUTS, CUT_BYTES).early_percent(0);
        let mut tunnel = Tunnel::start(cluster.addr, plan, &Options::default());
        let logs = || {
            let postgres = cluster.server.stderr();
            format!("{}\n--- postgres stderr:\n{postgres}", tunnel.logs())
        };
        let mut psql = Psql::start(tunnel.entry);

        let mark = psql.send("SELECT pg_backend_pid();");
        let pid = psql.output(&mark, logs);
        assert_eq!(pid.len(), 1, "{pid:?}");
        let pid = &pid[0];
        assert!(pid.parse::<u32>().is_ok(), "{pid:?}");

        let mark = psql.send(&format!(
            "BEGIN; CREATE TEMP TABLE t (i int PRIMARY KEY, v text); {}",
            insert(1, 1000)
        ));
        assert_eq!(
            psql.output(&mark, logs),
            ["BEGIN", "CREATE TABLE", "INSERT 0 1000"]
        );

        // A cut while the session is idle, inside the open transaction.
        cut(&tunnel);

        // A cut while a statement runs: its request is written, the backend sleeps, and
        // the reply comes over the next connection.
        let mark = psql.send(&format!(
            "{} SELECT pg_sleep(0.3), pg_backend_pid();",
            insert(1001, ROWS)
        ));
        cut(&tunnel);
        assert_eq!(
            psql.output(&mark, logs),
            [format!("INSERT 0 {}", ROWS - 1000), format!("|{pid}")]
        );

        // The whole table, byte for byte, through the plan's cuts.
        let mark = psql.send("SELECT i, v FROM t ORDER BY i;");
        let rows = psql.output(&mark, logs);
        assert_eq!(rows.len() as u64, ROWS, "rows; last {:?}", last(&rows));
        if let Some((got, i)) = rows.iter().zip(1..).find(|(got, i)| **got != row(*i)) {
            panic!("row {i} is {got:?}, not {:?}\n{}", row(i), logs());
        }

        let mark = psql.send(
            "SELECT count(*), sum(i), pg_backend_pid() FROM t; COMMIT; \
             SELECT count(*) FROM t;",
        );
        assert_eq!(
            psql.output(&mark, logs),
            [
                format!("{ROWS}|{}|{pid}", ROWS * (ROWS + 1) / 2),
                "COMMIT".to_string(),
                ROWS.to_string()
            ]
        );

        // \q ends psql, which closes the session: exit 0, nothing on stderr.
        psql.send("\\q");
        let status = psql.proc.wait_exit(STEP);
        assert!(status.success(), "psql: {status}\n{}", psql.proc.stderr());
        assert_eq!(psql.proc.stderr(), "");
        let cuts = tunnel.proxy.cuts();
        assert!(cuts >= PLANNED_CUTS + 2, "only {cuts} cuts\n{}", logs());
        tunnel.assert_running();
        eprintln!(
            "psql through {cuts} cuts ({} connections) in {:?}",
            tunnel.proxy.connections(),
            started.elapsed()
        );
    });
}
