//! What a sync function can ask for besides its payload.
//!
//! Every parameter after the first (the payload) is a *context parameter*,
//! supplied by the runtime through [`FromContext`], in the style of axum
//! extractors:
//!
//! - `&Meta`: where the current message came from (source, position) and
//!   which worker processes it;
//! - `Res<T>`: a shared resource (a connection pool, a lookup table, a client)
//!   registered once with `Flow::resource`;
//! - `&Context`: both.
//!
//! Resources are checked when a flow starts: a function that asks for a
//! resource nobody registered stops the flow before it reads a message.

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Metadata of the message being processed.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Name of the source the message came from.
    pub source: Arc<str>,
    /// Position of the message in its source (for files: the line number, from 1).
    pub position: u64,
    /// Index of the worker processing the message (messages with the same
    /// key always go to the same worker).
    pub worker: usize,
}

/// Shared resources, looked up by type.
#[derive(Clone, Default)]
pub struct Resources {
    items: Vec<(TypeId, &'static str, Arc<dyn Any + Send + Sync>)>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|(_, n, _)| n))
            .finish()
    }
}

impl Resources {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the resource of type `T`.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value);
        match self.items.iter_mut().find(|(t, _, _)| *t == id) {
            Some(slot) => slot.2 = value,
            None => self.items.push((id, type_name::<T>(), value)),
        }
    }

    /// The resource of type `T`, if registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.items
            .iter()
            .find(|(t, _, _)| *t == id)
            .and_then(|(_, _, v)| v.downcast_ref::<T>())
    }

    /// Whether a resource of type `T` is registered.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.get::<T>().is_some()
    }

    /// Type names of the registered resources.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.items.iter().map(|(_, n, _)| *n)
    }
}

/// Everything the runtime offers a step besides its payload.
#[derive(Debug, Clone, Default)]
pub struct Context {
    meta: Meta,
    resources: Arc<Resources>,
    /// Messages a worker's batched steps hold until their batch is full or
    /// the source batch ends (one context per worker).
    pub(crate) held: Held,
}

/// Per batched step: the messages held so far, as a JSON array being built.
#[derive(Debug, Default)]
pub(crate) struct Held(pub(crate) std::sync::Mutex<Vec<HeldBatch>>);

/// The messages one batched step holds.
#[derive(Debug, Default)]
pub(crate) struct HeldBatch {
    /// `[` and the messages so far, comma-separated (no closing `]`).
    pub(crate) json: Vec<u8>,
    /// How many.
    pub(crate) count: usize,
}

impl Clone for Held {
    /// A copied context starts with nothing held.
    fn clone(&self) -> Self {
        Held::default()
    }
}

impl Context {
    /// A context over the given resources.
    pub fn new(resources: Arc<Resources>) -> Self {
        Context {
            meta: Meta::default(),
            resources,
            held: Held::default(),
        }
    }

    /// Metadata of the message being processed.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Mutable metadata: the runtime sets it before each message.
    pub fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }

    /// The shared resources.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }
}

/// A context parameter could not be supplied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError {
    /// The parameter type that could not be supplied.
    pub wanted: &'static str,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no resource of type `{}` is registered: add it with `.resource(value)` on the flow",
            self.wanted
        )
    }
}

impl std::error::Error for ContextError {}

/// A type a sync function can take as a context parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a context parameter of a sync function",
    label = "not a context parameter",
    note = "after the payload, a sync function may take `&Meta`, `&Context` or `Res<T>`; pass other values as part of the payload, or register them as a resource and take `Res<T>`"
)]
pub trait FromContext<'a>: Sized {
    /// Takes the parameter out of the context.
    fn from_context(cx: &'a Context) -> Result<Self, ContextError>;
    /// Checks before start that the parameter can be supplied.
    fn check(resources: &Resources, problems: &mut Vec<String>, function: &str) {
        let _ = (resources, problems, function);
    }
}

impl<'a> FromContext<'a> for &'a Meta {
    #[inline(always)]
    fn from_context(cx: &'a Context) -> Result<Self, ContextError> {
        Ok(&cx.meta)
    }
}

impl<'a> FromContext<'a> for &'a Context {
    #[inline(always)]
    fn from_context(cx: &'a Context) -> Result<Self, ContextError> {
        Ok(cx)
    }
}

/// A shared resource of type `T`, registered on the flow with `.resource(value)`.
#[derive(Debug)]
pub struct Res<'a, T>(&'a T);

impl<T> Clone for Res<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Res<'_, T> {}

impl<'a, T> Res<'a, T> {
    /// Wraps a reference, e.g. to call a sync function directly in a unit test.
    pub fn new(value: &'a T) -> Self {
        Res(value)
    }

    /// The resource, with the context's lifetime.
    pub fn get(self) -> &'a T {
        self.0
    }
}

impl<T> Deref for Res<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0
    }
}

impl<'a, T: Send + Sync + 'static> FromContext<'a> for Res<'a, T> {
    #[inline]
    fn from_context(cx: &'a Context) -> Result<Self, ContextError> {
        cx.resources.get::<T>().map(Res).ok_or(ContextError {
            wanted: type_name::<T>(),
        })
    }

    fn check(resources: &Resources, problems: &mut Vec<String>, function: &str) {
        if !resources.contains::<T>() {
            let have: Vec<_> = resources.names().collect();
            problems.push(format!(
                "function `{function}` takes `Res<{}>`, but no such resource is registered \
                 (registered: {}); add it with `.resource(value)` on the flow",
                type_name::<T>(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ));
        }
    }
}
