//! BAR0 as the function's driver sees it: the register file decoded
//! (function-wide registers through [`crate::regs::Bar0`], statistics,
//! queue-pair areas), the queue-pair register rules (which writes a
//! queue pair takes, and what they do), the doorbell page and the VCT
//! entry with its walk to the BAT (docs/registers.md).

use super::*;

impl Function {
    /// The committed VCT entry (BAT address), 0 if none.
    pub fn vct(&self) -> u64 {
        self.bar0.vct()
    }

    /// A VCT entry from management that waits to be committed.
    pub fn pending_vct(&self) -> Option<u64> {
        self.pending_vct
    }

    /// VCT_STATUS: why the last entry was refused, 0 if it was not.
    pub fn vct_status(&self) -> u32 {
        self.bar0.read_reg(Reg::VctStatus)
    }

    /// Management gives the function a VCT entry (`vnicctl vct set`, a
    /// configuration file). It is committed at once if the guest can be
    /// read (memory mapped, Bus Master Enable set), else when it can: at
    /// -incoming or -loadvm QEMU maps guest memory before loading it, and
    /// only the guest's driver, running again, sets Bus Master Enable.
    pub fn set_vct(&mut self, address: u64) -> VctOutcome {
        if address == 0 {
            self.pending_vct = None;
            self.commit_vct(0);
            self.bar0.set_vct(0);
            return VctOutcome::Cleared;
        }
        self.pending_vct = Some(address);
        self.try_pending_vct().unwrap_or(VctOutcome::Pending)
    }

    /// Whether the card may read and write the guest's memory now.
    pub(super) fn may_dma(&self) -> bool {
        !self.dma.is_empty() && self.config.u16(hdr::COMMAND) & command::BUS_MASTER != 0
    }

    /// Commits management's pending VCT entry if the guest can be read;
    /// a successful walk tells the driver through IRQ_CAUSE.RESUMED.
    pub(super) fn try_pending_vct(&mut self) -> Option<VctOutcome> {
        let address = self.pending_vct.filter(|_| self.may_dma())?;
        self.pending_vct = None;
        self.bar0.set_vct(address);
        self.commit_vct(address);
        let status = self.vct_status();
        if status != 0 {
            return Some(VctOutcome::Refused(status));
        }
        let running = self
            .qps
            .iter()
            .filter(|qp| qp.tx.running() || qp.rx.running())
            .count();
        info!(
            "{}: VCT entry {address:#x} from management committed, {running} queue pairs resumed",
            self.name
        );
        self.notify(IrqCause::new().with_resumed(true));
        Some(VctOutcome::Committed)
    }

    /// A socket access inside the doorbell page (a client that does not
    /// map it, or a test): it reads and writes the page's memory.
    pub(super) fn page_access(&self, offset: u64, len: usize) -> bool {
        self.doorbell.has_bar_page() && doorbell::in_page(offset, len)
    }

