//! Rows of credentials: enrollment secrets and tokens (see `crate::auth` for their form).
//!
//! Checking a token is a read on the read pool and writes nothing, so a refused request leaves
//! the database as it was. Enrollment checks the secret again inside its write transaction, so
//! a secret revoked a moment before cannot enroll.

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::{Store, StoreError, from_ms, to_ms};
use crate::auth::{Credential, Hashed, Kind, Role};

/// An enrollment secret as `enroll-secret list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollSecretRecord {
    pub id: String,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    /// How many agents enrolled with it.
    pub uses: i64,
}

/// Whom a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHolder {
    Admin(Role),
    Agent(String),
}

/// A token as `token list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub holder: TokenHolder,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The holder of a valid admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPrincipal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    AlreadyRevoked,
    Unknown,
}

/// Why an enrollment secret was refused. The agent is told only that it was refused; the
/// reason goes to the collector's log for the admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRefusal {
    Unknown,
    Revoked,
    Expired,
}

impl SecretRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretRefusal::Unknown => "unknown",
            SecretRefusal::Revoked => "revoked",
            SecretRefusal::Expired => "expired",
        }
    }
}

/// What enrollment produced.
#[derive(Debug)]
pub enum Enrollment {
    Enrolled {
        token: Credential,
        secret_id: String,
        /// Ids of the agent's tokens that were valid before and stay valid: an agent that lost
        /// its state dir, or someone else enrolling with its id. The handler warns.
        earlier_tokens: Vec<String>,
    },
    Refused(SecretRefusal),
}

