//! Steps of flow files: names resolved to registered functions and flows.

use crate::dynamic::{NestedParts, find_flow, registered_flows};
use crate::registry::{self, LookupError};

/// A step name, resolved.
pub(super) enum Resolved {
    Function(&'static registry::Registration),
    Flow(&'static str, NestedParts),
}

/// A registered function, else a registered static flow, by name.
pub(super) fn resolve_step(name: &str) -> Result<Resolved, String> {
    match registry::lookup(name) {
        Ok(r) => Ok(Resolved::Function(r)),
        Err(LookupError::Unknown { .. }) => match find_flow(name) {
            Some(flow) => Ok(Resolved::Flow(flow.name, (flow.build)())),
            None => Err(LookupError::Unknown {
                name: name.to_string(),
                closest: registry::closest(name, step_names().into_iter()),
            }
            .to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Every name a step can use: registered functions and flows.
pub(super) fn step_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = registry::registrations()
        .iter()
        .map(|r| r.info.name)
        .collect();
    names.extend(registered_flows().iter().map(|f| f.name));
    names
}
