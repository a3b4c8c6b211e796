//! Any byte string as the first message a responder receives, and as the decoder's
//! input: the handshake state machine answers with a typed error or a step, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use x0_protocols::crypto::handshake::{Handshake, HandshakeConfig, HandshakeMessage};
use x0_protocols::{Identity, Millis};

fuzz_target!(|data: &[u8]| {
    let _ = HandshakeMessage::decode(data);
    let identity = Identity::from_seed([7; 32]);
    let mut responder = Handshake::respond(&identity, HandshakeConfig::default());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let _ = responder.handle_message(&identity, Millis(0), data, &mut rng);
});
