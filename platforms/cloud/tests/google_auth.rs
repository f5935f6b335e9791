//! Service-account tokens: bogie signs the JWT assertion (RS256) and exchanges it at the
//! key's token endpoint (here a local one that checks the signature and the claims).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use bogie_platform_cloud::auth::{GoogleToken, TokenSource, GOOGLE_SCOPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn service_account_keys_sign_and_exchange_assertions() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output();
    if !made.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: needs openssl to make an RSA key");
        return;
    }
    let pubder = Command::new("openssl")
        .args(["rsa", "-in"])
        .arg(&key)
        .args(["-RSAPublicKey_out", "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, uri) = (hits.clone(), token_uri.clone());
    tokio::spawn(async move {
        loop {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 16384];
            let mut n = 0;
            // Read until the whole form body is in.
            loop {
                let k = c.read(&mut buf[n..]).await.unwrap();
                n += k;
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len || k == 0 {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = text.split_once("\r\n\r\n").unwrap().1;
            let jwt = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("assertion="))
                .unwrap()
                .to_string();
            assert!(
                body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
                "{body}"
            );
            let parts: Vec<&str> = jwt.split('.').collect();
            let header: serde_json::Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
            let claims: serde_json::Value = serde_json::from_slice(&b64url(parts[1])).unwrap();
            assert_eq!(header["alg"], "RS256");
            assert_eq!(header["kid"], "key-1");
            assert_eq!(claims["iss"], "bogie@proj.iam.gserviceaccount.com");
            assert_eq!(claims["aud"], uri);
            assert_eq!(claims["scope"], GOOGLE_SCOPE);
            let pk = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &pubder,
            );
            pk.verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &b64url(parts[2]),
            )
            .expect("the assertion's signature verifies");
            h.fetch_add(1, Ordering::SeqCst);
            let answer =
                r#"{"access_token":"ya29.local-token","expires_in":3600,"token_type":"Bearer"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            c.write_all(resp.as_bytes()).await.unwrap();
            let _ = c.shutdown().await;
        }
    });
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "key-1",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "client_email": "bogie@proj.iam.gserviceaccount.com",
        "token_uri": token_uri,
    });
    let file = d.path().join("sa.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let t = GoogleToken::from_key_file(&file).unwrap();
    assert!(!format!("{t:?}").contains("PRIVATE KEY"));
    assert_eq!(t.token().await.unwrap().expose(), "ya29.local-token");
    assert_eq!(t.token().await.unwrap().expose(), "ya29.local-token");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the token is cached");
}
