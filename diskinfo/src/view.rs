//! The OS as it will be mounted: ext2/3/4 file systems at mount points (ROOT at `/`, a
//! Flatcar USR partition at `/usr`), paths resolved component by component so that a
//! symlink on one file system (`/bin -> usr/bin` on ROOT) leads into another.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::{DiskError, Result};

/// How deep symbolic links may nest while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// What a path is, without following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file of this many bytes.
    File(u64),
    /// A symbolic link to this target.
    Symlink(String),
    /// A device, fifo or socket.
    Special,
}

/// A mounted file system, or a mount point whose file system cannot be read.
enum Source {
    Ext(ext4_view::Ext4),
    Unreadable { what: String, fs: String },
}

struct Mount {
    point: String,
    source: Source,
}

/// Read-only access to an OS tree made of mounted ext2/3/4 file systems.
pub struct OsView {
    mounts: Vec<Mount>,
    nodes: RefCell<HashMap<String, Option<Node>>>,
}

impl std::fmt::Debug for OsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let points: Vec<&str> = self.mounts.iter().map(|m| m.point.as_str()).collect();
        f.debug_struct("OsView").field("mounts", &points).finish()
    }
}

fn fs_error(path: &str, e: ext4_view::Ext4Error) -> DiskError {
    match e {
        ext4_view::Ext4Error::NotFound => DiskError::NotFound(path.to_string()),
        e => DiskError::Fs {
            path: path.to_string(),
            reason: e.to_string(),
        },
    }
}

impl OsView {
    /// A view with `root` mounted at `/`.
    pub fn new(root: ext4_view::Ext4) -> OsView {
        OsView {
            mounts: vec![Mount {
                point: "/".into(),
                source: Source::Ext(root),
            }],
            nodes: RefCell::new(HashMap::new()),
        }
    }

    /// Mounts `fs` at `point` (an absolute path, e.g. `/usr`).
    pub fn mount(&mut self, point: &str, fs: ext4_view::Ext4) {
        self.add(point, Source::Ext(fs));
    }

    /// Marks `point` as a mount point whose file system (the partition `what`, holding
    /// `fs`) cannot be read: any path beneath it is an [`DiskError::UnreadableFs`].
    pub fn mount_unreadable(&mut self, point: &str, what: &str, fs: &str) {
        self.add(
            point,
            Source::Unreadable {
                what: what.into(),
                fs: fs.into(),
            },
        );
    }

    fn add(&mut self, point: &str, source: Source) {
        let point = normalise(point);
        self.mounts.retain(|m| m.point != point);
        self.mounts.push(Mount { point, source });
        // Longest mount point first, so the first match is the innermost.
        self.mounts
            .sort_by_key(|m| std::cmp::Reverse(m.point.len()));
        self.nodes.borrow_mut().clear();
    }

    /// The mount holding canonical path `p` and `p` inside that file system.
    fn locate(&self, p: &str) -> (&Mount, String) {
        for m in &self.mounts {
            if m.point == "/" {
                return (m, p.to_string());
            }
            if p == m.point {
                return (m, "/".into());
            }
            if let Some(rest) = p.strip_prefix(&m.point) {
                if rest.starts_with('/') {
                    return (m, rest.to_string());
                }
            }
        }
        unreachable!("/ is always mounted")
    }

    /// What the canonical path `p` (no symlinks before its last component) is, or `None`.
    fn lstat(&self, p: &str) -> Result<Option<Node>> {
        if let Some(n) = self.nodes.borrow().get(p) {
            return Ok(n.clone());
        }
        let (m, inner) = self.locate(p);
        let fs = match &m.source {
            Source::Ext(fs) => fs,
            Source::Unreadable { what, fs } => {
                return Err(DiskError::UnreadableFs {
                    what: what.clone(),
                    fs: fs.clone(),
                })
            }
        };
        let node = match fs.symlink_metadata(inner.as_str()) {
            Ok(md) if md.is_symlink() => {
                let t = fs.read_link(inner.as_str()).map_err(|e| fs_error(p, e))?;
                let t = t.to_str().map_err(|_| DiskError::Fs {
                    path: p.to_string(),
                    reason: "symlink target is not UTF-8".into(),
                })?;
                Some(Node::Symlink(t.to_string()))
            }
            Ok(md) if md.is_dir() => Some(Node::Dir),
            Ok(md) if md.file_type().is_regular_file() => Some(Node::File(md.len())),
            Ok(_) => Some(Node::Special),
            Err(ext4_view::Ext4Error::NotFound | ext4_view::Ext4Error::NotADirectory) => None,
            Err(e) => return Err(fs_error(p, e)),
        };
        self.nodes.borrow_mut().insert(p.to_string(), node.clone());
        Ok(node)
    }