    pub(super) fn page_read(&mut self, offset: u64, buf: &mut [u8]) {
        if !regs::dword_or_qword(offset, buf.len()) {
            self.bad_mmio("doorbell page: not an aligned dword or qword");
            buf.fill(0xff);
            return;
        }
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let rel = offset - doorbell::PAGE_OFFSET + 4 * i as u64;
            chunk.copy_from_slice(&self.doorbell.read_dword(rel).to_le_bytes());
        }
    }

    pub(super) fn page_write(&mut self, offset: u64, data: &[u8]) {
        let page = &self.doorbell;
        let ok = regs::dword_or_qword(offset, data.len())
            && data.chunks(4).enumerate().all(|(i, chunk)| {
                let rel = offset - doorbell::PAGE_OFFSET + 4 * i as u64;
                let v = u32::from_le_bytes(chunk.try_into().expect("dword chunks"));
                page.write_dword(rel, v)
            });
        if !ok {
            self.bad_mmio("doorbell page: bad write");
        }
    }

    /// Whether the doorbells go through a page (the driver enabled one): a
    /// doorbell register write is then a kick.
    pub(super) fn page_mode(&self) -> bool {
        self.doorbell.enabled()
    }

    /// Whether the page in use can still be reached; a guest page that
    /// cannot (unmapped since) is turned off, logged and flagged in
    /// DB_PAGE.REFUSED: doorbells are register writes from then on.
    pub(super) fn page_reachable(&mut self) -> bool {
        if self.doorbell.reachable(&self.dma) {
            return true;
        }
        if let Some(address) = self.doorbell.guest_page() {
            self.log(
                Cause::GuestError,
                format_args!(
                    "doorbell page {address:#x} no longer reachable: doorbells are register writes"
                ),
            );
            self.doorbell.lost();
        }
        false
    }

    /// A doorbell register (QP_TX_TAIL, QP_RX_TAIL, QP_IRQ) rang while the
    /// driver uses the page: the page holds the values (the register's is
    /// ignored, so a kick overtaken by a later store into the page cannot
    /// move a tail back); poll the slot from now on, then take what it has.
    pub(super) fn page_kick(&mut self, q: usize, now: std::time::Instant) {
        self.doorbell.watch(&self.dma, q, now);
        self.take_page(q);
    }

    /// Applies the doorbells in queue pair `q`'s slot as the register
    /// writes they stand for (same checks, same effects). Returns whether
    /// there were any.
    pub(super) fn take_page(&mut self, q: usize) -> bool {
        let change = self.doorbell.take(&self.dma, q);
        if q >= self.qps.len() {
            return false;
        }
        if let Some(v) = change.tx_tail {
            self.qp_write(q, QpReg::TxTail, v);
        }
        if let Some(v) = change.rx_tail {
            self.qp_write(q, QpReg::RxTail, v);
        }
        if change.rearm {
            self.qp_write(q, QpReg::Irq, QpIrq::new().with_rearm(true).into_bits());
        }
        change.any()
    }

    /// One poll of the doorbell page: every watched slot is taken; a slot
    /// quiet for the idle window is no longer watched (after one last look,
    /// see crate::doorbell). Returns whether any slot is still watched.
    pub fn poll_doorbells(&mut self, now: std::time::Instant) -> bool {
        if !self.page_mode() || !self.page_reachable() {
            return false;
        }
        let watched: Vec<usize> = self.doorbell.watched().collect();
        let mut found = false;
        for q in watched {
            let busy =
                self.take_page(q) || (self.doorbell.quiet(&self.dma, q, now) && self.take_page(q));
            if busy {
                self.doorbell.watch(&self.dma, q, now);
                found = true;
            }
        }
        if !found {
            if self.awaits_rearm() {
                self.doorbell.hurry();
            } else {
                self.doorbell.slow_down();
            }
        }
        self.doorbell.watched().next().is_some()
    }

    /// Whether a completion of a queue pair waits for the driver's rearm
    /// ([`crate::queue::Moderation::held`]).
    pub fn awaits_rearm(&self) -> bool {
        self.qps.iter().any(|qp| qp.irq.held())
    }

    /// Whether the card polls any of this function's doorbell slots.
    pub fn doorbells_watched(&self) -> bool {
        self.doorbell.enabled() && self.doorbell.watched().next().is_some()
    }

    /// The queue pair's tails as they are now (for a slot starting afresh).
    pub(super) fn tails(qps: &[QueuePair], q: usize) -> (u32, u32) {
        qps.get(q).map_or((0, 0), |qp| {
            (u32::from(qp.tx.tail()), u32::from(qp.rx.tail()))
        })
    }

    pub(super) fn qp_index(&self, qp: u16, offset: u64) -> Result<usize, RegError> {
        // Areas of queue pairs that are not enabled hold no registers.
        (usize::from(qp) < self.qps.len())
            .then_some(usize::from(qp))
            .ok_or(RegError::NoRegister(offset))
    }

    pub(super) fn bar0_dword(&self, offset: u64) -> Result<u32, RegError> {
        let target = regs::decode(offset).ok_or(RegError::NoRegister(offset))?;
        Ok(match target {
            Target::Reg(spec) if spec.reg == Reg::DbPage => self.doorbell.register().into_bits(),
            Target::Reg(spec) if spec.reg == Reg::Status => {
                StatusReg::from_bits(self.bar0.read_reg(Reg::Status))
                    .with_mem_unshared(self.dma.unshared())
                    .with_migrating(self.migrating())
                    .into_bits()
            }
            Target::Reg(spec) if spec.reg == Reg::LinkSpeed => self.link_speed(),
            Target::Reg(spec) => self.bar0.read_reg(spec.reg),
            Target::FnStat { stat, high } => dword_of(self.counters.get(stat), high),
            Target::Qp { qp, reg } => {
                let qp = &self.qps[self.qp_index(qp, offset)?];
                qp_register(qp, reg.reg)
            }
            Target::QpStat { qp, stat, high } => {
                let qp = &self.qps[self.qp_index(qp, offset)?];
                dword_of(qp_counter(qp, stat), high)
            }
        })
    }

    pub(super) fn bar0_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegError> {
        Bar0::check(offset, buf.len())?;
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let v = self.bar0_dword(offset + 4 * i as u64)?;
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    pub(super) fn bar0_write(&mut self, offset: u64, data: &[u8]) -> Result<(), RegError> {
        Bar0::check(offset, data.len())?;
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let v = u32::from_le_bytes(chunk.try_into().expect("dword chunks"));
            match regs::decode(off).ok_or(RegError::NoRegister(off))? {
                Target::Reg(spec) => {
                    let effect = self.bar0.write_reg(spec, v)?;
                    self.apply(effect);
                }
                Target::Qp { qp, reg } => {
                    let q = self.qp_index(qp, off)?;
                    if reg.access == Access::ReadOnly {
                        return Err(RegError::ReadOnly(off));
                    }
                    // Not a port of the switch: no MAC to change, no VLAN
                    // to join.
                    let addressing = matches!(
                        reg.reg,
                        QpReg::MacLo
                            | QpReg::MacHi
                            | QpReg::Vlan
                            | QpReg::FilterLo
                            | QpReg::FilterHi
                            | QpReg::RxMode
                    );
                    if self.spec.exception_qp == Some(qp) && addressing {
                        return Err(RegError::ExceptionQp(off));
                    }
                    // The PF owns the switch; a VF needs management's trust.
                    let may_set_mac = self.spec.kind == FunctionKind::Pf || self.policy.trust;
                    if matches!(reg.reg, QpReg::MacLo | QpReg::MacHi) && !may_set_mac {
                        if reg.reg == QpReg::MacHi {
                            let status = &mut self.qps[q].addr_status;
                            status.set_mac_taken(false);
                            status.set_mac_untrusted(true);
                        }
                        return Err(RegError::Untrusted(off));
                    }
                    let doorbell = matches!(reg.reg, QpReg::TxTail | QpReg::RxTail | QpReg::Irq);
                    if doorbell && self.page_mode() && self.page_reachable() {
                        self.page_kick(q, std::time::Instant::now());
                        continue;
                    }
                    self.qp_write(q, reg.reg, v);
                    if reg.reg == QpReg::Ctrl {
                        let tails = Self::tails(&self.qps, q);
                        self.doorbell.restart(&self.dma, q, tails);
                    }
                }
                Target::FnStat { .. } | Target::QpStat { .. } => {
                    return Err(RegError::ReadOnly(off));
                }
            }
        }
        Ok(())
    }

    /// A queue-pair register write. Whatever the register, a queue it puts
    /// into the error state (QP_CTRL loading a bad context, a doorbell
    /// beyond the ring, a receive doorbell whose waiting frames meet a bad
    /// buffer) counts in QUEUE_ERRORS: the queues' error states before and
    /// after tell. Not the contexts' error counters: a start loads them
    /// from guest memory, where they may hold anything (found by the
    /// `rings` fuzz target, docs/fuzzing.md).
    pub(super) fn qp_write(&mut self, q: usize, reg: QpReg, v: u32) {
        let before = queues_in_error(&self.qps[q]);
        self.qp_write_inner(q, reg, v);
        let failed = queues_in_error(&self.qps[q])
            .into_iter()
            .zip(before)
            .filter(|&(now, was)| now && !was)
            .count();
        self.counters.add(FnStat::QueueErrors, failed as u64);
    }

    pub(super) fn qp_write_inner(&mut self, q: usize, reg: QpReg, v: u32) {
        let (name, dma, bat) = (&self.name, &self.dma, self.bat.as_ref());
        let qp = &mut self.qps[q];
        let effect = match reg {
            QpReg::Ctrl => {
                qp.set_ctrl(name, dma, bat, QpCtrl::from_bits(v));
                QpEffect::None
            }
            QpReg::TxTail => qp.tx_doorbell(name, dma, v),
            QpReg::RxTail => {
                let now = std::time::Instant::now();
                fire_if(rx_doorbell(&mut self.counters, qp, name, dma, v, now))
            }
            QpReg::Irq => {
                // The receive doorbell a 1.1 driver's rearm carries goes
                // first: the rearm then covers what it delivered.
                let irq = QpIrq::from_bits(v);
                let now = std::time::Instant::now();
                let tail = u32::from(irq.tail());
                let drained =
                    irq.rx_tail() && rx_doorbell(&mut self.counters, qp, name, dma, tail, now);
                let rearmed = irq.rearm() && qp.irq.rearm(now);
                fire_if(drained || rearmed)
            }
            QpReg::Itr => {
                qp.irq.set_itr(crate::queue::QpItr::from_bits(v));
                QpEffect::None
            }
            QpReg::Vlan => QpEffect::Vlan(QpVlan::from_bits(v)),
            QpReg::MacLo => {
                qp.staged_mac_lo = Some(v);
                QpEffect::None
            }
            QpReg::FilterLo => {
                qp.filter_lo = v;
                QpEffect::None
            }
            QpReg::FilterHi => {
                qp.filter_hi = v;
                QpEffect::None
            }
            QpReg::RxMode => QpEffect::RxMode(QpRxMode::from_bits(v)),
            QpReg::MacHi => {
                qp.addr_status.set_mac_untrusted(false);
                qp.addr_status.set_mac_taken(false);
                let lo = qp.staged_mac_lo.take().unwrap_or_else(|| {
                    u32::from_le_bytes(qp.mac.0[..4].try_into().expect("4 bytes"))
                });
                let (l, h) = (lo.to_le_bytes(), v.to_le_bytes());
                let mac = Mac([l[0], l[1], l[2], l[3], h[0], h[1]]);
                self.switch_ops.push(SwitchOp::SetMac { qp: q as u16, mac });
                QpEffect::None
            }
            _ => QpEffect::None,
        };
        match effect {
            QpEffect::Interrupt => {
                self.raise_irq(MISC_VECTORS + q as u32);
            }
            QpEffect::Vlan(v) => {
                let (qp, vlan) = (q as u16, v.vid());
                self.switch_ops.push(if v.leave() {
                    SwitchOp::Leave { qp, vlan }
                } else {
                    SwitchOp::Join { qp, vlan }
                });
            }
            QpEffect::RxMode(mode) => self.take_rx_filter(q, mode),
            QpEffect::None | QpEffect::Kick => {}
        }
    }

    /// QP_RX_MODE was written: reads the filter list from guest memory
    /// and asks the card to apply it ([`SwitchOp::Filter`]). A list that
    /// is too long or cannot be read changes nothing and sets
    /// QP_ADDR_STATUS.LIST_ERROR.
    fn take_rx_filter(&mut self, q: usize, mode: QpRxMode) {
        let qp = &self.qps[q];
        let address = u64::from(qp.filter_hi) << 32 | u64::from(qp.filter_lo);
        let count = usize::from(mode.count());
        let mut list = vec![0u8; count * FILTER_ENTRY_BYTES];
        let read = if count > MAX_FILTER_ADDRS {
            Err(format!("{count} entries, more than {MAX_FILTER_ADDRS}"))
        } else if count == 0 {
            Ok(())
        } else {
            self.dma
                .read(address, &mut list)
                .map_err(|e| format!("list of {count} entries at {address:#x}: {e}"))
        };
        if let Err(why) = read {
            self.qps[q].addr_status.set_list_error(true);
            let what = format_args!("vNIC {q}: receive filter refused: {why}");
            self.log(Cause::GuestError, what);
            return;
        }
        let mut filter = RxFilter {
            promisc: mode.promisc(),
            allmulti: mode.allmulti(),
            ..RxFilter::default()
        };
        for entry in list.chunks(FILTER_ENTRY_BYTES) {
            let mac = Mac(entry[..6].try_into().expect("6 bytes"));
            if mac.is_multicast() {
                filter.multicast.push(mac);
            } else {
                filter.unicast.push(mac);
            }
        }
        let qp = &mut self.qps[q];
        qp.addr_status.set_list_error(false);
        qp.rx_filter = Some(filter);
        self.switch_ops.push(SwitchOp::Filter { qp: q as u16 });
    }

    /// VCT_HI was written: flush what the old BAT described, then find the
    /// new BAT and resume every queue its contexts say was running.
    pub(super) fn commit_vct(&mut self, address: u64) {
        for qp in &mut self.qps {
            qp.flush(&self.dma);
        }
        self.bat = None;
        self.bar0.set_vct_status(0);
        self.doorbell.forget_guest_page();
        if address == 0 {
            self.log(Cause::Setup, format_args!("VCT entry cleared"));
            return;
        }
        self.migration_arrived();
        match Bat::read(&self.dma, address) {
            Ok(bat) => {
                self.log(Cause::Setup, format_args!("VCT entry {address:#x}"));
                for qp in &mut self.qps {
                    qp.resume(&self.name, &self.dma, &bat);
                }
                self.bat = Some(bat);
                if bat.doorbells != 0 {
                    self.use_guest_page(bat.doorbells);
                }
            }
            Err(e) => {
                self.log(
                    Cause::GuestError,
                    format_args!("VCT entry {address:#x} refused: {e}"),
                );
                self.bar0.set_vct_status(e.vct_code());
            }
        }
        self.keep_quiesced();
    }

    /// The BAT names a doorbell page in guest memory: the slots are there
    /// from now on, if the card may write it (else DB_PAGE.REFUSED, a log
    /// line, and register doorbells).
    pub(super) fn use_guest_page(&mut self, address: u64) {
        let qps = &self.qps;
        match self
            .doorbell
            .use_guest_page(&self.dma, address, |q| Self::tails(qps, q))
        {
            Ok(()) => self.log(Cause::Setup, format_args!("doorbell page at {address:#x}")),
            Err(e) => self.log(
                Cause::GuestError,
                format_args!("{e}: doorbells are register writes"),
            ),
        };
    }

    pub(super) fn bad_mmio(&mut self, what: &str) {
        self.bar0.count_bad_access();
        self.stats.bad_mmio += 1;
        self.log(Cause::BadAccess, format_args!("bad MMIO access: {what}"));
    }

    pub(super) fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Reset => {
                self.log(Cause::Reset, format_args!("reset through CTRL.RESET"));
                self.reset();
            }
            Effect::RaiseIrq(vector) => {
                self.bar0.count_test_irq();
                self.raise_irq(vector);
            }
            Effect::VctCommit(address) => self.commit_vct(address),
            Effect::DbPage(on) => {
                let qps = &self.qps;
                let was = self.doorbell.enabled();
                self.doorbell.set_bar_enabled(on, |q| Self::tails(qps, q));
                if self.doorbell.enabled() != was {
                    let state = if was { "off" } else { "on" };
                    self.log(Cause::Setup, format_args!("doorbell page {state}"));
                }
            }
            Effect::Admin(cmd) => {
                if self.spec.kind == FunctionKind::Pf {
                    self.admin = Some(cmd);
                } else {
                    debug!("{}: admin command on a VF refused", self.name);
                    self.bar0.admin_done(libc::EPERM as u32, None);
                }
            }
        }
    }
}

