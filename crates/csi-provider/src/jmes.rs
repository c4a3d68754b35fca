//! Fields of a JSON secret, picked out with JMESPath: what a `jmesPath` entry of an object writes
//! to its own file, and the limits an expression in a class must keep. Backend-independent (the
//! Azure and Alibaba backends share it). A string result is written raw (no quotes), as AWS's
//! and Alibaba's providers write it; where they refuse any other result, kube-kms writes it as
//! compact JSON, so every class that works with theirs writes the same files here. A result of
//! `null` (nothing matched) is an error rather than an empty file.
//!
//! The JSON is a secret's value: no error says anything about it beyond where parsing stopped
//! (line and column) or which types a function was given. The output is a zeroizing buffer; the
//! parsed JSON tree is the jmespath crate's own and is not zeroized (it lives only for the call).

use std::fmt;

use jmespath::Variable;
use zeroize::Zeroizing;

/// A `jmesPath` entry could not be evaluated against a secret. `Display` names the expression
/// and says what went wrong; it never shows the secret's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonFieldError {
    /// The expression is not valid JMESPath.
    InvalidPath {
        /// The expression as given.
        path: String,
        /// The parser's explanation (about the expression, not the data).
        reason: String,
    },
    /// The secret is not a JSON document (or not UTF-8).
    NotJson {
        /// Line (from 1) where parsing stopped.
        line: usize,
        /// Column (from 1) where parsing stopped.
        column: usize,
    },
    /// Evaluating the expression failed (e.g. a function given the wrong type).
    Evaluation {
        /// The expression.
        path: String,
        /// What failed: types, argument counts or function names, never values.
        reason: String,
    },
    /// The expression matched nothing (its result is `null`).
    NoMatch {
        /// The expression.
        path: String,
    },
}

impl fmt::Display for JsonFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPath { path, reason } => {
                write!(
                    f,
                    "jmesPath path {path:?} is not a valid JMESPath expression: {reason}"
                )
            }
            Self::NotJson { line, column } => write!(
                f,
                "the secret is not a JSON document (parsing stopped at line {line}, column \
                 {column}); jmesPath needs a JSON secret"
            ),
            Self::Evaluation { path, reason } => {
                write!(f, "jmesPath path {path:?} could not be evaluated: {reason}")
            }
            Self::NoMatch { path } => write!(f, "jmesPath path {path:?} matched nothing"),
        }
    }
}

impl std::error::Error for JsonFieldError {}

/// The most `jmesPath` entries one object may have.
pub const MAX_JSON_FIELDS: usize = 100;

/// The longest `jmesPath` expression, in bytes.
pub const MAX_JMESPATH_BYTES: usize = 1024;

/// The most nesting constructs (`(`, `[`, `{`, `!`, `&`, `*`, `?`) one expression may hold: the
/// `jmespath` parser recurses on each, and a Tokio worker's stack must survive any class.
pub const MAX_JMESPATH_NESTING: usize = 32;

/// Checks a class's expression before any secret is fetched: within [`MAX_JMESPATH_BYTES`] and
/// [`MAX_JMESPATH_NESTING`], and compiling. The error is the end of a sentence that starts with
/// the expression ("… is longer than …", "… does not compile: …").
pub fn check_expression(path: &str) -> Result<(), String> {
    if path.len() > MAX_JMESPATH_BYTES {
        return Err(format!(
            "is longer than the {MAX_JMESPATH_BYTES} bytes an expression may have"
        ));
    }
    let nesting = path.bytes().filter(|b| b"([{!&*?".contains(b)).count();
    if nesting > MAX_JMESPATH_NESTING {
        return Err(format!(
            "has more than {MAX_JMESPATH_NESTING} brackets, negations, wildcards and filters"
        ));
    }
    jmespath::compile(path).map(drop).map_err(|error| {
        format!(
            "does not compile: {} at column {}",
            error.reason, error.column
        )
    })
}

