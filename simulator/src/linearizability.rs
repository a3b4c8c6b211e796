//! A linearizability checker for the Raft ledger's append/read model.
//!
//! The simulator records every client request against the ledger: when it was called, when
//! (if ever) the answer came back, and what the answer was. [`check`] decides whether one
//! total order of those requests (a *linearization*) explains every answer with a single
//! sequential ledger while respecting real time: a request that returned before another
//! was called must come first. If no order does, the ledger lost, reordered or invented an
//! entry, or served a stale read, and the run has found a bug.
//!
//! # The model
//!
//! The ledger is a sequence of `u64` values, positions counted from 1.
//! - `Append { value }` puts `value` at the end. `Appended { position }` says where it
//!   landed; `Unknown` (timeout, crash) says it may have landed at any moment after its
//!   call, or never. `ret` is ignored for `Unknown`: a Raft leader that timed out may still
//!   commit the entry later.
//! - `Read { from }` returns the values at positions `from..=len` at one instant (nothing if
//!   `from > len`). A read without an answer (`Unknown`) says nothing and is skipped.
//! - Calls and returns with the same timestamp count as concurrent: virtual milliseconds
//!   are too coarse to order them, and claiming an order there would report false bugs.
//!
//! # The search
//!
//! Wing & Gong's, as Porcupine implements it: the history becomes a list of call and return
//! events sorted by time; the operations whose call comes before the first remaining return
//! may go next; the search places one the model accepts, lifts its two events out of the
//! list and goes on, and backs up when nothing can be placed before that first return.
//! Lowe's memo remembers every (set of placed operations, ledger) already explored, so no
//! state is searched twice. [`SearchMode::Exhaustive`] is exactly that.
//!
//! [`SearchMode::Reduced`] (the default) adds what this model knows, each cut sound on its
//! own (a history has a linearization iff it has one the cut keeps), and together they
//! leave at most one choice per step: the search never backs up, and takes one step per
//! operation instead of exponentially many in the number of concurrent clients:
//! - *Positions.* An append's position is known from its answer or from any read that saw
//!   its value (values are unique, so a value has one position for good). At ledger length
//!   `L` only the append owning position `L + 1` can go next (if none owns it, the next
//!   filler, below). Contradictory claims (two appends at one position, one value at two
//!   positions, a value nobody appended) are reported before any search.
//! - *Fillers.* An `Unknown` append nobody read has no position, and only its call time
//!   tells it apart from another such append; so a linearization using some of them can
//!   use the earliest-called ones instead, in call order. They go only into a slot no
//!   other append owns.
//! - *Reads first.* A read changes nothing, so one that matches the ledger and may go now
//!   can always be moved to the front of any linearization from here: it is placed at once
//!   and never reconsidered.
//!
//! The exhaustive mode stays, as the reference the reduced one is tested against (and the
//! starting point should the model grow operations without positions); the step budget
//! turns a hopeless search into [`Verdict::TooComplex`] instead of a hang.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A request to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Append `value` (unique within a history) at the end.
    Append { value: u64 },
    /// Read every value from position `from` (1-based) to the end.
    Read { from: u64 },
}

/// The answer a request got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The append landed at this 1-based position.
    Appended { position: u64 },
    /// The values at positions `from..=len` when the read took effect.
    Read { values: Vec<u64> },
    /// No answer: an append may or may not have taken effect; a read is ignored.
    Unknown,
}

/// One request of a history, with its timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Who issued it; only used in messages (order comes from the times).
    pub client: u32,
    /// Virtual ms when the request was issued.
    pub call: u64,
    /// Virtual ms when the answer arrived; `None` when there was none.
    pub ret: Option<u64>,
    pub op: Op,
    pub outcome: Outcome,
}

/// What [`check`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists; the text names the operations (by index in the history)
    /// that could not be ordered and why.
    Violation(String),
    /// The step budget ran out before the search could decide.
    TooComplex,
    /// The history itself is broken (an append answered with values, `call > ret`, `from`
    /// of 0, a value appended twice): a bug in whoever recorded it, not in the ledger.
    Malformed(String),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Default for [`Options::step_budget`]. The reduced search takes at most one step per
/// operation; this bounds the exhaustive one to a few seconds and tens of MB of memo.
pub const DEFAULT_STEP_BUDGET: u64 = 1_000_000;

/// How hard to search; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SearchMode {
    /// Model-specific cuts; linear time. The one to use.
    #[default]
    Reduced,
    /// Plain Wing–Gong with Lowe's memo; exponential in concurrency. A reference.
    Exhaustive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Placement attempts allowed before giving up with [`Verdict::TooComplex`].
    pub step_budget: u64,
    pub mode: SearchMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            step_budget: DEFAULT_STEP_BUDGET,
            mode: SearchMode::Reduced,
        }
    }
}

/// Checks `history` with the default [`Options`]. Pure and deterministic; the order of
/// `history` does not matter except for the indices quoted in messages.
#[must_use]
pub fn check(history: &[Operation]) -> Verdict {
    check_with(history, Options::default())
}

/// Checks `history` with explicit options.
#[must_use]
pub fn check_with(history: &[Operation], options: Options) -> Verdict {
    let plan = match Plan::new(history, options.mode) {
        Ok(plan) => plan,
        Err(verdict) => return verdict,
    };
    Search::new(history, &plan, options).run()
}

