//! A serde deserializer over dotted labels, so that a container's labels decode into the same
//! types as the config file: `berth.auth.realm=Registry` is `auth.realm = "Registry"`.
//!
//! Every value is a string; the type being decoded says what it must be: a boolean (`true`,
//! `false`, `1`, `0`, `yes`, `no`, any case), a number, a comma list, or a group of labels
//! under a common prefix (a table). A bad value is an error naming the label it came from,
//! and decoding goes on without it, so one pass reports every bad value; keys that the type
//! does not know are reported by their label name, as unknown keys of the file are.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{SeqDeserializer, StrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use crate::files::FilePath;

/// A value and where it came from (`label berth.port`, `env VIRTUAL_PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    /// The text, trimmed.
    pub text: String,
    /// Where it came from, for errors.
    pub origin: String,
}

/// The most dotted parts a key may have: more than any type decoded here nests, and few
/// enough that a tree built from a hostile label stays shallow.
pub(crate) const MAX_DEPTH: usize = 4;

/// Labels as a tree: `auth.realm` is the entry `realm` of the table `auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tree(BTreeMap<String, Node>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Value(Value),
    Table(Tree),
}

/// A value that could not be decoded: the key it sits under (`auth.methods`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The dotted key.
    pub key: String,
    /// Where the value came from (`label berth.auth.methods`).
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

impl Tree {
    /// Sets `key` (dotted) to `value`.
    ///
    /// # Errors
    /// When `key` has an empty segment or more than [`MAX_DEPTH`] parts, or a value and a
    /// table would share a name
    /// (`berth.auth=x` beside `berth.auth.realm=y`); the message names the other key.
    pub(crate) fn insert(&mut self, key: &str, value: Value) -> Result<(), String> {
        if key.split('.').any(str::is_empty) {
            return Err("empty segment in the name".to_string());
        }
        if key.split('.').count() > MAX_DEPTH {
            return Err(format!(
                "more than {MAX_DEPTH} dotted parts in the name: no key is that deep"
            ));
        }
        let mut table = self;
        let mut walked = String::new();
        let mut segments = key.split('.').peekable();
        while let Some(segment) = segments.next() {
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(segment);
            if segments.peek().is_none() {
                return match table.0.get(segment) {
                    Some(Node::Table(_)) => Err(format!(
                        "{walked} is a group of keys here ({walked}.*), not a value"
                    )),
                    _ => {
                        table.0.insert(segment.to_string(), Node::Value(value));
                        Ok(())
                    }
                };
            }
            let node = table
                .0
                .entry(segment.to_string())
                .or_insert_with(|| Node::Table(Tree::default()));
            table = match node {
                Node::Table(t) => t,
                Node::Value(v) => {
                    return Err(format!(
                        "{walked} is set as a value ({}), so it cannot hold keys",
                        v.origin
                    ))
                }
            };
        }
        Ok(())
    }

    /// Removes `key` (dotted), value or group, and returns where it came from (for a group,
    /// its first value).
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let origin = self.origin_of(key)?;
        self.remove(key);
        Some(origin)
    }

    /// Where every value at or under `key` came from.
    pub(crate) fn origins_under(&self, key: &str) -> Vec<String> {
        fn walk(node: &Node, out: &mut Vec<String>) {
            match node {
                Node::Value(v) => out.push(v.origin.clone()),
                Node::Table(t) => t.0.values().for_each(|n| walk(n, out)),
            }
        }
        let mut out = Vec::new();
        if let Some(node) = self.node(key) {
            walk(node, &mut out);
        }
        out
    }

    /// The value at `key` (dotted), if there is one.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self.node(key)? {
            Node::Value(v) => Some(v),
            Node::Table(_) => None,
        }
    }

    /// Where the value at `key` came from; for a group, where its first value came from.
    fn origin_of(&self, key: &str) -> Option<String> {
        let mut node = self.node(key)?;
        loop {
            match node {
                Node::Value(v) => return Some(v.origin.clone()),
                Node::Table(t) => node = t.0.values().next()?,
            }
        }
    }

    fn node(&self, key: &str) -> Option<&Node> {
        let (parent, last) = match key.rsplit_once('.') {
            Some((parent, last)) => (
                parent
                    .split('.')
                    .try_fold(self, |t, segment| match t.0.get(segment) {
                        Some(Node::Table(inner)) => Some(inner),
                        _ => None,
                    })?,
                last,
            ),
            None => (self, key),
        };
        parent.0.get(last)
    }

    fn table_mut(&mut self, key: &str) -> Option<&mut Tree> {
        key.split('.')
            .try_fold(self, |t, segment| match t.0.get_mut(segment) {
                Some(Node::Table(inner)) => Some(inner),
                _ => None,
            })
    }

    fn remove(&mut self, key: &str) {
        let (parent, last) = match key.rsplit_once('.') {
            Some((parent, last)) => match self.table_mut(parent) {
                Some(t) => (t, last),
                None => return,
            },
            None => (self, key),
        };
        parent.0.remove(last);
    }
}

