//! Basic auth against the file's bcrypt hashes, as the exporter toolkit checks it: an unknown
//! user costs the same bcrypt as a known one, so the time of a refusal tells nothing about which
//! of the two was wrong; and each outcome is cached, so that a scrape every few seconds does not
//! pay bcrypt (70 ms at cost 10) every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use sha2::{Digest, Sha256};

/// More distinct credentials than a few scrapers and operators ever send; past it the cache
/// starts over rather than grow for whoever sends many.
const CACHE_MAX: usize = 1024;

#[derive(Default)]
pub struct Checker {
    /// SHA-256 of user, hash and password (never the password itself) -> bcrypt's verdict.
    cache: Mutex<HashMap<[u8; 32], bool>>,
    /// bcrypt runs so far: what the tests read to see that a refusal cost what a pass does.
    verifications: AtomicU64,
}

/// User and password of an `Authorization: Basic` header.
pub fn credentials(header: &str) -> Option<(String, String)> {
    let (scheme, b64) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Checker {
    /// Whether `user` and `password` match `users` (sorted name, bcrypt hash). Runs bcrypt on
    /// the blocking pool when the answer is not cached.
    pub async fn check(&self, users: &[(String, String)], user: &str, password: &str) -> bool {
        let Some((_, first_hash)) = users.first() else {
            return false;
        };
        let known = users.iter().find(|(u, _)| u == user);
        // An unknown user is checked against a real hash of the file, so that it costs what a
        // known one does; the verdict is then false whatever bcrypt says.
        let hash = known.map_or(first_hash, |(_, h)| h).clone();
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let cached = self.lock().get(&key).copied();
        let matches = match cached {
            Some(m) => m,
            None => {
                let password = password.to_owned();
                self.verifications.fetch_add(1, Ordering::Relaxed);
                let m = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                let mut cache = self.lock();
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, m);
                m
            }
        };
        matches && known.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], bool>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<(String, String)> {
        vec![
            ("alice".into(), bcrypt::hash("wonderland", 4).unwrap()),
            ("bob".into(), bcrypt::hash("builder", 4).unwrap()),
        ]
    }

    #[tokio::test]
    async fn the_right_pair_passes_and_every_wrong_one_is_refused() {
        let c = Checker::default();
        let u = users();
        assert!(c.check(&u, "alice", "wonderland").await);
        assert!(c.check(&u, "bob", "builder").await);
        assert!(!c.check(&u, "alice", "builder").await);
        assert!(!c.check(&u, "carol", "wonderland").await);
        // The unknown user checked against alice's hash with alice's password: still refused.
        assert!(!c.check(&u, "mallory", "wonderland").await);
        assert!(!c.check(&u, "alice", "").await);
        assert!(!c.check(&[], "alice", "wonderland").await);
        // Cached verdicts are the same verdicts.
        assert!(c.check(&u, "alice", "wonderland").await);
        assert!(!c.check(&u, "mallory", "wonderland").await);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_one_bcrypt_as_a_wrong_password_does() {
        let c = Checker::default();
        let u = users();
        let runs = |c: &Checker| c.verifications.load(Ordering::Relaxed);
        assert!(!c.check(&u, "alice", "nope").await);
        assert_eq!(runs(&c), 1);
        assert!(!c.check(&u, "nobody", "nope").await);
        assert_eq!(runs(&c), 2);
        assert!(c.check(&u, "bob", "builder").await);
        assert_eq!(runs(&c), 3);
        // The second time, from the cache: no bcrypt for a scrape.
        assert!(c.check(&u, "bob", "builder").await);
        assert_eq!(runs(&c), 3);
    }

    #[tokio::test]
    async fn the_cache_holds_no_password_and_stays_bounded() {
        let c = Checker::default();
        let u = users();
        for i in 0..(CACHE_MAX + 10) {
            // Cached outcomes only; bcrypt at cost 4 keeps this quick.
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.lock().insert(k, false);
        }
        assert!(c.check(&u, "alice", "wonderland").await);
        assert!(c.lock().len() <= CACHE_MAX);
    }

    #[test]
    fn the_header_is_read_as_basic_auth_sends_it() {
        assert_eq!(
            credentials("Basic YWxpY2U6d29uZGVy OmxhbmQ="),
            None,
            "a space inside the base64"
        );
        assert_eq!(
            credentials("Basic YWxpY2U6d29uZGVyOmxhbmQ="),
            Some(("alice".into(), "wonder:land".into()))
        );
        assert_eq!(credentials("Bearer abc"), None);
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(credentials("Basic bm9jb2xvbg=="), None, "no colon");
    }
}
