//! The routing-table document: parsing (syntax, unknown fields, with the
//! file position and field path) and validation (cross-field rules, every
//! error at once). Compiling a valid document is `table`'s job; everything
//! `RoutingTable::compile` relies on is checked here first.

mod document;
mod validate;

pub use document::*;
pub use validate::validate;

use std::fmt;

/// Where a document came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file on disk (path as given).
    File(String),
    /// A document embedded in the binary (`demo`).
    Embedded(&'static str),
    /// A Redis revision.
    Redis { revision: u64 },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => f.write_str(path),
            Origin::Embedded(name) => write!(f, "<embedded {name}>"),
            Origin::Redis { revision } => write!(f, "redis revision {revision}"),
        }
    }
}

/// One problem in a document: where (`file:line:col` when known, and the
/// field path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted field path, e.g. `routes[2].split.v2`; empty for syntax errors.
    pub path: String,
    /// 1-based line and column in the source text, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong, in one line.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            position: None,
            reason: reason.into(),
        }
    }
}

/// Every error found in one document, with its origin.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// Where the document came from.
    pub origin: Origin,
    /// At least one error.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One line per error: `origin[:line:col]: path: reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.origin)?;
            if let Some((line, col)) = e.position {
                write!(f, ":{line}:{col}")?;
            }
            if !e.path.is_empty() {
                write!(f, ": {}", e.path)?;
            }
            write!(f, ": {}", e.reason)?;
        }
        Ok(())
    }
}

/// Parses a TOML document. Syntax errors and unknown or mistyped fields come
/// back with their line, column and field path.
pub fn parse(text: &str, origin: Origin) -> Result<Document, ConfigErrors> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigErrors {
        origin: origin.clone(),
        errors: vec![toml_error(text, "", &e)],
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = field_path(e.path());
        ConfigErrors {
            origin,
            errors: vec![toml_error(text, &path, e.inner())],
        }
    })
}

/// Parses and validates: the document is ready for `RoutingTable::compile`.
pub fn load(text: &str, origin: Origin) -> Result<Document, ConfigErrors> {
    let doc = parse(text, origin.clone())?;
    validate(&doc).map_err(|errors| ConfigErrors { origin, errors })?;
    Ok(doc)
}

fn toml_error(text: &str, path: &str, e: &toml::de::Error) -> ConfigError {
    let position = e.span().map(|span| line_col(text, span.start));
    ConfigError {
        path: path.to_string(),
        position,
        reason: e.message().trim().to_string(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// `routes[2].split` rather than serde_path_to_error's `routes.2.split`.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    if out == "?" { String::new() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_reports_line_and_path() {
        let text = "[[routes]]\nname = \"a\"\ndefault_version = \"v1\"\ntimeout = 3\n";
        let err = parse(text, Origin::File("t.toml".into())).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("t.toml:4:1: routes[0]"), "{shown}");
        assert!(shown.contains("unknown field `timeout`"), "{shown}");
    }

    #[test]
    fn wrong_type_reports_field_path() {
        let text = "[server]\ngrace_period_ms = \"soon\"\n";
        let err = parse(text, Origin::File("t.toml".into())).unwrap_err();
        assert_eq!(err.errors[0].path, "server.grace_period_ms");
        assert_eq!(err.errors[0].position.map(|p| p.0), Some(2));
    }
}
