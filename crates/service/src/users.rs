//! People, not a shared secret. Accounts live in a file (`users.toml`):
//! a name, a role, and the SHA-256 of a random token with a salt of its
//! own. The token is shown once, when `delineate user add` makes it; the
//! file holds nothing that opens the API. Every request acts as the person
//! whose token it carries, so a review decision or an export names who made
//! it, not what they typed.
//!
//! Why salted SHA-256 and not a password hash (argon2, scrypt): the tokens
//! are 256 random bits, not passwords a person chose; nothing can guess
//! them, so a slow hash buys nothing. The salt keeps two accounts with the
//! same token (which cannot happen by chance) from sharing a hash.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Jobs, results, metrics and the review page, read only.
    Viewer,
    /// A viewer who may decide on lesions and export reviewed contours.
    Reviewer,
    /// A viewer who may upload studies (automation, hospital IT).
    Operator,
}

impl Role {
    pub fn may_review(self) -> bool {
        self == Role::Reviewer
    }
    pub fn may_upload(self) -> bool {
        self == Role::Operator
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "reviewer" => Ok(Role::Reviewer),
            "operator" => Ok(Role::Operator),
            _ => Err(format!("role {s:?}: viewer, reviewer or operator")),
        }
    }
}

/// One account in the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Hex salt and SHA-256(salt ‖ token).
    pub salt: String,
    pub hash: String,
    pub created: String,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<User>,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

fn hash(salt: &[u8], token: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(token.as_bytes());
    crate::queue::hex(&h.finalize())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.len() % 2 == 0)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect()
        })
        .flatten()
}

/// The accounts, as loaded.
#[derive(Clone, Debug, Default)]
pub struct Users {
    pub path: PathBuf,
    pub list: Vec<User>,
}

impl Users {
    /// Reads the accounts file (a missing file is an empty list).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let list = match std::fs::read_to_string(path) {
            Ok(t) => {
                toml::from_str::<UsersFile>(&t)
                    .map_err(|e| Error::config(path, e.to_string()))?
                    .users
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, "read", e)),
        };
        for u in &list {
            if unhex(&u.salt).is_none() || unhex(&u.hash).is_none_or(|h| h.len() != 32) {
                return Err(Error::config(
                    path,
                    format!("user {:?}: salt and hash must be hex", u.name),
                ));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            list,
        })
    }

    fn save(&self) -> Result<(), Error> {
        let text = toml::to_string(&UsersFile {
            users: self.list.clone(),
        })
        .map_err(|e| Error::Other(e.to_string()))?;
        let text = format!(
            "# delineate accounts: `delineate user add|list|revoke`. Tokens are not stored, only salted hashes.\n{text}"
        );
        // The temporary file the durable write renames into place is
        // created 0600, so the accounts file is private from its first byte.
        crate::durable::write(&self.path, text.as_bytes())
    }

    /// Adds an account; returns its token (shown once, never stored). When
    /// the file cannot be written the account is not added (the file is as
    /// it was); when it was written but its folder could not be synced, the
    /// account exists, so its token is still returned (with a warning in
    /// the log), never lost.
    pub fn add(&mut self, name: &str, role: Role) -> Result<String, Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Other(
                "a user name has 1 to 64 printable characters".into(),
            ));
        }
        if self.list.iter().any(|u| u.name == name && !u.revoked) {
            return Err(Error::Other(format!(
                "user {name:?} exists (revoke it first)"
            )));
        }
        let mut token = [0u8; 32];
        let mut salt = [0u8; 16];
        getrandom::fill(&mut token)
            .and_then(|_| getrandom::fill(&mut salt))
            .map_err(|e| Error::Other(format!("no randomness from the OS: {e}")))?;
        let token = crate::queue::hex(&token);
        self.list.push(User {
            name: name.to_string(),
            role,
            salt: crate::queue::hex(&salt),
            hash: hash(&salt, &token),
            created: crate::audit::rfc3339_now(),
            revoked: false,
        });
        match self.save() {
            Ok(()) => Ok(token),
            Err(e @ Error::NotSynced { .. }) => {
                tracing::warn!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                );
                Ok(token)
            }
            Err(e) => {
                self.list.pop();
                Err(e)
            }
        }
    }

    /// Revokes every active account named `name`.
    pub fn revoke(&mut self, name: &str) -> Result<(), Error> {
        let mut n = 0;
        for u in self
            .list
            .iter_mut()
            .filter(|u| u.name == name && !u.revoked)
        {
            u.revoked = true;
            n += 1;
        }
        if n == 0 {
            return Err(Error::Other(format!("no active user {name:?}")));
        }
        self.save()
    }

    /// The account whose token this is (every account is checked, in
    /// constant time per account, so timing says nothing about which).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let mut found = None;
        for u in &self.list {
            let Some(salt) = unhex(&u.salt) else { continue };
            let ok = crate::http::same(hash(&salt, token).as_bytes(), u.hash.as_bytes());
            if ok && !u.revoked && found.is_none() {
                found = Some(Principal {
                    name: u.name.clone(),
                    role: u.role,
                });
            }
        }
        found
    }
}

