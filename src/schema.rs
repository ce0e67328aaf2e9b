//! Schema inference over every record of a dataset (not a sample).
//!
//! Each page is inferred on its own as it arrives ([`Inferrer::observe_page`]); the
//! page results are merged in page order ([`Inferrer::merge`]), so the final schema
//! is the same whatever order the pages arrived in.
//!
//! # Rules
//! 1. JSON int + JSON float -> `Float64`. Integers that do not fit `i64` and floats
//!    that overflow `f64` are kept as their exact text (`Utf8`).
//! 2. Any other conflict between scalars (string + number, bool + number, ...) ->
//!    `Utf8`; every value keeps its string form (`12` -> `"12"`, `true` -> `"true"`).
//! 3. Objects -> `Struct` whose fields are merged by the same rules; arrays ->
//!    `List` of the merged item type.
//! 4. Shapes that conflict (object vs scalar, array vs object, an empty object only)
//!    -> a `Utf8` column holding the JSON text of nested values ("JSON text" column).
//! 5. A column that is always `null` or missing -> `Utf8`, never Arrow's `Null`;
//!    an array that is always empty -> `List(Utf8)`.
//! 6. A key that first appears in a late page is kept.
//! 7. Column order is first-seen order, records read in page order, keys in the
//!    order they appear in the record. This does not depend on serde_json's
//!    `preserve_order` feature: records are read as ordered entry lists.
//! 8. Keys are kept exactly (Chinese, mixed case, spaces); two keys that differ only
//!    by case are two columns.
//! 9. Strings stay strings in the inference above; typing string columns
//!    (`"5000.00"` -> Decimal, `"2019-01-29"` -> Date32) is the lossless detection of
//!    [`crate::detect`], applied by [`Inferrer::finish_with`] over every value of a
//!    top-level column; `"01425"` stays `"01425"`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::detect::{Detector, Target, TypeSpec};
use crate::platform::records::Entry;
use crate::platform::{object_entries, RawRecord};

/// The inferred type of a value or column.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Only nulls (or nothing) seen so far.
    Unknown,
    Bool,
    Int,
    Float,
    Str,
    /// Conflicting shapes: stored as JSON text.
    Json,
    List(Box<Kind>),
    Struct(StructKind),
}

/// An ordered set of named kinds (a record or a nested object).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StructKind {
    fields: Vec<(String, Kind)>,
    index: HashMap<String, usize>,
}

impl StructKind {
    pub fn fields(&self) -> &[(String, Kind)] {
        &self.fields
    }

    /// Builds an ordered struct from `(name, kind)` pairs.
    pub fn from_columns(cols: impl IntoIterator<Item = (String, Kind)>) -> StructKind {
        let mut s = StructKind::default();
        for (n, k) in cols {
            let i = s.slot(&n);
            s.fields[i].1.merge(k);
        }
        s
    }

    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.index.get(name).map(|&i| &self.fields[i].1)
    }

    /// Position of `name`, inserting it (as `Unknown`) at the end when new.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.fields.len();
        self.fields.push((name.to_string(), Kind::Unknown));
        self.index.insert(name.to_string(), i);
        i
    }

    fn merge(&mut self, other: StructKind) {
        for (name, kind) in other.fields {
            let i = self.slot(&name);
            self.fields[i].1.merge(kind);
        }
    }
}

impl Kind {
    /// Widens `self` so that it also holds `other` (see the module rules).
    pub fn merge(&mut self, other: Kind) {
        use Kind::*;
        // The common case: the same scalar again, or nothing new.
        if matches!(
            (&*self, &other),
            (Str, Str) | (Int, Int) | (Float, Float) | (Bool, Bool) | (Json, _) | (_, Unknown)
        ) {
            return;
        }
        let merged = match (std::mem::replace(self, Unknown), other) {
            (Unknown, x) | (x, Unknown) => x,
            (Json, _) | (_, Json) => Json,
            (Int, Float) | (Float, Int) => Float,
            (List(mut a), List(b)) => {
                a.merge(*b);
                List(a)
            }
            (Struct(mut a), Struct(b)) => {
                a.merge(b);
                Struct(a)
            }
            (a, b) if a == b => a,
            (a, b) if a.is_scalar() && b.is_scalar() => Str,
            _ => Json,
        };
        *self = merged;
    }

