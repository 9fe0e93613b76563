//! Ledger URLs: building the default SQLite one and hiding passwords in messages.

use std::path::Path;

/// The `sqlite://` URL of a file, percent-encoding the characters sqlx would
/// otherwise read as URL syntax (`%`, `?`, `#`).
pub(crate) fn sqlite_url(file: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in file.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// `url` with the password of its `user:password@` part replaced by `***`, for
/// messages and logs. URLs without a password come back unchanged.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_string();
    };
    let start = scheme_end + 3 + colon + 1;
    let end = scheme_end + 3 + at;
    format!("{}***{}", &url[..start], &url[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact("postgres://mizzen:s3cr:et@db:5432/ledger?sslmode=require"),
            "postgres://mizzen:***@db:5432/ledger?sslmode=require"
        );
        assert_eq!(
            redact("postgres://mizzen@db/ledger"),
            "postgres://mizzen@db/ledger"
        );
        assert_eq!(redact("postgres://db/a@b"), "postgres://db/a@b");
        assert_eq!(redact("sqlite:///tmp/ledger.db"), "sqlite:///tmp/ledger.db");
        assert_eq!(redact("ledger.db"), "ledger.db");
    }

    #[test]
    fn sqlite_url_escapes_url_syntax() {
        assert_eq!(
            sqlite_url(Path::new("/k/ledger.db")),
            "sqlite:///k/ledger.db"
        );
        assert_eq!(
            sqlite_url(Path::new("/k?#%/ledger.db")),
            "sqlite:///k%3F%23%25/ledger.db"
        );
    }
}
