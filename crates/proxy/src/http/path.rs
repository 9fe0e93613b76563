//! The request path as the HTTP connection manager hands it to routing and
//! upstream: Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`, applied to the path (never the query)
//! before the route is chosen; the result is also the `:path` forwarded.
//!
//! [`PathPolicy::apply`] runs the steps in Envoy's order: escaped slashes
//! (`%2F`, `%5C`, any case) are rejected or unescaped first, then the path is
//! normalised ([`normalize`]), then adjacent slashes are merged
//! ([`merge_slashes`]); `UNESCAPE_AND_REDIRECT` answers a redirect to the
//! result when it unescaped anything.
//!
//! [`normalize`] is RFC 3986 normalisation as Envoy 1.40 does it (Chromium's
//! URL path canonicaliser, checked against the `envoy` binary): `\` is a
//! slash; dot segments (`.`, `..`, also written `%2e`) are removed and `..`
//! stops at the root; escaped unreserved characters (`%41`, `%7e`) are
//! decoded; other escapes keep their spelling (`%2f`, `%3F`, `%ab`); a `%`
//! that starts no escape stays, unless what follows it would now read as one
//! (`%%41A` → `%25AA`); `"`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `^`, controls
//! and non-ASCII bytes are percent-encoded; `%00` makes the path invalid
//! (Envoy's 400). A segment that is `.` or `..` followed by `;` (`..;x`) counts
//! as that dot segment up to the next `/`, as in Envoy.

/// `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// `KEEP_UNCHANGED`, and `IMPLEMENTATION_SPECIFIC_DEFAULT` (Envoy keeps).
    #[default]
    Keep,
    /// `REJECT_REQUEST`: 400.
    Reject,
    /// `UNESCAPE_AND_REDIRECT`: 307 to the unescaped (and normalised) path.
    UnescapeAndRedirect,
    /// `UNESCAPE_AND_FORWARD`: unescape, then route and forward.
    UnescapeAndForward,
}

/// The connection manager's path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathPolicy {
    /// `normalize_path` (Envoy's default: false).
    pub normalize: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
}

/// What [`PathPolicy::apply`] made of a request's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOutcome {
    /// Route and forward the path as it came.
    Unchanged,
    /// Route and forward this path and query instead.
    Rewritten(String),
    /// Answer 400 (an invalid path, or an escaped slash under `REJECT_REQUEST`).
    Reject,
    /// Answer 307 with this `location` (`UNESCAPE_AND_REDIRECT`).
    Redirect(String),
}

impl PathPolicy {
    /// Whether every step is off (the path is never looked at).
    pub fn is_noop(&self) -> bool {
        !self.normalize && !self.merge_slashes && self.escaped_slashes == EscapedSlashes::Keep
    }

    /// Applies the policy to `path_and_query` (origin form).
    pub fn apply(&self, path_and_query: &str) -> PathOutcome {
        if self.is_noop() || !path_and_query.starts_with('/') {
            // `*` (OPTIONS) and the like are not paths to normalise.
            return PathOutcome::Unchanged;
        }
        let (path, query) = match path_and_query.find('?') {
            Some(i) => path_and_query.split_at(i),
            None => (path_and_query, ""),
        };
        if is_plain(path) {
            // The common path: nothing any step would change.
            return PathOutcome::Unchanged;
        }
        let mut out = std::borrow::Cow::Borrowed(path);
        let mut unescaped = false;
        match self.escaped_slashes {
            EscapedSlashes::Keep => {}
            EscapedSlashes::Reject => {
                if has_escaped_slash(path) {
                    return PathOutcome::Reject;
                }
            }
            EscapedSlashes::UnescapeAndRedirect | EscapedSlashes::UnescapeAndForward => {
                if has_escaped_slash(path) {
                    out = unescape_slashes(path).into();
                    unescaped = true;
                }
            }
        }
        if self.normalize {
            match normalize(&out) {
                Some(n) => out = n.into(),
                None => return PathOutcome::Reject,
            }
        }
        if self.merge_slashes {
            out = merge_slashes(&out).into();
        }
        if out == path {
            return PathOutcome::Unchanged;
        }
        let new = format!("{out}{query}");
        if unescaped && self.escaped_slashes == EscapedSlashes::UnescapeAndRedirect {
            PathOutcome::Redirect(new)
        } else {
            PathOutcome::Rewritten(new)
        }
    }
}

