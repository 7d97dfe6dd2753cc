//! W2: a chain of realistic small steps over an in-memory order record.
//!
//! Twelve `#[sync_function]`s normalise and check an order as it might
//! arrive from a CDC stream (amounts and codes as text): maps, filters and
//! fallible steps. The 5-step chain is the first five. Each chain runs as
//! (a) `flow!` without monitoring, (b) `flow!` with the default `Metrics`,
//! (c) the same functions called by hand, (d) a `Vec<Box<dyn Fn>>`.

use std::fmt;
use std::sync::Arc;

use syncflow::flow::{FlowDef, Worker};
use syncflow::prelude::*;

use super::poll_ready;

/// Messages per batch (one `Worker::flush` per batch).
pub const BATCH: usize = 1024;

/// An order record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: u64,
    pub email: String,
    pub country: String,
    pub currency_code: String,
    pub currency: Currency,
    pub amount: String,
    pub cents: i64,
    pub qty: u32,
    pub total: i64,
    pub high_value: bool,
    pub shard: u16,
}

/// A parsed currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Currency {
    Unknown,
    Eur,
    Usd,
    Gbp,
    Chf,
}

/// Why a step rejected an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderError {
    BadAmount,
    BadCurrency,
    BadQty,
    Overflow,
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderError::BadAmount => "amount is not a decimal with at most 2 places",
            OrderError::BadCurrency => "unknown currency",
            OrderError::BadQty => "quantity out of range",
            OrderError::Overflow => "line total overflows",
        })
    }
}

// ---------------------------------------------------------------- the steps

/// Lowercases the e-mail address.
#[sync_function]
pub fn normalize_email(mut o: Order) -> Order {
    o.email.make_ascii_lowercase();
    o
}

/// Drops orders without a plausible e-mail address.
#[sync_function]
pub fn require_email(o: Order) -> Option<Order> {
    let at = o.email.find('@')?;
    (at > 0 && o.email[at + 1..].contains('.')).then_some(o)
}

/// Parses the amount text ("123.45") into cents.
#[sync_function]
pub fn parse_amount(mut o: Order) -> Result<Order, OrderError> {
    let (int, frac) = o.amount.split_once('.').unwrap_or((&o.amount, ""));
    if int.is_empty() || frac.len() > 2 {
        return Err(OrderError::BadAmount);
    }
    let mut cents: i64 = 0;
    for b in int.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(OrderError::BadAmount);
        }
        cents = cents
            .checked_mul(10)
            .and_then(|c| c.checked_add(i64::from(d)))
            .ok_or(OrderError::BadAmount)?;
    }
    let mut scale = 100;
    for b in frac.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(OrderError::BadAmount);
        }
        scale /= 10;
        cents = cents
            .checked_mul(10)
            .and_then(|c| c.checked_add(i64::from(d)))
            .ok_or(OrderError::BadAmount)?;
    }
    o.cents = cents.checked_mul(scale).ok_or(OrderError::BadAmount)?;
    Ok(o)
}

/// Trims and uppercases the country code.
#[sync_function]
pub fn normalize_country(mut o: Order) -> Order {
    let trimmed = o.country.trim();
    if trimmed.len() != o.country.len() {
        o.country = trimmed.to_owned();
    }
    o.country.make_ascii_uppercase();
    o
}

/// Parses the currency code.
#[sync_function]
pub fn parse_currency(mut o: Order) -> Result<Order, OrderError> {
    o.currency = match o.currency_code.as_bytes() {
        [a, b, c] => match [
            a.to_ascii_lowercase(),
            b.to_ascii_lowercase(),
            c.to_ascii_lowercase(),
        ] {
            [b'e', b'u', b'r'] => Currency::Eur,
            [b'u', b's', b'd'] => Currency::Usd,
            [b'g', b'b', b'p'] => Currency::Gbp,
            [b'c', b'h', b'f'] => Currency::Chf,
            _ => return Err(OrderError::BadCurrency),
        },
        _ => return Err(OrderError::BadCurrency),
    };
    Ok(o)
}

/// Drops orders placed by test accounts.
#[sync_function]
pub fn drop_test_accounts(o: Order) -> Option<Order> {
    (!o.email.ends_with("@example.test")).then_some(o)
}

/// Checks the quantity.
#[sync_function]
pub fn check_qty(o: Order) -> Result<Order, OrderError> {
    if (1..=1000).contains(&o.qty) {
        Ok(o)
    } else {
        Err(OrderError::BadQty)
    }
}

