//! Host names as Istio compares them (`host.Name` in Istio): exact names and
//! wildcards (`*`, `*.example.com`) where a wildcard's suffix matches any name that
//! ends with it.

/// Whether two hosts, either possibly a wildcard, have a name in common (Istio's
/// `Name.Matches`): `*.example.com` and `api.example.com` do; so do `*.com` and
/// `*.example.com`.
pub fn overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Whether every name `a` matches is also matched by `b` (Istio's `Name.SubsetOf`):
/// `api.example.com` ⊆ `*.example.com`, but not the other way round.
pub fn subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards() {
        assert!(overlap("*.example.com", "api.example.com"));
        assert!(overlap("*", "anything"));
        assert!(overlap("*.com", "*.example.com"));
        assert!(!overlap("*.example.com", "example.org"));
        assert!(subset_of("api.example.com", "*.example.com"));
        assert!(!subset_of("*.example.com", "api.example.com"));
        assert!(subset_of("*.a.example.com", "*.example.com"));
    }

    proptest! {
        #[test]
        fn subset_implies_overlap(a in "(\\*\\.)?[a-c]{1,2}(\\.[a-c]{1,2}){0,2}", b in "(\\*\\.)?[a-c]{1,2}(\\.[a-c]{1,2}){0,2}") {
            if subset_of(&a, &b) {
                prop_assert!(overlap(&a, &b));
            }
            prop_assert_eq!(overlap(&a, &b), overlap(&b, &a));
        }

        #[test]
        fn every_name_is_a_subset_of_itself_and_star(a in "(\\*\\.)?[a-z]{1,5}(\\.[a-z]{1,5}){0,2}") {
            prop_assert!(subset_of(&a, &a));
            prop_assert!(subset_of(&a, "*"));
        }
    }
}