    /// Whether merging `raw`'s kind would leave `self` as it is, decided without
    /// building that kind (the common case: a string in a string column).
    fn already_holds(&self, raw: &str) -> bool {
        let b = raw.as_bytes();
        match (self, b.first()) {
            (_, Some(b'n')) | (Kind::Json, _) => true,
            (Kind::Str, Some(b'"' | b't' | b'f')) | (Kind::Bool, Some(b't' | b'f')) => true,
            // Numbers: short ones surely fit (an i64 has 19 digits, an f64 is
            // finite below 309); longer ones are parsed.
            (Kind::Str, Some(b'-' | b'0'..=b'9')) => true,
            (Kind::Int, Some(b'-' | b'0'..=b'9')) => {
                b.len() <= 18 && !b.iter().any(|c| matches!(c, b'.' | b'e' | b'E'))
            }
            (Kind::Float, Some(b'-' | b'0'..=b'9')) => {
                if b.iter().any(|c| matches!(c, b'e' | b'E')) {
                    false
                } else if b.contains(&b'.') {
                    b.len() <= 300
                } else {
                    // An integer: one beyond i64 is kept as text (rule 1).
                    b.len() <= 18
                }
            }
            _ => false,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Kind::Bool | Kind::Int | Kind::Float | Kind::Str)
    }

    /// The kind of one raw JSON value.
    pub fn of(text: &str) -> Kind {
        match text.as_bytes().first() {
            Some(b'n') => Kind::Unknown,
            Some(b't') | Some(b'f') => Kind::Bool,
            Some(b'"') => Kind::Str,
            Some(b'{') => match object_entries(text) {
                Ok(entries) => {
                    let mut s = StructKind::default();
                    for (k, v) in entries {
                        let i = s.slot(&k);
                        s.fields[i].1.merge(Kind::of(v));
                    }
                    Kind::Struct(s)
                }
                Err(_) => Kind::Json,
            },
            Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(text) {
                Ok(items) => {
                    let mut item = Kind::Unknown;
                    for v in items {
                        item.merge(Kind::of(v.get()));
                    }
                    Kind::List(Box::new(item))
                }
                Err(_) => Kind::Json,
            },
            _ => number_kind(text),
        }
    }

    /// True when some value of this kind must be rewritten as JSON text before
    /// Arrow decoding (a JSON text column, at any depth).
    pub fn needs_json_text(&self) -> bool {
        match self {
            Kind::Json => true,
            Kind::List(k) => k.needs_json_text(),
            Kind::Struct(s) => {
                s.fields.is_empty() || s.fields.iter().any(|(_, k)| k.needs_json_text())
            }
            _ => false,
        }
    }

    /// The Arrow type for this kind (rules 4 and 5 applied).
    pub fn data_type(&self) -> DataType {
        match self {
            Kind::Unknown | Kind::Str | Kind::Json => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::List(item) => {
                DataType::List(Arc::new(Field::new("item", item.data_type(), true)))
            }
            Kind::Struct(s) if s.fields.is_empty() => DataType::Utf8,
            Kind::Struct(s) => DataType::Struct(struct_fields(s)),
        }
    }

    /// Whether values of this kind are stored as JSON text.
    pub fn is_json_text(&self) -> bool {
        matches!(self, Kind::Json) || matches!(self, Kind::Struct(s) if s.fields.is_empty())
    }
}

/// Key equality for the short keys of records: an inline compare, not a call
/// to memcmp (which dominated the hint check).
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 32 {
        return a == b;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

fn struct_fields(s: &StructKind) -> Fields {
    s.fields
        .iter()
        .map(|(n, k)| Field::new(n, k.data_type(), true))
        .collect()
}

fn number_kind(text: &str) -> Kind {
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Kind::Float,
            _ => Kind::Str,
        }
    } else if text.parse::<i64>().is_ok() {
        Kind::Int
    } else {
        Kind::Str
    }
}

/// JSON types seen in a column, for the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonTypes(u8);

