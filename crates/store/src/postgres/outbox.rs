//! The webhook outbox on PostgreSQL. Attempts, requeues and purges run in their own short
//! transactions on pooled connections (PostgreSQL takes concurrent writers, so they need not queue
//! behind the graph's writer); listings read from the pool.

use followd_graph::outbox::{
    AttemptRecord, AttemptRow, BoxFuture, Deliver, EventFilter, EventRef, EventRow, EventState, Outbox, Requeue, StoredEvent, WebhookId,
    WebhookOverride,
};
use followd_graph::{AppId, StoreError, StoreResult};
use followd_protocol::{CallbackCommand, OptPlatform};
use postgres::Row;

use super::{db, Conn, PgStore, HANDED_CHANNEL};

/// The columns [`event_of`] and [`row_of`] read, in order.
macro_rules! event_columns {
    () => {
        "id, app, command, from_account, body, client_ip, platform, created_ms, retries, next_at_ms, state, \
         attempts, last_error, updated_ms, webhook_id"
    };
}

/// The advisory lock key of the delivery-log purge (the bytes of "followd2").
const PURGE_LOCK: i64 = 0x666f_6c6c_6f77_6432;
const EVENT_COLUMNS: &str = event_columns!();

fn event_of(r: &Row) -> Result<StoredEvent, String> {
    let command: String = r.get(2);
    let platform: String = r.get(6);
    let id: i64 = r.get(0);
    let wid: Vec<u8> = r.get(14);
    Ok(StoredEvent {
        id,
        webhook_id: uuid::Uuid::from_slice(&wid).map(WebhookId::Uuid).map_err(|_| format!("event {id}: webhook_id {wid:02x?}"))?,
        app: r.get::<_, i64>(1) as AppId,
        command: CallbackCommand::parse(&command).ok_or_else(|| format!("event {id}: command {command:?}"))?,
        from: r.get(3),
        body: r.get(4),
        client_ip: r.get(5),
        platform: OptPlatform::parse(&platform),
        created_ms: r.get(7),
        retries: r.get::<_, i64>(8) as u32,
        next_at_ms: r.get(9),
    })
}

fn row_of(r: &Row) -> Result<EventRow, String> {
    let state: i64 = r.get(10);
    Ok(EventRow {
        event: event_of(r)?,
        state: EventState::from_i64(state).ok_or_else(|| format!("event state {state}"))?,
        attempts: r.get::<_, i64>(11) as u32,
        last_error: r.get(12),
        updated_ms: r.get(13),
    })
}

fn now_ms() -> i64 {
    super::now_micros() / 1000
}

/// What a query that read rows followd did not write fails with.
#[derive(Debug, thiserror::Error)]
#[error("unexpected stored value: {0}")]
struct BadValue(String);

pub(super) fn events(rows: Vec<Row>) -> StoreResult<Vec<StoredEvent>> {
    rows.iter().map(|r| event_of(r).map_err(|e| followd_graph::StoreError::database(BadValue(e)))).collect()
}

/// The condition naming one event by `$1`, and its value as stored.
fn event_ref(e: EventRef) -> (&'static str, Box<dyn postgres::types::ToSql + Sync + Send>) {
    match e {
        EventRef::Id(id) => ("id = $1", Box::new(id)),
        EventRef::Webhook(WebhookId::Uuid(u)) => ("webhook_id = $1", Box::new(u.as_bytes().to_vec())),
        // PostgreSQL databases hold no legacy ids: such a reference names no event.
        EventRef::Webhook(WebhookId::Legacy(_)) => ("false AND $1::bigint IS NULL", Box::new(None::<i64>)),
    }
}