/// Adds VAT by country.
#[sync_function]
pub fn add_tax(mut o: Order) -> Order {
    let percent = match o.country.as_str() {
        "DE" => 19,
        "FR" => 20,
        "GB" => 20,
        "CH" => 8,
        "IT" => 22,
        _ => 0,
    };
    o.cents += o.cents * percent / 100;
    o
}

/// Converts the amount to euro cents.
#[sync_function]
pub fn to_eur(mut o: Order) -> Order {
    let per_mille = match o.currency {
        Currency::Eur | Currency::Unknown => 1000,
        Currency::Usd => 920,
        Currency::Gbp => 1170,
        Currency::Chf => 1050,
    };
    o.cents = o.cents * per_mille / 1000;
    o.currency = Currency::Eur;
    o
}

/// Computes the line total.
#[sync_function]
pub fn line_total(mut o: Order) -> Result<Order, OrderError> {
    o.total = o
        .cents
        .checked_mul(i64::from(o.qty))
        .ok_or(OrderError::Overflow)?;
    Ok(o)
}

/// Flags orders worth more than 1000 euros.
#[sync_function]
pub fn flag_high_value(mut o: Order) -> Order {
    o.high_value = o.total > 100_000;
    o
}

/// Assigns a shard by a hash (FNV-1a) of the e-mail address.
#[sync_function]
pub fn assign_shard(mut o: Order) -> Order {
    let mut h: u32 = 0x811c_9dc5;
    for b in o.email.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    o.shard = (h % 64) as u16;
    o
}

// ---------------------------------------------------------------- the data

/// A deterministic batch of `n` orders starting at `seed`: about 3% filtered
/// and 3% failing in the 5-step chain, more in the 12-step one.
pub fn orders(n: usize, seed: u64) -> Vec<Order> {
    const COUNTRIES: [&str; 6] = ["de", " fr", "GB", "ch ", "it", "nl"];
    const CURRENCIES: [&str; 4] = ["EUR", "usd", "gbp", "Chf"];
    (0..n as u64)
        .map(|k| {
            let i = seed.wrapping_add(k);
            let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
            let email = match r % 50 {
                0 => format!("Customer.{i}.AT.Shop.Example.COM"),
                1 => format!("Tester{i}@Example.Test"),
                _ => format!("Customer.{i}@Shop{}.Example.com", r % 7),
            };
            let amount = match (r >> 8) % 60 {
                0 => format!("{}x.5", r % 100),
                1 => format!("{}", 10 + r % 1000),
                _ => format!("{}.{:02}", 1 + r % 2000, (r >> 16) % 100),
            };
            let currency = if (r >> 20) % 80 == 0 {
                "XBT"
            } else {
                CURRENCIES[((r >> 24) % 4) as usize]
            };
            Order {
                id: i,
                email,
                country: COUNTRIES[((r >> 28) % 6) as usize].to_owned(),
                currency_code: currency.to_owned(),
                currency: Currency::Unknown,
                amount,
                cents: 0,
                qty: if (r >> 32) % 100 == 0 {
                    0
                } else {
                    1 + ((r >> 36) % 20) as u32
                },
                total: 0,
                high_value: false,
                shard: 0,
            }
        })
        .collect()
}

/// Where every variant puts its outputs: the same work for each.
#[derive(Debug, Default)]
pub struct Sink {
    pub out: Vec<Order>,
    pub failed: usize,
}

impl Sink {
    pub fn new() -> Self {
        Sink {
            out: Vec::with_capacity(BATCH),
            failed: 0,
        }
    }
}

impl Emit<Order> for Sink {
    #[inline]
    fn emit(&mut self, item: Order) {
        self.out.push(item);
    }
    #[inline]
    fn fail(&mut self, _: StepFailure<'_>) {
        self.failed += 1;
    }
}

// ---------------------------------------------------------------- (a), (b): flow!

/// The 5-step chain as a flow (with the default `Metrics`).
pub fn flow5() -> Flow<impl FlowDef<Input = Order, Output = Order>> {
    flow!(name = "w2_5", normalize_email -> require_email -> parse_amount -> normalize_country -> parse_currency)
}

