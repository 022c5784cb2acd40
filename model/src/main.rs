//! `baton-model [HOSTS] [SERVICES] [FAULTS] [OPS] [KINDS] [CANARY] [ROLLBACK]`: checks
//! the rollout model of that size exhaustively (BFS) and prints the state counts,
//! the time taken and every discovery (a counterexample of an `always` property, an
//! example of a `sometimes` one). Defaults: 3 hosts, 2 services, 1 fault, 1
//! operator action of every kind (KINDS: letters of p pause, r resume, a abort, b
//! rollback, u unlock, o promote; default `prabu`), no canary phase, `on_halt =
//! stay`. CANARY N gives every service `canary = N` with `auto_promote`; ROLLBACK 1
//! gives every service `on_halt = rollback`. A second service is staged during the
//! run when SERVICES ≥ 2.

use baton_model::{Config, OpKind, Rollout};
use stateright::{Checker, Expectation, Model};
use std::time::Instant;

fn arg(args: &[String], i: usize, default: u8) -> u8 {
    args.get(i).map_or(default, |a| a.parse().unwrap_or_else(|_| panic!("not a small number: {a}")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: baton-model [HOSTS] [SERVICES] [FAULTS] [OPS] [KINDS] [CANARY] [ROLLBACK]  (defaults 3 2 1 1 prabu 0 0)"
        );
        return;
    }
    let mut cfg = Config::fleet(arg(&args, 0, 3), arg(&args, 1, 2));
    cfg.faults = arg(&args, 2, 1);
    cfg.ops = arg(&args, 3, 1);
    let kinds = args.get(4).map_or("prabu", String::as_str);
    let all = [
        ('p', OpKind::Pause),
        ('r', OpKind::Resume),
        ('a', OpKind::Abort),
        ('b', OpKind::Rollback),
        ('u', OpKind::Unlock),
        ('o', OpKind::Promote),
    ];
    cfg.op_kinds = all.iter().filter(|(c, _)| kinds.contains(*c)).map(|(_, k)| *k).collect();
    let (canary, rollback) = (arg(&args, 5, 0), arg(&args, 6, 0) != 0);
    for s in &mut cfg.services {
        s.policy.canary = canary;
        s.policy.auto_promote = canary > 0;
        s.policy.on_halt_rollback = rollback;
    }
    println!("{cfg:?}");
    let start = Instant::now();
    let checker = Rollout { cfg }.checker().spawn_bfs().join();
    let took = start.elapsed();
    println!(
        "states {} unique {} max depth {} in {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        took
    );
    let mut found: Vec<_> = checker.discoveries().into_iter().collect();
    found.sort_by_key(|(name, _)| *name);
    let model = checker.model();
    for (name, path) in found {
        let steps = path.clone().into_actions();
        let example = model.properties().iter().any(|p| p.name == name && p.expectation == Expectation::Sometimes);
        if example {
            println!("example of {name:?}: {} steps", steps.len());
            continue;
        }
        println!("COUNTEREXAMPLE of {name:?}: {} steps", steps.len());
        for a in steps {
            println!("    {a:?}");
        }
    }
}
