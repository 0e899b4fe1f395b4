//! The routing table in Redis: key layout, atomic reads, compare-and-set
//! pushes (Lua), the audit stream, kept revisions for rollback, and the pin
//! hash. Shared by the operator CLI and the gateway's watcher.
//!
//! Layout under the prefix `P` (default `switchyard:`); every key carries the
//! hash tag `{table}` so the scripts touch one slot in Redis Cluster:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P{table}:doc` | string | the current document (TOML) |
//! | `P{table}:rev` | string | the current revision (0 = none) |
//! | `P{table}:docs` | hash | revision -> document, the last N kept |
//! | `P{table}:meta` | hash | revision -> JSON meta (author, time, message, sha256, emergency) |
//! | `P{table}:audit` | stream | one entry per change |
//! | `P{table}:pins` | hash | client id -> version |
//! | `P{table}:pins_rev` | string | pin-set revision |
//! | `P{table}:events` | channel | `table <rev>` / `pins <rev>` |

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, RedisFuture, RedisResult, Script, Value};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::mpsc::UnboundedSender;

/// Metadata stored with each revision (and in the audit stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Who pushed.
    pub author: String,
    /// When, RFC 3339.
    pub time: jiff::Timestamp,
    /// Why.
    pub message: String,
    /// sha256 of the document text, hex.
    pub sha256: String,
    /// Pushed with `--emergency` (allowed during a freeze).
    pub emergency: bool,
    /// `push`, `rollback`.
    pub action: String,
}

/// One stored revision.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Revision number (>= 1).
    pub revision: u64,
    /// Document text.
    pub text: String,
    /// Metadata; `None` when someone wrote the keys directly.
    pub meta: Option<Meta>,
}

/// An audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Stream id.
    pub id: String,
    /// Fields as written.
    pub fields: HashMap<String, String>,
}

/// Why a push failed at the store.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Another push moved the revision first.
    #[error(
        "conflict: expected revision {expected}, but Redis is at {actual} (someone pushed meanwhile; re-run to push on top of it)"
    )]
    Conflict {
        /// What we based the push on.
        expected: u64,
        /// What Redis had.
        actual: u64,
    },
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A single-node or cluster async connection.
#[derive(Clone)]
pub enum Conn {
    /// `ConnectionManager`: reconnects with backoff by itself.
    Single(ConnectionManager),
    /// Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(p, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Key names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    doc: String,
    rev: String,
    docs: String,
    meta: String,
    audit: String,
    pins: String,
    pins_rev: String,
    /// The pub/sub channel.
    pub channel: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{prefix}{{table}}:{name}");
        Keys {
            doc: k("doc"),
            rev: k("rev"),
            docs: k("docs"),
            meta: k("meta"),
            audit: k("audit"),
            pins: k("pins"),
            pins_rev: k("pins_rev"),
            channel: k("events"),
        }
    }
}

/// The store: a connection and the key names.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    /// Key names.
    pub keys: Keys,
}

