//! Conformance over the real programs in ../shared/fixtures/mil-maderix: every one parses,
//! validates without errors, round-trips through the printer, and its lints are the ones its
//! shapes call for. Skipped (with a message) when the folder is absent, unless
//! ANEMONE_REQUIRE_SHARED=1.

use std::path::PathBuf;

use anemone_mil::{lint, text, validate};

fn fixtures() -> Option<Vec<(String, String)>> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mil-maderix");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        if std::env::var("ANEMONE_REQUIRE_SHARED").as_deref() == Ok("1") {
            panic!("shared fixtures not found at {} (ANEMONE_REQUIRE_SHARED=1)", dir.display());
        }
        eprintln!("skipped: shared fixtures not found at {}", dir.display());
        return None;
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mil"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 10, "expected the ten fixture programs");
    Some(out)
}

#[test]
fn every_fixture_parses_validates_and_round_trips() {
    let Some(fixtures) = fixtures() else { return };
    for (name, src) in &fixtures {
        let program = text::parse(src).unwrap_or_else(|d| panic!("{name}: {}", d.message));
        let errors: Vec<_> =
            validate::validate(&program).into_iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let printed = text::print(&program);
        let again =
            text::parse(&printed).unwrap_or_else(|d| panic!("{name} reprinted: {}", d.message));
        assert_eq!(program, again, "{name}: parse(print(p)) != p");
    }
}

#[test]
fn fixture_lints_match_their_shapes() {
    let Some(fixtures) = fixtures() else { return };
    let codes = |name: &str| -> Vec<&'static str> {
        let src = &fixtures.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
        lint::lint(&text::parse(src).unwrap()).into_iter().map(|d| d.code).collect()
    };
    // 03 has inputs of 8 KiB and 24 KiB: the ANE would fail with 0x1d unpadded.
    assert!(codes("03").contains(&"ane::unequal-io-sizes"));
    // 07 reads 32000 channels, above the 16384 limit.
    assert!(codes("07").contains(&"ane::too-many-channels"));
    // 10 passes attn_mask to scaled_dot_product_attention, which the ANE ignores.
    assert!(codes("10").contains(&"ane::sdpa-attn-mask-ignored"));
    // 01 is the seed's shape: one input, one output, spatial 32. Nothing to say.
    assert_eq!(codes("01"), Vec::<&str>::new());
}