/// Whether no step can change `path`: it has no `%` (so no escaped slash
/// nor escape to decode), no `\`, no dot segment nor `.;` parameter (both
/// start with `/.`), no `//` and no byte [`normalize`] percent-encodes.
fn is_plain(path: &str) -> bool {
    let mut prev = 0;
    path.bytes().all(|b| {
        let plain = b != b'%'
            && b != b'\\'
            && !needs_escape(b)
            && !(prev == b'/' && (b == b'/' || b == b'.'));
        prev = b;
        plain
    })
}

/// Whether `path` holds `%2F` or `%5C` (any case).
fn has_escaped_slash(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
    })
}

/// `%2F` → `/`, `%5C` → `\` (any case).
fn unescape_slashes(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let (h, l) = (b[i + 1], b[i + 2].to_ascii_lowercase());
            if h == b'2' && l == b'f' {
                out.push(b'/');
                i += 3;
                continue;
            }
            if h == b'5' && l == b'c' {
                out.push(b'\\');
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII sequences were replaced: still UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

/// Adjacent slashes merged into one (`//a///b` → `/a/b`).
pub fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// How an output byte came to be, for the nested escape rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Copied,
    /// Decoded from an escape of an unreserved character.
    Unescaped,
    /// A `%` that started no valid escape.
    LonePercent,
}

/// `path` (no query) normalised as Envoy does (see the module doc); `None`
/// when it is invalid (Envoy answers 400).
pub fn normalize(path: &str) -> Option<String> {
    let input = dot_params(path.as_bytes());
    let input = input.as_slice();
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut origin: Vec<Origin> = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        // A dot segment: right after a slash in the output.
        if out.last() == Some(&b'/')
            && let Some(dot) = dot_len(input, i)
        {
            let after = i + dot;
            match input.get(after) {
                None => {
                    i = after;
                    continue;
                }
                Some(b'/' | b'\\') => {
                    i = after + 1;
                    continue;
                }
                _ => {}
            }
            if let Some(dot2) = dot_len(input, after) {
                let after2 = after + dot2;
                if matches!(input.get(after2), None | Some(b'/' | b'\\')) {
                    back_up(&mut out, &mut origin);
                    i = (after2 + 1).min(input.len());
                    continue;
                }
            }
            // Not a dot segment: the first dot is an ordinary character.
            out.push(b'.');
            origin.push(Origin::Copied);
            i += dot;
            continue;
        }
        match c {
            b'/' | b'\\' => {
                out.push(b'/');
                origin.push(Origin::Copied);
                i += 1;
            }
            b'%' => match hex_pair(input, i + 1) {
                Some(0) => return None,
                Some(v) if is_unreserved(v) => {
                    out.push(v);
                    origin.push(Origin::Unescaped);
                    i += 3;
                }
                Some(_) => {
                    // Kept as written (the digits' case too).
                    out.extend_from_slice(&input[i..i + 3]);
                    origin.extend([Origin::Copied; 3]);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    origin.push(Origin::LonePercent);
                    i += 1;
                }
            },
            c if needs_escape(c) => {
                out.extend_from_slice(format!("%{c:02X}").as_bytes());
                origin.extend([Origin::Copied; 3]);
                i += 1;
            }
            c => {
                out.push(c);
                origin.push(Origin::Copied);
                i += 1;
            }
        }
    }
    // A lone `%` that now reads as an escape because of what was decoded
    // after it is written `%25`.
    let mut fixed = String::with_capacity(out.len());
    for (k, &b) in out.iter().enumerate() {
        if origin[k] == Origin::LonePercent
            && k + 2 < out.len()
            && out[k + 1].is_ascii_hexdigit()
            && out[k + 2].is_ascii_hexdigit()
            && (origin[k + 1] == Origin::Unescaped || origin[k + 2] == Origin::Unescaped)
        {
            fixed.push_str("%25");
        } else {
            fixed.push(char::from(b));
        }
    }
    Some(fixed)
}

/// Envoy's pre-pass: a `/`-separated segment that starts with `.;` or `..;`
/// is cut at the `;`.
fn dot_params(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (n, seg) in path.split(|&b| b == b'/').enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        let cut = if seg.starts_with(b".;") {
            1
        } else if seg.starts_with(b"..;") {
            2
        } else {
            seg.len()
        };
        out.extend_from_slice(&seg[..cut]);
    }
    out
}

/// The length of a dot at `i` (`.`, or `%2e` in any case).
fn dot_len(input: &[u8], i: usize) -> Option<usize> {
    match input.get(i)? {
        b'.' => Some(1),
        b'%' if input.get(i + 1) == Some(&b'2')
            && input
                .get(i + 2)
                .is_some_and(|c| c.eq_ignore_ascii_case(&b'e')) =>
        {
            Some(3)
        }
        _ => None,
    }
}

