//! Signing keys as cosign makes them: its encrypted private key (`cosign generate-key-pair`:
//! PKCS#8 inside NaCl secretbox, the key from scrypt over the password in `COSIGN_PASSWORD`), a
//! plain PEM PKCS#8 (or SEC1) ECDSA P-256 key as openssl makes it, and SPKI public keys.

use std::path::Path;

use base64::Engine;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Signer, signature::Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};

use crate::error::{Error, IoContext, Result};

/// A private key ready to sign.
pub struct Key {
    key: SigningKey,
    /// Where it came from, for messages.
    pub source: String,
}

/// A public key to verify with.
pub struct PublicKey {
    key: VerifyingKey,
    pub source: String,
}

fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut label = None;
    let mut body = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(l) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            label = Some(l.to_string());
            body.clear();
        } else if let Some(l) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label.as_deref() == Some(l)
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&body)
            {
                out.push((l.to_string(), der));
            }
            label = None;
        } else if label.is_some() {
            body.push_str(line);
        }
    }
    out
}

impl Key {
    /// Read a private key file; `password` decrypts a cosign key (`COSIGN_PASSWORD`).
    pub fn load(path: &Path, password: Option<&str>) -> Result<Key> {
        let text = std::fs::read_to_string(path).ctx("read signing key", path)?;
        let source = path.display().to_string();
        let bad = |why: String| Error::Input(format!("signing key {source}: {why}"));
        let Some((label, der)) = pem_blocks(&text).into_iter().next() else {
            return Err(bad("no PEM block in it; give a cosign key (cosign generate-key-pair) or a PEM PKCS#8 ECDSA P-256 key".into()));
        };
        let key = match label.as_str() {
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let password = password.ok_or_else(|| {
                    bad("it is encrypted: set COSIGN_PASSWORD to its password".into())
                })?;
                let pkcs8 = decrypt_cosign(&der, password).map_err(bad)?;
                SigningKey::from_pkcs8_der(&pkcs8)
                    .map_err(|e| bad(format!("not an ECDSA P-256 key: {e}")))?
            }
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der)
                .map_err(|e| bad(format!("not an ECDSA P-256 PKCS#8 key: {e}")))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(SigningKey::from)
                .map_err(|e| bad(format!("not an ECDSA P-256 key: {e}")))?,
            other => {
                return Err(bad(format!(
                    "a {other:?} PEM block is not a private key imgbuild can sign with (ECDSA P-256)"
                )));
            }
        };
        Ok(Key { key, source })
    }

    /// The ASN.1 DER ECDSA signature of `message` (SHA-256), as cosign stores it.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    pub(crate) fn public(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
            source: self.source.clone(),
        }
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path).ctx("read public key", path)?;
        let source = path.display().to_string();
        let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| {
            Error::Input(format!(
                "public key {source}: not a PEM ECDSA P-256 public key ({e}); give cosign.pub or `openssl ec -pubout` output"
            ))
        })?;
        Ok(PublicKey { key, source })
    }

    /// Whether `signature` (DER, or the raw 64-byte form) signs `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let sig = Signature::from_der(signature).or_else(|_| Signature::from_slice(signature));
        sig.is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }

    /// Sigstore's key hint: the base64 SHA-256 of the public key's DER.
    pub(crate) fn hint(&self) -> String {
        use sha2::Digest as _;
        let der = self
            .key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(der))
    }

    #[cfg(test)]
    pub(crate) fn pem(&self) -> String {
        self.key
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }
}

/// cosign's encrypted key: JSON with the scrypt parameters and salt, the secretbox nonce and
/// the ciphertext of a PKCS#8 DER key.
fn decrypt_cosign(json: &[u8], password: &str) -> std::result::Result<Vec<u8>, String> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    #[derive(serde::Deserialize)]
    struct Kdf {
        name: String,
        params: Params,
        salt: String,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "N")]
        n: u64,
        r: u32,
        p: u32,
    }
    #[derive(serde::Deserialize)]
    struct Cipher {
        name: String,
        nonce: String,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        kdf: Kdf,
        cipher: Cipher,
        ciphertext: String,
    }
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("malformed encrypted key: {e}"))
    };
    let env: Envelope =
        serde_json::from_slice(json).map_err(|e| format!("malformed encrypted key: {e}"))?;
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "encrypted with {}/{}, which imgbuild does not know (scrypt/nacl/secretbox)",
            env.kdf.name, env.cipher.name
        ));
    }
    if !env.kdf.params.n.is_power_of_two() || env.kdf.params.n < 2 {
        return Err("malformed scrypt parameters".into());
    }
    let log_n = env.kdf.params.n.trailing_zeros() as u8;
    let params = scrypt::Params::new(log_n, env.kdf.params.r, env.kdf.params.p, 32)
        .map_err(|e| format!("malformed scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password.as_bytes(), &b64(&env.kdf.salt)?, &params, &mut key)
        .map_err(|e| format!("scrypt: {e}"))?;
    let nonce = b64(&env.cipher.nonce)?;
    if nonce.len() != 24 {
        return Err("malformed secretbox nonce".into());
    }
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(nonce.as_slice().into(), b64(&env.ciphertext)?.as_slice())
        .map_err(|_| "wrong password (COSIGN_PASSWORD), or a damaged key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem =
            p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&sk, p256::pkcs8::LineEnding::LF).unwrap();
        std::fs::write(dir.path().join("k.pem"), pem.as_bytes()).unwrap();
        let key = Key::load(&dir.path().join("k.pem"), None).unwrap();
        let sig = key.sign(b"payload");
        assert!(key.public().verifies(b"payload", &sig));
        assert!(!key.public().verifies(b"other", &sig));
        std::fs::write(dir.path().join("k.pub"), key.public().pem()).unwrap();
        let public = PublicKey::load(&dir.path().join("k.pub")).unwrap();
        assert!(public.verifies(b"payload", &sig));
        std::fs::write(dir.path().join("junk"), "hello").unwrap();
        assert!(Key::load(&dir.path().join("junk"), None).is_err());
    }
}
