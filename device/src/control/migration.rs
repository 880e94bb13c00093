//! Migration operations (docs/migration.md): quiesce and resume a
//! function's queues, and give a function its VCT entry as management.
//!
//! All queue state lives in guest memory, so these are the only card-side
//! steps of a migration: quiesce on the source (contexts written back, the
//! card stops writing guest memory), the VCT entry on the destination.

use crate::card::Card;
use crate::control::api::{MigrateAction, MigrationInfo, QuiesceInfo, VctInfo};
use crate::control::ops::{OpError, OpResult};
use crate::function::VctOutcome;
use crate::model::{Event, GuestAddr, VctState};

impl Card {
    /// The functions a migration request names: one, or every function.
    fn targets(&self, function: Option<&str>) -> OpResult<Vec<usize>> {
        match function {
            Some(name) => Ok(vec![self.function_index(name)?]),
            None => Ok((0..self.functions().len()).collect()),
        }
    }

    /// Quiesces one function or all of them.
    pub fn quiesce(&mut self, function: Option<&str>) -> OpResult<Vec<QuiesceInfo>> {
        let targets = self.targets(function)?;
        let mut done = Vec::new();
        for f in targets {
            let contexts_written = self.functions_mut()[f].quiesce();
            let name = self.functions()[f].name().to_string();
            self.datapath_mut().unqueue(f);
            self.push_event(Event::Quiesced {
                function: name.clone(),
            });
            done.push(QuiesceInfo {
                function: name,
                contexts_written,
            });
        }
        Ok(done)
    }

    /// Ends the quiesce of one function or all of them; what waited is
    /// switched now.
    pub fn resume(&mut self, function: Option<&str>) -> OpResult<Vec<String>> {
        let targets = self.targets(function)?;
        let mut resumed = Vec::new();
        for f in targets {
            if !self.functions()[f].quiesced() {
                continue;
            }
            self.functions_mut()[f].unquiesce();
            self.queue_tx(f);
            let name = self.functions()[f].name().to_string();
            self.push_event(Event::Resumed {
                function: name.clone(),
            });
            resumed.push(name);
        }
        self.run_pending();
        Ok(resumed)
    }

    /// A live-migration step for function `f` (docs/migration.md, "Live
    /// migration").
    pub fn migrate(&mut self, f: usize, action: MigrateAction) -> OpResult<MigrationInfo> {
        let name = self.functions()[f].name().to_string();
        let refused = |e: crate::function::FnError| OpError::Migration(name.clone(), e.to_string());
        let mut contexts_written = None;
        match action {
            MigrateAction::Begin => self.functions_mut()[f].migrate_begin().map_err(refused)?,
            MigrateAction::Switchover => {
                contexts_written = Some(
                    self.functions_mut()[f]
                        .migrate_switchover()
                        .map_err(refused)?,
                );
                self.datapath_mut().unqueue(f);
                self.push_event(Event::Quiesced {
                    function: name.clone(),
                });
            }
            MigrateAction::End => {
                self.functions_mut()[f].migrate_end();
            }
            MigrateAction::Status => {}
        }
        let func = &self.functions()[f];
        Ok(MigrationInfo {
            function: name,
            state: func.migration_state(),
            contexts_written,
            unanswered: func.relay_unacked(),
            addresses_released: func.addresses_released(),
            relay: func.relay_stats(),
        })
    }

