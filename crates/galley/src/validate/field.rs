//! The cursor validation rules write through: a field path plus the findings list.
//!
//! Rules walk a spec top-down, stepping into fields with [`Field::at`], list
//! elements with [`Field::index`] and map entries with [`Field::key`]; a problem is
//! recorded with [`Field::error`] or [`Field::warn`] at the cursor's path.

use common::path::{Path, Seg};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Level {
    /// Informational; never fails validation.
    Info,
    /// Accepted, but probably not what was meant (deprecated field, ineffective setting).
    Warning,
    /// Refused: Istio would reject the resource.
    Error,
}

impl Level {
    /// Istio's spelling of the level, as in `Error [IST0106]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }
}

/// One problem found at one field of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// How serious it is.
    pub level: Level,
    /// Where in the resource, e.g. `spec.http[0].retries.attempts`.
    pub path: Path,
    /// What is wrong, and what to do about it.
    pub message: String,
}

/// What a rule may need to know about the resource it validates.
#[derive(Debug, Clone, Copy)]
pub struct ResourceCtx<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace` (the default namespace when the resource set none).
    pub namespace: &'a str,
}

/// A position in the resource being validated, with the list findings go to.
pub struct Field<'a> {
    path: Path,
    out: &'a mut Vec<Finding>,
}

impl<'a> Field<'a> {
    /// A cursor at `root` (normally `spec`) writing into `out`.
    pub fn new(root: &str, out: &'a mut Vec<Finding>) -> Self {
        Field {
            path: Path::root(root),
            out,
        }
    }

    /// A cursor at an arbitrary path.
    pub fn with_path(path: Path, out: &'a mut Vec<Finding>) -> Self {
        Field { path, out }
    }

    fn child(&mut self, seg: Seg) -> Field<'_> {
        let mut path = self.path.clone();
        path.push(seg);
        Field {
            path,
            out: self.out,
        }
    }

    /// Steps into a field by its YAML name.
    pub fn at(&mut self, name: &str) -> Field<'_> {
        self.child(Seg::Field(name.to_string()))
    }

    /// Steps into a list element.
    pub fn index(&mut self, i: usize) -> Field<'_> {
        self.child(Seg::Index(i))
    }

    /// Steps into a map entry.
    pub fn key(&mut self, k: &str) -> Field<'_> {
        self.child(Seg::Key(k.to_string()))
    }

    /// The cursor's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records an error at the cursor.
    pub fn error(&mut self, message: impl Into<String>) {
        self.push(Level::Error, message.into());
    }

    /// Records a warning at the cursor.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Level::Warning, message.into());
    }

    /// Records an informational finding at the cursor.
    pub fn info(&mut self, message: impl Into<String>) {
        self.push(Level::Info, message.into());
    }

    fn push(&mut self, level: Level, message: String) {
        self.out.push(Finding {
            level,
            path: self.path.clone(),
            message,
        });
    }

    /// Whether any error has been recorded so far (by any cursor on this list).
    pub fn has_errors(&self) -> bool {
        self.out.iter().any(|f| f.level == Level::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_cursor() {
        let mut out = Vec::new();
        let mut f = Field::new("spec", &mut out);
        f.at("http")
            .index(2)
            .at("retries")
            .at("attempts")
            .error("must be 0 or more");
        f.at("hosts").warn("w");
        assert_eq!(out[0].path.to_string(), "spec.http[2].retries.attempts");
        assert_eq!(out[0].level, Level::Error);
        assert_eq!(out[1].path.to_string(), "spec.hosts");
    }
}
