//! Field paths inside a resource, as messages show them: `spec.http[0].retries.attempts`.

use std::fmt;

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A struct field, by its YAML name.
    Field(String),
    /// A list element.
    Index(usize),
    /// A map entry, by its key.
    Key(String),
}

/// A path from a resource's root to one of its fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path(Vec<Seg>);

impl Path {
    /// A path of one field, such as `spec`.
    pub fn root(field: &str) -> Self {
        Path(vec![Seg::Field(field.to_string())])
    }

    /// The empty path (the resource itself).
    pub fn empty() -> Self {
        Path(Vec::new())
    }

    /// This path extended by a field.
    pub fn field(mut self, name: &str) -> Self {
        self.0.push(Seg::Field(name.to_string()));
        self
    }

    /// This path extended by a list index.
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }

    /// This path extended by a map key.
    pub fn key(mut self, k: &str) -> Self {
        self.0.push(Seg::Key(k.to_string()));
        self
    }

    /// Appends a segment in place.
    pub fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }

    /// Removes the last segment.
    pub fn pop(&mut self) -> Option<Seg> {
        self.0.pop()
    }

    /// The segments, root first.
    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// Whether the path has no segments.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This path followed by `other`.
    pub fn join(&self, other: &Path) -> Path {
        let mut p = self.clone();
        p.0.extend(other.0.iter().cloned());
        p
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if plain_key(k) && i > 0 => write!(f, ".{k}")?,
                Seg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

impl From<&serde_path_to_error::Path> for Path {
    fn from(p: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        Path(
            p.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Field(key.clone())),
                    Segment::Enum { variant } => Some(Seg::Field(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_istio_field_paths() {
        let p = Path::root("spec")
            .field("http")
            .index(0)
            .field("match")
            .index(1)
            .field("headers")
            .key("end-user");
        assert_eq!(p.to_string(), "spec.http[0].match[1].headers.end-user");
        let q = Path::root("metadata")
            .field("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(q.to_string(), "metadata.labels[\"app.kubernetes.io/name\"]");
    }
}