    /// Gives function `f` the VCT entry `address` (0 clears it).
    pub fn vct_set(&mut self, f: usize, address: GuestAddr) -> VctInfo {
        let outcome = self.functions_mut()[f].set_vct(address.0);
        let state = match outcome {
            VctOutcome::Committed => VctState::Committed,
            VctOutcome::Pending => VctState::Pending,
            VctOutcome::Refused(_) => VctState::Refused,
            VctOutcome::Cleared => VctState::Cleared,
        };
        let function = self.functions()[f].name().to_string();
        if state == VctState::Committed {
            self.queue_tx(f);
            self.run_pending();
        }
        self.push_event(Event::VctChanged {
            function: function.clone(),
            address,
            state,
        });
        VctInfo {
            function,
            address,
            state,
            vct_status: self.functions()[f].vct_status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::{MigrateAction, MigrationState};
    use crate::dma::{DMA_READ, DMA_WRITE};
    use crate::function::DmaWriteRequest;
    use crate::function::REGION_CONFIG;
    use crate::pci::config::{command, hdr};
    use crate::regs::{IrqCause, Reg};
    use crate::state::{ctx_state, Context, ServiceType, CONTEXT_SIZE};
    use crate::test_utils::guest::{card, eth, mac, qp_reg, rd, wr, Vm, RING};
    use crate::test_utils::{FAKE_BASE, FAKE_SIZE};

    /// The guest driver's `pci_set_master` (or `pci_restore_state`).
    fn bus_master(c: &mut Card, f: usize) {
        let v = command::MEMORY | command::BUS_MASTER;
        c.functions_mut()[f]
            .region_write(REGION_CONFIG, hdr::COMMAND as u64, &v.to_le_bytes())
            .unwrap();
        c.after_io(f);
    }

    /// QEMU mapping the guest's RAM into a function of `c`.
    fn map(c: &mut Card, f: usize, vm: &Vm) {
        let (base, size, file) = vm.drv.memory();
        c.functions_mut()[f]
            .dma_map(base, size, 0, DMA_READ | DMA_WRITE, Some(file))
            .unwrap();
        c.after_io(f);
    }

    /// All of the guest's memory.
    fn image(vm: &Vm) -> Vec<u8> {
        let mut m = vec![0; FAKE_SIZE as usize];
        vm.drv.dma().read(FAKE_BASE, &mut m).unwrap();
        m
    }

    /// Every queue context of `vm` (send, receive per queue pair) as guest
    /// memory holds it.
    fn in_memory(vm: &Vm) -> Vec<Context> {
        let mut out = Vec::new();
        for q in 0..vm.rings.len() as u16 {
            for ty in ServiceType::ALL {
                let at = vm.tables.context(ty, q);
                out.push(Context::load(vm.drv.dma(), at).unwrap());
            }
        }
        out
    }

    /// The same contexts as function `f` of `c` has them cached, with the
    /// indices its rings are at.
    fn in_card(c: &Card, f: usize) -> Vec<Context> {
        let mut out = Vec::new();
        for qp in c.functions()[f].queue_pairs() {
            for q in [&qp.tx, &qp.rx] {
                out.push(Context {
                    head: q.head(),
                    tail: q.tail(),
                    ..*q.context()
                });
            }
        }
        out
    }

    #[test]
    fn quiesce_writes_every_context_back_and_stops_all_dma_into_the_function() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        let to_b = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 100);
        let to_a = eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 100);
        a.send(&mut c, 0, &vec![to_b.clone(); 3]);
        assert_eq!(b.received(0).len(), 3);
        // Buffers posted: the turn that took the doorbell wrote the new
        // tail back (docs/restart.md, "Crash consistency").
        a.post(&mut c, 1, 4);
        let before = in_memory(&a);
        assert_eq!(
            before,
            in_card(&c, 1),
            "memory follows the cache every turn"
        );

        let done = c.quiesce(Some("vf0")).unwrap();
        assert_eq!(done[0].contexts_written, 4, "2 queue pairs x 2 queues");
        let after = in_memory(&a);
        assert_eq!(after, in_card(&c, 1), "memory is the cache");
        assert_eq!(after[3].tail, a.rx_tail[1], "the posted tail is there");
        assert_eq!(after[0].packets, 3);
        assert!(after.iter().all(|x| x.state & ctx_state::RUNNING != 0));
        assert!(c.functions()[1].quiesced());

