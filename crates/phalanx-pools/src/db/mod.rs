//! The [`Db`] extractor over an instrumented, bounded, self-healing sqlx pool ([`DbPool`]).
//!
//! ## Sizing (the defaults)
//!
//! A pool needs about as many connections as queries are in progress at once, which by
//! Little's law is `L = λ · W`: queries per second times the time one query holds its
//! connection. At 1,500 queries/s reaching the database and ~2 ms per indexed point query on a
//! local PostgreSQL (round trips included), on average `1,500 × 0.002 = 3` connections are
//! busy. Arrivals are bursty (Poisson: the 99.9th percentile of in-progress queries at a mean
//! of 3 is 9) and a slow query or a checkpoint can double `W`, so the default
//! `max_connections` is **16**: room for the bursts and a 2× slowdown, while 4 pods × 16 stay
//! below PostgreSQL's default `max_connections` of 100. More connections than that would not
//! make queries faster, only make them queue inside PostgreSQL instead of here, where the wait
//! is bounded.
//!
//! `min_connections` = 2 keeps a warm pair so the first requests after a quiet spell pay no
//! connection setup. `acquire_timeout` = 250 ms: a request that cannot get a connection within
//! that is better answered 503 at once (the client may retry elsewhere) than queued behind a
//! saturated database. `test_before_acquire` = true costs one round trip per acquisition but
//! is what makes the pool heal by itself: a connection killed on the server side
//! (`pg_terminate_backend`, a failover, a proxy timeout) is found dead and replaced before a
//! handler sees it. `idle_timeout` = 5 min and `max_lifetime` = 30 min close connections
//! before middleboxes or the server do it for us, and spread reconnections over time.

mod builder;
mod config;
mod extract;
mod pool;

pub use builder::DbPoolBuilder;
pub use config::DbPoolConfig;
pub use extract::Db;
pub use pool::DbPool;
