//! `protocol`: the fuzzer's bytes as one client's vfio-user byte stream to
//! one function of a real card, through [`vnic::server::Client`]: framing
//! and header validation, every command's body parsing, the dispatcher,
//! DMA_MAP with and without file descriptors, SET_IRQS with eventfds,
//! region reads and writes into the card, PF admin commands, and the data
//! path the loop runs after each batch of messages.
//!
//! Input: one byte choosing the function, then chunks of
//! `tag: u8, len: u16, len bytes`. Each chunk is written to the socket as
//! one `sendmsg`; the tag's [`ATTACH_MEMORY`], [`ATTACH_EVENTFD`] and
//! [`ATTACH_PIPE`] bits attach descriptors to its first byte.
//!
//! Invariants: every reply is a well-formed vfio-user reply; the other
//! functions' config spaces do not change; once the client is gone, the
//! function is back in its reset state with no DMA mappings.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Once;
use std::time::Instant;

use vfio_bindings::bindings::vfio::{
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use vnic::card::{Card, CardConfig};
use vnic::function::{REGION_BAR0, REGION_CONFIG, REGION_MSIX};
use vnic::protocol::{
    Command, HeaderFlags, MessageHeader, MsgType, VersionCaps, HEADER_SIZE, MAX_MSG_SIZE,
};
use vnic::regs::{Reg, QP_AREA_BASE};
use vnic::server::{Client, ClientState};
use vnic::test_utils::{FakeDriver, StateTables};

use crate::input::{Input, Output};
use crate::Seed;

/// Chunk tag bit: attach the guest memory's memfd.
pub const ATTACH_MEMORY: u8 = 1;
/// Chunk tag bit: attach an eventfd (what SET_IRQS takes).
pub const ATTACH_EVENTFD: u8 = 2;
/// Chunk tag bit: attach a pipe, a descriptor that is neither.
pub const ATTACH_PIPE: u8 = 4;

/// Where the seeds map guest memory (and where its BAT is), and how much
/// there is: small, since every run makes its own.
pub const GUEST_BASE: u64 = 0x10_0000;
pub const GUEST_SIZE: u64 = 1 << 20;

/// A card small enough to build for every input, with a PF and two VFs.
pub fn small_card() -> Card {
    Card::new(CardConfig {
        vfs: 2,
        queue_pairs: QUEUE_PAIRS.into(),
        vnics_per_vf: 2,
        card_id: 0,
        vxlan_capacity: 64,
        ..CardConfig::default()
    })
    .expect("a valid configuration")
}

/// Makes writes to a client that hung up fail with EPIPE instead of
/// killing the fuzzer (libFuzzer's `main` does not ignore SIGPIPE as
/// Rust's does).
fn ignore_sigpipe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no
        // handler code and touches no memory of ours.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
}

/// The descriptors a chunk may carry, made afresh for every input so that
/// no run sees another's guest memory. The guest memory holds what a
/// driver lays out before it writes the VCT (at [`GUEST_BASE`]): the BAT,
/// CLATs and contexts for every queue pair, and their rings.
struct Descriptors {
    memory: File,
    eventfd: EventFd,
    pipe: (File, File),
}

/// Queue pairs the guest memory has contexts and rings for.
const QUEUE_PAIRS: u16 = 4;
/// Entries of each ring there.
const RING_SIZE: u16 = 64;
/// Context size and CLAT levels of the tables there.
const CONTEXT_SIZE: u32 = 64;
const CLAT_LEVELS: u32 = 1;

fn guest_memory() -> File {
    let mut drv = FakeDriver::with_memory(GUEST_BASE, GUEST_SIZE);
    let tables = StateTables::build(&mut drv, CLAT_LEVELS, CONTEXT_SIZE, QUEUE_PAIRS.into());
    for q in 0..QUEUE_PAIRS {
        let (tx, rx) = (drv.ring(RING_SIZE), drv.ring(RING_SIZE));
        tables.set_rings(&drv, q, (tx, RING_SIZE), (rx, RING_SIZE));
    }
    drv.memory().2
}

