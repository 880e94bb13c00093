//! The function's interrupts: MSI-X vectors delivered through the
//! eventfds a client registers with SET_IRQS, masking and pending bits,
//! interrupts an injected fault delays, and the misc vector's causes.

use super::*;

impl Function {
    /// Sets IRQ_CAUSE bits and fires the misc vector.
    pub fn notify(&mut self, cause: IrqCause) {
        self.bar0.raise_cause(cause);
        self.raise_irq(0);
    }

    pub(super) fn deliver_pending(&mut self) {
        let (enabled, fmask) = self.msix_control();
        let n = self.msix.deliver_unmasked_pending(enabled, fmask);
        self.stats.irqs_sent += n as u64;
    }

    /// Raises MSI-X `vector`, honouring injected faults (a dropped or
    /// delayed message, a removed function), enable and masks. A queue
    /// pair's vector waits while a context differs from guest memory: a
    /// driver that takes completions from the contexts' heads
    /// (HEAD_WB) must find them written when its interrupt comes
    /// (`sync_contexts` sends it).
    pub fn raise_irq(&mut self, vector: u32) -> Delivery {
        if vector >= MISC_VECTORS && self.qps.iter().any(QueuePair::dirty) {
            if !self.deferred_irqs.contains(&vector) {
                self.deferred_irqs.push(vector);
            }
            return Delivery::Pending;
        }
        if self.hold_irq_for_relay(vector) {
            return Delivery::Pending;
        }
        self.send_irq_now(vector)
    }

    /// Raises `vector` now, honouring injected faults: an interrupt
    /// [`Function::raise_irq`] held, once what it announces is written.
    pub(super) fn send_irq_now(&mut self, vector: u32) -> Delivery {
        match self
            .faults
            .irq(&self.name, vector, std::time::Instant::now())
        {
            IrqFault::Send => self.send_irq(vector),
            IrqFault::Drop => Delivery::Dropped,
            IrqFault::Held => Delivery::Pending,
        }
    }

    /// Sends the queue pairs' interrupts that waited for their contexts.
    pub(super) fn send_deferred_irqs(&mut self) {
        for vector in std::mem::take(&mut self.deferred_irqs) {
            self.raise_irq(vector);
        }
    }

    /// Sends the interrupts a `delay-irqs` fault held whose time has come.
    pub fn send_delayed_irqs(&mut self, now: std::time::Instant) {
        for vector in self.faults.due_irqs(now) {
            if !self.faults.removed() {
                self.send_irq(vector);
            }
        }
    }

    /// Sends MSI-X `vector`, honouring enable and masks.
    pub(super) fn send_irq(&mut self, vector: u32) -> Delivery {
        let (enabled, fmask) = self.msix_control();
        let d = match self.msix.trigger(vector, enabled, fmask) {
            Ok(d) => d,
            Err(e) => {
                self.bad_mmio(&e.to_string());
                return Delivery::Dropped;
            }
        };
        match d {
            Delivery::Sent => self.stats.irqs_sent += 1,
            Delivery::Pending => self.stats.irqs_pending += 1,
            Delivery::Dropped => self.stats.irqs_dropped += 1,
        }
        debug!("{}: vector {vector}: {d:?}", self.name);
        d
    }