/// One operation as the search sees it.
struct Prepared<'a> {
    /// Index in the caller's history, for messages.
    index: usize,
    call: u64,
    /// `None`: no deadline (no answer, or an answer without a time).
    ret: Option<u64>,
    /// Must be placed; only `Unknown` appends may be left out.
    required: bool,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Append {
        value: u64,
        /// The position this append must land at, when known.
        claim: Option<u64>,
        /// Reduced mode: rank, in call order, among the unread `Unknown` appends.
        filler: Option<usize>,
    },
    Read {
        from: u64,
        values: &'a [u64],
    },
}

/// The validated history plus what the reduced mode derived from it.
struct Plan<'a> {
    ops: Vec<Prepared<'a>>,
    /// Reduced mode: which operation owns each position (index 0 unused).
    owner: Vec<Option<usize>>,
}

impl<'a> Plan<'a> {
    fn new(history: &'a [Operation], mode: SearchMode) -> Result<Self, Verdict> {
        let mut ops = Vec::with_capacity(history.len());
        let mut by_value: BTreeMap<u64, usize> = BTreeMap::new();
        for (index, operation) in history.iter().enumerate() {
            if let Some(ret) = operation.ret
                && ret < operation.call
            {
                return Err(malformed(history, index, "returns before it is called"));
            }
            let known = !matches!(operation.outcome, Outcome::Unknown);
            let ret = if known { operation.ret } else { None };
            let kind = match (&operation.op, &operation.outcome) {
                (Op::Append { value }, Outcome::Appended { position }) => Kind::Append {
                    value: *value,
                    claim: Some(*position),
                    filler: None,
                },
                (Op::Append { value }, Outcome::Unknown) => Kind::Append {
                    value: *value,
                    claim: None,
                    filler: None,
                },
                (Op::Read { from: 0 }, _) => {
                    return Err(malformed(history, index, "reads from position 0"));
                }
                (Op::Read { .. }, Outcome::Unknown) => continue,
                (Op::Read { from }, Outcome::Read { values }) => Kind::Read {
                    from: *from,
                    values,
                },
                _ => return Err(malformed(history, index, "has an answer of the wrong kind")),
            };
            if let Kind::Append { value, .. } = kind
                && let Some(first) = by_value.insert(value, ops.len())
            {
                let first = ops.get(first).map_or(first, |p: &Prepared<'_>| p.index);
                return Err(malformed(
                    history,
                    index,
                    &format!("appends {value}, already appended by #{first}"),
                ));
            }
            ops.push(Prepared {
                index,
                call: operation.call,
                ret,
                required: known,
                kind,
            });
        }
        let mut plan = Plan {
            ops,
            owner: Vec::new(),
        };
        if mode == SearchMode::Reduced {
            plan.derive_positions(history, &by_value)?;
            plan.rank_fillers();
        }
        Ok(plan)
    }

    /// Gives every append the position its answer or any read fixes, refusing
    /// contradictions (each refusal holds in every linearization, so it is a violation).
    fn derive_positions(
        &mut self,
        history: &[Operation],
        by_value: &BTreeMap<u64, usize>,
    ) -> Result<(), Verdict> {
        let appends = by_value.len();
        self.owner = vec![None; appends + 2];
        for op in 0..self.ops.len() {
            if let Kind::Append {
                claim: Some(position),
                ..
            } = self.ops[op].kind
            {
                if position == 0 || position > appends as u64 {
                    return Err(violation_at(
                        history,
                        self.ops[op].index,
                        &format!(
                            "claims position {position}, but the history has {appends} appends"
                        ),
                    ));
                }
                self.own(history, position, op, None)?;
            }
        }
        for read in 0..self.ops.len() {
            let Kind::Read { from, values } = self.ops[read].kind else {
                continue;
            };
            let end = u128::from(from) - 1 + values.len() as u128;
            if !values.is_empty() && end > appends as u128 {
                return Err(violation_at(
                    history,
                    self.ops[read].index,
                    &format!(
                        "saw values up to position {end}, but the history has {appends} appends"
                    ),
                ));
            }
            for (offset, value) in values.iter().enumerate() {
                let position = from + offset as u64;
                let Some(&append) = by_value.get(value) else {
                    return Err(violation_at(
                        history,
                        self.ops[read].index,
                        &format!("saw {value} at position {position}, which no operation appended"),
                    ));
                };
                self.own(history, position, append, Some(read))?;
            }
        }
        Ok(())
    }

    /// Records that `append` sits at `position` (said by its answer, or by `read`).
    fn own(
        &mut self,
        history: &[Operation],
        position: u64,
        append: usize,
        read: Option<usize>,
    ) -> Result<(), Verdict> {
        let Kind::Append {
            claim: previous, ..
        } = self.ops[append].kind
        else {
            return Ok(());
        };
        let slot = usize::try_from(position).unwrap_or(usize::MAX);
        let holder = self.owner.get(slot).copied().flatten();
        let clash = match (previous, holder) {
            (Some(at), _) if at != position => Some(format!("but that value is at position {at}")),
            (_, Some(other)) if other != append => Some(format!(
                "but position {position} belongs to {}",
                describe(history, self.ops[other].index)
            )),
            _ => None,
        };
        if let Some(why) = clash {
            let subject = match read {
                Some(read) => format!(
                    "{} saw the value of {} at position {position}",
                    describe(history, self.ops[read].index),
                    describe(history, self.ops[append].index)
                ),
                None => format!(
                    "{} claims position {position}",
                    describe(history, self.ops[append].index)
                ),
            };
            return Err(Verdict::Violation(format!("{subject}, {why}")));
        }
        if let Kind::Append { claim, .. } = &mut self.ops[append].kind {
            *claim = Some(position);
        }
        if let Some(entry) = self.owner.get_mut(slot) {
            *entry = Some(append);
        }
        Ok(())
    }

    /// Numbers the unread `Unknown` appends in the order their calls appear in the event
    /// list, the order the search must place them in.
    fn rank_fillers(&mut self) {
        let mut fillers: Vec<usize> = (0..self.ops.len())
            .filter(|&op| matches!(self.ops[op].kind, Kind::Append { claim: None, .. }))
            .collect();
        fillers.sort_by_key(|&op| (self.ops[op].call, op));
        for (rank, op) in fillers.into_iter().enumerate() {
            if let Kind::Append { filler, .. } = &mut self.ops[op].kind {
                *filler = Some(rank);
            }
        }
    }
}

/// End of the list, and the index of the head sentinel.
const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// Porcupine's doubly linked list of call and return events. Entry `1 + 2 * op` is the
/// call of `op`, `2 + 2 * op` its return; removal and reinsertion are strictly last in,
/// first out (dancing links), so a reinsertion restores the exact previous list.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Events {
    fn new(ops: &[Prepared<'_>]) -> Self {
        // Returns without deadline go last, required ones first: reaching an optional
        // one means every required operation has been placed.
        let mut order: Vec<(u128, u8, usize, usize)> = Vec::with_capacity(2 * ops.len());
        for (op, p) in ops.iter().enumerate() {
            order.push((u128::from(p.call), 0, op, call_entry(op)));
            let (time, rank) = match p.ret {
                Some(ret) => (u128::from(ret), 1),
                None if p.required => (u128::MAX, 1),
                None => (u128::MAX, 2),
            };
            order.push((time, rank, op, return_entry(op)));
        }
        order.sort_unstable();
        let mut next = vec![NIL; 2 * ops.len() + 1];
        let mut prev = vec![NIL; 2 * ops.len() + 1];
        let mut last = HEAD;
        for &(_, _, _, entry) in &order {
            next[last] = entry;
            prev[entry] = last;
            last = entry;
        }
        Events { next, prev }
    }

    fn remove(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn restore(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NIL {
            self.prev[next] = entry;
        }
    }

    /// The operations that may go next (calls before the first return, in list order),
    /// and the operation of that first return.
    fn pending(&self) -> (Vec<usize>, Option<usize>) {
        let mut calls = Vec::new();
        let mut entry = self.next[HEAD];
        while entry != NIL {
            let op = (entry - 1) / 2;
            if entry == call_entry(op) {
                calls.push(op);
            } else {
                return (calls, Some(op));
            }
            entry = self.next[entry];
        }
        (calls, None)
    }
}

fn call_entry(op: usize) -> usize {
    1 + 2 * op
}

fn return_entry(op: usize) -> usize {
    2 + 2 * op
}

/// One placement on the depth-first path, with the alternatives left at its node.
struct Frame {
    choices: Vec<usize>,
    next: usize,
    placed: Option<usize>,
}

/// Where the search got furthest before getting stuck, for the violation message.
struct Stuck {
    placed: usize,
    message: String,
}

struct Search<'h, 'p> {
    history: &'h [Operation],
    ops: &'p [Prepared<'h>],
    owner: &'p [Option<usize>],
    options: Options,
    events: Events,
    ledger: Vec<u64>,
    fillers_placed: usize,
    placed: usize,
    required_left: usize,
    /// Zobrist hashes of the placed set and of the ledger (as (position, value) pairs):
    /// 128 bits each, so the memo holds 32 bytes per state instead of a bitset of the
    /// whole history, at a collision chance far below anything that matters.
    set_hash: u128,
    ledger_hash: u128,
    memo: HashSet<(u128, u128)>,
    steps: u64,
    stuck: Option<Stuck>,
}

impl<'h, 'p> Search<'h, 'p> {
    fn new(history: &'h [Operation], plan: &'p Plan<'h>, options: Options) -> Self {
        Search {
            history,
            ops: &plan.ops,
            owner: &plan.owner,
            options,
            events: Events::new(&plan.ops),
            ledger: Vec::new(),
            fillers_placed: 0,
            placed: 0,
            required_left: plan.ops.iter().filter(|p| p.required).count(),
            set_hash: 0,
            ledger_hash: 0,
            memo: HashSet::new(),
            steps: 0,
            stuck: None,
        }
    }