/// How long a take of handed events waits for the writer's commit in progress
/// ([`PgStore::commit_gate`]).
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Puts events back to pending, handed to the node that owns their lane's pending events (this one,
/// `node`, when the lane has none), as a write does with a new event, and tells that node. The lanes'
/// locks are taken first, in key order as writers and adoption take them, so the owner found is
/// still the owner at commit. Returns the requeued events.
fn requeue_handed(c: &mut Conn, app: i64, node: i64, which: Requeue) -> Result<Vec<Row>, postgres::Error> {
    let now = now_ms();
    let (cond, value): (String, Box<dyn postgres::types::ToSql + Sync + Send>) = match which {
        Requeue::One(e) => {
            let (cond, value) = event_ref(e);
            (format!("{cond} AND app = $2 AND state != 0"), value)
        }
        Requeue::DeadBetween(start, end) => {
            (format!("app = $2 AND state = 2 AND created_ms >= $1 AND created_ms < {end}"), Box::new(start))
        }
    };
    c.client().execute(
        &format!(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(from_account, app) AS k \
             FROM events WHERE {cond} ORDER BY k) s"
        ),
        &[&*value, &app],
    )?;
    let rows = c.client().query(
        &format!(
            "UPDATE events e SET state = 0, retries = 0, next_at_ms = $3, updated_ms = $3, last_error = NULL, handed = true, \
             node = COALESCE((SELECT p.node FROM events p WHERE p.app = e.app AND p.from_account = e.from_account \
                              AND p.state = 0 ORDER BY p.id DESC LIMIT 1), $4) \
             WHERE {cond} RETURNING {EVENT_COLUMNS}, node"
        ),
        &[&*value, &app, &now, &node],
    )?;
    let mut owners: Vec<i64> = rows.iter().map(|r| r.get(15)).collect();
    owners.sort_unstable();
    owners.dedup();
    // Delivered at commit only, as a write's.
    c.client().execute(&format!("SELECT pg_notify('{HANDED_CHANNEL}', n::text) FROM unnest($1::bigint[]) n"), &[&owners])?;
    Ok(rows)
}

fn with_rows<'a, T: Send + 'static>(
    store: &'a PgStore,
    f: impl FnOnce(&mut Conn) -> Result<Vec<Row>, postgres::Error> + Send + 'static,
    map: fn(Vec<Row>) -> StoreResult<T>,
) -> BoxFuture<'a, StoreResult<T>> {
    Box::pin(async move { map(store.with_conn(f).await?) })
}

impl Outbox for PgStore {
    fn load_pending(&self, app: AppId, after_id: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        let (app, limit, node) = (app as i64, limit as i64, self.node);
        with_rows(
            self,
            move |c| {
                c.query(
                    concat!(
                        "SELECT ",
                        event_columns!(),
                        " FROM events WHERE node = $4 AND app = $1 AND state = 0 AND NOT handed AND id > $2 ORDER BY id LIMIT $3"
                    ),
                    &[&app, &after_id, &limit, &node],
                )
            },
            events,
        )
    }

