//! How a payload type crosses a flow's boundary: its JSON codecs, if any.
//!
//! A config-driven flow reads its first step's input from a source, writes
//! its last step's output to sinks, and may pass messages through channels:
//! all as JSON. Whether a type can do that is known only where the type is
//! concrete, so `#[sync_function]` records it for the input and output of
//! every function with a [`TypeCodec`] built by [`probe`]'s
//! autoref-specialised methods: a codec is present exactly when the type
//! implements `Deserialize` (to read it) or `Serialize` (to write it).
//!
//! Values move between erased steps in a *slot*: a `&mut dyn Any` that is
//! an `Option<T>`, which the next step takes the value out of. The codecs
//! below read and write such slots.

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

/// A boxed slot (`Box<Option<T>>`), as a config-driven flow's input.
pub type BoxedSlot = Box<dyn Any + Send>;

/// Reads a `T` from JSON bytes into a new slot (a source's decoder).
pub type DecodeFn = crate::connector::DecodeFn<BoxedSlot>;
/// Reads a `T` from a JSON value into a new slot.
pub type FromValueFn = fn(Value) -> Result<BoxedSlot, serde_json::Error>;
/// Writes the `T` in a slot as JSON text.
pub type EncodeFn = fn(&dyn Any) -> Result<Box<RawValue>, CodecError>;
/// Turns the `T` in a slot into a JSON value.
pub type ToValueFn = fn(&dyn Any) -> Result<Value, CodecError>;
/// Copies the `T` in a slot into a new slot (`None` if the slot is empty or
/// of another type): what a retried step is called with again.
pub type CloneFn = fn(&dyn Any) -> Option<BoxedSlot>;

/// What a config-driven flow knows about one payload type.
#[derive(Clone, Copy)]
pub struct TypeCodec {
    /// The type's name (`core::any::type_name`).
    pub name: &'static str,
    /// The type's id: two steps fit when the ids are equal.
    pub id: TypeId,
    /// Present when the type implements `Deserialize`.
    pub decode: Option<DecodeFn>,
    /// Present when the type implements `Deserialize`.
    pub from_value: Option<FromValueFn>,
    /// Present when the type implements `Serialize`.
    pub encode: Option<EncodeFn>,
    /// Present when the type implements `Serialize`.
    pub to_value: Option<ToValueFn>,
    /// Present when the type implements `Clone`.
    pub clone: Option<CloneFn>,
}

impl fmt::Debug for TypeCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeCodec")
            .field("name", &self.name)
            .field("deserialize", &self.decode.is_some())
            .field("serialize", &self.encode.is_some())
            .finish()
    }
}

impl TypeCodec {
    /// Whether this is `serde_json::Value`, the type of the built-in
    /// operators, which any serde type converts to and from.
    pub fn is_json(&self) -> bool {
        self.id == TypeId::of::<Value>()
    }

    /// The codec of `serde_json::Value`.
    pub fn json() -> TypeCodec {
        TypeCodec::of_serde::<Value>()
    }

    /// The codec of a type that implements both serde traits and `Clone`.
    pub fn of_serde<T: Serialize + DeserializeOwned + Clone + Send + 'static>() -> TypeCodec {
        TypeCodec {
            name: std::any::type_name::<T>(),
            id: TypeId::of::<T>(),
            decode: Some(decode::<T>),
            from_value: Some(from_value::<T>),
            encode: Some(encode::<T>),
            to_value: Some(to_value::<T>),
            clone: Some(clone_slot::<T>),
        }
    }
}

/// A slot did not hold the value a codec expected, or serde refused it.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The slot was empty or of another type: a bug in the flow's wiring.
    #[error(
        "internal error: expected a value of type `{expected}` in the slot; please report this"
    )]
    Slot {
        /// The type the codec was made for.
        expected: &'static str,
    },
    /// serde_json could not encode the value.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Writes `value` as JSON text into a box of exactly its length.
