//! Shell completions: clap's static script, and for bash a wrapper that completes
//! service names, a service's hosts (`unlock SERVICE HOST`) and catalog versions
//! (`rollback SERVICE --to V`) by calling the hidden `deployctl complete`, which
//! reads them from ZooKeeper (`--zk`/`--root` and the credentials given on the line
//! being completed, or the `BATON_*` environment).

use crate::Ctx;
use crate::cli::{Cli, CompleteWhat};
use crate::model::{Queue, service_names};
use clap::CommandFactory;
use clap_complete::Shell;

/// Flags of deployctl that take a value (the wrapper skips their values).
const VALUED: &str = "--zk|--root|--by|--history-keep|--session-timeout|--tls-ca|--tls-cert|--tls-key|\
--digest-file|--version|--url|--sha256|--size|--file|--format|--quorum|--max-parallel|--bake|--health-deadline|\
--max-failures|--signature|--sign-key|--trust-key|--reason|--to|--limit|--interval|--timeout|--timeline|\
--deployer|--sidecar|--reader";

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "deployctl", &mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if shell == Shell::Bash {
        text.push_str(&BASH_DYNAMIC.replace("@VALUED@", VALUED));
    }
    text
}

/// Service, host and version names from ZooKeeper, for the bash wrapper.
const BASH_DYNAMIC: &str = r#"
# Names from ZooKeeper: services, a service's hosts, its catalog versions.
_deployctl_names() {
    local conn=() i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            --zk|--root|--tls-ca|--tls-cert|--tls-key|--digest-file) conn+=("$w" "${COMP_WORDS[i+1]}") ;;
        esac
    done
    deployctl "${conn[@]}" --session-timeout 4s complete "$@" 2>/dev/null
}

_deployctl_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local sub="" svc="" pos=0 i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            @VALUED@) ((i++)) ;;
            -*) ;;
            *) if [[ -z $sub ]]; then sub=$w; elif ((pos == 0)); then svc=$w; pos=1; else ((pos++)); fi ;;
        esac
    done
    if [[ $sub == rollback && $prev == --to && -n $svc ]]; then
        COMPREPLY=($(compgen -W "$(_deployctl_names versions "$svc")" -- "$cur"))
        return 0
    fi
    if [[ $cur != -* ]]; then
        case "$sub:$pos" in
            status:0|watch:0|stage:0|pause:0|resume:0|abort:0|rollback:0|unlock:0|history:0|releases:0)
                COMPREPLY=($(compgen -W "$(_deployctl_names services)" -- "$cur"))
                return 0 ;;
            unlock:1)
                COMPREPLY=($(compgen -W "$(_deployctl_names hosts "$svc")" -- "$cur"))
                return 0 ;;
        esac
    fi
    _deployctl "$@"
}

complete -F _deployctl_dynamic -o bashdefault -o default deployctl
"#;

/// `deployctl complete services|hosts SERVICE|versions SERVICE`: one name a line.
pub async fn names(ctx: &Ctx, what: CompleteWhat, service: Option<&str>) -> anyhow::Result<()> {
    let l = &ctx.layout;
    let mut out = std::collections::BTreeSet::new();
    match (what, service) {
        (CompleteWhat::Services, _) => {
            let queue = Queue::read(&ctx.zk, l).await?;
            out.extend(service_names(&ctx.zk, l, &queue).await?);
        }
        (CompleteWhat::Hosts, Some(s)) => {
            let view = crate::model::ServiceView::read(&ctx.zk, l, s).await?;
            out.extend(view.hosts.iter().map(|(h, _)| h.clone()));
            out.extend(view.tickets.iter().map(|(t, _)| t.host.clone()));
            let queue = Queue::read(&ctx.zk, l).await?;
            out.extend(queue.of_service(s).flat_map(|(_, e)| e.markers.iter().map(|(h, _)| h.clone())));
        }
        (CompleteWhat::Versions, Some(s)) => {
            out.extend(ctx.zk.children(&l.releases(s)).await?.unwrap_or_default());
        }
        (_, None) => anyhow::bail!("complete {what:?} needs a SERVICE"),
    }
    for name in
        out.into_iter().filter(|n| znode_schema::validate_host(n).is_ok() || znode_schema::validate_version(n).is_ok())
    {
        outln!("{name}");
    }
    Ok(())
}
