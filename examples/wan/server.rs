//! The server: a child process of this example inside the server's namespace (one
//! robust-tcp engine per process, and its sockets live in one namespace). It listens with
//! both implementations for each workload on ports of the system's choice, prints them on
//! a `ready` line, serves until its stdin closes, and answers each connection in a thread.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::thread;

use robust_tcp_testkit::child::exit_on_stdin_eof;
use robust_tcp_testkit::paired::{crr_serve, receive_checked, send_numbered, Net, Robust, Tcp};

use super::path::enter_namespace;
use super::{Workload, WRITE};

/// Runs the server: `serve NAMESPACE ADDRESS`.
pub(super) fn main(args: &[String]) -> io::Result<()> {
    let [ns, ip] = args else {
        return Err(io::Error::other("usage: wan serve NAMESPACE ADDRESS"));
    };
    let ip: IpAddr = ip.parse().map_err(io::Error::other)?;
    // Before any socket or thread: the engine thread starts from this one later and
    // inherits its namespace.
    enter_namespace(ns)?;
    let _watcher = exit_on_stdin_eof();
    let mut ports = listen::<Tcp>(ip)?;
    ports.extend(listen::<Robust>(ip)?);
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    println!("ready {}", ports.join(" "));
    io::stdout().flush()?;
    // The listeners' threads serve until the stdin watcher ends the process.
    loop {
        thread::park();
    }
}

/// A listener of `N` per workload (in [`Workload::ALL`]'s order), each with its accepting
/// thread; returns their ports.
fn listen<N: Net>(ip: IpAddr) -> io::Result<Vec<u16>> {
    let mut ports = Vec::new();
    for workload in Workload::ALL {
        let (listener, addr) = N::listen(SocketAddr::new(ip, 0), workload == Workload::Echo)?;
        ports.push(addr.port());
        thread::Builder::new()
            .name(format!("{}-{workload:?}", N::NAME))
            .spawn(move || loop {
                match N::accept(&listener) {
                    Ok(stream) => {
                        thread::spawn(move || {
                            if let Err(e) = serve::<N>(workload, stream) {
                                eprintln!("wan server: {} {workload:?}: {e}", N::NAME);
                            }
                        });
                    }
                    Err(e) => eprintln!("wan server: {} accept: {e}", N::NAME),
                }
            })?;
    }
    Ok(ports)
}

/// One connection of `workload`.
fn serve<N: Net>(workload: Workload, mut stream: N::Stream) -> io::Result<()> {
    match workload {
        // Reads the client's stream to its end, then tells it how much arrived.
        Workload::Sink => {
            let received = receive_checked(&mut stream, WRITE, |_| {})?;
            stream.write_all(&received.to_le_bytes())
        }
        // Sends as many writes as the client asks for, then ends the stream.
        Workload::Source => {
            let mut writes = [0; 8];
            stream.read_exact(&mut writes)?;
            send_numbered(&mut stream, WRITE, u64::from_le_bytes(writes), |_| {})?;
            N::shutdown_write(&stream)
        }
        Workload::Echo => {
            let mut buf = vec![0; 64 * 1024];
            loop {
                match stream.read(&mut buf)? {
                    0 => return Ok(()),
                    n => stream.write_all(&buf[..n])?,
                }
            }
        }
        Workload::Crr => crr_serve(stream),
    }
}
