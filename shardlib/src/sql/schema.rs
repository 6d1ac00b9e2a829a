//! The `keyspace_id` column convention.
//!
//! Every managed table carries a `BIGINT NOT NULL` column (named by
//! [`Table::keyspace_id_column`], `keyspace_id` by default) holding
//! [`KeyspaceId::to_sql`](crate::KeyspaceId::to_sql) of the row's key — the
//! id with its top bit flipped, so that every range of keyspace ids is one
//! range of the signed column — and an index on
//! `(keyspace_id, <primary key>)`, so that a move copies an index range in
//! keyset-paginated chunks.
//!
//! Identifiers are validated (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes,
//! optionally `schema.table`) and double-quoted (PostgreSQL, SQLite; MySQL
//! needs `ANSI_QUOTES`). Values never appear in this DDL; they are bound.

use super::SqlError;
use crate::key::KeyspaceId;
use crate::range::KeyRange;
use crate::topology::Table;

/// Validates a plain identifier and double-quotes it.
pub fn quote_ident(ident: &str) -> Result<String, SqlError> {
    let mut chars = ident.chars();
    let valid = ident.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(format!("\"{ident}\"")) } else { Err(SqlError::InvalidIdentifier(ident.to_owned())) }
}

/// Validates and quotes a table name, `table` or `schema.table`.
pub fn quote_table(name: &str) -> Result<String, SqlError> {
    let parts = name.split('.').map(quote_ident).collect::<Result<Vec<_>, _>>()?;
    if parts.len() > 2 {
        return Err(SqlError::InvalidIdentifier(name.to_owned()));
    }
    Ok(parts.join("."))
}

/// The column definition to put in a `CREATE TABLE`:
/// `"keyspace_id" BIGINT NOT NULL`.
pub fn keyspace_id_column(table: &Table) -> Result<String, SqlError> {
    Ok(format!("{} BIGINT NOT NULL", quote_ident(&table.keyspace_id_column)?))
}

/// The name of the keyspace-id index of `table`: `<table>_keyspace_id_idx`
/// (without any schema part).
pub fn keyspace_id_index_name(table: &Table) -> String {
    let base = table.name.rsplit('.').next().unwrap_or(&table.name);
    format!("{base}_{}_idx", table.keyspace_id_column)
}

/// `CREATE INDEX IF NOT EXISTS` on `(keyspace_id, <primary_key>…)`.
/// `primary_key` defaults to the table's key columns when empty.
pub fn keyspace_id_index(table: &Table, primary_key: &[&str]) -> Result<String, SqlError> {
    let mut columns = vec![quote_ident(&table.keyspace_id_column)?];
    let key: Vec<&str> = if primary_key.is_empty() {
        table.key_columns.iter().map(String::as_str).collect()
    } else {
        primary_key.to_vec()
    };
    for column in key {
        columns.push(quote_ident(column)?);
    }
    Ok(format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
        quote_ident(&keyspace_id_index_name(table))?,
        quote_table(&table.name)?,
        columns.join(", ")
    ))
}

/// `ALTER TABLE … ADD COLUMN "keyspace_id" BIGINT NOT NULL DEFAULT 0` for an
/// existing table; the default only lets the statement run on existing rows,
/// which must then be backfilled before the table is managed.
pub fn add_keyspace_id_column(table: &Table) -> Result<String, SqlError> {
    Ok(format!("ALTER TABLE {} ADD COLUMN {} DEFAULT 0", quote_table(&table.name)?, keyspace_id_column(table)?))
}

/// A one-row `INSERT` into `table` whose first parameter is the keyspace-id
/// column, followed by `columns`:
/// `INSERT INTO "users" ("keyspace_id", "id", "name") VALUES ($1, $2, $3)`.
/// Bind the `keyspace_id` value that
/// [`ShardedPool::execute_for_key`](super::ShardedPool::execute_for_key)
/// passes first, then the columns' values in order. `$n` parameters work
/// on PostgreSQL and SQLite.
pub fn insert_statement(table: &Table, columns: &[&str]) -> Result<String, SqlError> {
    let mut names = vec![quote_ident(&table.keyspace_id_column)?];
    for column in columns {
        names.push(quote_ident(column)?);
    }
    let params: Vec<String> = (1..=names.len()).map(|n| format!("${n}")).collect();
    Ok(format!("INSERT INTO {} ({}) VALUES ({})", quote_table(&table.name)?, names.join(", "), params.join(", ")))
}

/// The inclusive bounds of `range` in the stored column: rows of the range
/// are exactly `keyspace_id BETWEEN lo AND hi` (bind both).
pub fn sql_bounds(range: KeyRange) -> (i64, i64) {
    let lo = KeyspaceId(range.start()).to_sql();
    let hi = match range.end() {
        Some(end) => KeyspaceId(end - 1).to_sql(),
        None => i64::MAX,
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table { name: name.into(), key_columns: vec!["user_id".into()], keyspace_id_column: "keyspace_id".into() }
    }

    #[test]
    fn ddl_is_quoted_and_validated() {
        let users = table("app.users");
        assert_eq!(keyspace_id_column(&users).unwrap(), "\"keyspace_id\" BIGINT NOT NULL");
        assert_eq!(
            keyspace_id_index(&users, &[]).unwrap(),
            "CREATE INDEX IF NOT EXISTS \"users_keyspace_id_idx\" ON \"app\".\"users\" (\"keyspace_id\", \"user_id\")"
        );
        assert!(matches!(quote_ident("x\"; drop table y"), Err(SqlError::InvalidIdentifier(_))));
        assert!(quote_table("a.b.c").is_err());
        assert!(keyspace_id_index(&table("users"), &["id; --"]).is_err());
        assert_eq!(
            insert_statement(&table("users"), &["id", "name"]).unwrap(),
            "INSERT INTO \"users\" (\"keyspace_id\", \"id\", \"name\") VALUES ($1, $2, $3)"
        );
        assert!(insert_statement(&table("users"), &["na me"]).is_err());
    }

    #[test]
    fn bounds_preserve_order() {
        let (lo, hi) = sql_bounds("-80".parse().unwrap());
        assert_eq!((lo, hi), (i64::MIN, -1));
        let (lo, hi) = sql_bounds("80-".parse().unwrap());
        assert_eq!((lo, hi), (0, i64::MAX));
    }
}
