//! `bogie check-console`.

use crate::input_error;
use crate::options::CheckConsoleOptions;

/// Scans console files; exit 1 when anything matched.
pub fn check_console(o: &CheckConsoleOptions) -> anyhow::Result<u8> {
    let args = &o.args;
    use bogie_harness::checks::{scan, ScanOptions};
    let mut found = false;
    for f in &args.files {
        let bytes = std::fs::read(f)
            .map_err(|e| input_error(format!("cannot read {}: {e}", f.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let opts = ScanOptions {
            no_avc_checks: o.no_avc_checks,
            ..Default::default()
        };
        for m in scan(&text, opts) {
            found = true;
            println!("{}:{}: {}: {}", f.display(), m.line_no, m.desc, m.line);
        }
    }
    Ok(if found { 1 } else { 0 })
}