/// Decodes `tree` into `T`. Bad values are left out (the key decodes as absent) and returned
/// as problems, with the keys `T` does not know, by dotted name. A value of the type
/// [`FilePath`] decodes only as `check_file` allows, into the path it returns.
pub(crate) fn decode<T: DeserializeOwned + Default>(
    mut tree: Tree,
    check_file: &dyn Fn(&str) -> Result<String, String>,
) -> (T, Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    loop {
        let mut unknown = Vec::new();
        let decoded = serde_ignored::deserialize(
            Decoder {
                node: NodeRef::Table(&tree),
                key: String::new(),
                check_file,
            },
            |path| unknown.push(dotted(&path)),
        );
        match decoded {
            Ok(value) => return (value, problems, unknown),
            Err(e) => {
                let Some(origin) = tree.origin_of(&e.key) else {
                    // Only the whole set can be wrong (never for a struct of options): there
                    // is nothing to leave out, so report it and stop.
                    problems.push(Problem {
                        key: e.key,
                        origin: "labels".to_string(),
                        message: e.message,
                    });
                    return (T::default(), problems, unknown);
                };
                tree.remove(&e.key);
                problems.push(Problem {
                    key: e.key,
                    origin,
                    message: e.message,
                });
            }
        }
    }
}

fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Root => String::new(),
    }
}

/// Why a value did not decode; `key` is filled in at the value.
#[derive(Debug)]
pub(crate) struct Error {
    key: String,
    message: String,
}

impl Error {
    fn at(mut self, key: &str) -> Self {
        if self.key.is_empty() {
            self.key = key.to_string();
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Error {
            key: String::new(),
            message: msg.to_string(),
        }
    }
}

#[derive(Clone, Copy)]
enum NodeRef<'a> {
    Value(&'a Value),
    Table(&'a Tree),
}

struct Decoder<'a> {
    node: NodeRef<'a>,
    key: String,
    check_file: &'a dyn Fn(&str) -> Result<String, String>,
}

impl Decoder<'_> {
    fn text(&self) -> Result<&str, Error> {
        match self.node {
            NodeRef::Value(v) => Ok(&v.text),
            NodeRef::Table(_) => Err(Error {
                key: self.key.clone(),
                message: format!("has keys under it ({}.*), but takes a value", self.key),
            }),
        }
    }

    fn parsed<N: std::str::FromStr>(&self, what: &str) -> Result<N, Error> {
        let text = self.text()?;
        text.parse().map_err(|_| Error {
            key: self.key.clone(),
            message: format!("invalid value \"{text}\": expected {what}"),
        })
    }
}

/// Parses `true`/`false` (also `1`/`0`, `yes`/`no`, any case).
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!(
            "invalid boolean \"{value}\": expected true or false"
        )),
    }
}

/// Splits a comma list, trimming entries and dropping empty ones.
pub fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

