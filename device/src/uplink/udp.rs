//! The UDP uplink: one datagram is one Ethernet frame, sent to REMOTE from
//! a socket bound to LOCAL. Datagrams from anyone but REMOTE are not ours.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::Received;

/// Socket buffers asked for (the kernel caps them at its rmem/wmem_max):
/// room for a burst of a full send ring of jumbo frames.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

pub struct Udp {
    socket: UdpSocket,
    remote: SocketAddr,
}

impl Udp {
    pub fn open(local: SocketAddr, remote: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: setsockopt reads one c_int from a valid pointer for
            // the length given, on a socket this function owns.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&SOCKET_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                log::warn!(
                    "uplink udp:{local}: socket buffer size: {}",
                    io::Error::last_os_error()
                );
            }
        }
        Ok(Udp { socket, remote })
    }

    /// The socket an earlier worker bound (docs/restart.md).
    pub fn adopt(socket: UdpSocket, remote: SocketAddr) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Udp { socket, remote })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.socket.send_to(frame, self.remote).map(|_| ())
    }

    pub(super) fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            return match self.socket.recv_from(buf) {
                Ok((n, from)) if from == self.remote => Ok(Received::Frame(n)),
                Ok(_) => Ok(Received::Stranger),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error queued for an earlier send (port
                // unreachable while the other side restarts): not a frame,
                // and not the end of the uplink.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Received::Transient),
                Err(e) => Err(e),
            };
        }
    }
}