impl Descriptors {
    fn new() -> Self {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2");
        // SAFETY: pipe2 succeeded, so both are open and only ours.
        let pipe = unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        Descriptors {
            memory: guest_memory(),
            eventfd: EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"),
            pipe,
        }
    }

    fn for_tag(&self, tag: u8) -> Vec<RawFd> {
        let mut fds = Vec::new();
        if tag & ATTACH_MEMORY != 0 {
            fds.push(self.memory.as_raw_fd());
        }
        if tag & ATTACH_EVENTFD != 0 {
            fds.push(self.eventfd.as_raw_fd());
        }
        if tag & ATTACH_PIPE != 0 {
            fds.push(self.pipe.0.as_raw_fd());
        }
        fds
    }
}

/// Checks the replies coming back, as a client would read them.
#[derive(Default)]
struct Replies {
    pending: Vec<u8>,
    /// A reply came: the stream is vfio-user from here on.
    replied: bool,
    /// The card took the client's first bytes for JSON and answered with
    /// one JSON line (not the control socket) before hanging up.
    json: bool,
}

impl Replies {
    fn take(&mut self, bytes: &[u8]) {
        if self.json {
            return;
        }
        self.pending.extend_from_slice(bytes);
        if !self.replied && self.pending.first() == Some(&b'{') {
            self.json = true;
            return;
        }
        while self.pending.len() >= HEADER_SIZE {
            self.replied = true;
            let raw: [u8; HEADER_SIZE] = self.pending[..HEADER_SIZE].try_into().unwrap();
            let h = MessageHeader::decode(&raw);
            assert_eq!(h.flags.msg_type(), MsgType::Reply as u8, "{h:?}");
            let size = h.size as usize;
            assert!(
                (HEADER_SIZE..=MAX_MSG_SIZE as usize).contains(&size),
                "reply size {size}"
            );
            assert!(h.flags.error() || h.error == 0, "error without the flag");
            if self.pending.len() < size {
                return;
            }
            self.pending.drain(..size);
        }
    }
}

/// One client session on function `index`.
struct Session {
    card: Card,
    index: usize,
    client: Client,
    peer: UnixStream,
    replies: Replies,
    gone: bool,
}

impl Session {
    /// Serves what the client sent, reads the replies, then runs the data
    /// path as the event loop does after a client's turn. False once the
    /// client is gone.
    fn turn(&mut self) -> bool {
        loop {
            let state = self.client.serve(&mut self.card, self.index);
            self.card.after_io(self.index);
            self.drain();
            match state {
                ClientState::Busy => continue,
                ClientState::Open => break,
                ClientState::Gone => {
                    self.gone = true;
                    break;
                }
            }
        }
        self.card.run_pending();
        self.card.run_timers(Instant::now());
        !self.gone
    }

