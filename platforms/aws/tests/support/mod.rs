//! Test support: a moto EC2/S3 emulator on a loopback port, and the real `bogie` binary.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    ArchitectureValues, InstanceStateName, ResourceType, Tag, TagSpecification,
};
use bogie_platform_common::tags::{TAG_BASENAME, TAG_CREATED, TAG_RUN};

/// The workspace's root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>` of the running test binary, and the profile's name.
pub fn profile_dir() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    (dir, name)
}

/// The moto release the tests run against (the same pin as `ci/install-deps`).
pub const MOTO: &str = "moto[server]==5.2.5";

/// Where `moto[server]` lives: `$BOGIE_MOTO_VENV`, else `~/.cache/bogie/moto-venv` (the
/// venv `ci/install-deps` creates).
pub fn moto_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("BOGIE_MOTO_VENV") {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| workspace().join("target"));
    cache.join("bogie/moto-venv")
}

/// Installs `moto[server]` into [`moto_venv`] unless it is there already (under a file
/// lock, so parallel test binaries share one install); returns the `moto_server` path.
pub fn moto_server() -> PathBuf {
    let venv = moto_venv();
    let parent = venv.parent().expect("venv has a parent").to_path_buf();
    std::fs::create_dir_all(&parent).unwrap();
    let server = venv.join("bin/moto_server");
    let lock = std::fs::File::create(parent.join("moto-venv.lock")).unwrap();
    lock.lock().unwrap();
    if !server.is_file() {
        eprintln!("installing moto[server] into {} (PyPI)", venv.display());
        let ok = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "python3 -m venv failed (Debian: apt-get install python3-venv)"
        );
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", MOTO])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "pip install {MOTO} failed");
    }
    lock.unlock().unwrap();
    server
}

/// A moto server on 127.0.0.1; killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its log.
    pub log: PathBuf,
    /// Where it records requests (after [`Moto::record`]).
    pub recording: PathBuf,
}

impl Moto {
    /// Starts one (installing moto first if needed) and waits until it answers.
    pub fn start() -> Moto {
        let server = moto_server();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = workspace().join(format!("target/moto-{port}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let recording = workspace().join(format!("target/moto-{port}.recording"));
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("starting moto_server");
        let mut m = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            recording,
        };
        let start = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /moto-api/ HTTP/1.0\r\n\r\n");
                break;
            }
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!(
                    "moto_server exited ({st}): {}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        m
    }
}

impl Moto {
    fn post(&self, path: &str) {
        let port = self.url.rsplit(':').next().unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        write!(s, "POST {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = String::new();
        use std::io::Read;
        let _ = s.read_to_string(&mut out);
    }

    /// Starts recording every request (moto's recorder).
    pub fn record(&self) {
        self.post("/moto-api/recorder/start-recording");
    }

    /// The EC2 Query-API requests recorded for `action`, as decoded form parameters.
    pub fn ec2_requests(&self, action: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        use base64::Engine;
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                let body = v.get("body")?.as_str()?.to_string();
                if v.get("body_encoded").and_then(|b| b.as_bool()) == Some(true) {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .ok()?;
                    String::from_utf8(raw).ok()
                } else {
                    Some(body)
                }
            })
            .map(|body| form_decode(&body))
            .filter(|p| p.get("Action").map(String::as_str) == Some(action))
            .collect()
    }
}

/// Decodes `application/x-www-form-urlencoded`.
pub fn form_decode(s: &str) -> std::collections::BTreeMap<String, String> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let h = std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match h {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (dec(k), dec(v))
        })
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.recording);
    }
}

/// Test credentials (moto accepts any).
pub fn credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("testing", "testing", None, None, "moto")
}

/// An EC2 client for moto in us-east-1.
pub async fn client(moto: &Moto) -> aws_sdk_ec2::Client {
    bogie_platform_aws::client(&options(moto)).await
}

