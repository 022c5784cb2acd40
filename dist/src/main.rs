//! `baton-gen OUT_DIR`: writes what the Debian package ships besides the binaries,
//! generated from the clap definitions so they never drift from `--help`:
//! `man/*.1` (clap_mangen: `deployctl.1`, one `deployctl-<command>.1` per command,
//! `sidecar.1`, `sidecar-check.1`), `completions/` (bash, zsh, fish; deployctl's
//! bash script completes service, host and version names from ZooKeeper), and the
//! systemd unit of `dist/systemd/` with the binaries in `/usr/bin`.

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

/// The unit as `dist/systemd` has it (binaries in /usr/local/bin, a manual install).
const UNIT: &str = include_str!("../systemd/baton-sidecar.service");

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).context("usage: baton-gen OUT_DIR")?;
    let out = Path::new(&out);
    for dir in ["man", "completions"] {
        std::fs::create_dir_all(out.join(dir))
            .with_context(|| format!("failed to create {}", out.join(dir).display()))?;
    }
    man_pages(&out.join("man"), baton_deployctl::cli::Cli::command())?;
    man_pages(&out.join("man"), baton_sidecar::cli::Cli::command())?;
    completions(&out.join("completions"))?;
    let unit = UNIT.replace("/usr/local/bin/sidecar", "/usr/bin/sidecar");
    write(&out.join("baton-sidecar.service"), unit.as_bytes())?;
    Ok(())
}

/// `NAME.1` and `NAME-SUBCOMMAND.1` for every visible subcommand.
fn man_pages(dir: &Path, cmd: clap::Command) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    write(&dir.join(format!("{name}.1")), &buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let full = format!("{name}-{}", sub.get_name());
        // A generator that runs once: leaking the name is simpler than clap's `string` feature.
        let page_name: &'static str = Box::leak(full.clone().into_boxed_str());
        let page = sub.clone().name(page_name).bin_name(format!("{name} {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        write(&dir.join(format!("{full}.1")), &buf)?;
    }
    Ok(())
}

fn completions(dir: &Path) -> anyhow::Result<()> {
    for (shell, file) in [(Shell::Bash, "deployctl.bash"), (Shell::Zsh, "_deployctl"), (Shell::Fish, "deployctl.fish")]
    {
        write(&dir.join(file), baton_deployctl::completion::script(shell).as_bytes())?;
    }
    for (shell, file) in [(Shell::Bash, "sidecar.bash"), (Shell::Zsh, "_sidecar"), (Shell::Fish, "sidecar.fish")] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut baton_sidecar::cli::Cli::command(), "sidecar", &mut buf);
        write(&dir.join(file), &buf)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("failed to write {}", path.display()))
}