macro_rules! numbers {
    ($($method:ident $visit:ident $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n: $ty = self.parsed($what)?;
            visitor.$visit::<Error>(n).map_err(|e| e.at(&self.key))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Decoder<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            NodeRef::Value(v) => visitor
                .visit_str::<Error>(&v.text)
                .map_err(|e| e.at(&self.key)),
            NodeRef::Table(t) => visitor
                .visit_map(Entries::new(t, &self.key, self.check_file))
                .map_err(|e| e.at(&self.key)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor
            .visit_str::<Error>(self.text()?)
            .map_err(|e| e.at(&self.key))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let b = parse_bool(self.text()?).map_err(|message| Error {
            key: self.key.clone(),
            message,
        })?;
        visitor.visit_bool::<Error>(b).map_err(|e| e.at(&self.key))
    }

    numbers! {
        deserialize_u8 visit_u8 u8, "a whole number from 0 to 255";
        deserialize_u16 visit_u16 u16, "a whole number from 0 to 65535";
        deserialize_u32 visit_u32 u32, "a whole number from 0 to 4294967295";
        deserialize_u64 visit_u64 u64, "a whole number";
        deserialize_i8 visit_i8 i8, "a whole number";
        deserialize_i16 visit_i16 i16, "a whole number";
        deserialize_i32 visit_i32 i32, "a whole number";
        deserialize_i64 visit_i64 i64, "a whole number";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name != FilePath::SERDE_NAME {
            return visitor.visit_newtype_struct(self);
        }
        let checked = (self.check_file)(self.text()?).map_err(|message| Error {
            key: self.key.clone(),
            message,
        })?;
        let path: StringDeserializer<Error> = checked.into_deserializer();
        visitor
            .visit_newtype_struct(path)
            .map_err(|e| e.at(&self.key))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let items = comma_list(self.text()?);
        let mut seq = SeqDeserializer::new(
            items
                .into_iter()
                .map(IntoDeserializer::<Error>::into_deserializer),
        );
        let value = visitor.visit_seq(&mut seq).map_err(|e| e.at(&self.key))?;
        seq.end().map_err(|e| e.at(&self.key))?;
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            NodeRef::Table(t) => visitor.visit_map(Entries::new(t, &self.key, self.check_file)),
            NodeRef::Value(_) => Err(Error {
                key: self.key.clone(),
                message: format!("is a group of keys ({}.*), not a value", self.key),
            }),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let text: StrDeserializer<'_, Error> = self.text()?.into_deserializer();
        de::Deserializer::deserialize_enum(text, _name, _variants, visitor)
            .map_err(|e| e.at(&self.key))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct tuple tuple_struct identifier i128 u128
    }
}

/// The entries of a table, for a struct or map being decoded.
struct Entries<'a> {
    entries: std::collections::btree_map::Iter<'a, String, Node>,
    prefix: String,
    next: Option<(String, NodeRef<'a>)>,
    check_file: &'a dyn Fn(&str) -> Result<String, String>,
}

impl<'a> Entries<'a> {
    fn new(
        tree: &'a Tree,
        prefix: &str,
        check_file: &'a dyn Fn(&str) -> Result<String, String>,
    ) -> Self {
        Entries {
            entries: tree.0.iter(),
            prefix: prefix.to_string(),
            next: None,
            check_file,
        }
    }
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((name, node)) = self.entries.next() else {
            return Ok(None);
        };
        let key = if self.prefix.is_empty() {
            name.clone()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let node = match node {
            Node::Value(v) => NodeRef::Value(v),
            Node::Table(t) => NodeRef::Table(t),
        };
        self.next = Some((key, node));
        let name: StringDeserializer<Error> = name.clone().into_deserializer();
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let (key, node) = self
            .next
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("a value without a key"))?;
        seed.deserialize(Decoder {
            node,
            key,
            check_file: self.check_file,
        })
    }
}

/// The keys of a serde type, dotted (`auth.realm`), in declaration order, and which of them
/// are [`FilePath`]s: what a file may set, so that every one of them is either a label or
/// listed as one a container may not set.
///
/// # Errors
/// When the type holds something the probe cannot walk (an enum, a map): it would hide the
/// keys after it.
pub fn keys_of<T: DeserializeOwned>() -> Result<Keys, String> {
    let mut keys = Keys::default();
    // The probe answers every value with a neutral one, so the decode always succeeds.
    T::deserialize(Probe {
        key: String::new(),
        keys: &mut keys,
    })
    .map_err(|e| {
        format!(
            "{} at {}: {e}",
            std::any::type_name::<T>(),
            keys.all.last().map_or("the start", String::as_str)
        )
    })?;
    Ok(keys)
}

/// The keys of a type ([`keys_of`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Every key, dotted, in declaration order.
    pub all: Vec<String>,
    /// The keys whose values are [`FilePath`]s.
    pub files: Vec<String>,
}