///
/// `serde_json::value::to_raw_value` writes into a 128-byte buffer and then
/// shrinks it: a `realloc` per message on the per-message path of every
/// config-driven flow, which leaves a freed fragment behind each time. Here
/// the text is written into a buffer kept by the thread and copied once
/// into an allocation of the right size.
pub fn to_raw_json<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, serde_json::Error> {
    /// Past this, the buffer is given back after use rather than kept.
    const KEEP: usize = 64 * 1024;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let exact = |buf: &[u8]| -> Result<Box<RawValue>, serde_json::Error> {
        let text = std::str::from_utf8(buf).map_err(serde::ser::Error::custom)?;
        // SAFETY: `text` is what serde_json's serializer just wrote for one
        // value: a single well-formed JSON value, without surrounding
        // whitespace (the contract of `from_string_unchecked`).
        Ok(unsafe { RawValue::from_string_unchecked(text.to_owned()) })
    };
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let written = serde_json::to_writer(&mut *buf, value).and_then(|()| exact(&buf));
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            written
        }
        // A `Serialize` impl that encodes another value while it is being
        // encoded: that one gets a buffer of its own.
        Err(_) => serde_json::value::to_raw_value(value),
    })
}

/// Takes the value out of a slot, if it holds a `T`.
#[inline]
pub fn take<T: 'static>(slot: &mut dyn Any) -> Option<T> {
    slot.downcast_mut::<Option<T>>().and_then(Option::take)
}

fn decode<T: DeserializeOwned + Send + 'static>(
    bytes: &[u8],
) -> Result<BoxedSlot, crate::connector::DecodeError> {
    let value: T = crate::connector::serde_decode(bytes)?;
    Ok(Box::new(Some(value)))
}

fn from_value<T: DeserializeOwned + Send + 'static>(
    value: Value,
) -> Result<BoxedSlot, serde_json::Error> {
    let value: T = serde_json::from_value(value)?;
    Ok(Box::new(Some(value)))
}

fn encode<T: Serialize + 'static>(slot: &dyn Any) -> Result<Box<RawValue>, CodecError> {
    match slot.downcast_ref::<Option<T>>() {
        Some(Some(value)) => Ok(to_raw_json(value)?),
        _ => Err(CodecError::Slot {
            expected: std::any::type_name::<T>(),
        }),
    }
}

fn clone_slot<T: Clone + Send + 'static>(slot: &dyn Any) -> Option<BoxedSlot> {
    match slot.downcast_ref::<Option<T>>() {
        Some(Some(value)) => Some(Box::new(Some(value.clone()))),
        _ => None,
    }
}

fn to_value<T: Serialize + 'static>(slot: &dyn Any) -> Result<Value, CodecError> {
    match slot.downcast_ref::<Option<T>>() {
        Some(Some(value)) => Ok(serde_json::to_value(value)?),
        _ => Err(CodecError::Slot {
            expected: std::any::type_name::<T>(),
        }),
    }
}

/// Autoref specialisation: `(&Probe::<T>::NEW).decoder()` is `Some` when
/// `T: Deserialize`, `None` otherwise. Only works where `T` is a concrete
/// type, which it is in the code `#[sync_function]` generates.
#[doc(hidden)]
pub mod probe {
    use super::*;

    /// Carries the type being probed.
    pub struct Probe<T>(PhantomData<fn() -> T>);

    impl<T> Probe<T> {
        /// The probe.
        pub const NEW: Self = Probe(PhantomData);
    }