impl JsonTypes {
    const NAMES: [&'static str; 7] = ["null", "bool", "int", "float", "string", "object", "array"];

    fn add(&mut self, t: &str) {
        let bit = match t.as_bytes().first() {
            Some(b'n') => 0,
            Some(b't') | Some(b'f') => 1,
            Some(b'"') => 4,
            Some(b'{') => 5,
            Some(b'[') => 6,
            _ if t.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) => 3,
            _ => 2,
        };
        self.0 |= 1 << bit;
    }

    pub fn names(&self) -> Vec<&'static str> {
        (0..7)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| Self::NAMES[i])
            .collect()
    }
}

/// Counts kept per top-level column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnStats {
    pub types: JsonTypes,
    /// Records in which the key was present.
    pub present: u64,
    /// Records in which the value was `null`.
    pub nulls: u64,
    /// Records in which the value was `""`.
    pub empty: u64,
    /// The lossless types every value allows.
    pub detect: Detector,
}

/// Inference state for a page or a whole dataset.
#[derive(Debug, Clone, Default)]
pub struct Inferrer {
    columns: StructKind,
    stats: Vec<ColumnStats>,
    rows: u64,
    /// Per column, the record number in which it was last counted.
    counted_in: Vec<u64>,
    /// Per key position in a record, the column it was last time: records of a
    /// page share their key order, so this usually saves the hash lookup.
    hints: crate::platform::records::KeyHints,
}

impl Inferrer {
    pub fn observe(&mut self, record: &[Entry<'_>]) {
        self.observe_each(record, |_, _| {});
    }

    /// [`Inferrer::observe`], telling `each` the column number of every entry.
    #[inline]
    fn observe_each<'a>(&mut self, record: &[Entry<'a>], mut each: impl FnMut(usize, &'a str)) {
        self.rows += 1;
        for (pos, (key, raw)) in record.iter().enumerate() {
            let i = match self.hints.get(pos) {
                Some(h)
                    if self
                        .columns
                        .fields
                        .get(h)
                        .is_some_and(|f| same_key(&f.0, key)) =>
                {
                    h
                }
                _ => {
                    let i = self.columns.slot(key);
                    self.hints.set(pos, i);
                    i
                }
            };
            each(i, raw);
            if i == self.stats.len() {
                self.stats.push(ColumnStats::default());
                self.counted_in.push(0);
            }
            // A key repeated within one record is counted once (it only widens
            // the type again).
            if self.counted_in[i] == self.rows {
                self.columns.fields[i].1.merge(Kind::of(raw));
                self.stats[i].detect.observe_raw(raw);
                continue;
            }
            self.counted_in[i] = self.rows;
            let st = &mut self.stats[i];
            st.present += 1;
            st.types.add(raw);
            match *raw {
                "null" => st.nulls += 1,
                "\"\"" => st.empty += 1,
                _ => {}
            }
            st.detect.observe_raw(raw);
            let kind = &mut self.columns.fields[i].1;
            if !kind.already_holds(raw) {
                kind.merge(Kind::of(raw));
            }
        }
    }

    /// Infers a page given as its record array, read in one pass; the number of
    /// records with it. A page the one-pass reader refuses is read by serde_json,
    /// for the exact error.
    pub fn observe_array(array: &str) -> Result<(u32, Inferrer), crate::error::PageError> {
        let mut inf = Inferrer::default();
        let mut entries = Vec::new();
        match crate::platform::records::scan(array, &mut entries, |r| {
            inf.observe(r);
            true
        }) {
            Ok(n) => Ok((n as u32, inf)),
            Err(_) => {
                let records = crate::platform::split_records(array)?;
                Ok((records.len() as u32, Inferrer::observe_page(&records)))
            }
        }
    }

    /// [`Inferrer::observe_array`], also keeping the page's [`Tape`] (hash
    /// `hash`) when the one-pass reader reads it.
    ///
    /// [`Tape`]: crate::platform::records::Tape
    pub fn observe_array_taped(
        array: &str,
        hash: u64,
    ) -> Result<(u32, Inferrer, Option<crate::platform::records::Tape>), crate::error::PageError>
    {
        let Some(mut tape) = crate::platform::records::Tape::of(array) else {
            let (n, inf) = Inferrer::observe_array(array)?;
            return Ok((n, inf, None));
        };
        let mut inf = Inferrer::default();
        let mut entries = Vec::new();
        match crate::platform::records::scan(array, &mut entries, |r| {
            inf.observe_each(r, |i, raw| tape.push(array, i, raw));
            tape.records.push(r.len() as u32);
            true
        }) {
            Ok(n) => {
                tape.hash = hash;
                tape.keys = inf.columns.fields.iter().map(|(k, _)| k.clone()).collect();
                Ok((n as u32, inf, Some(tape)))
            }
            Err(_) => {
                let records = crate::platform::split_records(array)?;
                Ok((records.len() as u32, Inferrer::observe_page(&records), None))
            }
        }
    }

