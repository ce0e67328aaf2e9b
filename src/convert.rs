//! Records -> Arrow `RecordBatch`es with the final, whole-dataset schema.
//!
//! Flat pages (the platform's usual data) are built in one pass: the page is read by
//! [`crate::platform::records::scan`] and each value appended straight into its
//! column's builder, detected types parsed from their text ([`TypedBuilder`]). A
//! page whose [`Tape`] inference kept is not scanned again: its values are taken by
//! the spans the tape gives, once the tape is checked to fit the page's bytes.
//! Whatever that path does not take as plain (nested columns, a key twice in a
//! record, a key outside a strict schema, surrogate escapes, a value of another
//! shape than its column, a detected type that a value does not fit) is decoded by
//! arrow-json's tape decoder instead, fed with the page's record array
//! (`with_flatten`), with `coerce_primitive` so that numbers and booleans in a
//! `Utf8` column keep their exact text; arrow-json also names the error, if there is
//! one. Both paths give the same batches (the `one_pass` proptest). When the schema
//! has JSON text columns (shape conflicts), records are rewritten for arrow-json so
//! that nested values in those columns become JSON strings.

use std::sync::Arc;

use std::borrow::Cow;
use std::collections::HashMap;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_json::ReaderBuilder;
use arrow_schema::{DataType, SchemaRef};
use serde_json::value::RawValue;

use crate::detect::{Target, TypedBuilder};
use crate::error::PageError;
use crate::platform::records::string_content;
use crate::platform::records::Tape;
use crate::platform::{object_entries, split_records};
use crate::schema::{InferredSchema, Kind, StructKind};

/// Converts spooled pages into batches. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Converter {
    schema: SchemaRef,
    decode_schema: SchemaRef,
    /// Columns read as text and converted to their detected type.
    typed: Arc<Vec<(usize, Target)>>,
    top: Arc<StructKind>,
    rewrite: bool,
    /// Keys outside the schema are an error (a schema of some columns only ignores them).
    strict: bool,
    /// The one-pass builder, for schemas of flat columns only.
    fast: Option<Arc<FastPlan>>,
}

