//! A read-only qcow2 reader (versions 2 and 3): the header, the L1 and L2 tables,
//! unallocated clusters (zeros, or the backing file's), zero clusters, zlib (raw deflate)
//! compressed clusters and a backing file chain. Encrypted images, external data files,
//! zstd compression and extended L2 entries are refused.
//!
//! Layout facts (from QEMU's `docs/interop/qcow2.txt`): all numbers big-endian; the header
//! is `magic, version, backing_file_offset, backing_file_size, cluster_bits, size,
//! crypt_method, l1_size, l1_table_offset, ...` and, from version 3, feature bits at 72,
//! `header_length` at 100 and `compression_type` at 104. A guest offset splits into an L1
//! index, an L2 index (`cluster_size / 8` entries per table) and an offset in the cluster.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::container::{check_range, read_up_to, Disk, RawDisk};
use crate::error::{DiskError, Result};

/// The first four bytes of a qcow2 file.
pub(crate) const MAGIC: &[u8] = b"QFI\xfb";

/// Bits 9..=55 of an L1 or standard L2 entry: the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: the cluster is compressed.
const COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (version 3): the cluster reads as zeros.
const ZERO: u64 = 1;
/// Incompatible feature bit 0: dirty (refcounts may be stale; data is still readable).
const INCOMPAT_DIRTY: u64 = 1;
/// Incompatible feature bit 1: corrupt.
const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: an external data file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: `compression_type` is set.
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Header extension: the backing file's format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: the full disk encryption header.
const EXT_CRYPTO: u32 = 0x0537_be77;
/// Backing chains longer than this are refused (a loop, most likely).
const MAX_CHAIN: usize = 16;

/// Where a guest cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    /// Not allocated here: the backing file's, or zeros.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored at this host offset.
    Data(u64),
    /// Compressed: `len` bytes (at most) at `host`.
    Compressed { host: u64, len: u64 },
}