    pub fn observe_page(records: &[RawRecord<'_>]) -> Inferrer {
        let mut inf = Inferrer::default();
        for r in records {
            inf.observe(r);
        }
        inf
    }

    /// Merges a later page's result into this one (call in page order).
    pub fn merge(&mut self, other: Inferrer) {
        self.rows += other.rows;
        for ((name, kind), st) in other.columns.fields.into_iter().zip(other.stats) {
            let i = self.columns.slot(&name);
            if i == self.stats.len() {
                self.stats.push(ColumnStats::default());
                self.counted_in.push(0);
            }
            self.columns.fields[i].1.merge(kind);
            let mine = &mut self.stats[i];
            mine.types.0 |= st.types.0;
            mine.present += st.present;
            mine.nulls += st.nulls;
            mine.empty += st.empty;
            mine.detect.merge(&st.detect);
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The schema with the default type detection.
    pub fn finish(self) -> InferredSchema {
        self.finish_with(&DetectOptions::default())
            .expect("no asked types, so no mismatch")
    }

    /// The schema with detection options and asked types applied. A type asked for
    /// that some value does not fit is a [`Mismatch`] (unless `on_mismatch` is
    /// `String`).
    pub fn finish_with(self, opts: &DetectOptions) -> Result<InferredSchema, Mismatch> {
        let mut columns: Vec<Column> = self
            .columns
            .fields
            .into_iter()
            .zip(self.stats)
            .map(|((name, kind), stats)| Column {
                name,
                kind,
                stats,
                typed: None,
                rule: "",
                fallback: None,
            })
            .collect();
        // Columns a schema file names come first, in its order (absent ones too).
        if !opts.order.is_empty() {
            let mut rest: Vec<Option<Column>> = columns.into_iter().map(Some).collect();
            let mut ordered = Vec::new();
            for name in &opts.order {
                match rest
                    .iter_mut()
                    .find(|c| c.as_ref().is_some_and(|c| &c.name == name))
                {
                    Some(slot) => ordered.push(slot.take().expect("found above")),
                    None => ordered.push(Column {
                        name: name.clone(),
                        kind: Kind::Unknown,
                        stats: ColumnStats::default(),
                        typed: None,
                        rule: "",
                        fallback: None,
                    }),
                }
            }
            ordered.extend(rest.into_iter().flatten());
            columns = ordered;
        }
        for c in &mut columns {
            c.resolve(opts)?;
        }
        Ok(InferredSchema {
            columns,
            rows: self.rows,
        })
    }
}

/// How string columns are typed (`--no-detect`, `--type`, `--schema`, ...).
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Detect types of text columns (`--no-detect` turns it off).
    pub detect: bool,
    /// Empty strings in a typed column become null (else the column stays text).
    pub empty_as_null: bool,
    /// Datetimes are China Standard Time (`Timestamp(ms, "+08:00")`).
    pub shanghai: bool,
    /// Types asked for, by column: `--type` wins over `--schema`.
    pub types: Vec<(String, TypeSpec, TypeSource)>,
    /// Column order of a schema file.
    pub order: Vec<String>,
    /// A value that does not fit an asked type: error, or the column stays text.
    pub on_mismatch: OnMismatch,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            detect: true,
            empty_as_null: true,
            shanghai: false,
            types: Vec::new(),
            order: Vec::new(),
            on_mismatch: OnMismatch::Error,
        }
    }
}

