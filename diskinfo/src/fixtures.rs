//! Test fixtures (this crate's tests, and others' with the `fixtures` feature): GPT disks
//! and qcow2 images written here, ext2/3/4 file systems from the host's `mkfs.ext4 -d`
//! (tests that need it skip, with a printed reason, without it). Every function panics on
//! an I/O error: they are for tests only.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::gpt::{types, Guid};

/// The host tool `name` (searched in `PATH`, `/usr/sbin`, `/sbin`), or `None` after
/// printing why the calling test is skipped.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// `mkfs.ext4 -q -F -d SRC ARGS OUT SIZE_MIB`; `false` (skip) when the tool is missing.
pub fn mkfs(src: &Path, out: &Path, size_mib: u64, args: &[&str]) -> bool {
    let Some(mkfs) = tool("mkfs.ext4") else {
        return false;
    };
    let _ = std::fs::remove_file(out);
    let o = std::process::Command::new(mkfs)
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(src)
        .args(args)
        .arg(out)
        .arg(format!("{size_mib}M"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    true
}

/// One partition of [`gpt_disk`]: byte offsets, multiples of the sector size.
#[derive(Debug, Clone)]
pub struct PartSpec {
    /// Label.
    pub name: &'static str,
    /// Type GUID.
    pub type_guid: &'static str,
    /// Start byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// The unique GUID (else one made from the name).
    pub unique: Option<&'static str>,
    /// A file whose bytes are copied into the partition.
    pub content: Option<PathBuf>,
}

impl PartSpec {
    /// A partition without attributes or content.
    pub fn new(name: &'static str, type_guid: &'static str, start: u64, size: u64) -> PartSpec {
        PartSpec {
            name,
            type_guid,
            start,
            size,
            attributes: 0,
            unique: None,
            content: None,
        }
    }
}

/// Writes a `total`-byte raw disk with a protective MBR, a GPT at LBA 1 of `sector`-byte
/// sectors (128 entries) and the partitions' contents.
pub fn gpt_disk(path: &Path, sector: u64, parts: &[PartSpec], total: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(total).unwrap();
    let mut entries = vec![0u8; 128 * 128];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&Guid::parse(p.type_guid).unwrap().0);
        let unique = match p.unique {
            Some(u) => Guid::parse(u).unwrap(),
            None => {
                let mut g = [0x42u8; 16];
                g[..p.name.len().min(16)]
                    .copy_from_slice(&p.name.as_bytes()[..p.name.len().min(16)]);
                Guid(g)
            }
        };
        e[16..32].copy_from_slice(&unique.0);
        e[32..40].copy_from_slice(&(p.start / sector).to_le_bytes());
        e[40..48].copy_from_slice(&((p.start + p.size) / sector - 1).to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (j, u) in p.name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let last = total / sector - 1;
    let mut h = vec![0u8; 92];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&last.to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
    h[56..72].copy_from_slice(&[0x11; 16]);
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let mut mbr = vec![0u8; 512];
    mbr[446 + 4] = 0xee;
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    use std::os::unix::fs::FileExt;
    f.write_all_at(&mbr, 0).unwrap();
    f.write_all_at(&h, sector).unwrap();
    f.write_all_at(&entries, 2 * sector).unwrap();
    for p in parts {
        if let Some(c) = &p.content {
            let bytes = std::fs::read(c).unwrap();
            assert!(bytes.len() as u64 <= p.size, "{} too big", p.name);
            f.write_all_at(&bytes, p.start).unwrap();
        }
    }
}

/// A qcow2 image for [`qcow2_image`].
#[derive(Debug, Clone)]
pub struct Qcow2Spec {
    /// 2 or 3.
    pub version: u32,
    /// Cluster size bits.
    pub cluster_bits: u32,
    /// Virtual size.
    pub size: u64,
    /// Guest cluster index, its bytes (a cluster or less), whether stored compressed.
    pub clusters: Vec<(u64, Vec<u8>, bool)>,
    /// Guest clusters marked as zero clusters (version 3).
    pub zero_clusters: Vec<u64>,
    /// The backing file name written in the header.
    pub backing: Option<String>,
}

/// Writes a qcow2 image (no refcounts: only a reader would accept it, this one).
pub fn qcow2_image(path: &Path, s: &Qcow2Spec) {
    let cs = 1u64 << s.cluster_bits;
    let per_table = cs / 8;
    let clusters = s.size.div_ceil(cs);
    let l1_size = clusters.div_ceil(per_table).max(1);
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let mut out = vec![0u8; (cs * (1 + l1_clusters)) as usize];
    let mut l1 = vec![0u64; l1_size as usize];
    let mut tables: Vec<(u64, Vec<u64>)> = Vec::new(); // (host offset, entries)
    let align = |out: &mut Vec<u8>| {
        let n = (out.len() as u64).div_ceil(cs) * cs;
        out.resize(n as usize, 0);
    };
    let mut table_for = |out: &mut Vec<u8>, idx: u64| -> (usize, usize) {
        let t = (idx / per_table) as usize;
        if l1[t] == 0 {
            align(out);
            l1[t] = out.len() as u64;
            out.resize(out.len() + cs as usize, 0);
            tables.push((l1[t], vec![0; per_table as usize]));
        }
        let pos = tables.iter().position(|(at, _)| *at == l1[t]).unwrap();
        (pos, (idx % per_table) as usize)
    };
    let mut entries: Vec<(usize, usize, u64)> = Vec::new();
    for (idx, data, compressed) in &s.clusters {
        let (t, i) = table_for(&mut out, *idx);
        let mut full = data.clone();
        full.resize(cs as usize, 0);
        let entry = if *compressed {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&full).unwrap();
            let packed = z.finish().unwrap();
            // Start off any sector boundary, to exercise the offset arithmetic.
            out.resize(out.len() + 100, 0);
            let host = out.len() as u64;
            out.extend_from_slice(&packed);
            let x = 62 - (s.cluster_bits - 8);
            let sectors = ((host & 511) + packed.len() as u64).div_ceil(512) - 1;
            (1u64 << 62) | (sectors << x) | host
        } else {
            align(&mut out);
            let host = out.len() as u64;
            out.extend_from_slice(&full);
            host | (1 << 63)
        };
        entries.push((t, i, entry));
    }
    for idx in &s.zero_clusters {
        let (t, i) = table_for(&mut out, *idx);
        entries.push((t, i, 1));
    }
    for (t, i, e) in entries {
        tables[t].1[i] = e;
    }
    for (at, t) in &tables {
        for (i, e) in t.iter().enumerate() {
            let o = *at as usize + i * 8;
            out[o..o + 8].copy_from_slice(&e.to_be_bytes());
        }
    }
    for (i, e) in l1.iter().enumerate() {
        let o = cs as usize + i * 8;
        let v = if *e == 0 { 0 } else { e | (1 << 63) };
        out[o..o + 8].copy_from_slice(&v.to_be_bytes());
    }
    let mut h = vec![0u8; 104];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&s.version.to_be_bytes());
    h[20..24].copy_from_slice(&s.cluster_bits.to_be_bytes());
    h[24..32].copy_from_slice(&s.size.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&cs.to_be_bytes());
    let header_len = if s.version == 3 {
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        104
    } else {
        h.truncate(72);
        72
    };
    // End of header extensions (8 zero bytes), then the backing file name.
    h.extend_from_slice(&[0u8; 8]);
    if let Some(b) = &s.backing {
        let at = h.len() as u64;
        h[8..16].copy_from_slice(&at.to_be_bytes());
        h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
        h.extend_from_slice(b.as_bytes());
    }
    assert!(h.len() as u64 <= cs, "header fits in the first cluster");
    out[..h.len()].copy_from_slice(&h);
    let _ = header_len;
    std::fs::write(path, out).unwrap();
}

