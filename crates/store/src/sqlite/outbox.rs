//! The webhook outbox on SQLite: attempts and event states are written through the single writer (so
//! a batch of attempt results is one group-committed transaction); listings read from the pool.
//!
//! `webhook_id` holds a UUIDv7 as 16 bytes; events written before schema version 2 hold the text
//! `evt_<id>` they were already sent with. Pending events are read back per app through the partial
//! index `events_pending (app, id) WHERE state = 0`, so one app's backlog never costs another's reads.

use followd_graph::outbox::{
    AttemptRecord, AttemptRow, BoxFuture, EventFilter, EventRef, EventRow, EventState, Outbox, Requeue, StoredEvent, WebhookId,
    WebhookOverride,
};
use followd_graph::{AppId, StoreResult};
use followd_protocol::{CallbackCommand, OptPlatform};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;

const EVENT_COLUMNS: &str = "id, app, command, from_account, body, client_ip, platform, created_ms, retries, next_at_ms, state, \
     attempts, last_error, updated_ms, webhook_id";

/// How a webhook id is stored.
fn webhook_id_value(w: WebhookId) -> Value {
    match w {
        WebhookId::Uuid(u) => Value::Blob(u.as_bytes().to_vec()),
        WebhookId::Legacy(_) => Value::Text(w.to_string()),
    }
}

fn webhook_id_of(r: &Row<'_>, i: usize, id: i64) -> rusqlite::Result<WebhookId> {
    match r.get_ref(i)? {
        ValueRef::Blob(b) => uuid::Uuid::from_slice(b).map(WebhookId::Uuid).map_err(|_| bad_column(i, &format!("{b:02x?}"))),
        ValueRef::Text(t) => {
            let t = String::from_utf8_lossy(t);
            WebhookId::parse(&t).ok_or_else(|| bad_column(i, &t))
        }
        // Not written by followd (every row has one since version 2); `evt_<id>` is what it was sent as.
        ValueRef::Null => Ok(WebhookId::Legacy(id)),
        other => Err(bad_column(i, &format!("{other:?}"))),
    }
}

/// The condition naming one event in `events` by `?1`, with its value.
fn event_ref(e: EventRef) -> (&'static str, Value) {
    match e {
        EventRef::Id(id) => ("id = ?1", Value::Integer(id)),
        EventRef::Webhook(w) => ("webhook_id = ?1", webhook_id_value(w)),
    }
}

fn event_of(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let command: String = r.get(2)?;
    let platform: String = r.get(6)?;
    let id = r.get(0)?;
    Ok(StoredEvent {
        id,
        webhook_id: webhook_id_of(r, 14, id)?,
        app: r.get::<_, i64>(1)? as AppId,
        command: CallbackCommand::parse(&command).ok_or_else(|| bad_column(2, &command))?,
        from: r.get(3)?,
        body: r.get(4)?,
        client_ip: r.get(5)?,
        platform: OptPlatform::parse(&platform),
        created_ms: r.get(7)?,
        retries: r.get(8)?,
        next_at_ms: r.get(9)?,
    })
}

fn row_of(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    let state: i64 = r.get(10)?;
    Ok(EventRow {
        event: event_of(r)?,
        state: EventState::from_i64(state).ok_or_else(|| bad_column(10, &state.to_string()))?,
        attempts: r.get(11)?,
        last_error: r.get(12)?,
        updated_ms: r.get(13)?,
    })
}

fn bad_column(i: usize, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("unexpected stored value {v:?}").into())
}

fn now_ms() -> i64 {
    super::now_micros() / 1000
}

