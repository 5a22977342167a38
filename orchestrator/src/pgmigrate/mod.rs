//! PostgreSQL migration, the edge: connections to both databases (tokio-postgres, the same
//! settings and TLS as SQL gates), the catalog, and each phase of a migration plan — preflight,
//! schema (pg_dump into psql), copy (COPY to COPY, chunked, resumable), verify (hashes computed by
//! each server, bisected to rows), sequences. The executor runs them as steps and records what
//! they report; `ferry migrate verify` runs the verification alone.
//!
//! Every error names the server it came from (`PostgreSQL at HOST:PORT (database `ID`)`).

pub mod catalog;
pub mod copy;
pub mod preflight;
pub mod schema;
pub mod sequences;
pub mod verify;

use crate::migrate::MigrationSpec;
use crate::migrate::sql::SESSION;
use crate::probe::{PgTarget, Probes, chain, pg_error};

pub use copy::{CopyLog, PriorChunks};

/// A connection to one side of the migration, with the session settings every hash relies on.
pub struct Side {
    pub db: PgTarget,
    pub client: tokio_postgres::Client,
}

impl Side {
    /// Connects to an inventory database and sets the session up (UTC, ISO dates, exact floats,
    /// hex bytea).
    pub async fn open(probes: &Probes, database: &str) -> Result<Side, String> {
        let (db, client) = probes
            .connect_to(database, "ferry-migrate")
            .await
            .map_err(|e| e.to_string())?;
        let side = Side { db, client };
        side.client
            .batch_execute(SESSION)
            .await
            .map_err(|e| side.error(&e))?;
        Ok(side)
    }

    /// The rows of a statement without parameters; an error names the server.
    pub async fn rows(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, String> {
        self.client
            .query(sql, &[])
            .await
            .map_err(|e| self.error(&e))
    }

    /// A chunk's rows as the copy reads them (`sql::copy_out`: binary where it can be, in key
    /// order for a keyed table); an error names the server.
    pub async fn copy_out(
        &self,
        t: &crate::migrate::Table,
        c: &crate::migrate::Chunk,
    ) -> Result<tokio_postgres::CopyOutStream, String> {
        self.client
            .copy_out(&crate::migrate::sql::copy_out(t, c))
            .await
            .map_err(|e| self.error(&e))
    }

    /// A PostgreSQL error, named by the server it came from.
    pub fn error(&self, e: &tokio_postgres::Error) -> String {
        let what = if e.as_db_error().is_some() {
            pg_error(e)
        } else if e.is_closed() {
            format!("the connection was lost ({})", chain(e))
        } else {
            chain(e)
        };
        format!("{}: {what}", self.db.place)
    }
}

/// What every phase works with.
pub struct Migration<'a> {
    pub probes: &'a Probes,
    pub spec: &'a MigrationSpec,
    pub plan_id: &'a str,
}

impl Migration<'_> {
    pub async fn source(&self) -> Result<Side, String> {
        Side::open(self.probes, &self.spec.source).await
    }

    pub async fn target(&self) -> Result<Side, String> {
        Side::open(self.probes, &self.spec.target).await
    }

    /// The source's tables that are copied and compared (all but the excluded ones).
    pub async fn tables(&self, source: &Side) -> Result<Vec<crate::migrate::Table>, String> {
        let mut t = catalog::tables(source).await?;
        t.retain(|t| !self.spec.excludes(&t.id()));
        Ok(t)
    }
}
