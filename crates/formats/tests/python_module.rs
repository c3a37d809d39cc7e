//! Runs the Python module's pytest suite (`python/tests`: bit for bit against ml_dtypes, the OCP
//! MX rule in numpy, the API's errors and layouts) as part of `cargo test`, so the README's one
//! test command covers the bindings too.
//!
//! Needs a Python named by `FP8_PYTHON` with the module installed (`pip install ./python`) and
//! `pytest`, `numpy`, `ml_dtypes`; `.ci/run` sets that up. Without `FP8_PYTHON` the test says so
//! and passes, unless `CI` is set: in CI a missing interpreter or module is a broken setup.

use std::path::Path;
use std::process::Command;

#[test]
fn python_module_pytest_suite() {
    let ci = std::env::var_os("CI").is_some();
    let python = match std::env::var("FP8_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ if ci => panic!("CI is set but FP8_PYTHON is not (.ci/run sets it)"),
        _ => {
            eprintln!(
                "SKIPPED python_module: set FP8_PYTHON to a Python with the fp8 module \
                 (pip install ./python), pytest, numpy and ml_dtypes to run this test"
            );
            return;
        }
    };
    let importable = Command::new(&python)
        .args(["-c", "import fp8, pytest, ml_dtypes"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !importable {
        assert!(
            !ci,
            "{python} cannot import fp8, pytest and ml_dtypes; .ci/run installs them"
        );
        eprintln!(
            "SKIPPED python_module: {python} lacks fp8 (pip install ./python), pytest or ml_dtypes"
        );
        return;
    }
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python/tests");
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .output()
        .expect("running pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "python/tests failed (see the pytest output above)"
    );
}
