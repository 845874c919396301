//! Argon2id password hashes in the standard PHC form, computed in working
//! memory that is kept and reused instead of allocated for every hash.
//!
//! Each hash needs 19 MiB. Freed after each, such a block raises glibc's
//! threshold for serving allocations from fresh mappings to its size, so
//! from then on every allocation below 19 MiB comes from the per-thread
//! heaps, which keep what is freed: under a load of sign-ins the server
//! grew to 3.5 GiB resident where 200 MiB sufficed. Kept, the blocks are
//! allocated once per hash that can run at once (see `hashing_permits`).

use std::sync::Mutex;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Working memory of finished hashes, for the next ones.
static SPARE_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `hash` with working memory of `blocks` blocks, reused.
fn with_memory<R>(blocks: usize, hash: impl FnOnce(&mut [Block]) -> R) -> R {
    let spare = SPARE_MEMORY.lock().map(|mut spare| spare.pop()).unwrap_or_default();
    let mut memory = match spare {
        Some(memory) if memory.len() == blocks => memory,
        _ => vec![Block::default(); blocks],
    };
    let result = hash(&mut memory);
    if let Ok(mut spare) = SPARE_MEMORY.lock() {
        spare.push(memory);
    }
    result
}

/// A new hash of `password` with a random salt and the default (OWASP)
/// parameters, as `argon2`'s `PasswordHasher` would write it.
pub fn hash(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes)?;
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, raw_salt, &mut out, memory)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `phc`, an argon2 hash in PHC form (any of
/// its variants and parameters); `false` for anything unreadable.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else { return false };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let hashed = with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, raw_salt, &mut out, memory)
    });
    // Output compares in constant time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_read_both_ways_with_the_standard_implementation() {
        let ours = hash(b"correct horse").expect("hash");
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());

        let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
        let theirs = Argon2::default().hash_password(b"correct horse", &salt).expect("hash");
        assert!(verify(&theirs.to_string(), b"correct horse"));
        assert!(!verify(&theirs.to_string(), b"wrong horse"));
        assert!(verify(&ours, b"correct horse") && !verify(&ours, b"correct horse "));
        assert!(!verify("not a hash", b"correct horse"));
        assert_eq!(SPARE_MEMORY.lock().map(|spare| spare.len() <= 2).ok(), Some(true));
    }
}