impl DetectOptions {
    pub fn asked(&self, column: &str) -> Option<&(String, TypeSpec, TypeSource)> {
        self.types.iter().find(|(c, _, _)| c == column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeSource {
    /// `--type COL=TYPE`
    Flag,
    /// `--schema FILE`
    SchemaFile,
    /// The previous snapshot's types (`pin_types` in `jdop sync`).
    Previous,
}

impl TypeSource {
    fn rule(self) -> &'static str {
        match self {
            TypeSource::Flag => "type-flag",
            TypeSource::SchemaFile => "schema-file",
            TypeSource::Previous => "pinned-previous",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMismatch {
    #[default]
    Error,
    /// The column falls back to text; the manifest says so.
    String,
}

/// A column whose values do not all fit the type asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub column: String,
    pub spec: TypeSpec,
    pub source: TypeSource,
    /// The column holds nested values, which no scalar type fits.
    pub nested: bool,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    pub stats: ColumnStats,
    /// The type text values convert to; `None` keeps the kind's type.
    pub typed: Option<Target>,
    /// Why the column has its type (a rule name, see [`crate::detect`]).
    pub rule: &'static str,
    /// The type asked for that the values did not fit (`--on-mismatch string`).
    pub fallback: Option<TypeSpec>,
}

impl Column {
    /// The Arrow type of the column in the written files.
    pub fn data_type(&self) -> DataType {
        match &self.typed {
            Some(t) => t.data_type(),
            None => self.kind.data_type(),
        }
    }

    fn kind_rule(&self) -> &'static str {
        match &self.kind {
            Kind::Unknown => "all-null",
            Kind::Bool => "json-bool",
            Kind::Int => "json-int",
            Kind::Float => "json-number",
            Kind::Str => "text",
            Kind::Json => "shape-conflict",
            Kind::Struct(s) if s.fields.is_empty() => "shape-conflict",
            Kind::Struct(_) => "object",
            Kind::List(_) => "array",
        }
    }

    fn is_nested(&self) -> bool {
        matches!(self.kind, Kind::Struct(_) | Kind::List(_) | Kind::Json)
    }

    /// Values are decoded as text, then converted (or kept as text).
    fn as_text(&mut self) {
        if self.is_nested() {
            self.kind = Kind::Json;
        } else {
            self.kind = Kind::Str;
        }
    }

    fn resolve(&mut self, opts: &DetectOptions) -> Result<(), Mismatch> {
        let det = self.stats.detect;
        if let Some((_, spec, source)) = opts.asked(&self.name) {
            let fit = if *spec == TypeSpec::Utf8 {
                self.as_text();
                self.rule = source.rule();
                return Ok(());
            } else if self.is_nested() || (!opts.empty_as_null && self.stats.empty > 0) {
                None
            } else {
                det.fit(spec, opts.shanghai)
            };
            match (fit, opts.on_mismatch) {
                (Some(t), _) => {
                    self.as_text();
                    self.typed = Some(t);
                    self.rule = source.rule();
                }
                (None, OnMismatch::String) => {
                    self.as_text();
                    self.rule = "mismatch-fallback";
                    self.fallback = Some(spec.clone());
                }
                (None, OnMismatch::Error) => {
                    return Err(Mismatch {
                        column: self.name.clone(),
                        spec: spec.clone(),
                        source: *source,
                        nested: self.is_nested(),
                    })
                }
            }
            return Ok(());
        }
        self.rule = self.kind_rule();
        if opts.detect && self.kind == Kind::Str {
            let (t, rule) = det.detect();
            self.rule = rule;
            if t.is_some() && !opts.empty_as_null && self.stats.empty > 0 {
                self.rule = "empty-strings-kept";
            } else {
                self.typed = t.map(|t| match t {
                    Target::Timestamp { format, .. } => Target::Timestamp {
                        format,
                        tz: opts.shanghai,
                    },
                    t => t,
                });
            }
        }
        Ok(())
    }
}

/// The final schema of a dataset.
#[derive(Debug, Clone)]
pub struct InferredSchema {
    pub columns: Vec<Column>,
    pub rows: u64,
}

impl InferredSchema {
    pub fn arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Columns named by `--type` that the dataset does not have (a typo, most
    /// likely); none for an empty dataset.
    pub fn missing_flag_types<'a>(&self, opts: &'a DetectOptions) -> Vec<&'a str> {
        opts.types
            .iter()
            .filter(|(col, _, source)| {
                *source == TypeSource::Flag
                    && self.rows > 0
                    && !self.columns.iter().any(|c| &c.name == col)
            })
            .map(|(col, _, _)| col.as_str())
            .collect()
    }

    /// The schema arrow-json decodes into: typed columns are read as text first.
    pub fn decode_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    let t = match c.typed {
                        Some(_) => DataType::Utf8,
                        None => c.kind.data_type(),
                    };
                    Field::new(&c.name, t, true)
                })
                .collect::<Vec<_>>(),
        ))
    }

    pub fn needs_json_text(&self) -> bool {
        self.columns.iter().any(|c| c.kind.needs_json_text())
    }

    /// A description per column for the manifest.
    pub fn describe(&self) -> Vec<ColumnInfo> {
        self.columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                arrow_type: c.data_type().to_string(),
                rule: c.rule.to_string(),
                format: c.typed.and_then(|t| t.format()),
                json_text: c.kind.is_json_text(),
                json_types: c
                    .stats
                    .types
                    .names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                missing: self.rows.saturating_sub(c.stats.present),
                nulls: c.stats.nulls,
                empty_strings: c.stats.empty,
                empty_as_null: if c.typed.is_some() { c.stats.empty } else { 0 },
                asked_type: c.fallback.as_ref().map(|s| s.to_string()),
            })
            .collect()
    }
}