    fn run(mut self) -> Verdict {
        if self.required_left == 0 {
            return Verdict::Linearizable;
        }
        let mut stack = vec![Frame {
            choices: self.choices(),
            next: 0,
            placed: None,
        }];
        while let Some(frame) = stack.last_mut() {
            if let Some(op) = frame.placed.take() {
                self.unplace(op);
            }
            let mut descended = false;
            while let Some(&op) = frame.choices.get(frame.next) {
                frame.next += 1;
                self.steps += 1;
                if self.steps > self.options.step_budget {
                    return Verdict::TooComplex;
                }
                self.place(op);
                if self.memo.insert((self.set_hash, self.ledger_hash)) {
                    frame.placed = Some(op);
                    descended = true;
                    break;
                }
                self.unplace(op);
            }
            if !descended {
                stack.pop();
            } else if self.required_left == 0 {
                return Verdict::Linearizable;
            } else {
                let choices = self.choices();
                stack.push(Frame {
                    choices,
                    next: 0,
                    placed: None,
                });
            }
        }
        let detail = self
            .stuck
            .map_or_else(|| "no operation can go first".to_string(), |s| s.message);
        Verdict::Violation(format!("no linearization exists: {detail}"))
    }

    /// The operations to try at this node, best first.
    fn choices(&mut self) -> Vec<usize> {
        let (pending, first_return) = self.events.pending();
        let choices: Vec<usize> = match self.options.mode {
            SearchMode::Exhaustive => pending
                .iter()
                .copied()
                .filter(|&op| self.fits(op))
                .collect(),
            SearchMode::Reduced => {
                let read = pending
                    .iter()
                    .copied()
                    .find(|&op| matches!(self.ops[op].kind, Kind::Read { .. }) && self.fits(op));
                let next = read.or_else(|| pending.iter().copied().find(|&op| self.fits(op)));
                next.into_iter().collect()
            }
        };
        if choices.is_empty() && self.stuck.as_ref().is_none_or(|s| s.placed < self.placed) {
            let message = self.explain(&pending, first_return);
            self.stuck = Some(Stuck {
                placed: self.placed,
                message,
            });
        }
        choices
    }

