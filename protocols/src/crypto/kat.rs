//! Known-answer tests.
//!
//! Two kinds. Published vectors (RFC 8439 ChaCha20-Poly1305, RFC 7748 X25519, RFC 5869
//! HKDF-SHA256) run through this module's own wrappers, proving the wiring of the
//! primitives. Pinned vectors (fixed seeds in, bytes out) were computed once by this code
//! and are asserted so that any change to the key schedule, the transcript, the wire
//! formats or the RNG plumbing shows up as a test failure: a change to them is a protocol
//! version change.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x25519_dalek::StaticSecret;

use super::aead;
use super::handshake::{Handshake, HandshakeConfig};
use super::hybrid::{
    combine, expand, extract, mlkem_decapsulate, mlkem_encapsulate, mlkem_from_seed, mlkem_public,
    sha256, x25519_static_agree,
};
use super::seal::{E2eKeys, SealedBox, open_sealed, seal_to_public};
use crate::{Identity, Millis};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).expect("valid hex in a test vector")
}

fn array32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

#[test]
fn rfc8439_chacha20_poly1305_vector_through_the_aead_wrapper() {
    // RFC 8439, section 2.8.2.
    let key = array32("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 12] = unhex("070000004041424344454647")
        .try_into()
        .expect("12 bytes");
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one \
tip for the future, sunscreen would be it.";
    let expected = unhex(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
         3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
         92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
         3ff4def08e4b7a9de576d26586cec64b6116
         1ae10b594f09e26a7e902ecbd0600691",
    );
    let sealed = aead::encrypt(&key, &nonce, &aad, plaintext).expect("encrypt");
    assert_eq!(sealed, expected);
    assert_eq!(
        aead::decrypt(&key, &nonce, &aad, &expected).expect("decrypt"),
        plaintext
    );
    let mut tampered = expected.clone();
    tampered[0] ^= 1;
    assert!(aead::decrypt(&key, &nonce, &aad, &tampered).is_err());
    assert!(aead::decrypt(&key, &nonce, b"", &expected).is_err());
    assert!(aead::decrypt(&key, &nonce, &aad, &expected[..10]).is_err());
}

#[test]
fn rfc7748_x25519_vector_through_the_key_agreement_wrapper() {
    // RFC 7748, section 6.1.
    let alice = StaticSecret::from(array32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let bob = StaticSecret::from(array32(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    let alice_public = array32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_public = array32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = array32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(
        *x25519_static_agree(&alice, &bob_public).expect("agree"),
        shared
    );
    assert_eq!(
        *x25519_static_agree(&bob, &alice_public).expect("agree"),
        shared
    );
    assert!(x25519_static_agree(&alice, &[0; 32]).is_err());
}

#[test]
fn rfc5869_hkdf_sha256_vector_through_extract_and_expand() {
    // RFC 5869, test case 1 (first 32 of the 42 output bytes).
    let ikm = [0x0b; 22];
    let salt = unhex("000102030405060708090a0b0c");
    let info = unhex("f0f1f2f3f4f5f6f7f8f9");
    let prk = extract(&salt, &ikm);
    assert_eq!(
        hex::encode(*prk),
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    );
    // Info given in two parts must equal info given whole.
    let okm = expand(&prk, &[&info[..3], &info[3..]]);
    assert_eq!(
        hex::encode(*okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    );
}

#[test]
fn pinned_hybrid_combiner() {
    let prk = combine(&[0x33; 32], &[0x11; 32], &[0x22; 32]);
    assert_eq!(hex::encode(*prk), PINNED_COMBINER_PRK);
    // The combiner is HKDF-Extract over the concatenation, nothing else.
    let mut ikm = [0x11u8; 64];
    ikm[32..].fill(0x22);
    assert_eq!(*prk, *extract(&[0x33; 32], &ikm));
    // Changing either secret changes the key.
    assert_ne!(*prk, *combine(&[0x33; 32], &[0x12; 32], &[0x22; 32]));
    assert_ne!(*prk, *combine(&[0x33; 32], &[0x11; 32], &[0x23; 32]));
}

#[test]
fn pinned_mlkem768_wiring() {
    let mut seed = [0u8; 64];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    let dk = mlkem_from_seed(&seed);
    let ek = mlkem_public(&dk);
    assert_eq!(hex::encode(sha256(&[&ek])), PINNED_MLKEM_EK_SHA256);
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let (ct, shared) = mlkem_encapsulate(&ek, &mut rng).expect("encapsulate");
    assert_eq!(hex::encode(sha256(&[&ct])), PINNED_MLKEM_CT_SHA256);
    assert_eq!(hex::encode(*shared), PINNED_MLKEM_SHARED);
    assert_eq!(*mlkem_decapsulate(&dk, &ct).expect("decapsulate"), *shared);
    // Implicit rejection: a changed ciphertext decapsulates to an unrelated secret.
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert_ne!(*mlkem_decapsulate(&dk, &bad).expect("decapsulate"), *shared);
}

#[test]
fn pinned_e2e_keys_from_seed() {
    let keys = E2eKeys::from_seed([0x42; 32]);
    assert_eq!(hex::encode(keys.public().x25519), PINNED_E2E_X25519);
    assert_eq!(
        hex::encode(sha256(&[&keys.public().mlkem])),
        PINNED_E2E_MLKEM_SHA256
    );
}

#[test]
fn pinned_handshake_and_first_frame() {
    let alice = Identity::from_seed([1; 32]);
    let bob = Identity::from_seed([2; 32]);
    let mut alice_rng = ChaCha20Rng::from_seed([10; 32]);
    let mut bob_rng = ChaCha20Rng::from_seed([20; 32]);
    let (mut init, m1) = Handshake::initiate(&alice, HandshakeConfig::default(), &mut alice_rng);
    let mut resp = Handshake::respond(&bob, HandshakeConfig::default());
    let m2 = resp
        .handle_message(&bob, Millis(0), &m1, &mut bob_rng)
        .expect("response")
        .reply
        .expect("reply");
    let step = init
        .handle_message(&alice, Millis(0), &m2, &mut alice_rng)
        .expect("finish");
    let m3 = step.reply.expect("reply");
    let mut a = step.session.expect("session");
    let mut b = resp
        .handle_message(&bob, Millis(0), &m3, &mut bob_rng)
        .expect("established")
        .session
        .expect("session");

    assert_eq!(hex::encode(sha256(&[&m1])), PINNED_HS_M1_SHA256);
    assert_eq!(hex::encode(sha256(&[&m2])), PINNED_HS_M2_SHA256);
    assert_eq!(hex::encode(sha256(&[&m3])), PINNED_HS_M3_SHA256);
    assert_eq!(hex::encode(a.id()), PINNED_HS_SESSION_ID);
    assert_eq!(hex::encode(a.send_key_for_test()), PINNED_HS_I2R_KEY);
    assert_eq!(hex::encode(a.recv_key_for_test()), PINNED_HS_R2I_KEY);
    let frame = a.seal(Millis(0), b"hello", b"kat").expect("seal");
    assert_eq!(hex::encode(&frame), PINNED_HS_FIRST_FRAME);
    assert_eq!(b.open(&frame, b"kat").expect("open"), b"hello");
}

#[test]
fn pinned_sealed_box() {
    let sender = Identity::from_seed([3; 32]);
    let recipient = E2eKeys::from_seed([4; 32]);
    let mut rng = ChaCha20Rng::from_seed([30; 32]);
    let bytes = seal_to_public(recipient.public(), &sender, b"end to end", &mut rng).expect("seal");
    let sealed = SealedBox::decode(&bytes).expect("decode");
    assert_eq!(hex::encode(&sealed.ciphertext), PINNED_SEAL_CIPHERTEXT);
    assert_eq!(hex::encode(sealed.x25519), PINNED_SEAL_EPHEMERAL);
    assert_eq!(hex::encode(sha256(&[&bytes])), PINNED_SEAL_BOX_SHA256);
    assert_eq!(
        open_sealed(&recipient, &bytes, Some(sender.id()))
            .expect("open")
            .plaintext,
        b"end to end"
    );
}

const PINNED_COMBINER_PRK: &str =
    "dcd21b59ec8bbf5907c107e742b0f724e6febc4926b0b746313dd6d21562ed03";
const PINNED_MLKEM_EK_SHA256: &str =
    "0b7934c83125c788995e2ba6bd761e33046b3e40571be53e023309a29f398cc9";
const PINNED_MLKEM_CT_SHA256: &str =
    "04754f517ec74b41a903cfee99305c4d5d576f82fbb5c3ef9714281889eae5e6";
const PINNED_MLKEM_SHARED: &str =
    "840eb7554484651dcbf1e603e19da94cbf20fa9dee8c3b51645b350556d3e0ea";
const PINNED_E2E_X25519: &str = "5c2d0696e09c867c9b3bf18fb4df2b42e7dcb887477c1b731c984681ebf0442f";
const PINNED_E2E_MLKEM_SHA256: &str =
    "93d0fd78996ae3ea297b7f05d446eea0a1f28f810d7164884a3756e7b2010479";
const PINNED_HS_M1_SHA256: &str =
    "5fea0df6be7a3c195ed907b663c56cc7da26d5d1da2442c31c96eadb5f22b909";
const PINNED_HS_M2_SHA256: &str =
    "42ea06a229eaa8260694f588928ff385d46f52ed2f32e8648f8a860ffa48d6e0";
const PINNED_HS_M3_SHA256: &str =
    "52fa8a708104c614c78ebc00c7ff76bccb6302103599ea4044d5fded55e1e21b";
const PINNED_HS_SESSION_ID: &str =
    "4f0a9015d286b1099b8e126fdc2066a5bdc22c48cb94e94f517de8e563a14bde";
const PINNED_HS_I2R_KEY: &str = "6620d0151ae71b3c5ab004353d045d44e0e815cf78b8d49d3ed43d3a92c721d0";
const PINNED_HS_R2I_KEY: &str = "6b32510f3b777469098901e58acd2d69dd27f5c0531c5829df0989fad6e41eb0";
/// Frame version 2: version, epoch 0 and counter 0 as one-byte varints, then the
/// ciphertext and tag (the ciphertext is the one version 1 had; the tag differs because
/// the header it authenticates does).
const PINNED_HS_FIRST_FRAME: &str = "02000016649e63fee92c60bba39921acdd8eac9e06526c14";
const PINNED_SEAL_CIPHERTEXT: &str = "71ebf7163aa7d94aa36e4508f5b7f5ac394afc8979eb551ba39e";
const PINNED_SEAL_EPHEMERAL: &str =
    "4f5aeddc6d5793a0c7c4c42c18eef4316511fed3276858fce446a1ac32f9986a";
const PINNED_SEAL_BOX_SHA256: &str =
    "f99ae6d824e7f66e0f7fcb9ffffffa41e1041c56ed5ac8f9373eee5705d9256a";
