//! Staging by hand, as `deployctl stage` would, and reading what a fleet's root
//! holds (online hosts, deploy entries); re-exported by [`crate::fleet`].

use znode_schema::*;
use zookeeper_client as zk;

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Stages `version` of `service` as `deployctl stage` would (staging, catalog,
/// deploy entry, history event; the `upgrading/` dir), in one transaction.
pub async fn stage(
    client: &zk::Client,
    layout: &Layout,
    service: &str,
    version: &str,
    artifact: &Artifact,
    policy: Policy,
) -> DeployName {
    for d in layout.top_dirs() {
        let _ = client.mkdir(&d, &persistent()).await;
    }
    for d in [layout.releases(service), layout.history(service), layout.current_service(service)] {
        client.mkdir(&d, &persistent()).await.unwrap();
    }
    let now = time::now();
    let staging = Staging {
        service: service.into(),
        version: version.into(),
        artifact: artifact.clone(),
        policy,
        staged_at: now.clone(),
        staged_by: "test@harness".into(),
    };
    let release = Release {
        service: service.into(),
        version: version.into(),
        artifact: artifact.clone(),
        staged_at: now.clone(),
        staged_by: "test@harness".into(),
        policy: Some(staging.policy.clone()),
    };
    let entry = DeployEntry {
        service: service.into(),
        version: version.into(),
        state: DeployState::Active,
        reason: None,
        failures: 0,
        created_at: now.clone(),
        created_by: "test@harness".into(),
        ..DeployEntry::default()
    };
    let ev = HistoryEvent {
        at: now,
        event: EventKind::Staged,
        service: service.into(),
        version: Some(version.into()),
        host: None,
        detail: None,
        by: Some("test@harness".into()),
        count: None,
    };
    let staging_path = layout.staging(service);
    let exists = client.check_stat(&staging_path).await.unwrap();
    let release_exists = client.check_stat(&layout.release(service, version)).await.unwrap().is_some();
    // Like `deployctl stage --replace`: an unfinished rollout of the service is superseded.
    let mut superseded = Vec::new();
    for (name, e) in deploys(client, layout).await {
        if e.service == service {
            let markers = client.list_children(&layout.upgrading_dir(&name)).await.unwrap_or_default();
            let has_dir = client.check_stat(&layout.upgrading_dir(&name)).await.unwrap().is_some();
            superseded.push((name, markers, has_dir, e.rolling_back_to.is_some()));
        }
    }
    let mut txn = client.new_multi_writer();
    for (name, markers, has_dir, rolling_back) in &superseded {
        for m in markers {
            txn.add_delete(&format!("{}/{m}", layout.upgrading_dir(name)), None).unwrap();
        }
        if *has_dir {
            txn.add_delete(&layout.upgrading_dir(name), None).unwrap();
        }
        if *rolling_back {
            txn.add_delete(&layout.rollback_mark(name), None).unwrap();
        }
        txn.add_delete(&layout.deploy_entry(name), None).unwrap();
    }
    match exists {
        Some(_) => txn.add_set_data(&staging_path, &encode(&staging), None).unwrap(),
        None => txn.add_create(&staging_path, &encode(&staging), &persistent()).unwrap(),
    }
    if !release_exists {
        txn.add_create(&layout.release(service, version), &encode(&release), &persistent()).unwrap();
    }
    txn.add_create(
        &layout.deploy_prefix(),
        &encode(&entry),
        &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all()),
    )
    .unwrap();
    txn.add_create(
        &layout.history_prefix(service),
        &encode(&ev),
        &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all()),
    )
    .unwrap();
    let results = txn.commit().await.unwrap();
    let name = results
        .iter()
        .find_map(|r| match r {
            zk::MultiWriteResult::Create { path, .. } => DeployName::from_path(path),
            _ => None,
        })
        .expect("the deploy entry was created");
    // A sidecar that saw the entry may have created it first.
    match client.create(&layout.upgrading_dir(&name), b"", &persistent()).await {
        Ok(_) | Err(zk::Error::NodeExists) => {}
        Err(e) => panic!("creating {}: {e}", layout.upgrading_dir(&name)),
    }
    name
}

/// The versions of the online hosts of `service`, by host.
pub async fn online(client: &zk::Client, layout: &Layout, service: &str) -> Vec<(String, String)> {
    let Ok(hosts) = client.list_children(&layout.current_service(service)).await else { return vec![] };
    let mut out = Vec::new();
    for h in hosts {
        if let Ok((data, _)) = client.get_data(&layout.current_host(service, &h)).await {
            if let Ok(c) = decode::<Current>("", &data) {
                out.push((h, c.version));
            }
        }
    }
    out.sort();
    out
}

/// The deploy entries (name, payload), head first.
pub async fn deploys(client: &zk::Client, layout: &Layout) -> Vec<(DeployName, DeployEntry)> {
    let children = client.list_children(&layout.deploy_dir()).await.unwrap_or_default();
    let mut out = Vec::new();
    for name in seq::sorted_deploys(&children) {
        if let Ok((data, _)) = client.get_data(&layout.deploy_entry(&name)).await {
            if let Ok(e) = decode::<DeployEntry>("", &data) {
                out.push((name, e));
            }
        }
    }
    out
}

/// Rewrites the state of deploy entry `name` (pause, resume, halt by hand).
pub async fn set_state(client: &zk::Client, layout: &Layout, name: &DeployName, state: DeployState) {
    let path = layout.deploy_entry(name);
    // Sidecars rewrite the entry when they fence: retry on a concurrent change.
    loop {
        let (data, stat) = client.get_data(&path).await.unwrap();
        let mut e: DeployEntry = decode(&path, &data).unwrap();
        e.state = state;
        if state == DeployState::Active {
            e.failures = 0;
            e.failed_hosts.clear();
            e.reason = None;
        }
        match client.set_data(&path, &encode(&e), Some(stat.version)).await {
            Ok(_) => return,
            Err(zk::Error::BadVersion) => continue,
            Err(e) => panic!("set {path}: {e}"),
        }
    }
}