/// Drops the last segment of `out` (which ends with `/`), keeping the slash
/// before it; at the root, nothing.
fn back_up(out: &mut Vec<u8>, origin: &mut Vec<Origin>) {
    let end = out.len() - 1;
    let keep = out[..end]
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(end + 1, |p| p + 1);
    out.truncate(keep);
    origin.truncate(keep);
}

/// The byte of the escape whose hex digits start at `i`.
fn hex_pair(input: &[u8], i: usize) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let (h, l) = (digit(*input.get(i)?)?, digit(*input.get(i + 1)?)?);
    u8::try_from(h * 16 + l).ok()
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn needs_escape(c: u8) -> bool {
    c <= 0x20
        || c >= 0x7f
        || matches!(
            c,
            b'"' | b'#' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs and what the `envoy` 1.40 binary forwarded with
    /// `normalize_path: true` (`None`: it answered 400).
    const ENVOY_NORMALIZED: &[(&str, Option<&str>)] = &[
        ("/a/./b/../c", Some("/a/c")),
        ("/a/c/../../..", Some("/")),
        ("/../a/c", Some("/a/c")),
        ("/a/c/%2e%2e/c", Some("/a/c")),
        ("/a/c/%2E/x", Some("/a/c/x")),
        ("/a/%63/x", Some("/a/c/x")),
        ("/a/c/%41%7e%2d%5f", Some("/a/c/A~-_")),
        ("/a/c\\x", Some("/a/c/x")),
        ("/a/c/%2F%2f%5C", Some("/a/c/%2F%2f%5C")),
        ("/a/c//x", Some("/a/c//x")),
        ("/a/c/%zz", Some("/a/c/%zz")),
        ("/a/c/%", Some("/a/c/%")),
        ("/a/c/%3f", Some("/a/c/%3f")),
        ("/a/c/x;p", Some("/a/c/x;p")),
        ("/a/c/%00", None),
        ("/a/c/.", Some("/a/c/")),
        ("/a/c/..", Some("/a/")),
        ("/a/c/x/./", Some("/a/c/x/")),
        ("/a/c/%2e", Some("/a/c/")),
        ("/a/c/.%2e/", Some("/a/")),
        ("/a/c/\"<>", Some("/a/c/%22%3C%3E")),
        ("/a/c/{}|^`", Some("/a/c/%7B%7D%7C%5E%60")),
        ("/a/c/%7e%7E%ab", Some("/a/c/~~%ab")),
        ("/a/c/!$&'()*+,;=:@[]", Some("/a/c/!$&'()*+,;=:@[]")),
        ("/a/c/%5b%5D%21", Some("/a/c/%5b%5D%21")),
        ("/a/c/%c3%a9", Some("/a/c/%c3%a9")),
        ("/a/c/%01", Some("/a/c/%01")),
        ("/a/c/%0", Some("/a/c/%0")),
        ("/a/c/%%32e", Some("/a/c/%252e")),
        ("/a/c/x/..%2f", Some("/a/c/x/..%2f")),
        ("/a/c/x/%2E%2E", Some("/a/c/")),
        ("/a/c/x/..;/", Some("/a/c/")),
        ("/a/c/x/...", Some("/a/c/x/...")),
        ("/a/c/x/.a", Some("/a/c/x/.a")),
        ("/a/c/x\\..\\y", Some("/a/c/y")),
        ("/a/c/%23", Some("/a/c/%23")),
        ("/./a/c", Some("/a/c")),
        ("/a/c/x/%2e.", Some("/a/c/")),
        ("/a/c/%5c..%5c", Some("/a/c/%5c..%5c")),
        ("/a/c/%u002e", Some("/a/c/%u002e")),
        ("/a/c/x/.;a/y", Some("/a/c/x/y")),
        ("/a/c/x/..;a;b/y", Some("/a/c/y")),
        ("/a/c/x/...;/y", Some("/a/c/x/...;/y")),
        ("/a/c/x/..;\\y", Some("/a/c/")),
        ("/a/c/x/.;..", Some("/a/c/x/")),
        ("/a/c/x/%2e;a/y", Some("/a/c/x/.;a/y")),
        ("/a/c/x;/../y", Some("/a/c/y")),
        ("/a/c/x\\..;a/y", Some("/a/c/x/..;a/y")),
        ("/a/c/x/.%3b/", Some("/a/c/x/.%3b/")),
        ("/a/c/%2e%3b", Some("/a/c/.%3b")),
        ("/a/c/x/%ZZ%41", Some("/a/c/x/%ZZA")),
        ("/a/c/%%41", Some("/a/c/%A")),
        ("/a/c/%4%41", Some("/a/c/%254A")),
        ("/a/c/%%4141", Some("/a/c/%25A41")),
        ("/a/c/%%%41%41", Some("/a/c/%%25AA")),
    ];

    #[test]
    fn normalize_path_matches_envoy() {
        for (input, want) in ENVOY_NORMALIZED {
            assert_eq!(normalize(input).as_deref(), *want, "normalize({input:?})");
        }
    }

    #[test]
    fn plain_paths_are_left_as_they_are() {
        let plain = [
            "/",
            "/a/c",
            "/a/c/",
            "/a.b/c.d",
            "/a/c;p=1",
            "/a/c-_~!$&'()*+,=:@",
        ];
        for p in plain {
            assert!(is_plain(p), "{p:?}");
        }
        // Whatever the fast path lets through, the full steps keep as is.
        let inputs = ENVOY_NORMALIZED.iter().map(|(i, _)| *i);
        for p in inputs
            .chain(plain)
            .chain(["//a", "/a//c", "/a/.", "/%2F", "/a\\c"])
        {
            if is_plain(p) {
                assert_eq!(normalize(p).as_deref(), Some(p), "normalize({p:?})");
                assert_eq!(merge_slashes(p), p, "merge_slashes({p:?})");
                assert!(!has_escaped_slash(p), "{p:?}");
            }
        }
        for p in [
            "//a", "/a//c", "/a/.", "/a/./c", "/%41", "/a\\c", "/a b", "/a\u{e9}",
        ] {
            assert!(!is_plain(p), "{p:?}");
        }
    }

    #[test]
    fn merge_slashes_path() {
        assert_eq!(merge_slashes("//a///c"), "/a/c");
        assert_eq!(merge_slashes("///"), "/");
        assert_eq!(merge_slashes("/a/c/"), "/a/c/");
    }

    fn policy(normalize: bool, merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathPolicy {
        PathPolicy {
            normalize,
            merge_slashes,
            escaped_slashes,
        }
    }

    #[test]
    fn path_policy_keeps_the_query() {
        let p = policy(true, true, EscapedSlashes::Keep);
        assert_eq!(
            p.apply("/a/c//x//?q=//a/../b"),
            PathOutcome::Rewritten("/a/c/x/?q=//a/../b".into())
        );
        assert_eq!(
            p.apply("/a/c/x/..?q"),
            PathOutcome::Rewritten("/a/c/?q".into())
        );
        assert_eq!(p.apply("/a/c?x"), PathOutcome::Unchanged);
        assert_eq!(p.apply("*"), PathOutcome::Unchanged);
        assert_eq!(
            p.apply("//a/./c//x/..//y"),
            PathOutcome::Rewritten("/a/c/y".into())
        );
        assert_eq!(p.apply("/a/%00"), PathOutcome::Reject);
    }

    #[test]
    fn path_escaped_slashes_actions_match_envoy() {
        // What the envoy binary did with normalize_path and merge_slashes on.
        let keep = policy(true, true, EscapedSlashes::Keep);
        assert_eq!(keep.apply("/a/c/x%2Fy"), PathOutcome::Unchanged);
        let reject = policy(true, true, EscapedSlashes::Reject);
        assert_eq!(reject.apply("/a/c/x%2fy"), PathOutcome::Reject);
        assert_eq!(reject.apply("/a/c/x%5cy"), PathOutcome::Reject);
        assert_eq!(reject.apply("/a/c/x?q=%2F"), PathOutcome::Unchanged);
        let forward = policy(true, true, EscapedSlashes::UnescapeAndForward);
        assert_eq!(
            forward.apply("/a/c/x%5c..%5Cy"),
            PathOutcome::Rewritten("/a/c/y".into())
        );
        assert_eq!(
            forward.apply("/a/c/x%2f%2F/y?q=%2F"),
            PathOutcome::Rewritten("/a/c/x/y?q=%2F".into())
        );
        let redirect = policy(true, true, EscapedSlashes::UnescapeAndRedirect);
        assert_eq!(
            redirect.apply("/a/c/x%2Fy?q=%2F"),
            PathOutcome::Redirect("/a/c/x/y?q=%2F".into())
        );
        assert_eq!(
            redirect.apply("/a/c/x%2F.%2F/y"),
            PathOutcome::Redirect("/a/c/x/y".into())
        );
        assert_eq!(redirect.apply("/a/c/x"), PathOutcome::Unchanged);
        assert_eq!(
            redirect.apply("/a//c"),
            PathOutcome::Rewritten("/a/c".into())
        );
    }
}
