//! Reading YAML files with errors that point at the file, line and column.

use std::{fmt, path::Path};

use serde::de::DeserializeOwned;

/// A YAML document that could not be read or did not fit its schema.
#[derive(Debug, thiserror::Error)]
pub struct YamlError {
    pub file: String,
    /// 1-based line and column, when the parser knows them.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Parses `text` (read from `file`) into `T`; schema errors carry their location.
pub fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, YamlError> {
    serde_yaml_ng::from_str(text).map_err(|e| YamlError {
        file: file.to_owned(),
        location: e.location().map(|l| (l.line(), l.column())),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Reads and parses `path`.
pub fn from_file<T: DeserializeOwned>(path: &Path) -> Result<T, YamlError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| YamlError {
        file: file.clone(),
        location: None,
        message: format!("cannot read: {e}"),
    })?;
    from_str(&file, &text)
}