        // Quiesced: nothing sent to it lands in its buffers, nothing it
        // sends leaves; its doorbell only moves the send context's tail.
        let t = a
            .drv
            .queue_tx(a.rings[0].0, RING, a.tx_tail[0], &vec![to_b.clone(); 2]);
        a.tx_tail[0] = t;
        let mut then = image(&a);
        b.send(&mut c, 0, &vec![to_a.clone(); 2]);
        wr(&mut c, 1, qp_reg(0, 0x10), t as u32);
        assert_eq!(b.received(0).len(), 3, "nothing left the quiesced VF");
        assert!(a.received(0).is_empty(), "nothing written into its buffers");
        let sq = a.tables.context(ServiceType::SendQueue, 0);
        let tx_now = Context::load(a.drv.dma(), sq).unwrap();
        assert_eq!(tx_now.tail, t, "the doorbell reached guest memory");
        assert_eq!((tx_now.head, tx_now.packets), (3, 3), "nothing was sent");
        let mut now = image(&a);
        let sq = (sq - FAKE_BASE) as usize;
        for m in [&mut now, &mut then] {
            m[sq..sq + CONTEXT_SIZE].fill(0);
        }
        assert!(now == then, "the send context apart, memory is as it was");

        let resumed = c.resume(Some("vf0")).unwrap();
        assert_eq!(resumed, vec!["vf0".to_string()]);
        assert_eq!(a.received(0).len(), 2, "what waited was delivered");
        assert_eq!(b.received(0).len(), 5, "what was posted was sent");
        assert!(!c.functions()[1].quiesced());
        assert_eq!(c.resume(None).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_second_card_given_only_the_bat_address_resumes_every_queue_on_another_vf() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        for q in 0..2 {
            let to_b = eth(mac(&c, 2, q), mac(&c, 1, q), None, 60 + 10 * q as usize);
            let to_a = eth(mac(&c, 1, q), mac(&c, 2, q), None, 90);
            a.send(&mut c, q, &vec![to_b; 2 + q as usize]);
            b.send(&mut c, q, &vec![to_a; 4]);
        }
        a.post(&mut c, 0, 2);
        c.quiesce(None).unwrap();
        let saved = in_card(&c, 1);
        c.disconnect(1);
        assert_eq!(in_memory(&a), saved, "disconnect wrote nothing else");

        // The destination: a new card, the guest's memory on vf2 (f = 3).
        let mut d = card();
        let bat = GuestAddr(a.tables.bat);
        assert_eq!(d.vct_set(3, bat).state, VctState::Pending, "no memory yet");
        map(&mut d, 3, &a);
        assert_eq!(d.functions()[3].pending_vct(), Some(bat.0), "no bus master");
        d.functions_mut()[3].reset(); // QEMU resets devices as it starts
        assert_eq!(d.functions()[3].pending_vct(), Some(bat.0), "kept");
        let untouched = image(&a);
        bus_master(&mut d, 3);
        assert_eq!(d.functions()[3].pending_vct(), None);
        assert_eq!(d.functions()[3].vct(), bat.0);
        assert_eq!(in_card(&d, 3), saved, "indices and counters reproduced");
        for qp in d.functions()[3].queue_pairs() {
            assert!(qp.tx.running() && qp.rx.running());
        }
        let cause = IrqCause::from_bits(rd(&mut d, 3, Reg::IrqCause as u64));
        assert!(cause.resumed(), "the driver is told");
        assert_eq!(image(&a), untouched, "resuming wrote nothing new");

        // And it carries on from there, counters continuing.
        a.f = 3;
        let mut peer = Vm::attach(&mut d, 1, 8);
        let to_peer = eth(mac(&d, 1, 0), mac(&d, 3, 0), None, 100);
        a.send(&mut d, 0, &vec![to_peer; 5]);
        assert_eq!(peer.received(0).len(), 5);
        let tx = d.functions()[3].queue_pairs()[0].tx.context();
        assert_eq!(tx.packets, saved[0].packets + 5);
        let to_a = eth(mac(&d, 3, 1), mac(&d, 1, 0), None, 100);
        peer.send(&mut d, 0, &[to_a]);
        let rx = d.functions()[3].queue_pairs()[1].rx.context();
        assert_eq!(rx.packets, saved[3].packets + 1);
    }

