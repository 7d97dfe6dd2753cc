//! The registry: every `#[sync_function]` linked into the binary, with its
//! description, sorted, and looked up by name with suggestions.

use syncflow::prelude::*;
use syncflow::registry::{self, LookupError};

// Functions of the library crate are registered once the crate is linked.
use syncflow_tests as _;

const PARSE_LINE: u32 = line!() + 5;
/// Parses an order line.
///
/// Second paragraph.
#[sync_function(name = "parse_order")]
pub fn parse(line: String) -> Result<u64, std::num::ParseIntError> {
    line.trim().parse()
}

#[sync_function]
async fn enrich(id: u64) -> Option<String> {
    Some(id.to_string())
}

/// Registered, never used in a flow.
#[sync_function]
fn unused(words: Vec<String>) -> Vec<String> {
    words
}

mod left {
    use syncflow::prelude::*;

    #[sync_function(name = "twin")]
    fn one(n: i32) -> i32 {
        n
    }
}

mod right {
    use syncflow::prelude::*;

    #[sync_function(name = "twin")]
    fn other(n: i32) -> i32 {
        n
    }
}

#[test]
fn functions_are_sorted_by_name_then_module() {
    let all = registry::functions();
    let keys: Vec<_> = all.iter().map(|f| (f.name, f.module)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let names: Vec<_> = all.iter().map(|f| f.name).collect();
    for name in ["parse_order", "enrich", "unused", "twin", "lib_trim"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // Renamed functions are registered under the new name only.
    assert!(!names.contains(&"parse"));
    // Two functions share `twin`, in module order.
    let twins: Vec<_> = all
        .iter()
        .filter(|f| f.name == "twin")
        .map(|f| f.module)
        .collect();
    assert_eq!(twins, ["registry::left", "registry::right"]);
}

#[test]
fn a_registration_describes_the_function() {
    let f = registry::find("parse_order").unwrap();
    assert_eq!(f.name, "parse_order");
    assert_eq!(f.fn_name, "parse");
    assert_eq!(f.module, "registry");
    assert_eq!(f.doc, "Parses an order line.\n\nSecond paragraph.");
    assert_eq!(f.summary(), "Parses an order line.");
    assert_eq!(f.input_type(), "alloc::string::String");
    assert_eq!(f.output_type(), "u64");
    assert_eq!(f.shape, Shape::Fallible);
    assert!(!f.is_async);
    assert!(f.file.ends_with("registry.rs"), "{}", f.file);
    assert_eq!(f.line, PARSE_LINE);

    let e = registry::find("enrich").unwrap();
    assert_eq!((e.fn_name, e.doc, e.summary()), ("enrich", "", ""));
    assert_eq!(e.input_type(), "u64");
    assert_eq!(e.output_type(), "alloc::string::String");
    assert_eq!(e.shape, Shape::Filter);
    assert!(e.is_async);

    let u = registry::find("unused").unwrap();
    assert_eq!(u.shape, Shape::FanOut);
    assert_eq!(u.input_type(), "alloc::vec::Vec<alloc::string::String>");
    assert_eq!(u.output_type(), "alloc::string::String");

    let lib = registry::find("lib_trim").unwrap();
    assert_eq!(lib.module, "syncflow_tests::lib_ops");
    assert_eq!(lib.fn_name, "trim");
}

#[test]
fn the_registry_and_flows_share_one_description() {
    let flow = flow!(parse -> enrich);
    assert!(std::ptr::eq(
        flow.steps()[0],
        registry::find("parse_order").unwrap()
    ));
    assert!(std::ptr::eq(
        flow.steps()[1],
        registry::find("enrich").unwrap()
    ));
}

#[test]
fn unknown_names_get_the_closest_suggestions() {
    let err = registry::find("parse_ordr").unwrap_err();
    assert_eq!(
        err,
        LookupError::Unknown {
            name: "parse_ordr".into(),
            closest: vec!["parse_order".into()],
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("no sync function is registered as `parse_ordr`"),
        "{text}"
    );
    assert!(text.contains("did you mean `parse_order`?"), "{text}");

    // The Rust name of a renamed function is not its registered name.
    assert!(matches!(
        registry::find("parse"),
        Err(LookupError::Unknown { .. })
    ));

    let err = registry::find("zzzzzzzzzz").unwrap_err();
    assert_eq!(
        err,
        LookupError::Unknown {
            name: "zzzzzzzzzz".into(),
            closest: vec![]
        }
    );
    assert!(
        err.to_string().contains("run `syncflow functions`"),
        "{err}"
    );
}

#[test]
fn a_shared_name_is_ambiguous() {
    let err = registry::find("twin").unwrap_err();
    assert_eq!(
        err,
        LookupError::Ambiguous {
            name: "twin".into(),
            modules: vec!["registry::left".into(), "registry::right".into()],
        }
    );
    let text = err.to_string();
    assert!(text.contains("registry::left, registry::right"), "{text}");
    assert!(text.contains("#[sync_function(name = \"...\")]"), "{text}");
}
