//! Encoding and decoding payloads.
//!
//! Every payload is a UTF-8 JSON object with `"schema": 1`. [`encode`] writes it;
//! [`decode`] checks it and names the path and the field of whatever is wrong.

use serde::{Serialize, de::DeserializeOwned};

/// What is wrong with a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The bytes are not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// The text is not JSON.
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Malformed { line: usize, column: usize, message: String },
    /// The JSON is not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField { field: String },
    /// A field has the wrong JSON type.
    #[error("field `{field}` has the wrong type: {message}")]
    WrongType { field: String, message: String },
    /// A field's value is refused (e.g. an unknown enum value).
    #[error("field `{field}` is invalid: {message}")]
    Invalid { field: String, message: String },
    /// A schema number this version does not know.
    #[error("unknown schema {found} (this baton reads schema {})", crate::SCHEMA)]
    UnknownSchema { found: String },
}

/// A payload that could not be decoded, with the path it was read from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid payload at {path}: {kind}")]
pub struct DecodeError {
    /// The znode path.
    pub path: String,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

/// Encodes a payload as compact JSON with `"schema": 1` first.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Payload types are plain structs of strings and numbers: serialization cannot fail.
    let body = serde_json::to_string(value).expect("payload types always serialize");
    let rest = body.strip_prefix('{').expect("payloads are JSON objects");
    let sep = if rest == "}" { "" } else { "," };
    format!("{{\"schema\":{}{sep}{rest}", crate::SCHEMA).into_bytes()
}

/// Decodes the payload read from `path`.
pub fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, DecodeError> {
    decode_inner(bytes).map_err(|kind| DecodeError { path: path.into(), kind })
}

fn decode_inner<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeErrorKind> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeErrorKind::NotUtf8)?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeErrorKind::Malformed {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    let obj = value.as_object().ok_or(DecodeErrorKind::NotAnObject)?;
    match obj.get("schema") {
        None => return Err(DecodeErrorKind::MissingField { field: "schema".into() }),
        Some(v) if v.as_u64() == Some(u64::from(crate::SCHEMA)) => {}
        Some(v) if v.is_u64() => return Err(DecodeErrorKind::UnknownSchema { found: v.to_string() }),
        Some(v) => {
            return Err(DecodeErrorKind::WrongType {
                field: "schema".into(),
                message: format!("expected an integer, found {v}"),
            });
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| classify(e.path().to_string(), e.inner().to_string()))
}

/// Turns serde's message into a typed error naming the full field path.
fn classify(at: String, message: String) -> DecodeErrorKind {
    let at = if at == "." { String::new() } else { at };
    let join = |name: &str| if at.is_empty() { name.to_string() } else { format!("{at}.{name}") };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return DecodeErrorKind::MissingField { field: join(name) };
    }
    let field = if at.is_empty() { "(root)".to_string() } else { at };
    let message = strip_position(&message);
    if message.starts_with("invalid type") {
        DecodeErrorKind::WrongType { field, message }
    } else {
        DecodeErrorKind::Invalid { field, message }
    }
}

/// serde_json appends " at line L column C" to messages; the position is reported apart.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
