//! Cross-field checks on the model, after every attribute was parsed.

use std::collections::HashMap;

use crate::codegen::type_string;
use crate::ctxt::Ctxt;
use crate::model::{Kind, Operator};
use crate::symbol;

pub fn check(cx: &Ctxt, op: &Operator<'_>) {
    if op.attrs.key.is_none() {
        cx.error_spanned_by(
            &op.input.ident,
            "missing key type: add `#[operator(key = <type>)]`, e.g. `#[operator(key = u64)]`; state is scoped to one key of this type",
        );
    }
    if let (None, Err(why)) = (&op.attrs.name, symbol::valid_name(&op.name)) {
        cx.error_spanned_by(
            &op.input.ident,
            format!(
                "the default operator name `{}` {why}; set one with `#[operator(name = \"...\")]`",
                op.name
            ),
        );
    }
    duplicate_names(cx, op);
    timer_services(cx, op);
    for s in &op.states {
        let a = &s.attrs;
        match (s.kind, &a.reduce) {
            (Kind::Reducing, None) => cx.error_spanned_by(
                &s.original.ty,
                format!(
                    "`ReducingState` field `{}` needs a reduce function: `#[state(reduce = max)]` (`max`, `min`, `sum` or a path to `fn(&T, &T) -> T`)",
                    s.ident
                ),
            ),
            (Kind::Reducing, Some(_)) | (_, None) => {}
            (kind, Some(path)) => cx.error_spanned_by(
                path,
                format!("`reduce` applies to `ReducingState`, but `{}` is a `{}`", s.ident, kind.type_name()),
            ),
        }
        match (s.kind, &a.aggregate) {
            (Kind::Aggregating, None) => {
                let (input, output) = (&s.args[0], &s.args[1]);
                cx.error_spanned_by(
                    &s.original.ty,
                    format!(
                        "`AggregatingState` field `{}` needs an aggregate: `#[state(aggregate = MyAggregate)]`, where `MyAggregate` implements `statewright::Aggregate<In = {}, Out = {}>`",
                        s.ident,
                        type_string(&quote::quote!(#input)),
                        type_string(&quote::quote!(#output)),
                    ),
                );
            }
            (Kind::Aggregating, Some(_)) | (_, None) => {}
            (kind, Some(path)) => cx.error_spanned_by(
                path,
                format!(
                    "`aggregate` applies to `AggregatingState`, but `{}` is a `{}`",
                    s.ident,
                    kind.type_name()
                ),
            ),
        }
        if let (false, Some((_, lit))) = (s.kind.is_keyed(), &a.ttl) {
            cx.error_spanned_by(
                lit,
                format!(
                    "`ttl` applies to keyed state; `{}` is an operator state (`{}`), which never expires",
                    s.ident,
                    s.kind.type_name()
                ),
            );
        }
        if let Some(ns) = &a.namespace {
            if s.kind == Kind::Timers {
                cx.error_spanned_by(
                    ns,
                    format!(
                        "`namespace` does not apply to the timer service `{}`: its namespace is its type argument, `TimerService<{}>`",
                        s.ident,
                        type_string(&quote::quote!(#ns))
                    ),
                );
            } else if !s.kind.is_keyed() {
                cx.error_spanned_by(
                    ns,
                    format!(
                        "`namespace` applies to keyed state; `{}` is an operator state (`{}`), which has no key to scope namespaces to",
                        s.ident,
                        s.kind.type_name()
                    ),
                );
            }
        }
        migrations(cx, s);
        if a.ttl.is_none() {
            for (choice, key, what) in [
                (&a.update, symbol::UPDATE, "sets when a ttl is refreshed"),
                (
                    &a.visibility,
                    symbol::VISIBILITY,
                    "sets whether expired values are returned",
                ),
                (&a.time, symbol::TIME, "sets which time a ttl counts in"),
            ] {
                if let Some((_, lit)) = choice {
                    cx.error_spanned_by(
                        lit,
                        format!("`{key}` {what}; it needs `ttl = \"...\"` on the same state"),
                    );
                }
            }
        }
    }
}

/// `version` and `migrate_from` together form a chain without gaps that ends just below the
/// current version.
fn migrations(cx: &Ctxt, s: &crate::model::StateField<'_>) {
    let a = &s.attrs;
    let Some((path, steps)) = &a.migrate_from else {
        return;
    };
    let Some((version, _)) = &a.version else {
        cx.error_spanned_by(
            path,
            format!(
                "`migrate_from` needs the current version on the same state: `#[state(version = {}, migrate_from(...))]`",
                steps.last().map_or(2, |s| s.version + 1)
            ),
        );
        return;
    };
    for step in steps.iter().filter(|st| st.version >= *version) {
        cx.error_spanned_by(
            &step.label,
            format!(
                "`{}` is not an earlier version: `{}` is at version {version}",
                step.label, s.ident
            ),
        );
    }
    let earlier: Vec<u32> = steps
        .iter()
        .map(|st| st.version)
        .filter(|v| v < version)
        .collect();
    if let Some(&first) = earlier.first() {
        let missing: Vec<String> = (first..*version)
            .filter(|v| !earlier.contains(v))
            .map(|v| format!("`v{v}`"))
            .collect();
        if !missing.is_empty() {
            cx.error_spanned_by(
                path,
                format!(
                    "the migration chain of `{}` from v{first} to v{version} misses a step: add {} with the type of that version",
                    s.ident,
                    missing.join(", ")
                ),
            );
        }
    }
}

/// At most one timer service, and no state attribute on it (timers have no TTL, reduce
/// function or versions).
fn timer_services(cx: &Ctxt, op: &Operator<'_>) {
    let mut first: Option<&syn::Ident> = None;
    for s in op.states.iter().filter(|s| s.kind == Kind::Timers) {
        if let Some(first) = first {
            cx.error_spanned_by(
                &s.original.ty,
                format!(
                    "a second timer service: `{}` and `{first}` are both `TimerService`s; an operator has one timer service, and its namespace type tells timers apart (`TimerService<MyNamespace>`)",
                    s.ident
                ),
            );
        } else {
            first = Some(s.ident);
        }
        let a = &s.attrs;
        if let Some((_, lit)) = &a.ttl {
            cx.error_spanned_by(
                lit,
                format!(
                    "`ttl` does not apply to the timer service `{}`: a timer lives until it fires or is deleted",
                    s.ident
                ),
            );
        }
        if a.version.is_some() || a.migrate_from.is_some() {
            cx.error_spanned_by(
                &s.original.ty,
                format!(
                    "`version` and `migrate_from` do not apply to the timer service `{}`: timers have no value to migrate",
                    s.ident
                ),
            );
        }
    }
}

fn duplicate_names(cx: &Ctxt, op: &Operator<'_>) {
    let mut seen: HashMap<&str, &syn::Ident> = HashMap::new();
    for s in &op.states {
        if let Some(first) = seen.get(s.name.as_str()) {
            let how = if s.attrs.name.is_some() {
                "named"
            } else {
                "implicitly named"
            };
            cx.syn_error(syn::Error::new(
                s.name_span,
                format!(
                    "duplicate state name `{}`: field `{}` is {how} `{}`, and so is field `{first}`; state names must be unique within an operator",
                    s.name, s.ident, s.name
                ),
            ));
        } else {
            seen.insert(&s.name, s.ident);
        }
    }
}
