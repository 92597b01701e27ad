//! Fetches the meeting page's SDK at build time: livekit-client's browser
//! bundle (`dist/livekit-client.umd.js`), at the version and integrity
//! `client-web/package-lock.json` pins, installed with `npm ci` into this
//! build's own output directory and embedded in the binary by `web.rs`. No
//! third-party code is committed. `SFU_LIVEKIT_CLIENT_JS=/path/to/bundle`
//! uses a file fetched beforehand instead (offline builds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const BUNDLE: &str = "livekit-client.umd.js";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-web");
    println!("cargo:rerun-if-env-changed=SFU_LIVEKIT_CLIENT_JS");
    for file in ["package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web.join(file).display());
    }
    let bundle = match env::var_os("SFU_LIVEKIT_CLIENT_JS") {
        Some(path) => PathBuf::from(path),
        None => install(&web, &out.join("client-web")),
    };
    if let Err(e) = fs::copy(&bundle, out.join(BUNDLE)) {
        fail(&format!("cannot copy {}: {e}", bundle.display()));
    }
}

/// `npm ci` of the lockfile in `stage` (a copy of package.json and the
/// lockfile); returns the bundle's path.
fn install(web: &Path, stage: &Path) -> PathBuf {
    let bundle = stage.join("node_modules/livekit-client/dist").join(BUNDLE);
    if bundle.is_file() {
        return bundle;
    }
    if let Err(e) = fs::create_dir_all(stage) {
        fail(&format!("cannot create {}: {e}", stage.display()));
    }
    for file in ["package.json", "package-lock.json"] {
        if let Err(e) = fs::copy(web.join(file), stage.join(file)) {
            fail(&format!("cannot copy client-web/{file}: {e}"));
        }
    }
    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(stage)
        .status();
    match status {
        Ok(s) if s.success() && bundle.is_file() => bundle,
        Ok(s) => fail(&format!("`npm ci` in {} ended with {s}", stage.display())),
        Err(e) => fail(&format!("cannot run npm ({e})")),
    }
}

fn fail(why: &str) -> ! {
    panic!(
        "the meeting page needs livekit-client's browser bundle: {why}. Install Node.js and npm \
         (Debian: `apt install npm`) with access to the npm registry, or set \
         SFU_LIVEKIT_CLIENT_JS to a livekit-client.umd.js of the version client-web/package-lock.json pins"
    )
}