/// An open qcow2 image, read as its guest disk.
pub struct Qcow2 {
    file: File,
    path: PathBuf,
    file_len: u64,
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
    backing: Option<(String, Arc<dyn Disk>)>,
    l2_cache: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    l2_cache_max: usize,
    inflated: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("cluster_bits", &self.cluster_bits)
            .field("size", &self.size)
            .field("backing", &self.backing.as_ref().map(|(n, _)| n))
            .finish()
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

impl Qcow2 {
    /// Opens the qcow2 image at `path`; `depth` is its place in a backing chain (0 for the
    /// image the user named).
    pub fn open(path: &Path, depth: usize) -> Result<Qcow2> {
        let bad = |s: String| DiskError::BadQcow2(s);
        let unsupported = |s: String| DiskError::UnsupportedQcow2(s);
        let file = File::open(path).map_err(|e| DiskError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| DiskError::io(path, e))?.len();
        let mut h = [0u8; 112];
        let n = read_up_to(&file, 0, &mut h).map_err(|e| DiskError::io(path, e))?;
        if n < 72 || &h[..4] != MAGIC {
            return Err(bad("truncated header".into()));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(unsupported(format!("version {version}")));
        }
        let backing_offset = be64(&h, 8);
        let backing_size = be32(&h, 16) as usize;
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("cluster_bits {cluster_bits}")));
        }
        let cluster_size = 1u64 << cluster_bits;
        let size = be64(&h, 24);
        if be32(&h, 32) != 0 {
            return Err(unsupported("encrypted".into()));
        }
        let l1_size = be32(&h, 36) as u64;
        let l1_offset = be64(&h, 40);
        let (header_len, incompat, compression) = if version == 3 {
            if n < 104 {
                return Err(bad("truncated version 3 header".into()));
            }
            let len = be32(&h, 100) as u64;
            let compression = if len > 104 && n > 104 { h[104] } else { 0 };
            (len, be64(&h, 72), compression)
        } else {
            (72, 0, 0)
        };
        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(bad("marked corrupt".into()));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(unsupported("external data file".into()));
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(unsupported("extended L2 entries (subclusters)".into()));
        }
        if incompat & INCOMPAT_COMPRESSION != 0 && compression != 0 {
            let name = if compression == 1 { "zstd" } else { "unknown" };
            return Err(unsupported(format!(
                "{name} compression (type {compression}; only zlib)"
            )));
        }
        let unknown = incompat
            & !(INCOMPAT_DIRTY
                | INCOMPAT_CORRUPT
                | INCOMPAT_DATA_FILE
                | INCOMPAT_COMPRESSION
                | INCOMPAT_EXTL2);
        if unknown != 0 {
            return Err(unsupported(format!(
                "incompatible feature bits {unknown:#x}"
            )));
        }
        // Header extensions: between the header and the end of the first cluster.
        let mut head = vec![0u8; cluster_size.min(file_len) as usize];
        read_up_to(&file, 0, &mut head).map_err(|e| DiskError::io(path, e))?;
        let mut backing_format = None;
        let mut at = header_len as usize;
        while at + 8 <= head.len() {
            let kind = be32(&head, at);
            let len = be32(&head, at + 4) as usize;
            if kind == 0 {
                break;
            }
            let data = head
                .get(at + 8..at + 8 + len)
                .ok_or_else(|| bad("header extension past the first cluster".into()))?;
            match kind {
                EXT_BACKING_FORMAT => {
                    backing_format = Some(String::from_utf8_lossy(data).into_owned())
                }
                EXT_CRYPTO => return Err(unsupported("encrypted".into())),
                _ => {}
            }
            at += 8 + len.div_ceil(8) * 8;
        }
        // L1: enough entries for the virtual size.
        let l2_entries = cluster_size / 8;
        let needed = size.div_ceil(cluster_size).div_ceil(l2_entries);
        if l1_size < needed {
            return Err(bad(format!(
                "L1 table has {l1_size} entries, {needed} needed for {size} bytes"
            )));
        }
        if l1_size > (32 << 20) / 8 {
            return Err(bad(format!("L1 table of {l1_size} entries")));
        }
        let mut raw = vec![0u8; (l1_size * 8) as usize];
        file.read_exact_at(&mut raw, l1_offset)
            .map_err(|e| bad(format!("reading the L1 table at {l1_offset}: {e}")))?;
        let l1 = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()) & OFFSET_MASK)
            .collect();
        let backing = if backing_offset != 0 && backing_size != 0 {
            if backing_size > 4096 {
                return Err(bad(format!("backing file name of {backing_size} bytes")));
            }
            let mut name = vec![0u8; backing_size];
            file.read_exact_at(&mut name, backing_offset)
                .map_err(|e| bad(format!("reading the backing file name: {e}")))?;
            let name = String::from_utf8_lossy(&name).into_owned();
            if depth + 1 >= MAX_CHAIN {
                return Err(unsupported(format!(
                    "a backing chain longer than {MAX_CHAIN}"
                )));
            }
            let disk = open_backing(path, &name, backing_format.as_deref(), depth + 1)?;
            Some((name, disk))
        } else {
            None
        };
        let l2_cache_max = ((16u64 << 20) / cluster_size).max(4) as usize;
        Ok(Qcow2 {
            file,
            path: path.to_path_buf(),
            file_len,
            version,
            cluster_bits,
            size,
            l1,
            backing,
            l2_cache: Mutex::new(HashMap::new()),
            l2_cache_max,
            inflated: Mutex::new(Vec::new()),
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The L2 table at host offset `at`.
    fn l2_table(&self, at: u64) -> Result<Arc<Vec<u64>>> {
        if let Some(t) = self.l2_cache.lock().unwrap().get(&at) {
            return Ok(t.clone());
        }
        if !at.is_multiple_of(self.cluster_size()) {
            return Err(DiskError::BadQcow2(format!(
                "L2 table at unaligned offset {at}"
            )));
        }
        let mut raw = vec![0u8; self.cluster_size() as usize];
        self.file
            .read_exact_at(&mut raw, at)
            .map_err(|e| DiskError::BadQcow2(format!("reading the L2 table at {at}: {e}")))?;
        let t: Arc<Vec<u64>> = Arc::new(
            raw.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
                .collect(),
        );
        let mut cache = self.l2_cache.lock().unwrap();
        if cache.len() >= self.l2_cache_max {
            cache.clear();
        }
        cache.insert(at, t.clone());
        Ok(t)
    }

    /// Where guest cluster `index` is.
    fn lookup(&self, index: u64) -> Result<Cluster> {
        let per_table = self.cluster_size() / 8;
        let Some(&l2_at) = self.l1.get((index / per_table) as usize) else {
            return Ok(Cluster::Unallocated);
        };
        if l2_at == 0 {
            return Ok(Cluster::Unallocated);
        }
        let entry = self.l2_table(l2_at)?[(index % per_table) as usize];
        if entry & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let host = entry & ((1u64 << x) - 1);
            let sectors = (entry >> x) & ((1u64 << (self.cluster_bits - 8)) - 1);
            let len = (sectors + 1) * 512 - (host & 511);
            return Ok(Cluster::Compressed { host, len });
        }
        let host = entry & OFFSET_MASK;
        if self.version >= 3 && entry & ZERO != 0 {
            return Ok(Cluster::Zero);
        }
        if host == 0 {
            return Ok(Cluster::Unallocated);
        }
        if !host.is_multiple_of(self.cluster_size()) {
            return Err(DiskError::BadQcow2(format!(
                "data cluster at unaligned offset {host}"
            )));
        }
        Ok(Cluster::Data(host))
    }

    /// Guest cluster `index`, stored compressed at `host`, inflated.
    fn inflate(&self, index: u64, host: u64, len: u64) -> Result<Arc<Vec<u8>>> {
        if let Some((_, c)) = self
            .inflated
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| *i == index)
        {
            return Ok(c.clone());
        }
        // The last compressed cluster's sector count may reach past the end of the file.
        let len = len.min(self.file_len.saturating_sub(host));
        let mut input = vec![0u8; len as usize];
        self.file.read_exact_at(&mut input, host).map_err(|e| {
            DiskError::BadQcow2(format!("reading a compressed cluster at {host}: {e}"))
        })?;
        let mut out = vec![0u8; self.cluster_size() as usize];
        let mut z = flate2::Decompress::new(false);
        let status = z.decompress(&input, &mut out, flate2::FlushDecompress::Finish);
        if status.is_err() || z.total_out() != self.cluster_size() {
            return Err(DiskError::BadQcow2(format!(
                "compressed cluster at {host} does not inflate to {} bytes",
                self.cluster_size()
            )));
        }
        let out = Arc::new(out);
        let mut cache = self.inflated.lock().unwrap();
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((index, out.clone()));
        Ok(out)
    }

    /// Fills `buf` from the backing file at `offset` (zeros past its end), or with zeros.
    fn read_backing(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some((_, b)) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let within = b.size().saturating_sub(offset).min(buf.len() as u64) as usize;
        b.read_at(offset, &mut buf[..within])?;
        buf[within..].fill(0);
        Ok(())
    }
}

