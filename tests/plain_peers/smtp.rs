//! curl sending mail over SMTP, a protocol where the server speaks first: curl connects and
//! says nothing until it reads the server's greeting, so an `RServerSocket` that accepts
//! plain TCP can tell it from a robust-tcp client only by its silence, and hands it to
//! `accept` after `Config::plain_wait`. The accepted `RSocket` then serves SMTP itself.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use robust_tcp::RServerSocket;
use robust_tcp_testkit::bounded::run_bounded;

use super::relay::Proc;
use super::{accept_plain, have, LIMIT};

/// The message curl uploads; what the server reads after `DATA` must be it, byte for byte.
const MESSAGE: &str = "From: sender@example.org\r\nTo: rcpt@example.org\r\nSubject: plain wait\r\n\r\nThe server spoke first.\r\n";

/// What an SMTP server received: the client's commands, in order, and the message.
#[derive(Debug, Default)]
struct Mail {
    commands: Vec<String>,
    message: Vec<u8>,
}

/// Reads CRLF-terminated lines from `conn`, keeping what follows a line for the next.
struct Lines<C> {
    conn: C,
    buffered: Vec<u8>,
}

impl<C: Read + Write> Lines<C> {
    /// The bytes up to and including the next `end`, or `None` at the end of the stream.
    fn until(&mut self, end: &[u8]) -> Option<Vec<u8>> {
        let mut buf = [0; 1024];
        loop {
            if let Some(at) = self.buffered.windows(end.len()).position(|w| w == end) {
                return Some(self.buffered.drain(..at + end.len()).collect());
            }
            match self.conn.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffered.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn reply(&mut self, line: &str) {
        self.conn
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("an SMTP reply");
    }
}

/// Serves one SMTP transaction on `conn` (greeting first, as SMTP servers do), until
/// `QUIT` or the end of the stream.
fn serve_smtp(conn: impl Read + Write) -> Mail {
    let mut lines = Lines {
        conn,
        buffered: Vec::new(),
    };
    let mut mail = Mail::default();
    lines.reply("220 robust-tcp ESMTP");
    while let Some(line) = lines.until(b"\r\n") {
        let command = String::from_utf8_lossy(&line).trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        mail.commands.push(command);
        match verb.as_str() {
            "EHLO" | "HELO" | "MAIL" | "RCPT" => lines.reply("250 OK"),
            "DATA" => {
                lines.reply("354 End data with <CR><LF>.<CR><LF>");
                let Some(data) = lines.until(b"\r\n.\r\n") else {
                    break;
                };
                mail.message = data.strip_suffix(b".\r\n").unwrap_or(&data).to_vec();
                lines.reply("250 OK: queued");
            }
            "QUIT" => {
                lines.reply("221 Bye");
                break;
            }
            _ => lines.reply("500 Unrecognised command"),
        }
    }
    mail
}

#[test]
fn curl_sends_mail_to_a_server_that_accepts_plain_tcp_after_its_silence() {
    if !have("curl") {
        return;
    }
    run_bounded(LIMIT, || {
        let config = accept_plain().plain_wait(Duration::from_millis(200));
        let server = RServerSocket::bind_with("127.0.0.1:0", config).expect("bind");
        let addr = server.local_addr().expect("address");
        let served = thread::spawn(move || {
            let (sock, _) = server.accept().expect("accept");
            let status = sock.status();
            (serve_smtp(sock), status)
        });

        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20"])
            .arg(format!("smtp://{addr}/client.example.org"))
            .args(["--mail-from", "sender@example.org"])
            .args(["--mail-rcpt", "rcpt@example.org", "-T", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start curl");
        let mut stdin = child.stdin.take().expect("curl's stdin");
        let curl = Proc::from(child);
        stdin.write_all(MESSAGE.as_bytes()).expect("the message");
        drop(stdin);
        let out = curl.wait_output(Duration::from_secs(30));
        assert!(out.status.success(), "{out:?}");

        let (mail, status) = served.join().expect("the SMTP server");
        assert!(status.plain, "{status:?}");
        assert_eq!(
            mail.commands,
            [
                "EHLO client.example.org",
                "MAIL FROM:<sender@example.org>",
                "RCPT TO:<rcpt@example.org>",
                "DATA",
                "QUIT"
            ]
        );
        assert_eq!(String::from_utf8_lossy(&mail.message), MESSAGE);
    });
}
