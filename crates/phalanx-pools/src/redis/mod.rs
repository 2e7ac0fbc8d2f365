//! The [`Redis`] extractor over the process's shared Redis connections
//! ([`phalanx_core::redis::RedisHandle`]): RESP3, pipelined, reconnecting by itself, with its
//! latency and errors in the pool vocabulary ([`RedisPool`]).
//!
//! A [`RedisPool`] opens no connection of its own: it takes the handle the cache and the rate
//! limiter share (`.redis(handle)` on the builder, or [`Deps::redis`](phalanx_core::Deps::redis)
//! for [`RedisPool::from_config`]), so a process holds one Redis pool however many layers use it.

mod builder;
mod config;
mod extract;
mod pool;

pub use builder::RedisPoolBuilder;
pub use config::RedisPoolConfig;
pub use extract::Redis;
pub use pool::RedisPool;
