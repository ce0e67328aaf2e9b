//! Records -> Arrow `RecordBatch`es with the final, whole-dataset schema.
//!
//! Decoding uses arrow-json's tape decoder fed with the page's record array
//! (`with_flatten`), with `coerce_primitive` so that numbers and booleans in a `Utf8`
//! column keep their exact text. When the schema has JSON text columns (shape
//! conflicts), records are first rewritten so that nested values in those columns
//! become JSON strings; other datasets skip that step entirely.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::ReaderBuilder;
use arrow_schema::SchemaRef;
use serde_json::value::RawValue;

use crate::detect::Target;
use crate::error::PageError;
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
        }
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
            0 => return Ok(RecordBatch::new_empty(self.schema.clone())),
            1 => batches.pop().expect("one batch"),
            _ => arrow_select::concat::concat_batches(&self.decode_schema, &batches)
                .map_err(|e| (last, convert_err(e)))?,
        };
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

fn convert_err(e: arrow_schema::ArrowError) -> PageError {
    PageError::Convert { source: e }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

/// Writes `raw` so that it decodes into `kind`: nested values of JSON text kinds
/// become strings holding their JSON text.
fn write_normalized(out: &mut String, raw: &RawValue, kind: &Kind) -> Result<(), PageError> {
    let text = raw.get();
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
            for (j, (k, v)) in object_entries(raw)?.iter().enumerate() {
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
                write_normalized(out, v, item)?;
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