    /// Whether the model accepts `op` on the current ledger.
    fn fits(&self, op: usize) -> bool {
        let len = self.ledger.len() as u64;
        match self.ops[op].kind {
            Kind::Append {
                claim: Some(position),
                ..
            } => position == len + 1,
            Kind::Append {
                filler: Some(rank), ..
            } => rank == self.fillers_placed && self.owner_of(len + 1).is_none(),
            Kind::Append { .. } => true,
            Kind::Read { from, values } => read_fits(&self.ledger, from, values),
        }
    }

    fn owner_of(&self, position: u64) -> Option<usize> {
        self.owner
            .get(usize::try_from(position).ok()?)
            .copied()
            .flatten()
    }

    fn place(&mut self, op: usize) {
        self.events.remove(call_entry(op));
        self.events.remove(return_entry(op));
        self.set_hash ^= mix128(u64::MAX, op as u64);
        self.placed += 1;
        if self.ops[op].required {
            self.required_left -= 1;
        }
        if let Kind::Append { value, filler, .. } = self.ops[op].kind {
            self.ledger.push(value);
            self.ledger_hash ^= mix128(self.ledger.len() as u64, value);
            if filler.is_some() {
                self.fillers_placed += 1;
            }
        }
    }

    fn unplace(&mut self, op: usize) {
        if let Kind::Append { value, filler, .. } = self.ops[op].kind {
            self.ledger_hash ^= mix128(self.ledger.len() as u64, value);
            self.ledger.pop();
            if filler.is_some() {
                self.fillers_placed -= 1;
            }
        }
        if self.ops[op].required {
            self.required_left += 1;
        }
        self.placed -= 1;
        self.set_hash ^= mix128(u64::MAX, op as u64);
        self.events.restore(return_entry(op));
        self.events.restore(call_entry(op));
    }

    /// Says why nothing can be placed here: the operation whose return is next cannot
    /// take effect on this ledger, and neither can anything that may precede it.
    fn explain(&self, pending: &[usize], first_return: Option<usize>) -> String {
        let len = self.ledger.len() as u64;
        let mut out = format!(
            "{} of {} operations order consistently, leaving a ledger of length {len}",
            self.placed,
            self.ops.len()
        );
        if let Some(op) = first_return {
            let deadline = match self.ops[op].ret {
                Some(ret) => format!("before it returns at {ret}"),
                None => "at some point".to_string(),
            };
            let _ = write!(
                out,
                "; then {} must take effect {deadline}, but {}",
                self.describe(op),
                self.why_not(op)
            );
        }
        // When what blocks it is a ledger too short, say who should have made it longer.
        let short = first_return.is_some_and(|op| self.wants_longer(op));
        if short && self.options.mode == SearchMode::Reduced {
            match self.owner_of(len + 1) {
                Some(owner) if !pending.contains(&owner) => {
                    let _ = write!(
                        out,
                        "; position {} belongs to {}, called too late",
                        len + 1,
                        self.describe(owner)
                    );
                }
                Some(_) => {}
                None => {
                    let _ = write!(out, "; no append is known to hold position {}", len + 1);
                }
            }
        }
        let others: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|&op| self.ops[op].required && Some(op) != first_return)
            .collect();
        if !others.is_empty() {
            let _ = write!(out, "; also pending:");
            for &op in others.iter().take(6) {
                let _ = write!(out, " {} ({});", self.describe(op), self.why_not(op));
            }
            if others.len() > 6 {
                let _ = write!(out, " and {} more", others.len() - 6);
            }
        }
        out
    }

    /// Whether `op` could only take effect on a longer ledger than the current one.
    fn wants_longer(&self, op: usize) -> bool {
        let len = u128::from(self.ledger.len() as u64);
        match self.ops[op].kind {
            Kind::Append { claim, .. } => claim.is_some_and(|p| u128::from(p) > len + 1),
            Kind::Read { from, values } => {
                !values.is_empty() && u128::from(from) - 1 + values.len() as u128 > len
            }
        }
    }

    fn why_not(&self, op: usize) -> String {
        let len = self.ledger.len() as u64;
        match self.ops[op].kind {
            Kind::Append {
                claim: Some(position),
                ..
            } if position <= len => format!("position {position} is already taken"),
            Kind::Append {
                claim: Some(position),
                ..
            } => format!(
                "position {position} needs a ledger of length {}",
                position - 1
            ),
            Kind::Append { .. } => "it may not go here".to_string(),
            Kind::Read { from, .. } => {
                let start = usize::try_from(from - 1).unwrap_or(usize::MAX);
                let held = self.ledger.get(start..).unwrap_or(&[]);
                format!("the ledger holds {} from position {from}", list(held))
            }
        }
    }

    fn describe(&self, op: usize) -> String {
        describe(self.history, self.ops[op].index)
    }
}