/// How requests are authenticated: accounts, and optionally one shared
/// token for automation (an operator named `shared-token`: it may upload,
/// never review). The accounts file is read again when it changes, so
/// `delineate user add|revoke` take effect without a restart.
#[derive(Debug, Default)]
pub struct Auth {
    pub shared: Option<String>,
    /// The accounts file and the modification time last read.
    file: Option<(PathBuf, std::sync::Mutex<Option<std::time::SystemTime>>)>,
    cache: std::sync::RwLock<Option<Users>>,
}

/// The name the shared token acts as.
pub const SHARED_NAME: &str = "shared-token";

impl Auth {
    /// Accounts from `users_file` (when given) and the shared token.
    pub fn new(shared: Option<String>, users_file: Option<PathBuf>) -> Result<Self, Error> {
        let (users, file) = match users_file {
            Some(p) => {
                let u = Users::load(&p)?;
                let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (Some(u), Some((p, std::sync::Mutex::new(m))))
            }
            None => (None, None),
        };
        Ok(Self {
            shared,
            cache: std::sync::RwLock::new(users),
            file,
        })
    }

    /// One fixed token (`delineate review`: the local user reviews).
    pub fn single(token: String, name: &str) -> Self {
        let mut salt = [0u8; 16];
        let _ = getrandom::fill(&mut salt);
        let users = Users {
            path: PathBuf::new(),
            list: vec![User {
                name: name.to_string(),
                role: Role::Reviewer,
                salt: crate::queue::hex(&salt),
                hash: hash(&salt, &token),
                created: crate::audit::rfc3339_now(),
                revoked: false,
            }],
        };
        Self {
            shared: None,
            cache: std::sync::RwLock::new(Some(users)),
            file: None,
        }
    }

    /// The accounts now (read again if the file changed since).
    fn current(&self) -> Option<Users> {
        if let Some((path, seen)) = &self.file {
            let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if now != *seen {
                match Users::load(path) {
                    Ok(u) => {
                        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(u);
                        *seen = now;
                    }
                    Err(e) => tracing::error!("{e} (keeping the accounts read before)"),
                }
            }
        }
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Who the bearer token of a request is.
    pub fn who(&self, headers: &axum::http::HeaderMap) -> Option<Principal> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?
            .trim();
        if let Some(u) = self.current().and_then(|u| u.authenticate(token)) {
            return Some(u);
        }
        let shared = self.shared.as_deref()?;
        crate::http::same(token.as_bytes(), shared.as_bytes()).then(|| Principal {
            name: SHARED_NAME.into(),
            role: Role::Operator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_their_account_only_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut u = Users::load(&path).unwrap();
        let a = u.add("Dr A", Role::Reviewer).unwrap();
        let b = u.add("ops", Role::Operator).unwrap();
        assert_ne!(a, b);
        assert!(u.add("Dr A", Role::Viewer).is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&a) && !text.contains(&b), "tokens stored");
        let u = Users::load(&path).unwrap();
        assert_eq!(
            u.authenticate(&a),
            Some(Principal {
                name: "Dr A".into(),
                role: Role::Reviewer
            })
        );
        assert_eq!(u.authenticate(&b).unwrap().role, Role::Operator);
        assert_eq!(u.authenticate("0".repeat(64).as_str()), None);
        let mut u = u;
        u.revoke("Dr A").unwrap();
        let u = Users::load(&path).unwrap();
        assert_eq!(u.authenticate(&a), None);
        assert!(u.authenticate(&b).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
