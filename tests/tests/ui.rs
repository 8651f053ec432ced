//! Compile-fail tests of `#[hot_module]`: one mistake per file, named
//! after the mistake, with the expected diagnostics beside it.

#[test]
fn refused_modules() {
    trybuild::TestCases::new().compile_fail("ui/*.rs");
}
