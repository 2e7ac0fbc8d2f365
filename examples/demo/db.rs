//! The catalog in SQL: one schema and one set of queries for SQLite (the embedded default)
//! and PostgreSQL, through sqlx's `Any` driver.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::{
    error::BoxDynError,
    migrate::{Migration, MigrationSource, MigrationType, Migrator},
    AnyPool, AssertSqlSafe, Row, SqlSafeStr,
};

/// A catalog item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) price_cents: i64,
    pub(crate) stock: i64,
    pub(crate) version: i64,
    pub(crate) updated_at: i64,
}

/// The fields a `PUT /items/{id}` may change.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ItemUpdate {
    pub(crate) name: String,
    pub(crate) price_cents: i64,
    pub(crate) stock: i64,
}

impl ItemUpdate {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 200 {
            return Err("name must be 1 to 200 bytes".into());
        }
        if self.price_cents < 0 || self.stock < 0 {
            return Err("price_cents and stock must not be negative".into());
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, name, price_cents, stock, version, updated_at";

fn item_from_row(row: &sqlx::any::AnyRow) -> Result<Item, sqlx::Error> {
    Ok(Item {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        stock: row.try_get("stock")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Put an SQLite database in write-ahead-log mode (a property of the file, so once is enough):
/// readers then never wait for the writer, which the default rollback journal makes them do.
/// Runs on a connection of its own before the pool opens any.
pub(crate) async fn prepare(url: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    if !url.starts_with("sqlite") {
        return Ok(());
    }
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut conn).await?;
    conn.close().await
}

/// The migrations of `examples/demo/migrations`, embedded in the binary at build time, so the
/// demo migrates wherever it runs (a container holds the binary, not the source tree). Each
/// file is `(version, description, sql)`, as sqlx names them; a test checks that this list is
/// the directory's content.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "items", include_str!("migrations/0001_items.sql"))];

/// The embedded migrations as an sqlx migration source (same checksums as the files).
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(*version, (*description).into(), MigrationType::Simple, sql.into_sql_str(), false)
                })
                .collect())
        })
    }
}

/// Apply the embedded migrations.
pub(crate) async fn migrate(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(pool).await?;
    Ok(())
}

/// Seed `count` items into an empty catalog, in one statement (a recursive CTE both
/// backends understand). Returns how many were inserted.
pub(crate) async fn seed(pool: &AnyPool, count: i64) -> Result<u64, sqlx::Error> {
    let existing: i64 = sqlx::query("SELECT COUNT(*) AS n FROM items").fetch_one(pool).await?.try_get("n")?;
    if existing > 0 || count <= 0 {
        return Ok(0);
    }
    let sql = format!(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {count}) \
         INSERT INTO items ({COLUMNS}) \
         SELECT n, 'item-' || CAST(n AS TEXT), 100 + (n * 7919) % 100000, (n * 31) % 1000, 1, {now} FROM seq",
        now = now_millis()
    );
    let done = sqlx::query(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(done.rows_affected())
}

pub(crate) async fn get_item(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Option<Item>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM items WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(item_from_row).transpose()
}

pub(crate) async fn list_items(
    conn: &mut sqlx::AnyConnection,
    page: i64,
    per_page: i64,
) -> Result<Vec<Item>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM items WHERE id > $1 ORDER BY id LIMIT $2")))
        .bind((page - 1) * per_page)
        .bind(per_page)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(item_from_row).collect()
}

pub(crate) async fn update_item(
    conn: &mut sqlx::AnyConnection,
    id: i64,
    update: &ItemUpdate,
) -> Result<Option<Item>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE items SET name = $1, price_cents = $2, stock = $3, version = version + 1, updated_at = $4 WHERE id = $5",
    )
    .bind(&update.name)
    .bind(update.price_cents)
    .bind(update.stock)
    .bind(now_millis())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get_item(conn, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_migrations_are_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/migrations");
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
                let (version, description) = stem.split_once('_').unwrap();
                (version.parse().unwrap(), description.replace('_', " "), std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String, String)> =
            MIGRATIONS.iter().map(|(v, d, s)| (*v, (*d).to_owned(), (*s).to_owned())).collect();
        assert_eq!(embedded, files, "add every new migration file to db::MIGRATIONS");
    }
}
