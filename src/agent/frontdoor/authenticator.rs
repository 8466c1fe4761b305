//! Checks a user name and password against the bcrypt hashes of the
//! node's catalog, in the cluster's terms (the hash the password was set
//! with on whichever node it was set, not the random local stand-in a user
//! created from the cluster has in this node's `meta.db`).
//!
//! bcrypt is slow on purpose (~50–100 ms at InfluxDB's cost 10), so verdicts
//! are cached, keyed by the user name and a keyed digest of the password
//! (HMAC-SHA256 under a random per-process key: the cache holds nothing a
//! password could be recovered from without that key). An entry also holds
//! the hash it was checked against and counts only while the user's hash is
//! still that one: a password change anywhere in the cluster, or a dropped
//! and re-created user, makes it stale at the moment the new catalog is
//! seen here. Failed checks are cached the same way, so repeating a wrong
//! password costs no bcrypt either. Concurrent bcrypt runs are bounded by the
//! CPU count; a burst of requests with the same new credentials costs at
//! most that many runs, the rest find the cache filled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use tokio::sync::{watch, Semaphore};

use crate::agent::frontdoor::credentials::Secret;
use crate::influx::catalog::Catalog;

/// Entries kept before the cache is emptied and starts over.
const CACHE_CAPACITY: usize = 10_000;
/// How long a request waits for the node's first catalog read.
const FIRST_CATALOG_WAIT: Duration = Duration::from_secs(2);

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password matches the user's hash.
    Valid,
    /// The user exists and the password does not match.
    Invalid,
    /// The catalog has no such user (or no catalog has been read yet).
    UnknownUser,
}

/// A verdict and whether it came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub verdict: Verdict,
    pub cached: bool,
}

struct Entry {
    hash: Arc<str>,
    valid: bool,
}

/// Checks passwords against a catalog that can change at any time.
pub struct Authenticator {
    catalog: watch::Receiver<Option<Arc<Catalog>>>,
    key: [u8; 32],
    cache: Mutex<HashMap<(String, [u8; 32]), Entry>>,
    bcrypt_slots: Semaphore,
    /// Set once a request has waited for the first catalog: later ones
    /// do not wait again (influxd's `meta.db` may stay unreadable a while).
    waited: AtomicBool,
}

impl Authenticator {
    /// Checks against whatever `catalog` holds at the time of each check.
    pub fn new(catalog: watch::Receiver<Option<Arc<Catalog>>>) -> Self {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator {
            catalog,
            key: rand::random(),
            cache: Mutex::new(HashMap::new()),
            bcrypt_slots: Semaphore::new(slots),
            waited: AtomicBool::new(false),
        }
    }

    /// The user's current hash; waits (briefly) for the first catalog.
    async fn current_hash(&self, username: &str) -> Option<Arc<str>> {
        if self.catalog.borrow().is_none() && !self.waited.load(Ordering::Relaxed) {
            let mut rx = self.catalog.clone();
            let _ = tokio::time::timeout(FIRST_CATALOG_WAIT, rx.wait_for(|c| c.is_some())).await;
            self.waited.store(true, Ordering::Relaxed);
        }
        let catalog = self.catalog.borrow();
        let user = catalog.as_ref()?.users.get(username)?;
        Some(Arc::from(user.hash.as_str()))
    }