struct Probe<'k> {
    key: String,
    keys: &'k mut Keys,
}

macro_rules! probe_leaves {
    ($($method:ident => $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.keys.all.push(self.key.clone());
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    probe_leaves! {
        deserialize_any => visit_unit();
        deserialize_bool => visit_bool(false);
        deserialize_u8 => visit_u8(0);
        deserialize_u16 => visit_u16(0);
        deserialize_u32 => visit_u32(0);
        deserialize_u64 => visit_u64(0);
        deserialize_i8 => visit_i8(0);
        deserialize_i16 => visit_i16(0);
        deserialize_i32 => visit_i32(0);
        deserialize_i64 => visit_i64(0);
        deserialize_f32 => visit_f32(0.0);
        deserialize_f64 => visit_f64(0.0);
        deserialize_char => visit_char(' ');
        deserialize_str => visit_str("");
        deserialize_string => visit_str("");
        deserialize_unit => visit_unit();
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == FilePath::SERDE_NAME {
            self.keys.files.push(self.key.clone());
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.keys.all.push(self.key.clone());
        let empty: [String; 0] = [];
        visitor.visit_seq(SeqDeserializer::<_, Error>::new(
            empty.into_iter().map(IntoDeserializer::into_deserializer),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(ProbeFields {
            prefix: self.key,
            fields: fields.iter(),
            next: None,
            keys: self.keys,
        })
    }

    serde::forward_to_deserialize_any! {
        bytes byte_buf unit_struct tuple tuple_struct map enum identifier ignored_any i128 u128
    }
}

struct ProbeFields<'k> {
    prefix: String,
    fields: std::slice::Iter<'static, &'static str>,
    next: Option<String>,
    keys: &'k mut Keys,
}

impl<'de> MapAccess<'de> for ProbeFields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.next = Some(if self.prefix.is_empty() {
            (*field).to_string()
        } else {
            format!("{}.{field}", self.prefix)
        });
        let name: StrDeserializer<'_, Error> = field.into_deserializer();
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let key = self.next.take().unwrap_or_default();
        seed.deserialize(Probe {
            key,
            keys: self.keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", default)]
    struct Outer {
        name: Option<String>,
        on: Option<bool>,
        count: Option<u32>,
        list: Option<Vec<String>>,
        inner: Option<Inner>,
        file: Option<FilePath>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", default)]
    struct Inner {
        deep_key: Option<String>,
    }

    fn decoded(entries: &[(&str, &str)]) -> (Outer, Vec<Problem>, Vec<String>) {
        decode::<Outer>(tree(entries), &|p| {
            p.strip_prefix("/ok/")
                .map(|rest| format!("/checked/{rest}"))
                .ok_or_else(|| format!("\"{p}\" is not under /ok"))
        })
    }

    fn tree(entries: &[(&str, &str)]) -> Tree {
        let mut t = Tree::default();
        for (k, v) in entries {
            t.insert(
                k,
                Value {
                    text: (*v).to_string(),
                    origin: format!("label x.{k}"),
                },
            )
            .expect(k);
        }
        t
    }

    #[test]
    fn strings_become_the_types_the_struct_asks_for() {
        let (outer, problems, unknown) = decoded(&[
            ("name", "a"),
            ("on", "YES"),
            ("count", "7"),
            ("list", " p, q ,,r "),
            ("inner.deep-key", "d"),
            ("file", "/ok/f"),
        ]);
        assert_eq!(problems, []);
        assert!(unknown.is_empty());
        assert_eq!(
            outer,
            Outer {
                name: Some("a".into()),
                on: Some(true),
                count: Some(7),
                list: Some(vec!["p".into(), "q".into(), "r".into()]),
                inner: Some(Inner {
                    deep_key: Some("d".into())
                }),
                file: Some(FilePath::from("/checked/f".to_string())),
            }
        );
    }

    #[test]
    fn every_bad_value_is_named_and_left_out_and_unknown_keys_are_listed() {
        let (outer, problems, unknown) = decoded(&[
            ("name", "a"),
            ("on", "maybe"),
            ("count", "-1"),
            ("inner.deep-key", "d"),
            ("inner.typo", "t"),
            ("nope", "n"),
        ]);
        let named: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.origin.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                (
                    "label x.count",
                    "invalid value \"-1\": expected a whole number from 0 to 4294967295"
                ),
                (
                    "label x.on",
                    "invalid boolean \"maybe\": expected true or false"
                ),
            ]
        );
        assert_eq!(outer.name.as_deref(), Some("a"));
        assert_eq!(outer.on, None);
        assert_eq!(unknown, ["inner.typo", "nope"]);
    }

    #[test]
    fn a_value_and_a_group_cannot_share_a_name() {
        let (_, problems, _) = decoded(&[("inner", "x")]);
        assert_eq!(problems[0].origin, "label x.inner");
        assert!(
            problems[0].message.contains("group of keys"),
            "{problems:?}"
        );
        let (_, problems, _) = decoded(&[("name.sub", "x")]);
        assert_eq!(problems[0].key, "name");
        assert!(
            problems[0].message.contains("takes a value"),
            "{problems:?}"
        );
        let mut t = tree(&[("a.b", "1")]);
        let v = Value {
            text: "2".into(),
            origin: "label x.a".into(),
        };
        assert!(t.insert("a", v.clone()).is_err());
        assert!(t.insert("a.b.c", v.clone()).is_err());
        assert!(t.insert("a..b", v).is_err());
    }

    #[test]
    fn keys_of_lists_every_key_dotted_and_the_file_paths() {
        let keys = keys_of::<Outer>().expect("keys");
        assert_eq!(
            keys.all,
            ["name", "on", "count", "list", "inner.deep-key", "file"]
        );
        assert_eq!(keys.files, ["file"]);
    }

    #[test]
    fn keys_of_refuses_what_would_hide_keys() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Mode {
            A,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct WithEnum {
            mode: Option<Mode>,
            after: Option<String>,
        }
        let e = keys_of::<WithEnum>().expect_err("an enum hides the keys after it");
        assert!(e.contains("mode"), "{e}");
    }

    #[test]
    fn file_paths_decode_only_as_the_check_allows() {
        let (outer, problems, _) = decoded(&[("file", "/etc/shadow")]);
        assert_eq!(outer.file, None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].origin, "label x.file");
        assert_eq!(problems[0].message, "\"/etc/shadow\" is not under /ok");
    }

    #[test]
    fn deep_names_are_refused_before_they_build_a_deep_tree() {
        let mut t = Tree::default();
        let value = |origin: &str| Value {
            text: "1".into(),
            origin: origin.into(),
        };
        assert!(t.insert("a.b.c.d", value("x")).is_ok());
        let deep = vec!["x"; 7000].join(".");
        let e = t.insert(&deep, value("deep")).expect_err("too deep");
        assert!(e.contains("dotted parts"), "{e}");
        assert!(t.insert("a.b.c.d.e", value("y")).is_err());
    }
}