    #[test]
    fn a_refused_bat_leaves_the_queues_stopped_and_guest_memory_untouched() {
        let mut c = card();
        let a = Vm::attach(&mut c, 1, 8);
        c.quiesce(None).unwrap();
        c.disconnect(1);
        let mut d = card();
        map(&mut d, 1, &a);
        bus_master(&mut d, 1);
        let untouched = image(&a);
        // A page of zeros is no BAT.
        let info = d.vct_set(1, GuestAddr(a.rings[0].0 + 0x10000));
        assert_eq!(info.state, VctState::Refused);
        assert_ne!(info.vct_status, 0);
        assert!(d.functions()[1]
            .queue_pairs()
            .iter()
            .all(|qp| !qp.tx.running() && !qp.rx.running()));
        assert_eq!(image(&a), untouched);
        let cause = IrqCause::from_bits(rd(&mut d, 1, Reg::IrqCause as u64));
        assert!(!cause.resumed());
        // 0 clears entry and pending state alike.
        d.vct_set(2, GuestAddr(0x1000));
        assert_eq!(d.vct_set(2, GuestAddr(0)).state, VctState::Cleared);
        assert_eq!(d.functions()[2].pending_vct(), None);
    }

    #[test]
    fn a_driver_written_vct_entry_commits_at_once_and_raises_no_cause() {
        let mut c = card();
        let a = Vm::attach(&mut c, 1, 8);
        assert_eq!(c.functions()[1].vct(), a.tables.bat);
        let cause = IrqCause::from_bits(rd(&mut c, 1, Reg::IrqCause as u64));
        assert!(!cause.resumed());
        // Management's entry waits for bus mastering (which Vm::attach,
        // unlike the driver, never set) and then walks the BAT again.
        assert_eq!(
            c.vct_set(1, GuestAddr(a.tables.bat)).state,
            VctState::Pending
        );
        bus_master(&mut c, 1);
        assert_eq!(c.functions()[1].vct(), a.tables.bat);
        let cause = IrqCause::from_bits(rd(&mut c, 1, Reg::IrqCause as u64));
        assert!(cause.resumed());
        assert!(c.functions()[1].queue_pairs()[0].tx.running());
    }

    /// QEMU answering the card's DMA_WRITE `id`.
    fn answer(c: &mut Card, f: usize, id: u16, errno: u32) {
        use crate::protocol::{HeaderFlags, MessageHeader, MsgType};
        let header = MessageHeader {
            id,
            command: crate::protocol::Command::DmaWrite as u16,
            size: 16,
            flags: HeaderFlags::new()
                .with_msg_type(MsgType::Reply as u8)
                .with_error(errno != 0),
            error: errno,
        };
        c.functions_mut()[f].relay_reply(&header);
        c.settle();
    }

    /// What QEMU does with the card's DMA_WRITEs of function `f`: makes
    /// them in `vm`'s memory, in order. Returns them.
    fn carry_out(c: &mut Card, f: usize, vm: &Vm) -> Vec<DmaWriteRequest> {
        let batch = c.functions_mut()[f].relay_batch();
        for r in &batch {
            vm.drv.dma().write(r.write.address, &r.write.data).unwrap();
        }
        batch
    }

    /// The first write of `batch` that covers `address`.
    fn first_covering(batch: &[DmaWriteRequest], address: u64) -> usize {
        batch
            .iter()
            .position(|r| {
                let w = &r.write;
                w.address <= address && address < w.address + w.data.len() as u64
            })
            .unwrap_or_else(|| panic!("no write covers {address:#x}"))
    }

    fn irqs(c: &Card, f: usize) -> u64 {
        let s = c.functions()[f].stats();
        s.irqs_sent + s.irqs_pending + s.irqs_dropped
    }