impl Store {
    pub async fn create_enroll_secret(
        &self,
        name: String,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(EnrollSecretRecord, Credential), StoreError> {
        let secret = new_credential(Kind::EnrollSecret)?;
        let record = EnrollSecretRecord {
            id: secret.id.clone(),
            name,
            created_at: now,
            expires_at,
            revoked_at: None,
            uses: 0,
        };
        let row = record.clone();
        let hash = secret.hashed();
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO enroll_secret (id, name, hash, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    row.id,
                    row.name,
                    &hash.0[..],
                    to_ms(row.created_at),
                    row.expires_at.map(to_ms)
                ])?;
                Ok(())
            })
            .await?;
        Ok((record, secret))
    }

    pub async fn list_enroll_secrets(&self) -> Result<Vec<EnrollSecretRecord>, StoreError> {
        self.reads
            .run(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, name, created_at, expires_at, revoked_at, uses
                     FROM enroll_secret ORDER BY created_at, id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(EnrollSecretRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: from_ms(r.get(2)?),
                        expires_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                        revoked_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
                        uses: r.get(5)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    pub async fn revoke_enroll_secret(
        &self,
        id: String,
        now: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        self.writer
            .run(move |conn| revoke(conn, "enroll_secret", &id, now))
            .await
    }

    pub async fn create_admin_token(
        &self,
        name: String,
        role: Role,
        now: OffsetDateTime,
    ) -> Result<(TokenRecord, Credential), StoreError> {
        let token = new_credential(Kind::AdminToken)?;
        let record = TokenRecord {
            id: token.id.clone(),
            holder: TokenHolder::Admin(role),
            name,
            created_at: now,
            revoked_at: None,
        };
        let row = record.clone();
        let hash = token.hashed();
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO token (id, kind, role, name, hash, created_at)
                     VALUES (?1, 'admin', ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    row.id,
                    role.as_str(),
                    row.name,
                    &hash.0[..],
                    to_ms(now)
                ])?;
                Ok(())
            })
            .await?;
        Ok((record, token))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.reads
            .run(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, kind, role, agent_id, name, created_at, revoked_at
                     FROM token ORDER BY created_at, id",
                )?;
                let rows = stmt.query_map([], |r| {
                    let kind: String = r.get(1)?;
                    let role: Option<String> = r.get(2)?;
                    let agent: Option<String> = r.get(3)?;
                    Ok((
                        kind,
                        role,
                        agent,
                        TokenRecord {
                            id: r.get(0)?,
                            holder: TokenHolder::Agent(String::new()),
                            name: r.get(4)?,
                            created_at: from_ms(r.get(5)?),
                            revoked_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
                        },
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (kind, role, agent, mut record) = row?;
                    record.holder = match (kind.as_str(), role, agent) {
                        ("admin", Some(role), None) => TokenHolder::Admin(
                            Role::parse(&role)
                                .ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
                        ),
                        ("agent", None, Some(agent)) => TokenHolder::Agent(agent),
                        (kind, ..) => {
                            return Err(StoreError::Corrupt(format!(
                                "token {} of kind {kind:?}",
                                record.id
                            )));
                        }
                    };
                    out.push(record);
                }
                Ok(out)
            })
            .await
    }

    /// Revokes an admin or agent token.
    pub async fn revoke_token(
        &self,
        id: String,
        now: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        self.writer
            .run(move |conn| revoke(conn, "token", &id, now))
            .await
    }

    /// The holder of `token` if it is a valid (known, unrevoked) admin token.
    pub async fn verify_admin_token(
        &self,
        token: Credential,
    ) -> Result<Option<AdminPrincipal>, StoreError> {
        self.reads
            .run(move |conn| {
                let Some(row) = valid_token(conn, &token, "admin")? else {
                    return Ok(None);
                };
                let role =
                    row.role.as_deref().and_then(Role::parse).ok_or_else(|| {
                        StoreError::Corrupt(format!("role of token {}", token.id))
                    })?;
                Ok(Some(AdminPrincipal {
                    token_id: token.id.clone(),
                    name: row.name,
                    role,
                }))
            })
            .await
    }

    /// The agent id `token` is bound to, if it is a valid agent token.
    pub async fn verify_agent_token(
        &self,
        token: Credential,
    ) -> Result<Option<String>, StoreError> {
        self.reads
            .run(move |conn| Ok(valid_token(conn, &token, "agent")?.and_then(|row| row.agent_id)))
            .await
    }

    /// Whether `secret` would enroll now; a read, so a flood of wrong secrets never reaches the
    /// writer. [`Store::enroll`] checks again in its transaction.
    pub async fn check_enroll_secret(
        &self,
        secret: Credential,
        now: OffsetDateTime,
    ) -> Result<Result<(), SecretRefusal>, StoreError> {
        self.reads
            .run(move |conn| secret_state(conn, &secret, now))
            .await
    }

    /// Trades a valid enrollment secret for a new token bound to `agent_id`. Earlier tokens of
    /// the same agent stay valid (an agent that lost its state dir re-enrolls); `token revoke`
    /// ends them.
    pub async fn enroll(
        &self,
        secret: Credential,
        agent_id: String,
        hostname: String,
        now: OffsetDateTime,
    ) -> Result<Enrollment, StoreError> {
        let token = new_credential(Kind::AgentToken)?;
        self.writer
            .run(move |conn| {
                if let Err(refusal) = secret_state(conn, &secret, now)? {
                    return Ok(Enrollment::Refused(refusal));
                }
                let earlier_tokens = conn
                    .prepare_cached(
                        "SELECT id FROM token
                         WHERE agent_id = ?1 AND kind = 'agent' AND revoked_at IS NULL
                         ORDER BY id",
                    )?
                    .query_map([&agent_id], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                conn.prepare_cached(
                    "INSERT INTO token (id, kind, agent_id, name, hash, created_at, enroll_secret_id)
                     VALUES (?1, 'agent', ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    token.id,
                    agent_id,
                    hostname,
                    &token.hashed().0[..],
                    to_ms(now),
                    secret.id
                ])?;
                conn.prepare_cached("UPDATE enroll_secret SET uses = uses + 1 WHERE id = ?1")?
                    .execute([&secret.id])?;
                Ok(Enrollment::Enrolled {
                    token,
                    secret_id: secret.id.clone(),
                    earlier_tokens,
                })
            })
            .await
    }
}

fn new_credential(kind: Kind) -> Result<Credential, StoreError> {
    Credential::generate(kind).map_err(|e| StoreError::Random(e.to_string()))
}

struct TokenRow {
    role: Option<String>,
    agent_id: Option<String>,
    name: String,
}

/// The row of `token` if its id exists with `kind`, is not revoked and its hash matches. The
/// hash is compared in constant time, against a dummy when there is no row.
fn valid_token(
    conn: &Connection,
    token: &Credential,
    kind: &str,
) -> Result<Option<TokenRow>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT hash, role, agent_id, name, revoked_at FROM token WHERE id = ?1 AND kind = ?2",
        )?
        .query_row(params![token.id, kind], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                TokenRow {
                    role: r.get(1)?,
                    agent_id: r.get(2)?,
                    name: r.get(3)?,
                },
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    let stored = row
        .as_ref()
        .and_then(|(hash, ..)| Hashed::from_slice(hash))
        .unwrap_or(Hashed::DUMMY);
    let matches = stored.matches(token);
    Ok(row.and_then(|(_, row, revoked)| (matches && revoked.is_none()).then_some(row)))
}

