//! What the post-quantum layer costs: a full hybrid handshake per side, and sealing and
//! opening session frames of 1 KB and 1 MB.
//!
//! `cargo bench -p x0-protocols --bench crypto`; figures go to BENCHMARKS.md.
#![allow(clippy::expect_used)] // a failed expectation is a broken benchmark

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x0_protocols::crypto::{Handshake, HandshakeConfig, Session};
use x0_protocols::{Identity, Millis};

/// Runs one handshake, returning the time each side spent and both sessions.
fn handshake(rng: &mut ChaCha20Rng) -> (Duration, Duration, Session, Session) {
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    let now = Millis(0);

    let t = Instant::now();
    let (mut initiator, init) = Handshake::initiate(&a, HandshakeConfig::expecting(b.id()), rng);
    let mut initiator_time = t.elapsed();

    let t = Instant::now();
    let mut responder = Handshake::respond(&b, HandshakeConfig::expecting(a.id()));
    let step = responder
        .handle_message(&b, now, &init, rng)
        .expect("init accepted");
    let mut responder_time = t.elapsed();

    let t = Instant::now();
    let step = initiator
        .handle_message(&a, now, &step.reply.expect("a response"), rng)
        .expect("response accepted");
    initiator_time += t.elapsed();
    let initiator_session = step.session.expect("initiator done");

    let t = Instant::now();
    let step = responder
        .handle_message(&b, now, &step.reply.expect("a finish"), rng)
        .expect("finish accepted");
    responder_time += t.elapsed();
    let responder_session = step.session.expect("responder done");
    (
        initiator_time,
        responder_time,
        initiator_session,
        responder_session,
    )
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    group.bench_function("initiator", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| handshake(&mut rng).0).sum())
    });
    group.bench_function("responder", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| handshake(&mut rng).1).sum())
    });
    group.finish();
}

fn frames(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (_, _, mut sender, mut receiver) = handshake(&mut rng);
    let mut group = c.benchmark_group("session");
    for size in [1024usize, 1 << 20] {
        let plaintext = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |bench, p| {
            bench.iter(|| black_box(sender.seal(Millis(0), p, b"aad").expect("seals")))
        });
        group.bench_with_input(
            BenchmarkId::new("seal+open", size),
            &plaintext,
            |bench, p| {
                bench.iter(|| {
                    let frame = sender.seal(Millis(0), p, b"aad").expect("seals");
                    black_box(receiver.open(&frame, b"aad").expect("opens"))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, handshakes, frames);
criterion_main!(benches);
