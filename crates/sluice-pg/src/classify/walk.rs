//! A complete walk over a libpg_query parse tree.
//!
//! The tree types derive `serde::Serialize`, and serializing visits every
//! field of every node. Walking through a serializer that records what it
//! passes (rather than a hand-written visitor over some 270 node types)
//! means no node type, present or added by a later grammar, is skipped:
//! a function call or a data-modifying statement anywhere in the tree is
//! seen.

use std::fmt;

use serde::ser::{self, Serialize};

/// What the walk reports, as it passes them.
///
/// Names in the tree are lists of `String` nodes (a function's
/// `["pg_catalog", "pg_sleep"]`, a dropped table's `["public", "t"]`). The
/// walk hands each node the strings directly under it as `parts`, and a
/// `List` of strings to its parent as one dotted name.
pub trait Visitor {
    /// A node (struct) named `name` starts.
    fn enter(&mut self, name: &'static str);
    /// The node most recently entered ends.
    fn leave(&mut self, name: &'static str, parts: Vec<String>);
    /// A plain string field `field` of node `node`.
    fn string(&mut self, node: &'static str, field: &'static str, value: &str);
    /// An optional field that is absent.
    fn none(&mut self, node: &'static str, field: &'static str);
    /// An integer field (enums are integers in the tree).
    fn int(&mut self, node: &'static str, field: &'static str, value: i64);
}

struct Frame {
    name: &'static str,
    field: &'static str,
    parts: Vec<String>,
}

/// Walks `tree`, reporting to `visitor`.
pub fn walk<T: Serialize + ?Sized, V: Visitor>(tree: &T, visitor: &mut V) {
    let mut w = Walk {
        frames: Vec::with_capacity(32),
        visitor,
    };
    // The walker's own methods never fail.
    let _ = tree.serialize(&mut w);
}

/// The serializer that walks.
pub struct Walk<'v, V> {
    frames: Vec<Frame>,
    visitor: &'v mut V,
}

impl<V: Visitor> Walk<'_, V> {
    fn here(&self) -> (&'static str, &'static str) {
        self.frames.last().map_or(("", ""), |f| (f.name, f.field))
    }

    /// The nearest enclosing node that is not a `Node` or `String` wrapper.
    fn owner(&mut self) -> Option<&mut Frame> {
        self.frames
            .iter_mut()
            .rev()
            .find(|f| f.name != "Node" && f.name != "String")
    }
}

/// Never produced; serialization through the walk cannot fail.
#[derive(Debug)]
pub struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk error")
    }
}
impl std::error::Error for Never {}
impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

type R = Result<(), Never>;

impl<V: Visitor> ser::Serializer for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> R {
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_i16(self, v: i16) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_i32(self, v: i32) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_i64(self, v: i64) -> R {
        let (node, field) = self.here();
        self.visitor.int(node, field, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_u16(self, v: u16) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_u32(self, v: u32) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_u64(self, v: u64) -> R {
        self.serialize_i64(v as i64)
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        let (node, field) = self.here();
        if node == "String" && field == "sval" {
            if let Some(owner) = self.owner() {
                owner.parts.push(v.to_string());
            }
        } else {
            self.visitor.string(node, field, v);
        }
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        let (node, field) = self.here();
        self.visitor.none(node, field);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, Never> {
        self.visitor.enter(name);
        self.frames.push(Frame {
            name,
            field: "",
            parts: Vec::new(),
        });
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }
}

impl<V: Visitor> ser::SerializeSeq for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<V: Visitor> ser::SerializeTuple for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<V: Visitor> ser::SerializeTupleStruct for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<V: Visitor> ser::SerializeTupleVariant for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<V: Visitor> ser::SerializeMap for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<V: Visitor> ser::SerializeStruct for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> R {
        if let Some(f) = self.frames.last_mut() {
            f.field = key;
        }
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        if let Some(f) = self.frames.pop() {
            if f.name == "List" && !f.parts.is_empty() {
                let dotted = f.parts.join(".");
                if let Some(owner) = self.owner() {
                    owner.parts.push(dotted);
                }
            }
            self.visitor.leave(f.name, f.parts);
        }
        Ok(())
    }
}

impl<V: Visitor> ser::SerializeStructVariant for &mut Walk<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}