/// Column types pinned by a file (`--schema FILE`): a previous snapshot's
/// `manifest.json` (its `columns`), or a JSON object `{"COL": "TYPE", ...}`.
#[derive(Debug, Clone, Default)]
pub struct SchemaFile {
    pub types: Vec<(String, TypeSpec)>,
    /// Column order of the file.
    pub order: Vec<String>,
    /// A datetime column of the file is zoned (UTC+8).
    pub shanghai: bool,
}

impl SchemaFile {
    pub fn load(path: &std::path::Path) -> crate::Result<SchemaFile> {
        let bad =
            |why: String| crate::Error::usage(format!("schema file `{}`: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        SchemaFile::parse(text.trim_start_matches('\u{feff}')).map_err(bad)
    }

    pub fn parse(text: &str) -> Result<SchemaFile, String> {
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let entries =
            object_entries(raw.get()).map_err(|_| "expected a JSON object".to_string())?;
        let mut out = SchemaFile::default();
        let twice = |names: &[String]| {
            let mut seen = std::collections::HashSet::new();
            names
                .iter()
                .find(|n| !seen.insert(n.as_str()))
                .map(|n| format!("column `{n}` appears twice"))
        };
        if let Some((_, cols)) = entries.iter().find(|(k, _)| k == "columns") {
            let cols: Vec<ColumnInfo> = serde_json::from_str(cols)
                .map_err(|e| format!("`columns` is not a jdop manifest's column list: {e}"))?;
            for c in cols {
                out.shanghai |= is_zoned_datetime(&c.arrow_type, c.format.as_deref());
                if let Some(spec) = TypeSpec::from_manifest(&c.arrow_type, c.format.as_deref()) {
                    out.types.push((c.name.clone(), spec));
                }
                out.order.push(c.name);
            }
            return match twice(&out.order) {
                Some(e) => Err(e),
                None => Ok(out),
            };
        }
        for (k, v) in entries {
            let ty: String = serde_json::from_str(v)
                .map_err(|_| format!("the type of `{k}` must be a string like \"int64\""))?;
            let spec = TypeSpec::parse(&ty).map_err(|e| format!("column `{k}`: {e}"))?;
            out.types.push((k.to_string(), spec));
            out.order.push(k.to_string());
        }
        match twice(&out.order) {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// A datetime column typed from text in UTC+8 (`--timezone`), by its manifest type.
pub fn is_zoned_datetime(arrow_type: &str, format: Option<&str>) -> bool {
    format != Some("epoch_ms")
        && matches!(arrow_type.parse::<DataType>(), Ok(DataType::Timestamp(_, Some(tz))) if &*tz == crate::detect::SHANGHAI || &*tz == "Asia/Shanghai")
}

/// What to do when a dataset's columns change against its previous snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// Publish the new schema; the manifest lists the changes.
    #[default]
    Evolve,
    /// A changed schema fails the dataset; the previous snapshot stays latest.
    Freeze,
}

/// Columns added, removed and changed in type against the previous snapshot.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct SchemaChanges {
    pub added: Vec<ColumnType>,
    pub removed: Vec<ColumnType>,
    pub changed: Vec<TypeChange>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ColumnType {
    pub name: String,
    pub arrow_type: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TypeChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

impl SchemaChanges {
    /// Compares the columns of a previous snapshot with the new ones.
    pub fn between(before: &[ColumnInfo], after: &[ColumnInfo]) -> SchemaChanges {
        let old: HashMap<&str, &ColumnInfo> = before.iter().map(|c| (c.name.as_str(), c)).collect();
        let new: HashMap<&str, &ColumnInfo> = after.iter().map(|c| (c.name.as_str(), c)).collect();
        let ct = |c: &ColumnInfo| ColumnType {
            name: c.name.clone(),
            arrow_type: c.arrow_type.clone(),
        };
        SchemaChanges {
            added: after
                .iter()
                .filter(|c| !old.contains_key(c.name.as_str()))
                .map(ct)
                .collect(),
            removed: before
                .iter()
                .filter(|c| !new.contains_key(c.name.as_str()))
                .map(ct)
                .collect(),
            changed: after
                .iter()
                .filter_map(|c| {
                    let o = old.get(c.name.as_str())?;
                    (o.arrow_type != c.arrow_type).then(|| TypeChange {
                        name: c.name.clone(),
                        from: o.arrow_type.clone(),
                        to: c.arrow_type.clone(),
                    })
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// One line for messages: `added `x` (Utf8); removed `y`; `z` Int64 -> Utf8`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for c in &self.added {
            parts.push(format!("added `{}` ({})", c.name, c.arrow_type));
        }
        for c in &self.removed {
            parts.push(format!("removed `{}`", c.name));
        }
        for c in &self.changed {
            parts.push(format!("`{}` {} -> {}", c.name, c.from, c.to));
        }
        parts.join("; ")
    }
}

/// A column as the manifest records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub arrow_type: String,
    /// Why the column has this type (see `jdop::detect`): `decimal-text`, `text`, ...
    #[serde(default)]
    pub rule: String,
    /// The shape of a typed date/time column's values (`yyyy-MM-dd`, `epoch_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Nested values are stored as JSON text (shape conflict).
    pub json_text: bool,
    pub json_types: Vec<String>,
    pub missing: u64,
    pub nulls: u64,
    pub empty_strings: u64,
    /// Empty strings written as null (typed columns).
    #[serde(default)]
    pub empty_as_null: u64,
    /// The type asked for that some value did not fit (the column stayed text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcut_agrees_with_merging() {
        let raws = [
            "null",
            "true",
            "false",
            "\"x\"",
            "\"\"",
            "0",
            "-0",
            "12",
            "-123456789012345678",
            "1234567890123456789",
            "12345678901234567890",
            "1.5",
            "-0.25",
            "1e3",
            "1E400",
            "123456789012345678901234567890.5",
            "{\"a\":1}",
            "[1]",
            "[]",
            "{}",
        ];
        let kinds = [
            Kind::Unknown,
            Kind::Bool,
            Kind::Int,
            Kind::Float,
            Kind::Str,
            Kind::Json,
            Kind::of("[1]"),
            Kind::of("{\"a\":1}"),
        ];
        for k in &kinds {
            for raw in raws {
                if k.already_holds(raw) {
                    let mut merged = k.clone();
                    merged.merge(Kind::of(raw));
                    assert_eq!(&merged, k, "{k:?} + {raw}");
                }
            }
        }
        assert!(Kind::Str.already_holds("\"x\""));
        assert!(!Kind::Float.already_holds("12345678901234567890"));
    }
    use crate::platform::split_records;

    fn infer(pages: &[&str]) -> InferredSchema {
        let mut all = Inferrer::default();
        for p in pages {
            let recs = split_records(p).unwrap();
            all.merge(Inferrer::observe_page(&recs));
        }
        all.finish()
    }

    fn types(s: &InferredSchema) -> Vec<(String, String)> {
        s.arrow()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect()
    }

    #[test]
    fn int_and_float_widen_to_float64() {
        let s = infer(&[r#"[{"a":1},{"a":2.5}]"#]);
        assert_eq!(s.arrow().field(0).data_type(), &DataType::Float64);
    }

    #[test]
    fn string_and_number_become_utf8() {
        let s = infer(&[r#"[{"a":1}]"#, r#"[{"a":"x"}]"#, r#"[{"a":true}]"#]);
        assert_eq!(s.arrow().field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn all_null_or_missing_column_is_utf8() {
        let s = infer(&[r#"[{"a":null,"b":1},{"b":2}]"#]);
        assert_eq!(s.arrow().field(0).data_type(), &DataType::Utf8);
        assert_eq!(s.columns[0].stats.nulls, 1);
        assert_eq!(s.describe()[0].missing, 1);
    }

    #[test]
    fn late_key_is_kept_at_the_end() {
        let s = infer(&[r#"[{"a":1}]"#, r#"[{"a":2}]"#, r#"[{"late":"x","a":3}]"#]);
        let names: Vec<_> = types(&s).into_iter().map(|t| t.0).collect();
        assert_eq!(names, ["a", "late"]);
    }

    #[test]
    fn column_order_is_first_seen_not_sorted() {
        let s = infer(&[r#"[{"z":1,"B":1,"a":1},{"中":1,"z":2}]"#]);
        let names: Vec<_> = types(&s).into_iter().map(|t| t.0).collect();
        assert_eq!(names, ["z", "B", "a", "中"]);
    }

    #[test]
    fn merge_order_is_page_order() {
        let p1 = split_records(r#"[{"x":1}]"#).unwrap();
        let p2 = split_records(r#"[{"y":1}]"#).unwrap();
        let mut a = Inferrer::observe_page(&p1);
        a.merge(Inferrer::observe_page(&p2));
        let names: Vec<_> = a.finish().columns.into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn nested_objects_become_structs_with_merged_fields() {
        let s = infer(&[r#"[{"o":{"a":1}},{"o":{"b":"x","a":2.5}}]"#]);
        assert_eq!(
            s.arrow().field(0).data_type().to_string(),
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Float64, true),
                Field::new("b", DataType::Utf8, true)
            ]))
            .to_string()
        );
    }

    #[test]
    fn arrays_become_lists_and_empty_arrays_list_utf8() {
        let s = infer(&[r#"[{"l":[1,2],"e":[]},{"l":[3.5]}]"#]);
        assert_eq!(
            s.arrow().field(0).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
        );
        assert_eq!(
            s.arrow().field(1).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
    }

    #[test]
    fn conflicting_shapes_become_json_text() {
        let s = infer(&[r#"[{"a":{"x":1},"b":[1],"c":{}},{"a":"s","b":{"y":2}}]"#]);
        for c in &s.columns {
            assert_eq!(c.kind.data_type(), DataType::Utf8, "{}", c.name);
            assert!(c.kind.is_json_text(), "{}", c.name);
        }
        assert!(s.needs_json_text());
    }

    #[test]
    fn huge_integers_stay_text() {
        let s = infer(&[r#"[{"a":123456789012345678901234567890}]"#]);
        assert_eq!(s.arrow().field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn strings_with_leading_zeros_stay_strings() {
        let s = infer(&[r#"[{"code":"01425"}]"#]);
        assert_eq!(s.arrow().field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn a_key_repeated_in_a_record_is_counted_once() {
        let s = infer(&[r#"[{"a":"1","a":"2"},{"a":"3"}]"#]);
        assert_eq!(s.describe()[0].missing, 0);
        assert_eq!(s.columns[0].stats.present, 2);
    }

    #[test]
    fn a_column_named_twice_in_a_schema_file_is_refused() {
        let e = SchemaFile::parse(r#"{"a":"int64","a":"string"}"#).unwrap_err();
        assert!(e.contains("`a` appears twice"), "{e}");
        assert!(SchemaFile::parse(r#"{"a":"int64","b":"string"}"#).is_ok());
    }

    #[test]
    fn json_types_are_recorded() {
        let s = infer(&[r#"[{"a":1},{"a":"x"},{"a":null},{"a":""}]"#]);
        assert_eq!(s.describe()[0].json_types, ["null", "int", "string"]);
        assert_eq!(s.describe()[0].empty_strings, 1);
    }
}