/// Connect and response timeouts for Redis commands: a gateway must never
/// wait long on Redis (requests never do; the watcher must stay responsive).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Store {
    /// Connects to `url` (`redis://...`, or `redis-cluster://h1:p1,h2:p2`).
    /// With `push`, pub/sub messages (RESP3) and disconnect notices are sent
    /// there, and subscriptions are renewed after every reconnect.
    pub async fn connect(
        url: &str,
        prefix: &str,
        push: Option<UnboundedSender<PushInfo>>,
    ) -> RedisResult<Store> {
        let keys = Keys::new(prefix);
        let conn = if let Some(nodes) = url.strip_prefix("redis-cluster://") {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(|n| format!("redis://{n}/?protocol=resp3"))
                .collect();
            let mut b = ClusterClientBuilder::new(nodes)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(REDIS_TIMEOUT)
                .response_timeout(REDIS_TIMEOUT);
            if let Some(tx) = push {
                b = b.push_sender(tx);
            }
            Conn::Cluster(b.build()?.get_async_connection().await?)
        } else {
            let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
            if push.is_some() {
                let redis_info = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                info = info.set_redis_settings(redis_info);
            }
            let client = redis::Client::open(info)?;
            let mut cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                // Keep reconnecting: the gateway outlives any Redis outage.
                .set_number_of_retries(usize::MAX);
            if let Some(tx) = push {
                cfg = cfg.set_push_sender(tx).set_automatic_resubscription();
            }
            Conn::Single(client.get_connection_manager_with_config(cfg).await?)
        };
        Ok(Store { conn, keys })
    }

    /// Subscribes to the events channel (messages arrive on the push sender).
    pub async fn subscribe(&mut self) -> RedisResult<()> {
        let channel = self.keys.channel.clone();
        match &mut self.conn {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.subscribe(channel).await,
        }
    }

    /// Current table and pin-set revisions.
    pub async fn revisions(&mut self) -> RedisResult<(u64, u64)> {
        let (rev, pins): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(&self.keys.rev)
            .arg(&self.keys.pins_rev)
            .query_async(&mut self.conn)
            .await?;
        Ok((rev.unwrap_or(0), pins.unwrap_or(0)))
    }

    /// The current revision, atomically with its document and meta.
    pub async fn current(&mut self) -> RedisResult<Option<Stored>> {
        let script = Script::new(
            r"local rev = redis.call('GET', KEYS[1])
              if not rev then return {} end
              return {rev, redis.call('GET', KEYS[2]) or '', redis.call('HGET', KEYS[3], rev) or ''}",
        );
        let out: Vec<String> = script
            .key(&self.keys.rev)
            .key(&self.keys.doc)
            .key(&self.keys.meta)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(stored(out))
    }

    /// A kept revision.
    pub async fn get(&mut self, revision: u64) -> RedisResult<Option<Stored>> {
        let (text, meta): (Option<String>, Option<String>) = redis::pipe()
            .hget(&self.keys.docs, revision)
            .hget(&self.keys.meta, revision)
            .query_async(&mut self.conn)
            .await?;
        Ok(text.map(|text| Stored {
            revision,
            text,
            meta: meta.and_then(|m| serde_json::from_str(&m).ok()),
        }))
    }

    /// Writes `text` as revision `expected + 1` if Redis is still at
    /// `expected`; records meta and audit, trims kept revisions to `keep`,
    /// publishes. All in one script, so it is atomic.
    pub async fn push(
        &mut self,
        text: &str,
        expected: u64,
        meta: &Meta,
        keep: u64,
    ) -> Result<u64, PushError> {
        let script = Script::new(
            r"local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
              if cur ~= tonumber(ARGV[1]) then return {0, cur} end
              local new = cur + 1
              redis.call('SET', KEYS[2], new)
              redis.call('SET', KEYS[1], ARGV[2])
              redis.call('HSET', KEYS[3], new, ARGV[2])
              local meta = cjson.decode(ARGV[4])
              redis.call('HSET', KEYS[4], new, ARGV[4])
              local old = new - tonumber(ARGV[3])
              if old > 0 then
                redis.call('HDEL', KEYS[3], old)
                redis.call('HDEL', KEYS[4], old)
              end
              redis.call('XADD', KEYS[5], 'MAXLEN', '~', '10000', '*',
                'revision', new, 'action', meta.action, 'author', meta.author, 'time', meta.time,
                'message', meta.message, 'sha256', meta.sha256, 'emergency', tostring(meta.emergency))
              redis.call('PUBLISH', ARGV[5], 'table ' .. new)
              return {1, new}",
        );
        let (ok, rev): (u8, u64) = script
            .key(&self.keys.doc)
            .key(&self.keys.rev)
            .key(&self.keys.docs)
            .key(&self.keys.meta)
            .key(&self.keys.audit)
            .arg(expected)
            .arg(text)
            .arg(keep.max(1))
            .arg(serde_json::to_string(meta).expect("meta serialises"))
            .arg(&self.keys.channel)
            .invoke_async(&mut self.conn)
            .await?;
        if ok == 1 {
            Ok(rev)
        } else {
            Err(PushError::Conflict {
                expected,
                actual: rev,
            })
        }
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn history(&mut self, limit: usize) -> RedisResult<Vec<AuditEntry>> {
        let reply: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(&self.keys.audit)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn)
            .await?;
        Ok(reply
            .into_iter()
            .map(|(id, flat)| AuditEntry {
                id,
                fields: flat
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect(),
            })
            .collect())
    }

    /// The pin set and its revision, atomically.
    pub async fn pins(&mut self) -> RedisResult<(u64, HashMap<String, String>)> {
        let script = Script::new(
            r"return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2])}",
        );
        let (rev, flat): (String, Vec<String>) = script
            .key(&self.keys.pins_rev)
            .key(&self.keys.pins)
            .invoke_async(&mut self.conn)
            .await?;
        let map = flat
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        Ok((rev.parse().unwrap_or(0), map))
    }

    /// Sets (`Some`) or removes (`None`) a pin; bumps the pin revision,
    /// audits and publishes. Returns the new pin revision.
    pub async fn set_pin(
        &mut self,
        client: &str,
        version: Option<&str>,
        author: &str,
    ) -> RedisResult<u64> {
        let script = Script::new(
            r"if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
              local rev = redis.call('INCR', KEYS[2])
              redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '*', 'pins_revision', rev,
                'action', ARGV[2] == '' and 'pin rm' or 'pin set', 'client', ARGV[1], 'version', ARGV[2],
                'author', ARGV[3], 'time', ARGV[4])
              redis.call('PUBLISH', ARGV[5], 'pins ' .. rev)
              return rev",
        );
        script
            .key(&self.keys.pins)
            .key(&self.keys.pins_rev)
            .key(&self.keys.audit)
            .arg(client)
            .arg(version.unwrap_or(""))
            .arg(author)
            .arg(jiff::Timestamp::now().to_string())
            .arg(&self.keys.channel)
            .invoke_async(&mut self.conn)
            .await
    }
}

fn stored(out: Vec<String>) -> Option<Stored> {
    let mut it = out.into_iter();
    let revision = it.next()?.parse().ok()?;
    let text = it.next().unwrap_or_default();
    let meta = it.next().and_then(|m| serde_json::from_str(&m).ok());
    Some(Stored {
        revision,
        text,
        meta,
    })
}

/// Hex sha256 of a document.
pub fn sha256_hex(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
