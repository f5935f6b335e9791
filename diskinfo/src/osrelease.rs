//! `os-release(5)`: `KEY=VALUE` lines, values optionally in shell quotes.

use std::collections::BTreeMap;

/// The parsed `os-release` of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// Every assignment, keys as written.
    pub fields: BTreeMap<String, String>,
}

impl OsRelease {
    /// Parses the text of an `os-release` file (comments and malformed lines skipped).
    pub fn parse(text: &str) -> OsRelease {
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            fields.insert(k.to_string(), unquote(v.trim()));
        }
        OsRelease { fields }
    }

    /// The value of `key`, or `""`.
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    /// `ID` (`flatcar`, `debian`, ...; `linux` when unset, as the spec says).
    pub fn id(&self) -> &str {
        match self.get("ID") {
            "" => "linux",
            id => id,
        }
    }

    /// `VERSION_ID` (`4230.2.1`, `12`).
    pub fn version_id(&self) -> &str {
        self.get("VERSION_ID")
    }

    /// `VERSION` (`4230.2.1 (Oklo)`, `12 (bookworm)`).
    pub fn version(&self) -> &str {
        self.get("VERSION")
    }

    /// `VARIANT_ID` (`bogie-test` on bogie's test image).
    pub fn variant_id(&self) -> &str {
        self.get("VARIANT_ID")
    }

    /// `NAME` (`Flatcar Container Linux by Kinvolk`, `Debian GNU/Linux`).
    pub fn name(&self) -> &str {
        self.get("NAME")
    }

    /// Whether `ID` names Flatcar (`flatcar`, or the older `flatcar-linux`).
    pub fn is_flatcar(&self) -> bool {
        matches!(self.id(), "flatcar" | "flatcar-linux")
    }

    /// One line for messages: `ID=debian VERSION_ID=12 VARIANT_ID=bogie-test (Debian GNU/Linux)`.
    pub fn summary(&self) -> String {
        let mut s = format!("ID={}", self.id());
        for k in ["VERSION_ID", "VARIANT_ID"] {
            if !self.get(k).is_empty() {
                s.push_str(&format!(" {k}={}", self.get(k)));
            }
        }
        if !self.name().is_empty() {
            s.push_str(&format!(" ({})", self.name()));
        }
        s
    }
}

/// A value without its shell quoting: `"a \"b\""` → `a "b"`, `'x'` → `x`.
fn unquote(v: &str) -> String {
    let mut chars = v.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let mut out = String::new();
            while let Some(c) = chars.next() {
                if c == q {
                    break;
                }
                if c == '\\' && q == '"' {
                    match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(e) => {
                            out.push('\\');
                            out.push(e);
                        }
                        None => break,
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flatcar_and_debian() {
        let f = OsRelease::parse(
            "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nID_LIKE=coreos\n\
             VERSION=4230.2.1\nVERSION_ID=4230.2.1\nBUILD_ID=2025-01-01-0000\n",
        );
        assert!(f.is_flatcar());
        assert_eq!(f.version_id(), "4230.2.1");
        assert_eq!(f.name(), "Flatcar Container Linux by Kinvolk");
        let d = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n# comment\nNAME='Debian GNU/Linux'\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\nVARIANT_ID=bogie-test\n\
             QUOTED=\"a \\\"b\\\" \\$c\"\nbroken line\n",
        );
        assert!(!d.is_flatcar());
        assert_eq!(d.id(), "debian");
        assert_eq!(d.version(), "12 (bookworm)");
        assert_eq!(d.variant_id(), "bogie-test");
        assert_eq!(d.get("QUOTED"), "a \"b\" $c");
        assert_eq!(
            d.summary(),
            "ID=debian VERSION_ID=12 VARIANT_ID=bogie-test (Debian GNU/Linux)"
        );
        assert!(OsRelease::parse("ID=flatcar-linux").is_flatcar());
        assert_eq!(OsRelease::parse("").id(), "linux");
    }
}