/// The 12-step chain as a flow (with the default `Metrics`).
pub fn flow12() -> Flow<impl FlowDef<Input = Order, Output = Order>> {
    flow!(
        name = "w2_12",
        normalize_email
            -> require_email
            -> parse_amount
            -> normalize_country
            -> parse_currency
            -> drop_test_accounts
            -> check_qty
            -> add_tax
            -> to_eur
            -> line_total
            -> flag_high_value
            -> assign_shard
    )
}

/// A worker of a flow, as the runtime would make one.
pub fn worker<F: FlowDef, M: Monitor>(flow: &Flow<F, M>) -> Worker<F, M> {
    flow.worker(Arc::from("bench"), 0)
}

#[inline(always)]
fn drive<F, M>(w: &mut Worker<F, M>, batch: Vec<Order>, sink: &mut Sink)
where
    F: FlowDef<Input = Order, Output = Order>,
    M: Monitor,
{
    for (i, o) in batch.into_iter().enumerate() {
        if let Some(f) = w.start(i as u64 + 1, o, sink) {
            poll_ready(f);
        }
    }
    w.flush();
}

/// (a) or (b), 5 steps: one batch through a worker, flushed at its end.
#[inline(never)]
pub fn w2_flow5<F, M>(w: &mut Worker<F, M>, batch: Vec<Order>, sink: &mut Sink)
where
    F: FlowDef<Input = Order, Output = Order>,
    M: Monitor,
{
    drive(w, batch, sink)
}

/// (a) or (b), 12 steps.
#[inline(never)]
pub fn w2_flow12<F, M>(w: &mut Worker<F, M>, batch: Vec<Order>, sink: &mut Sink)
where
    F: FlowDef<Input = Order, Output = Order>,
    M: Monitor,
{
    drive(w, batch, sink)
}

// ---------------------------------------------------------------- (c): by hand

/// (c) 5 steps: the same functions, called by hand, errors counted.
#[inline(never)]
pub fn w2_hand5(batch: Vec<Order>, sink: &mut Sink) {
    for o in batch {
        let o = normalize_email(o);
        let Some(o) = require_email(o) else { continue };
        let o = match parse_amount(o) {
            Ok(o) => o,
            Err(_) => {
                sink.failed += 1;
                continue;
            }
        };
        let o = normalize_country(o);
        let o = match parse_currency(o) {
            Ok(o) => o,
            Err(_) => {
                sink.failed += 1;
                continue;
            }
        };
        sink.out.push(o);
    }
}

/// (c) 12 steps.
#[inline(never)]
pub fn w2_hand12(batch: Vec<Order>, sink: &mut Sink) {
    for o in batch {
        let o = normalize_email(o);
        let Some(o) = require_email(o) else { continue };
        let o = match parse_amount(o) {
            Ok(o) => o,
            Err(_) => {
                sink.failed += 1;
                continue;
            }
        };
        let o = normalize_country(o);
        let o = match parse_currency(o) {
            Ok(o) => o,
            Err(_) => {
                sink.failed += 1;
                continue;
            }
        };
        let Some(o) = drop_test_accounts(o) else {
            continue;
        };
        let o = match check_qty(o) {
            Ok(o) => o,
            Err(_) => {
                sink.failed += 1;
                continue;
            }
        };
        let o = add_tax(o);
        let o = to_eur(o);
        let o = match line_total(o) {
            Ok(o) => o,
            Err(_) => {
                sink.failed += 1;
                continue;
            }
        };
        let o = flag_high_value(o);
        let o = assign_shard(o);
        sink.out.push(o);
    }
}

// ---------------------------------------------------------------- (d): dyn chain

/// One erased step: `Ok(None)` drops the message.
pub type DynStep = Box<dyn Fn(Order) -> Result<Option<Order>, OrderError> + Send + Sync>;

fn map(f: fn(Order) -> Order) -> DynStep {
    Box::new(move |o| Ok(Some(f(o))))
}
fn filter(f: fn(Order) -> Option<Order>) -> DynStep {
    Box::new(move |o| Ok(f(o)))
}
fn fallible(f: fn(Order) -> Result<Order, OrderError>) -> DynStep {
    Box::new(move |o| f(o).map(Some))
}

