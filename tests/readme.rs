//! The README's config reference stays in step with the document structs:
//! every `pub` field of `src/config/document.rs` must appear in the README as
//! `` `name` ``, and every bundled config must validate.

#[test]
fn readme_config_reference_names_every_document_field() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/config/document.rs"
    ))
    .unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut missing = Vec::new();
    for line in doc.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub ")
            && let Some((name, _)) = rest.split_once(':')
            && !name.contains(' ')
            && !name.contains('(')
            && !readme.contains(&format!("`{name}`"))
        {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "README config reference lacks: {missing:?}"
    );
}

#[test]
fn bundled_configs_validate() {
    for file in ["config/demo.toml", "config/switchyard.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) =
            switchyard::config::load(&text, switchyard::config::Origin::File(file.into()))
        {
            panic!("{e}");
        }
    }
}