    fn drain(&mut self) {
        let mut buf = [0; 64 * 1024];
        loop {
            match (&self.peer).read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.replies.take(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Writes `chunk`, `fds` with its first byte, serving whenever the
    /// socket is full.
    fn send(&mut self, mut chunk: &[u8], mut fds: &[RawFd]) {
        while !chunk.is_empty() && !self.gone {
            match self.peer.send_with_fds(&[chunk], fds) {
                Ok(n) => {
                    chunk = &chunk[n..];
                    fds = &[];
                }
                Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => {
                    self.turn();
                }
                Err(_) => {
                    self.turn();
                    return;
                }
            }
        }
    }
}

/// The `protocol` target.
pub fn run(data: &[u8]) {
    ignore_sigpipe();
    let card = small_card();
    let before: Vec<Vec<u8>> = card
        .functions()
        .iter()
        .map(|f| f.config().bytes().to_vec())
        .collect();
    let mut input = Input::new(data);
    let index = usize::from(input.u8()) % card.functions().len();
    let (ours, peer) = UnixStream::pair().expect("socketpair");
    peer.set_nonblocking(true).expect("non-blocking peer");
    let client = Client::new(ours).expect("client");
    let descriptors = Descriptors::new();
    let mut s = Session {
        card,
        index,
        client,
        peer,
        replies: Replies::default(),
        gone: false,
    };
    s.card.connect(index);
    while !input.is_empty() && !s.gone {
        let tag = input.u8();
        let len = input.u16();
        let chunk = input.bytes(usize::from(len));
        s.send(chunk, &descriptors.for_tag(tag));
        s.turn();
    }
    let _ = s.peer.shutdown(Shutdown::Write);
    while s.turn() {}
    s.card.disconnect(index);
    check_after(&s.card, index, &before);
}

/// The invariants once the client is gone.
fn check_after(card: &Card, index: usize, before: &[Vec<u8>]) {
    for (i, f) in card.functions().iter().enumerate() {
        assert_eq!(
            f.config().bytes(),
            &before[i][..],
            "{}'s config space after a client of {} left",
            f.name(),
            card.functions()[index].name()
        );
    }
    let f = &card.functions()[index];
    assert!(
        f.dma().is_empty(),
        "{}: DMA maps outlive the client",
        f.name()
    );
}

/// Encodes one command message.
pub fn message(id: u16, cmd: Command, no_reply: bool, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    MessageHeader {
        id,
        command: cmd as u16,
        size: (HEADER_SIZE + body.len()) as u32,
        flags: HeaderFlags::new()
            .with_msg_type(MsgType::Command as u8)
            .with_no_reply(no_reply),
        error: 0,
    }
    .encode(&mut out);
    out.extend_from_slice(body);
    out
}

/// A VERSION message with the capabilities QEMU sends.
fn version() -> Vec<u8> {
    let mut body = Output::default();
    body.u16(0).u16(0);
    let mut caps = serde_json::to_vec(&VersionCaps::server()).expect("caps serialise");
    caps.push(0);
    body.bytes(&caps);
    message(0, Command::Version, false, &body.0)
}

fn dma_map(address: u64, size: u64, flags: u32) -> Vec<u8> {
    let mut b = Output::default();
    b.u32(32).u32(flags).u64(0).u64(address).u64(size);
    message(1, Command::DmaMap, false, &b.0)
}

fn region_read(region: u32, offset: u64, count: u32) -> Vec<u8> {
    let mut b = Output::default();
    b.u64(offset).u32(region).u32(count);
    message(2, Command::RegionRead, false, &b.0)
}

fn region_write(region: u32, offset: u64, data: &[u8], posted: bool) -> Vec<u8> {
    let mut b = Output::default();
    b.u64(offset).u32(region).u32(data.len() as u32).bytes(data);
    message(3, Command::RegionWrite, posted, &b.0)
}

/// Messages a QEMU-like client sends while attaching: VERSION, device,
/// region and IRQ info, a DMA_MAP of guest RAM with its memfd, eventfds for
/// MSI-X, config-space and BAR reads and writes.
fn attach_messages() -> Vec<(u8, Vec<u8>)> {
    let mut m = vec![(0, version())];
    let mut b = Output::default();
    b.u32(16);
    m.push((0, message(4, Command::DeviceGetInfo, false, &b.0)));
    for region in 0..VFIO_PCI_NUM_REGIONS {
        let mut b = Output::default();
        b.u32(32).u32(0).u32(region).u32(0).u64(0).u64(0);
        m.push((0, message(5, Command::DeviceGetRegionInfo, false, &b.0)));
    }
    for irq in 0..VFIO_PCI_NUM_IRQS {
        let mut b = Output::default();
        b.u32(16).u32(0).u32(irq).u32(0);
        m.push((0, message(6, Command::DeviceGetIrqInfo, false, &b.0)));
    }
    let rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    m.push((ATTACH_MEMORY, dma_map(GUEST_BASE, GUEST_SIZE, rw)));
    let mut b = Output::default();
    b.u32(24)
        .u32(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD)
        .u32(VFIO_PCI_MSIX_IRQ_INDEX)
        .u32(0)
        .u32(1);
    m.push((
        ATTACH_EVENTFD,
        message(7, Command::DeviceSetIrqs, false, &b.0),
    ));
    m.push((0, region_read(REGION_CONFIG, 0, 256)));
    m.push((0, region_write(REGION_CONFIG, 4, &[0x06, 0x00], false)));
    m.push((0, region_read(REGION_BAR0, Reg::Id as u64, 4)));
    m
}

/// A driver starting on BAR0 with posted writes: a VCT in guest memory,
/// queue pair 0 enabled, doorbells, then a multi-write, a reset and an
/// unmap.
fn driver_messages() -> Vec<(u8, Vec<u8>)> {
    let vct = GUEST_BASE as u32;
    let qp0 = QP_AREA_BASE;
    let mut m = vec![
        (
            0,
            region_write(REGION_BAR0, Reg::VctLo as u64, &vct.to_le_bytes(), true),
        ),
        (
            0,
            region_write(REGION_BAR0, Reg::VctHi as u64, &[0; 4], true),
        ),
        (0, region_read(REGION_BAR0, Reg::VctStatus as u64, 4)),
        (
            0,
            region_write(REGION_BAR0, qp0 + 0x08, &3u32.to_le_bytes(), true),
        ),
        (
            0,
            region_write(REGION_BAR0, qp0 + 0x14, &8u32.to_le_bytes(), true),
        ),
        (
            0,
            region_write(REGION_BAR0, qp0 + 0x10, &1u32.to_le_bytes(), true),
        ),
        (0, region_read(REGION_MSIX, 0x2000, 8)),
    ];
    let mut b = Output::default();
    b.u64(2);
    for (off, v) in [
        (Reg::Scratch as u64, 0x5a5a_5a5au32),
        (Reg::IrqTest as u64, 1),
    ] {
        b.u64(off).u32(REGION_BAR0).u32(4).u32(v).u32(0);
    }
    m.push((0, message(8, Command::RegionWriteMulti, true, &b.0)));
    m.push((0, message(9, Command::DeviceReset, false, &[])));
    let mut b = Output::default();
    b.u32(24).u32(0).u64(GUEST_BASE).u64(GUEST_SIZE);
    m.push((0, message(10, Command::DmaUnmap, false, &b.0)));
    m
}

fn encode(function: u8, messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Output::default();
    out.u8(function);
    for (tag, msg) in messages {
        out.u8(*tag).chunk(msg);
    }
    out.0
}

/// Seeds: a QEMU-like attach and a driver's start on the PF and on a VF, a
/// ROM map without a descriptor, a header cut in two, a bad header.
pub fn seeds() -> Vec<Seed> {
    let mut full = attach_messages();
    full.extend(driver_messages());
    let rom = VFIO_DMA_MAP_FLAG_READ;
    let split = version();
    vec![
        ("version", encode(1, &[(0, version())])),
        ("attach-pf", encode(0, &attach_messages())),
        ("attach-vf", encode(1, &attach_messages())),
        ("driver-pf", encode(0, &full)),
        ("driver-vf", encode(2, &full)),
        (
            "rom-map",
            encode(
                1,
                &[(0, version()), (0, dma_map(0xfffc_0000, 0x4_0000, rom))],
            ),
        ),
        (
            "split-header",
            encode(1, &[(0, split[..7].to_vec()), (0, split[7..].to_vec())]),
        ),
        (
            "bad-header",
            encode(
                1,
                &[(
                    0,
                    message(0, Command::Version, false, &[0; 4])[..12].to_vec(),
                )],
            ),
        ),
    ]
}
