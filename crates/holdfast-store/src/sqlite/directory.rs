//! The directory's SQL. Names arrive validated and normalised.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sqlite_error;
use crate::directory::{Domain, User};
use crate::error::{Entity, StoreError};

fn user_key(username: &str, domain: &str) -> String {
    format!("{username}@{domain}")
}

fn domain_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM domains WHERE name = ?1")
        .and_then(|mut stmt| stmt.exists([name]))
        .map_err(sqlite_error)
}

pub(super) fn add_domain(conn: &Connection, name: String) -> Result<Domain, StoreError> {
    let added = conn
        .prepare_cached("INSERT INTO domains (name) VALUES (?1) ON CONFLICT DO NOTHING")
        .and_then(|mut stmt| stmt.execute([&name]))
        .map_err(sqlite_error)?;
    if added == 0 {
        return Err(StoreError::AlreadyExists {
            entity: Entity::Domain,
            key: name,
        });
    }
    Ok(Domain { name })
}

pub(super) fn list_domains(conn: &Connection) -> Result<Vec<Domain>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT name FROM domains ORDER BY name")
        .map_err(sqlite_error)?;
    let rows = stmt
        .query_map([], |row| Ok(Domain { name: row.get(0)? }))
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

pub(super) fn delete_domain(
    conn: &Connection,
    name: &str,
    cascade: bool,
) -> Result<(), StoreError> {
    if !domain_exists(conn, name)? {
        return Err(StoreError::NotFound {
            entity: Entity::Domain,
            key: name.to_owned(),
        });
    }
    let users: i64 = conn
        .prepare_cached("SELECT count(*) FROM users WHERE domain = ?1")
        .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)))
        .map_err(sqlite_error)?;
    if users > 0 && !cascade {
        return Err(StoreError::Conflict {
            entity: Entity::Domain,
            key: name.to_owned(),
            dependents: u64::try_from(users).unwrap_or(u64::MAX),
        });
    }
    conn.prepare_cached("DELETE FROM users WHERE domain = ?1")
        .and_then(|mut stmt| stmt.execute([name]))
        .map_err(sqlite_error)?;
    conn.prepare_cached("DELETE FROM domains WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute([name]))
        .map_err(sqlite_error)?;
    Ok(())
}

pub(super) fn add_user(conn: &Connection, mut user: User) -> Result<User, StoreError> {
    if !domain_exists(conn, &user.domain)? {
        return Err(StoreError::NotFound {
            entity: Entity::Domain,
            key: user.domain,
        });
    }
    let created_at: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO users (domain, username, ha1_md5, ha1_sha256, created_at)
             VALUES (?1, ?2, ?3, ?4, unixepoch())
             ON CONFLICT DO NOTHING
             RETURNING created_at",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![user.domain, user.username, user.ha1_md5, user.ha1_sha256],
                |row| row.get(0),
            )
            .optional()
        })
        .map_err(sqlite_error)?;
    let Some(created_at) = created_at else {
        return Err(StoreError::AlreadyExists {
            entity: Entity::User,
            key: user_key(&user.username, &user.domain),
        });
    };
    user.created_at = created_at;
    Ok(user)
}

pub(super) fn set_password(conn: &Connection, user: &User) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE users SET ha1_md5 = ?3, ha1_sha256 = ?4
             WHERE domain = ?1 AND username = ?2",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                user.domain,
                user.username,
                user.ha1_md5,
                user.ha1_sha256
            ])
        })
        .map_err(sqlite_error)?;
    if changed == 0 {
        return Err(StoreError::NotFound {
            entity: Entity::User,
            key: user_key(&user.username, &user.domain),
        });
    }
    Ok(())
}

pub(super) fn delete_user(
    conn: &Connection,
    username: &str,
    domain: &str,
) -> Result<(), StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM users WHERE domain = ?1 AND username = ?2")
        .and_then(|mut stmt| stmt.execute([domain, username]))
        .map_err(sqlite_error)?;
    if deleted == 0 {
        return Err(StoreError::NotFound {
            entity: Entity::User,
            key: user_key(username, domain),
        });
    }
    Ok(())
}

const USER_COLUMNS: &str = "username, domain, ha1_md5, ha1_sha256, created_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        username: row.get(0)?,
        domain: row.get(1)?,
        ha1_md5: row.get(2)?,
        ha1_sha256: row.get(3)?,
        created_at: row.get(4)?,
    })
}

pub(super) fn list_users(conn: &Connection, domain: Option<&str>) -> Result<Vec<User>, StoreError> {
    if let Some(domain) = domain {
        if !domain_exists(conn, domain)? {
            return Err(StoreError::NotFound {
                entity: Entity::Domain,
                key: domain.to_owned(),
            });
        }
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE ?1 IS NULL OR domain = ?1
             ORDER BY domain, username"
        ))
        .map_err(sqlite_error)?;
    let rows = stmt
        .query_map([domain], user_from_row)
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

pub(super) fn credentials(
    conn: &Connection,
    username: &str,
    domain: &str,
) -> Result<Option<User>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE domain = ?1 AND username = ?2"
    ))
    .and_then(|mut stmt| stmt.query_row([domain, username], user_from_row).optional())
    .map_err(sqlite_error)
}
