//! Code generation: reads only the model.

pub mod key;
pub mod operator;
pub mod schema;
pub mod value;

use proc_macro2::TokenStream;

/// A type as the user wrote it, compactly (`Vec<u8>`, `HashMap<u32, String>`): the descriptor's
/// readable type name.
pub fn type_string(tokens: &TokenStream) -> String {
    let raw = tokens.to_string();
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 1).copied();
            let word =
                |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '\'');
            if word(before) && word(after) {
                out.push(' ');
            }
        } else {
            out.push(c);
            if c == ',' {
                out.push(' ');
            }
        }
    }
    out
}
