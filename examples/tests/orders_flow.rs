//! The orders example flow, run in memory over its sample data.

use syncflow::prelude::*;
use syncflow_examples::orders::{Catalog, ChangeEvent, OrderRow, enrich, parse, to_row, validate};

fn sample_events() -> (Vec<ChangeEvent>, usize) {
    let text = include_str!("../data/orders.jsonl");
    let mut malformed = 0;
    let events = text
        .lines()
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(e) => Some(e),
            Err(_) => {
                malformed += 1;
                None
            }
        })
        .collect();
    (events, malformed)
}

#[tokio::test]
async fn sample_data_gives_rows_failures_and_filtered() {
    let (events, malformed) = sample_events();
    assert_eq!(malformed, 1, "line 9 of the sample is cut off on purpose");
    let flow =
        flow!(name = "orders", parse -> validate -> enrich -> to_row).resource(Catalog::sample());
    let done = flow.run_collect(events).await.unwrap();

    let ids: Vec<(u64, u32)> = done
        .outputs
        .iter()
        .map(|r: &OrderRow| (r.order_id, r.line_no))
        .collect();
    assert_eq!(
        ids,
        vec![
            (1001, 1),
            (1001, 2),
            (1002, 1),
            (1002, 1),
            (1003, 1),
            (1003, 2),
            (1009, 1),
            (1009, 2),
            (1009, 3),
            (900, 1)
        ]
    );
    let first = &done.outputs[0];
    assert_eq!(
        (
            first.tier.as_str(),
            first.category.as_str(),
            first.total_cents
        ),
        ("gold", "keyboards", 8990)
    );
    let cable = &done.outputs[4];
    assert_eq!((cable.tier.as_str(), cable.total_cents), ("silver", 2250));
    assert_eq!(done.outputs[5].category, "uncategorised");

    let failed: Vec<(&str, &str)> = done
        .failures
        .iter()
        .map(|f| (f.step, f.error.as_str()))
        .collect();
    assert_eq!(failed.len(), 5, "{failed:#?}");
    assert_eq!(
        failed[0],
        ("validate", "order 1004: unsupported currency `JPY`")
    );
    assert_eq!(failed[1], ("validate", "order 1006 line 1: quantity is 0"));
    assert_eq!(
        failed[2],
        ("parse", "unknown operation `x` (expected c, u, d or r)")
    );
    assert_eq!(
        failed[3],
        ("validate", "order 1010 line 1: bad unit price `9.999`")
    );
    assert_eq!(failed[4].0, "parse");
    assert!(
        failed[4].1.contains("missing field `currency`"),
        "{}",
        failed[4].1
    );

    let stats = flow.stats().unwrap().snapshot();
    let parse_stats = &stats[0];
    assert_eq!(
        (parse_stats.calls, parse_stats.filtered, parse_stats.failed),
        (13, 1, 2)
    );
    let validate_stats = &stats[1];
    assert_eq!(
        (
            validate_stats.calls,
            validate_stats.filtered,
            validate_stats.failed
        ),
        (10, 1, 3)
    );
    assert_eq!(stats[3].out, 10);
}

#[tokio::test]
async fn missing_catalog_is_reported_before_start() {
    let flow = flow!(parse -> validate -> enrich -> to_row);
    let err = flow.check().unwrap_err().to_string();
    assert!(err.contains("`enrich`") && err.contains("Catalog"), "{err}");
}