/// A receive doorbell with `tail`, counting what it moved out of the packet
/// buffer. Returns whether to fire the queue pair's vector.
pub(super) fn rx_doorbell(
    counters: &mut FnCounters,
    qp: &mut QueuePair,
    name: &str,
    dma: &DmaSpace,
    tail: u32,
    now: std::time::Instant,
) -> bool {
    let d = qp.rx_doorbell(name, dma, tail, now);
    counters.add(FnStat::RxPackets, d.packets);
    counters.add(FnStat::RxBytes, d.bytes);
    counters.add(FnStat::RxDrops, d.drops);
    d.fire
}

/// Whether the send and receive queue of `qp` are in the error state.
pub(super) fn queues_in_error(qp: &QueuePair) -> [bool; 2] {
    let s = qp.status();
    [s.tx_error(), s.rx_error()]
}

pub(super) fn fire_if(fire: bool) -> QpEffect {
    if fire {
        QpEffect::Interrupt
    } else {
        QpEffect::None
    }
}

/// Value of a queue-pair register.
pub(super) fn qp_register(qp: &QueuePair, reg: QpReg) -> u32 {
    let mac = qp.mac.0;
    match reg {
        QpReg::MacLo => u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        QpReg::MacHi => u32::from_le_bytes([mac[4], mac[5], 0, 0]),
        QpReg::Ctrl => qp.ctrl().into_bits(),
        QpReg::Status => qp.status().into_bits(),
        QpReg::Itr => qp.irq.itr().into_bits(),
        QpReg::TxHead => qp.tx.head() as u32,
        QpReg::RxHead => qp.rx.head() as u32,
        QpReg::AddrStatus => qp.addr_status.into_bits(),
        QpReg::FilterLo => qp.filter_lo,
        QpReg::FilterHi => qp.filter_hi,
        QpReg::RxMode => qp.rx_filter.as_ref().map_or(0, |f| {
            let count = f.unicast.len() + f.multicast.len();
            QpRxMode::new()
                .with_promisc(f.promisc)
                .with_allmulti(f.allmulti)
                .with_count(count as u16)
                .into_bits()
        }),
        QpReg::TxTail | QpReg::RxTail | QpReg::Irq | QpReg::Vlan => 0,
    }
}
