//! The broker's modules form layers that only point down:
//!
//! ```text
//! server                          (the process: listeners, background tasks, shutdown)
//! console                         (the debug console's routes, graphs and cluster relay)
//! ws, fallback, http, app_store   (transports and the app store)
//! session                         (the protocol, one task per connection)
//! state, metrics                  (what every worker shares)
//! adapter                         (this node or the cluster)
//! apps                            (the tenants)
//! core, webhooks                  (connections, channels, presence; webhook delivery)
//! console_feed                    (the debug console's hooks, called from every layer above)
//! config                          (settings)
//! ```
//!
//! This test reads `src/` and fails when a module names one on its own layer or
//! above (which is also what an import cycle needs), or when a new top-level
//! module has not been given a layer here.

use std::{collections::BTreeSet, fs, path::Path};

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &["console_feed"],
    &["core", "webhooks"],
    &["apps"],
    &["adapter"],
    &["metrics"],
    &["state"],
    &["session"],
    &["ws", "fallback", "http", "app_store"],
    &["console"],
    &["server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The code of a Rust file without its comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named through `crate::…` paths, including `use crate::{a::…, b}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        if bytes.get(start) == Some(&b'{') {
            // Names at the group's first level start a path each.
            let mut depth = 0;
            let mut expect_name = true;
            for (j, c) in code[start..].char_indices() {
                match c {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            expect_name = true;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if depth == 1 && expect_name && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(start + j));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(start));
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if first == "lib" || first == "main" {
            continue;
        }
        let Some(own) = layer_of(&first) else {
            wrong.push(format!(
                "{}: module `{first}` has no layer in tests/layers.rs",
                rel.display()
            ));
            continue;
        };
        for used in crate_refs(&code(&fs::read_to_string(&path).unwrap())) {
            if used == first {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(_) => wrong.push(format!(
                    "{}: `{first}` uses `{used}`, which is not below it",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{}: uses `crate::{used}`, a module with no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layering violations:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reference_finder_sees_groups_and_paths() {
    let refs = crate_refs("use crate::{\n    apps::{App, X},\n    core::hub::Hub,\n    state::State,\n};\nlet m = crate::metrics::Metrics::new();");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["apps", "core", "metrics", "state"]
    );
    assert!(crate_refs(&code("// see crate::server for why")).is_empty());
}
