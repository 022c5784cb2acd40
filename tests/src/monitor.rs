//! Watches a service during a test and records the extremes the invariants are
//! about: the fewest online hosts and the most upgrading markers seen.
//!
//! It re-reads after every watch notification, so it sees every state that lasts
//! longer than one round trip; states shorter than that can slip by (issue 8's
//! transaction-log checker closes that gap).

use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use znode_schema::{Layout, seq::sorted_deploys};
use zookeeper_client as zk;

/// What the monitor saw.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Fewest online hosts seen since [`Monitor::arm`].
    pub min_online: Option<usize>,
    /// Most upgrading markers seen at once.
    pub max_markers: usize,
    /// Reads made.
    pub samples: u64,
    /// Whether markers of this service ever existed while another service's entry was the head.
    pub out_of_order: bool,
    armed: bool,
}

/// A running monitor; stops when dropped.
#[derive(Debug)]
pub struct Monitor {
    stats: Arc<Mutex<Stats>>,
    _stop: watch::Sender<bool>,
}

impl Monitor {
    /// Starts monitoring `service` under `layout`.
    pub fn spawn(client: zk::Client, layout: Layout, service: &str) -> Monitor {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (tx, mut rx) = watch::channel(false);
        let (st, svc) = (stats.clone(), service.to_string());
        tokio::spawn(async move {
            loop {
                let mut watches = Vec::new();
                let cur = layout.current_service(&svc);
                let online = match client.list_and_watch_children(&cur).await {
                    Ok((c, w)) => {
                        watches.push(w);
                        Some(c.len())
                    }
                    Err(_) => match client.check_and_watch_stat(&cur).await {
                        Ok((_, w)) => {
                            watches.push(w);
                            None
                        }
                        Err(_) => return,
                    },
                };
                let mut markers = 0;
                let mut head_is_other = false;
                if let Ok((children, w)) = client.list_and_watch_children(&layout.deploy_dir()).await {
                    watches.push(w);
                    for (i, name) in sorted_deploys(&children).into_iter().enumerate() {
                        let ours = match client.get_data(&layout.deploy_entry(&name)).await {
                            Ok((data, _)) => String::from_utf8_lossy(&data).contains(&format!("\"service\":\"{svc}\"")),
                            Err(_) => false,
                        };
                        if i == 0 && !ours {
                            head_is_other = true;
                        }
                        if !ours {
                            continue;
                        }
                        if let Ok((m, w)) = client.list_and_watch_children(&layout.upgrading_dir(&name)).await {
                            markers += m.len();
                            watches.push(w);
                        }
                    }
                }
                {
                    let mut s = st.lock().unwrap();
                    s.samples += 1;
                    s.max_markers = s.max_markers.max(markers);
                    if head_is_other && markers > 0 {
                        s.out_of_order = true;
                    }
                    if s.armed {
                        if let Some(n) = online {
                            s.min_online = Some(s.min_online.map_or(n, |m| m.min(n)));
                        }
                    }
                }
                let any = futures_util::future::select_all(watches.into_iter().map(|w| Box::pin(w.changed())));
                tokio::select! {
                    _ = any => {},
                    _ = rx.changed() => return,
                }
            }
        });
        Monitor { stats, _stop: tx }
    }

    /// Starts counting the fewest online hosts from now.
    pub fn arm(&self) {
        let mut s = self.stats.lock().unwrap();
        s.armed = true;
        s.min_online = None;
    }

    /// What was seen so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }
}
