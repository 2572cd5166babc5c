//! Attribute names, in one place.

pub const OPERATOR: &str = "operator";
pub const STATE: &str = "state";

pub const NAME: &str = "name";
pub const KEY: &str = "key";
pub const MAX_PARALLELISM: &str = "max_parallelism";
pub const OPERATOR_KEYS: &[&str] = &[NAME, KEY, MAX_PARALLELISM];

pub const TTL: &str = "ttl";
pub const UPDATE: &str = "update";
pub const REDUCE: &str = "reduce";
pub const VISIBILITY: &str = "visibility";
pub const TIME: &str = "time";
pub const AGGREGATE: &str = "aggregate";
pub const VERSION: &str = "version";
pub const MIGRATE_FROM: &str = "migrate_from";
pub const NAMESPACE: &str = "namespace";
pub const STATE_KEYS: &[&str] = &[
    NAME,
    TTL,
    UPDATE,
    VISIBILITY,
    TIME,
    REDUCE,
    AGGREGATE,
    VERSION,
    MIGRATE_FROM,
    NAMESPACE,
];

/// `update = "..."`, in the order of `TtlUpdate`'s variants.
pub const UPDATE_VALUES: &[&str] = &["on_create_and_write", "on_read_and_write"];
/// `visibility = "..."`, in the order of `TtlVisibility`'s variants.
pub const VISIBILITY_VALUES: &[&str] =
    &["never_return_expired", "return_expired_if_not_cleaned_up"];
/// `time = "..."`, in the order of `TtlTime`'s variants.
pub const TIME_VALUES: &[&str] = &["processing", "event"];

/// The state types a field can have, with their number of type arguments.
pub const STATE_TYPES: &[(&str, usize)] = &[
    ("ValueState", 1),
    ("ListState", 1),
    ("MapState", 2),
    ("ReducingState", 1),
    ("AggregatingState", 2),
    ("BroadcastState", 2),
    ("OperatorListState", 1),
    ("UnionListState", 1),
    ("TimerService", 1),
];

/// Characters allowed in operator and state names (they become file and column names).
pub fn valid_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 200 {
        Err("must be 1 to 200 characters")
    } else if name.starts_with('.') {
        Err("must not start with `.`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Err("may hold only ASCII letters, digits, `.`, `_` and `-`")
    } else {
        Ok(())
    }
}

/// The closest known word to a misspelt one, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `` `a`, `b` or `c` `` for messages.
pub fn one_of(known: &[&str]) -> String {
    let quoted: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_suggestions_and_strangers_do_not() {
        assert_eq!(suggest("tll", STATE_KEYS), Some("ttl"));
        assert_eq!(suggest("nmae", STATE_KEYS), Some("name"));
        assert_eq!(suggest("aggregat", STATE_KEYS), Some("aggregate"));
        assert_eq!(suggest("colour", STATE_KEYS), None);
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    /// The attribute names in the first column of the reference's table under `heading`,
    /// with the rest of each row.
    fn reference_rows(heading: &str) -> Vec<(String, String)> {
        let page = include_str!("../../book/src/reference.md");
        let Some(start) = page.find(heading) else {
            panic!("the reference has no section {heading}");
        };
        let section = &page[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .map(|(name, rest)| (name.to_owned(), rest.to_owned()))
            .collect()
    }

    /// The guide's attribute reference lists exactly the attributes the macro accepts, with
    /// every value they take: it cannot drift from the macro.
    #[test]
    fn the_reference_lists_every_attribute_and_value() {
        for (heading, keys) in [
            ("## `#[operator(...)]`", OPERATOR_KEYS),
            ("## `#[state(...)]`", STATE_KEYS),
        ] {
            let rows = reference_rows(heading);
            let mut documented: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
            let mut accepted = keys.to_vec();
            documented.sort_unstable();
            accepted.sort_unstable();
            assert_eq!(documented, accepted, "{heading}");
            for (attribute, values) in [
                (UPDATE, UPDATE_VALUES),
                (VISIBILITY, VISIBILITY_VALUES),
                (TIME, TIME_VALUES),
            ] {
                if let Some((_, row)) = rows.iter().find(|(n, _)| n == attribute) {
                    for v in values {
                        assert!(row.contains(v), "`{attribute}` row lacks `{v}`: {row}");
                    }
                }
            }
        }
    }
}