    #[test]
    fn in_migration_mode_every_write_into_the_guest_goes_through_the_client_in_order() {
        use crate::doorbell::{Word, SLOT_SIZE, WATCHING};
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        // A's doorbells go through a page of its memory, which the card
        // writes too (WATCH).
        let page = a.drv.alloc(0x1000, 0x1000);
        a.drv.write_u64(a.tables.bat + 8, page);
        wr(&mut c, 1, Reg::VctLo as u64, a.tables.bat as u32);
        wr(&mut c, 1, Reg::VctHi as u64, (a.tables.bat >> 32) as u32);
        let watch = page + Word::Watch as u64;
        assert_eq!(a.drv.read_u32(watch), 0);

        let m = c.migrate(1, MigrateAction::Begin).unwrap();
        assert_eq!(m.state, MigrationState::Relaying);
        let to_b = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 100);
        let to_a = eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 300);
        // A's driver queues two frames and stores the tail in its page;
        // then rings (the card does not watch yet).
        let tx = a.rings[0].0;
        a.tx_tail[0] = a
            .drv
            .queue_tx(tx, RING, a.tx_tail[0], &vec![to_b.clone(); 2]);
        a.drv
            .write_u32(page + Word::TxTail as u64, a.tx_tail[0].into());
        a.drv
            .write_u32(page + Word::RxTail as u64, a.rx_tail[0].into());
        let before = image(&a);
        let irqs_before = irqs(&c, 1);
        wr(&mut c, 1, qp_reg(0, 0x10), 0xdead);
        b.send(&mut c, 0, &vec![to_a.clone(); 3]);
        c.settle();
        assert_eq!(b.received(0).len(), 2, "A's frames left");
        assert_eq!(
            image(&a),
            before,
            "the card wrote nothing into A's memory itself: no buffer, \
             descriptor, context or doorbell-page word"
        );
        assert_eq!(
            irqs(&c, 1),
            irqs_before,
            "no interrupt before QEMU answered"
        );
        assert!(c.functions()[1].relay_stats().irqs_held > 0);

        let batch = carry_out(&mut c, 1, &a);
        assert!(batch[..batch.len() - 1].iter().all(|r| !r.reply));
        assert!(batch.last().unwrap().reply, "the batch's last write asks");
        assert_eq!(
            a.received(0),
            vec![to_a.clone(); 3],
            "frames in A's buffers"
        );
        assert_eq!(
            in_memory(&a),
            in_card(&c, 1),
            "contexts as the card has them"
        );
        assert_eq!(a.drv.read_u32(watch), WATCHING, "WATCH, through QEMU");
        for i in 0..2 {
            assert_ne!(a.drv.status(tx, i) & 1, 0, "send descriptor {i} DONE");
        }
        // Order: a frame's data, then its descriptor's write-back, then the
        // receive context.
        let rx = a.rings[0].1;
        let rx_ctx = a.tables.context(ServiceType::ReceiveQueue, 0);
        for i in 0..3u64 {
            let buffer = a.drv.read_u64(rx + i * 16);
            let data = first_covering(&batch, buffer);
            let done = first_covering(&batch, rx + i * 16 + 8);
            assert!(
                data < done,
                "frame {i}: data {data} before write-back {done}"
            );
            assert!(
                done < first_covering(&batch, rx_ctx),
                "write-back before context"
            );
        }
        // The interrupts wait for QEMU's answer to the batch's last write.
        assert_eq!(irqs(&c, 1), irqs_before);
        answer(&mut c, 1, batch[0].id, 0);
        assert_eq!(irqs(&c, 1), irqs_before, "an earlier id answers nothing");
        assert_eq!(c.functions()[1].relay_stats().errors, 0);
        answer(&mut c, 1, batch.last().unwrap().id, 0);
        assert!(irqs(&c, 1) > irqs_before, "sent once QEMU made the writes");
        let s = c.migrate(1, MigrateAction::Status).unwrap();
        assert_eq!(s.relay.writes, batch.len() as u64);
        assert_eq!(s.unanswered, 0);
        assert!(s.relay.bytes >= 3 * 300);

        // The switchover: quiesced, contexts through QEMU, then the mode
        // ends and A's addresses leave the switch.
        let before = image(&a);
        let m = c.migrate(1, MigrateAction::Switchover).unwrap();
        assert_eq!(m.state, MigrationState::Flushing);
        assert_eq!(m.contexts_written, Some(4));
        assert_eq!(image(&a), before, "the flush goes through QEMU too");
        let flush = carry_out(&mut c, 1, &a);
        assert_eq!(in_memory(&a), in_card(&c, 1));
        assert_eq!(
            c.migrate(1, MigrateAction::Status).unwrap().state,
            MigrationState::Flushing
        );
        answer(&mut c, 1, flush.last().unwrap().id, 0);
        let m = c.migrate(1, MigrateAction::Status).unwrap();
        assert_eq!(m.state, MigrationState::Switched);
        assert!(m.addresses_released);
        assert!(!c.functions()[1].dma().relaying());
        assert_eq!(
            c.switch().lookup(mac(&c, 1, 0), 0),
            None,
            "frames for A: uplink"
        );
        assert!(c.switch().lookup(mac(&c, 2, 0), 0).is_some());
        assert_eq!(SLOT_SIZE, 16);
    }

    #[test]
    fn a_cancelled_migration_waits_for_the_writes_in_flight_then_writes_directly() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        c.migrate(1, MigrateAction::Begin).unwrap();
        let to_a = eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 200);
        b.send(&mut c, 0, std::slice::from_ref(&to_a));
        c.settle();
        let batch = carry_out(&mut c, 1, &a);
        assert_eq!(
            c.migrate(1, MigrateAction::End).unwrap().state,
            MigrationState::Ending
        );
        // A frame arrives while the end waits for QEMU: still relayed, and
        // the mode ends only once that write is answered too.
        b.send(&mut c, 0, std::slice::from_ref(&to_a));
        c.settle();
        assert!(c.functions()[1].dma().relay_pending());
        // QEMU refuses one write (Bus Master off, say): counted and logged.
        answer(&mut c, 1, batch[0].id, libc::ENODEV as u32);
        assert_eq!(c.functions()[1].relay_stats().errors, 1);
        answer(&mut c, 1, batch.last().unwrap().id, 0);
        assert_eq!(
            c.migrate(1, MigrateAction::Status).unwrap().state,
            MigrationState::Ending,
            "a write still waits"
        );
        let late = carry_out(&mut c, 1, &a);
        answer(&mut c, 1, late.last().unwrap().id, 0);
        assert_eq!(
            c.migrate(1, MigrateAction::Status).unwrap().state,
            MigrationState::Off
        );
        assert_eq!(a.received(0).len(), 2, "the late frame was not lost");
        b.send(&mut c, 0, std::slice::from_ref(&to_a));
        assert_eq!(a.received(0).len(), 3, "direct again");
        assert!(c.functions_mut()[1].relay_batch().is_empty());
        assert!(
            !c.migrate(1, MigrateAction::Status)
                .unwrap()
                .addresses_released
        );
        a.post(&mut c, 0, 1);
    }

    #[test]
    fn no_restart_in_the_middle_of_a_live_migration() {
        use crate::control::api::Request;
        let mut c = card();
        let _a = Vm::attach(&mut c, 1, 8);
        c.migrate(1, MigrateAction::Begin).unwrap();
        let e = c.handle(Request::Restart {}).unwrap_err().to_string();
        assert!(e.contains("vf0 is in live-migration mode"), "{e}");
    }

    #[test]
    fn a_reply_to_nothing_is_counted_and_a_mode_without_memory_is_refused() {
        let mut c = card();
        let e = c.migrate(1, MigrateAction::Begin).unwrap_err();
        assert!(e.to_string().contains("no client has mapped"), "{e}");
        let errors = c.functions()[1].stats().protocol_errors;
        answer(&mut c, 1, 42, 0);
        assert_eq!(c.functions()[1].stats().protocol_errors, errors + 1);
        let e = c.migrate(1, MigrateAction::Switchover).unwrap_err();
        assert!(e.to_string().contains("not in migration mode"), "{e}");
    }

    #[test]
    fn a_function_with_a_pending_vct_entry_attracts_no_traffic_until_it_is_committed() {
        let mut c = card();
        let a = Vm::attach(&mut c, 1, 8);
        let bat = a.tables.bat;
        let own = mac(&c, 1, 0);
        assert!(c.switch().lookup(own, 0).is_some());
        // As at -incoming: a new client, management's entry waits for Bus
        // Master Enable.
        c.disconnect(1);
        map(&mut c, 1, &a);
        assert_eq!(c.vct_set(1, GuestAddr(bat)).state, VctState::Pending);
        c.settle();
        assert_eq!(
            c.switch().lookup(own, 0),
            None,
            "pending: frames go to the uplink"
        );
        assert!(c.functions()[1].addresses_released());
        bus_master(&mut c, 1);
        c.settle();
        assert!(c.switch().lookup(own, 0).is_some(), "committed: here again");
    }
}