/// Evaluates `path` against the JSON document `json` and returns the file contents: a string
/// result as its raw UTF-8 bytes, any other result (number, boolean, array, object) as compact
/// JSON. Object keys in a compact-JSON result come out sorted (the evaluator keeps objects in
/// sorted maps).
///
/// Exposes secret bytes: the result is a field of the secret, for the driver to write.
pub fn extract(json: &[u8], path: &str) -> Result<Zeroizing<Vec<u8>>, JsonFieldError> {
    let expression = compile(path)?;
    let data: Variable = serde_json::from_slice(json).map_err(|error| JsonFieldError::NotJson {
        line: error.line(),
        column: error.column(),
    })?;
    let result = expression
        .search(data)
        .map_err(|error| JsonFieldError::Evaluation {
            path: path.to_owned(),
            reason: error.reason.to_string(),
        })?;
    match &*result {
        Variable::Null => Err(JsonFieldError::NoMatch {
            path: path.to_owned(),
        }),
        Variable::String(text) => Ok(Zeroizing::new(text.as_bytes().to_vec())),
        other => {
            serde_json::to_vec(other)
                .map(Zeroizing::new)
                .map_err(|_| JsonFieldError::Evaluation {
                    path: path.to_owned(),
                    reason: "the result is not representable as JSON".to_owned(),
                })
        }
    }
}

fn compile(path: &str) -> Result<jmespath::Expression<'static>, JsonFieldError> {
    jmespath::compile(path).map_err(|error| JsonFieldError::InvalidPath {
        path: path.to_owned(),
        reason: error.reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"{
        "username": "app",
        "password": "s3cr3t-\"quoted\"",
        "port": 5432,
        "ratio": 0.5,
        "enabled": true,
        "hosts": ["a.example", "b.example"],
        "nested": {"z": 1, "a": {"deep": "value"}},
        "empty": "",
        "nothing": null
    }"#;

    fn text(bytes: Zeroizing<Vec<u8>>) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_string_field_is_written_raw_without_quotes_or_escapes() {
        assert_eq!(text(extract(DOC, "username").unwrap()), "app");
        assert_eq!(text(extract(DOC, "password").unwrap()), "s3cr3t-\"quoted\"");
        assert_eq!(text(extract(DOC, "nested.a.deep").unwrap()), "value");
    }

    #[test]
    fn an_empty_string_is_an_empty_file_not_a_miss() {
        assert_eq!(text(extract(DOC, "empty").unwrap()), "");
    }

    #[test]
    fn any_other_result_is_compact_json() {
        assert_eq!(text(extract(DOC, "port").unwrap()), "5432");
        assert_eq!(text(extract(DOC, "ratio").unwrap()), "0.5");
        assert_eq!(text(extract(DOC, "enabled").unwrap()), "true");
        assert_eq!(
            text(extract(DOC, "hosts").unwrap()),
            r#"["a.example","b.example"]"#
        );
        assert_eq!(
            text(extract(DOC, "nested").unwrap()),
            r#"{"a":{"deep":"value"},"z":1}"#
        );
        assert_eq!(text(extract(DOC, "hosts[0]").unwrap()), "a.example");
        assert_eq!(text(extract(DOC, "length(hosts)").unwrap()), "2");
    }

    #[test]
    fn a_top_level_string_document_works_with_the_identity_expression() {
        assert_eq!(text(extract(br#""plain""#, "@").unwrap()), "plain");
    }

    #[test]
    fn a_missing_or_null_field_is_no_match_naming_the_path() {
        for path in ["missing", "nothing", "nested.b.c", "hosts[5]"] {
            let error = extract(DOC, path).unwrap_err();
            assert_eq!(
                error,
                JsonFieldError::NoMatch {
                    path: path.to_owned()
                }
            );
            assert!(error.to_string().contains(path), "{error}");
        }
    }

    #[test]
    fn an_invalid_expression_is_refused_before_the_secret_is_parsed() {
        let error = extract(b"not json at all", "a.[").unwrap_err();
        assert!(
            matches!(&error, JsonFieldError::InvalidPath { path, .. } if path == "a.["),
            "{error:?}"
        );
        assert!(
            check_expression("a.[")
                .unwrap_err()
                .starts_with("does not compile")
        );
        assert_eq!(check_expression("a.b[0]"), Ok(()));
    }

    #[test]
    fn a_secret_that_is_not_json_says_where_parsing_stopped_and_not_what_it_saw() {
        let secret = b"password=hunter2";
        let error = extract(secret, "password").unwrap_err();
        assert_eq!(error, JsonFieldError::NotJson { line: 1, column: 1 });
        assert!(!error.to_string().contains("hunter2"));

        let error = extract(b"{\"a\": \xff}", "a").unwrap_err();
        assert!(matches!(error, JsonFieldError::NotJson { .. }), "{error:?}");
    }

    #[test]
    fn an_evaluation_error_names_types_not_values() {
        let error = extract(br#"{"a": "hunter2"}"#, "abs(a)").unwrap_err();
        assert!(
            matches!(&error, JsonFieldError::Evaluation { path, .. } if path == "abs(a)"),
            "{error:?}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