    fn digest(&self, username: &str, password: &Secret) -> [u8; 32] {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&(username.len() as u64).to_be_bytes());
        mac.update(username.as_bytes());
        mac.update(password.expose());
        mac.finalize().into_bytes().into()
    }

    fn cached(&self, key: &(String, [u8; 32]), hash: &str) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).filter(|e| &*e.hash == hash).map(|e| e.valid)
    }

    /// Whether `password` is `username`'s.
    #[tracing::instrument(level = "debug", skip(self, password))]
    pub async fn check(&self, username: &str, password: &Secret) -> Checked {
        let Some(hash) = self.current_hash(username).await else {
            return Checked {
                verdict: Verdict::UnknownUser,
                cached: false,
            };
        };
        let key = (username.to_owned(), self.digest(username, password));
        let verdict = |valid: bool| {
            if valid {
                Verdict::Valid
            } else {
                Verdict::Invalid
            }
        };
        if let Some(valid) = self.cached(&key, &hash) {
            return Checked {
                verdict: verdict(valid),
                cached: true,
            };
        }
        // The semaphore is never closed: a slot is always granted.
        let _slot = self.bcrypt_slots.acquire().await;
        // Another request may have done the work while this one waited.
        if let Some(valid) = self.cached(&key, &hash) {
            return Checked {
                verdict: verdict(valid),
                cached: true,
            };
        }
        let valid = {
            let hash = hash.clone();
            let password = password.clone();
            tokio::task::spawn_blocking(move || {
                // A hash bcrypt cannot read (empty, another scheme) matches nothing.
                bcrypt::verify(password.expose(), &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false)
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, Entry { hash, valid });
        Checked {
            verdict: verdict(valid),
            cached: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::User;

    fn catalog(users: &[(&str, &str)]) -> Option<Arc<Catalog>> {
        let mut c = Catalog::default();
        for (name, hash) in users {
            c.users.insert(
                (*name).into(),
                User {
                    name: (*name).into(),
                    hash: (*hash).into(),
                    ..User::default()
                },
            );
        }
        Some(Arc::new(c))
    }

    #[tokio::test]
    async fn verdicts_are_cached_only_while_the_hash_stands() {
        let old = bcrypt::hash("old", 4).unwrap();
        let new = bcrypt::hash("new", 4).unwrap();
        let (tx, rx) = watch::channel(catalog(&[("bob", &old)]));
        let auth = Authenticator::new(rx);
        let check = |p: &'static str| {
            let auth = &auth;
            async move { auth.check("bob", &Secret::new(p)).await }
        };
        assert_eq!(
            check("old").await,
            Checked {
                verdict: Verdict::Valid,
                cached: false
            }
        );
        assert_eq!(
            check("old").await,
            Checked {
                verdict: Verdict::Valid,
                cached: true
            }
        );
        assert_eq!(check("new").await.verdict, Verdict::Invalid);
        assert!(check("new").await.cached);
        // The password changes somewhere in the cluster.
        tx.send_replace(catalog(&[("bob", &new)]));
        assert_eq!(
            check("old").await,
            Checked {
                verdict: Verdict::Invalid,
                cached: false
            }
        );
        assert_eq!(check("new").await.verdict, Verdict::Valid);
        // The user is dropped: nobody to check against.
        tx.send_replace(catalog(&[]));
        assert_eq!(check("new").await.verdict, Verdict::UnknownUser);
        // Re-created with the old password: the old cached "invalid" is stale.
        tx.send_replace(catalog(&[("bob", &old)]));
        assert_eq!(check("old").await.verdict, Verdict::Valid);
    }

    #[tokio::test]
    async fn unreadable_hashes_match_nothing_and_users_are_distinct() {
        let h = bcrypt::hash("pw", 4).unwrap();
        let (_tx, rx) = watch::channel(catalog(&[("a", &h), ("b", ""), ("c", "$1$x")]));
        let auth = Authenticator::new(rx);
        assert_eq!(
            auth.check("a", &Secret::new("pw")).await.verdict,
            Verdict::Valid
        );
        assert_eq!(
            auth.check("b", &Secret::new("pw")).await.verdict,
            Verdict::Invalid
        );
        assert_eq!(
            auth.check("c", &Secret::new("pw")).await.verdict,
            Verdict::Invalid
        );
    }

    #[tokio::test]
    async fn a_check_waits_for_the_first_catalog() {
        let h = bcrypt::hash("pw", 4).unwrap();
        let (tx, rx) = watch::channel(None);
        let auth = Authenticator::new(rx);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_replace(catalog(&[("a", &h)]));
            tx
        });
        assert_eq!(
            auth.check("a", &Secret::new("pw")).await.verdict,
            Verdict::Valid
        );
        drop(late.await);
    }

    #[test]
    fn influxd_hashes_verify() {
        // What influxd 1.6.7 stored for `CREATE USER admin WITH PASSWORD 'pw'`.
        let go = "$2a$10$Mb28hTsYCF1XM3aTMTPJH.fMrETz1hTVSNTqyv4xh38OXEsLTk21W";
        assert!(bcrypt::verify("pw", go).unwrap());
        assert!(!bcrypt::verify("pW", go).unwrap());
    }
}