    /// The canonical form of `path`: every symlink followed (the last one too when
    /// `follow_last`), `.` and `..` applied. [`DiskError::NotFound`] when a component is
    /// missing or not a directory.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String> {
        let mut todo: Vec<String> = components(path).rev().map(String::from).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let p = format!("/{}", cur.join("/"));
            let last = todo.is_empty();
            match self.lstat(&p)? {
                None => return Err(DiskError::NotFound(path.to_string())),
                Some(Node::Symlink(target)) if !last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(DiskError::SymlinkLoop(path.to_string()));
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    todo.extend(components(&target).rev().map(String::from));
                }
                Some(Node::Dir) => {}
                Some(_) if !last => return Err(DiskError::NotFound(path.to_string())),
                Some(_) => {}
            }
        }
        Ok(format!("/{}", cur.join("/")))
    }

    /// What `path` is, its last component not followed; `None` when it does not exist.
    pub fn symlink_metadata(&self, path: &str) -> Result<Option<Node>> {
        match self.resolve(path, false) {
            Ok(p) => self.lstat(&p),
            Err(DiskError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `path` exists or is a symlink (even a dangling one), as the shell's
    /// `[ -e P ] || [ -L P ]`.
    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.symlink_metadata(path)?.is_some())
    }

    /// What `path` is after following every symlink; `None` when it does not exist.
    pub fn metadata(&self, path: &str) -> Result<Option<Node>> {
        match self.resolve(path, true) {
            Ok(p) => self.lstat(&p),
            Err(DiskError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The contents of the file at `path` (symlinks followed).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let p = self.resolve(path, true)?;
        let (m, inner) = self.locate(&p);
        match &m.source {
            Source::Ext(fs) => fs.read(inner.as_str()).map_err(|e| fs_error(path, e)),
            Source::Unreadable { what, fs } => Err(DiskError::UnreadableFs {
                what: what.clone(),
                fs: fs.clone(),
            }),
        }
    }

    /// Up to `len` bytes from the start of the file at `path` (symlinks followed).
    pub fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let p = self.resolve(path, true)?;
        let (m, inner) = self.locate(&p);
        let Source::Ext(fs) = &m.source else {
            return self.read(path);
        };
        let mut f = fs.open(inner.as_str()).map_err(|e| fs_error(path, e))?;
        let mut buf = vec![0u8; len];
        let mut n = 0;
        while n < len {
            match f.read_bytes(&mut buf[n..]).map_err(|e| fs_error(path, e))? {
                0 => break,
                k => n += k,
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// The names in the directory at `path` (symlinks followed), without `.` and `..`,
    /// sorted.
    pub fn read_dir(&self, path: &str) -> Result<Vec<String>> {
        let p = self.resolve(path, true)?;
        let (m, inner) = self.locate(&p);
        let fs = match &m.source {
            Source::Ext(fs) => fs,
            Source::Unreadable { what, fs } => {
                return Err(DiskError::UnreadableFs {
                    what: what.clone(),
                    fs: fs.clone(),
                })
            }
        };
        let mut names = Vec::new();
        for e in fs.read_dir(inner.as_str()).map_err(|e| fs_error(path, e))? {
            let e = e.map_err(|e| fs_error(path, e))?;
            let name = e.file_name();
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

fn components(p: &str) -> impl DoubleEndedIterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn normalise(p: &str) -> String {
    let c: Vec<&str> = components(p).collect();
    format!("/{}", c.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{RawDisk, Slice};
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    fn ext(src: &std::path::Path, img: &std::path::Path) -> Option<ext4_view::Ext4> {
        if !crate::fixtures::mkfs(src, img, 8, &[]) {
            return None;
        }
        let s = Slice::new(Arc::new(RawDisk::open(img).unwrap()), 0, u64::MAX);
        Some(crate::fs::open_ext(&s, "test").unwrap())
    }

    /// A Debian-style root whose `/bin`, `/lib` and `/etc/os-release` point into a
    /// separate `/usr`.
    #[test]
    fn symlinks_cross_from_root_into_usr() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let usr = d.path().join("usr");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        symlink("/etc/loop2", root.join("etc/loop1")).unwrap();
        symlink("loop1", root.join("etc/loop2")).unwrap();
        symlink("nowhere", root.join("etc/dangling")).unwrap();
        std::fs::create_dir_all(usr.join("bin")).unwrap();
        std::fs::create_dir_all(usr.join("lib/systemd")).unwrap();
        std::fs::write(usr.join("lib/os-release"), "ID=debian\n").unwrap();
        std::fs::write(usr.join("lib/systemd/systemd"), "ELF").unwrap();
        std::fs::write(usr.join("bin/busybox"), "bb").unwrap();
        symlink("../../bin/busybox", usr.join("lib/systemd/bb")).unwrap();
        let Some(root_fs) = ext(&root, &d.path().join("root.img")) else {
            return;
        };
        let usr_fs = ext(&usr, &d.path().join("usr.img")).unwrap();
        let mut v = OsView::new(root_fs);
        // Before /usr is mounted, the links lead into ROOT's empty /usr.
        assert!(!v.exists("/bin/busybox").unwrap());
        v.mount("/usr", usr_fs);
        assert_eq!(v.read("/etc/os-release").unwrap(), b"ID=debian\n");
        assert_eq!(
            v.resolve("/etc/os-release", true).unwrap(),
            "/usr/lib/os-release"
        );
        assert!(v.exists("/bin/busybox").unwrap());
        assert!(v.exists("/lib/systemd/systemd").unwrap());
        assert_eq!(v.read("/lib/systemd/bb").unwrap(), b"bb");
        assert_eq!(v.read_head("/lib/systemd/systemd", 2).unwrap(), b"EL");
        assert_eq!(v.metadata("/lib").unwrap(), Some(Node::Dir));
        assert_eq!(
            v.symlink_metadata("/lib").unwrap(),
            Some(Node::Symlink("usr/lib".into()))
        );
        assert_eq!(v.read_dir("/lib").unwrap(), ["os-release", "systemd"]);
        assert!(v.exists("/etc/dangling").unwrap(), "a dangling link is -L");
        assert_eq!(v.metadata("/etc/dangling").unwrap(), None);
        assert_eq!(
            v.read("/etc/loop1").unwrap_err().to_string(),
            "/etc/loop1: too many levels of symbolic links"
        );
        assert_eq!(
            v.read("/etc/missing").unwrap_err().to_string(),
            "/etc/missing: no such file or directory"
        );
        // An unreadable /usr names its partition.
        v.mount_unreadable("/usr", "USR-A", "btrfs");
        assert_eq!(
            v.read("/etc/os-release").unwrap_err().to_string(),
            "USR-A is btrfs"
        );
    }
}