    fn load_events(&self, app: AppId, ids: Vec<i64>) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        let app = app as i64;
        with_rows(
            self,
            move |c| {
                c.query(
                    concat!("SELECT ", event_columns!(), " ", "FROM events WHERE id = ANY($1) AND app = $2 AND state = 0 ORDER BY id"),
                    &[&ids, &app],
                )
            },
            events,
        )
    }

    fn pending_apps(&self) -> BoxFuture<'_, StoreResult<Vec<AppId>>> {
        // One index probe per app (a skip scan written out), however many events each has pending.
        let node = self.node;
        with_rows(
            self,
            move |c| {
                c.query(
                    "WITH RECURSIVE apps(app) AS ( \
                       (SELECT app FROM events WHERE node = $1 AND state = 0 ORDER BY app LIMIT 1) \
                       UNION ALL \
                       SELECT (SELECT e.app FROM events e WHERE e.node = $1 AND e.state = 0 AND e.app > apps.app ORDER BY e.app LIMIT 1) \
                       FROM apps WHERE apps.app IS NOT NULL) \
                     SELECT app FROM apps WHERE app IS NOT NULL",
                    &[&node],
                )
            },
            |rows| Ok(rows.iter().map(|r| r.get::<_, i64>(0) as AppId).collect()),
        )
    }

    fn count_pending(&self) -> BoxFuture<'_, StoreResult<u64>> {
        with_rows(
            self,
            |c| c.query("SELECT count(*) FROM events WHERE state = 0", &[]),
            |rows| Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64)),
        )
    }

    fn record(&self, batch: Vec<AttemptRecord>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write_sql(move |c| {
            for a in &batch {
                let status = a.status.map(i64::from);
                let (state, retries) = (a.state as i64, i64::from(a.retries));
                c.execute(
                    "INSERT INTO attempts(app, event_id, n, at_ms, duration_us, status, outcome, error, response) \
                     SELECT app, id, attempts + 1, $2, $3, $4, $5, $6, $7 FROM events WHERE id = $1",
                    &[&a.event_id, &a.at_ms, &a.duration_us, &status, &a.outcome.as_str(), &a.error, &a.response],
                )?;
                c.execute(
                    "UPDATE events SET state = $2, attempts = attempts + 1, retries = $3, next_at_ms = $4, updated_ms = $5, \
                     last_error = $6 WHERE id = $1",
                    &[&a.event_id, &state, &retries, &a.next_at_ms, &a.at_ms, &a.error],
                )?;
            }
            Ok(())
        }))
    }

    fn list_events(&self, app: AppId, f: EventFilter) -> BoxFuture<'_, StoreResult<Vec<EventRow>>> {
        let app = app as i64;
        Box::pin(async move {
            let rows = self
                .with_conn(move |c| {
                    let before = f.before_id.unwrap_or(i64::MAX);
                    let state = f.state.map(|s| s as i64);
                    let command = f.command.map(|c| c.as_str().to_owned());
                    let limit = f.limit as i64;
                    c.query(
                        concat!(
                            "SELECT ",
                            event_columns!(),
                            " ",
                            "FROM events WHERE app = $1 AND id < $2 \
                             AND ($3::bigint IS NULL OR state = $3) AND ($4::text IS NULL OR from_account = $4) \
                             AND ($5::text IS NULL OR command = $5) AND ($6::bigint IS NULL OR created_ms >= $6) \
                             AND ($7::bigint IS NULL OR created_ms < $7) AND ($9::bigint IS NULL OR id > $9) \
                             ORDER BY id DESC LIMIT $8",
                        ),
                        &[&app, &before, &state, &f.from, &command, &f.start_ms, &f.end_ms, &limit, &f.after_id],
                    )
                })
                .await?;
            rows.iter().map(|r| row_of(r).map_err(|e| followd_graph::StoreError::database(BadValue(e)))).collect()
        })
    }

    fn list_attempts(&self, app: AppId, event: EventRef) -> BoxFuture<'_, StoreResult<Option<Vec<AttemptRow>>>> {
        let app = app as i64;
        Box::pin(self.with_conn(move |c| {
            let (cond, value) = event_ref(event);
            let sql = format!("SELECT id FROM events WHERE {cond} AND app = $2");
            let found = c.client().query_opt(&sql, &[&*value, &app])?;
            let Some(found) = found else { return Ok(None) };
            let event_id: i64 = found.get(0);
            let rows = c.query(
                "SELECT n, at_ms, duration_us, status, outcome, error, response FROM attempts WHERE event_id = $1 ORDER BY n",
                &[&event_id],
            )?;
            Ok(Some(
                rows.iter()
                    .map(|r| AttemptRow {
                        id: r.get(0),
                        at_ms: r.get(1),
                        duration_us: r.get(2),
                        status: r.get::<_, Option<i64>>(3).map(|s| s as u16),
                        outcome: r.get(4),
                        error: r.get(5),
                        response: r.get(6),
                    })
                    .collect(),
            ))
        }))
    }

    fn requeue(&self, app: AppId, which: Requeue) -> BoxFuture<'_, StoreResult<Vec<StoredEvent>>> {
        let (app, node) = (app as i64, self.node);
        Box::pin(async move {
            let rows = self.write_sql(move |c| requeue_handed(c, app, node, which)).await?;
            let mut out = events(rows)?;
            out.sort_by_key(|e| e.id);
            Ok(out)
        })
    }

    fn requeue_hands_off(&self) -> bool {
        true
    }

    fn claim_handed(&self, app: AppId, limit: usize, deliver: Deliver) -> BoxFuture<'_, StoreResult<usize>> {
        let (app, limit, node, gate) = (app as i64, limit as i64, self.node, self.commit_gate.clone());
        Box::pin(self.readers.run(move |c| {
            c.client.batch_execute("BEGIN").map_err(db)?;
            // In id order. The dispatcher may start the next take before this one commits (it has
            // the events by then): that take skips the rows this one holds and moves on to the next
            // ones. `events_handed` (node, app, id) WHERE handed leads to them, however large the
            // app's own backlog on this node.
            let rows = match c.query(
                concat!(
                    "UPDATE events SET handed = false WHERE handed AND id IN (SELECT id FROM events \
                     WHERE node = $1 AND app = $2 AND state = 0 AND handed ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING ",
                    event_columns!()
                ),
                &[&node, &app, &limit],
            ) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = c.client.batch_execute("ROLLBACK");
                    return Err(db(e));
                }
            };
            let mut taken = match events(rows) {
                Ok(e) => e,
                Err(e) => {
                    let _ = c.client.batch_execute("ROLLBACK");
                    return Err(e);
                }
            };
            taken.sort_by_key(|e| e.id);
            let n = taken.len();
            // Each taken event's lane had its previous events committed before it was written; those
            // this node wrote reach the dispatcher first ([`PgStore::commit_gate`]). The writer holds
            // the gate for one round trip, or until it learns the outcome of a COMMIT whose answer
            // was lost; should that take long (a connection gone half dead, a database away), the
            // take gives up after GATE_WAIT and its events stay handed, taken again later, rather
            // than hold this reader and the events' row locks.
            if gate.try_lock_for(GATE_WAIT).is_none() {
                let _ = c.client.batch_execute("ROLLBACK");
                return Err(StoreError::database(std::io::Error::other(
                    "the writer's commit did not end in time; the handed events are taken later",
                )));
            }
            deliver(taken);
            // Should the commit fail, the events stay handed and are taken again: sent twice at
            // worst, never lost.
            c.client.batch_execute("COMMIT").map_err(db)?;
            Ok(n)
        }))
    }

    fn purge_delivered(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.write_sql(move |c| {
            // One node purges at a time: the others find the lock taken and skip this round.
            let leader: bool = c.query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK])?.is_some_and(|r| r.get(0));
            if !leader {
                return Ok(0);
            }
            c.execute("DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE state = 1 AND created_ms < $1)", &[&before_ms])?;
            c.execute("DELETE FROM events WHERE state = 1 AND created_ms < $1", &[&before_ms])
        }))
    }

    fn load_overrides(&self) -> BoxFuture<'_, StoreResult<Vec<(AppId, WebhookOverride)>>> {
        with_rows(
            self,
            |c| c.query("SELECT app, url, commands, token, token_enabled, signing_secret FROM webhook_overrides", &[]),
            |rows| {
                Ok(rows
                    .iter()
                    .map(|r| {
                        let commands: Option<String> = r.get(2);
                        (
                            r.get::<_, i64>(0) as AppId,
                            WebhookOverride {
                                url: r.get(1),
                                commands: commands.map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect()),
                                token: r.get(3),
                                token_enabled: r.get(4),
                                signing_secret: r.get(5),
                            },
                        )
                    })
                    .collect())
            },
        )
    }

    fn save_override(&self, app: AppId, o: WebhookOverride) -> BoxFuture<'_, StoreResult<()>> {
        let app = app as i64;
        Box::pin(self.write_sql(move |c| {
            let commands = o.commands.as_ref().map(|c| c.join(","));
            c.execute(
                "INSERT INTO webhook_overrides(app, url, commands, token, token_enabled, updated_ms, signing_secret) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (app) DO UPDATE SET url = excluded.url, commands = excluded.commands, token = excluded.token, \
                 token_enabled = excluded.token_enabled, updated_ms = excluded.updated_ms, signing_secret = excluded.signing_secret",
                &[&app, &o.url, &commands, &o.token, &o.token_enabled, &now_ms(), &o.signing_secret],
            )?;
            Ok(())
        }))
    }
}
