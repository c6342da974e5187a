//! Embeds the pages' assets: every file under `src/web/` except the two HTML pages becomes
//! an entry of `ASSETS` (its path below `src/web/`, content type, contents), served under
//! `/assets/`. A file added there is served; nothing is listed by hand.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn main() {
    let web = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("src/web");
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    collect(&web, &mut files);
    files.sort();
    let mut table = String::from("&[\n");
    for path in files {
        let relative = path
            .strip_prefix(&web)
            .expect("below src/web")
            .to_str()
            .expect("asset paths are UTF-8");
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("html") => continue,
            other => panic!("src/web/{relative}: no content type for {other:?}"),
        };
        writeln!(
            table,
            "    ({relative:?}, {content_type:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to a string");
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("assets.rs");
    std::fs::write(out, table).expect("write the asset table");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        // Directories are watched too, so that a new file triggers a rebuild.
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
