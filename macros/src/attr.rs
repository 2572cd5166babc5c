//! `#[operator(...)]` and `#[state(...)]` parsed into typed structs that keep the user's tokens
//! for error spans. Unknown keys and bad values are reported to the [`Ctxt`]; parsing goes on
//! so that every mistake is reported at once.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitInt, LitStr, Path, Type};

use crate::ctxt::Ctxt;
use crate::symbol::{self, one_of, suggest};

/// `#[operator(name = "...", key = Type, max_parallelism = N)]`.
#[derive(Default)]
pub struct OperatorAttrs {
    pub name: Option<LitStr>,
    pub key: Option<Type>,
    pub max_parallelism: Option<(u16, LitInt)>,
}

/// A parsed `ttl = "..."`.
pub struct Ttl {
    pub millis: u64,
}

/// One of a fixed set of string values (`update = "on_read_and_write"`): its index in the
/// value list, and the literal.
pub type Choice = (usize, LitStr);

/// `#[state(name = "...", ttl = "...", update = "...", visibility = "...", time = "...",
/// reduce = path, aggregate = Type)]`.
#[derive(Default)]
pub struct StateAttrs {
    /// The first `#[state]` attribute, for errors about the attribute as a whole.
    pub attr: Option<Attribute>,
    pub name: Option<LitStr>,
    pub ttl: Option<(Ttl, LitStr)>,
    pub update: Option<Choice>,
    pub visibility: Option<Choice>,
    pub time: Option<Choice>,
    pub reduce: Option<Path>,
    pub aggregate: Option<Path>,
    /// `namespace = Type`: one value per key and namespace.
    pub namespace: Option<Type>,
    pub version: Option<(u32, LitInt)>,
    /// `migrate_from(...)`: the path (for errors about the list) and each `vN = Type`.
    pub migrate_from: Option<(Path, Vec<MigrateFrom>)>,
}

/// One `vN = Type` of `migrate_from(...)`.
pub struct MigrateFrom {
    pub version: u32,
    /// The `vN` the user wrote.
    pub label: syn::Ident,
    pub ty: Type,
}

fn set_once<T>(cx: &Ctxt, slot: &mut Option<T>, value: T, meta: &ParseNestedMeta<'_>, key: &str) {
    if slot.is_some() {
        cx.error_spanned_by(&meta.path, format!("duplicate `{key}` attribute"));
    } else {
        *slot = Some(value);
    }
}

fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, what: &str, known: &[&str]) -> syn::Result<()> {
    let word = meta.path.get_ident().map_or_else(
        || {
            let p = &meta.path;
            quote::quote!(#p).to_string()
        },
        ToString::to_string,
    );
    let hint = match suggest(&word, known) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    };
    cx.error_spanned_by(
        &meta.path,
        format!(
            "unknown {what} attribute `{word}`, expected {}{hint}",
            one_of(known)
        ),
    );
    skip_value(meta)
}

/// Consumes `= value` (or a parenthesised list) so that parsing can go on after a bad key.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _ = meta.parse_nested_meta(|m| skip_value(&m));
    }
    Ok(())
}

pub fn operator_attrs(cx: &Ctxt, attrs: &[Attribute]) -> OperatorAttrs {
    let mut out = OperatorAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(symbol::OPERATOR)) {
        let r = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(symbol::NAME) {
                let lit: LitStr = meta.value()?.parse()?;
                if let Err(why) = symbol::valid_name(&lit.value()) {
                    cx.error_spanned_by(
                        &lit,
                        format!("invalid operator name `{}`: {why}", lit.value()),
                    );
                }
                set_once(cx, &mut out.name, lit, &meta, symbol::NAME);
            } else if meta.path.is_ident(symbol::KEY) {
                let ty: Type = meta.value()?.parse()?;
                set_once(cx, &mut out.key, ty, &meta, symbol::KEY);
            } else if meta.path.is_ident(symbol::MAX_PARALLELISM) {
                let lit: LitInt = meta.value()?.parse()?;
                match lit.base10_parse::<u32>() {
                    Ok(n) if (1..=32_768).contains(&n) => {
                        let n = u16::try_from(n).unwrap_or(u16::MAX);
                        set_once(
                            cx,
                            &mut out.max_parallelism,
                            (n, lit),
                            &meta,
                            symbol::MAX_PARALLELISM,
                        );
                    }
                    _ => cx.error_spanned_by(
                        &lit,
                        format!("`max_parallelism` must be between 1 and 32768, found `{lit}`"),
                    ),
                }
            } else {
                unknown(cx, &meta, "operator", symbol::OPERATOR_KEYS)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            cx.syn_error(e);
        }
    }
    out
}