/// Opens a backing file named `name` in the header of `image` (relative to its directory).
fn open_backing(
    image: &Path,
    name: &str,
    format: Option<&str>,
    depth: usize,
) -> Result<Arc<dyn Disk>> {
    let p = Path::new(name);
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new(".")).join(p)
    };
    let file = File::open(&path).map_err(|e| DiskError::io(&path, e))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&file, 0, &mut magic).map_err(|e| DiskError::io(&path, e))?;
    let is_qcow2 = match format {
        Some("qcow2") => true,
        Some("raw") => false,
        Some(other) => {
            return Err(DiskError::UnsupportedQcow2(format!(
                "backing file {name} of format {other}"
            )))
        }
        None => n == 4 && magic == MAGIC,
    };
    Ok(if is_qcow2 {
        Arc::new(Qcow2::open(&path, depth)?)
    } else {
        Arc::new(RawDisk::open(&path)?)
    })
}

impl Disk for Qcow2 {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let cs = self.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at >> self.cluster_bits;
            let within = at & (cs - 1);
            let n = ((cs - within) as usize).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match self.lookup(index)? {
                Cluster::Unallocated => self.read_backing(at, dst)?,
                Cluster::Zero => dst.fill(0),
                Cluster::Data(host) => {
                    self.file
                        .read_exact_at(dst, host + within)
                        .map_err(|e| DiskError::io(&self.path, e))?;
                }
                Cluster::Compressed { host, len } => {
                    let c = self.inflate(index, host, len)?;
                    dst.copy_from_slice(&c[within as usize..within as usize + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        match &self.backing {
            None => format!("qcow2 v{}", self.version),
            Some((name, b)) => format!(
                "qcow2 v{} (backing file {name}: {})",
                self.version,
                b.describe()
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fixtures::{qcow2_image, Qcow2Spec};

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn reads_data_zero_unallocated_and_compressed_clusters() {
        let d = tempfile::tempdir().unwrap();
        for version in [2, 3] {
            // Cluster 0 plain, 1 compressed, 2 unallocated, 3 a zero cluster (v3), 4 plain.
            let cs = 4096usize;
            let mut guest = pattern(cs * 6, 7);
            guest[2 * cs..3 * cs].fill(0);
            guest[3 * cs..4 * cs].fill(0);
            guest[5 * cs..].fill(0);
            let spec = Qcow2Spec {
                version,
                cluster_bits: 12,
                size: (cs * 6) as u64,
                clusters: vec![
                    (0, guest[..cs].to_vec(), false),
                    (1, guest[cs..2 * cs].to_vec(), true),
                    (4, guest[4 * cs..5 * cs].to_vec(), false),
                ],
                zero_clusters: if version == 3 { vec![3] } else { vec![] },
                backing: None,
            };
            let p = d.path().join(format!("v{version}.qcow2"));
            qcow2_image(&p, &spec);
            let q = Qcow2::open(&p, 0).unwrap();
            assert_eq!(q.size(), (cs * 6) as u64);
            assert_eq!(q.describe(), format!("qcow2 v{version}"));
            let mut all = vec![0xffu8; cs * 6];
            q.read_at(0, &mut all).unwrap();
            assert!(all == guest, "v{version}: whole disk");
            // A read across the plain/compressed boundary.
            let mut b = vec![0u8; 100];
            q.read_at(cs as u64 - 50, &mut b).unwrap();
            assert_eq!(b, guest[cs - 50..cs + 50]);
            assert!(q.read_at((cs * 6) as u64 - 10, &mut b).is_err());
        }
    }

    #[test]
    fn unallocated_clusters_come_from_the_backing_file() {
        let d = tempfile::tempdir().unwrap();
        let cs = 512usize;
        let base = pattern(cs * 3, 1);
        std::fs::write(d.path().join("base.raw"), &base).unwrap();
        let top = pattern(cs, 99);
        let spec = Qcow2Spec {
            version: 3,
            cluster_bits: 9,
            size: (cs * 4) as u64,
            clusters: vec![(1, top.clone(), true)],
            zero_clusters: vec![2],
            backing: Some("base.raw".into()),
        };
        let p = d.path().join("top.qcow2");
        qcow2_image(&p, &spec);
        let q = Qcow2::open(&p, 0).unwrap();
        assert_eq!(
            q.describe(),
            "qcow2 v3 (backing file base.raw: raw)".to_string()
        );
        let mut all = vec![0xffu8; cs * 4];
        q.read_at(0, &mut all).unwrap();
        assert_eq!(all[..cs], base[..cs]);
        assert_eq!(all[cs..2 * cs], top[..]);
        assert!(
            all[2 * cs..].iter().all(|&b| b == 0),
            "zero + past the base"
        );
        // A qcow2 on top of that one.
        let spec2 = Qcow2Spec {
            version: 2,
            cluster_bits: 9,
            size: (cs * 4) as u64,
            clusters: vec![],
            zero_clusters: vec![],
            backing: Some(p.display().to_string()),
        };
        let p2 = d.path().join("top2.qcow2");
        qcow2_image(&p2, &spec2);
        let q2 = Qcow2::open(&p2, 0).unwrap();
        let mut again = vec![0u8; cs * 4];
        q2.read_at(0, &mut again).unwrap();
        assert_eq!(again, all);
        std::fs::remove_file(d.path().join("base.raw")).unwrap();
        let e = Qcow2::open(&p, 0).unwrap_err().to_string();
        assert!(e.contains("base.raw: No such file"), "{e}");
    }

    #[test]
    fn unsupported_features_are_refused_in_one_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.qcow2");
        let spec = Qcow2Spec {
            version: 3,
            cluster_bits: 9,
            size: 4096,
            clusters: vec![],
            zero_clusters: vec![],
            backing: None,
        };
        let patch = |at: usize, bytes: &[u8]| {
            qcow2_image(&p, &spec);
            let mut f = std::fs::read(&p).unwrap();
            f[at..at + bytes.len()].copy_from_slice(bytes);
            std::fs::write(&p, f).unwrap();
            Qcow2::open(&p, 0).err().map(|e| e.to_string())
        };
        assert_eq!(
            patch(32, &1u32.to_be_bytes()).unwrap(),
            "unsupported qcow2 image: encrypted"
        );
        assert_eq!(
            patch(72, &4u64.to_be_bytes()).unwrap(),
            "unsupported qcow2 image: external data file"
        );
        assert_eq!(
            patch(72, &16u64.to_be_bytes()).unwrap(),
            "unsupported qcow2 image: extended L2 entries (subclusters)"
        );
        let mut zstd = 8u64.to_be_bytes().to_vec();
        zstd.extend_from_slice(&[0; 20]);
        zstd.extend_from_slice(&112u32.to_be_bytes());
        zstd.push(1);
        assert_eq!(
            patch(72, &zstd).unwrap(),
            "unsupported qcow2 image: zstd compression (type 1; only zlib)"
        );
        assert_eq!(
            patch(4, &4u32.to_be_bytes()).unwrap(),
            "unsupported qcow2 image: version 4"
        );
        // Dirty images are read.
        assert_eq!(patch(72, &1u64.to_be_bytes()), None);
    }

    /// `qemu-img convert -O qcow2 [-c]` of a raw file reads back the same bytes.
    #[test]
    fn reads_what_qemu_img_writes() {
        let Some(qemu_img) = crate::fixtures::tool("qemu-img") else {
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        // 3 MiB: a patterned MiB, a zero MiB (a hole), a compressible MiB.
        let mut bytes = pattern(1 << 20, 3);
        bytes.extend(vec![0u8; 1 << 20]);
        bytes.extend(std::iter::repeat_n(b"bogie ".as_slice(), 174763).flatten());
        bytes.truncate(3 << 20);
        std::fs::write(&raw, &bytes).unwrap();
        for compressed in [false, true] {
            let out = d.path().join(format!("disk-{compressed}.qcow2"));
            let mut c = std::process::Command::new(&qemu_img);
            c.args(["convert", "-q", "-O", "qcow2"]);
            if compressed {
                c.arg("-c");
            }
            assert!(c.arg(&raw).arg(&out).status().unwrap().success());
            let q = Qcow2::open(&out, 0).unwrap();
            let mut back = vec![0xffu8; bytes.len()];
            q.read_at(0, &mut back).unwrap();
            assert!(back == bytes, "compressed={compressed}");
        }
    }
}