/// Client options for moto.
pub fn options(moto: &Moto) -> bogie_platform_aws::ClientOptions {
    bogie_platform_aws::ClientOptions {
        region: Some("us-east-1".into()),
        profile: None,
        credentials_file: None,
        endpoint_url: Some(moto.url.clone()),
        credentials: Some(credentials()),
    }
}

/// One of moto's bundled AMIs of an architecture.
pub async fn ami(client: &aws_sdk_ec2::Client, arch: ArchitectureValues) -> String {
    let out = client.describe_images().send().await.unwrap();
    out.images()
        .iter()
        .filter(|i| i.architecture() == Some(&arch))
        .find_map(|i| i.image_id().map(str::to_string))
        .expect("moto bundles an AMI of this arch")
}

/// The `bogie` binary: `$BOGIE_BIN` if set, else built into this test's target dir and
/// profile (`target/release/bogie` under `cargo test --release`); returns its path.
pub fn bogie_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("BOGIE_BIN") {
        return PathBuf::from(bin);
    }
    let (dir, profile) = profile_dir();
    let target = dir.parent().unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "bogie", "--bin", "bogie"])
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", &target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let st = cmd.status().expect("running cargo build -p bogie");
    assert!(st.success(), "cargo build -p bogie failed");
    let bin = dir.join("bogie");
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

/// Plants tagged resources (instance, key pair, security group) created `age_h` hours ago.
pub async fn plant(
    c: &aws_sdk_ec2::Client,
    ami: &str,
    basename: &str,
    age_h: i64,
    name: &str,
) -> (String, String, String) {
    let created = (chrono::Utc::now() - chrono::Duration::hours(age_h))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tags = [
        (TAG_RUN, name),
        (TAG_BASENAME, basename),
        (TAG_CREATED, created.as_str()),
    ];
    plant_with(c, ami, name, &tags).await
}

/// Plants an instance, key pair and security group that carry none of bogie's tags.
pub async fn plant_untagged(
    c: &aws_sdk_ec2::Client,
    ami: &str,
    name: &str,
) -> (String, String, String) {
    plant_with(c, ami, name, &[("owner", "someone-else")]).await
}

async fn plant_with(
    c: &aws_sdk_ec2::Client,
    ami: &str,
    name: &str,
    tags: &[(&str, &str)],
) -> (String, String, String) {
    let spec = |rt: ResourceType| {
        let mut b = TagSpecification::builder().resource_type(rt);
        for (k, v) in tags {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    };
    let key = bogie_harness::ssh::SshKey::generate();
    c.import_key_pair()
        .key_name(name)
        .public_key_material(aws_sdk_ec2::primitives::Blob::new(
            key.public_openssh().as_bytes(),
        ))
        .tag_specifications(spec(ResourceType::KeyPair))
        .send()
        .await
        .unwrap();
    let g = c
        .create_security_group()
        .group_name(name)
        .description("planted")
        .tag_specifications(spec(ResourceType::SecurityGroup))
        .send()
        .await
        .unwrap();
    let gid = g.group_id().unwrap().to_string();
    let i = c
        .run_instances()
        .image_id(ami)
        .min_count(1)
        .max_count(1)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .key_name(name)
        .security_group_ids(&gid)
        .tag_specifications(spec(ResourceType::Instance))
        .send()
        .await
        .unwrap();
    (
        i.instances()[0].instance_id().unwrap().to_string(),
        name.to_string(),
        gid,
    )
}

/// Whether an instance is still alive, a key pair and a group exist.
pub async fn exists(
    c: &aws_sdk_ec2::Client,
    planted: &(String, String, String),
) -> (bool, bool, bool) {
    let i = c
        .describe_instances()
        .instance_ids(&planted.0)
        .send()
        .await
        .unwrap();
    let alive = i
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .any(|x| x.state().and_then(|s| s.name()) != Some(&InstanceStateName::Terminated));
    let k = c
        .describe_key_pairs()
        .key_names(&planted.1)
        .send()
        .await
        .is_ok();
    let g = c
        .describe_security_groups()
        .group_ids(&planted.2)
        .send()
        .await
        .is_ok();
    (alive, k, g)
}
