//! Compile-fail and compile-pass cases of the derive macros. Each failing case is one mistake a
//! user can make; its `.stderr` is what they see. Regenerate with `TRYBUILD=overwrite` and read
//! the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/operator/*.rs");
    t.compile_fail("tests/ui/state/*.rs");
    t.compile_fail("tests/ui/types/*.rs");
    t.compile_fail("tests/ui/ttl/*.rs");
    t.compile_fail("tests/ui/migrations/*.rs");
    t.compile_fail("tests/ui/timers/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
