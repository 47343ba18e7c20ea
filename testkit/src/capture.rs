//! A packet capture on the loopback interface (Linux, root): what an attacker with a
//! recording of the traffic holds. An `AF_PACKET` socket sees every IPv4 packet on `lo`;
//! a thread keeps the UDP datagrams and TCP segments that carry a payload.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// How long the capture thread waits for a packet before it looks at its stop flag.
const POLL_MICROS: libc::suseconds_t = 20_000;
/// The packet socket's receive buffer: room for a burst of a few hundred 64 KiB loopback
/// segments while the capture thread is descheduled.
const CAPTURE_BUFFER: libc::c_int = 64 << 20;

/// The transport a captured payload travelled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// A UDP datagram.
    Udp,
    /// A TCP segment with data.
    Tcp,
}

/// One captured payload.
#[derive(Clone, Debug)]
pub struct Packet {
    /// UDP or TCP.
    pub proto: Proto,
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiver.
    pub dst: SocketAddrV4,
    /// The transport payload.
    pub payload: Vec<u8>,
}

/// A running capture; dropping it stops the thread and closes the socket.
pub struct Capture {
    packets: Arc<Mutex<Vec<Packet>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on `lo`.
    ///
    /// # Errors
    ///
    /// If the packet socket cannot be opened (not root, say).
    pub fn start() -> io::Result<Capture> {
        let socket = PacketSocket::open_loopback()?;
        let packets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (packets, stop) = (Arc::clone(&packets), Arc::clone(&stop));
            thread::Builder::new()
                .name("capture".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::SeqCst) {
                        if let Some(packet) = socket.next(&mut buf) {
                            packets.lock().unwrap().push(packet);
                        }
                    }
                })?
        };
        Ok(Capture {
            packets,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything captured so far, in order.
    pub fn packets(&self) -> Vec<Packet> {
        self.packets.lock().unwrap().clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An `AF_PACKET` socket bound to `lo`, receiving IPv4 packets.
struct PacketSocket(std::os::fd::OwnedFd);

impl PacketSocket {
    fn open_loopback() -> io::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let protocol = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain system calls on a descriptor we own; every pointer is to a local
        // of the size passed with it.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(protocol));
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let socket = PacketSocket(std::os::fd::OwnedFd::from_raw_fd(fd));
            let ifindex = libc::if_nametoindex(c"lo".as_ptr());
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = protocol;
            addr.sll_ifindex = ifindex as i32;
            let bound = libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            if bound < 0 {
                return Err(io::Error::last_os_error());
            }
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: POLL_MICROS,
            };
            set_socket_option(fd, libc::SO_RCVTIMEO, &timeout)?;
            // The default receive buffer (about 200 KiB) overflows while a test streams
            // through a proxy on `lo` (every segment is seen twice, out and in), and a
            // dropped packet could be the one frame a test looks for (an ANSWER): a
            // buffer past the system's limit, which root may set.
            set_socket_option(fd, libc::SO_RCVBUFFORCE, &CAPTURE_BUFFER)?;
            Ok(socket)
        }
    }

    /// The next UDP or TCP payload, if one arrives before the poll interval ends.
    fn next(&self, buf: &mut [u8]) -> Option<Packet> {
        use std::os::fd::AsRawFd;
        // SAFETY: `buf` and `from` are locals of the lengths passed.
        let (n, from) = unsafe {
            let mut from: libc::sockaddr_ll = mem::zeroed();
            let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            let n = libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            );
            (n, from)
        };
        // On loopback each packet is seen going out and coming in: keep one.
        if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
            return None;
        }
        parse_ipv4(buf.get(..n as usize)?)
    }
}

/// Sets the `SOL_SOCKET` option `name` of `fd` to `value`.
///
/// # Safety
///
/// `fd` is an open socket and `T` the type the option takes.
unsafe fn set_socket_option<T>(fd: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a `T` of the size passed, as the caller promises the
    // option takes.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The transport payload of an IPv4 packet, if it is UDP, or TCP with data.
fn parse_ipv4(ip: &[u8]) -> Option<Packet> {
    let header_len = usize::from(*ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let ip = ip.get(..total)?;
    let addr = |at: usize| {
        Some(Ipv4Addr::new(
            *ip.get(at)?,
            ip[at + 1],
            ip[at + 2],
            ip[at + 3],
        ))
    };
    let (src_ip, dst_ip) = (addr(12)?, addr(16)?);
    let transport = ip.get(header_len..)?;
    let port = |at: usize| {
        Some(u16::from_be_bytes([
            *transport.get(at)?,
            *transport.get(at + 1)?,
        ]))
    };
    let (proto, payload_at) = match ip.get(9)? {
        17 => (Proto::Udp, 8),
        6 => (Proto::Tcp, usize::from(*transport.get(12)? >> 4) * 4),
        _ => return None,
    };
    let payload = transport.get(payload_at..)?;
    if payload.is_empty() {
        return None;
    }
    Some(Packet {
        proto,
        src: SocketAddrV4::new(src_ip, port(0)?),
        dst: SocketAddrV4::new(dst_ip, port(2)?),
        payload: payload.to_vec(),
    })
}
