//! Every repository path the README and docs/ name exists (a renamed or
//! deleted file — the demo recording, a protocol notes file — is caught
//! here instead of by a reader).

use std::path::Path;

#[test]
fn every_repository_path_named_in_the_docs_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let roots = [
        "src/",
        "tests/",
        "tools/",
        "docs/",
        "replay-data/",
        "benches/",
        ".ci/",
    ];
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        // Paths are written in backticks or as link targets.
        for token in text.split(['`', '(', ')', ' ', '\n', '[', ']']) {
            let t = token.trim_end_matches([',', '.', ':', ';']);
            let t = t.split('#').next().unwrap_or(t);
            if !roots.iter().any(|r| t.starts_with(r))
                || t.contains(['*', '{', '<', '…'])
                || t.ends_with('/') && t.len() < 3
            {
                continue;
            }
            checked += 1;
            if !root.join(t).exists() {
                missing.push(format!(
                    "{}: {t}",
                    doc.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} paths found: is the scan broken?"
    );
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "named but missing: {missing:#?}");
}
