//! A fresh PostgreSQL schema per test, dropped afterwards.
//!
//! The database is `MANDATE_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`; each test gets its own schema
//! `mandate_test_<pid>_<time>_<n>` and connects with `search_path` set to it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The default test database.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A test's schema: dropped (with everything in it) when this is dropped.
pub struct TestSchema {
    base: String,
    name: String,
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

async fn execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error} (is PostgreSQL running?)"));
    let task = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = task.await;
}

impl TestSchema {
    /// Creates a new empty schema.
    pub fn new() -> TestSchema {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var("MANDATE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("mandate_test_{}_{nanos}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        block_on(execute(&base, &format!("CREATE SCHEMA {name}")));
        TestSchema { base, name }
    }

    /// The database URL whose connections use this schema.
    pub fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-csearch_path%3D{}", self.base, self.name)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        block_on(execute(&self.base, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)));
    }
}
