//! A small tar writer (POSIX ustar, with GNU long names): how an external test's files
//! travel to the machine in one SSH command (`tar -x -C /` on the guest).

use std::path::Path;

/// Archive members under construction, in order.
#[derive(Debug, Default)]
pub(crate) struct Tar {
    buf: Vec<u8>,
}

const BLOCK: usize = 512;

impl Tar {
    /// An empty archive.
    pub(crate) fn new() -> Tar {
        Tar::default()
    }

    /// Adds a regular file (`path` relative to the extraction root, owned by root).
    pub(crate) fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.header(path, b'0', data.len() as u64, mode);
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// Adds a directory.
    pub(crate) fn dir(&mut self, path: &str, mode: u32) {
        let p = format!("{}/", path.trim_end_matches('/'));
        self.header(&p, b'5', 0, mode);
    }

    /// Adds the tree under `src` below `dest`, following symlinks (a link back to a
    /// directory being copied is not followed again). Returns the number of files added.
    pub(crate) fn tree(&mut self, src: &Path, dest: &str) -> std::io::Result<usize> {
        let mut seen = Vec::new();
        self.tree_inner(src, dest, &mut seen)
    }

    fn tree_inner(
        &mut self,
        src: &Path,
        dest: &str,
        seen: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<usize> {
        use std::os::unix::fs::PermissionsExt;
        let canon = std::fs::canonicalize(src)?;
        if seen.contains(&canon) {
            return Ok(0);
        }
        seen.push(canon);
        let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut n = 0;
        for e in entries {
            let path = e.path();
            let name = format!("{dest}/{}", e.file_name().to_string_lossy());
            // Follow symlinks, as kola does for its data directories.
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                self.dir(&name, 0o755);
                n += self.tree_inner(&path, &name, seen)?;
            } else if meta.is_file() {
                let data = std::fs::read(&path)?;
                self.file(&name, &data, meta.permissions().mode() & 0o7777);
                n += 1;
            }
        }
        seen.pop();
        Ok(n)
    }

    /// The finished archive (two zero blocks at the end).
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; BLOCK * 2]);
        self.buf
    }

    fn pad(&mut self) {
        let rem = self.buf.len() % BLOCK;
        if rem != 0 {
            self.buf.resize(self.buf.len() + BLOCK - rem, 0);
        }
    }

    fn header(&mut self, path: &str, kind: u8, size: u64, mode: u32) {
        let name = path.trim_start_matches('/').as_bytes();
        if name.len() > 100 {
            // GNU long name: a `././@LongLink` member whose data is the name.
            let mut long = name.to_vec();
            long.push(0);
            self.raw_header(b"././@LongLink", b'L', long.len() as u64, 0o644);
            self.buf.extend_from_slice(&long);
            self.pad();
            self.raw_header(&name[..100], kind, size, mode);
        } else {
            self.raw_header(name, kind, size, mode);
        }
    }

    fn raw_header(&mut self, name: &[u8], kind: u8, size: u64, mode: u32) {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0); // uid
        octal(&mut h[116..124], 0); // gid
        octal(&mut h[124..136], size);
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        octal(&mut h[136..148], mtime);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        self.buf.extend_from_slice(&h);
    }
}

/// Writes `v` as zero-padded octal filling `field` but for a final NUL.
fn octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(width)..];
    field[..width].copy_from_slice(s);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extracts with the system's `tar` when there is one; the archive must round-trip.
    #[test]
    fn archives_extract_with_system_tar() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a.txt"), "a\n").unwrap();
        std::fs::write(src.path().join("b"), "bee").unwrap();
        std::os::unix::fs::symlink("sub", src.path().join("link")).unwrap();
        let mut t = Tar::new();
        t.dir("d", 0o755);
        let long = format!("d/{}", "x".repeat(150));
        t.file(&long, b"long name", 0o644);
        t.file("d/run.sh", b"#!/bin/sh\n", 0o755);
        assert_eq!(t.tree(src.path(), "d/data").unwrap(), 3);
        let bytes = t.finish();
        assert_eq!(bytes.len() % BLOCK, 0);
        let out = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("tar")
            .args(["-x", "-C"])
            .arg(out.path())
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: no tar on this host");
            return;
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        let o = out.path();
        assert_eq!(std::fs::read_to_string(o.join(&long)).unwrap(), "long name");
        assert_eq!(std::fs::read_to_string(o.join("d/data/b")).unwrap(), "bee");
        assert_eq!(
            std::fs::read_to_string(o.join("d/data/sub/a.txt")).unwrap(),
            "a\n"
        );
        assert_eq!(
            std::fs::read_to_string(o.join("d/data/link/a.txt")).unwrap(),
            "a\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(o.join("d/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
