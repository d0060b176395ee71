//! Several followd nodes on one PostgreSQL database (skipped, saying why, without
//! `FOLLOWD_TEST_DATABASE_URL`): two servers in this process, each with its own store, dispatcher
//! and lease, share one graph.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::hook;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A follow/unfollow storm spread over two nodes: afterwards every counter equals its list on both
/// nodes, and every committed webhook event reached the receiver exactly once (each node sends the
/// events it committed; no node sends another's while both live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_keep_one_exact_graph_and_send_each_event_once() {
    let Some(url) = crate::pg::url("two_nodes_keep_one_exact_graph_and_send_each_event_once") else { return };
    let db = crate::pg::TestDb::create(&url);
    let rx = Receiver::start().await;
    let top = format!("database_url = \"{}\"", db.url);
    let nodes = [
        Arc::new(spawn_with_top(&top, &hook(&rx.url("/cb"), ""), "").await),
        Arc::new(spawn_with_top(&top, &hook(&rx.url("/cb"), ""), "").await),
    ];
    let users: Vec<String> = (0..16).map(|i| format!("u{i:02}")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("star");
    nodes[0].import(&all).await;

    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (nodes, u, next) = (nodes.clone(), u.clone(), users[(i + 1) % users.len()].clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                let node = &nodes[(i + round) % 2];
                assert_ok(&node.follow(&u, &["star", &next]).await);
                if round % 3 == 2 {
                    assert_ok(&nodes[(i + round + 1) % 2].unfollow(&u, &["star"]).await);
                }
                if i % 4 == round % 4 {
                    let r = node.call("follow/follow_add", json!({"From_Account": "star", "FollowItem": [{"To_Account": u}]})).await;
                    assert_ok(&r);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    for node in &nodes {
        for u in &all {
            let (followers, following, mutual) = node.counts(u).await;
            assert_eq!(node.list(u, 1, 100).await.len() as i64, followers, "{u} followers");
            assert_eq!(node.list(u, 2, 100).await.len() as i64, following, "{u} following");
            assert_eq!(node.list(u, 3, 100).await.len() as i64, mutual, "{u} mutual");
        }
    }

    let committed: HashSet<String> = db.with(|c| {
        c.query("SELECT encode(webhook_id, 'hex') FROM events", &[])
            .unwrap()
            .iter()
            .map(|r| {
                let h: String = r.get(0);
                format!("evt_{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            })
            .collect()
    });
    assert!(committed.len() > users.len(), "the storm owed events");
    let got = rx
        .wait_until(60, "every committed event", |g| {
            g.iter().map(|r| r.header("webhook-id")).collect::<HashSet<_>>().len() >= committed.len()
        })
        .await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *times.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    assert_eq!(times.keys().cloned().collect::<HashSet<_>>(), committed, "received exactly the committed events");
    let twice: Vec<_> = times.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "sent more than once while both nodes lived: {twice:?}");
    for n in nodes {
        Arc::into_inner(n).unwrap().stop().await;
    }
}