pub fn state_attrs(cx: &Ctxt, attrs: &[Attribute]) -> StateAttrs {
    let mut out = StateAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(symbol::STATE)) {
        if out.attr.is_none() {
            out.attr = Some(attr.clone());
        }
        let r = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(symbol::NAME) {
                let lit: LitStr = meta.value()?.parse()?;
                if let Err(why) = symbol::valid_name(&lit.value()) {
                    cx.error_spanned_by(
                        &lit,
                        format!("invalid state name `{}`: {why}", lit.value()),
                    );
                }
                set_once(cx, &mut out.name, lit, &meta, symbol::NAME);
            } else if meta.path.is_ident(symbol::TTL) {
                let lit: LitStr = meta.value()?.parse()?;
                if let Some(ttl) = parse_ttl(cx, &lit) {
                    set_once(cx, &mut out.ttl, (ttl, lit), &meta, symbol::TTL);
                }
            } else if let Some((key, values, what, slot)) = [
                (
                    symbol::UPDATE,
                    symbol::UPDATE_VALUES,
                    "ttl update mode",
                    &mut out.update,
                ),
                (
                    symbol::VISIBILITY,
                    symbol::VISIBILITY_VALUES,
                    "ttl visibility",
                    &mut out.visibility,
                ),
                (symbol::TIME, symbol::TIME_VALUES, "ttl time", &mut out.time),
            ]
            .into_iter()
            .find(|(key, ..)| meta.path.is_ident(key))
            {
                let lit: LitStr = meta.value()?.parse()?;
                if let Some(i) = parse_choice(cx, &lit, what, values) {
                    set_once(cx, slot, (i, lit), &meta, key);
                }
            } else if meta.path.is_ident(symbol::REDUCE) {
                let path: Path = meta.value()?.parse()?;
                set_once(cx, &mut out.reduce, path, &meta, symbol::REDUCE);
            } else if meta.path.is_ident(symbol::AGGREGATE) {
                let path: Path = meta.value()?.parse()?;
                set_once(cx, &mut out.aggregate, path, &meta, symbol::AGGREGATE);
            } else if meta.path.is_ident(symbol::NAMESPACE) {
                let ty: Type = meta.value()?.parse()?;
                set_once(cx, &mut out.namespace, ty, &meta, symbol::NAMESPACE);
            } else if meta.path.is_ident(symbol::VERSION) {
                let lit: LitInt = meta.value()?.parse()?;
                match lit.base10_parse::<u32>() {
                    Ok(n) if n >= 1 => {
                        set_once(cx, &mut out.version, (n, lit), &meta, symbol::VERSION);
                    }
                    _ => cx.error_spanned_by(
                        &lit,
                        format!("`version` must be a whole number from 1 (the first version), found `{lit}`"),
                    ),
                }
            } else if meta.path.is_ident(symbol::MIGRATE_FROM) {
                let mut steps = Vec::new();
                let mut bad = false;
                if !meta.input.peek(syn::token::Paren) {
                    cx.error_spanned_by(
                        &meta.path,
                        "`migrate_from` lists earlier versions and their types: `migrate_from(v1 = OldType)`",
                    );
                    return skip_value(&meta);
                }
                meta.parse_nested_meta(|m| {
                    let label = m.path.get_ident().cloned();
                    let ty: Type = m.value()?.parse()?;
                    let version = label.as_ref().and_then(|l| {
                        l.to_string()
                            .strip_prefix('v')
                            .and_then(|n| n.parse::<u32>().ok())
                            .filter(|n| *n >= 1)
                    });
                    match (label, version) {
                        (Some(label), Some(version)) => {
                            if steps.iter().any(|s: &MigrateFrom| s.version == version) {
                                cx.error_spanned_by(&label, format!("`{label}` is listed twice"));
                            } else {
                                steps.push(MigrateFrom { version, label, ty });
                            }
                        }
                        _ => {
                            bad = true;
                            cx.error_spanned_by(
                                &m.path,
                                "expected a version label such as `v1`: `migrate_from(v1 = OldType)`",
                            );
                        }
                    }
                    Ok(())
                })?;
                if steps.is_empty() && !bad {
                    cx.error_spanned_by(
                        &meta.path,
                        "`migrate_from(...)` is empty: list the earlier versions, `migrate_from(v1 = OldType)`",
                    );
                }
                steps.sort_by_key(|s| s.version);
                set_once(
                    cx,
                    &mut out.migrate_from,
                    (meta.path.clone(), steps),
                    &meta,
                    symbol::MIGRATE_FROM,
                );
            } else {
                unknown(cx, &meta, "state", symbol::STATE_KEYS)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            cx.syn_error(e);
        }
    }
    out
}

/// The index of the literal's value in `values`, or an error under the literal naming the
/// accepted values (with a suggestion for a near miss).
fn parse_choice(cx: &Ctxt, lit: &LitStr, what: &str, values: &[&str]) -> Option<usize> {
    let text = lit.value();
    if let Some(i) = values.iter().position(|v| *v == text) {
        return Some(i);
    }
    let hint = suggest(&text, values)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    cx.error_spanned_by(
        lit,
        format!("unknown {what} `{text}`, expected {}{hint}", one_of(values)),
    );
    None
}

/// Parses a ttl literal with humantime; zero, overflowing and malformed durations are errors
/// under the literal.
fn parse_ttl(cx: &Ctxt, lit: &LitStr) -> Option<Ttl> {
    let text = lit.value();
    if text.trim_start().starts_with('-') {
        cx.error_spanned_by(
            lit,
            format!("ttl `{text}` is negative; a ttl must be positive"),
        );
        return None;
    }
    match humantime::parse_duration(&text) {
        Err(e) => {
            cx.error_spanned_by(
                lit,
                format!("invalid ttl `{text}`: {e}; expected a duration such as \"90s\", \"15m\" or \"1h 30m\""),
            );
            None
        }
        Ok(d) if d.is_zero() => {
            cx.error_spanned_by(lit, format!("ttl `{text}` is zero; a ttl must be positive"));
            None
        }
        Ok(d) if d.as_millis() == 0 => {
            cx.error_spanned_by(
                lit,
                format!("ttl `{text}` is below the 1 ms resolution of state time stamps"),
            );
            None
        }
        Ok(d) => match u64::try_from(d.as_millis()) {
            Ok(millis) if millis <= i64::MAX as u64 => Some(Ttl { millis }),
            _ => {
                cx.error_spanned_by(lit, format!("ttl `{text}` is too large"));
                None
            }
        },
    }
}