/// Whether a read from `from` answering `values` matches `ledger`.
fn read_fits(ledger: &[u64], from: u64, values: &[u64]) -> bool {
    let start = from - 1;
    let len = ledger.len() as u64;
    if values.is_empty() {
        return len <= start;
    }
    match start.checked_add(values.len() as u64) {
        Some(end) if end == len => ledger[start as usize..] == *values,
        _ => false,
    }
}

/// A 128-bit hash of two words, for the Zobrist keys; two rounds of splitmix64 with
/// different salts per half, so the halves are independent.
fn mix128(a: u64, b: u64) -> u128 {
    let high = splitmix64(splitmix64(a ^ 0x243F_6A88_85A3_08D3) ^ b);
    let low = splitmix64(splitmix64(a ^ 0x1319_8A2E_0370_7344) ^ b.rotate_left(29));
    (u128::from(high) << 64) | u128::from(low)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn malformed(history: &[Operation], index: usize, why: &str) -> Verdict {
    Verdict::Malformed(format!("{} {why}", describe(history, index)))
}

fn violation_at(history: &[Operation], index: usize, why: &str) -> Verdict {
    Verdict::Violation(format!("{} {why}", describe(history, index)))
}

/// `#index (client c, call..ret): what -> answer`, short enough for a log line.
fn describe(history: &[Operation], index: usize) -> String {
    let Some(o) = history.get(index) else {
        return format!("#{index}");
    };
    let ret = o.ret.map_or_else(|| "-".to_string(), |r| r.to_string());
    let what = match &o.op {
        Op::Append { value } => format!("append {value}"),
        Op::Read { from } => format!("read from {from}"),
    };
    let answer = match &o.outcome {
        Outcome::Appended { position } => format!("position {position}"),
        Outcome::Read { values } => list(values),
        Outcome::Unknown => "unknown".to_string(),
    };
    format!(
        "#{index} (client {}, {}..{ret}: {what} -> {answer})",
        o.client, o.call
    )
}

/// A value list, elided in the middle when long.
fn list(values: &[u64]) -> String {
    const SHOWN: usize = 8;
    if values.len() <= SHOWN {
        return format!("{values:?}");
    }
    let head: Vec<String> = values[..SHOWN / 2].iter().map(u64::to_string).collect();
    let tail: Vec<String> = values[values.len() - SHOWN / 2..]
        .iter()
        .map(u64::to_string)
        .collect();
    format!(
        "[{}, ... {} more ..., {}]",
        head.join(", "),
        values.len() - SHOWN,
        tail.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn append(client: u32, call: u64, ret: u64, value: u64, position: u64) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            op: Op::Append { value },
            outcome: Outcome::Appended { position },
        }
    }

    fn lost_append(client: u32, call: u64, value: u64) -> Operation {
        Operation {
            client,
            call,
            ret: None,
            op: Op::Append { value },
            outcome: Outcome::Unknown,
        }
    }

    fn read(client: u32, call: u64, ret: u64, from: u64, values: &[u64]) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            op: Op::Read { from },
            outcome: Outcome::Read {
                values: values.to_vec(),
            },
        }
    }

    const EXHAUSTIVE: Options = Options {
        step_budget: 200_000,
        mode: SearchMode::Exhaustive,
    };

    /// The verdict's kind, to compare modes whose messages differ.
    fn kind(verdict: &Verdict) -> &'static str {
        match verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation(_) => "violation",
            Verdict::TooComplex => "too complex",
            Verdict::Malformed(_) => "malformed",
        }
    }

    /// Checks in both modes and, when small, by brute force, which must all agree;
    /// returns the reduced mode's verdict.
    fn verdict(history: &[Operation]) -> Verdict {
        let reduced = check(history);
        let exhaustive = check_with(history, EXHAUSTIVE);
        assert_ne!(reduced, Verdict::TooComplex);
        // The exhaustive search may give up on many lost appends; that is why it is not
        // the default.
        if exhaustive != Verdict::TooComplex {
            assert_eq!(
                kind(&reduced),
                kind(&exhaustive),
                "{reduced:?} vs {exhaustive:?}"
            );
        }
        if history.len() <= 8 && !matches!(reduced, Verdict::Malformed(_)) {
            assert_eq!(
                reduced.is_linearizable(),
                brute_force(history),
                "{reduced:?}"
            );
        }
        reduced
    }

    fn assert_linearizable(history: &[Operation]) {
        assert_eq!(verdict(history), Verdict::Linearizable);
    }

    fn assert_violation(history: &[Operation]) -> String {
        match verdict(history) {
            Verdict::Violation(message) => message,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    /// The model straight from its definition, trying every order and every subset of
    /// unanswered appends: the reference for small histories.
    fn brute_force(history: &[Operation]) -> bool {
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|o| !(matches!(o.op, Op::Read { .. }) && o.outcome == Outcome::Unknown))
            .collect();
        let mut used = vec![false; ops.len()];
        search(&ops, &mut used, &mut Vec::new())
    }

    fn deadline(o: &Operation) -> Option<u64> {
        if o.outcome == Outcome::Unknown {
            None
        } else {
            o.ret
        }
    }

    fn search(ops: &[&Operation], used: &mut [bool], ledger: &mut Vec<u64>) -> bool {
        let done = ops
            .iter()
            .zip(used.iter())
            .all(|(o, &u)| u || o.outcome == Outcome::Unknown);
        if done {
            return true;
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            let must_wait = (0..ops.len())
                .any(|j| !used[j] && j != i && deadline(ops[j]).is_some_and(|r| r < ops[i].call));
            if must_wait {
                continue;
            }
            let pushed = match (&ops[i].op, &ops[i].outcome) {
                (Op::Append { value }, Outcome::Appended { position }) => {
                    if *position != ledger.len() as u64 + 1 {
                        continue;
                    }
                    ledger.push(*value);
                    true
                }
                (Op::Append { value }, _) => {
                    ledger.push(*value);
                    true
                }
                (Op::Read { from }, Outcome::Read { values }) => {
                    let start = (*from - 1) as usize;
                    if ledger.get(start..).unwrap_or(&[]) != values.as_slice() {
                        continue;
                    }
                    false
                }
                _ => continue,
            };
            used[i] = true;
            let found = search(ops, used, ledger);
            used[i] = false;
            if pushed {
                ledger.pop();
            }
            if found {
                return true;
            }
        }
        false
    }

    #[test]
    fn empty_and_unanswered_histories_are_linearizable() {
        assert_linearizable(&[]);
        assert_linearizable(&[lost_append(0, 5, 1), lost_append(1, 6, 2)]);
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            append(0, 0, 1, 10, 1),
            append(0, 2, 3, 20, 2),
            read(1, 4, 5, 1, &[10, 20]),
            read(1, 6, 7, 2, &[20]),
            read(1, 8, 9, 3, &[]),
            append(0, 10, 11, 30, 3),
            read(0, 12, 13, 2, &[20, 30]),
        ]);
    }

    #[test]
    fn concurrent_appends_may_land_in_either_order() {
        for (first, second) in [(1, 2), (2, 1)] {
            assert_linearizable(&[
                append(0, 0, 10, 10, first),
                append(1, 1, 9, 20, second),
                read(2, 5, 6, 1, &[]),
            ]);
        }
        // And a read overlapping both may see any prefix of the order they took.
        for seen in [&[][..], &[20], &[20, 10]] {
            assert_linearizable(&[
                append(0, 0, 10, 10, 2),
                append(1, 1, 9, 20, 1),
                read(2, 0, 11, 1, seen),
            ]);
        }
        assert_violation(&[
            append(0, 0, 10, 10, 2),
            append(1, 1, 9, 20, 1),
            read(2, 0, 11, 1, &[10]),
        ]);
    }

    #[test]
    fn stale_read_is_a_violation() {
        let message = assert_violation(&[
            append(0, 0, 5, 10, 1),
            append(0, 6, 8, 20, 2),
            read(1, 9, 10, 1, &[10]),
        ]);
        assert!(message.contains("#2"), "{message}");
        assert_violation(&[append(0, 0, 5, 10, 1), read(1, 6, 7, 1, &[])]);
    }

    #[test]
    fn two_appends_at_one_position_is_a_violation() {
        let message = assert_violation(&[append(0, 0, 5, 10, 1), append(1, 0, 5, 20, 1)]);
        assert!(
            message.contains("#0") && message.contains("#1"),
            "{message}"
        );
    }

    #[test]
    fn reading_a_value_before_its_append_is_called_is_a_violation() {
        assert_violation(&[read(0, 0, 5, 1, &[10]), append(1, 6, 8, 10, 1)]);
        assert_violation(&[read(0, 0, 5, 1, &[10]), lost_append(1, 6, 10)]);
        // Overlapping is fine.
        assert_linearizable(&[read(0, 0, 6, 1, &[10]), append(1, 6, 8, 10, 1)]);
    }

    #[test]
    fn unanswered_append_may_or_may_not_take_effect() {
        // Seen by a later read, even one long after, and pushing a later append along.
        assert_linearizable(&[
            lost_append(0, 0, 10),
            append(1, 50, 60, 20, 2),
            read(2, 70, 71, 1, &[10, 20]),
        ]);
        // Never seen, and never taking a slot.
        assert_linearizable(&[
            lost_append(0, 0, 10),
            append(1, 50, 60, 20, 1),
            read(2, 70, 71, 1, &[20]),
        ]);
        // Taking effect long after the client gave up.
        assert_linearizable(&[
            lost_append(0, 0, 10),
            read(1, 50, 60, 1, &[]),
            read(1, 70, 71, 1, &[10]),
        ]);
        // But not before it was called.
        assert_violation(&[read(1, 0, 5, 1, &[10]), lost_append(0, 6, 10)]);
    }

    #[test]
    fn unread_unanswered_appends_fill_gaps_in_call_order() {
        // Position 2 and 4 belong to nobody that answered; two lost appends fill them.
        assert_linearizable(&[
            append(0, 0, 1, 10, 1),
            lost_append(1, 2, 11),
            append(0, 3, 4, 20, 3),
            lost_append(2, 0, 12),
            append(0, 5, 6, 30, 5),
            read(3, 7, 8, 5, &[30]),
        ]);
        // One lost append cannot fill two gaps.
        assert_violation(&[
            append(0, 0, 1, 10, 1),
            lost_append(1, 2, 11),
            append(0, 3, 4, 20, 3),
            append(0, 5, 6, 30, 5),
        ]);
    }

    #[test]
    fn skipping_a_slot_nobody_fills_is_a_violation() {
        // Position 2 stays empty forever, so the append claiming 3 can never take effect.
        assert_violation(&[append(0, 0, 1, 10, 1), append(0, 2, 3, 20, 3)]);
        // A later read seeing fewer values says the same.
        assert_violation(&[
            append(0, 0, 1, 10, 1),
            append(0, 2, 3, 20, 3),
            read(1, 4, 5, 1, &[10]),
        ]);
        // Or seeing it at the position the append skipped to... a contradiction.
        assert_violation(&[
            append(0, 0, 1, 10, 1),
            append(0, 2, 3, 20, 3),
            read(1, 4, 5, 1, &[10, 20]),
        ]);
        // A lost append may fill the slot; then a read must see three values.
        assert_linearizable(&[
            append(0, 0, 1, 10, 1),
            lost_append(1, 0, 15),
            append(0, 2, 3, 20, 3),
        ]);
        assert_violation(&[
            append(0, 0, 1, 10, 1),
            lost_append(1, 0, 15),
            append(0, 2, 3, 20, 3),
            read(1, 4, 5, 1, &[10, 20]),
        ]);
    }

    #[test]
    fn equal_timestamps_count_as_concurrent() {
        assert_linearizable(&[append(0, 0, 5, 10, 2), append(1, 5, 6, 20, 1)]);
        assert_violation(&[append(0, 0, 5, 10, 2), append(1, 6, 7, 20, 1)]);
    }

    #[test]
    fn reads_without_an_answer_are_ignored() {
        let mut lost_read = read(0, 0, 1, 1, &[]);
        lost_read.outcome = Outcome::Unknown;
        lost_read.ret = None;
        assert_linearizable(&[append(1, 0, 1, 10, 1), lost_read]);
    }

    #[test]
    fn broken_histories_are_malformed() {
        let mut wrong_answer = append(0, 0, 1, 10, 1);
        wrong_answer.outcome = Outcome::Read { values: vec![] };
        let mut backwards = append(0, 5, 6, 10, 1);
        backwards.ret = Some(4);
        for history in [
            vec![wrong_answer],
            vec![backwards],
            vec![read(0, 0, 1, 0, &[])],
            vec![append(0, 0, 1, 10, 1), lost_append(1, 0, 10)],
        ] {
            assert!(
                matches!(check(&history), Verdict::Malformed(_)),
                "{history:?}"
            );
        }
    }

    #[test]
    fn impossible_claims_are_reported_without_search() {
        for (history, needle) in [
            (vec![append(0, 0, 1, 10, 0)], "position 0"),
            (vec![append(0, 0, 1, 10, 2)], "1 appends"),
            (
                vec![append(0, 0, 1, 10, 1), read(0, 2, 3, 1, &[99])],
                "no operation appended",
            ),
            (
                vec![
                    append(0, 0, 1, 10, 1),
                    append(0, 2, 3, 20, 2),
                    read(0, 4, 5, 2, &[10]),
                ],
                "at position 1",
            ),
        ] {
            match check(&history) {
                Verdict::Violation(message) => assert!(message.contains(needle), "{message}"),
                other => panic!("{history:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn exhaustive_search_gives_up_within_its_budget() {
        // Many lost appends and a violation: the exhaustive search must try their subsets.
        let mut history: Vec<Operation> = (0..16)
            .map(|i| lost_append(i, 0, 100 + u64::from(i)))
            .collect();
        history.push(append(20, 0, 1, 1, 1));
        history.push(read(20, 2, 3, 2, &[]));
        history.push(read(20, 4, 5, 1, &[]));
        let tight = Options {
            step_budget: 1_000,
            mode: SearchMode::Exhaustive,
        };
        assert_eq!(check_with(&history, tight), Verdict::TooComplex);
        assert!(matches!(check(&history), Verdict::Violation(_)));
    }

    /// A history produced by a correct ledger: clients issue requests one at a time, each
    /// takes effect at a random instant between its call and its return (or, unanswered,
    /// maybe later, maybe never), and the answers come from replaying those instants in
    /// order against a plain `Vec`.
    fn generate(seed: u64, clients: u32, count: usize, lost_rate: f64) -> Vec<Operation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut free_at: Vec<u64> = (0..clients).map(|_| rng.random_range(0..10)).collect();
        let mut history = Vec::with_capacity(count);
        let mut effects: Vec<(u64, usize)> = Vec::new();
        let mut next_value = 1000;
        for _ in 0..count {
            let client = rng.random_range(0..clients);
            let call = free_at[client as usize] + rng.random_range(0..5);
            let ret = call + rng.random_range(0..20);
            let at = rng.random_range(call..=ret);
            free_at[client as usize] = ret;
            let lost = rng.random_bool(lost_rate);
            let index = history.len();
            if rng.random_bool(0.55) {
                next_value += rng.random_range(1..4);
                let value = next_value;
                if lost {
                    history.push(lost_append(client, call, value));
                    if rng.random_bool(0.5) {
                        effects.push((call + rng.random_range(0..60), index));
                    }
                } else {
                    history.push(append(client, call, ret, value, 0));
                    effects.push((at, index));
                }
            } else if !lost {
                history.push(read(client, call, ret, 1, &[]));
                effects.push((at, index));
            }
        }
        effects.sort_unstable();
        let mut ledger: Vec<u64> = Vec::new();
        for (_, index) in effects {
            let operation = &mut history[index];
            match operation.op {
                Op::Append { value } => {
                    ledger.push(value);
                    if let Outcome::Appended { position } = &mut operation.outcome {
                        *position = ledger.len() as u64;
                    }
                }
                Op::Read { .. } => {
                    let len = ledger.len() as u64;
                    let from = match rng.random_range(0..10) {
                        0..=6 => rng.random_range(len.saturating_sub(4).max(1)..=len + 1),
                        7 | 8 => 1,
                        _ => rng.random_range(len + 1..=len + 3),
                    };
                    operation.op = Op::Read { from };
                    operation.outcome = Outcome::Read {
                        values: ledger.get((from - 1) as usize..).unwrap_or(&[]).to_vec(),
                    };
                }
            }
        }
        history
    }

    /// Drops the last value of a read that must have seen it: its append had returned
    /// before the read was called. `None` if no read qualifies.
    fn corrupt(history: &[Operation], pick: usize) -> Option<Vec<Operation>> {
        let returned_at = |value: u64| {
            history.iter().find_map(|o| match (&o.op, &o.outcome) {
                (Op::Append { value: v }, Outcome::Appended { .. }) if *v == value => o.ret,
                _ => None,
            })
        };
        let victims: Vec<usize> = (0..history.len())
            .filter(|&i| match &history[i].outcome {
                Outcome::Read { values } => values
                    .last()
                    .and_then(|&v| returned_at(v))
                    .is_some_and(|ret| ret < history[i].call),
                _ => false,
            })
            .collect();
        let victim = *victims.get(pick % victims.len().max(1))?;
        let mut corrupted = history.to_vec();
        if let Outcome::Read { values } = &mut corrupted[victim].outcome {
            values.pop();
        }
        Some(corrupted)
    }

    /// One random edit that keeps the history well formed but may break it.
    fn mutate(history: &mut [Operation], rng: &mut ChaCha8Rng) {
        if history.is_empty() {
            return;
        }
        let values: Vec<u64> = history
            .iter()
            .filter_map(|o| match o.op {
                Op::Append { value } => Some(value),
                Op::Read { .. } => None,
            })
            .collect();
        let i = rng.random_range(0..history.len());
        let o = &mut history[i];
        match (rng.random_range(0..8), &mut o.op, &mut o.outcome) {
            (1, _, Outcome::Appended { position }) => {
                *position = if rng.random_bool(0.5) {
                    *position + 1
                } else {
                    (*position).max(2) - 1
                };
            }
            (2, _, Outcome::Read { values }) => {
                values.pop();
            }
            (3, _, Outcome::Read { values: seen }) if !values.is_empty() => {
                let at = rng.random_range(0..=seen.len());
                seen.insert(at, values[rng.random_range(0..values.len())]);
            }
            (4, Op::Read { from }, _) => {
                *from = if rng.random_bool(0.5) {
                    *from + 1
                } else {
                    (*from).max(2) - 1
                };
            }
            (5, Op::Append { .. }, outcome) => {
                *outcome = Outcome::Unknown;
                o.ret = None;
            }
            (6, _, _) => {
                if let Some(ret) = o.ret {
                    if rng.random_bool(0.5) {
                        o.ret = Some(ret + rng.random_range(0..10));
                    } else {
                        o.call = rng.random_range(o.call.saturating_sub(5)..=ret);
                    }
                }
            }
            (7, _, Outcome::Read { values }) if values.len() >= 2 => {
                let (a, b) = (
                    rng.random_range(0..values.len()),
                    rng.random_range(0..values.len()),
                );
                values.swap(a, b);
            }
            _ => {}
        }
    }

    #[test]
    fn two_thousand_operations_from_twenty_clients() {
        for seed in 0..5 {
            let history = generate(seed, 20, 2000, 0.05);
            let started = Instant::now();
            let verdict = check(&history);
            let took = started.elapsed();
            eprintln!(
                "seed {seed}: {} operations checked in {took:?}",
                history.len()
            );
            assert_eq!(verdict, Verdict::Linearizable);
            let corrupted = corrupt(&history, seed as usize).expect("a read to corrupt");
            let started = Instant::now();
            let verdict = check(&corrupted);
            eprintln!(
                "seed {seed}: corrupted history checked in {:?}",
                started.elapsed()
            );
            assert!(matches!(verdict, Verdict::Violation(_)), "{verdict:?}");
        }
    }

    proptest! {
        #[test]
        fn histories_of_a_correct_ledger_are_linearizable(
            seed in any::<u64>(),
            clients in 1u32..=20,
            count in 0usize..400,
            lost_rate in 0.0f64..0.3,
        ) {
            let mut history = generate(seed, clients, count, lost_rate);
            prop_assert_eq!(check(&history), Verdict::Linearizable);
            // The order of the history does not matter.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for i in (1..history.len()).rev() {
                history.swap(i, rng.random_range(0..=i));
            }
            prop_assert_eq!(check(&history), Verdict::Linearizable);
        }

        #[test]
        fn a_read_missing_a_value_it_must_see_is_a_violation(
            seed in any::<u64>(),
            clients in 1u32..=20,
            count in 20usize..400,
            lost_rate in 0.0f64..0.3,
            pick in any::<usize>(),
        ) {
            let history = generate(seed, clients, count, lost_rate);
            let corrupted = corrupt(&history, pick);
            prop_assume!(corrupted.is_some());
            let verdict = corrupted.as_deref().map(check);
            prop_assert!(matches!(verdict, Some(Verdict::Violation(_))), "{:?}", verdict);
        }

        #[test]
        fn reduced_search_agrees_with_exhaustive_search_and_brute_force(
            seed in any::<u64>(),
            clients in 1u32..=4,
            count in 0usize..8,
            lost_rate in 0.0f64..0.8,
            edits in 0usize..4,
        ) {
            let mut history = generate(seed, clients, count, lost_rate);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            for _ in 0..edits {
                mutate(&mut history, &mut rng);
            }
            verdict(&history);
        }

        #[test]
        fn reduced_search_agrees_with_exhaustive_search(
            seed in any::<u64>(),
            clients in 1u32..=5,
            count in 8usize..20,
            lost_rate in 0.0f64..0.8,
            edits in 0usize..4,
        ) {
            let mut history = generate(seed, clients, count, lost_rate);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            for _ in 0..edits {
                mutate(&mut history, &mut rng);
            }
            verdict(&history);
        }
    }
}