    /// SET_IRQS, with the vfio semantics: exactly one action (mask, unmask,
    /// trigger) and one data type (none, bool array, eventfds).
    pub fn set_irqs(
        &mut self,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
        fds: Vec<File>,
    ) -> Result<(), FnError> {
        let action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let dtype = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        if flags & !(VFIO_IRQ_SET_ACTION_TYPE_MASK | VFIO_IRQ_SET_DATA_TYPE_MASK) != 0 {
            return Err(FnError::SetIrqs("unknown flags"));
        }
        if action.count_ones() != 1 || dtype.count_ones() != 1 {
            return Err(FnError::SetIrqs(
                "need exactly one action and one data type",
            ));
        }
        let max = self.irq_count(index)?;
        if dtype != VFIO_IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(FnError::SetIrqs("file descriptors without DATA_EVENTFD"));
        }
        // DATA_NONE + TRIGGER with count 0 disables the whole index.
        if count == 0 {
            if action == VFIO_IRQ_SET_ACTION_TRIGGER && dtype == VFIO_IRQ_SET_DATA_NONE {
                self.disable_irq_index(index);
                return Ok(());
            }
            return Err(FnError::SetIrqs(
                "count 0 is only valid to disable an index",
            ));
        }
        if start.checked_add(count).is_none_or(|end| end > max) {
            return Err(FnError::IrqRange {
                index,
                start,
                count,
                max,
            });
        }
        let selected: Vec<bool> = match dtype {
            VFIO_IRQ_SET_DATA_BOOL => {
                let b = data
                    .get(..count as usize)
                    .ok_or(FnError::SetIrqs("short bool array"))?;
                b.iter().map(|&x| x != 0).collect()
            }
            _ => vec![true; count as usize],
        };
        match (action, dtype) {
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD) => {
                self.set_eventfds(index, start, count, fds)
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, _) => {
                self.trigger_irqs(index, start, &selected);
                Ok(())
            }
            (_, VFIO_IRQ_SET_DATA_EVENTFD) => Err(FnError::SetIrqs("mask/unmask take no eventfd")),
            (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK, _)
                if index == VFIO_PCI_MSIX_IRQ_INDEX =>
            {
                let mask = action == VFIO_IRQ_SET_ACTION_MASK;
                for (i, _) in selected.iter().enumerate().filter(|(_, s)| **s) {
                    self.msix
                        .set_client_mask(start + i as u32, &[mask])
                        .map_err(|_| FnError::SetIrqs("vector out of range"))?;
                }
                if !mask {
                    self.deliver_pending();
                }
                Ok(())
            }
            _ => Err(FnError::SetIrqs("index is not maskable")),
        }
    }

    pub(super) fn disable_irq_index(&mut self, index: u32) {
        self.fd_generation += 1;
        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => self.msix.clear_eventfds(),
            VFIO_PCI_ERR_IRQ_INDEX => self.err_fd = None,
            VFIO_PCI_REQ_IRQ_INDEX => self.req_fd = None,
            _ => {}
        }
    }

    pub(super) fn set_eventfds(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), FnError> {
        if !fds.is_empty() && fds.len() != count as usize {
            return Err(FnError::SetIrqs("number of eventfds differs from count"));
        }
        self.fd_generation += 1;
        let mut fds: Vec<Option<EventFd>> = if fds.is_empty() {
            // QEMU sends no descriptors to de-assign a range (all -1).
            (0..count).map(|_| None).collect()
        } else {
            fds.into_iter()
                .map(into_eventfd)
                .collect::<Result<_, _>>()?
        };
        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => {
                for (i, fd) in fds.drain(..).enumerate() {
                    self.msix
                        .set_eventfd(start + i as u32, fd)
                        .map_err(|_| FnError::SetIrqs("vector out of range"))?;
                }
                self.deliver_pending();
            }
            VFIO_PCI_ERR_IRQ_INDEX => self.err_fd = fds.pop().flatten(),
            VFIO_PCI_REQ_IRQ_INDEX => self.req_fd = fds.pop().flatten(),
            _ => return Err(FnError::SetIrqs("index has no interrupts")),
        }
        Ok(())
    }

    pub(super) fn trigger_irqs(&mut self, index: u32, start: u32, selected: &[bool]) {
        for (i, _) in selected.iter().enumerate().filter(|(_, s)| **s) {
            let n = start + i as u32;
            match index {
                VFIO_PCI_MSIX_IRQ_INDEX => {
                    self.raise_irq(n);
                }
                VFIO_PCI_ERR_IRQ_INDEX => signal(&self.err_fd),
                VFIO_PCI_REQ_IRQ_INDEX => signal(&self.req_fd),
                _ => {}
            }
        }
    }
}

pub(super) fn signal(fd: &Option<EventFd>) {
    if let Some(fd) = fd {
        if let Err(e) = fd.write(1) {
            warn!("eventfd write failed: {e}");
        }
    }
}

/// Accepts only real eventfds: anything else (a regular file, a pipe) would
/// have the card write into it.
pub(super) fn into_eventfd(file: File) -> Result<Option<EventFd>, FnError> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if !link.is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventfd]") {
        return Err(FnError::SetIrqs("descriptor is not an eventfd"));
    }
    // SAFETY: the descriptor is an eventfd we own; ownership moves from the
    // File into the EventFd.
    Ok(Some(unsafe { EventFd::from_raw_fd(file.into_raw_fd()) }))
}