impl Converter {
    pub fn new(schema: &InferredSchema) -> Converter {
        let top = StructKind::from_columns(
            schema
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.kind.clone())),
        );
        let typed = schema
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.typed.map(|t| (i, t)))
            .collect();
        Converter {
            schema: schema.arrow(),
            decode_schema: schema.decode_schema(),
            typed: Arc::new(typed),
            top: Arc::new(top),
            rewrite: schema.needs_json_text(),
            strict: true,
            fast: FastPlan::new(schema).map(Arc::new),
        }
    }

    /// Whether flat pages are built in one pass (and walk tapes); `false` for
    /// schemas with nested columns, which arrow-json decodes.
    pub fn converts_in_one_pass(&self) -> bool {
        self.fast.is_some()
    }

    /// Whether `other` converts every page to the same batch as this one (same
    /// columns, kinds and detected types).
    pub fn converts_like(&self, other: &Converter) -> bool {
        self.strict == other.strict
            && self.rewrite == other.rewrite
            && self.typed == other.typed
            && self.top == other.top
            && self.schema == other.schema
            && self.decode_schema == other.decode_schema
    }

    /// The batch `earlier` built from some pages, as this converter builds it from
    /// them: as it is when both convert alike; widened with null columns when this
    /// one only has more columns after those of `earlier`, converted alike (keys
    /// first seen in later pages, which those pages lack). `None` otherwise, and
    /// for nested schemas.
    pub fn widen(&self, earlier: &Converter, batch: RecordBatch) -> Option<RecordBatch> {
        if self.converts_like(earlier) {
            return Some(batch);
        }
        let (mine, theirs) = (self.fast.as_deref()?, earlier.fast.as_deref()?);
        let k = theirs.columns.len();
        let fields = self.schema.fields();
        if self.strict != earlier.strict
            || self.rewrite != earlier.rewrite
            || mine.columns.len() < k
            || mine.columns[..k] != theirs.columns[..]
            || mine.names[..k] != theirs.names[..]
            || fields[..k] != earlier.schema.fields()[..]
            || batch.num_columns() != k
        {
            return None;
        }
        let rows = batch.num_rows();
        let mut arrays = batch.columns().to_vec();
        arrays.extend(
            fields[k..]
                .iter()
                .map(|f| arrow_array::new_null_array(f.data_type(), rows)),
        );
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options).ok()
    }

    /// A converter for some columns of `schema` only (other keys are skipped).
    pub fn columns(schema: &InferredSchema, names: &[&str]) -> Converter {
        let sub = InferredSchema {
            columns: schema
                .columns
                .iter()
                .filter(|c| names.contains(&c.name.as_str()))
                .cloned()
                .collect(),
            rows: schema.rows,
        };
        Converter {
            strict: false,
            ..Converter::new(&sub)
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes several pages (in order) into one batch. The error names the page
    /// (by its position in `pages`, which the caller maps to a page number).
    /// Pages are record arrays as bytes (the decoder checks UTF-8 itself).
    pub fn decode<P: AsRef<[u8]>>(&self, pages: &[P]) -> Result<RecordBatch, (usize, PageError)> {
        self.decode_taped(pages, &[])
    }

    /// [`Converter::decode`], walking the [`Tape`] given for a page (by position)
    /// instead of scanning it, when it fits the page's bytes.
    pub fn decode_taped<P: AsRef<[u8]>>(
        &self,
        pages: &[P],
        tapes: &[Option<Tape>],
    ) -> Result<RecordBatch, (usize, PageError)> {
        if let Some((batch, _)) = self.decode_fast(pages, tapes) {
            return Ok(batch);
        }
        let (text, ends) = self.decode_arrow_json(pages)?;
        self.finish_typed(text, &ends, pages.len())
    }

    /// Builds the batch (detected types included) in one pass over each page ([`crate::platform::records`]),
    /// appending values straight into the column builders. `None` when a page holds
    /// anything whose conversion is not plain (a key outside the schema, a key
    /// twice in a record, a value of another shape than its column, invalid JSON):
    /// arrow-json then decodes the batch and reports the error, if there is one.
    fn decode_fast<P: AsRef<[u8]>>(
        &self,
        pages: &[P],
        tapes: &[Option<Tape>],
    ) -> Option<(RecordBatch, Vec<usize>)> {
        let plan = self.fast.as_deref()?;
        let rows_hint = pages.len() * 200;
        let bytes: usize = pages.iter().map(|p| p.as_ref().len()).sum();
        let mut cols: Vec<FastBuilder> = plan
            .columns
            .iter()
            .zip(&plan.text_share)
            .map(|(c, share)| {
                let share = share.load(std::sync::atomic::Ordering::Relaxed) as usize;
                let text = (bytes / 65_536 + 1) * share * 17 / 16;
                FastBuilder::new(*c, rows_hint, text)
            })
            .collect();
        let mut ends = Vec::with_capacity(pages.len());
        let mut entries = Vec::new();
        let mut hints = crate::platform::records::KeyHints::default();
        let mut rows = 0usize;
        for (k, page) in pages.iter().enumerate() {
            let text = crate::platform::records::utf8(page.as_ref()).ok()?;
            if let Some(tape) = tapes
                .get(k)
                .and_then(Option::as_ref)
                .filter(|t| t.fits(text))
            {
                // The page's structure as inference found it: values by span.
                let columns: Vec<Option<usize>> = tape
                    .keys
                    .iter()
                    .map(|key| plan.index.get(key.as_str()).copied())
                    .collect();
                let mut e = 0usize;
                for &n in &tape.records {
                    let end = e + n as usize;
                    for (&key, &(a, b)) in
                        tape.key_of.get(e..end)?.iter().zip(tape.spans.get(e..end)?)
                    {
                        let raw = text.get(a as usize..b as usize)?;
                        match *columns.get(key as usize)? {
                            Some(i) if !cols[i].push(rows, raw) => return None,
                            Some(_) => {}
                            None if self.strict => return None,
                            // arrow-json still reads a skipped value.
                            None if has_surrogate_escape(raw) => return None,
                            None => {}
                        }
                    }
                    e = end;
                    rows += 1;
                }
                ends.push(rows);
                continue;
            }
            let mut ok = true;
            crate::platform::records::scan(text, &mut entries, |rec| {
                for (pos, (key, raw)) in rec.iter().enumerate() {
                    let i = match hints.get(pos) {
                        Some(h) if plan.names[h] == *key => h,
                        _ => match plan.index.get(key.as_ref()) {
                            Some(&i) => {
                                hints.set(pos, i);
                                i
                            }
                            None if self.strict => {
                                ok = false;
                                return false;
                            }
                            // arrow-json still reads a skipped value.
                            None if has_surrogate_escape(raw) => {
                                ok = false;
                                return false;
                            }
                            None => continue,
                        },
                    };
                    if !cols[i].push(rows, raw) {
                        ok = false;
                        return false;
                    }
                }
                rows += 1;
                true
            })
            .ok()?;
            if !ok {
                return None;
            }
            ends.push(rows);
        }
        for (c, share) in cols.iter().zip(&plan.text_share) {
            if let FastBuilder::Text(b, _) = c {
                let per = b.values_slice().len() * 65_536 / bytes.max(1);
                share.store(per as u32, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let arrays = cols.into_iter().map(|c| c.finish(rows)).collect();
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        let batch =
            RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options).ok()?;
        Some((batch, ends))
    }

    /// Decodes with arrow-json's tape decoder; also returns the rows decoded by the
    /// end of each page (to name the page of a bad value).
    fn decode_arrow_json<P: AsRef<[u8]>>(
        &self,
        pages: &[P],
    ) -> Result<(RecordBatch, Vec<usize>), (usize, PageError)> {
        let rows_hint: usize = pages.len() * 200;
        let mut decoder = ReaderBuilder::new(self.decode_schema.clone())
            .with_batch_size(rows_hint.max(1))
            .with_coerce_primitive(true)
            .with_strict_mode(self.strict)
            .with_flatten(true)
            .build_decoder()
            .map_err(|e| (0, convert_err(e)))?;
        let mut batches: Vec<RecordBatch> = Vec::new();
        // Rows decoded by the end of each page (to name the page of a bad value).
        let mut ends = Vec::with_capacity(pages.len());
        let mut flushed = 0usize;
        for (i, page) in pages.iter().enumerate() {
            let owned;
            let mut bytes: &[u8] = if self.rewrite {
                let text = std::str::from_utf8(page.as_ref()).map_err(|e| {
                    (
                        i,
                        PageError::Spool(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                    )
                })?;
                owned = self.rewrite_page(text).map_err(|e| (i, e))?;
                owned.as_bytes()
            } else {
                page.as_ref()
            };
            while !bytes.is_empty() {
                let n = decoder.decode(bytes).map_err(|e| (i, convert_err(e)))?;
                if n == 0 {
                    // The batch is full (a page larger than expected): flush, go on.
                    if let Some(b) = decoder.flush().map_err(|e| (i, convert_err(e)))? {
                        flushed += b.num_rows();
                        batches.push(b);
                    }
                    continue;
                }
                bytes = &bytes[n..];
            }
            ends.push(flushed + decoder.len());
        }
        if let Some(b) = decoder
            .flush()
            .map_err(|e| (pages.len().saturating_sub(1), convert_err(e)))?
        {
            batches.push(b);
        }
        let last = pages.len().saturating_sub(1);
        let text = match batches.len() {
            0 => RecordBatch::new_empty(self.decode_schema.clone()),
            1 => batches.pop().expect("one batch"),
            _ => arrow_select::concat::concat_batches(&self.decode_schema, &batches)
                .map_err(|e| (last, convert_err(e)))?,
        };
        Ok((text, ends))
    }

    /// Converts the text columns of detected types (`Target::convert`).
    fn finish_typed(
        &self,
        text: RecordBatch,
        ends: &[usize],
        pages: usize,
    ) -> Result<RecordBatch, (usize, PageError)> {
        let last = pages.saturating_sub(1);
        if text.num_rows() == 0 {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        if self.typed.is_empty() {
            return Ok(text);
        }
        let mut columns = text.columns().to_vec();
        for &(i, target) in self.typed.iter() {
            columns[i] = target.convert(&columns[i]).map_err(|(row, value)| {
                let page = ends.iter().position(|&end| row < end).unwrap_or(last);
                (
                    page,
                    PageError::Value {
                        column: self.schema.field(i).name().clone(),
                        arrow_type: target.data_type().to_string(),
                        value,
                    },
                )
            })?;
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| (last, convert_err(e)))
    }

    /// Rewrites a page so nested values in JSON text columns become strings.
    fn rewrite_page(&self, page: &str) -> Result<String, PageError> {
        let records = split_records(page)?;
        let mut out = String::with_capacity(page.len() + 64);
        out.push('[');
        for (i, rec) in records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            for (j, (k, v)) in rec.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, k);
                out.push(':');
                let kind = self.top.get(k).unwrap_or(&Kind::Unknown);
                write_normalized(&mut out, v, kind)?;
            }
            out.push('}');
        }
        out.push(']');
        Ok(out)
    }
}

/// What the one-pass builder needs: the columns by name and how each is built.
#[derive(Debug)]
struct FastPlan {
    names: Vec<String>,
    index: HashMap<String, usize>,
    columns: Vec<FastColumn>,
    /// Per column, its text bytes per 65,536 bytes of page, from the last batch
    /// built: the next batch reserves that much (+1/16) instead of growing by
    /// doubling, which left text buffers up to twice their size.
    text_share: Vec<std::sync::atomic::AtomicU32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FastColumn {
    /// Utf8: strings unescaped; numbers and booleans keep their text (as arrow-json's
    /// `coerce_primitive`); with `nested`, objects and arrays keep their JSON text.
    Text {
        nested: bool,
    },
    Int,
    Float,
    Bool,
    /// A detected type, built from the value's text as `Target::convert` does.
    Typed(Target),
}

impl FastPlan {
    /// `None` when a column is nested (a Struct or List is left to arrow-json).
    fn new(schema: &InferredSchema) -> Option<FastPlan> {
        let decode = schema.decode_schema();
        let mut columns = Vec::with_capacity(schema.columns.len());
        for (c, f) in schema.columns.iter().zip(decode.fields()) {
            columns.push(match f.data_type() {
                _ if c.typed.is_some() => FastColumn::Typed(c.typed.expect("checked")),
                DataType::Utf8 => FastColumn::Text {
                    nested: c.typed.is_none() && c.kind.is_json_text(),
                },
                DataType::Int64 => FastColumn::Int,
                DataType::Float64 => FastColumn::Float,
                DataType::Boolean => FastColumn::Bool,
                _ => return None,
            });
        }
        let names: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let text_share = columns
            .iter()
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect();
        Some(FastPlan {
            names,
            index,
            columns,
            text_share,
        })
    }
}

/// A column being built by the one-pass path.
enum FastBuilder {
    Text(StringBuilder, bool),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Typed(TypedBuilder),
}

impl FastBuilder {
    /// `text`: bytes to reserve for a text column (see `FastPlan::text_share`; a
    /// guess from page sizes alone over-allocated mostly-null columns).
    fn new(c: FastColumn, rows: usize, text: usize) -> FastBuilder {
        match c {
            FastColumn::Text { nested } => {
                FastBuilder::Text(StringBuilder::with_capacity(rows, text), nested)
            }
            FastColumn::Int => FastBuilder::Int(Int64Builder::with_capacity(rows)),
            FastColumn::Float => FastBuilder::Float(Float64Builder::with_capacity(rows)),
            FastColumn::Bool => FastBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            FastColumn::Typed(t) => FastBuilder::Typed(TypedBuilder::new(t, rows)),
        }
    }

    fn len(&self) -> usize {
        match self {
            FastBuilder::Text(b, _) => b.len(),
            FastBuilder::Int(b) => b.len(),
            FastBuilder::Float(b) => b.len(),
            FastBuilder::Bool(b) => b.len(),
            FastBuilder::Typed(b) => b.len(),
        }
    }

    fn pad(&mut self, rows: usize) {
        let n = rows - self.len();
        if n == 0 {
            return;
        }
        match self {
            FastBuilder::Text(b, _) => b.append_nulls(n),
            FastBuilder::Int(b) => b.append_nulls(n),
            FastBuilder::Float(b) => b.append_nulls(n),
            FastBuilder::Bool(b) => b.append_nulls(n),
            FastBuilder::Typed(b) => b.append_nulls(n),
        }
    }

    /// Appends the value of row `row` (earlier rows without the key become null).
    /// False when the value is not plain for this column, or the row already has one.
    fn push(&mut self, row: usize, raw: &str) -> bool {
        let len = self.len();
        if len > row {
            return false;
        }
        if len < row {
            self.pad(row);
        }
        let first = raw.as_bytes().first().copied().unwrap_or(b' ');
        if first == b'n' {
            match self {
                FastBuilder::Text(b, _) => b.append_null(),
                FastBuilder::Int(b) => b.append_null(),
                FastBuilder::Float(b) => b.append_null(),
                FastBuilder::Bool(b) => b.append_null(),
                FastBuilder::Typed(b) => b.append_nulls(1),
            }
            return true;
        }
        match self {
            FastBuilder::Text(b, nested) => match utf8_text(raw, *nested) {
                Some(s) => b.append_value(s),
                None => return false,
            },
            FastBuilder::Int(b) => {
                if !is_number(first) || raw.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                    return false;
                }
                match raw.parse::<i64>() {
                    Ok(v) => b.append_value(v),
                    Err(_) => return false,
                }
            }
            FastBuilder::Float(b) => {
                if !is_number(first) {
                    return false;
                }
                match raw.parse::<f64>() {
                    Ok(v) if v.is_finite() => b.append_value(v),
                    _ => return false,
                }
            }
            FastBuilder::Bool(b) => match first {
                b't' => b.append_value(true),
                b'f' => b.append_value(false),
                _ => return false,
            },
            // The text arrow-json would give a Utf8 column, then the type's parse.
            FastBuilder::Typed(b) => {
                return utf8_text(raw, false).is_some_and(|s| b.push(Some(&s)))
            }
        }
        true
    }

    fn finish(mut self, rows: usize) -> ArrayRef {
        self.pad(rows);
        match self {
            FastBuilder::Text(mut b, _) => Arc::new(b.finish()),
            FastBuilder::Int(mut b) => Arc::new(b.finish()),
            FastBuilder::Float(mut b) => Arc::new(b.finish()),
            FastBuilder::Bool(mut b) => Arc::new(b.finish()),
            FastBuilder::Typed(b) => b.finish(),
        }
    }
}

/// The text arrow-json gives a non-null raw value in a `Utf8` column (with
/// `coerce_primitive`): a string's content, a number's or boolean's own text, and
/// with `nested` an object's or array's JSON text. `None` when the value is not
/// plain: arrow-json then decides (surrogate escapes have its own rules).
#[inline]
fn utf8_text(raw: &str, nested: bool) -> Option<Cow<'_, str>> {
    match raw.as_bytes().first() {
        Some(b'"') => match string_content(raw)? {
            Cow::Owned(_) if has_surrogate_escape(raw) => None,
            s => Some(s),
        },
        Some(b'{' | b'[') if !nested || has_surrogate_escape(raw) => None,
        _ => Some(Cow::Borrowed(raw)),
    }
}

/// `\uD800`..`\uDFFF` in a raw string.
fn has_surrogate_escape(raw: &str) -> bool {
    raw.as_bytes().windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

fn is_number(first: u8) -> bool {
    first == b'-' || first.is_ascii_digit()
}

fn convert_err(e: arrow_schema::ArrowError) -> PageError {
    PageError::Convert { source: e }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

/// Writes `raw` so that it decodes into `kind`: nested values of JSON text kinds
/// become strings holding their JSON text.
fn write_normalized(out: &mut String, text: &str, kind: &Kind) -> Result<(), PageError> {
    let first = text.as_bytes().first().copied();
    if kind.is_json_text() {
        if matches!(first, Some(b'{') | Some(b'[')) {
            push_json_string(out, text);
        } else {
            out.push_str(text);
        }
        return Ok(());
    }
    match (kind, first) {
        (Kind::Struct(s), Some(b'{')) => {
            out.push('{');
            for (j, (k, v)) in object_entries(text)?.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_json_string(out, k);
                out.push(':');
                write_normalized(out, v, s.get(k).unwrap_or(&Kind::Unknown))?;
            }
            out.push('}');
        }
        (Kind::List(item), Some(b'[')) => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push('[');
            for (j, v) in items.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_normalized(out, v.get(), item)?;
            }
            out.push(']');
        }
        _ => out.push_str(text),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Inferrer;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array;

    fn convert(pages: &[&str]) -> RecordBatch {
        let mut inf = Inferrer::default();
        for p in pages {
            inf.merge(Inferrer::observe_page(&split_records(p).unwrap()));
        }
        let conv = Converter::new(&inf.finish());
        conv.decode(pages).unwrap()
    }

    fn converter(pages: &[&str]) -> Converter {
        let mut inf = Inferrer::default();
        for p in pages {
            inf.merge(Inferrer::observe_page(&split_records(p).unwrap()));
        }
        Converter::new(&inf.finish())
    }

    /// A batch decoded before a key was first seen is widened with nulls to the
    /// later schema's batch; any other difference refuses it.
    #[test]
    fn widen_adds_late_keys_as_nulls_and_refuses_other_changes() {
        let early = r#"[{"a":1,"d":"2024-01-02","s":"x"},{"a":2,"d":"2024-01-03","s":"y"}]"#;
        let batch = converter(&[early]).decode(&[early]).unwrap();
        let late = r#"[{"a":3,"d":"2024-01-04","s":"z","new":"n","n2":1.5}]"#;
        let later = converter(&[early, late]);
        let widened = later.widen(&converter(&[early]), batch.clone()).unwrap();
        assert_eq!(widened, later.decode(&[early]).unwrap());
        assert_eq!(widened.num_columns(), 5);
        assert_eq!(widened.column(3).null_count(), 2);
        // Alike: as it is.
        let same = converter(&[early, early]);
        assert_eq!(
            same.widen(&converter(&[early]), batch.clone()).unwrap(),
            batch
        );
        // A type that changed, a detected type lost, a column that moved: refused.
        for other in [
            r#"[{"a":2.5,"d":"2024-01-04","s":"z"}]"#,
            r#"[{"a":3,"d":"soon","s":"z"}]"#,
        ] {
            let conv = converter(&[early, other]);
            assert!(
                conv.widen(&converter(&[early]), batch.clone()).is_none(),
                "{other}"
            );
        }
        let moved = converter(&[r#"[{"new":"n","a":1,"d":"2024-01-02","s":"x"}]"#, early]);
        assert!(moved.widen(&converter(&[early]), batch.clone()).is_none());
        // Nested schemas are not widened.
        let nested = r#"[{"a":1,"o":{"k":1}}]"#;
        let nb = converter(&[nested]).decode(&[nested]).unwrap();
        let wider = converter(&[nested, r#"[{"a":1,"o":{"k":1},"new":1}]"#]);
        assert!(wider.widen(&converter(&[nested]), nb).is_none());
    }

    #[test]
    fn numbers_in_string_columns_keep_their_text() {
        let b = convert(&[r#"[{"a":"x"},{"a":12.50},{"a":true},{"a":1e3}]"#]);
        let a = b.column(0).as_string::<i32>();
        assert_eq!(
            (0..4).map(|i| a.value(i)).collect::<Vec<_>>(),
            ["x", "12.50", "true", "1e3"]
        );
    }

    #[test]
    fn int_and_float_decode_into_float64() {
        let b = convert(&[r#"[{"a":1},{"a":2.5}]"#]);
        let a = b.column(0).as_primitive::<Float64Type>();
        assert_eq!(a.values().to_vec(), vec![1.0, 2.5]);
    }

    #[test]
    fn late_key_is_null_before_it_appears() {
        let b = convert(&[r#"[{"a":1}]"#, r#"[{"a":2,"late":"x"}]"#]);
        assert_eq!(b.num_rows(), 2);
        let late = b.column(1).as_string::<i32>();
        assert!(late.is_null(0));
        assert_eq!(late.value(1), "x");
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(1), 2);
    }

    #[test]
    fn conflicting_shapes_are_json_text() {
        let b = convert(&[r#"[{"a":{"x":[1, 2]}},{"a":"s"},{"a":5},{"a":null}]"#]);
        let a = b.column(0).as_string::<i32>();
        assert_eq!(a.value(0), r#"{"x":[1, 2]}"#);
        assert_eq!(a.value(1), "s");
        assert_eq!(a.value(2), "5");
        assert!(a.is_null(3));
    }

    #[test]
    fn json_text_inside_a_struct_is_rewritten() {
        let b = convert(&[r#"[{"o":{"k":{"x":1},"n":1}},{"o":{"k":[2],"n":2}}]"#]);
        let o = b.column(0).as_struct();
        let k = o.column(0).as_string::<i32>();
        assert_eq!(k.value(0), r#"{"x":1}"#);
        assert_eq!(k.value(1), "[2]");
    }
}

#[cfg(test)]
mod duplicate_keys {
    use super::*;
    use crate::schema::Inferrer;
    use arrow_array::cast::AsArray;

    #[test]
    fn a_repeated_key_keeps_the_last_value() {
        let page = r#"[{"a":"first","a":"last","b":"x"}]"#;
        let mut inf = Inferrer::default();
        inf.merge(Inferrer::observe_page(&split_records(page).unwrap()));
        let conv = Converter::new(&inf.finish());
        let b = conv.decode(&[page]).unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), "last");
    }
}

#[cfg(test)]
mod one_pass {
    //! The one-pass builder against arrow-json: where it builds a batch, arrow-json
    //! builds the same one; where arrow-json fails, it declines.
    use super::*;
    use crate::schema::Inferrer;
    use arrow_array::cast::AsArray;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9 地市\"\\\\/\t.:-]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            2 => prop_oneof![
                Just("\"\"".to_string()),
                Just("\"01425\"".to_string()),
                Just("\"5000.00\"".to_string()),
                Just("\"12.5\"".to_string()),
                Just("\"2019-01-29\"".to_string()),
                Just("\"2019-01-29 08:30:00\"".to_string()),
                Just("\"true\"".to_string()),
                Just("\"\\u5730\\u5e02\"".to_string()),
                Just("\"\\ud800\"".to_string()),
            ],
            2 => any::<i64>().prop_map(|i| i.to_string()),
            1 => any::<i32>().prop_map(|i| format!("{i}.25")),
            1 => prop_oneof![
                Just("1e3".to_string()),
                Just("-0".to_string()),
                Just("123456789012345678901234".to_string()),
                Just("1e400".to_string()),
            ],
            1 => any::<bool>().prop_map(|b| b.to_string()),
            2 => Just("null".to_string()),
            1 => prop_oneof![
                Just(r#"{"x":[1,2]}"#.to_string()),
                Just("[]".to_string()),
                Just("{}".to_string()),
                Just(r#"[{"y":"z"}]"#.to_string()),
            ],
        ]
    }

    /// Values of a column that mostly stays typeable (so detected types are built).
    fn typed_value(key: &'static str) -> BoxedStrategy<String> {
        let quoted = |v: Vec<&'static str>| {
            prop::sample::select(v).prop_map(|s| serde_json::to_string(s).unwrap())
        };
        match key {
            "b" => prop_oneof![
                4 => (any::<i32>(), 0u32..1000).prop_map(|(i, f)| format!("\"{i}.{f:02}\"")),
                1 => quoted(vec!["", "12", "-3", "0.5", "x"]),
                1 => Just("null".to_string()),
            ]
            .boxed(),
            "d" => prop_oneof![
                4 => (1990i32..2030, 1u32..13, 1u32..29)
                    .prop_map(|(y, m, d)| format!("\"{y}-{m:02}-{d:02}\"")),
                1 => quoted(vec!["", "2019-02-30", "2019/01/29", "2019-01-29 08:00:00"]),
                1 => Just("null".to_string()),
            ]
            .boxed(),
            "e" => prop_oneof![
                4 => (1990i32..2030, 0u32..24, 0u32..1000).prop_map(|(y, h, ms)| {
                    format!("\"{y}-01-02 {h:02}:30:00.{ms:03}\"")
                }),
                1 => any::<i64>().prop_map(|i| i.to_string()),
                1 => quoted(vec!["", "true", "false"]),
            ]
            .boxed(),
            _ => value().boxed(),
        }
    }

    fn page() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["a", "b", "地市", "d", "e"]);
        // A key is sometimes written escaped (`"\u0061"` is `a`).
        let entry =
            (key, any::<bool>()).prop_flat_map(|(k, esc)| (Just(k), Just(esc), typed_value(k)));
        let record =
            (prop::collection::vec(entry, 0..6), any::<bool>()).prop_map(|(entries, ws)| {
                let body: Vec<String> = entries
                    .iter()
                    .map(|(k, esc, v)| {
                        let key = match (*k, *esc) {
                            ("a", true) => r#""\u0061""#.to_string(),
                            ("地市", true) => r#""\u5730\u5e02""#.to_string(),
                            _ => serde_json::to_string(k).unwrap(),
                        };
                        if ws {
                            format!(" {key} :\n\t{v} ")
                        } else {
                            format!("{key}:{v}")
                        }
                    })
                    .collect();
                format!("{{{}}}", body.join(","))
            });
        (prop::collection::vec(record, 0..6), any::<bool>()).prop_map(|(r, ws)| {
            if ws {
                format!(" [ {} ] ", r.join(" , "))
            } else {
                format!("[{}]", r.join(","))
            }
        })
    }

    fn infer(pages: &[String]) -> Option<InferredSchema> {
        let mut inf = Inferrer::default();
        for p in pages {
            inf.merge(Inferrer::observe_page(&split_records(p).ok()?));
        }
        Some(inf.finish())
    }

    fn same(conv: &Converter, pages: &[String]) -> Result<(), TestCaseError> {
        let slow = conv.decode_arrow_json(pages);
        // Walking the tapes inference keeps gives what scanning again gives.
        let tapes: Vec<Option<Tape>> = pages
            .iter()
            .map(|p| {
                let hash = twox_hash::XxHash3_64::oneshot(p.as_bytes());
                Inferrer::observe_array_taped(p, hash)
                    .ok()
                    .and_then(|t| t.2)
            })
            .collect();
        prop_assert_eq!(
            conv.decode_fast(pages, &tapes),
            conv.decode_fast(pages, &[])
        );
        if let Some(fast) = conv.decode_fast(pages, &[]) {
            let slow = slow.map_err(|e| {
                TestCaseError::fail(format!("fast path built a batch, arrow-json: {e:?}"))
            })?;
            let typed = conv
                .finish_typed(slow.0, &slow.1, pages.len())
                .map_err(|e| {
                    TestCaseError::fail(format!("fast path built a batch, arrow-json: {e:?}"))
                })?;
            prop_assert_eq!(&fast.0, &typed);
            prop_assert_eq!(&fast.1, &slow.1);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn builds_what_arrow_json_builds(pages in prop::collection::vec(page(), 1..4)) {
            let Some(schema) = infer(&pages) else { return Ok(()) };
            same(&Converter::new(&schema), &pages)?;
            // Under the schema of the first page only (an early row group's), and
            // for a subset of the columns.
            if let Some(first) = infer(&pages[..1]) {
                same(&Converter::new(&first), &pages)?;
            }
            same(&Converter::columns(&schema, &["a", "地市"]), &pages)?;
        }
    }

    /// A tape that fits the page is walked (a tape changed by hand shows in the
    /// batch); one made of other bytes is not (the page is scanned).
    #[test]
    fn tapes_are_walked_only_for_their_own_bytes() {
        let page = r#"[{"a":"x","n":1},{"a":"y","n":2}]"#.to_string();
        let other = r#"[{"a":"u","n":3},{"a":"v","n":4}]"#.to_string();
        let taped = |p: &String| {
            let hash = twox_hash::XxHash3_64::oneshot(p.as_bytes());
            Inferrer::observe_array_taped(p, hash).unwrap().2.unwrap()
        };
        let tape = taped(&page);
        assert_eq!(tape.records, [2, 2]);
        assert_eq!(tape.keys, ["a", "n"]);
        let conv = Converter::new(&infer(std::slice::from_ref(&page)).unwrap());
        let scanned = conv.decode_fast(std::slice::from_ref(&page), &[]).unwrap();
        let walked = conv
            .decode_fast(std::slice::from_ref(&page), &[Some(tape.clone())])
            .unwrap();
        assert_eq!(walked, scanned);
        // The two records' spans swapped: the batch follows the tape.
        let mut swapped = tape.clone();
        swapped.spans.swap(0, 2);
        swapped.spans.swap(1, 3);
        let (b, _) = conv
            .decode_fast(std::slice::from_ref(&page), &[Some(swapped)])
            .unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), "y");
        // Bytes of the same length but not the tape's: scanned.
        let (b, _) = conv
            .decode_fast(std::slice::from_ref(&other), &[Some(tape)])
            .unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), "u");
    }

    #[test]
    fn flat_pages_take_the_one_pass_path() {
        let pages = [
            r#"[{"a":"x","n":1,"f":1.5,"t":true,"d":"2019-01-29","j":{"k":1}},{"a":null,"n":-2,"j":"s","f":2}]"#.to_string(),
            r#"[{"n":3,"a":"y\"z","late":"地市","j":[1]}]"#.to_string(),
        ];
        let conv = Converter::new(&infer(&pages).unwrap());
        let (fast, ends) = conv
            .decode_fast(&pages, &[])
            .expect("flat pages are built in one pass");
        assert_eq!(ends, [2, 3]);
        let (text, slow_ends) = conv.decode_arrow_json(&pages).unwrap();
        assert_eq!(fast, conv.finish_typed(text, &slow_ends, 2).unwrap());
        // A key twice in a record, a key outside the schema, a nested column: arrow-json.
        let dup = [r#"[{"a":"x","a":"y"}]"#.to_string()];
        assert!(Converter::new(&infer(&dup).unwrap())
            .decode_fast(&dup, &[])
            .is_none());
        assert!(conv.decode_fast(&[r#"[{"zz":1}]"#], &[]).is_none());
        let nested = [r#"[{"o":{"k":1}}]"#.to_string()];
        assert!(Converter::new(&infer(&nested).unwrap())
            .decode_fast(&nested, &[])
            .is_none());
    }
}