    impl<T: 'static> Probe<T> {
        /// The probed type's name.
        pub fn probed_name(&self) -> &'static str {
            std::any::type_name::<T>()
        }
        /// The probed type's id.
        pub fn probed_id(&self) -> TypeId {
            TypeId::of::<T>()
        }
    }

    /// Chosen when `T: Deserialize`.
    pub trait HasDeserialize {
        /// The decoder.
        fn decoder(&self) -> Option<DecodeFn>;
        /// The converter from a JSON value.
        fn value_decoder(&self) -> Option<FromValueFn>;
    }
    impl<T: DeserializeOwned + Send + 'static> HasDeserialize for Probe<T> {
        fn decoder(&self) -> Option<DecodeFn> {
            Some(decode::<T>)
        }
        fn value_decoder(&self) -> Option<FromValueFn> {
            Some(from_value::<T>)
        }
    }
    /// The fallback when `T` is not `Deserialize`.
    pub trait NoDeserialize {
        /// None.
        fn decoder(&self) -> Option<DecodeFn> {
            None
        }
        /// None.
        fn value_decoder(&self) -> Option<FromValueFn> {
            None
        }
    }
    impl<T> NoDeserialize for &Probe<T> {}

    /// Chosen when `T: Serialize`.
    pub trait HasSerialize {
        /// The encoder.
        fn encoder(&self) -> Option<EncodeFn>;
        /// The converter to a JSON value.
        fn value_encoder(&self) -> Option<ToValueFn>;
    }
    impl<T: Serialize + 'static> HasSerialize for Probe<T> {
        fn encoder(&self) -> Option<EncodeFn> {
            Some(encode::<T>)
        }
        fn value_encoder(&self) -> Option<ToValueFn> {
            Some(to_value::<T>)
        }
    }
    /// The fallback when `T` is not `Serialize`.
    pub trait NoSerialize {
        /// None.
        fn encoder(&self) -> Option<EncodeFn> {
            None
        }
        /// None.
        fn value_encoder(&self) -> Option<ToValueFn> {
            None
        }
    }
    impl<T> NoSerialize for &Probe<T> {}

    /// Chosen when `T: Clone`.
    pub trait HasClone {
        /// The copier.
        fn cloner(&self) -> Option<CloneFn>;
    }
    impl<T: Clone + Send + 'static> HasClone for Probe<T> {
        fn cloner(&self) -> Option<CloneFn> {
            Some(clone_slot::<T>)
        }
    }
    /// The fallback when `T` is not `Clone`.
    pub trait NoClone {
        /// None.
        fn cloner(&self) -> Option<CloneFn> {
            None
        }
    }
    impl<T> NoClone for &Probe<T> {}
}

#[cfg(test)]
#[allow(clippy::needless_borrow)] // the borrow is what selects the fallback
mod tests {
    use super::probe::*;
    use super::*;

    struct Opaque;

    #[derive(serde::Serialize)]
    struct WriteOnly {
        n: u32,
    }

    #[test]
    fn probes_pick_the_codecs_a_type_has() {
        let json = (&Probe::<Value>::NEW).decoder();
        assert!(json.is_some());
        let opaque_de = (&Probe::<Opaque>::NEW).decoder();
        let opaque_ser = (&Probe::<Opaque>::NEW).encoder();
        assert!(opaque_de.is_none() && opaque_ser.is_none());
        let write_de = (&Probe::<WriteOnly>::NEW).decoder();
        let write_ser = (&Probe::<WriteOnly>::NEW).encoder();
        assert!(write_de.is_none() && write_ser.is_some());
    }

    #[test]
    fn codecs_round_trip_through_slots() {
        let codec = TypeCodec::json();
        let mut slot = (codec.decode.unwrap())(br#"{"a":[1,2]}"#).unwrap();
        let raw = (codec.encode.unwrap())(&*slot).unwrap();
        assert_eq!(raw.get(), r#"{"a":[1,2]}"#);
        assert_eq!(
            take::<Value>(&mut *slot),
            Some(serde_json::json!({"a": [1, 2]}))
        );
        assert!(take::<Value>(&mut *slot).is_none(), "taken once");
        assert!(matches!(
            (codec.encode.unwrap())(&*slot),
            Err(CodecError::Slot { .. })
        ));
    }

    /// Encodes another value with `to_raw_json` while it is being encoded.
    struct Nested(u32);

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner = to_raw_json(&[self.0, self.0 + 1]).map_err(serde::ser::Error::custom)?;
            inner.serialize(s)
        }
    }

    #[test]
    fn raw_json_is_what_serde_json_writes_also_when_nested_or_large() {
        let value = serde_json::json!({"id": 7, "name": "a \"quoted\" é", "tags": [1, 2.5, null]});
        let raw = to_raw_json(&value).unwrap();
        assert_eq!(raw.get(), serde_json::to_string(&value).unwrap());
        // The thread's buffer is in use while `Nested` is encoded.
        let raw = to_raw_json(&vec![Nested(1), Nested(5)]).unwrap();
        assert_eq!(raw.get(), "[[1,2],[5,6]]");
        // Larger than the buffer kept between calls, then small again.
        let big = "x".repeat(200_000);
        assert_eq!(to_raw_json(&big).unwrap().get().len(), 200_002);
        assert_eq!(to_raw_json(&3u8).unwrap().get(), "3");
        // A value serde_json refuses is an error, not a panic.
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        assert!(to_raw_json(&map).is_err());
    }
}
