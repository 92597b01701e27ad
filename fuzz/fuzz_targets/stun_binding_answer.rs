//! Feeds arbitrary bytes, as the datagram answering a start-up STUN Binding
//! request, to `sfu::public_ip::BindingProbe::answer` (the public-IP
//! discovery's parser of what a STUN server, or anyone spoofing it, sends).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::public_ip::{BindingProbe, ProbeAnswer};

fuzz_target!(|data: &[u8]| {
    // The probe's transaction: the bytes where a response would carry it,
    // so that inputs get past the transaction check as often as not.
    let mut transaction = [0u8; 12];
    if let Some(t) = data.get(8..20) {
        transaction.copy_from_slice(t);
    }
    let probe = BindingProbe::new(transaction);
    if let ProbeAnswer::Mapped(_) | ProbeAnswer::Failed(_) = probe.answer(data) {
        // Only a message of this transaction gets an answer.
        assert!(data.len() >= 20 && data[8..20] == transaction);
    }
    let _ = BindingProbe::new([0xa5; 12]).answer(data);
});
