//! The webhook outbox on SQLite: attempts and event states are written through the single writer (so
//! a batch of attempt results is one group-committed transaction); listings read from the pool.

use followd_graph::outbox::{
    AttemptRecord, AttemptRow, BoxFuture, EventFilter, EventRow, EventState, Outbox, Requeue, StoredEvent, WebhookOverride,
};
use followd_graph::{AppId, StoreResult};
use followd_protocol::{CallbackCommand, OptPlatform};
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;

const EVENT_COLUMNS: &str =
    "id, app, command, from_account, body, client_ip, platform, created_ms, retries, next_at_ms, state, attempts, last_error, updated_ms";

fn event_of(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let command: String = r.get(2)?;
    let platform: String = r.get(6)?;
    Ok(StoredEvent {
        id: r.get(0)?,
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
    fn load_pending(&self, after_id: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        Box::pin(self.read_sql(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 AND state = 0 ORDER BY id LIMIT ?2"))?;
            let rows = st.query_map(params![after_id, limit as i64], event_of)?;
            rows.collect()
        }))
    }

    fn count_pending(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.read_sql(|c| c.query_row("SELECT count(*) FROM events WHERE state = 0", [], |r| r.get(0))))
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
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE app = ?1 AND id < ?2 \
                 AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR from_account = ?4) AND (?5 IS NULL OR command = ?5) \
                 AND (?6 IS NULL OR created_ms >= ?6) AND (?7 IS NULL OR created_ms < ?7) ORDER BY id DESC LIMIT ?8"
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![
                    app as i64,
                    f.before_id.unwrap_or(i64::MAX),
                    f.state.map(|s| s as i64),
                    f.from,
                    f.command.map(|c| c.as_str()),
                    f.start_ms,
                    f.end_ms,
                    f.limit as i64
                ],
                row_of,
            )?;
            rows.collect()
        }))
    }

    fn list_attempts(&self, app: AppId, event_id: i64) -> BoxFuture<'_, StoreResult<Option<Vec<AttemptRow>>>> {
        Box::pin(self.read_sql(move |c| {
            let owned: bool = c.prepare_cached("SELECT 1 FROM events WHERE id = ?1 AND app = ?2")?.exists(params![event_id, app as i64])?;
            if !owned {
                return Ok(None);
            }
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
            let (cond, a, b) = match which {
                Requeue::One(id) => ("id = ?3 AND state != 0", id, 0),
                Requeue::DeadBetween(start, end) => ("state = 2 AND created_ms >= ?3 AND created_ms < ?4", start, end),
            };
            let sql = format!(
                "UPDATE events SET state = 0, retries = 0, next_at_ms = ?2, updated_ms = ?2, last_error = NULL \
                 WHERE app = ?1 AND {cond} RETURNING {EVENT_COLUMNS}"
            );
            let mut st = c.prepare(&sql)?;
            let rows = match which {
                Requeue::One(_) => st.query_map(params![app as i64, now, a], event_of)?.collect::<rusqlite::Result<Vec<_>>>()?,
                Requeue::DeadBetween(..) => {
                    st.query_map(params![app as i64, now, a, b], event_of)?.collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            let mut rows = rows;
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
            let mut st = c.prepare("SELECT app, url, commands, token, token_enabled FROM webhook_overrides")?;
            let rows = st.query_map([], |r| {
                let commands: Option<String> = r.get(2)?;
                Ok((
                    r.get::<_, i64>(0)? as AppId,
                    WebhookOverride {
                        url: r.get(1)?,
                        commands: commands.map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect()),
                        token: r.get(3)?,
                        token_enabled: r.get(4)?,
                    },
                ))
            })?;
            rows.collect()
        }))
    }

    fn save_override(&self, app: AppId, o: WebhookOverride) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write_sql(move |c| {
            c.prepare_cached(
                "INSERT INTO webhook_overrides(app, url, commands, token, token_enabled, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(app) DO UPDATE SET url = excluded.url, commands = excluded.commands, token = excluded.token, \
                 token_enabled = excluded.token_enabled, updated_ms = excluded.updated_ms",
            )?
            .execute(params![app as i64, o.url, o.commands.map(|c| c.join(",")), o.token, o.token_enabled, now_ms()])?;
            Ok(())
        }))
    }
}