/// The first `n` (5 or 12) steps, erased.
pub fn dyn_chain(n: usize) -> Vec<DynStep> {
    let all: Vec<DynStep> = vec![
        map(normalize_email),
        filter(require_email),
        fallible(parse_amount),
        map(normalize_country),
        fallible(parse_currency),
        filter(drop_test_accounts),
        fallible(check_qty),
        map(add_tax),
        map(to_eur),
        fallible(line_total),
        map(flag_high_value),
        map(assign_shard),
    ];
    all.into_iter().take(n).collect()
}

/// (d) either chain (one function: LLVM would merge two identical ones,
/// which hides one of them from callgrind).
#[inline(never)]
pub fn w2_dyn(chain: &[DynStep], batch: Vec<Order>, sink: &mut Sink) {
    'messages: for mut o in batch {
        for step in chain {
            match step(o) {
                Ok(Some(next)) => o = next,
                Ok(None) => continue 'messages,
                Err(_) => {
                    sink.failed += 1;
                    continue 'messages;
                }
            }
        }
        sink.out.push(o);
    }
}

/// The variants of one chain length, ready to run batches.
pub struct Variants<F: FlowDef> {
    pub bare: Worker<F, NoMonitor>,
    pub metrics: Worker<F, Metrics>,
    pub dyn_chain: Vec<DynStep>,
}

impl<F: FlowDef<Input = Order, Output = Order>> Variants<F> {
    fn new(flow: impl Fn() -> Flow<F>, steps: usize) -> Self {
        Variants {
            bare: worker(&flow().without_monitoring()),
            metrics: worker(&flow()),
            dyn_chain: dyn_chain(steps),
        }
    }
}

/// Which implementation of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// (c) the functions called by hand: the baseline.
    Hand,
    /// (a) `flow!` without monitoring.
    FlowBare,
    /// (b) `flow!` with the default `Metrics`.
    FlowMetrics,
    /// (d) `Vec<Box<dyn Fn>>`.
    Dyn,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Hand, Kind::FlowBare, Kind::FlowMetrics, Kind::Dyn];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Hand => "hand-written",
            Kind::FlowBare => "flow! no monitoring",
            Kind::FlowMetrics => "flow! + Metrics",
            Kind::Dyn => "Vec<Box<dyn Fn>>",
        }
    }

    /// A short name, for callgrind and command lines.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Hand => "hand",
            Kind::FlowBare => "flow",
            Kind::FlowMetrics => "metrics",
            Kind::Dyn => "dyn",
        }
    }

    /// Upper bound on time relative to the hand-written chain, if any.
    pub fn target(self) -> Option<f64> {
        match self {
            Kind::FlowBare => Some(1.05),
            Kind::FlowMetrics => Some(1.10),
            Kind::Hand | Kind::Dyn => None,
        }
    }
}

/// Both chains, every variant.
pub struct Chains<F5: FlowDef, F12: FlowDef> {
    pub five: Variants<F5>,
    pub twelve: Variants<F12>,
}

/// Builds both chains' variants.
pub fn chains()
-> Chains<impl FlowDef<Input = Order, Output = Order>, impl FlowDef<Input = Order, Output = Order>>
{
    Chains {
        five: Variants::new(flow5, 5),
        twelve: Variants::new(flow12, 12),
    }
}

impl<F5, F12> Chains<F5, F12>
where
    F5: FlowDef<Input = Order, Output = Order>,
    F12: FlowDef<Input = Order, Output = Order>,
{
    /// Runs one batch through one variant of the chain of `steps` (5 or 12).
    /// The batch is consumed; outputs and failures go to `sink`.
    #[inline]
    pub fn run(&mut self, steps: usize, kind: Kind, batch: Vec<Order>, sink: &mut Sink) {
        match (steps, kind) {
            (5, Kind::Hand) => w2_hand5(batch, sink),
            (5, Kind::FlowBare) => w2_flow5(&mut self.five.bare, batch, sink),
            (5, Kind::FlowMetrics) => w2_flow5(&mut self.five.metrics, batch, sink),
            (5, Kind::Dyn) => w2_dyn(&self.five.dyn_chain, batch, sink),
            (12, Kind::Hand) => w2_hand12(batch, sink),
            (12, Kind::FlowBare) => w2_flow12(&mut self.twelve.bare, batch, sink),
            (12, Kind::FlowMetrics) => w2_flow12(&mut self.twelve.metrics, batch, sink),
            (12, Kind::Dyn) => w2_dyn(&self.twelve.dyn_chain, batch, sink),
            _ => panic!("W2 chains have 5 or 12 steps"),
        }
    }
}
