//! Request decoding: JSON, `application/x-www-form-urlencoded` and multipart text fields become
//! one map of named fields, read with typed accessors that fail with a sentence naming the field.
//! A form sends a list as repeated fields (`keys=a&keys=b`). Unknown fields are ignored.

use serde_json::{Map, Value};

/// Why a body could not be decoded at all (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("The request body is not valid JSON: {0}")]
    Json(String),
    #[error("The request body must be a JSON object")]
    NotAnObject,
    #[error("The request body cannot be parsed: {0}")]
    Unparseable(String),
    #[error("The request body is larger than {0} bytes")]
    TooLarge(usize),
}

/// A field that is missing or cannot be read as what the endpoint needs (an ordinary failure:
/// HTTP 200, `success: false`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FieldError {
    #[error("Missing required field '{0}'")]
    Missing(&'static str),
    #[error("Invalid field '{field}': {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The decoded fields of a request.
#[derive(Debug, Default)]
pub(crate) struct Fields(Map<String, Value>);

impl Fields {
    pub(crate) fn from_json(body: &[u8]) -> Result<Fields, BodyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(Value::Null) => Ok(Fields::default()),
            Ok(_) => Err(BodyError::NotAnObject),
            Err(e) => Err(BodyError::Json(e.to_string())),
        }
    }

    /// Form pairs; a name given more than once becomes a list.
    pub(crate) fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Fields {
        let mut map = Map::new();
        for (name, value) in pairs {
            match map.get_mut(&name) {
                None => {
                    map.insert(name, Value::String(value));
                }
                Some(Value::Array(list)) => list.push(Value::String(value)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(value)]);
                }
            }
        }
        Fields(map)
    }

    pub(crate) fn from_form(body: &[u8]) -> Fields {
        Fields::from_pairs(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())))
    }

    /// Decodes by content type; without one, JSON is tried, then a form.
    pub(crate) fn decode(content_type: Option<&str>, body: &[u8]) -> Result<Fields, BodyError> {
        let essence = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/x-www-form-urlencoded") => Ok(Fields::from_form(body)),
            Some(ct) if ct == "application/json" || ct.ends_with("+json") => Fields::from_json(body),
            _ => {
                let trimmed = body.trim_ascii_start();
                if trimmed.is_empty() {
                    Ok(Fields::default())
                } else if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
                    Fields::from_json(body)
                } else if body.contains(&b'=') {
                    Ok(Fields::from_form(body))
                } else {
                    Err(BodyError::Unparseable(
                        "send JSON (Content-Type: application/json) or a form (application/x-www-form-urlencoded)"
                            .into(),
                    ))
                }
            }
        }
    }

    /// A single text value; numbers are taken as their decimal text.
    pub(crate) fn text(&self, name: &'static str) -> Result<Option<String>, FieldError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Array(_)) => Err(FieldError::Invalid {
                field: name,
                reason: "it is given more than once; send it once".into(),
            }),
            Some(_) => Err(FieldError::Invalid {
                field: name,
                reason: "it must be a string".into(),
            }),
        }
    }

    pub(crate) fn required_text(&self, name: &'static str) -> Result<String, FieldError> {
        self.text(name)?.ok_or(FieldError::Missing(name))
    }

    /// A list of strings; a single string is a list of one.
    pub(crate) fn text_list(&self, name: &'static str) -> Result<Option<Vec<String>>, FieldError> {
        let invalid = || FieldError::Invalid {
            field: name,
            reason: "it must be a list of strings".into(),
        };
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid()),
        }
    }

    /// A page number: a non-negative integer (or its decimal text); absent means 0.
    pub(crate) fn page(&self, name: &'static str) -> Result<u64, FieldError> {
        let invalid = || FieldError::Invalid {
            field: name,
            reason: "it must be a non-negative integer".into(),
        };
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(invalid),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(0),
            Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        !matches!(self.0.get(name), None | Some(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_repeat_into_lists() {
        let fields = Fields::from_form(b"organizationId=o&keys=a&keys=b%2Fc&extra=1");
        assert_eq!(fields.text_list("keys").unwrap(), Some(vec!["a".into(), "b/c".into()]));
        assert_eq!(fields.required_text("organizationId").unwrap(), "o");
        assert!(fields.text("keys").is_err());
        let single = Fields::from_form(b"keys=a");
        assert_eq!(single.text_list("keys").unwrap(), Some(vec!["a".into()]));
    }

    #[test]
    fn json_fields() {
        let fields = Fields::from_json(br#"{"key": "a", "page": 2, "keys": ["x", 1], "n": {"a": 1}}"#).unwrap();
        assert_eq!(fields.text("key").unwrap().as_deref(), Some("a"));
        assert_eq!(fields.page("page").unwrap(), 2);
        assert!(fields.text_list("keys").is_err());
        assert!(fields.text("n").is_err());
        assert!(matches!(
            fields.required_text("missing"),
            Err(FieldError::Missing("missing"))
        ));
        assert!(Fields::from_json(b"{not json").is_err());
        assert!(Fields::from_json(b"[1]").is_err());
        assert!(Fields::from_json(b"").is_ok());
    }

    #[test]
    fn pages() {
        for bad in [
            r#"{"page": -1}"#,
            r#"{"page": 1.5}"#,
            r#"{"page": "x"}"#,
            r#"{"page": true}"#,
        ] {
            assert!(
                Fields::from_json(bad.as_bytes()).unwrap().page("page").is_err(),
                "{bad}"
            );
        }
        assert_eq!(Fields::from_json(br#"{"page": "3"}"#).unwrap().page("page").unwrap(), 3);
    }

    #[test]
    fn decode_by_content_type() {
        assert!(Fields::decode(Some("application/json; charset=utf-8"), b"{}").is_ok());
        assert!(Fields::decode(Some("application/json"), b"{not json").is_err());
        let form = Fields::decode(None, b"a=1").unwrap();
        assert_eq!(form.text("a").unwrap().as_deref(), Some("1"));
        assert!(Fields::decode(None, b"").is_ok());
        assert!(Fields::decode(None, b"garbage").is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Any bytes under any content type decode or fail with an error; nothing panics, and
            /// every accessor answers.
            #[test]
            fn decoding_never_panics(
                body in proptest::collection::vec(any::<u8>(), 0..512),
                content_type in proptest::option::of(prop_oneof![
                    Just("application/json".to_owned()),
                    Just("application/x-www-form-urlencoded".to_owned()),
                    Just("text/plain".to_owned()),
                    "[ -~]{0,40}",
                ]),
            ) {
                if let Ok(fields) = Fields::decode(content_type.as_deref(), &body) {
                    let _ = fields.text("key");
                    let _ = fields.text_list("keys");
                    let _ = fields.page("page");
                }
            }

            /// A form survives encoding: one value stays a string, repeats become a list in order.
            #[test]
            fn forms_round_trip(values in proptest::collection::vec("\\PC{0,12}", 1..5)) {
                let mut encoder = form_urlencoded::Serializer::new(String::new());
                encoder.append_pair("other", "x");
                for value in &values {
                    encoder.append_pair("keys", value);
                }
                let body = encoder.finish();
                let fields = Fields::decode(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap();
                prop_assert_eq!(fields.text_list("keys").unwrap(), Some(values.clone()));
            }

            /// Any JSON object with string fields reads back the same strings.
            #[test]
            fn json_strings_round_trip(key in "\\PC{0,40}", org in "[0-9a-f]{0,32}") {
                let body = serde_json::json!({"key": key, "organizationId": org}).to_string();
                let fields = Fields::decode(Some("application/json"), body.as_bytes()).unwrap();
                prop_assert_eq!(fields.required_text("key").unwrap(), key);
                prop_assert_eq!(fields.required_text("organizationId").unwrap(), org);
            }
        }
    }
}