fn secret_state(
    conn: &Connection,
    secret: &Credential,
    now: OffsetDateTime,
) -> Result<Result<(), SecretRefusal>, StoreError> {
    let row = conn
        .prepare_cached("SELECT hash, expires_at, revoked_at FROM enroll_secret WHERE id = ?1")?
        .query_row([&secret.id], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()?;
    let stored = row
        .as_ref()
        .and_then(|(hash, ..)| Hashed::from_slice(hash))
        .unwrap_or(Hashed::DUMMY);
    let matches = stored.matches(secret);
    Ok(match row {
        None => Err(SecretRefusal::Unknown),
        Some(_) if !matches => Err(SecretRefusal::Unknown),
        Some((_, _, Some(_))) => Err(SecretRefusal::Revoked),
        Some((_, Some(expires), None)) if to_ms(now) >= expires => Err(SecretRefusal::Expired),
        Some(_) => Ok(()),
    })
}

fn revoke(
    conn: &Connection,
    table: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<Revocation, StoreError> {
    // `table` is one of two constants above, never input.
    let revoked: Option<Option<i64>> = conn
        .prepare_cached(&format!("SELECT revoked_at FROM {table} WHERE id = ?1"))?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(match revoked {
        None => Revocation::Unknown,
        Some(Some(_)) => Revocation::AlreadyRevoked,
        Some(None) => {
            conn.prepare_cached(&format!("UPDATE {table} SET revoked_at = ?2 WHERE id = ?1"))?
                .execute(params![id, to_ms(now)])?;
            Revocation::Revoked
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;
    use time::macros::datetime;

    const AGENT: &str = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    #[tokio::test]
    async fn an_admin_token_verifies_until_revoked() {
        let (store, _dir) = temp_store();
        let (record, token) = store
            .create_admin_token("ops".into(), Role::Operator, NOW)
            .await
            .unwrap();
        assert_eq!(record.holder, TokenHolder::Admin(Role::Operator));
        let principal = store
            .verify_admin_token(token.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (principal.role, principal.name.as_str()),
            (Role::Operator, "ops")
        );
        // Not an agent token, whatever its hash.
        assert_eq!(store.verify_agent_token(token.clone()).await.unwrap(), None);
        // The hash, never the text, is stored.
        let stored: Vec<u8> = rusqlite::Connection::open(store.path())
            .unwrap()
            .query_row("SELECT hash FROM token", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, token.hashed().0);
        assert!(
            !String::from_utf8_lossy(&std::fs::read(store.path()).unwrap())
                .contains(&token.reveal())
        );

        assert_eq!(
            store.revoke_token(record.id.clone(), NOW).await.unwrap(),
            Revocation::Revoked
        );
        assert_eq!(store.verify_admin_token(token).await.unwrap(), None);
        assert_eq!(
            store.revoke_token(record.id.clone(), NOW).await.unwrap(),
            Revocation::AlreadyRevoked
        );
        assert_eq!(
            store
                .revoke_token("000000000000".into(), NOW)
                .await
                .unwrap(),
            Revocation::Unknown
        );
        let listed = store.list_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revoked_at, Some(NOW));
    }

    #[tokio::test]
    async fn a_secret_enrolls_agents_until_it_expires_or_is_revoked() {
        let (store, _dir) = temp_store();
        let expires = NOW + time::Duration::days(1);
        let (record, secret) = store
            .create_enroll_secret("laptops".into(), Some(expires), NOW)
            .await
            .unwrap();
        let Enrollment::Enrolled {
            token,
            secret_id,
            earlier_tokens,
        } = store
            .enroll(secret.clone(), AGENT.into(), "pc-1".into(), NOW)
            .await
            .unwrap()
        else {
            panic!("refused")
        };
        assert_eq!(secret_id, record.id);
        assert!(earlier_tokens.is_empty());
        assert_eq!(
            store
                .verify_agent_token(token.clone())
                .await
                .unwrap()
                .as_deref(),
            Some(AGENT)
        );
        assert_eq!(store.verify_admin_token(token).await.unwrap(), None);
        assert_eq!(store.list_enroll_secrets().await.unwrap()[0].uses, 1);

        assert_eq!(
            store
                .check_enroll_secret(secret.clone(), expires)
                .await
                .unwrap(),
            Err(SecretRefusal::Expired)
        );
        let wrong = Credential::parse(
            Kind::EnrollSecret,
            &format!("ces_{}_{}", secret.id, "0".repeat(64)),
        )
        .unwrap();
        assert_eq!(
            store.check_enroll_secret(wrong, NOW).await.unwrap(),
            Err(SecretRefusal::Unknown)
        );
        store.revoke_enroll_secret(record.id, NOW).await.unwrap();
        assert!(matches!(
            store
                .enroll(secret, AGENT.into(), "pc-1".into(), NOW)
                .await
                .unwrap(),
            Enrollment::Refused(SecretRefusal::Revoked)
        ));
        // A refused enrollment wrote nothing.
        assert_eq!(store.list_tokens().await.unwrap().len(), 1);
        assert_eq!(store.list_enroll_secrets().await.unwrap()[0].uses, 1);
    }
}
