//! Measures ingest throughput: many agents, one health sample per batch, concurrent senders,
//! against a store in a temp dir (real fsyncs). Run with
//! `cargo run --release -p census-collector --example ingest_throughput [agents] [samples_per_agent] [senders]`.
//!
//! Prints batches per second and how many batches each commit carried on average (the group
//! commit at work).

use std::sync::Arc;
use std::time::Instant;

use census_collector::store::{IngestBatch, Store, StoreOptions};
use census_common::{HealthSample, Inventory, Report, ReportBody};
use time::OffsetDateTime;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let agents = args.next().transpose()?.unwrap_or(2_000);
    let per_agent = args.next().transpose()?.unwrap_or(10);
    let senders = args.next().transpose()?.unwrap_or(64);

    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(
        &dir.path().join("census.db"),
        &StoreOptions::default(),
    )?);
    let ids: Vec<String> = (0..agents)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let now = OffsetDateTime::now_utc();
    for id in &ids {
        let mut inv = Inventory::new(id.clone(), now);
        inv.host.hostname = Some(format!("host-{id}"));
        let body = ReportBody::Inventory(inv);
        store
            .ingest(IngestBatch {
                agent_id: id.clone(),
                reports: vec![Report { seq: 0, body }],
                received_at: now,
            })
            .await?;
    }

    let commits_before = store.commits();
    let started = Instant::now();
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let (store, ids) = (store.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            // Interleave agents the way a fleet reporting every minute does.
            for round in 1..=per_agent {
                for agent in ids.iter().skip(sender).step_by(senders) {
                    let mut sample = HealthSample::empty(agent.clone(), OffsetDateTime::now_utc());
                    sample.cpu_percent = Some(12.5);
                    sample.load = Some([0.5, 0.4, 0.3]);
                    sample.memory_used_percent = Some(40.0);
                    let body = ReportBody::Health(sample);
                    let batch = IngestBatch {
                        agent_id: agent.clone(),
                        reports: vec![Report {
                            seq: round as u64,
                            body,
                        }],
                        received_at: OffsetDateTime::now_utc(),
                    };
                    store.ingest(batch).await.expect("ingest");
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let batches = agents * per_agent;
    let commits = store.commits() - commits_before;
    println!(
        "{batches} health batches from {agents} agents with {senders} senders in {:.2?}: {:.0} batches/s, {commits} commits ({:.1} batches per commit)",
        elapsed,
        batches as f64 / elapsed.as_secs_f64(),
        batches as f64 / commits.max(1) as f64
    );
    store.close().await;
    Ok(())
}
