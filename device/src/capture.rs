//! Packet capture: frames entering the switch, or those crossing the
//! uplink, written to a pcap file that tcpdump and tshark read
//! (docs/management.md, "Packet capture"; docs/vxlan.md).
//!
//! Writes go through a buffer and are flushed once per turn of the event
//! loop, so a capture costs a memcpy per frame on the data path and one
//! write(2) per turn; a reader sees every frame of a turn once it ends.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// Bytes of a frame kept in the file (all of a jumbo frame).
pub const SNAPLEN: u32 = 65535;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot create capture file {0}: {1}")]
    Create(PathBuf, io::Error),
    #[error("capture file {0}: {1}")]
    Write(PathBuf, String),
}

/// The pcap writer's output: a buffer the capture empties into the file at
/// the end of each turn (the writer owns its sink and cannot be asked to
/// flush it, so the capture keeps a second handle).
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which frames a capture records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every frame entering the switch: from send queues and from the
    /// uplink.
    All,
    /// Frames function (index) sends.
    Function(usize),
    /// Frames leaving and entering the uplink (outer frames for VxLAN).
    Uplink,
}

/// The name `capture-start` takes for [`Scope::Uplink`].
pub const UPLINK: &str = "uplink";

/// A running capture.
pub struct Capture {
    path: PathBuf,
    scope: Scope,
    writer: PcapWriter<Pending>,
    pending: Pending,
    file: File,
    frames: u64,
    /// Set after a write error; the capture then records nothing more.
    failed: bool,
}

impl Capture {
    /// Creates (truncates) `path` and writes the pcap header.
    pub fn start(path: &Path, scope: Scope) -> Result<Self, CaptureError> {
        let file = File::create(path).map_err(|e| CaptureError::Create(path.into(), e))?;
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            ..Default::default()
        };
        let pending = Pending::default();
        let writer = PcapWriter::with_header(pending.clone(), header)
            .map_err(|e| CaptureError::Write(path.into(), e.to_string()))?;
        let mut c = Capture {
            path: path.into(),
            scope,
            writer,
            pending,
            file,
            frames: 0,
            failed: false,
        };
        c.file
            .write_all(&c.pending.take())
            .map_err(|e| CaptureError::Write(path.into(), e.to_string()))?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Whether frames function `f` sends are captured.
    pub fn wants(&self, f: usize) -> bool {
        !self.failed && (self.scope == Scope::All || self.scope == Scope::Function(f))
    }

    /// Whether frames arriving from the uplink are captured.
    pub fn wants_uplink_rx(&self) -> bool {
        !self.failed && matches!(self.scope, Scope::All | Scope::Uplink)
    }

    /// Whether frames sent out of the uplink are captured (only by an
    /// uplink capture: the switch's capture has them as they entered).
    pub fn wants_uplink_tx(&self) -> bool {
        !self.failed && self.scope == Scope::Uplink
    }

    /// Records one frame, stamped with the wall clock.
    pub fn record(&mut self, frame: &[u8]) {
        if self.failed {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let kept = &frame[..frame.len().min(SNAPLEN as usize)];
        let packet = PcapPacket::new(ts, frame.len() as u32, kept);
        match self.writer.write_packet(&packet) {
            Ok(_) => self.frames += 1,
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// Pushes buffered frames to the file (end of an event-loop turn).
    pub fn flush(&mut self) {
        let bytes = self.pending.take();
        if !self.failed && !bytes.is_empty() {
            if let Err(e) = self.file.write_all(&bytes) {
                self.fail(&e.to_string());
            }
        }
    }

    fn fail(&mut self, why: &str) {
        log::error!(
            "capture {}: {why}; capture stopped recording",
            self.path.display()
        );
        self.failed = true;
    }

    /// Flushes and closes the file; returns the number of frames recorded.
    pub fn stop(mut self) -> u64 {
        self.flush();
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn frames_read_back_with_a_pcap_reader() {
        let dir = std::env::temp_dir().join(format!("vnic-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let mut c = Capture::start(&path, Scope::Function(2)).unwrap();
        assert!(c.wants(2) && !c.wants(1));
        assert!(!c.wants_uplink_rx() && !c.wants_uplink_tx());
        let frame: Vec<u8> = (0..60u8).collect();
        c.record(&frame);
        c.record(&frame[..14]);
        c.flush();
        // Readable while the capture runs.
        let mut r = PcapReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!(&p.data[..], &frame[..]);
        assert_eq!(p.orig_len, 60);
        assert_eq!(c.stop(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let e = Capture::start(Path::new("/nonexistent/dir/x.pcap"), Scope::All);
        assert!(matches!(e, Err(CaptureError::Create(..))));
    }
}
