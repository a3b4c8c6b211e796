//! Any byte string through the envelope decoder and every payload decoder behind it:
//! a typed error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0_protocols::e2e::E2eMessage;
use x0_protocols::forwarding::{Data, Relay};
use x0_protocols::routing::RoutingMessage;
use x0_protocols::{Envelope, NodeId};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let _ = envelope.verify();
        let _ = envelope.decode_payload::<RoutingMessage>();
        let _ = envelope.decode_payload::<Data>();
        if let Ok(relay) = envelope.decode_payload::<Relay>() {
            let _ = x0_protocols::forwarding::open(NodeId([0; 32]), relay);
        }
    }
    let _ = E2eMessage::decode(data);
    // The compact link-frame form.
    let _ = Envelope::decode_from(NodeId([2; 32]), data);
    // What a link frame opens to.
    let _ = Envelope::decode_in_link(NodeId([1; 32]), data);
    let _ = x0_protocols::crypto::session::Frame::decode(data);
});