impl Outbox for SqliteStore {
    fn load_pending(&self, app: AppId, after_id: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        Box::pin(self.read_sql(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_pending WHERE app = ?1 AND state = 0 AND id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![app as i64, after_id, limit as i64], event_of)?;
            rows.collect()
        }))
    }

    fn load_events(&self, app: AppId, ids: Vec<i64>) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        Box::pin(self.read_sql(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1 AND app = ?2 AND state = 0"))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(e) = st.query_row(params![id, app as i64], event_of).optional()? {
                    out.push(e);
                }
            }
            out.sort_by_key(|e| e.id);
            Ok(out)
        }))
    }

    fn pending_apps(&self) -> BoxFuture<'_, StoreResult<Vec<AppId>>> {
        // One index probe per app, however many events each has pending.
        Box::pin(self.read_sql(|c| {
            let mut st =
                c.prepare_cached("SELECT app FROM events INDEXED BY events_pending WHERE state = 0 AND app > ?1 ORDER BY app LIMIT 1")?;
            let mut apps = Vec::new();
            let mut after = -1i64;
            while let Some(app) = st.query_row([after], |r| r.get::<_, i64>(0)).optional()? {
                apps.push(app as AppId);
                after = app;
            }
            Ok(apps)
        }))
    }

    fn count_pending(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.read_sql(|c| c.query_row("SELECT count(*) FROM events INDEXED BY events_pending WHERE state = 0", [], |r| r.get(0))))
    }

    fn record(&self, batch: Vec<AttemptRecord>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write_sql(move |c| {
            let mut ins = c.prepare_cached(
                "INSERT INTO attempts(event_id, n, at_ms, duration_us, status, outcome, error, response) \
                 SELECT ?1, attempts + 1, ?2, ?3, ?4, ?5, ?6, ?7 FROM events WHERE id = ?1",
            )?;
            let mut upd = c.prepare_cached(
                "UPDATE events SET state = ?2, attempts = attempts + 1, retries = ?3, next_at_ms = ?4, updated_ms = ?5, \
                 last_error = ?6 WHERE id = ?1",
            )?;
            for a in &batch {
                ins.execute(params![a.event_id, a.at_ms, a.duration_us, a.status, a.outcome.as_str(), a.error, a.response])?;
                upd.execute(params![a.event_id, a.state as i64, a.retries, a.next_at_ms, a.at_ms, a.error])?;
            }
            Ok(())
        }))
    }

    fn list_events(&self, app: AppId, f: EventFilter) -> BoxFuture<'_, StoreResult<Vec<EventRow>>> {
        Box::pin(self.read_sql(move |c| {
            // Only the filters given are in the SQL. Pending and dead events are read through their
            // partial indexes, which hold only those events: walking the app's whole log newest
            // first to find a few of them costs a scan of a million rows when the log is that long
            // (with many dead events, their ids are sorted instead: still only dead rows).
            let index = match f.state {
                Some(EventState::Pending) => " INDEXED BY events_pending",
                Some(EventState::Dead) => " INDEXED BY events_dead",
                _ => "",
            };
            let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events{index} WHERE app = ?1 AND id < ?2");
            if let Some(state) = f.state {
                sql.push_str(&format!(" AND state = {}", state as i64));
            }
            for (value, cond) in [
                (f.from.is_some(), " AND from_account = ?3"),
                (f.command.is_some(), " AND command = ?4"),
                (f.start_ms.is_some(), " AND created_ms >= ?5"),
                (f.end_ms.is_some(), " AND created_ms < ?6"),
                (f.after_id.is_some(), " AND id > ?8"),
            ] {
                if value {
                    sql.push_str(cond);
                }
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?7");
            let mut st = c.prepare_cached(&sql)?;
            let mut bind = |i: usize, v: &dyn rusqlite::ToSql| st.raw_bind_parameter(i, v);
            bind(1, &(app as i64))?;
            bind(2, &f.before_id.unwrap_or(i64::MAX))?;
            if let Some(v) = &f.from {
                bind(3, v)?;
            }
            if let Some(v) = f.command {
                bind(4, &v.as_str())?;
            }
            if let Some(v) = f.start_ms {
                bind(5, &v)?;
            }
            if let Some(v) = f.end_ms {
                bind(6, &v)?;
            }
            bind(7, &(f.limit as i64))?;
            if let Some(v) = f.after_id {
                bind(8, &v)?;
            }
            let mut rows = st.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(row_of(r)?);
            }
            Ok(out)
        }))
    }

    fn list_attempts(&self, app: AppId, event: EventRef) -> BoxFuture<'_, StoreResult<Option<Vec<AttemptRow>>>> {
        Box::pin(self.read_sql(move |c| {
            let (cond, value) = event_ref(event);
            let found: Option<i64> = c
                .prepare_cached(&format!("SELECT id FROM events WHERE {cond} AND app = ?2"))?
                .query_row(params![value, app as i64], |r| r.get(0))
                .optional()?;
            let Some(event_id) = found else { return Ok(None) };
            let mut st = c.prepare_cached(
                "SELECT n, at_ms, duration_us, status, outcome, error, response FROM attempts WHERE event_id = ?1 ORDER BY n",
            )?;
            let rows = st.query_map([event_id], |r| {
                Ok(AttemptRow {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    duration_us: r.get(2)?,
                    status: r.get(3)?,
                    outcome: r.get(4)?,
                    error: r.get(5)?,
                    response: r.get(6)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
        }))
    }

    fn requeue(&self, app: AppId, which: Requeue) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        Box::pin(self.write_sql(move |c| {
            let now = now_ms();
            let set = "UPDATE events SET state = 0, retries = 0, next_at_ms = ?3, updated_ms = ?3, last_error = NULL";
            let mut rows = match which {
                Requeue::One(e) => {
                    let (cond, value) = event_ref(e);
                    let sql = format!("{set} WHERE {cond} AND app = ?2 AND state != 0 RETURNING {EVENT_COLUMNS}");
                    c.prepare(&sql)?.query_map(params![value, app as i64, now], event_of)?.collect::<rusqlite::Result<Vec<_>>>()?
                }
                Requeue::DeadBetween(start, end) => {
                    let sql =
                        format!("{set} WHERE app = ?2 AND state = 2 AND created_ms >= ?1 AND created_ms < ?4 RETURNING {EVENT_COLUMNS}");
                    c.prepare(&sql)?.query_map(params![start, app as i64, now, end], event_of)?.collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            rows.sort_by_key(|e| e.id);
            Ok(rows)
        }))
    }

    fn purge_delivered(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.write_sql(move |c| {
            // Ids grow with commit time, so the events older than `before_ms` are the ids below a
            // boundary found by bisection on the rowid: no index on time needed, no table scan.
            let created = |id: i64| -> rusqlite::Result<Option<i64>> {
                c.prepare_cached("SELECT created_ms FROM events WHERE id >= ?1 ORDER BY id LIMIT 1")?
                    .query_row([id], |r| r.get(0))
                    .optional()
            };
            let (mut lo, mut hi): (i64, i64) =
                c.query_row("SELECT coalesce(min(id), 0), coalesce(max(id), 0) + 1 FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match created(mid)? {
                    Some(t) if t < before_ms => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            c.execute("DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE id < ?1 AND state = 1)", [lo])?;
            Ok(c.execute("DELETE FROM events WHERE id < ?1 AND state = 1", [lo])? as u64)
        }))
    }

    fn load_overrides(&self) -> BoxFuture<'_, StoreResult<Vec<(AppId, WebhookOverride)>>> {
        Box::pin(self.read_sql(|c| {
            let mut st = c.prepare("SELECT app, url, commands, token, token_enabled, signing_secret FROM webhook_overrides")?;
            let rows = st.query_map([], |r| {
                let commands: Option<String> = r.get(2)?;
                Ok((
                    r.get::<_, i64>(0)? as AppId,
                    WebhookOverride {
                        url: r.get(1)?,
                        commands: commands.map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect()),
                        token: r.get(3)?,
                        token_enabled: r.get(4)?,
                        signing_secret: r.get(5)?,
                    },
                ))
            })?;
            rows.collect()
        }))
    }

    fn save_override(&self, app: AppId, o: WebhookOverride) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write_sql(move |c| {
            c.prepare_cached(
                "INSERT INTO webhook_overrides(app, url, commands, token, token_enabled, updated_ms, signing_secret) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT(app) DO UPDATE SET url = excluded.url, commands = excluded.commands, token = excluded.token, \
                 token_enabled = excluded.token_enabled, updated_ms = excluded.updated_ms, signing_secret = excluded.signing_secret",
            )?
            .execute(params![app as i64, o.url, o.commands.map(|c| c.join(",")), o.token, o.token_enabled, now_ms(), o.signing_secret])?;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{CommitHooks, Durability, SCHEMA_VERSION};
    use rusqlite::Connection;

    /// A version-1 database with two events of app 7 (one delivered, one dead) and one pending of app 9.
    fn version_1_database(dir: &std::path::Path) {
        let c = Connection::open(dir.join("followd.db")).unwrap();
        c.execute_batch(super::super::SCHEMA).unwrap();
        for (app, state) in [(7, 1), (7, 2), (9, 0)] {
            c.execute(
                "INSERT INTO events(app, command, from_account, body, client_ip, platform, created_ms, state) \
                 VALUES (?1, 'Follow.CallbackAfterFollowAdd', 'a', '{}', '127.0.0.1', 'RESTAPI', 1000, ?2)",
                [app, state],
            )
            .unwrap();
        }
        c.execute("INSERT INTO attempts(event_id, n, at_ms, duration_us, outcome) VALUES (1, 1, 1000, 5, 'ok')", []).unwrap();
    }

    #[tokio::test]
    async fn events_written_before_version_2_keep_the_webhook_id_they_were_sent_with() {
        let dir = tempfile::tempdir().unwrap();
        version_1_database(dir.path());
        let store = SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap();
        let version = store.with_reader(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))).unwrap().unwrap();
        assert_eq!(version, SCHEMA_VERSION);

        // Pending events are found per app, with their old id.
        assert_eq!(store.pending_apps().await.unwrap(), [9]);
        assert_eq!(store.count_pending().await.unwrap(), 1);
        let pending = store.load_pending(9, 0, 10).await.unwrap();
        assert_eq!(pending.iter().map(|e| (e.id, e.webhook_id.to_string())).collect::<Vec<_>>(), [(3, "evt_3".to_owned())]);
        assert!(store.load_pending(7, 0, 10).await.unwrap().is_empty());

        // The admin API finds them by either id; another app's id or an unknown one finds nothing.
        let by_webhook = EventRef::Webhook(WebhookId::Legacy(1));
        assert_eq!(store.list_attempts(7, by_webhook).await.unwrap().unwrap().len(), 1);
        assert_eq!(store.list_attempts(7, EventRef::Id(1)).await.unwrap().unwrap().len(), 1);
        assert_eq!(store.list_attempts(9, by_webhook).await.unwrap(), None);
        assert_eq!(store.list_attempts(7, EventRef::Webhook(WebhookId::Legacy(4))).await.unwrap(), None);
        let replayed = store.requeue(7, Requeue::One(EventRef::Webhook(WebhookId::Legacy(2)))).await.unwrap();
        assert_eq!(replayed.iter().map(|e| e.webhook_id).collect::<Vec<_>>(), [WebhookId::Legacy(2)]);
        assert_eq!(store.pending_apps().await.unwrap(), [7, 9]);
        assert_eq!(store.load_events(7, vec![1, 2, 3]).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [2]);

        // A new event's webhook id is a stored UUIDv7, found again by it.
        let uuid = uuid::Builder::from_unix_timestamp_millis(2000, &[7; 10]).into_uuid();
        Connection::open(store.path())
            .unwrap()
            .execute(
                "INSERT INTO events(app, command, from_account, body, client_ip, platform, created_ms, webhook_id) \
                 VALUES (7, 'Follow.CallbackAfterFollowAdd', 'b', '{}', '127.0.0.1', 'RESTAPI', 2000, ?1)",
                [uuid.as_bytes()],
            )
            .unwrap();
        let new = store.load_pending(7, 2, 10).await.unwrap();
        assert_eq!(new.iter().map(|e| e.webhook_id).collect::<Vec<_>>(), [WebhookId::Uuid(uuid)]);
        assert_eq!(store.list_attempts(7, EventRef::Webhook(WebhookId::Uuid(uuid))).await.unwrap(), Some(vec![]));
        store.close();

        // Opening again changes nothing.
        let store = SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap();
        assert_eq!(store.load_pending(9, 0, 10).await.unwrap()[0].webhook_id, WebhookId::Legacy(3));
    }

    #[tokio::test]
    async fn a_signing_secret_override_is_stored_in_a_migrated_database_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        version_1_database(dir.path());
        let o = WebhookOverride { token: Some("t".into()), signing_secret: Some("whsec_c2VjcmV0".into()), ..Default::default() };
        {
            let store = SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap();
            store.save_override(7, o.clone()).await.unwrap();
            store.save_override(9, WebhookOverride::default()).await.unwrap();
        }
        let store = SqliteStore::open(dir.path(), Durability::Process, CommitHooks::default()).unwrap();
        let mut got = store.load_overrides().await.unwrap();
        got.sort_by_key(|(app, _)| *app);
        assert_eq!(got, [(7, o), (9, WebhookOverride::default())]);
    }
}