/// Writes `raw` as a qcow2 image at `path`: every non-zero 64 KiB cluster stored,
/// compressed when `compress`, all-zero clusters left unallocated.
pub fn qcow2_from_raw(raw: &Path, path: &Path, compress: bool) {
    let bytes = std::fs::read(raw).unwrap();
    let cs = 1usize << 16;
    let clusters = bytes
        .chunks(cs)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, c)| (i as u64, c.to_vec(), compress))
        .collect();
    qcow2_image(
        path,
        &Qcow2Spec {
            version: 3,
            cluster_bits: 16,
            size: bytes.len() as u64,
            clusters,
            zero_clusters: vec![],
            backing: None,
        },
    );
}

/// A mebibyte.
pub const MIB: u64 = 1 << 20;

/// An x86-64 ELF header, as far as [`crate::inspect::elf_machine`] reads.
pub fn elf_amd64() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[18] = 62;
    h
}

/// Writes the trees of a Flatcar-shaped test disk under `dir`: ROOT (Debian's `/bin`,
/// `/lib`, `/sbin` and `/etc/os-release` links into `/usr`) and USR (`os_release` as
/// `/usr/lib/os-release`, systemd, docker with its modules, Ignition, ...).
fn trees(dir: &Path, os_release: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::symlink;
    let root = dir.join("root");
    let usr = dir.join("usr");
    for d in ["etc/initramfs-tools/scripts/local-bottom", "usr", "oem"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    symlink("usr/sbin", root.join("sbin")).unwrap();
    symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    std::fs::write(
        root.join("etc/initramfs-tools/scripts/local-bottom/ignition"),
        "#!/bin/sh\n",
    )
    .unwrap();
    for d in [
        "bin",
        "sbin",
        "lib/systemd",
        "lib/modules/6.1.0-test-amd64",
        "lib/dracut/modules.d/30ignition",
        "local/lib",
        "local/libexec",
    ] {
        std::fs::create_dir_all(usr.join(d)).unwrap();
    }
    std::fs::write(usr.join("lib/os-release"), os_release).unwrap();
    std::fs::write(usr.join("lib/systemd/systemd"), elf_amd64()).unwrap();
    for f in [
        "bin/docker",
        "sbin/dockerd",
        "bin/systemd-sysext",
        "bin/jq",
        "sbin/sshd",
    ] {
        std::fs::write(usr.join(f), "x").unwrap();
    }
    symlink("../lib/systemd/systemd", usr.join("bin/busybox-link")).unwrap();
    std::fs::write(usr.join("lib/dracut/modules.d/30ignition/ignition"), "x").unwrap();
    std::fs::write(usr.join("local/lib/ignition-translate.jq"), "x").unwrap();
    std::fs::write(
        usr.join("local/libexec/ignition-firstboot"),
        "#!/bin/sh\nignition --stage fetch\n",
    )
    .unwrap();
    let m = usr.join("lib/modules/6.1.0-test-amd64");
    std::fs::write(
        m.join("modules.dep"),
        "kernel/fs/overlayfs/overlay.ko.xz:\n\
         kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\n",
    )
    .unwrap();
    std::fs::write(m.join("modules.builtin"), "kernel/drivers/net/veth.ko\n").unwrap();
    (root, usr)
}

/// Writes a Flatcar-shaped raw disk (Flatcar's labels and types) with `usr` as USR-A's
/// content; `None` when `mkfs.ext4` is missing.
/// Writes `dir/disk.raw`: a 26 MiB disk with Flatcar's partition labels and types, ROOT
/// and USR-A from [`trees`] (USR-A ext4 without a journal, followed by a dm-verity
/// superblock), or with `usr_content` as USR-A's bytes instead; a FAT boot sector with
/// `BOOTX64.EFI`'s directory entry on the ESP. `None` when `mkfs.ext4` is missing.
pub fn flatcar_shaped(
    dir: &Path,
    os_release: &str,
    usr_content: Option<Vec<u8>>,
) -> Option<PathBuf> {
    let (root, usr) = trees(dir, os_release);
    let root_img = dir.join("root.img");
    if !mkfs(&root, &root_img, 8, &["-L", "ROOT"]) {
        return None;
    }
    let usr_img = dir.join("usr.img");
    match usr_content {
        Some(bytes) => std::fs::write(&usr_img, bytes).unwrap(),
        None => {
            // /usr without a journal, then a verity superblock where the fs ends.
            assert!(mkfs(
                &usr,
                &usr_img,
                8,
                &["-b", "4096", "-O", "^has_journal"]
            ));
            let mut b = std::fs::read(&usr_img).unwrap();
            b.extend_from_slice(b"verity\0\0\x01\0\0\0");
            std::fs::write(&usr_img, b).unwrap();
        }
    }
    // A FAT boot sector and the loader's directory entry.
    let mut esp = vec![0u8; 64 * 1024];
    esp[82..90].copy_from_slice(b"FAT32   ");
    esp[510..512].copy_from_slice(&[0x55, 0xaa]);
    esp[32 * 1024..32 * 1024 + 11].copy_from_slice(b"BOOTX64 EFI");
    std::fs::write(dir.join("esp.img"), esp).unwrap();
    let with = |p: PartSpec, f: &str| PartSpec {
        content: Some(dir.join(f)),
        ..p
    };
    let parts = [
        with(PartSpec::new("EFI-SYSTEM", types::ESP, MIB, MIB), "esp.img"),
        with(
            PartSpec::new("USR-A", types::FLATCAR_USR, 2 * MIB, 12 * MIB),
            "usr.img",
        ),
        PartSpec::new("USR-B", types::FLATCAR_USR, 14 * MIB, MIB),
        PartSpec::new("OEM", types::LINUX_DATA, 15 * MIB, MIB),
        PartSpec::new("OEM-CONFIG", types::FLATCAR_RESERVED, 16 * MIB, MIB),
        with(
            PartSpec::new("ROOT", types::FLATCAR_RESIZE, 17 * MIB, 8 * MIB),
            "root.img",
        ),
    ];
    let disk = dir.join("disk.raw");
    gpt_disk(&disk, 512, &parts, 26 * MIB);
    Some(disk)
}
