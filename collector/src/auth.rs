//! Credentials: enrollment secrets, agent tokens and admin tokens. Pure logic (generation,
//! parsing, hashing, comparison, roles); the rows live in `store::auth`, the HTTP checks in
//! `api::auth`.
//!
//! # Promises
//!
//! - A credential is `<prefix>_<id>_<secret>`: `ces_` an enrollment secret, `cag_` an agent
//!   token, `cat_` an admin token. `id` (12 hex digits) is public: it names the credential in
//!   `list` and `revoke` and finds its row. `secret` is 32 random bytes from the operating
//!   system, as 64 hex digits.
//! - Only the SHA-256 of the secret part is stored. The secret is shown once, at creation. A
//!   SHA-256 is enough: the secret has 256 bits of entropy, so there is nothing to brute-force
//!   that a slow hash would protect.
//! - Hashes are compared in constant time ([`Hashed::matches`]); a credential whose id is
//!   unknown is compared against a dummy hash, so the answer takes the same work either way.
//! - Credentials never reach a log: [`Credential`]'s `Debug` shows only the id.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a credential is for; the prefix of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EnrollSecret,
    AgentToken,
    AdminToken,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::EnrollSecret => "ces",
            Kind::AgentToken => "cag",
            Kind::AdminToken => "cat",
        }
    }

    /// How the kind is named in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::EnrollSecret => "enrollment secret",
            Kind::AgentToken => "agent token",
            Kind::AdminToken => "admin token",
        }
    }
}

const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A credential's text, parsed. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub kind: Kind,
    pub id: String,
    secret: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential({}_{}_<redacted>)",
            self.kind.prefix(),
            self.id
        )
    }
}

impl Credential {
    /// A new random credential of `kind`.
    pub fn generate(kind: Kind) -> Result<Credential, getrandom::Error> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut id)?;
        getrandom::fill(&mut secret)?;
        Ok(Credential {
            kind,
            id: hex(&id),
            secret: hex(&secret),
        })
    }

    /// Parses the text of a credential of `kind`; `None` when it is not one (wrong prefix,
    /// length or characters). Says nothing about whether it is valid.
    pub fn parse(kind: Kind, text: &str) -> Option<Credential> {
        let rest = text.strip_prefix(kind.prefix())?.strip_prefix('_')?;
        let (id, secret) = rest.split_once('_')?;
        let is_hex = |s: &str, bytes: usize| {
            s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !is_hex(id, ID_BYTES) || !is_hex(secret, SECRET_BYTES) {
            return None;
        }
        Some(Credential {
            kind,
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The whole text, to show once to whoever created it.
    pub fn reveal(&self) -> String {
        format!("{}_{}_{}", self.kind.prefix(), self.id, self.secret)
    }

    /// The hash that is stored.
    pub fn hashed(&self) -> Hashed {
        Hashed(Sha256::digest(self.secret.as_bytes()).into())
    }
}

/// The SHA-256 of a credential's secret part.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hashed(pub [u8; 32]);

impl fmt::Debug for Hashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hashed(..)")
    }
}

impl Hashed {
    /// Builds from stored bytes; `None` when they are not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Hashed> {
        bytes.try_into().ok().map(Hashed)
    }

    /// Constant-time equality with `credential`'s hash.
    pub fn matches(&self, credential: &Credential) -> bool {
        self.0.ct_eq(&credential.hashed().0).into()
    }

    /// Compared against when a credential's id is unknown, so that a miss costs the same as a
    /// wrong secret.
    pub const DUMMY: Hashed = Hashed([0xa5; 32]);
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// An admin token's role. Each role may do what the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything under `/api/v1`.
    Viewer,
    /// Also works incidents.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::parse(text)
            .ok_or_else(|| format!("unknown role {text:?}: use viewer, operator or admin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_credential_parses_back_and_matches_only_its_own_hash() {
        let token = Credential::generate(Kind::AdminToken).unwrap();
        let text = token.reveal();
        assert!(text.starts_with("cat_"), "{text}");
        assert_eq!(text.len(), 4 + 12 + 1 + 64);
        let parsed = Credential::parse(Kind::AdminToken, &text).unwrap();
        assert_eq!(parsed, token);
        let stored = token.hashed();
        assert!(stored.matches(&parsed));

        let other = Credential::generate(Kind::AdminToken).unwrap();
        assert_ne!(other.id, token.id);
        assert!(!stored.matches(&other));
        assert!(!Hashed::DUMMY.matches(&token));
        // Same id, one secret digit changed.
        let mut tampered = text.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(!stored.matches(&Credential::parse(Kind::AdminToken, &tampered).unwrap()));
    }

    #[test]
    fn text_of_another_kind_or_shape_does_not_parse() {
        let agent = Credential::generate(Kind::AgentToken).unwrap().reveal();
        assert!(Credential::parse(Kind::AdminToken, &agent).is_none());
        assert!(Credential::parse(Kind::AgentToken, &agent).is_some());
        for bad in [
            "",
            "cat_",
            "cat_abc_def",
            "cat_ABCDEF012345_0000000000000000000000000000000000000000000000000000000000000000",
            "cat_abcdef012345_000000000000000000000000000000000000000000000000000000000000000",
            "cat_abcdef012345_0000000000000000000000000000000000000000000000000000000000000000x",
            "' OR 1=1 --",
        ] {
            assert!(Credential::parse(Kind::AdminToken, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Credential::generate(Kind::EnrollSecret).unwrap();
        let text = token.reveal();
        let secret = text.rsplit('_').next().unwrap();
        let shown = format!("{token:?} {:?}", token.hashed());
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(&token.id), "{shown}");
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("viewer"));
    }
}
