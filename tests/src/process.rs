//! Children that cannot outlive the test binary.
//!
//! Every child is spawned from one long-lived spawner thread with
//! `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the spawning
//! *thread* exits, so spawning from short-lived test threads would kill a shared
//! server when its first test ends; the spawner thread lives until the process
//! exits, however it exits (normal end, panic, SIGKILL from nextest's timeout).
//! Children are also put in their own process group so a test can signal a child
//! and everything it started.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock, mpsc};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(&mut cmd));
                }
                // The senders live in a static: this point is never reached, and the
                // thread (holding the children's death signal) lives until exit.
            })
            .expect("spawn the child-spawner thread");
        Mutex::new(tx)
    })
}

#[allow(unsafe_code)]
fn spawn_with_deathsig(cmd: &mut Command) -> io::Result<Child> {
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe prctl and getppid system calls.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
            if nix::unistd::getppid().as_raw() == 1 {
                return Err(io::Error::other("parent exited before the child started"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Spawns `cmd` in its own process group, killed when the test binary exits.
pub fn spawn_tied(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner().lock().unwrap_or_else(|e| e.into_inner()).send((cmd, tx)).map_err(io::Error::other)?;
    rx.recv().map_err(io::Error::other)?
}

/// Sends `signal` to the whole process group of `child`.
pub fn signal_group(child: &Child, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), signal)
}
