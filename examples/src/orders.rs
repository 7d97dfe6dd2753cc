//! Order change events: parse → validate → enrich → to_row.
//!
//! The input is a stream of change events on an `orders` table, in an
//! envelope close to Debezium's (`op`, `before`, `after`, `source`). The
//! flow turns every created or updated order into one row per order line,
//! priced in cents and tagged with the product category and the customer's
//! tier, ready for a warehouse table.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use syncflow::prelude::*;

/// A change event on the `orders` table, as the source delivers it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChangeEvent {
    /// `c` (create), `u` (update), `d` (delete) or `r` (snapshot read).
    pub op: String,
    /// The row before the change (updates and deletes).
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    /// The row after the change (creates, updates, reads).
    #[serde(default)]
    pub after: Option<serde_json::Value>,
    /// Commit time in milliseconds since the epoch.
    pub ts_ms: i64,
}

/// An order row, as stored in the `orders` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// Customer id.
    pub customer: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// `pending`, `paid`, `shipped` or `cancelled`.
    pub status: String,
    /// The order lines.
    pub lines: Vec<Line>,
    /// Commit time of the change, copied from the event.
    #[serde(default)]
    pub ts_ms: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Line {
    /// Product code.
    pub sku: String,
    /// Quantity.
    pub qty: u32,
    /// Unit price as a decimal string, e.g. `"12.99"`.
    pub unit_price: String,
}

/// Why an event could not be turned into an order.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The operation is not one of `c`, `u`, `d`, `r`.
    UnknownOp(String),
    /// A create/update/read without an `after` image.
    MissingAfter,
    /// The `after` image is not an order row.
    BadRow(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownOp(op) => {
                write!(f, "unknown operation `{op}` (expected c, u, d or r)")
            }
            ParseError::MissingAfter => f.write_str("event has no `after` image"),
            ParseError::BadRow(e) => write!(f, "`after` is not an order row: {e}"),
        }
    }
}

/// Turns a change event into the order it describes; deletes are dropped.
#[sync_function]
pub fn parse(event: ChangeEvent) -> Result<Option<Order>, ParseError> {
    match event.op.as_str() {
        "d" => Ok(None),
        "c" | "u" | "r" => {
            let after = event.after.ok_or(ParseError::MissingAfter)?;
            let mut order: Order =
                serde_json::from_value(after).map_err(|e| ParseError::BadRow(e.to_string()))?;
            order.ts_ms = event.ts_ms;
            Ok(Some(order))
        }
        other => Err(ParseError::UnknownOp(other.to_string())),
    }
}

/// An order that passed validation, with prices in cents (it can be saved
/// to a channel and loaded again: see `flows/orders.yaml`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ValidOrder {
    /// The order.
    pub order: Order,
    /// Unit price of each line, in cents, in line order.
    pub unit_cents: Vec<i64>,
}

/// Why an order was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `"12.99"` into 1299 cents; at most two decimals, no sign.
pub fn cents(price: &str) -> Option<i64> {
    let (whole, frac) = price.split_once('.').unwrap_or((price, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<2}");
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse::<i64>().ok()?)
}

/// Checks an order: known currency, at least one line, positive quantities,
/// well-formed prices. Cancelled orders are dropped.
#[sync_function]
pub fn validate(order: Order) -> Result<Option<ValidOrder>, Invalid> {
    if order.status == "cancelled" {
        return Ok(None);
    }
    if !["EUR", "USD", "GBP"].contains(&order.currency.as_str()) {
        return Err(Invalid(format!(
            "order {}: unsupported currency `{}`",
            order.id, order.currency
        )));
    }
    if order.lines.is_empty() {
        return Err(Invalid(format!("order {}: no lines", order.id)));
    }
    let mut unit_cents = Vec::with_capacity(order.lines.len());
    for (i, line) in order.lines.iter().enumerate() {
        if line.qty == 0 {
            return Err(Invalid(format!(
                "order {} line {}: quantity is 0",
                order.id,
                i + 1
            )));
        }
        let c = cents(&line.unit_price).ok_or_else(|| {
            Invalid(format!(
                "order {} line {}: bad unit price `{}`",
                order.id,
                i + 1,
                line.unit_price
            ))
        })?;
        unit_cents.push(c);
    }
    Ok(Some(ValidOrder { order, unit_cents }))
}

/// Reference data the enrich step reads: product categories and customer tiers.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Category of each product code.
    pub categories: HashMap<String, String>,
    /// Tier of each customer (`gold`, `silver`); others are `standard`.
    pub tiers: HashMap<String, String>,
}

impl Catalog {
    /// The sample catalog that goes with `examples/data/orders.jsonl`.
    pub fn sample() -> Self {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Catalog {
            categories: pairs(&[
                ("KB-01", "keyboards"),
                ("MS-02", "mice"),
                ("MN-27", "monitors"),
                ("CB-10", "cables"),
            ]),
            tiers: pairs(&[("c-100", "gold"), ("c-200", "silver")]),
        }
    }
}

/// An order with reference data attached.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichedOrder {
    /// The validated order.
    pub valid: ValidOrder,
    /// Category of each line, in line order.
    pub categories: Vec<String>,
    /// The customer's tier.
    pub tier: String,
}

/// Looks up each product's category and the customer's tier in the catalog.
#[sync_function]
pub fn enrich(valid: ValidOrder, catalog: Res<Catalog>) -> EnrichedOrder {
    let categories = valid
        .order
        .lines
        .iter()
        .map(|l| {
            catalog
                .categories
                .get(&l.sku)
                .cloned()
                .unwrap_or_else(|| "uncategorised".into())
        })
        .collect();
    let tier = catalog
        .tiers
        .get(&valid.order.customer)
        .cloned()
        .unwrap_or_else(|| "standard".into());
    EnrichedOrder {
        valid,
        categories,
        tier,
    }
}

/// One warehouse row per order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRow {
    /// Order id.
    pub order_id: u64,
    /// Line number, from 1.
    pub line_no: u32,
    /// Customer id.
    pub customer: String,
    /// Customer tier.
    pub tier: String,
    /// Product code.
    pub sku: String,
    /// Product category.
    pub category: String,
    /// Quantity.
    pub qty: u32,
    /// Line total in cents.
    pub total_cents: i64,
    /// Currency.
    pub currency: String,
    /// Order status.
    pub status: String,
    /// Commit time of the change.
    pub ts_ms: i64,
}

/// Splits an order into one row per line (fan-out).
#[sync_function]
pub fn to_row(e: EnrichedOrder) -> Vec<OrderRow> {
    let order = &e.valid.order;
    order
        .lines
        .iter()
        .zip(&e.valid.unit_cents)
        .zip(&e.categories)
        .enumerate()
        .map(|(i, ((line, unit), category))| OrderRow {
            order_id: order.id,
            line_no: i as u32 + 1,
            customer: order.customer.clone(),
            tier: e.tier.clone(),
            sku: line.sku.clone(),
            category: category.clone(),
            qty: line.qty,
            total_cents: unit * i64::from(line.qty),
            currency: order.currency.clone(),
            status: order.status.clone(),
            ts_ms: order.ts_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_parses_prices_strictly() {
        assert_eq!(cents("12.99"), Some(1299));
        assert_eq!(cents("12.9"), Some(1290));
        assert_eq!(cents("12"), Some(1200));
        assert_eq!(cents("0.05"), Some(5));
        assert_eq!(cents("-1.00"), None);
        assert_eq!(cents("1.999"), None);
        assert_eq!(cents("abc"), None);
        assert_eq!(cents(".5"), None);
    }
}
